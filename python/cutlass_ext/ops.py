"""The functional API. Each function picks a path, native (the compiled kernels) or reference (torch ops in
float32, correct everywhere, differentiable), and can tell which one it would take and why.

Under autograd the native path is a different one: the fused GEMM has no backward, so linear() runs F.linear
(cuBLAS, differentiable) and then the chain as one autograd node, _ChainFunction: forward by the elementwise kernel,
backward by the chain-backward kernel (grad * chain'(z), one pass). The chain's vectors and a normalization stage
get no gradient from those kernels, so when they need one, or the chain has a norm, the reference runs instead.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from . import _native, autotune
from .epilogue import Epilogue, as_epilogue

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Path:
    native: bool
    reason: str

    def __str__(self) -> str:
        return f"{'native' if self.native else 'reference'}: {self.reason}"


def _check_tensor(fn: str, what: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}: {what} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{fn}: {what} has dtype {t.dtype}; supported: float32, bfloat16, float16")


def _needs_grad(t: torch.Tensor, epilogue: Epilogue, *operands) -> bool:
    """Whether autograd records this call (operands that are not tensors are left to the input checks)."""
    return torch.is_grad_enabled() and any(getattr(o, "requires_grad", False)
                                           for o in (t, *operands, *epilogue.tensors))


def _device_reason(t: torch.Tensor) -> str | None:
    """None when the compiled kernels can run on ``t``'s device, else why not."""
    if t.device.type != "cuda":
        return f"{t.device.type} tensor: the torch reference runs there"
    ok, why = _native.device_support(t.device)
    return None if ok else why


def _native_reason(t: torch.Tensor, epilogue: Epilogue, *operands) -> str | None:
    """None when the compiled kernels can run this call, else why not: the device, then under autograd
    (_needs_grad) what the autograd path (_ChainFunction) cannot take. Each op adds its own conditions after it."""
    reason = _device_reason(t)
    if reason is None and _needs_grad(t, epilogue, *operands):
        if epilogue.norm is not None:
            return "autograd through a normalization stage: the compiled backward has none, the reference runs"
        if any(v.requires_grad for v in epilogue.tensors):
            return "autograd into the epilogue's vectors: the compiled backward gives none, the reference runs"
    return reason


class _ChainFunction(torch.autograd.Function):
    """y = chain(z) as one autograd node: forward by the elementwise kernel, backward by the chain-backward kernel
    (grad_z = grad_y * chain'(z) in one pass, autograd's special values), saving z. The chain's vectors are
    constants here (_native_reason sends chains whose vectors need a gradient to the reference)."""

    @staticmethod
    def forward(ctx, z, names, params, *vectors):
        ctx.save_for_backward(z, *vectors)
        ctx.chain = (names, params)
        return torch.ops.cutlass_ext.elementwise(z, list(names), list(params), list(vectors))

    @staticmethod
    def backward(ctx, grad):
        z, *vectors = ctx.saved_tensors
        names, params = ctx.chain
        grad_z = torch.ops.cutlass_ext.chain_backward(z, grad, list(names), list(params), vectors)
        return (grad_z, None, None, *(None for _ in vectors))


def _chain_autograd(z: torch.Tensor, epi: Epilogue) -> torch.Tensor:
    """epi(z), differentiable, by the compiled kernels (no normalization stage)."""
    if not len(epi):
        return z
    names, params, vectors = epi.encode()
    return _ChainFunction.apply(z, tuple(names), tuple(params), *vectors)


_AUTOGRAD_PATH = "autograd: {what}, then the chain by the compiled elementwise kernel; its backward by the " \
                 "compiled chain-backward kernel"


def _norm_reason(norm, features: int) -> str | None:
    """None when the compiled normalization stage takes a group of this size, else why not."""
    if norm is not None and features // norm.params[0] > _MAX_GROUP_SIZE:
        return (f"{norm.name}: groups of {features // norm.params[0]} features exceed the compiled stage's "
                f"{_MAX_GROUP_SIZE} (torch reference)")
    return None


# The largest group the compiled normalization stage holds (kMaxGroupNormGroupSize, cutlass_ext/group_norm.h).
_MAX_GROUP_SIZE = 16384


def elementwise_path(x: torch.Tensor, epilogue=None) -> Path:
    """Which path ``elementwise(x, epilogue)`` takes, and why."""
    epi = as_epilogue(epilogue)
    reason = _native_reason(x, epi) or _norm_reason(epi.norm, x.shape[-1] if x.dim() else 1)
    if reason is None and _needs_grad(x, epi):
        return Path(True, "autograd: the compiled elementwise kernel; its backward by the compiled chain-backward "
                          "kernel")
    kernel = "the compiled elementwise kernel" if epi.norm is None else "the compiled normalization stage"
    return Path(reason is None, reason or kernel)


def _run_norm_stage(y: torch.Tensor, norm, post: Epilogue) -> torch.Tensor:
    """post(norm(y)) by the compiled normalization stage: one read of y, one write of the result."""
    groups, eps = norm.params
    return torch.ops.cutlass_ext.group_norm_chain(y, groups, *norm.affine, eps, *post.encode())


def elementwise(x: torch.Tensor, epilogue, out: torch.Tensor | None = None) -> torch.Tensor:
    """``epilogue`` applied to every element of ``x``: fp32 math, the result in x's dtype.

    Any shape and strides; the per-feature vector ops index the last dimension. ``out`` (same shape and dtype
    as x) receives the result and may be ``x`` itself (in place). Returns ``out``, or a new contiguous tensor.
    """
    fn = "cutlass_ext.elementwise"
    epi = as_epilogue(epilogue)
    _check_tensor(fn, "x", x)
    epi.check_for(x.shape[-1] if x.dim() else None, x.device, fn)
    if out is not None:
        _check_tensor(fn, "out", out)
        if out.dtype != x.dtype:
            raise TypeError(f"{fn}: out has dtype {out.dtype}, x has {x.dtype}")
        if out.device != x.device:
            raise ValueError(f"{fn}: out is on {out.device}, x on {x.device}")
        if out.shape != x.shape:
            raise ValueError(f"{fn}: out has shape {tuple(out.shape)}, x has {tuple(x.shape)}")
    path = elementwise_path(x, epi)
    if path.native and _needs_grad(x, epi):
        result = _chain_autograd(x, epi)
        return result if out is None else out.copy_(result)
    if path.native and epi.norm is not None:
        pre, norm, post = epi.split()
        result = _run_norm_stage(elementwise(x, pre) if len(pre) else x, norm, post)
        return result if out is None else out.copy_(result)
    if path.native:
        names, params, vectors = epi.encode()
        if out is None:
            return torch.ops.cutlass_ext.elementwise(x, names, params, vectors)
        torch.ops.cutlass_ext.elementwise_out(x, names, params, vectors, out)
        return out
    if x.device.type == "cuda" and not path.reason.startswith("autograd"):
        _native.warn_fallback(path.reason)
    result = epi.reference(x)
    if out is None:
        return result.contiguous()
    return out.copy_(result)


# --- The fused Linear -------------------------------------------------------------------------------------------
FUSED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# How float32 inputs are multiplied, in torch's words (torch.set_float32_matmul_precision): 'highest' is FP32-level
# accuracy (on Hopper: split TF32, three tensor-core products with the small terms summed apart), 'high' and
# 'medium' one TF32 product (10-bit mantissas). Other dtypes have one precision and ignore the setting.
PRECISIONS = ("highest", "high", "medium")


@torch.compiler.assume_constant_result
def _global_float32_precision() -> str:
    """torch.get_float32_matmul_precision(), which torch.compile cannot trace: read at trace time instead (the
    compiled graph is guarded on whether TF32 is allowed, the one thing the setting selects here)."""
    return torch.get_float32_matmul_precision()


def _precision_for(dtype: torch.dtype, precision: str | None, fn: str) -> str:
    """The precision a float32 call runs at ('' for other dtypes): ``precision``, else torch's global setting."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"{fn}: precision must be one of {PRECISIONS} or None (torch's setting), got {precision!r}")
    if dtype != torch.float32:
        return ""
    return precision or _global_float32_precision()


# The split-precision path reads each float32 weight as split_tf32(weight) = [W_hi | W_lo]: twice the weight's
# memory, made once and kept while the weight lives and is unchanged (its version counter and storage are
# checked on every call, so optimizer steps and load_state_dict are seen). clear_weight_cache() frees them.
_weight_splits = WeakIdKeyDictionary()


def _weight_split(weight: torch.Tensor) -> torch.Tensor | None:
    if torch.compiler.is_compiling() or weight.is_inference():
        # The op splits the weight on each call: inside a compiled graph, and for inference tensors, which have no
        # version counter to tell an in-place update.
        return None
    stamp = (weight._version, weight.data_ptr())
    entry = _weight_splits.get(weight)
    if entry is None or entry[0] != stamp:
        entry = _weight_splits[weight] = (stamp, torch.ops.cutlass_ext.split_tf32(weight))
    return entry[1]


def clear_weight_cache() -> None:
    """Frees the split copies of float32 weights that precision='highest' keeps (see ``linear``)."""
    _weight_splits.clear()


_fused_kernels: dict[torch.dtype, bool] = {}


@torch.compiler.assume_constant_result
def _has_fused_kernels(dtype: torch.dtype) -> bool:
    found = _fused_kernels.get(dtype)
    if found is None:
        found = _fused_kernels[dtype] = bool(torch.ops.cutlass_ext.fused_linear_configs(dtype))
    return found


def _aligned16(t: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        # No data pointers while tracing: assume the 512-byte alignment of torch's allocations. A misaligned view
        # reaching the compiled kernel raises a clear error from the op's own checks instead of falling back.
        return True
    return t.data_ptr() % 16 == 0


def _check_linear_inputs(fn, x, weight, bias):
    _check_tensor(fn, "x", x)
    _check_tensor(fn, "weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"{fn}: weight must be 2-D (out_features x in_features), got shape {tuple(weight.shape)}")
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{fn}: x of shape {tuple(x.shape)} does not match weight of shape {tuple(weight.shape)} "
                         f"(x's last dimension must be in_features = {weight.shape[1]})")
    if x.dtype != weight.dtype:
        raise TypeError(f"{fn}: x has dtype {x.dtype}, weight has {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"{fn}: x is on {x.device}, weight on {weight.device}")
    if bias is not None:
        _check_tensor(fn, "bias", bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"{fn}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        if bias.dtype != x.dtype or bias.device != x.device:
            raise TypeError(f"{fn}: bias has {bias.dtype} on {bias.device}, x has {x.dtype} on {x.device}")


def _fused_reason(x, weight, bias, epilogue) -> str | None:
    """None when the fused kernels can take these (already validated) inputs, else why not. On every call of
    linear() that autograd does not record (the callers have checked _needs_grad), so ordered cheapest first and
    free of allocations until it fails."""
    reason = _device_reason(x)
    if reason is not None:
        return reason
    if x.dtype not in FUSED_DTYPES:
        return f"{x.dtype} inputs: the fused kernels take bfloat16, float16 and float32 (torch GEMM + elementwise kernel)"
    if not _has_fused_kernels(x.dtype):
        return "no fused kernels in this build (built without sm_90a?); torch GEMM + elementwise kernel"
    n, k = weight.shape
    per16 = 16 // x.element_size()  # elements per 16 bytes: TMA wants 16-byte aligned rows
    if k % per16 or n % per16:
        return (f"in_features ({k}) and out_features ({n}) must be multiples of {per16} for the fused {x.dtype} "
                "kernels (TMA)")
    if weight.stride(1) != 1 or weight.stride(0) % per16 or not _aligned16(weight):
        return "weight is not row-major with 16-byte aligned rows"
    if bias is not None and (bias.stride(0) != 1 or not _aligned16(bias)):
        return "bias is not contiguous and 16-byte aligned"
    if x.stride(-1) != 1 or not _aligned16(x) or (x.dim() > 1 and x.stride(-2) % per16 and not x.is_contiguous()):
        return "x's rows are not contiguous and 16-byte aligned"
    return _norm_reason(epilogue.norm, n)


# The group sizes (features per group) the GroupNorm epilogue takes: a row's group is one 128x256 output tile, or
# the two tiles of a 1x2 cluster (group_norm_epilogue_takes in cutlass_ext/include/cutlass_ext/fused_linear.h).
_EPILOGUE_NORM_GROUP_SIZES = (256, 512)


def _norm_in_epilogue(weight: torch.Tensor, norm, precision: str) -> bool:
    """Whether the normalization runs inside the GEMM's epilogue (bf16/fp16, groups of 256 or 512 features), rather
    than as the one-pass stage after it."""
    return (norm is not None and not precision and weight.shape[1] > 0 and
            weight.shape[0] // norm.params[0] in _EPILOGUE_NORM_GROUP_SIZES)


def _run_fused(x, weight, bias, epi: Epilogue, precision: str, split=None, tune: bool = False) -> torch.Tensor:
    """The fused path, its inputs already found eligible (_fused_reason). tune: the GEMM's configuration from
    autotune.config_for (eager calls), else the op's shape heuristic."""
    pre, norm, post = epi.split()
    if _norm_in_epilogue(weight, norm, precision):
        groups, eps = norm.params
        return torch.ops.cutlass_ext.fused_linear_group_norm.default(x, weight, bias, *pre.encode(), groups,
                                                                      *norm.affine, eps, *post.encode())
    config = autotune.config_for(x, weight, bias, pre, precision, split) if tune else ""
    y = torch.ops.cutlass_ext.fused_linear.default(x, weight, bias, *pre.encode(), config, precision, split)
    return y if norm is None else _run_norm_stage(y, norm, post)


def _at_precision(precision: str) -> str:
    return f" at float32 precision '{precision}'" if precision else ""


def _describe(precision: str, norm, in_epilogue: bool) -> str:
    what = "fused sm90 GEMM"
    if precision == "highest":
        what += ", split TF32 (float32, precision 'highest')"
    elif precision:
        what += f", TF32 (float32, precision '{precision}')"
    if in_epilogue:
        what += f", the {norm.name} in its epilogue"
    elif norm is not None:
        what += f", then the {norm.name} stage (one pass)"
    return what


def linear_path(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, epilogue=None,
                precision: str | None = None) -> Path:
    """Which path ``linear(x, weight, bias, epilogue, precision)`` takes, and why; for the fused path, the
    configuration."""
    fn = "cutlass_ext.linear"
    epi = as_epilogue(epilogue)
    _check_linear_inputs(fn, x, weight, bias)
    precision = _precision_for(x.dtype, precision, fn)
    if _needs_grad(x, epi, weight, bias):
        reason = _native_reason(x, epi, weight, bias)
        what = f"F.linear{_at_precision(precision)} (cuBLAS; differentiable)"
        return Path(reason is None, reason or _AUTOGRAD_PATH.format(what=what))
    reason = _fused_reason(x, weight, bias, epi)
    if reason is not None:
        return Path(False, reason)
    pre, norm, _ = epi.split()
    if _norm_in_epilogue(weight, norm, precision):
        return Path(True, _describe(precision, norm, True))
    config = autotune.cached_config(x, weight, bias, pre, precision)
    how = "autotuned"
    if config is None:
        config = torch.ops.cutlass_ext.fused_linear_plan(x, weight, bias, *pre.encode(), precision)
        how = "shape heuristic"
    return Path(True, f"{_describe(precision, norm, False)}, configuration {config} ({how})")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, epilogue=None,
           precision: str | None = None) -> torch.Tensor:
    """``epilogue(x @ weight.T + bias)``, as nn.Linear followed by the chain, computed as ONE GEMM on Hopper.

    x: (..., in_features); weight: (out_features, in_features) as nn.Linear stores it; bias: (out_features,).
    The chain runs in float32 on the accumulator plus bias (rounded to x's dtype first by the configuration that
    defers the chain to the next tile's mainloop, as F.linear's output is); the result is in x's dtype. Inputs the
    fused kernels cannot take run F.linear then the elementwise kernel (or the reference); ``linear_path`` says
    which and why.

    precision (float32 inputs only; None follows ``torch.get_float32_matmul_precision()``): 'highest' gives
    FP32-level accuracy by split TF32 (two GEMMs; the weight's split copy, twice its size, is cached while the
    weight is unchanged: see ``clear_weight_cache``); 'high' and 'medium' one TF32 GEMM.

    An epilogue with a normalization stage (``group_norm`` / ``layer_norm`` over the output features) normalizes
    with statistics in float32 from the pre-norm values rounded to x's dtype, as torch computes them on a Linear's
    output. For bfloat16 / float16 and groups of 256 or 512 features the GEMM's epilogue does it all in registers;
    otherwise the GEMM writes the pre-norm values and one pass normalizes and runs the ops after the norm.

    Under autograd (an input requires grad and grad mode is on) the fused GEMM, which has no backward, gives way to
    F.linear (cuBLAS) and the chain as one node: forward one pass of the elementwise kernel over F.linear's output
    z, backward one pass of the chain-backward kernel (grad_z = grad * chain'(z), with autograd's special values),
    then cuBLAS for the input and weight gradients as F.linear's own backward. It saves z. The chain there runs on
    z rounded to x's dtype, as in torch. Chains with a normalization stage, or whose vectors require grad, run the
    reference (differentiable torch ops).
    """
    fn = "cutlass_ext.linear"
    epi = epilogue if isinstance(epilogue, Epilogue) else as_epilogue(epilogue)
    precision = _precision_for(x.dtype, precision, fn) if isinstance(x, torch.Tensor) else precision
    # Host time is what small GEMMs cost (a 4096x1024x1024 GEMM is ~18 us, one call's worth of Python), so the
    # fused path runs only the eligibility checks and lets the op validate shapes and vectors; the full Python
    # checks run when something fails, to raise the same clear, typed error on every path.
    if _needs_grad(x, epi, weight, bias):
        _check_linear_inputs(fn, x, weight, bias)
        epi.check_for(weight.shape[0], x.device, fn)
        reason = _native_reason(x, epi, weight, bias)
        if reason is None:
            with _float32_matmul_precision(precision):
                z = F.linear(x, weight, bias)
            return _chain_autograd(z, epi)
        return _linear_fallback(x, weight, bias, epi, reason, precision)
    if torch.compiler.is_compiling():  # checks run once, while tracing: no cost in the compiled graph
        _check_linear_inputs(fn, x, weight, bias)
        epi.check_for(weight.shape[0], x.device, fn)
        reason = _fused_reason(x, weight, bias, epi)
        if reason is None:
            return _run_fused(x, weight, bias, epi, precision)
        return _linear_fallback(x, weight, bias, epi, reason, precision)
    try:
        reason = _fused_reason(x, weight, bias, epi)
    except (AttributeError, TypeError, ValueError, IndexError):
        reason = "invalid inputs"
    if reason is None:
        split = _weight_split(weight) if precision == "highest" else None
        try:
            return _run_fused(x, weight, bias, epi, precision, split, tune=True)
        except RuntimeError:
            _check_linear_inputs(fn, x, weight, bias)
            epi.check_for(weight.shape[0], x.device, fn)
            raise
    _check_linear_inputs(fn, x, weight, bias)
    epi.check_for(weight.shape[0], x.device, fn)
    return _linear_fallback(x, weight, bias, epi, reason, precision)


@contextlib.contextmanager
def _float32_matmul_precision(precision: str):
    """torch's float32 matmul precision set to ``precision`` for the block (a process-wide setting: eager only)."""
    if not precision or torch.compiler.is_compiling() or precision == torch.get_float32_matmul_precision():
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _linear_fallback(x, weight, bias, epi, reason, precision=""):
    """F.linear (at the asked float32 precision), then the chain: by the elementwise kernel where it runs, else
    (CPU, autograd) the reference."""
    if x.device.type == "cuda" and reason.startswith("the compiled module"):
        _native.warn_fallback(reason)
    with _float32_matmul_precision(precision):
        y = F.linear(x, weight, bias)
    if reason.startswith("autograd") or x.device.type != "cuda" or not _native.native_info().loaded:
        return epi.reference(y)
    if epi.norm is not None:
        return elementwise(y, epi)
    return elementwise(y, epi, out=y) if len(epi) else y
