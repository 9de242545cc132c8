"""cutlass_ext.elementwise: the reference path (CPU), the torch op's registration (CPU), and the compiled kernel
against the reference (GPU, marked `gpu`)."""

import math
import random

import pytest
import torch

import cutlass_ext
from cutlass_ext import MAX_OPS, OPS, Epilogue, Op
from cutlass_ext.epilogue import DEVICE_OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Kernel vs the float32 torch reference on the same GPU: the same formulas, so a few float32 ulps (contractions
# into FMA, libdevice vs torch's own), then at most one rounding step of the output dtype.
TOL = {torch.float32: (2e-6, 1e-6), torch.bfloat16: (8e-3, 1e-5), torch.float16: (1e-3, 1e-5)}
POISON = 777.0  # no chain in these tests produces it from these inputs
SPECIALS = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-30, 3.0, -3.0, 6.0, 20.0, -20.0, 88.0, -88.0, 1e30, -1e30]


def native_loaded():
    return cutlass_ext.native_info().loaded


def chain64(v0, epi):
    """The chain applied to v0 in float64: the accuracy reference for every kernel."""
    names, params, vectors = epi.encode()
    vecs = iter(v.double() for v in vectors)
    v = v0
    for i, name in enumerate(names):
        vec = next(vecs) if name in ("add_vec", "mul_vec") else None
        v = DEVICE_OPS[name](v, v0, params[2 * i], params[2 * i + 1], vec)
    return v


def assert_matches_reference(got, x, epi, out_dtype=None):
    """got == epi's torch reference (fp32 math) within TOL; and within the dtype's rounding of a float64 run."""
    want = epi.reference(x, out_dtype=out_dtype)
    rtol, atol = TOL[got.dtype]
    assert not (got == POISON).any(), "some outputs were never written"
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=True)
    ref64 = chain64(x.double(), epi)
    finite = torch.isfinite(ref64) & (ref64.abs() < 1e4)
    err = (got.double() - ref64).abs()[finite]
    bound = (3 * rtol * ref64.abs() + 10 * atol)[finite]
    assert (err <= bound).all(), f"max error vs float64 {err.max().item():.3g}"


def random_op(rng, features, device):
    name = rng.choice(sorted(OPS))
    u = rng.uniform
    if name in ("add", "sub", "mul"):
        return Op(name, u(-3, 3))
    if name == "div":
        return Op(name, rng.choice([-1, 1]) * u(0.25, 4))
    if name in ("clamp", "hardtanh"):
        lo = u(-3, 1)
        return Op(name, lo, lo + u(0, 4))
    if name == "leaky_relu":
        return Op(name, u(0, 0.5))
    if name == "softplus":
        return Op(name, u(0.5, 2), u(5, 20))
    if name in ("elu", "residual"):
        return Op(name, u(0.1, 2))
    if name in ("add_vec", "mul_vec"):
        dtype = rng.choice(DTYPES)
        return Op(name, torch.randn(features, device=device).to(dtype), vector_name="v")
    return Op(name)


def random_chain(rng, features, device, length=None, reads=True):
    """reads=False: no op that reads a per-feature vector or the chain's input (add_vec, mul_vec, residual), the
    chains that the GEMMs' tile interpreter runs (tile_chain_epilogue_sm90.hpp)."""
    while True:
        ops = [random_op(rng, features, device) for _ in range(length or rng.randint(1, 8))]
        if not reads and any(op.name in ("add_vec", "mul_vec", "residual") for op in ops):
            continue
        if sum(op.vector is not None for op in ops) <= cutlass_ext.MAX_VECTORS:
            return Epilogue(ops)


# --- CPU: the reference path and the errors --------------------------------------------------------------------
def test_cpu_runs_the_reference(gen):
    x = torch.randn(7, 33, generator=gen)
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    assert not cutlass_ext.elementwise_path(x, epi).native
    torch.testing.assert_close(cutlass_ext.elementwise(x, epi), epi.reference(x), rtol=0, atol=0)
    out = torch.full_like(x, POISON)
    assert cutlass_ext.elementwise(x, epi, out=out) is out
    torch.testing.assert_close(out, epi.reference(x), rtol=0, atol=0)
    want = epi.reference(x)
    assert cutlass_ext.elementwise(x, epi, out=x) is x
    torch.testing.assert_close(x, want, rtol=0, atol=0)


def test_cpu_autograd_through_the_reference(gen):
    x = torch.randn(4, 6, generator=gen, requires_grad=True)
    cutlass_ext.elementwise(x, "mul(3) | tanh").sum().backward()
    torch.testing.assert_close(x.grad, 3 * (1 - torch.tanh(3 * x.detach()) ** 2))


def test_cpu_torch_compile_fullgraph(gen):
    """The Python layer (parsing, checks, path choice) traces without graph breaks."""
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    f = torch.compile(lambda x: cutlass_ext.elementwise(x, epi) + 1, fullgraph=True, backend="eager")
    x = torch.randn(16, 32, generator=gen)
    torch.testing.assert_close(f(x), epi.reference(x) + 1, rtol=0, atol=0)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(4, 8)
    with pytest.raises(TypeError, match="dtype torch.float64"):
        cutlass_ext.elementwise(x.double(), "relu")
    with pytest.raises(TypeError, match="dtype torch.int64"):
        cutlass_ext.elementwise(torch.arange(4), "relu")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        cutlass_ext.elementwise([1.0, 2.0], "relu")
    with pytest.raises(TypeError, match="out has dtype torch.float16"):
        cutlass_ext.elementwise(x, "relu", out=x.half())
    with pytest.raises(ValueError, match=r"out has shape \(8, 4\)"):
        cutlass_ext.elementwise(x, "relu", out=x.t().contiguous())
    with pytest.raises(ValueError, match="has 5 values, the output has 8 features"):
        cutlass_ext.elementwise(x, Epilogue("add_vec(b)", b=torch.ones(5)))
    with pytest.raises(ValueError, match="unknown epilogue op"):
        cutlass_ext.elementwise(x, "rleu")
    with pytest.raises(TypeError, match="expected an Epilogue"):
        cutlass_ext.elementwise(x, 3)


needs_native = pytest.mark.skipif("not native_loaded()", reason="the compiled module is not loaded")


@needs_native
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_opcheck(device, gen):
    """The op's schema, fake (torch.compile) and CPU/CUDA implementations agree (torch.library.opcheck)."""
    x = torch.randn(6, 40, generator=gen).to(device)
    epi = Epilogue("mul_vec(s) | gelu | residual(0.5)", s=torch.rand(40, generator=gen).to(device))
    names, params, vectors = epi.encode()
    torch.library.opcheck(torch.ops.cutlass_ext.elementwise.default, (x, names, params, vectors))
    out = torch.empty_like(x)
    torch.library.opcheck(torch.ops.cutlass_ext.elementwise_out.default, (x, names, params, vectors, out))


@needs_native
def test_cpu_op_kernel_is_the_reference(gen):
    x = torch.randn(3, 9, generator=gen)
    epi = Epilogue("softplus(2, 3) | neg")
    torch.testing.assert_close(torch.ops.cutlass_ext.elementwise(x, *epi.encode()), epi.reference(x), rtol=0, atol=0)


# --- GPU: the compiled kernel against the reference --------------------------------------------------------------
def poisoned(like):
    return torch.full_like(like, POISON, memory_format=torch.contiguous_format)


def run_native(x, epi, out=None):
    assert cutlass_ext.elementwise_path(x, epi).native
    return cutlass_ext.elementwise(x, epi, out=out)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op(name, dtype):
    from test_epilogue import TORCH_FORMS  # the op with representative parameters

    text = TORCH_FORMS[name][0]
    x = (torch.randn(50, 16, device="cuda") * 4).to(dtype)
    x[0] = torch.tensor(SPECIALS + [1.0], device="cuda").to(dtype)
    vec = torch.randn(16, device="cuda")
    epi = Epilogue(text, v=vec) if "(v)" in text else Epilogue(text)
    assert_matches_reference(run_native(x, epi, out=poisoned(x)), x, epi)


def every_value_between(lo, hi, dtype):
    """Every finite value of a 16-bit dtype in [lo, hi] with |v| >= 2^-20, from its bit patterns."""
    v = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    f = v.float()
    return v[torch.isfinite(f) & (f >= lo) & (f <= hi) & (f.abs() >= 2.0 ** -20)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "mish", "softplus", "elu"])
def test_transcendentals_within_one_ulp_of_16_bit_outputs(name, dtype):
    """Each op over every 16-bit input in [-20, 20], element by element: within one ulp of the output dtype from
    float64, or within torch's own error at that element where it is larger (GELU under -3, where torch's float32
    1 + erf cancels). Holds the 16-bit forms (epilogue_ops.cuh, Precision: for bfloat16 MUFU tanh, e^-v by ex2
    and the degree-5 GELU; for float16 e^-v by ex2) to what they promise."""
    x = every_value_between(-20.0, 20.0, dtype).cuda()
    epi = Epilogue(name)
    got = run_native(x, epi, out=poisoned(x)).double()
    ref = chain64(x.double(), epi)
    if name == "gelu_tanh":  # v/2 (1 + tanh(u)) cancels in float64 too (to 0 under v ~ -7); the same value, uncancelled
        v = x.double()
        ref = v * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))
    theirs = (epi.reference(x).double() - ref).abs()  # torch's op in float32, rounded to dtype
    finfo = torch.finfo(dtype)
    exponent = torch.floor(torch.log2(ref.abs())).clamp(min=math.log2(finfo.smallest_normal))
    ulp = finfo.eps * 2.0 ** exponent
    err = (got - ref).abs()
    bad = ~(err <= torch.maximum(ulp, theirs))
    assert not bad.any(), (f"{int(bad.sum())} of {x.numel()} values off by more than 1 ulp, e.g. {name}("
                           f"{x[bad][0].item():.6g}) = {got[bad][0].item():.6g}, float64 {ref[bad][0].item():.6g}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_random_chains(dtype):
    rng = random.Random(torch.initial_seed())
    for trial in range(40):
        features = rng.choice([1, 5, 8, 64, 129])
        epi = random_chain(rng, features, "cuda")
        x = (torch.randn(rng.randint(1, 70), features, device="cuda") * 3).to(dtype)
        out = poisoned(x)
        run_native(x, epi, out=out)
        assert_matches_reference(out, x, epi)


@pytest.mark.gpu
def test_longest_chain_runs_natively():
    rng = random.Random(torch.initial_seed())
    epi = random_chain(rng, 32, "cuda", length=MAX_OPS)
    x = torch.randn(100, 32, device="cuda")
    assert_matches_reference(run_native(x, epi, out=poisoned(x)), x, epi)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0,), (1,), (3,), (7,), (8,), (9,), (17,), (1023,), (4099,), (), (0, 5), (3, 0),
                                   (2, 3, 5), (1000, 37)], ids=str)
@pytest.mark.parametrize("chain", ["mul(0.5) | hardtanh(-2, 2) | gelu", "mul(0.5) | hardtanh(-2, 2) | residual",
                                   "hardtanh(-1, 1)"])
def test_sizes(shape, dtype, chain):
    """Each contiguous launch shape (a chain with a transcendental, a chain of cheap ops, one cheap op), sizes
    around every vector width."""
    x = torch.randn(shape, device="cuda").to(dtype)
    epi = Epilogue(chain)
    assert_matches_reference(run_native(x, epi, out=poisoned(x)), x, epi)
    y = run_native(x, epi)
    assert y.shape == x.shape and y.is_contiguous()
    assert_matches_reference(y, x, epi)


def layouts():
    base = torch.randn(24, 40, device="cuda")
    return {
        "transposed": base.t(),
        "stepped": base[:, ::3],
        "misaligned": base.flatten()[1:],           # contiguous, not 16-byte aligned
        "broadcast": torch.randn(1, 40, device="cuda").expand(24, 40),  # stride 0
        "permuted_3d": torch.randn(4, 6, 10, device="cuda").permute(2, 0, 1),
        "rank_9": torch.randn(*[2] * 9, device="cuda").transpose(0, 8),  # above the strided kernel's rank
    }


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["transposed", "stepped", "misaligned", "broadcast", "permuted_3d", "rank_9"])
def test_non_contiguous(layout, dtype):
    x = layouts()[layout].to(dtype)
    features = x.shape[-1]
    epi = Epilogue("add_vec(b) | silu | mul(2)", b=torch.randn(features, device="cuda", dtype=dtype))
    assert_matches_reference(run_native(x, epi), x, epi)
    # a non-contiguous out, poisoned
    out = torch.full((*x.shape[:-1], features * 2), POISON, device="cuda", dtype=dtype)[..., ::2]
    run_native(x, epi, out=out)
    assert_matches_reference(out, x, epi)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "misaligned"])
def test_in_place(layout, dtype):
    base = torch.randn(33, 48, device="cuda").to(dtype)
    x = {"contiguous": base, "transposed": base.t(), "misaligned": base.flatten()[3:]}[layout]
    original = x.clone()
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu | residual")
    assert run_native(x, epi, out=x) is x
    assert_matches_reference(x, original, epi)


@pytest.mark.gpu
def test_partial_overlap_is_refused():
    base = torch.randn(100, device="cuda")
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        cutlass_ext.elementwise(base[:90], "relu", out=base[10:])


@pytest.mark.gpu
def test_vector_on_another_device_is_refused():
    x = torch.randn(4, 8, device="cuda")
    with pytest.raises(ValueError, match="is on cpu, the input on cuda"):
        cutlass_ext.elementwise(x, Epilogue("add_vec(b)", b=torch.ones(8)))


@pytest.mark.gpu
def test_autograd_runs_the_kernels_forward_and_backward():
    x = torch.randn(8, 16, device="cuda", requires_grad=True)
    path = cutlass_ext.elementwise_path(x, "gelu")
    assert path.native and "chain-backward" in path.reason  # tests/test_autograd.py checks the gradients
    cutlass_ext.elementwise(x, "gelu").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.gpu
def test_torch_compile_fullgraph():
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")

    @torch.compile(fullgraph=True)
    def f(x):
        return cutlass_ext.elementwise(x, epi) * 2

    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(f(x), epi.reference(x) * 2, rtol=1.6e-2, atol=1e-5)


@pytest.mark.gpu
def test_more_than_two_billion_elements():
    """64-bit indexing: 2^31 + 9 bf16 elements (4 GiB); checks both ends and a sample in between."""
    n = 2**31 + 9
    x = torch.empty(n, device="cuda", dtype=torch.bfloat16).uniform_(-3, 3)
    epi = Epilogue("hardtanh(-1, 1)")
    y = run_native(x, epi)
    idx = torch.cat([torch.arange(64, device="cuda"), torch.randint(0, n, (1 << 16,), device="cuda"),
                     torch.arange(n - 64, n, device="cuda")])
    assert torch.equal(y[idx], x[idx].clamp(-1, 1))
    del x, y
    torch.cuda.empty_cache()
