"""Training: the autograd path of linear(), FusedLinear and elementwise() (F.linear, then the chain as one autograd
node whose backward is the compiled chain-backward kernel) against torch's own autograd, its paths, and where
it gives way to the reference (GPU tests marked `gpu`)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

import cutlass_ext
from cutlass_ext import Epilogue, Op
from cutlass_ext.epilogue import DEVICE_OPS
from cutlass_ext.nn import FusedLinear

from test_elementwise import SPECIALS, TOL, native_loaded, needs_native, random_chain  # noqa: F401 (skipif)
from test_linear import chain_eager, make, poison_allocator


def reference_grad(z, grad, epi, dtype=torch.float32):
    """torch's autograd through the reference chain (torch's ops in float32): grad_z, in z's dtype."""
    v0 = z.detach().to(dtype).requires_grad_()
    (grad_z,) = torch.autograd.grad(epi.reference(v0, out_dtype=dtype), v0, grad.to(dtype))
    return grad_z.to(z.dtype)


def chain_backward(z, grad, epi):
    return torch.ops.cutlass_ext.chain_backward(z, grad, *epi.encode())


# --- CPU: the reference op and the paths ------------------------------------------------------------------------
@needs_native
def test_cpu_chain_backward_is_torch_autograd(gen):
    z = torch.randn(5, 7, generator=gen)
    grad = torch.randn(5, 7, generator=gen)
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu | residual(0.5)")
    torch.testing.assert_close(chain_backward(z, grad, epi), reference_grad(z, grad, epi))


def test_clamp_hardtanh_relu_keep_torch_gradients_at_the_bounds():
    """Three device ops with one value and three backward rules (epilogue_ops.cuh), on the reference path."""
    z = torch.tensor([math.nan, -1.0, 0.0, 1.0, 0.5])
    grad = torch.ones(5)
    got = {name: reference_grad(z, grad, Epilogue(name)).tolist() for name in ("clamp(-1, 1)", "hardtanh", "relu")}
    assert got["clamp(-1, 1)"] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert got["hardtanh"] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert got["relu"] == [1.0, 0.0, 0.0, 1.0, 1.0]


def test_cpu_autograd_path_is_the_reference():
    layer = FusedLinear(8, 16, epilogue="gelu")
    x = torch.randn(4, 8, requires_grad=True)
    path = cutlass_ext.linear_path(x, layer.weight, layer.bias, layer.epilogue)
    assert not path.native and "cpu" in path.reason


# --- GPU ---------------------------------------------------------------------------------------------------------
def boundary_inputs(a, b):
    """Values where an op's derivative changes its rule: its bounds, 0, +-3, -1.5 (hardswish's zero), specials."""
    edges = [a, b, 0.0, -0.0, 3.0, -3.0, 1.5, -1.5]
    return [e for e in edges if math.isfinite(e)] + SPECIALS


DEVICE_OP_PARAMS = {"add": (1.5, 0.0), "mul": (-2.0, 0.0), "clamp": (-1.0, 2.0), "hardtanh": (-2.0, 0.5),
                    "relu": (0.0, math.inf), "leaky_relu": (0.1, 0.0), "softplus": (2.0, 10.0), "elu": (0.7, 0.0),
                    "residual": (0.5, 0.0)}


@pytest.mark.gpu
@pytest.mark.parametrize("name", [n for n in DEVICE_OPS if n not in ("add_vec", "mul_vec")])
def test_each_op_derivative_matches_torch_autograd(name, gen):
    """grad * op'(z) against torch's CUDA autograd of the op in float32, special values and bounds included,
    with NaN and inf in the incoming gradient too (a select gives 0 where a product gives NaN)."""
    a, b = DEVICE_OP_PARAMS.get(name, (0.0, 0.0))
    specials = torch.tensor(boundary_inputs(a, b))
    z = torch.cat([torch.randn(4000, generator=gen) * 4, specials, specials]).cuda()
    grad = torch.randn(z.shape, generator=gen).cuda()
    grad[-2 * len(specials):-len(specials)] = torch.tensor([math.nan, math.inf, -math.inf] * len(specials))[
        :len(specials)].cuda()
    poison_allocator(z.numel() * 4)
    got = torch.ops.cutlass_ext.chain_backward(z, grad, [name], [a, b], [])  # the op in its device form
    v0 = z.detach().clone().requires_grad_()
    want, = torch.autograd.grad(DEVICE_OPS[name](v0, v0, a, b, None), v0, grad)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=1e-6, equal_nan=True)


def assert_grads_close(got, want, dtype, what, allowed_flips=0):
    """got == want within TOL[dtype], NaN where want has NaN; up to `allowed_flips` elements may differ by more (a
    float32 ulp of difference in a value right at a clamp's bound flips its derivative between 0 and 1)."""
    rtol, atol = TOL[dtype]
    bad = ~torch.isclose(got.float(), want.float(), rtol=rtol, atol=atol, equal_nan=True)
    assert int(bad.sum()) <= allowed_flips, (f"{what}: {int(bad.sum())} of {got.numel()} gradients differ, e.g. "
                                             f"{got[bad][:4].tolist()} against {want[bad][:4].tolist()}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_random_chains_backward(dtype, gen):
    rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
    for trial in range(20):
        features = rng.choice([1, 7, 64, 129])
        epi = random_chain(rng, features, "cuda")
        z = (torch.randn(33, features, generator=gen) * 3).cuda().to(dtype)
        grad = torch.randn(33, features, generator=gen).cuda().to(dtype)
        if trial % 4 == 3:  # a misaligned view: the one-element path
            z, grad = z.flatten()[1:], grad.flatten()[1:]
            if any(op.vector is not None for op in epi):
                epi = Epilogue([op for op in epi if op.vector is None])
        poison_allocator(z.numel() * z.element_size())
        got = chain_backward(z, grad, epi)
        assert_grads_close(got, reference_grad(z, grad, epi), dtype, f"'{epi}' on {tuple(z.shape)}",
                           allowed_flips=1)


@pytest.mark.gpu
def test_elementwise_autograd_uses_the_kernels(gen):
    x = (torch.randn(64, 96, generator=gen) * 3).cuda().requires_grad_()
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    path = cutlass_ext.elementwise_path(x, epi)
    assert path.native and "chain-backward" in path.reason
    y = cutlass_ext.elementwise(x, epi)
    assert y.grad_fn is not None and "ChainFunction" in type(y.grad_fn).__name__
    grad = torch.randn(y.shape, generator=gen).cuda()
    y.backward(grad)
    assert_grads_close(x.grad, reference_grad(x, grad, epi), torch.float32, "elementwise")


# The bounds where each device op's derivative jumps (a clamp's lo and hi, relu's 0, ...).
_JUMPS = {"clamp": lambda a, b: (a, b), "hardtanh": lambda a, b: (a, b), "relu": lambda a, b: (0.0,),
          "leaky_relu": lambda a, b: (0.0,), "elu": lambda a, b: (0.0,), "abs": lambda a, b: (0.0,),
          "hardsigmoid": lambda a, b: (-3.0, 3.0), "hardswish": lambda a, b: (-3.0, 3.0)}


def near_a_jump(z64, epi, rel=1e-2):
    """Elements whose value entering an op lies within `rel` of a bound where that op's derivative jumps, on the
    float64 chain: there the dtype's rounding of z (ours and eager's alike) may put a value on the other side of the
    bound than float64 does, and the gradient through it is 0 on one side and not on the other. The per-op test
    checks the bounds themselves."""
    names, params, vectors = epi.encode()
    vecs = iter(v.double() for v in vectors)
    v, near = z64, torch.zeros_like(z64, dtype=torch.bool)
    for i, name in enumerate(names):
        a, b = params[2 * i], params[2 * i + 1]
        for bound in _JUMPS.get(name, lambda a, b: ())(a, b):
            if math.isfinite(bound):
                near |= (v - bound).abs() <= rel * max(1.0, abs(bound))
        v = DEVICE_OPS[name](v, z64, a, b, next(vecs) if name in ("add_vec", "mul_vec") else None)
    return near


def linear_grads(layer, x, grad):
    layer.zero_grad()
    x = x.detach().requires_grad_()
    y = layer(x)
    y.backward(grad)
    return y, x.grad, layer.weight.grad, layer.bias.grad


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("chain", ["mul(0.5) | hardtanh(-2, 2) | gelu", "silu | div(2) | clamp(-1, 1) | tanh",
                                   "relu | residual(0.25) | mish"])
def test_fused_linear_training_matches_float64(dtype, chain, gen):
    """FusedLinear's y and gradients of x, weight and bias within 2x the error of torch's nn.Linear + eager chain in
    the same dtype, both against float64 autograd (DESIGN.md's rule, applied to every output of a training step)."""
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))  # make() draws from torch's generator
    x, w, b = make(150, 256, 192, dtype)
    x = x.reshape(3, 50, 192)
    layer = FusedLinear(192, 256, epilogue=chain, device="cuda", dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    assert "chain-backward" in cutlass_ext.linear_path(x.requires_grad_(), layer.weight, layer.bias,
                                                       layer.epilogue).reason
    grad = torch.randn(3, 50, 256, device="cuda")
    grad[near_a_jump(F.linear(x.double(), w.double(), b.double()), Epilogue(chain))] = 0
    grad = grad.to(dtype)
    ours = linear_grads(layer, x, grad)
    # float64: autograd of F.linear + the reference chain in float64
    x64 = x.detach().double().requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    y64 = Epilogue(chain).reference(F.linear(x64, w64, b64), out_dtype=torch.float64)
    y64.backward(grad.double())
    ref = (y64.detach(), x64.grad, w64.grad, b64.grad)
    # torch eager in dtype: nn.Linear, then the chain's ops rounded to dtype after each op
    xe = x.detach().clone().requires_grad_()
    we, be = w.clone().requires_grad_(), b.clone().requires_grad_()
    ye = chain_eager(F.linear(xe, we, be), Epilogue(chain))
    ye.backward(grad)
    eager = (ye, xe.grad, we.grad, be.grad)
    for what, got, want, theirs in zip(("y", "grad x", "grad weight", "grad bias"), ours, ref, eager):
        assert torch.isfinite(got).all(), what
        scale = want.abs().max().item()
        err = (got.double() - want).abs().max().item() / scale
        err_torch = (theirs.double() - want).abs().max().item() / scale
        assert err <= 2 * err_torch + 1e-3 * (dtype != torch.float32) + 1e-5, (
            f"{what}: relative error {err:.3g} > 2 x torch's {err_torch:.3g}")


@pytest.mark.gpu
def test_without_bias_and_only_weight_grads():
    x, w, _ = make(64, 128, 64, torch.bfloat16)
    layer = FusedLinear(64, 128, bias=False, epilogue="gelu", device="cuda", dtype=torch.bfloat16)
    y = layer(x)  # x does not require grad; the weight does
    assert y.grad_fn is not None
    y.float().sum().backward()
    z = F.linear(x, layer.weight.detach())
    want = reference_grad(z, torch.ones_like(z), Epilogue("gelu")).t() @ x
    torch.testing.assert_close(layer.weight.grad, want, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
def test_what_takes_the_reference_under_autograd(gen):
    x = torch.randn(16, 64, device="cuda", requires_grad=True)
    w = torch.randn(128, 64, device="cuda", requires_grad=True)
    scale = torch.rand(128, device="cuda", requires_grad=True)
    epi = Epilogue("mul_vec(s) | gelu", s=scale)
    path = cutlass_ext.linear_path(x, w, None, epi)
    assert not path.native and "vectors" in path.reason
    cutlass_ext.linear(x, w, None, epi).sum().backward()
    assert scale.grad is not None and torch.isfinite(scale.grad).all()  # the reference's gradient reached it
    norm = Epilogue([Op("group_norm", 4)])
    assert "normalization" in cutlass_ext.linear_path(x, w, None, norm).reason
    with torch.no_grad():
        assert "chain-backward" not in cutlass_ext.linear_path(x, w, None, "gelu").reason


@pytest.mark.gpu
def test_opcheck_chain_backward(gen):
    z = torch.randn(8, 64, generator=gen).cuda().bfloat16()
    grad = torch.randn(8, 64, generator=gen).cuda().bfloat16()
    epi = Epilogue("mul_vec(s) | silu | residual(0.5)", s=torch.rand(64, device="cuda"))
    torch.library.opcheck(torch.ops.cutlass_ext.chain_backward.default, (z, grad, *epi.encode()))


@pytest.mark.gpu
def test_chain_backward_rejects_bad_inputs():
    z = torch.randn(4, 8, device="cuda")
    with pytest.raises(RuntimeError, match="grad has shape"):
        chain_backward(z, torch.randn(4, 9, device="cuda"), Epilogue("gelu"))
    with pytest.raises(RuntimeError, match="grad has dtype"):
        chain_backward(z, torch.randn(4, 8, device="cuda").half(), Epilogue("gelu"))


@pytest.mark.gpu
def test_torch_compile_training_step():
    torch.manual_seed(0)
    layer = FusedLinear(128, 256, epilogue="mul(0.5) | hardtanh(-2, 2) | gelu", device="cuda", dtype=torch.bfloat16)
    x = torch.randn(32, 128, device="cuda", dtype=torch.bfloat16)

    def step(t):
        return layer(t).float().square().mean()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x)
    loss.backward()
    got = layer.weight.grad.clone()
    layer.zero_grad()
    step(x).backward()
    torch.testing.assert_close(got, layer.weight.grad, rtol=1.6e-2, atol=1e-4)
