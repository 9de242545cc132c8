"""The normalization stage: group_norm / layer_norm over the output features inside an epilogue. CPU: the
vocabulary, the reference, the module, the errors. GPU (marked `gpu`): the fused GEMM + one-pass stage, and the
GroupNorm inside the GEMM's epilogue (bf16 / fp16, groups of 256 or 512 features), against a float64 reference with
DESIGN.md's error rule, for G in {1, 2, 16, 256, N}, bf16 / fp16 / fp32."""

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cutlass_ext
from cutlass_ext import Epilogue, Op
from cutlass_ext.nn import FusedLinear

from test_elementwise import POISON, chain64, native_loaded
from test_linear import (chain_eager, float32_matmul_precision, load_problem, make, poison_allocator, tf32_rounded,
                         tf32_truncated)


def norm64(v, norm):
    groups, eps = norm.params
    weight, bias = (None if t is None else t.to(v.device, torch.float64) for t in norm.affine)
    return F.group_norm(v.reshape(-1, v.shape[-1]), groups, weight, bias, eps).reshape(v.shape)


def chain64_with_norm(y, epi):
    """The epilogue on y in float64, the norm included."""
    pre, norm, post = epi.split()
    return chain64(norm64(chain64(y, pre), norm), post)


def torch_eager(y, epi):
    """What eager PyTorch computes in y's dtype: the pre-chain op by op, F.group_norm, the post-chain."""
    pre, norm, post = epi.split()
    v = chain_eager(y, pre)
    groups, eps = norm.params
    weight, bias = (None if t is None else t.to(v.dtype) for t in norm.affine)
    shape = v.shape
    v = F.group_norm(v.reshape(-1, shape[-1]), groups, weight, bias, eps).reshape(shape)
    return chain_eager(v, post)


def check_norm_against_float64(got, x, w, b, epi, precision=None, factor=2, atol=1e-5):
    """DESIGN.md's rule for a chain with a norm: our error vs float64 <= factor x eager PyTorch's own + atol."""
    b64 = None if b is None else b.double()
    ref = chain64_with_norm(F.linear(x.double(), w.double(), b64), epi)
    with float32_matmul_precision(precision or torch.get_float32_matmul_precision()):
        theirs_out = torch_eager(F.linear(x, w, b), epi)
    assert not (got == POISON).any(), "some outputs were never written"
    assert torch.equal(torch.isnan(got), torch.isnan(ref)), "NaN pattern differs from the reference"
    finite = torch.isfinite(ref)
    assert torch.equal(got[~finite & ~torch.isnan(ref)], ref[~finite & ~torch.isnan(ref)].to(got.dtype))

    def error(t):
        return (t.double() - ref).abs()[finite].max().item() if finite.any() else 0.0

    ours, theirs = error(got), error(theirs_out)
    if x.dtype == torch.float32 and precision in ("high", "medium"):  # as in test_linear.check_against_float64
        for reduce in (tf32_truncated, tf32_rounded):
            ideal = F.linear(reduce(x).double(), reduce(w).double(), b64)
            theirs = max(theirs, error(chain64_with_norm(ideal, epi)))
    assert ours <= factor * theirs + atol, f"max error {ours:.3g} > {factor} x PyTorch's {theirs:.3g} + {atol}"


# --- CPU -----------------------------------------------------------------------------------------------------------
def test_text_form_round_trips_and_splits():
    w, b = torch.randn(32), torch.randn(32)
    epi = Epilogue("mul(2) | group_norm(4, weight=gw, bias=gb, eps=1e-06) | hardtanh(-2, 2)", gw=w, gb=b)
    assert str(epi) == "mul(2) | group_norm(4, weight=gw, bias=gb, eps=1e-06) | hardtanh(-2, 2)"
    assert Epilogue(str(epi), gw=w, gb=b) == epi
    pre, norm, post = epi.split()
    assert (str(pre), str(post)) == ("mul(2)", "hardtanh(-2, 2)")
    assert norm.params == (4, 1e-6) and norm.affine[0] is w and norm.affine[1] is b
    assert str(Epilogue("layer_norm")) == "layer_norm" and Epilogue("layer_norm").norm.params == (1, 1e-5)
    assert epi.tensors == [w, b] and epi.vectors == []
    assert Epilogue("relu").split()[1] is None


@pytest.mark.parametrize("text,error,match", [
    ("group_norm", ValueError, "needs parameter 'num_groups'"),
    ("group_norm(0)", ValueError, "positive integer"),
    ("group_norm(2.5)", ValueError, "positive integer"),
    ("group_norm(2, eps=-1)", ValueError, "eps must be"),
    ("layer_norm | group_norm(2)", ValueError, "at most one normalization stage"),
    ("group_norm(2, weight=3)", TypeError, "expects a 1-D tensor"),
    ("group_nrom(2)", ValueError, "Did you mean group_norm"),
])
def test_bad_norms_raise_clear_errors(text, error, match):
    with pytest.raises(error, match=match):
        Epilogue(text)


def test_reference_is_torch_group_norm(gen):
    x = torch.randn(6, 48, generator=gen) * 3 + 1
    w, b = torch.randn(48, generator=gen), torch.randn(48, generator=gen)
    epi = Epilogue("mul(2) | group_norm(6, weight=w, bias=b) | silu", w=w, b=b)
    torch.testing.assert_close(epi.reference(x), F.silu(F.group_norm(x * 2, 6, w, b)), rtol=0, atol=0)
    ln = Epilogue([Op("layer_norm", weight=w, eps=1e-3)])
    torch.testing.assert_close(ln.reference(x), F.layer_norm(x, (48,), w, None, 1e-3), rtol=1e-6, atol=1e-6)
    # bf16: the pre-chain's result is rounded to bf16 (a Linear's output), the rest is float32 with one rounding.
    xb = x.to(torch.bfloat16)
    want = F.silu(F.group_norm((xb.float() * 2).to(torch.bfloat16).float(), 6, w, b)).to(torch.bfloat16)
    assert torch.equal(epi.reference(xb), want)


def test_features_must_split_into_groups():
    x, w = torch.randn(3, 8), torch.randn(30, 8)
    with pytest.raises(ValueError, match="30 features do not split into 4 groups"):
        cutlass_ext.linear(x, w, None, "group_norm(4)")
    with pytest.raises(ValueError, match="30 features do not split into 4 groups"):
        cutlass_ext.elementwise(torch.randn(2, 30), "group_norm(4)")
    with pytest.raises(ValueError, match="encode its parts"):
        Epilogue("group_norm(2)").encode()


def test_module_from_linear_and_norm_matches_the_modules(gen):
    torch.manual_seed(0)
    lin, gn = nn.Linear(16, 32), nn.GroupNorm(4, 32)
    with torch.no_grad():
        gn.weight.normal_(), gn.bias.normal_()
    fused = FusedLinear.from_linear_and_norm(lin, gn, pre="mul(2)", post="hardtanh(-2, 2)")
    assert list(fused.state_dict()) == ["weight", "bias", "norm.weight", "norm.bias"]
    assert fused.norm is gn and fused.weight is lin.weight
    assert "group_norm(4, weight=norm.weight, bias=norm.bias) | hardtanh(-2, 2)" in repr(fused)
    x = torch.randn(5, 16, generator=gen)
    torch.testing.assert_close(fused(x), F.hardtanh(gn(2 * lin(x)), -2, 2), rtol=1e-6, atol=1e-6)
    gn.weight = nn.Parameter(torch.full((32,), 3.0))  # replaced, not updated in place: the module follows
    torch.testing.assert_close(fused(x), F.hardtanh(gn(2 * lin(x)), -2, 2), rtol=1e-6, atol=1e-6)
    ln = nn.LayerNorm(32, bias=False)
    fused_ln = FusedLinear.from_linear_and_norm(lin, ln, post="gelu")
    torch.testing.assert_close(fused_ln(x), F.gelu(ln(lin(x))), rtol=1e-6, atol=1e-6)
    # Autograd reaches the norm's parameters through the reference.
    fused(x).sum().backward()
    assert gn.weight.grad is not None and lin.weight.grad is not None


def test_module_rejects_mismatched_norms():
    lin = nn.Linear(8, 16)
    with pytest.raises(ValueError, match="GroupNorm has 12 channels"):
        FusedLinear.from_linear_and_norm(lin, nn.GroupNorm(4, 12))
    with pytest.raises(ValueError, match="LayerNorm normalizes over"):
        FusedLinear.from_linear_and_norm(lin, nn.LayerNorm((2, 8)))
    with pytest.raises(TypeError, match="nn.GroupNorm or nn.LayerNorm"):
        FusedLinear.from_linear_and_norm(lin, nn.BatchNorm1d(16))


@pytest.mark.skipif("not native_loaded()", reason="the compiled module is not loaded")
def test_cpp_errors_with_numbers_reach_python():
    """The C++ checks raise, numbers in the message included. (A module linked with a private static libstdc++
    segfaulted on the first number it formatted: CMakeLists.txt links the shared one.)"""
    op = torch.ops.cutlass_ext.group_norm_chain.default
    cuda_kernel = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)  # the C++ kernel, whose checks come first
    with pytest.raises(RuntimeError, match="30 features do not split into 4 groups"):
        op.redispatch(cuda_kernel, torch.randn(4, 30), 4, None, None, 1e-5, [], [], [])
    with pytest.raises(RuntimeError, match="eps must be finite and >= 0, got -0.5"):
        op.redispatch(cuda_kernel, torch.randn(4, 30), 3, None, None, -0.5, [], [], [])


@pytest.mark.skipif("not native_loaded()", reason="the compiled module is not loaded")
def test_group_norm_chain_op_on_cpu_is_the_reference(gen):
    x, w = torch.randn(3, 24, generator=gen), torch.randn(24, generator=gen)
    got = torch.ops.cutlass_ext.group_norm_chain(x, 3, w, None, 1e-5, ["clamp"], [-1.0, 1.0], [])
    torch.testing.assert_close(got, F.hardtanh(F.group_norm(x, 3, w, None, 1e-5)), rtol=0, atol=0)


# --- GPU -----------------------------------------------------------------------------------------------------------
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def affine(n, dtype, gen_seed=0):
    g = torch.Generator(device="cuda").manual_seed(gen_seed)
    w = (torch.rand(n, device="cuda", generator=g) + 0.5).to(dtype)
    b = (torch.rand(n, device="cuda", generator=g) - 0.5).to(dtype)
    return w, b


def run_norm(x, w, b, epi, precision=None):
    path = cutlass_ext.linear_path(x, w, b, epi, precision)
    poison_allocator(2 * x.numel() // x.shape[-1] * w.shape[0] * x.element_size())
    return path, cutlass_ext.linear(x, w, b, epi, precision)


def factor_for(dtype, precision):
    return 4 if dtype == torch.float32 and precision == "highest" else 2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("groups", [1, 2, 16, 256, 4096])
def test_group_norm_every_group_count(groups, dtype):
    """G in {1, 2, 16, 256, N}: one team per group of 4096 .. 1 features."""
    x, w, b = make(67, 4096, 256, dtype)
    gw, gb = affine(4096, dtype)
    epi = Epilogue(f"mul(0.5) | group_norm({groups}, weight=gw, bias=gb) | hardtanh(-2, 2)", gw=gw, gb=gb)
    precision = "highest" if dtype == torch.float32 else None
    path, got = run_norm(x, w, b, epi, precision)
    where = "group_norm in its epilogue" if groups == 16 and dtype != torch.float32 else "group_norm stage"
    assert path.native and where in path.reason, str(path)
    check_norm_against_float64(got, x, w, b, epi, precision, factor_for(dtype, precision))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("text", [
    "group_norm(16)",
    "layer_norm(weight=gw) | silu",
    "gelu | group_norm(8, bias=gb) | residual(0.5) | mul_vec(s) | tanh",
    "group_norm(32, weight=gw, bias=gb, eps=0.1) | add_vec(s) | gelu",
    "group_norm(8, weight=gw) | residual(0.5) | mul_vec(s) | hardtanh(-1, 1)",
])
@pytest.mark.parametrize("m", [1, 130])
def test_norm_placements_vectors_and_residual(text, m, dtype):
    """Pre- and post-chains, affine or not, float32 vectors with half inputs, residual's v0 after the norm; post-chains
    with and without transcendentals (the stage compiles an interpreter for each)."""
    x, w, b = make(m, 512, 192, dtype, batch=(2,))
    gw, gb = affine(512, dtype)
    s = torch.randn(512, device="cuda")
    names = {k: v for k, v in {"gw": gw, "gb": gb, "s": s}.items() if re.search(rf"\b{k}\b", text)}
    epi = Epilogue(text, **names)
    precision = "highest" if dtype == torch.float32 else None
    path, got = run_norm(x, w, b, epi, precision)
    assert path.native and got.shape == (2, m, 512), str(path)
    check_norm_against_float64(got, x, w, b, epi, precision, factor_for(dtype, precision))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,groups,native", [
    (24, 8, True),         # groups of 3: one-element accesses
    (20, 4, True),         # bf16/fp16: off the fused GEMM (N % 8), F.linear then the compiled stage
    (16384, 1, True),      # the largest group the stage holds
    (16400, 1, False),     # larger: the torch reference
])
def test_norm_group_sizes_at_the_edges(n, groups, native, dtype):
    x, w, b = make(5, n, 64, dtype)
    gw, gb = affine(n, dtype)
    epi = Epilogue(f"group_norm({groups}, weight=gw, bias=gb) | relu", gw=gw, gb=gb)
    precision = "highest" if dtype == torch.float32 else None
    if native:
        _, got = run_norm(x, w, b, epi, precision)
    else:
        assert "exceed" in cutlass_ext.linear_path(x, w, b, epi, precision).reason
        with warnings.catch_warnings():  # the fallback warns once per cause
            warnings.simplefilter("ignore", RuntimeWarning)
            got = cutlass_ext.linear(x, w, b, epi, precision)
    check_norm_against_float64(got, x, w, b, epi, precision, factor_for(dtype, precision))


HALF_DTYPES = [torch.bfloat16, torch.float16]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("m,n,k,text,bias,batch", [
    (1, 512, 64, "layer_norm(weight=gw, bias=gb)", True, ()),                      # one row, one 1x2 cluster
    (67, 1024, 256, "group_norm(4, weight=gw, bias=gb) | hardtanh(-2, 2)", True, ()),  # groups of 256
    (130, 1024, 192, "mul(0.5) | group_norm(2, weight=gw) | silu", False, ()),    # groups of 512, partial rows
    (300, 768, 128, "group_norm(3, bias=gb) | gelu", True, ()),                   # 3 tiles: a cluster half out
    (40, 4096, 512, "gelu | group_norm(8, weight=gw, bias=gb) | residual(0.5) | mul_vec(s) | tanh", True, (3,)),
    (257, 2048, 1024, "add_vec(s) | group_norm(8) | add_vec(s) | clamp(-1, 1)", True, ()),
    (2048, 8192, 64, "group_norm(16, weight=gw, bias=gb)", True, ()),  # ~4 tiles per CTA, one k-block each
])
def test_group_norm_in_the_gemm_epilogue(m, n, k, text, bias, batch, dtype):
    """Groups of 256 (one tile) and 512 (a 1x2 cluster's two tiles, statistics swapped between the CTAs): pre- and
    post-chains with vectors and residual, affine or not, bias or not, rows not a multiple of the tile, 3-D."""
    x, w, b = make(m, n, k, dtype, bias=bias, batch=batch)
    gw, gb = affine(n, dtype)
    s = torch.randn(n, device="cuda")
    names = {k_: v for k_, v in {"gw": gw, "gb": gb, "s": s}.items() if re.search(rf"\b{k_}\b", text)}
    epi = Epilogue(text, **names)
    path, got = run_norm(x, w, b, epi)
    assert path.native and "in its epilogue" in path.reason, str(path)
    assert got.shape == (*batch, m, n)
    check_norm_against_float64(got, x, w, b, epi)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_group_norm_in_the_epilogue_inf_and_nan(dtype):
    """A non-finite value makes its row's group NaN in both halves of a 512-feature group (the swapped statistics
    carry it to the other CTA), and only that group."""
    x, w, b = make(6, 2048, 64, dtype)
    w[700, 5] = float("inf")  # feature 700, group 1 of 4, in the rows where x[:, 5] != 0
    x[4, 0] = float("nan")
    epi = Epilogue("group_norm(4) | hardtanh(-2, 2)")
    path, got = run_norm(x, w, b, epi)
    assert "in its epilogue" in path.reason, str(path)
    assert torch.isnan(got[:, 512:1024]).all() and torch.isnan(got[4]).all()
    assert torch.isfinite(got[[0, 1, 2, 3, 5]][:, [*range(512), *range(1024, 2048)]]).all()
    check_norm_against_float64(got, x, w, b, epi)


@pytest.mark.gpu
def test_group_norm_epilogue_op_errors_and_opcheck():
    x = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(1024, 64, device="cuda", dtype=torch.bfloat16)
    op = torch.ops.cutlass_ext.fused_linear_group_norm
    with pytest.raises(RuntimeError, match="groups of 128 features; the GroupNorm in the GEMM's epilogue takes"):
        op(x, w, None, [], [], [], 8, None, None, 1e-5, [], [], [])
    with pytest.raises(RuntimeError, match="takes bfloat16 and float16 inputs, got float32"):
        op(x.float(), w.float(), None, [], [], [], 4, None, None, 1e-5, [], [], [])
    with pytest.raises(RuntimeError, match="1024 features do not split into 3 groups"):
        op(x, w, None, [], [], [], 3, None, None, 1e-5, [], [], [])
    with pytest.raises(RuntimeError, match="eps must be finite"):
        op(x, w, None, [], [], [], 4, None, None, float("nan"), [], [], [])
    gw = torch.rand(1024, device="cuda")
    torch.library.opcheck(op.default, (x, w, torch.randn(1024, device="cuda", dtype=torch.bfloat16), ["gelu"],
                                       [0.0, 0.0], [], 2, gw, None, 1e-5, ["clamp"], [-1.0, 1.0], []))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norm_inf_and_nan_as_in_torch(dtype):
    """A non-finite value makes its group's statistics, hence the whole group, NaN, as torch's GroupNorm does."""
    x, w, b = make(6, 256, 64, dtype)
    x[1, 3] = float("inf")
    x[4, 0] = float("nan")
    epi = Epilogue("group_norm(4) | hardtanh(-2, 2)")
    precision = "highest" if dtype == torch.float32 else None
    _, got = run_norm(x, w, b, epi, precision)
    assert torch.isnan(got[1]).all() and torch.isnan(got[4]).all() and torch.isfinite(got[[0, 2, 3, 5]]).all()
    check_norm_against_float64(got, x, w, b, epi, precision, factor_for(dtype, precision))


@pytest.mark.gpu
def test_float32_tf32_precision_with_norm():
    x, w, b = make(96, 1024, 512, torch.float32)
    epi = Epilogue("group_norm(16) | gelu")
    _, got = run_norm(x, w, b, epi, "high")
    check_norm_against_float64(got, x, w, b, epi, "high")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_elementwise_with_a_norm(dtype):
    """The stage alone on any tensor: strided input, 3-D, out=, and a pre-chain run by the elementwise kernel."""
    base = torch.randn(3, 40, 96, device="cuda").to(dtype)
    x = base[:, ::2, :]  # not contiguous
    gw = torch.randn(96, device="cuda")
    epi = Epilogue("mul(3) | group_norm(12, weight=gw) | tanh", gw=gw)
    assert cutlass_ext.elementwise_path(x, epi).native
    out = torch.full_like(x, POISON)
    assert cutlass_ext.elementwise(x, epi, out=out) is out
    want = epi.reference(x)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out, want, rtol=tol, atol=tol)
    ref64 = chain64_with_norm(x.double(), epi)
    assert (out.double() - ref64).abs().max() <= 2 * (want.double() - ref64).abs().max() + 1e-5


@pytest.mark.gpu
def test_norm_op_errors_and_opcheck():
    x = torch.randn(4, 30, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="30 features do not split into 4 groups"):
        torch.ops.cutlass_ext.group_norm_chain(x, 4, None, None, 1e-5, [], [], [])
    with pytest.raises(RuntimeError, match="group_norm weight must have shape"):
        torch.ops.cutlass_ext.group_norm_chain(x, 3, torch.ones(29, device="cuda"), None, 1e-5, [], [], [])
    w = torch.randn(30, device="cuda")
    torch.library.opcheck(torch.ops.cutlass_ext.group_norm_chain.default,
                          (torch.randn(5, 30, device="cuda"), 3, w, None, 1e-5, ["gelu"], [0.0, 0.0], []))
    with pytest.raises(ValueError, match="30 features do not split into 4 groups"):
        cutlass_ext.linear(torch.randn(3, 16, device="cuda"), torch.randn(30, 16, device="cuda"), None,
                           "group_norm(4)")


@pytest.mark.gpu
@pytest.mark.parametrize("groups", [16, 2], ids=["stage", "in-epilogue"])
def test_norm_module_compile_and_autograd(groups):
    torch.manual_seed(0)
    lin, gn = nn.Linear(256, 512).cuda().bfloat16(), nn.GroupNorm(groups, 512).cuda().bfloat16()
    fused = FusedLinear.from_linear_and_norm(lin, gn, post="hardtanh(-2, 2)")
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        eager = fused(x)
        compiled = torch.compile(fused, fullgraph=True)(x)
    assert torch.equal(eager, compiled)
    torch.testing.assert_close(eager, F.hardtanh(gn(lin(x)), -2, 2), rtol=2e-2, atol=2e-2)
    x.requires_grad_()
    fused(x).float().sum().backward()  # autograd: the differentiable reference
    assert x.grad is not None and gn.weight.grad is not None


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_groupnorm_reference_problem(dtype):
    """linear_groupnorm_hardtanh, full size, rebuilt from the model's own Linear and GroupNorm."""
    mod = load_problem("linear_groupnorm_hardtanh")
    model = mod.Model(*mod.get_init_inputs()).to("cuda", dtype)
    with torch.no_grad():  # a non-trivial affine, so that the test sees it
        model.group_norm.weight.uniform_(0.5, 1.5), model.group_norm.bias.uniform_(-0.5, 0.5)
    fused = FusedLinear.from_linear_and_norm(model.gemm, model.group_norm, post="hardtanh(-2, 2)")
    with torch.no_grad():
        x = mod.get_inputs()[0].to("cuda", dtype)
        path = cutlass_ext.linear_path(x, model.gemm.weight, model.gemm.bias, fused.epilogue)
        assert "group_norm in its epilogue" in path.reason, str(path)
        for _ in range(2):
            x = mod.get_inputs()[0].to("cuda", dtype)
            got = fused(x)
            check_norm_against_float64(got, x, model.gemm.weight, model.gemm.bias, fused.epilogue)
            torch.testing.assert_close(got, model(x), rtol=2e-2, atol=2e-2)
