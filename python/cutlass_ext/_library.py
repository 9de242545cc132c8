"""The Python side of the torch ops that the compiled module defines (cutlass_ext/torch/library.cpp):
fake implementations, so torch.compile can trace them, and CPU implementations, the reference math."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .epilogue import Op, norm_reference, run_device_ops

_registered = False

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def register_python_impls() -> None:
    global _registered
    if _registered:
        return
    _registered = True

    @torch.library.register_fake("cutlass_ext::elementwise")
    def _elementwise_fake(x, ops, params, vectors):
        torch._check(x.dtype in _DTYPES, lambda: f"cutlass_ext.elementwise: unsupported dtype {x.dtype}")
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    @torch.library.register_fake("cutlass_ext::elementwise_out")
    def _elementwise_out_fake(x, ops, params, vectors, out):
        torch._check(out.shape == x.shape, lambda: "cutlass_ext.elementwise: out and x differ in shape")
        torch._check(out.dtype == x.dtype, lambda: "cutlass_ext.elementwise: out and x differ in dtype")

    @torch.library.register_kernel("cutlass_ext::elementwise", "cpu")
    def _elementwise_cpu(x, ops, params, vectors):
        return run_device_ops(x, ops, params, vectors).contiguous()

    @torch.library.register_kernel("cutlass_ext::elementwise_out", "cpu")
    def _elementwise_out_cpu(x, ops, params, vectors, out):
        out.copy_(run_device_ops(x, ops, params, vectors))

    @torch.library.register_fake("cutlass_ext::chain_backward")
    def _chain_backward_fake(z, grad, ops, params, vectors):
        torch._check(z.dtype in _DTYPES, lambda: f"cutlass_ext.chain_backward: unsupported dtype {z.dtype}")
        torch._check(grad.shape == z.shape and grad.dtype == z.dtype,
                     lambda: "cutlass_ext.chain_backward: grad and z differ in shape or dtype")
        return torch.empty(z.shape, dtype=z.dtype, device=z.device)

    @torch.library.register_kernel("cutlass_ext::chain_backward", "cpu")
    def _chain_backward_cpu(z, grad, ops, params, vectors):
        """torch's autograd through the reference chain: what the kernel computes."""
        with torch.enable_grad():
            v0 = z.detach().to(torch.float32).requires_grad_()
            y = run_device_ops(v0, ops, params, [v.detach() for v in vectors], out_dtype=torch.float32)
            (grad_z,) = torch.autograd.grad(y, v0, grad.to(torch.float32))
        return grad_z.to(z.dtype)

    @torch.library.register_fake("cutlass_ext::fused_linear")
    def _fused_linear_fake(x, weight, bias, ops, params, vectors, config="", precision="", weight_split=None):
        torch._check(x.dtype in _DTYPES, lambda: f"cutlass_ext.linear: unsupported dtype {x.dtype}")
        torch._check(x.shape[-1] == weight.shape[1], lambda: "cutlass_ext.linear: x and weight do not match")
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    @torch.library.register_kernel("cutlass_ext::fused_linear", "cpu")
    def _fused_linear_cpu(x, weight, bias, ops, params, vectors, config="", precision="", weight_split=None):
        return run_device_ops(F.linear(x, weight, bias), ops, params, vectors).contiguous()

    @torch.library.register_fake("cutlass_ext::fused_linear_group_norm")
    def _fused_linear_group_norm_fake(x, weight, bias, ops, params, vectors, num_groups, norm_weight, norm_bias,
                                      eps, post_ops, post_params, post_vectors, config=""):
        torch._check(x.dtype in (torch.bfloat16, torch.float16),
                     lambda: f"cutlass_ext.linear: the GroupNorm epilogue takes bf16/fp16, got {x.dtype}")
        torch._check(x.shape[-1] == weight.shape[1], lambda: "cutlass_ext.linear: x and weight do not match")
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    @torch.library.register_kernel("cutlass_ext::fused_linear_group_norm", "cpu")
    def _fused_linear_group_norm_cpu(x, weight, bias, ops, params, vectors, num_groups, norm_weight, norm_bias,
                                     eps, post_ops, post_params, post_vectors, config=""):
        y = run_device_ops(F.linear(x, weight, bias), ops, params, vectors, out_dtype=x.dtype)
        return _group_norm_chain_cpu(y, num_groups, norm_weight, norm_bias, eps, post_ops, post_params, post_vectors)

    @torch.library.register_fake("cutlass_ext::split_tf32")
    def _split_tf32_fake(weight):
        torch._check(weight.dtype == torch.float32 and weight.dim() == 2, lambda: "split_tf32: 2-D float32 only")
        return weight.new_empty((weight.shape[0], 2 * weight.shape[1]))

    @torch.library.register_fake("cutlass_ext::group_norm_chain")
    def _group_norm_chain_fake(x, num_groups, weight, bias, eps, ops, params, vectors):
        torch._check(x.dtype in _DTYPES, lambda: f"cutlass_ext.group_norm_chain: unsupported dtype {x.dtype}")
        torch._check(x.dim() >= 1 and x.shape[-1] % num_groups == 0,
                     lambda: "cutlass_ext.group_norm_chain: the features do not split into the groups")
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    @torch.library.register_kernel("cutlass_ext::group_norm_chain", "cpu")
    def _group_norm_chain_cpu(x, num_groups, weight, bias, eps, ops, params, vectors):
        norm = Op("group_norm", num_groups, weight=weight, bias=bias, eps=eps)
        return run_device_ops(norm_reference(x, norm), ops, params, vectors, out_dtype=x.dtype).contiguous()
