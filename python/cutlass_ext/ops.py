"""The functional API. Each function picks a path, native (the compiled kernels) or reference (torch ops in
float32, correct everywhere, differentiable), and can tell which one it would take and why."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _native
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


def _native_path(t: torch.Tensor, epilogue: Epilogue, kernel: str) -> Path:
    if t.device.type != "cuda":
        return Path(False, f"{t.device.type} tensor: the torch reference runs there")
    ok, why = _native.device_support(t.device)
    if not ok:
        return Path(False, why)
    if torch.is_grad_enabled() and (t.requires_grad or any(v.requires_grad for v in epilogue.vectors)):
        return Path(False, "autograd: the native kernel has no backward yet, so the differentiable reference runs")
    return Path(True, kernel)


def elementwise_path(x: torch.Tensor, epilogue=None) -> Path:
    """Which path ``elementwise(x, epilogue)`` takes, and why."""
    return _native_path(x, as_epilogue(epilogue), "the compiled elementwise kernel")


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
