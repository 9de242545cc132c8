"""The epilogue chain as data: its vocabulary, parsing and printing, validation, encoding, and reference math.

An epilogue is what runs on each output element after ``x @ W^T + b``, or after nothing for the standalone
elementwise kernel::

    v0 = input element (the accumulator plus bias in a GEMM)
    v  = op_n(...op_1(v0))       all math in float32
    y  = v cast to the output dtype

Built from Python objects or from a string, printed back in the same form::

    Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    Epilogue([Op("mul", 0.5), Op("hardtanh", -2, 2), Op("gelu")])
    Epilogue("mul_vec(scale) | silu", scale=torch.rand(1024))    # a per-feature vector, named in the text

One normalization stage may sit anywhere in the chain, over the features (the last dimension)::

    Epilogue("mul(2) | group_norm(16, weight=gw, bias=gb) | hardtanh(-2, 2)", gw=gn.weight, gb=gn.bias)
    Epilogue("layer_norm(weight=w, bias=b, eps=1e-6) | gelu", w=..., b=...)   # group_norm with one group

The ops before it (the pre-chain) run on the GEMM's accumulator and their result is rounded to the output dtype,
as a torch Linear's output is; the norm then runs in float32 as F.group_norm does, and the ops after it (the
post-chain, whose residual's v0 is the normalized value) follow before the final rounding.

Every user-level op lowers to one of the DEVICE_OPS (``sub(s)`` is ``add(-s)``, ``relu6`` is ``hardtanh(0, 6)``),
the form the kernels receive. The reference math of each device op is torch's own function in float32, so the
reference IS PyTorch's semantics, special cases included, and its autograd is PyTorch's backward (which is why
clamp, hardtanh and relu stay three device ops: same values, different gradients at the bounds); the device math
(cutlass_ext/include/cutlass_ext/epilogue_ops.cuh) is tested against both.
"""

from __future__ import annotations

import ast
import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterable, Union

import torch
import torch.nn.functional as F

# Must not exceed the compiled limits in cutlass_ext/include/cutlass_ext/chain_program.h.
MAX_OPS = 16
MAX_VECTORS = 4
VECTOR_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_INF = math.inf


# --- The device ops: what the kernels run, with torch's math as the reference ------------------------------------
# Each takes (v, v0, a, b, vector) in float32 and returns float32.
DEVICE_OPS: dict[str, Callable] = {
    "add": lambda v, v0, a, b, vec: v + a,
    "mul": lambda v, v0, a, b, vec: v * a,
    "clamp": lambda v, v0, a, b, vec: torch.clamp(v, a, b),
    "hardtanh": lambda v, v0, a, b, vec: F.hardtanh(v, a, b),
    "relu": lambda v, v0, a, b, vec: F.relu(v),  # a = 0, b = inf: the kernels run it as clamp(v, a, b)
    "leaky_relu": lambda v, v0, a, b, vec: F.leaky_relu(v, a),
    "gelu": lambda v, v0, a, b, vec: F.gelu(v),
    "gelu_tanh": lambda v, v0, a, b, vec: F.gelu(v, approximate="tanh"),
    "silu": lambda v, v0, a, b, vec: F.silu(v),
    "sigmoid": lambda v, v0, a, b, vec: torch.sigmoid(v),
    "tanh": lambda v, v0, a, b, vec: torch.tanh(v),
    "mish": lambda v, v0, a, b, vec: F.mish(v),
    "softplus": lambda v, v0, a, b, vec: F.softplus(v, a, b),
    "elu": lambda v, v0, a, b, vec: F.elu(v, a),
    "hardswish": lambda v, v0, a, b, vec: F.hardswish(v),
    "hardsigmoid": lambda v, v0, a, b, vec: F.hardsigmoid(v),
    "abs": lambda v, v0, a, b, vec: torch.abs(v),
    "neg": lambda v, v0, a, b, vec: torch.neg(v),
    "add_vec": lambda v, v0, a, b, vec: v + vec.to(v.device, torch.float32),
    "mul_vec": lambda v, v0, a, b, vec: v * vec.to(v.device, torch.float32),
    "residual": lambda v, v0, a, b, vec: v + a * v0,
}


def run_device_ops(x: torch.Tensor, ops: list[str], params: list[float], vectors: list[torch.Tensor],
                   out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The reference: an encoded chain applied to ``x`` in float32, cast to ``out_dtype`` (default x.dtype)."""
    v0 = x.to(torch.float32)
    v = v0
    next_vector = iter(vectors)
    for i, name in enumerate(ops):
        vec = next(next_vector) if name in ("add_vec", "mul_vec") else None
        v = DEVICE_OPS[name](v, v0, params[2 * i], params[2 * i + 1], vec)
    return v.to(out_dtype or x.dtype)


# --- The user-level vocabulary -------------------------------------------------------------------------------------
_REQUIRED = object()


@dataclass(frozen=True)
class _Spec:
    name: str
    params: tuple  # ((name, default), ...); default _REQUIRED for a required parameter, None for "absent"
    lower: Callable  # (*params) -> (device op name, a, b)
    doc: str
    vector: bool = False  # takes a per-feature vector instead of numbers
    check: Callable | None = None  # (*params) -> error message or None


def _check_bounds(lo, hi):
    if lo is None and hi is None:
        return "at least one of min and max must be given"
    if lo is not None and hi is not None and lo > hi:
        return f"min ({_fmt(lo)}) must not exceed max ({_fmt(hi)})"
    return None


def _lower_clamp(lo, hi):
    return ("clamp", -_INF if lo is None else lo, _INF if hi is None else hi)


def _lower_hardtanh(lo, hi):
    return ("hardtanh", -_INF if lo is None else lo, _INF if hi is None else hi)


def _reciprocal_f32(s):
    """div(s) runs as mul(1/s), the reciprocal rounded to float32: exactly what torch's CUDA kernels do for a
    scalar divisor. It can differ from a true division by one float32 ulp (torch on the CPU divides)."""
    one = torch.tensor(1.0, dtype=torch.float32)
    return (one / torch.tensor(s, dtype=torch.float32)).item()


def _no_params(device_name):
    return lambda: (device_name, 0.0, 0.0)


_SPECS = [
    _Spec("add", (("value", _REQUIRED),), lambda s: ("add", s, 0.0), "v + value"),
    _Spec("sub", (("value", _REQUIRED),), lambda s: ("add", -s, 0.0), "v - value"),
    _Spec("mul", (("value", _REQUIRED),), lambda s: ("mul", s, 0.0), "v * value"),
    _Spec("div", (("value", _REQUIRED),), lambda s: ("mul", _reciprocal_f32(s), 0.0),
          "v / value, computed as v * float32(1 / value) like torch on CUDA"),
    _Spec("clamp", (("min", None), ("max", None)), _lower_clamp, "torch.clamp(v, min, max)", check=_check_bounds),
    _Spec("hardtanh", (("min_val", -1.0), ("max_val", 1.0)), _lower_hardtanh, "F.hardtanh(v, min_val, max_val)",
          check=_check_bounds),
    _Spec("relu", (), lambda: ("relu", 0.0, _INF), "F.relu(v)"),
    _Spec("relu6", (), lambda: ("hardtanh", 0.0, 6.0), "F.relu6(v)"),
    _Spec("leaky_relu", (("negative_slope", 0.01),), lambda s: ("leaky_relu", s, 0.0), "F.leaky_relu(v, slope)"),
    _Spec("gelu", (), _no_params("gelu"), "F.gelu(v), the exact erf form"),
    _Spec("gelu_tanh", (), _no_params("gelu_tanh"), "F.gelu(v, approximate='tanh')"),
    _Spec("silu", (), _no_params("silu"), "F.silu(v) = v * sigmoid(v)"),
    _Spec("swish", (), _no_params("silu"), "the same as silu"),
    _Spec("sigmoid", (), _no_params("sigmoid"), "torch.sigmoid(v)"),
    _Spec("tanh", (), _no_params("tanh"), "torch.tanh(v)"),
    _Spec("mish", (), _no_params("mish"), "F.mish(v)"),
    _Spec("softplus", (("beta", 1.0), ("threshold", 20.0)), lambda b, t: ("softplus", b, t),
          "F.softplus(v, beta, threshold)"),
    _Spec("elu", (("alpha", 1.0),), lambda a: ("elu", a, 0.0), "F.elu(v, alpha)"),
    _Spec("hardswish", (), _no_params("hardswish"), "F.hardswish(v)"),
    _Spec("hardsigmoid", (), _no_params("hardsigmoid"), "F.hardsigmoid(v)"),
    _Spec("abs", (), _no_params("abs"), "torch.abs(v)"),
    _Spec("neg", (), _no_params("neg"), "-v"),
    _Spec("add_vec", (("vector", _REQUIRED),), lambda: ("add_vec", 0.0, 0.0), "v + vector[feature]", vector=True),
    _Spec("mul_vec", (("vector", _REQUIRED),), lambda: ("mul_vec", 0.0, 0.0), "v * vector[feature]", vector=True),
    _Spec("residual", (("alpha", 1.0),), lambda a: ("residual", a, 0.0), "v + alpha * v0 (the chain's input)"),
]
OPS: dict[str, _Spec] = {s.name: s for s in _SPECS}

# The normalization stages: not device ops but a stage of their own (a second pass over the output, group_norm.h).
# Parameters: the number of groups, then the per-feature affine weight and bias (tensors, or None for 1 and 0).
_NORM_PARAMS = {
    "group_norm": (("num_groups", _REQUIRED), ("weight", None), ("bias", None), ("eps", 1e-5)),
    "layer_norm": (("weight", None), ("bias", None), ("eps", 1e-5)),
}
NORMS = {
    "group_norm": "F.group_norm(v, num_groups, weight, bias, eps) over the features (num_groups must divide them)",
    "layer_norm": "F.layer_norm(v, (features,), weight, bias, eps): group_norm with one group",
}


def _fmt(x) -> str:
    """A float as short as round-trips: 2 not 2.0, 0.5, 1e-05."""
    if x is None:
        return "None"
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


class Op:
    """One op of a chain: ``Op("hardtanh", -2, 2)``, ``Op("clamp", max=1)``, ``Op("add_vec", tensor, vector_name="b2")``,
    ``Op("group_norm", 16, weight=w, bias=b, eps=1e-5)``. vector_name names the vector in the printed form (for a
    norm, a dict such as {"weight": "w", "bias": "b"})."""

    __slots__ = ("spec", "params", "vector", "vector_name", "affine", "affine_names")

    def __init__(self, name: str, *args, vector_name: str | None = None, **kwargs):
        self.vector = None
        self.vector_name = vector_name
        self.affine = self.affine_names = None
        if isinstance(name, str) and name in NORMS:
            self._init_norm(name, args, kwargs)
            return
        spec = OPS.get(name) if isinstance(name, str) else None
        if spec is None:
            close = difflib.get_close_matches(str(name), [*OPS, *NORMS], n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"unknown epilogue op {name!r}.{hint} Known ops: {', '.join([*OPS, *NORMS])}")
        self.spec = spec
        names = [p for p, _ in spec.params]
        if len(args) > len(names):
            raise ValueError(f"{name} takes at most {len(names)} parameter(s) ({self.signature()}), got {len(args)}")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise ValueError(f"{name} has no parameter {key!r} ({self.signature()})")
            if key in values:
                raise ValueError(f"{name} got parameter {key!r} twice")
            values[key] = value
        resolved = []
        for pname, default in spec.params:
            value = values.get(pname, default)
            if value is _REQUIRED:
                raise ValueError(f"{name} needs parameter {pname!r} ({self.signature()})")
            if spec.vector:
                self.vector = _check_vector(name, value)
                continue
            resolved.append(_check_number(name, pname, value))
        self.params = tuple(resolved)
        if spec.check is not None and (problem := spec.check(*self.params)):
            raise ValueError(f"{name}: {problem}")

    def _init_norm(self, name, args, kwargs):
        """group_norm / layer_norm: params = (num_groups, eps), affine = (weight, bias), each a tensor or None."""
        self.spec = _Spec(name, _NORM_PARAMS[name], None, NORMS[name])
        names = [p for p, _ in self.spec.params]
        if len(args) > len(names):
            raise ValueError(f"{name} takes at most {len(names)} parameter(s) ({self.signature()}), got {len(args)}")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names or key in values:
                raise ValueError(f"{name} has no parameter {key!r} or got it twice ({self.signature()})")
            values[key] = value
        if name == "group_norm" and "num_groups" not in values:
            raise ValueError(f"group_norm needs parameter 'num_groups' ({self.signature()})")
        groups = values.get("num_groups", 1)
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
            raise ValueError(f"{name}: num_groups must be a positive integer, got {groups!r}")
        eps = _check_number(name, "eps", values.get("eps", 1e-5))
        if eps is None or eps < 0:
            raise ValueError(f"{name}: eps must be a number >= 0, got {eps!r}")
        self.params = (int(groups), eps)
        self.affine = tuple(None if values.get(p) is None else _check_vector(f"{name} {p}", values[p])
                            for p in ("weight", "bias"))
        given = self.vector_name if isinstance(self.vector_name, dict) else {}
        self.affine_names = (given.get("weight"), given.get("bias"))
        self.vector_name = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_norm(self) -> bool:
        return self.affine is not None

    def signature(self) -> str:
        parts = [p if d is _REQUIRED else f"{p}={_fmt(d) if d is not None else None}" for p, d in self.spec.params]
        return f"{self.spec.name}({', '.join(parts)})"

    def lower(self) -> tuple[str, float, float]:
        """(device op name, a, b): the form the kernels run."""
        if self.is_norm:
            raise ValueError(f"{self.name} is a normalization stage, not a device op (see Epilogue.split)")
        return self.spec.lower(*self.params) if not self.spec.vector else self.spec.lower()

    def __str__(self) -> str:
        if self.is_norm:
            groups, eps = self.params
            parts = [str(groups)] if self.name == "group_norm" else []
            for pname, tensor, tname in zip(("weight", "bias"), self.affine, self.affine_names):
                if tensor is not None:
                    parts.append(f"{pname}={tname or f'<vector of {tensor.numel()}>'}")
            if eps != 1e-5:
                parts.append(f"eps={_fmt(eps)}")
            return f"{self.name}({', '.join(parts)})" if parts else self.name
        if self.spec.vector:
            return f"{self.name}({self.vector_name or f'<vector of {self.vector.numel()}>'})"
        parts, keyword = [], False
        for (pname, default), value in zip(self.spec.params, self.params):
            if value == default or (value is None and default is None):
                keyword = True  # a skipped parameter: those after it must be named
                continue
            parts.append(f"{pname}={_fmt(value)}" if keyword else _fmt(value))
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def __repr__(self) -> str:
        return f"Op({str(self)!r})"

    def __reduce__(self):
        # Rebuilt from its name and parameters: the spec holds lambdas, which pickle cannot store (torch.save of a
        # model with a FusedLinear pickles its epilogue).
        if self.is_norm:
            groups, eps = self.params
            names = {"weight": self.affine_names[0], "bias": self.affine_names[1]}
            kwargs = dict(weight=self.affine[0], bias=self.affine[1], eps=eps, vector_name=names)
            return _make_op, (self.name, (groups,) if self.name == "group_norm" else (), kwargs)
        if self.spec.vector:
            return _make_op, (self.name, (self.vector,), {"vector_name": self.vector_name})
        return _make_op, (self.name, self.params, {})

    def _key(self):
        tensors = (self.vector,) + (self.affine or ())
        return (self.name, self.params, tuple(None if t is None else id(t) for t in tensors))

    def __eq__(self, other) -> bool:
        return isinstance(other, Op) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _make_op(name: str, args: tuple, kwargs: dict) -> Op:
    return Op(name, *args, **kwargs)


def _check_number(op: str, pname: str, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: parameter {pname!r} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: parameter {pname!r} must be finite, got {value}")
    return value


def _check_vector(op: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: expects a 1-D tensor of per-feature values, got {type(value).__name__}")
    if value.dim() != 1:
        raise ValueError(f"{op}: the vector must be 1-D (one value per output feature), got shape {tuple(value.shape)}")
    if value.dtype not in VECTOR_DTYPES:
        raise TypeError(f"{op}: the vector must be float32, bfloat16 or float16, got {value.dtype}")
    return value


class Epilogue:
    """An immutable chain of ops. ``Epilogue("relu | mul(2)")``, ``Epilogue([Op(...), ...])``, ``a | b``."""

    __slots__ = ("ops", "_encoded", "_split")

    def __init__(self, ops: Union[str, Op, Iterable[Op], "Epilogue", None] = (), **vectors: torch.Tensor):
        if isinstance(ops, str):
            ops = _parse(ops, vectors)
        elif vectors:
            raise TypeError("named vectors are only for an epilogue given as text")
        elif ops is None:
            ops = ()
        elif isinstance(ops, (Op, Epilogue)):
            ops = (ops,) if isinstance(ops, Op) else ops.ops
        ops = tuple(ops)
        for op in ops:
            if not isinstance(op, Op):
                raise TypeError(f"an epilogue is made of Op objects, got {type(op).__name__}")
        if len(ops) > MAX_OPS:
            raise ValueError(f"an epilogue has at most {MAX_OPS} ops, got {len(ops)}")
        if sum(op.vector is not None for op in ops) > MAX_VECTORS:
            raise ValueError(f"an epilogue reads at most {MAX_VECTORS} per-feature vectors")
        if sum(op.is_norm for op in ops) > 1:
            raise ValueError("an epilogue has at most one normalization stage (group_norm or layer_norm)")
        self.ops = ops
        self._encoded = None
        self._split = None

    def __or__(self, other) -> "Epilogue":
        return Epilogue(self.ops + as_epilogue(other).ops)

    def __ror__(self, other) -> "Epilogue":
        return Epilogue(as_epilogue(other).ops + self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self):
        return iter(self.ops)

    def __eq__(self, other) -> bool:
        return isinstance(other, Epilogue) and self.ops == other.ops

    def __hash__(self) -> int:
        return hash(self.ops)

    def __str__(self) -> str:
        return " | ".join(str(op) for op in self.ops)

    def __repr__(self) -> str:
        return f"Epilogue({str(self)!r})"

    @property
    def vectors(self) -> list[torch.Tensor]:
        """The per-feature vectors of the device ops, in order (not a norm's weight and bias)."""
        return [op.vector for op in self.ops if op.vector is not None]

    @property
    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the chain reads: the vectors and a norm's weight and bias."""
        return [t for op in self.ops for t in (op.vector,) + (op.affine or ()) if t is not None]

    @property
    def norm(self) -> Op | None:
        """The normalization stage, or None."""
        return self.split()[1]

    def split(self) -> tuple["Epilogue", Op | None, "Epilogue"]:
        """(pre-chain, norm, post-chain) around the normalization stage; (self, None, empty) without one. Made
        once per (immutable) epilogue: the parts keep their own encodings across calls."""
        if self._split is None:
            at = next((i for i, op in enumerate(self.ops) if op.is_norm), None)
            self._split = ((self, None, Epilogue()) if at is None else
                           (Epilogue(self.ops[:at]), self.ops[at], Epilogue(self.ops[at + 1:])))
        return self._split

    def check_for(self, features: int | None, device: torch.device, where: str = "epilogue") -> None:
        """Raises unless every per-feature tensor has ``features`` elements and lives on ``device``, and a norm's
        groups divide the features."""
        for op in self.ops:
            tensors = [t for t in (op.vector,) + (op.affine or ()) if t is not None]
            if not tensors and not op.is_norm:
                continue
            if features is None:
                raise ValueError(f"{where}: {op} needs a feature dimension, but the input is a scalar (0-d)")
            if op.is_norm and features % op.params[0]:
                raise ValueError(f"{where}: {op}: {features} features do not split into {op.params[0]} groups")
            for t in tensors:
                if t.numel() != features:
                    raise ValueError(f"{where}: {op} has {t.numel()} values, the output has {features} features")
                if t.device != torch.device(device):
                    raise ValueError(f"{where}: {op} is on {t.device}, the input on {device}")

    def encode(self) -> tuple[list[str], list[float], list[torch.Tensor]]:
        """The form the torch ops take: device op names, two parameters per op, the vectors in order. A chain with
        a normalization stage is encoded in parts (``split``)."""
        if self._encoded is None:
            if self.norm is not None:
                raise ValueError(f"epilogue '{self}' has a normalization stage: encode its parts (Epilogue.split())")
            names, params = [], []
            for op in self.ops:
                name, a, b = op.lower()
                names.append(name)
                params += [float(a), float(b)]
            self._encoded = (names, params, [v.contiguous() for v in self.vectors])
        return self._encoded

    def reference(self, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The chain applied to ``x`` with torch's own ops in float32: the semantics every kernel must match.
        With a normalization stage: the pre-chain rounded to x's dtype, then the norm and the post-chain in
        float32, rounded to ``out_dtype``."""
        pre, norm, post = self.split()
        if norm is None:
            return run_device_ops(x, *self.encode(), out_dtype=out_dtype)
        v = run_device_ops(x, *pre.encode())
        return run_device_ops(norm_reference(v, norm), *post.encode(), out_dtype=out_dtype or x.dtype)


def norm_reference(v: torch.Tensor, norm: Op) -> torch.Tensor:
    """F.group_norm over v's last dimension, in float32 (torch's math: biased variance, eps under the root)."""
    groups, eps = norm.params
    weight, bias = (None if t is None else t.to(v.device, torch.float32) for t in norm.affine)
    features = v.shape[-1]
    flat = v.to(torch.float32).reshape(-1, features)
    if flat.shape[0] == 0:
        return flat.reshape(v.shape)
    return F.group_norm(flat, groups, weight, bias, eps).reshape(v.shape)


def as_epilogue(value) -> Epilogue:
    """Accepts an Epilogue, a string, an Op, a list of Ops, or None (the empty chain)."""
    if isinstance(value, Epilogue):
        return value
    if isinstance(value, (str, Op)) or value is None:
        return Epilogue(value)
    if isinstance(value, (list, tuple)):
        return Epilogue(value)
    raise TypeError(f"expected an Epilogue, a string, an Op or a list of Ops, got {type(value).__name__}")


# --- Parsing ------------------------------------------------------------------------------------------------------
def _parse(text: str, vectors: dict[str, torch.Tensor]) -> list[Op]:
    if not text.strip():
        return []
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot parse epilogue {text!r}: {e.msg}") from None
    items = []

    def flatten(node):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            flatten(node.left)
            flatten(node.right)
        else:
            items.append(node)

    flatten(tree)
    used = set()
    ops = [_parse_item(text, node, vectors, used) for node in items]
    unused = set(vectors) - used
    if unused:
        raise ValueError(f"epilogue {text!r} does not use the vector(s) {', '.join(sorted(unused))}")
    return ops


def _parse_item(text: str, node, vectors: dict, used: set) -> Op:
    where = f"in epilogue {text!r}, {ast.get_source_segment(text.strip(), node) or ast.dump(node)!r}"
    if isinstance(node, ast.Name):
        return Op(node.id)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"{where}: expected an op such as gelu or hardtanh(-2, 2), separated by '|'")
    name = node.func.id

    def value(arg):
        if isinstance(arg, ast.Name) and arg.id in ("inf", "nan"):
            return float(arg.id)  # rejected as non-finite by Op, with that message
        if isinstance(arg, ast.Name):  # a per-feature vector, passed by keyword to Epilogue()
            if arg.id not in vectors:
                raise ValueError(f"{where}: vector {arg.id!r} is not given (pass it as Epilogue(text, {arg.id}=tensor))")
            used.add(arg.id)
            return arg.id
        try:
            return ast.literal_eval(arg)
        except ValueError:
            raise ValueError(f"{where}: parameters must be numbers") from None

    args = [value(a) for a in node.args]
    kwargs = {k.arg: value(k.value) for k in node.keywords}
    if name in NORMS:  # numbers, and names of the weight and bias vectors
        params = [p for p, _ in _NORM_PARAMS[name]]
        named = {**dict(zip(params, args)), **kwargs}
        if len(args) > len(params) or len(named) != len(args) + len(kwargs):
            raise ValueError(f"{where}: expected {Op(name, *([1] if name == 'group_norm' else [])).signature()}")
        tensors = {p: v for p, v in named.items() if isinstance(v, str)}
        if set(tensors) - {"weight", "bias"}:
            raise ValueError(f"{where}: only weight and bias name vectors")
        numbers_ = {p: v for p, v in named.items() if p not in tensors}
        return Op(name, **numbers_, **{p: vectors[v] for p, v in tensors.items()}, vector_name=tensors)
    if OPS.get(name) is not None and OPS[name].vector:
        refs = args + list(kwargs.values())
        if len(refs) != 1 or not isinstance(refs[0], str):
            raise ValueError(f"{where}: {name} takes the name of one vector, e.g. {name}(scale)")
        return Op(name, vectors[refs[0]], vector_name=refs[0])
    if any(isinstance(a, str) for a in args + list(kwargs.values())):
        raise ValueError(f"{where}: {name} takes numbers, not a vector")
    return Op(name, *args, **kwargs)
