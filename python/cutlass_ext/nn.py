"""FusedLinear: a drop-in nn.Linear whose forward is ONE GEMM with the elementwise tail in its epilogue."""

from __future__ import annotations

import torch
from torch import nn

from .epilogue import Epilogue, Op, as_epilogue
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

    @classmethod
    def from_linear_and_norm(cls, module: nn.Linear, norm: nn.GroupNorm | nn.LayerNorm, pre=None, post=None,
                             precision: str | None = None) -> "FusedLinear":
        """``post(norm(pre(module(x))))`` as one module: the GEMM with ``pre`` in its epilogue, and the norm and
        ``post`` either in the same epilogue or in one pass after it (see ``cutlass_ext.linear``).

        ``norm`` is an nn.GroupNorm over the output features (num_channels == out_features) or an nn.LayerNorm
        over them (normalized_shape == (out_features,)); it becomes the submodule ``norm``, so its weight and bias
        are this module's ``norm.weight`` and ``norm.bias`` (shared, not copied), in its state_dict and moved with
        it. ``module``'s weight and bias are shared as in ``from_linear``.
        """
        out = module.out_features if isinstance(module, nn.Linear) else None
        if isinstance(norm, nn.GroupNorm):
            if norm.num_channels != out:
                raise ValueError(f"from_linear_and_norm: the GroupNorm has {norm.num_channels} channels, the Linear "
                                 f"{out} output features")
        elif isinstance(norm, nn.LayerNorm):
            if tuple(norm.normalized_shape) != (out,):
                raise ValueError(f"from_linear_and_norm: the LayerNorm normalizes over {tuple(norm.normalized_shape)}, "
                                 f"the Linear has ({out},) output features")
        else:
            raise TypeError(f"from_linear_and_norm expects an nn.GroupNorm or nn.LayerNorm, got {type(norm).__name__}")
        fused = cls.from_linear(module, precision=precision)
        fused.norm = norm
        fused._pre, fused._post = as_epilogue(pre), as_epilogue(post)
        fused.epilogue = fused._norm_epilogue()
        return fused

    def _norm_epilogue(self) -> Epilogue:
        """pre | the norm, reading the submodule's current weight and bias | post."""
        norm = self.norm
        affine = dict(weight=norm.weight, bias=norm.bias, eps=norm.eps,
                      vector_name={"weight": "norm.weight", "bias": "norm.bias"})
        op = (Op("group_norm", norm.num_groups, **affine) if isinstance(norm, nn.GroupNorm) else
              Op("layer_norm", **affine))
        return self._pre | Epilogue([op]) | self._post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self._modules.get("norm")  # from_linear_and_norm's submodule
        op = self.epilogue.norm
        if norm is not None and op is not None and (op.affine[0] is not norm.weight or op.affine[1] is not norm.bias):
            self.epilogue = self._norm_epilogue()  # the norm's parameters were replaced, not updated in place
        return linear(x, self.weight, self.bias, self.epilogue, self.precision)

    def extra_repr(self) -> str:
        precision = f", precision='{self.precision}'" if self.precision else ""
        return f"{super().extra_repr()}, epilogue='{self.epilogue}'{precision}"
