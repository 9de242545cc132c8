"""FusedLinear: a drop-in nn.Linear whose forward is ONE GEMM with the elementwise tail in its epilogue."""

from __future__ import annotations

import torch
from torch import nn

from .epilogue import Epilogue, as_epilogue
from .ops import PRECISIONS, linear


class FusedLinear(nn.Linear):
    """nn.Linear followed by an epilogue chain, computed as one GEMM on Hopper.

    It IS an nn.Linear (same parameters, same state_dict keys, same initialization), plus ``epilogue``:
    ``y = epilogue(x @ weight.T + bias)``. On the CPU, or where the fused kernels cannot run, it computes the
    same function with torch ops (``cutlass_ext.linear_path`` says which path runs and why).

    Per-feature vectors in the epilogue (add_vec / mul_vec) are the tensors you passed: they are not registered
    in this module, so move them with it yourself.

    ``precision`` applies to float32 only (see ``cutlass_ext.linear``): None follows
    ``torch.get_float32_matmul_precision()`` at each call; 'highest' is FP32-level accuracy (and caches a split
    copy of the weight, twice its size), 'high' / 'medium' TF32.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, epilogue=None,
                 device=None, dtype=None, precision: str | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.epilogue: Epilogue = as_epilogue(epilogue)
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(f"FusedLinear: precision must be one of {PRECISIONS} or None, got {precision!r}")
        self.precision = precision

    @classmethod
    def from_linear(cls, module: nn.Linear, epilogue=None, precision: str | None = None) -> "FusedLinear":
        """A FusedLinear that shares ``module``'s weight and bias Parameters (no copy)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(module).__name__}")
        fused = cls(module.in_features, module.out_features, bias=module.bias is not None, epilogue=epilogue,
                    device="meta", dtype=module.weight.dtype, precision=precision)
        fused.weight = module.weight
        fused.bias = module.bias
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.epilogue, self.precision)

    def extra_repr(self) -> str:
        precision = f", precision='{self.precision}'" if self.precision else ""
        return f"{super().extra_repr()}, epilogue='{self.epilogue}'{precision}"
