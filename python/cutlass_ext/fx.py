"""cutlass_ext.fuse: finds each Linear of a model and the elementwise tail after it, and runs them as ONE fused GEMM.

    fused = cutlass_ext.fuse(model)          # shares model's modules and parameters: the same state_dict
    print(cutlass_ext.fx.report(fused))      # what was fused, and where each chain stopped and why
    y = fused(x)

The model is traced with torch.fx. After every nn.Linear (or F.linear) the pass follows the value through the ops
it knows, for as long as each intermediate value has no other use: the epilogue vocabulary of docs/epilogue.md in
module, function or method form (nn.GELU, F.hardtanh, torch.clamp, x.relu(), x * 0.5, x / 2, x - 1,
x * torch.sigmoid(x), x * self.scale with a per-feature parameter, a residual x + f(x)), and one nn.GroupNorm or
nn.LayerNorm over the output features. That region becomes one ``FusedRegion`` call, which runs
``cutlass_ext.linear`` with the chain. Every module and parameter stays where it was, so the state_dict keys and
tensors are the model's own, and ``load_state_dict`` and ``.to()`` work as on the model.

A region runs its original ops instead (a copy of the region's graph, "the replay") wherever the fused op would
not compute what they do, or could not help: off the GPU, under autograd, for dtypes other than float32 /
bfloat16 / float16, for a per-feature tensor that would promote the dtype or broadcast differently, for an
nn.GroupNorm on a tensor that is not 2-D (it normalizes dim 1; the fused stage normalizes the features), and for a
Dropout in training mode. Where it runs fused, the chain is computed in float32 and rounded once, where eager
PyTorch rounds after every op: results match within the error rule of docs/epilogue.md.

The pass leaves alone what a region could not reproduce: a module with forward hooks (weight_norm's included), an
op that writes in place to a value something else reads (a residual's input, the chain's own input), and a region
with an in-place write by another op between its first and last node. Module attributes (a LeakyReLU's slope, a
norm's eps) are read on each call, as the original ops read them. What symbolic tracing fixes at trace time stays
fixed, as for any torch.fx transform: Python control flow, and ``self.training`` read in forward
(F.dropout(x, training=self.training)); fuse after choosing train or eval mode. A module that cannot be traced is
kept, and its children are fused one by one.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .epilogue import MAX_OPS, MAX_VECTORS, Epilogue, Op
from .nn import FusedLinear
from .ops import FUSED_DTYPES, Path, elementwise, elementwise_path, linear, linear_path

__all__ = ["FusedRegion", "fuse", "report", "report_lines"]

# --- The ops the pass knows, as they appear in a traced graph ----------------------------------------------------
# Functions and methods: the epilogue op, and the names of the call's parameters after its input in positional
# order ("inplace" is accepted and ignored: every value inside a region has one use).
_FUNCTIONS = {
    F.relu: ("relu", ("inplace",)), torch.relu: ("relu", ()),
    F.relu6: ("relu6", ("inplace",)),
    F.hardtanh: ("hardtanh", ("min_val", "max_val", "inplace")),
    F.leaky_relu: ("leaky_relu", ("negative_slope", "inplace")),
    F.silu: ("silu", ("inplace",)),
    F.sigmoid: ("sigmoid", ()), torch.sigmoid: ("sigmoid", ()),
    F.tanh: ("tanh", ()), torch.tanh: ("tanh", ()),
    F.mish: ("mish", ("inplace",)),
    F.softplus: ("softplus", ("beta", "threshold")),
    F.elu: ("elu", ("alpha", "inplace")),
    F.hardswish: ("hardswish", ("inplace",)),
    F.hardsigmoid: ("hardsigmoid", ("inplace",)),
    torch.abs: ("abs", ()), operator.abs: ("abs", ()),
    torch.neg: ("neg", ()), operator.neg: ("neg", ()),
    torch.clamp: ("clamp", ("min", "max")), torch.clip: ("clamp", ("min", "max")),
    torch.clamp_min: ("clamp", ("min",)), torch.clamp_max: ("clamp", ("max",)),
}
_METHODS = {  # and their in-place forms (x.relu_()), by _method_name
    "relu": ("relu", ()), "sigmoid": ("sigmoid", ()), "tanh": ("tanh", ()), "abs": ("abs", ()), "neg": ("neg", ()),
    "clamp": ("clamp", ("min", "max")), "clip": ("clamp", ("min", "max")),
    "clamp_min": ("clamp", ("min",)), "clamp_max": ("clamp", ("max",)),
}
# Modules, by exact type (a subclass may have a forward of its own): the epilogue op and the attributes holding its
# parameters, in the op's parameter order.
_MODULES = {
    nn.ReLU: ("relu", ()), nn.ReLU6: ("relu6", ()),
    nn.Hardtanh: ("hardtanh", ("min_val", "max_val")),
    nn.LeakyReLU: ("leaky_relu", ("negative_slope",)),
    nn.SiLU: ("silu", ()), nn.Sigmoid: ("sigmoid", ()), nn.Tanh: ("tanh", ()), nn.Mish: ("mish", ()),
    nn.Softplus: ("softplus", ("beta", "threshold")),
    nn.ELU: ("elu", ("alpha",)),
    nn.Hardswish: ("hardswish", ()), nn.Hardsigmoid: ("hardsigmoid", ()),
}
_GELUS = {"none": "gelu", "tanh": "gelu_tanh"}
_NUMERIC = ("add", "sub", "mul", "div", "neg", "abs")  # what Python numbers also do
# Binary arithmetic, by function or method name (methods also in-place: x.mul_(2)).
_ARITHMETIC = {
    operator.mul: "mul", torch.mul: "mul", "mul": "mul",
    operator.add: "add", torch.add: "add", "add": "add",
    operator.sub: "sub", torch.sub: "sub", "sub": "sub",
    operator.truediv: "div", torch.div: "div", "div": "div",
}


def _method_name(node: fx.Node) -> str:
    """A call_method's name without the trailing underscore of its in-place form."""
    name = node.target
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _arithmetic_kind(node: fx.Node) -> str | None:
    if node.op not in ("call_function", "call_method") or len(node.args) != 2:
        return None
    kind = _ARITHMETIC.get(_method_name(node) if node.op == "call_method" else node.target)
    if node.kwargs and not (kind in ("add", "sub") and node.kwargs == {"alpha": 1}):
        return None
    return kind


_WRITES = (operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv)


def _in_place(root: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` writes to a tensor it is given: x.relu_(), F.relu(x, inplace=True), nn.ReLU(inplace=True),
    torch.relu_(x), x[i] = v, out=..."""
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op == "call_module":
        return bool(getattr(root.get_submodule(node.target), "inplace", False))
    if node.op != "call_function":
        return False
    if node.target in _WRITES or "out" in node.kwargs or node.kwargs.get("inplace") is True:
        return True
    if getattr(node.target, "__name__", "").endswith("_"):
        return True
    names = _FUNCTIONS.get(node.target, (None, ()))[1]
    return "inplace" in names and bool(dict(zip(names, node.args[1:])).get("inplace", False))


def _fetch_attr(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# --- Reading a chain off the graph -------------------------------------------------------------------------------
class _Chain:
    """A region as it is read: its items and nodes, and the tensors it reads besides x, weight and bias.

    An item is an Op (numbers only), ("vec", op name, tensor index), ("module", target) for an activation module
    or ("norm", target, weight index, bias index) for a norm module: the modules' ops are made from their attributes
    on each call, as the original ops read them. An index points into ``tensors``, whose entries are get_attr nodes
    of the graph or attribute names (a module's parameter, read with a get_attr made when the region is fused)."""

    def __init__(self, root: nn.Module, features: int | None, linear: bool):
        self.root = root
        self.features = features
        self.linear = linear  # a Linear's chain; norms only there (a standalone norm stage is not measured faster)
        self.items: list = []
        self.nodes: list[fx.Node] = []
        self.tensors: list = []
        self.vectors = 0
        self.group_norm = False
        self.has_norm = False
        self.dropouts: list[str] = []

    def tensor(self, source) -> int:
        self.tensors.append(source)
        return len(self.tensors) - 1

    def fits(self, items) -> bool:
        vectors = sum(isinstance(i, tuple) and i[0] == "vec" for i in items)
        return len(self.items) + len(items) <= MAX_OPS and self.vectors + vectors <= MAX_VECTORS

    def take(self, items, nodes) -> None:
        self.items += items
        self.nodes += nodes
        self.vectors += sum(isinstance(i, tuple) and i[0] == "vec" for i in items)

    def state(self):
        return (len(self.items), len(self.nodes), len(self.tensors), len(self.dropouts), self.vectors,
                self.has_norm, self.group_norm)

    def restore(self, state) -> None:
        items, nodes, tensors, dropouts, self.vectors, self.has_norm, self.group_norm = state
        del self.items[items:], self.nodes[nodes:], self.tensors[tensors:], self.dropouts[dropouts:]

    def module(self, node: fx.Node):
        return self.root.get_submodule(node.target) if node.op == "call_module" else None

    def is_vector(self, node) -> bool:
        """A per-feature vector the pass can fuse: a 1-D floating tensor attribute of the model, with one value
        per output feature where that number is known (the region checks it again on every call)."""
        if not isinstance(node, fx.Node) or node.op != "get_attr":
            return False
        value = _fetch_attr(self.root, node.target)
        return (isinstance(value, torch.Tensor) and value.dim() == 1 and value.is_floating_point() and
                (self.features is None or value.numel() == self.features))


def _bind(node: fx.Node, names: tuple) -> dict | None:
    """The call's parameters after its input, by name; None where one is not a plain value."""
    args = node.args[1:]
    if len(args) > len(names) or any(k not in names for k in node.kwargs):
        return None
    bound = {**dict(zip(names, args)), **node.kwargs}
    if any(isinstance(v, fx.Node) for v in bound.values()):
        return None
    bound.pop("inplace", None)
    return bound


def _arithmetic(chain: _Chain, node: fx.Node, value: fx.Node):
    """value * c, c * value, value + c, value - c, c - value, value / c (c a number); value * v, v * value,
    value + v, v + value (v a per-feature vector). The items, or None."""
    kind = _arithmetic_kind(node)
    if kind is None or value not in node.args:
        return None
    first = node.args[0] is value
    other = node.args[1] if first else node.args[0]
    if node.op == "call_method" and not first:
        return None
    if _is_number(other):
        if kind in ("mul", "add"):
            return [Op(kind, other)]
        if kind == "sub":
            return [Op("sub", other)] if first else [Op("neg"), Op("add", other)]
        return [Op("div", other)] if first else None
    if kind in ("mul", "add") and chain.is_vector(other) and other is not value:
        return [("vec", f"{kind}_vec", chain.tensor(other))]
    return None


def _module_op(module: nn.Module) -> Op | None:
    """The op an activation module is, from its attributes as they are now (they may change after fuse), or None.
    Raises ValueError / TypeError for attributes the op does not take."""
    kind = type(module)
    if kind in _MODULES:
        name, attrs = _MODULES[kind]
        return Op(name, *(getattr(module, a) for a in attrs))
    if kind is nn.GELU:
        return Op(_GELUS[module.approximate]) if module.approximate in _GELUS else None
    return None


def _module_state(module: nn.Module) -> tuple:
    """What the op of an activation or norm module is made from: a cache key."""
    kind = type(module)
    attrs = _MODULES[kind][1] if kind in _MODULES else \
        ("approximate",) if kind is nn.GELU else ("num_groups", "eps") if kind is nn.GroupNorm else ("eps",)
    return tuple(getattr(module, a) for a in attrs)


def _has_hooks(module: nn.Module) -> bool:
    """Forward hooks run around a module's call: a fused region would skip them (weight_norm's is one)."""
    from torch.nn.modules import module as torch_module

    return bool(module._forward_hooks or module._forward_pre_hooks or torch_module._global_forward_hooks or
                torch_module._global_forward_pre_hooks)


def _one_op(chain: _Chain, node: fx.Node, value: fx.Node):
    """``node`` applied to ``value`` as epilogue items ([] for an identity), or None if the pass does not know it."""
    module = chain.module(node)
    if module is not None:
        if node.args != (value,) or node.kwargs or _has_hooks(module):
            return None
        kind = type(module)
        if _module_op(module) is not None:
            return [("module", node.target)]
        if kind is nn.Identity:
            return []
        if kind is nn.Dropout:  # the identity in eval mode; in training mode the region runs the replay
            chain.dropouts.append(node.target)
            return []
        return _norm(chain, node, module)
    if node.op not in ("call_function", "call_method"):
        return None
    if not node.args or node.args[0] is not value:
        return _arithmetic(chain, node, value)
    if node.op == "call_function" and node.target is F.gelu:
        bound = _bind(node, ("approximate",))
        approximate = None if bound is None else bound.get("approximate", "none")
        return [Op(_GELUS[approximate])] if approximate in _GELUS else None
    if node.op == "call_function" and node.target is F.dropout:  # training=False as traced: the identity
        bound = _bind(node, ("p", "training", "inplace"))
        return [] if bound is not None and bound.get("training", True) is False else None
    table, key = (_FUNCTIONS, node.target) if node.op == "call_function" else (_METHODS, _method_name(node))
    if key not in table:
        return _arithmetic(chain, node, value)
    name, names = table[key]
    bound = _bind(node, names)
    return None if bound is None else [Op(name, **bound)]


def _norm(chain: _Chain, node: fx.Node, module: nn.Module):
    """An nn.GroupNorm or nn.LayerNorm over the output features, as a "norm" item; None for another module."""
    if chain.has_norm or not chain.linear:
        return None
    features = chain.features
    if type(module) is nn.GroupNorm:
        if features is not None and module.num_channels != features:
            return None
        name = "group_norm"
    elif type(module) is nn.LayerNorm:
        shape = tuple(module.normalized_shape)
        if len(shape) != 1 or (features is not None and shape[0] != features):
            return None
        name = "layer_norm"
    else:
        return None
    weight = None if module.weight is None else chain.tensor(f"{node.target}.weight")
    bias = None if module.bias is None else chain.tensor(f"{node.target}.bias")
    chain.has_norm = True
    chain.group_norm = name == "group_norm"
    return [("norm", node.target, weight, bias)]


def _swish(chain: _Chain, value: fx.Node, users):
    """value * sigmoid(value) (either order, any form of sigmoid): the product node, or None."""
    for sig, product in (users, users[::-1]):
        is_sigmoid = sig.args[:1] == (value,) and list(sig.users) == [product] and (
            (sig.op == "call_function" and sig.target in (F.sigmoid, torch.sigmoid) and len(sig.args) == 1
             and not sig.kwargs) or
            (sig.op == "call_method" and sig.target == "sigmoid" and len(sig.args) == 1) or
            (type(chain.module(sig)) is nn.Sigmoid and not _has_hooks(chain.module(sig))))
        if is_sigmoid and _arithmetic_kind(product) == "mul" and set(product.args) == {value, sig}:
            return sig, product
    return None


def _read_chain(chain: _Chain, start: fx.Node, residuals: bool) -> str:
    """Reads the longest chain after ``start`` into ``chain``; returns where it ends and why. residuals: ``start``
    is a Linear's output, the v0 a residual op adds back (a standalone chain's v0 is its input, not ``start``)."""
    value = chain_input = start  # chain_input: the v0 of a residual (the norm's output in the post-chain)
    checkpoint = chain.state()   # the chain when chain_input was set: a residual never reached unwinds to it
    residual = None              # the pending `f(v0) + v0`, once v0 is seen to have that second use
    aliases = {start}            # chain_input and the identities of it (nn.Identity, eval Dropout): one tensor
    why = None
    while why is None:
        users = list(value.users)
        if len(users) == 2 and (swish := _swish(chain, value, users)) is not None:
            if not chain.fits([Op("silu")]):
                why = "the epilogue's limits"
                break
            chain.take([Op("silu")], list(swish))
            value = swish[1]
            continue
        if residuals and value is chain_input and len(users) == 2 and residual is None:
            adds = [u for u in users if _arithmetic_kind(u) == "add" and not u.kwargs and value in u.args]
            if len(adds) == 1:
                residual = adds[0]
                users = [u for u in users if u is not residual]
        if residual is not None and users == [residual] and set(residual.args) == {value, chain_input}:
            if not chain.fits([Op("residual")]):
                why = "the epilogue's limits"
                break
            chain.take([Op("residual")], [residual])
            value, residual = residual, None
            continue
        if len(users) != 1 or users[0].op == "output":
            why = "the model's output" if [u.op for u in users] == ["output"] else \
                f"a value used by {', '.join(_describe(chain, u) for u in users) or 'nothing'}"
            break
        node = users[0]
        if residual is not None and value in aliases and _in_place(chain.root, node):
            why = f"{_describe(chain, node)}, which overwrites a value the residual reads"
            break
        state = chain.state()
        try:
            items = _one_op(chain, node, value)
        except (TypeError, ValueError):  # a parameter the op does not take (e.g. clamp with no bounds)
            items = None
        if items is None or not chain.fits(items):
            chain.restore(state)
            if items is not None:
                why = "the epilogue's limits"
            elif _linear(chain.root, node) is not None:
                why = f"{_describe(chain, node)}, the next GEMM"
            else:
                why = f"{_describe(chain, node)}, which the pass does not fuse"
            break
        chain.take(items, [node])
        if not items and value in aliases:
            aliases.add(node)
        value = node
        if any(isinstance(i, tuple) and i[0] == "norm" for i in items):
            if residual is not None:  # its v0 is the norm's input: not expressible after the norm
                why = f"{_describe(chain, node)}, with a residual across it"
                break
            chain_input, checkpoint, aliases = value, chain.state(), {value}
            residuals = True  # the post-chain's v0 is the norm's output, in either kind of region
    if residual is not None:
        chain.restore(checkpoint)
        return f"{why}, and {_describe(chain, residual)} adds the chain's input to that value"
    return why


def _describe(chain: _Chain, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(chain.module(node)).__name__})"
    if node.op == "output":
        return "the model's output"
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({name})"


# --- The region --------------------------------------------------------------------------------------------------
class FusedRegion(nn.Module):
    """One fused region: a Linear and its chain, or a chain of elementwise ops on another value.
    ``forward(x, weight, bias, *tensors)`` (weight and bias None for a chain alone) runs ``cutlass_ext.linear`` or
    ``cutlass_ext.elementwise`` with the chain, or the replay of the original ops where that would compute something
    else or could not help (``fusable`` says which and why). It holds no tensors: the graph passes the model's own
    parameters in on each call, so the model's state_dict, ``.to()`` and ``load_state_dict`` are unaffected."""

    def __init__(self, name: str, items: list, replay: fx.GraphModule, dropouts: list, group_norm: bool,
                 linear: bool):
        super().__init__()
        self.name = name
        self.items = items
        self.group_norm = group_norm
        self.linear = linear
        # Not a submodule: its modules are the model's own, registered (and in the state_dict) there.
        object.__setattr__(self, "replay", replay)
        self.dropouts = dropouts  # names of the replay's Dropout modules
        self.vector_inputs = {i[2] for i in items if isinstance(i, tuple) and i[0] == "vec"}  # indices in *tensors
        self.module_targets = [i[1] for i in items if isinstance(i, tuple) and i[0] != "vec"]
        self._cached = None  # (key, tensors, Epilogue) of the last call

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cached"] = None  # tensors, which a copy or a pickle must not keep apart from the model's
        return state

    def epilogue(self, tensors) -> Epilogue:
        """The chain over these per-feature tensors and the modules' attributes as they are now; made again only
        when a tensor object or an attribute changed (the cache holds the tensors, so their ids are not reused)."""
        key = (tuple(id(t) for t in tensors),
               tuple(_module_state(self.replay.get_submodule(t)) for t in self.module_targets))
        compiling = torch.compiler.is_compiling()  # traced once: no cache (and no attribute writes) in the graph
        if not compiling and self._cached is not None and self._cached[0] == key:
            return self._cached[2]
        ops = []
        for item in self.items:
            if isinstance(item, Op):
                ops.append(item)
            elif item[0] == "vec":
                ops.append(Op(item[1], tensors[item[2]]))
            elif item[0] == "module":
                ops.append(_module_op(self.replay.get_submodule(item[1])))
            else:
                ops.append(_norm_op(self.replay.get_submodule(item[1]), *(
                    None if i is None else tensors[i] for i in item[2:])))
        epi = Epilogue(ops)
        if not compiling:
            self._cached = (key, tuple(tensors), epi)
        return epi

    def _plan(self, x, weight, bias, tensors) -> tuple[Epilogue | None, str | None]:
        """(the chain, None) where the fused op computes what the original ops do and can run fast, else (the
        chain or None, why not). The device is checked last, so the other checks are seen (and tested) on the
        CPU too."""
        if not isinstance(x, torch.Tensor) or (self.linear and not isinstance(weight, torch.Tensor)):
            return None, "inputs that are not tensors"
        if x.dtype not in FUSED_DTYPES:
            return None, f"{x.dtype} inputs (the fused ops take float32, bfloat16 and float16)"
        if self.linear and (weight.dtype != x.dtype or weight.dim() != 2 or x.dim() == 0 or
                            (bias is not None and (bias.dtype != x.dtype or bias.device != x.device))):
            return None, "operands that F.linear would promote, broadcast or reject"
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, *tensors)):
            return None, "autograd (the original ops are differentiable)"
        if self.group_norm and x.dim() != 2:
            return None, "nn.GroupNorm on a tensor that is not 2-D (it normalizes dim 1, the fused stage the features)"
        if any(self.replay.get_submodule(d).training for d in self.dropouts):
            return None, "a Dropout in training mode"
        features = weight.shape[0] if self.linear else (x.shape[-1] if x.dim() else None)
        for i, t in enumerate(tensors):
            if not (isinstance(t, torch.Tensor) and t.dim() == 1 and t.numel() == features and t.device == x.device):
                return None, "a per-feature tensor that is not one value per feature on x's device"
            if i in self.vector_inputs and t.dtype != x.dtype:
                return None, f"a {t.dtype} per-feature tensor, which promotes {x.dtype} values to {t.dtype}"
            if i in self.vector_inputs and not t.is_contiguous():  # its encoding would be a copy made once
                return None, "a per-feature tensor that is not contiguous"
        try:
            epi = self.epilogue(tensors)
        except (TypeError, ValueError):
            return None, "module attributes or parameters the fused op does not take"
        return epi, None if x.is_cuda else f"{x.device.type} tensors"

    def fusable(self, x, weight, bias, tensors) -> str | None:
        """None where forward runs the fused op for these inputs, else why it runs the original ops."""
        return self._plan(x, weight, bias, tensors)[1]

    def _run(self, x, weight, bias, epi: Epilogue):
        return linear(x, weight, bias, epi) if self.linear else elementwise(x, epi)

    def fused(self, x, weight=None, bias=None, *tensors):
        """The fused op on whatever path it takes for these inputs (the CPU's reference too)."""
        return self._run(x, weight, bias, self.epilogue(tensors))

    def forward(self, x, weight=None, bias=None, *tensors):
        epi, why = self._plan(x, weight, bias, tensors)
        return self._run(x, weight, bias, epi) if why is None else self.replay(x, weight, bias, *tensors)

    def path(self, x, weight=None, bias=None, *tensors) -> Path:
        """What ``forward`` runs for these inputs, and why."""
        epi, why = self._plan(x, weight, bias, tensors)
        if why is not None:
            return Path(False, f"the original ops, for {why}")
        return linear_path(x, weight, bias, epi) if self.linear else elementwise_path(x, epi)

    def extra_repr(self) -> str:
        return self.name


def _linear(root: nn.Module, node: fx.Node):
    """(x, weight, bias, out_features or None, name) of an nn.Linear or F.linear node, or None. weight and bias are
    graph nodes, or attribute names for an nn.Linear's parameters."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        if not isinstance(module, nn.Linear) or type(module).forward is not nn.Linear.forward or _has_hooks(module):
            return None
        if node.kwargs or len(node.args) != 1:
            return None
        bias = f"{node.target}.bias" if module.bias is not None else None
        return node.args[0], f"{node.target}.weight", bias, module.out_features, node.target
    if node.op == "call_function" and node.target is F.linear:
        args = {**dict(zip(("input", "weight", "bias"), node.args)), **node.kwargs}
        weight, bias = args.get("weight"), args.get("bias")
        if set(args) - {"input", "weight", "bias"} or not isinstance(weight, fx.Node):
            return None
        if bias is not None and not isinstance(bias, fx.Node):
            return None
        features = None
        if weight.op == "get_attr":
            w = _fetch_attr(root, weight.target)
            features = w.shape[0] if isinstance(w, torch.Tensor) and w.dim() == 2 else None
        return args["input"], weight, bias, features, node.name
    return None


def _replay(gm: fx.GraphModule, nodes: list[fx.Node], inputs: list, end: fx.Node) -> fx.GraphModule:
    """The region's original nodes as a graph of their own over forward's inputs (x, weight, bias, *tensors);
    modules are gm's (the same objects)."""
    graph = fx.Graph()
    env = {}
    for i, source in enumerate(inputs):
        placeholder = graph.placeholder(f"input_{i}")
        if isinstance(source, fx.Node):
            env[source] = placeholder
    for node in nodes:
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[end])
    return fx.GraphModule(gm, graph, class_name="Replay")


def _norm_op(module: nn.Module, weight, bias) -> Op:
    """The group_norm / layer_norm op of an nn.GroupNorm / nn.LayerNorm, with these affine tensors."""
    affine = dict(weight=weight, bias=bias, eps=module.eps)
    if type(module) is nn.GroupNorm:
        return Op("group_norm", module.num_groups, **affine)
    return Op("layer_norm", **affine)


def _chain_text(root: nn.Module, items, tensors) -> str:
    def name(i):
        source = tensors[i]
        return source.target if isinstance(source, fx.Node) else source

    parts = []
    for item in items:
        if isinstance(item, Op):
            parts.append(str(item))
        elif item[0] == "vec":
            parts.append(f"{item[1]}({name(item[2])})")
        elif item[0] == "module":
            parts.append(str(_module_op(root.get_submodule(item[1]))))
        else:  # as Op prints it, without making one: the model's tensors may be of a dtype the op refuses
            module = root.get_submodule(item[1])
            args = [str(module.num_groups)] if type(module) is nn.GroupNorm else []
            args += [f"{p}={name(i)}" for p, i in zip(("weight", "bias"), item[2:]) if i is not None]
            args += [f"eps={module.eps:g}"] if module.eps != 1e-5 else []
            kind = "group_norm" if type(module) is nn.GroupNorm else "layer_norm"
            parts.append(f"{kind}({', '.join(args)})" if args else kind)
    return " | ".join(parts)


def _elementwise_start(chain: _Chain, node: fx.Node):
    """(input, items, nodes) where ``node`` starts a chain of elementwise ops on a value that is not a Linear's
    fused output, or None."""
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    if len(tensors) != 1 or tensors[0].op == "get_attr":
        return None
    value = tensors[0]
    if _in_place(chain.root, node):  # it overwrites a value from outside the chain, which others may read
        return None
    users = list(value.users)
    if len(users) == 2 and (swish := _swish(chain, value, users)) is not None and swish[0] is node:
        return value, [Op("silu")], list(swish)
    try:
        items = _one_op(chain, node, value)
    except (TypeError, ValueError):
        return None
    return (value, items, [node]) if items else None


def _nodes_between(gm: fx.GraphModule, first: fx.Node, last: fx.Node) -> list[fx.Node]:
    out, inside = [], False
    for n in gm.graph.nodes:
        inside = inside or n is first
        if inside:
            out.append(n)
        if n is last:
            break
    return out


def _unique_target(gm: fx.GraphModule, base: str) -> str:
    target, suffix = base, 0
    while hasattr(gm, target):
        suffix += 1
        target = f"{base}_{suffix}"
    return target


def _fuse_graph(gm: fx.GraphModule) -> list[str]:
    """Replaces each Linear + chain of ``gm``'s graph, and each chain of at least two elementwise ops on another
    value, by a FusedRegion call; returns what it did, one line per Linear or chain."""
    notes = []
    erased = set()
    for node in list(gm.graph.nodes):
        if node in erased or node.op not in ("call_module", "call_function", "call_method"):
            continue
        found = _linear(gm, node)
        if found is not None:
            x, weight, bias, features, name = found
            chain = _Chain(gm, features, linear=True)
            why = _read_chain(chain, node, residuals=True)
            if not chain.items:
                notes.append(f"{name}: not fused: nothing to fuse before {why}")
                continue
            members = set(chain.nodes) | {node}
        else:
            chain = _Chain(gm, None, linear=False)
            start = _elementwise_start(chain, node)
            if start is None:
                continue
            x, items, first = start
            chain.take(items, first)
            why = _read_chain(chain, chain.nodes[-1], residuals=False)
            # A lone op is one kernel in PyTorch too; arithmetic alone may be on Python numbers (x.size(0) * 2).
            if len(chain.items) < 2 or all(isinstance(i, Op) and i.name in _NUMERIC for i in chain.items):
                continue
            weight = bias = None
            name = node.name
            members = set(chain.nodes)
        end = chain.nodes[-1]
        inputs = [x, weight, bias, *chain.tensors]
        nodes = [n for n in gm.graph.nodes if n in members]
        # The region runs where its last node was: a write in between to what it reads would come first.
        between = _nodes_between(gm, nodes[0], end)
        writer = next((n for n in between if n not in members and _in_place(gm, n)), None)
        if writer is not None:
            notes.append(f"{name}: not fused: {_describe(chain, writer)} writes in place between the region's first "
                         "and last op")
            continue
        text = _chain_text(gm, chain.items, chain.tensors)
        region = FusedRegion(f"{name} -> {text}" if found else text, chain.items, _replay(gm, nodes, inputs, end),
                             chain.dropouts, chain.group_norm, linear=found is not None)
        target = _unique_target(gm, f"{name.replace('.', '_')}_fused")
        gm.add_submodule(target, region)
        with gm.graph.inserting_before(end.next):  # in creation order, after the region
            args = [gm.graph.get_attr(s) if isinstance(s, str) else s for s in inputs]
            call = gm.graph.call_module(target, tuple(args))
        end.replace_all_uses_with(call)
        for n in reversed(nodes):
            gm.graph.erase_node(n)
            erased.add(n)
        what = name if found else f"{_describe(chain, node)} and after"
        notes.append(f"{what}: fused: {text} (the chain ends at {why})")
    gm.graph.lint()
    gm.recompile()
    return notes


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with cutlass_ext's own modules kept whole (their forward is not traceable Python)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (FusedLinear, FusedRegion)) or super().is_leaf_module(m, qualname)


def fuse(module: nn.Module) -> nn.Module:
    """``module`` with each Linear and the elementwise tail after it as one FusedRegion (see the module docstring).

    Returns a torch.fx.GraphModule that shares ``module``'s submodules and parameters (its state_dict has the same
    keys and tensors); ``module`` itself is not changed. A module that torch.fx cannot trace comes back as a
    shallow copy whose children are fused one by one. ``report(result)`` lists what was fused and why each chain
    ends where it does.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"cutlass_ext.fuse expects an nn.Module, got {type(module).__name__}")
    try:
        gm = fx.GraphModule(module, _Tracer().trace(module), type(module).__name__)
    except Exception as error:  # noqa: BLE001 - torch.fx raises many kinds (TraceError, TypeError, ...)
        return _fuse_children(module, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    _restore_unused(gm, module)  # first: region names then avoid every name the model uses
    notes = _fuse_graph(gm)
    gm.training = module.training  # not gm.train(): that would set the mode of the model's own submodules
    notes = notes or ["nothing to fuse: no Linear, nor a chain of two or more elementwise ops"]
    object.__setattr__(gm, "_cutlass_ext_report", notes)
    return gm


def _fuse_children(module: nn.Module, error: str) -> nn.Module:
    """A shallow copy of ``module`` (same parameters, buffers and hooks) with its children fused."""
    out = copy.copy(module)
    out._modules = module._modules.copy()
    out._parameters = module._parameters.copy()
    out._buffers = module._buffers.copy()
    notes = [f"(not traced by torch.fx: {error}; its children are fused one by one)"]
    for name, child in module.named_children():
        fused = fuse(child)
        child_notes = report_lines(fused)
        if any(": fused: " in n for n in child_notes):
            out._modules[name] = fused
        notes += [f"{name}.{n}" if not n.startswith("(") else f"{name} {n}" for n in child_notes
                  if not n.startswith("nothing to fuse")]
    object.__setattr__(out, "_cutlass_ext_report", notes)
    return out


def _restore_unused(gm: fx.GraphModule, module: nn.Module) -> None:
    """Registers in ``gm`` what ``module`` holds but its forward never reads (tracing keeps only what the graph
    uses), and makes the state_dict's keys exactly the model's."""
    for name, sub in module.named_modules(remove_duplicate=False):  # a module under two names: both keys
        try:
            mine = gm.get_submodule(name) if name else gm
        except AttributeError:
            gm.add_submodule(name, sub)
            continue
        if mine is sub:
            continue
        for pname, p in sub._parameters.items():
            if pname not in mine._parameters and not hasattr(mine, pname):
                mine.register_parameter(pname, p)
        for bname, b in sub._buffers.items():
            if bname not in mine._buffers and not hasattr(mine, bname):
                mine.register_buffer(bname, b, persistent=bname not in sub._non_persistent_buffers_set)
    # GraphModule registers every tensor the graph reads as a persistent buffer: plain tensor attributes of the
    # model, constants made in forward (_tensor_constant0), non-persistent buffers. Only the model's keys stay.
    keys = set(module.state_dict().keys())
    model_modules = {id(m) for m in module.modules()}
    for name, sub in gm.named_modules(remove_duplicate=False):
        if id(sub) in model_modules:  # the model's own: its keys are the model's
            continue
        for bname in sub._buffers:
            if (f"{name}.{bname}" if name else bname) not in keys:
                sub._non_persistent_buffers_set.add(bname)


def report_lines(module: nn.Module) -> list[str]:
    """What ``fuse`` did to ``module``, one line per Linear (empty for a module fuse did not make)."""
    return list(getattr(module, "_cutlass_ext_report", []))


def report(module: nn.Module) -> str:
    """What ``fuse`` did: for each Linear, the chain fused after it and where and why it ends, or why nothing
    was."""
    return "\n".join(report_lines(module))
