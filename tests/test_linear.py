"""cutlass_ext.linear and FusedLinear: the drop-in module (CPU), the paths and errors, and the fused sm90 GEMM
against a float64 reference with the error rule of DESIGN.md (GPU, marked `gpu`)."""

import importlib.util
import os
import pathlib
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cutlass_ext
from cutlass_ext import Epilogue, OPS
from cutlass_ext.epilogue import DEVICE_OPS
from cutlass_ext.nn import FusedLinear
from cutlass_ext.ops import _float32_matmul_precision as float32_matmul_precision

from test_elementwise import chain64, native_loaded, random_chain

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBLEMS = pathlib.Path(os.environ.get("CUTLASS_EXT_PROBLEMS", ROOT.parent / "shared" / "problems"))
HALF = [torch.bfloat16, torch.float16]


def load_problem(name):
    path = PROBLEMS / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"{path} not found (set CUTLASS_EXT_PROBLEMS)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chain_eager(y, epi):
    """What eager PyTorch computes in y's dtype: each op in float32, rounded to the dtype after every op."""
    names, params, vectors = epi.encode()
    vecs = iter(vectors)
    v0, v = y, y
    for i, name in enumerate(names):
        vec = next(vecs) if name in ("add_vec", "mul_vec") else None
        v = DEVICE_OPS[name](v.float(), v0.float(), params[2 * i], params[2 * i + 1], vec).to(y.dtype)
    return v


def poison_allocator(nbytes, device="cuda"):
    """Fills a freed block of the caching allocator with NaN so that an output placed there starts poisoned."""
    block = torch.empty(nbytes // 2 + 64, dtype=torch.float16, device=device)
    block.fill_(float("nan"))
    del block


def tf32_truncated(t):
    """t with its 13 low mantissa bits cleared (finite t)."""
    return (t.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


def tf32_rounded(t):
    """t rounded to the nearest TF32 value, ties away from zero (finite t)."""
    return ((t.contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


def torch_linear(x, weight, bias, precision=None):
    """F.linear at a float32 matmul precision (None: torch's current setting)."""
    with float32_matmul_precision(precision or torch.get_float32_matmul_precision()):
        return F.linear(x, weight, bias)


def check_against_float64(got, x, weight, bias, epi, atol=1e-5, precision=None, factor=2):
    """DESIGN.md's rule: our error vs a float64 reference <= factor x PyTorch's own (F.linear + eager chain in the
    same dtype, at the same float32 precision) + atol, elementwise max; NaN/inf where the reference has them.
    float32 'highest' promises 4x SGEMM's error (DESIGN.md, Precision)."""
    bias64 = None if bias is None else bias.double()
    ref = chain64(F.linear(x.double(), weight.double(), bias64), epi)
    torch_out = chain_eager(torch_linear(x, weight, bias, precision), epi)
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isnan(got), torch.isnan(ref)), "NaN pattern differs from the reference"
    assert torch.equal(got[~finite & ~torch.isnan(ref)], ref[~finite & ~torch.isnan(ref)].to(got.dtype))

    def error(t):
        return (t.double() - ref).abs()[finite].max().item() if finite.any() else 0.0

    ours, theirs = error(got), error(torch_out)
    if x.dtype == torch.float32 and precision in ("high", "medium"):
        # cuBLAS runs some small problems without TF32 (SIMT kernels), so TF32's own error is also taken as that
        # of an exact sum over the operands reduced to TF32, by truncation or by rounding (which one the tensor
        # cores do is not documented; over a few outputs the two maxima differ by 2x and more).
        for reduce in (tf32_truncated, tf32_rounded):
            ideal = F.linear(reduce(x).double(), reduce(weight).double(), bias64)
            theirs = max(theirs, error(chain64(ideal, epi)))
    assert ours <= factor * theirs + atol, f"max error {ours:.3g} > {factor} x PyTorch's {theirs:.3g} + {atol}"


# --- CPU: the module, the paths, the errors -------------------------------------------------------------------
def test_fused_linear_is_a_drop_in_nn_linear():
    torch.manual_seed(0)
    ref = nn.Linear(16, 24)
    fused = FusedLinear(16, 24, epilogue="mul(0.5) | hardtanh(-2, 2) | gelu")
    assert isinstance(fused, nn.Linear)
    assert fused.state_dict().keys() == ref.state_dict().keys()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(5, 16)
    torch.testing.assert_close(fused(x), F.gelu(F.hardtanh(ref(x) * 0.5, -2, 2)), rtol=1e-6, atol=1e-6)
    assert repr(fused) == ("FusedLinear(in_features=16, out_features=24, bias=True, "
                           "epilogue='mul(0.5) | hardtanh(-2, 2) | gelu')")
    assert FusedLinear(16, 24, bias=False).bias is None


def test_from_linear_shares_parameters():
    lin = nn.Linear(8, 4, bias=False, dtype=torch.float64)
    fused = FusedLinear.from_linear(lin, "relu")
    assert fused.weight is lin.weight and fused.bias is None and fused.weight.dtype == torch.float64
    with pytest.raises(TypeError, match="expects an nn.Linear"):
        FusedLinear.from_linear(nn.Conv1d(1, 1, 1))


def test_torch_save_and_load(tmp_path):
    """torch.save of a model holding FusedLinear layers pickles their epilogues (ops, vectors, a norm)."""
    scale = torch.rand(8)
    model = nn.Sequential(FusedLinear(6, 8, epilogue="mul(0.5) | clamp(max=2) | softplus(2, 10)"),
                          FusedLinear.from_linear_and_norm(nn.Linear(8, 8), nn.LayerNorm(8), post="gelu"),
                          FusedLinear(8, 8, epilogue=Epilogue("mul_vec(s) | leaky_relu(0.2)", s=scale)))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert [str(m.epilogue) for m in loaded] == [str(m.epilogue) for m in model]
    assert torch.equal(loaded[2].epilogue.vectors[0], scale)
    x = torch.randn(3, 6)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_cpu_torch_compile_fullgraph_float32():
    """float32 at torch's own precision setting (read at trace time: torch.compile guards on TF32 being allowed)."""
    layer = FusedLinear(16, 8, epilogue="tanh | mul(2)")
    x = torch.randn(4, 16)
    with torch.no_grad():
        torch._dynamo.reset()
        compiled = torch.compile(lambda t: layer(t) + 1, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), layer(x) + 1)


def test_cpu_autograd_through_the_reference():
    fused = FusedLinear(6, 10, epilogue="silu | mul(2)")
    x = torch.randn(3, 6, requires_grad=True)
    fused(x).sum().backward()
    ref = FusedLinear(6, 10)
    ref.load_state_dict(fused.state_dict())
    x2 = x.detach().clone().requires_grad_()
    (F.silu(ref(x2)) * 2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    assert fused.weight.grad is not None


def test_cpu_path_and_3d_input():
    x, w, b = torch.randn(2, 3, 8), torch.randn(16, 8), torch.randn(16)
    assert "cpu" in str(cutlass_ext.linear_path(x, w, b, "relu"))
    y = cutlass_ext.linear(x, w, b, "relu")
    assert y.shape == (2, 3, 16)
    torch.testing.assert_close(y, F.relu(F.linear(x, w, b)))


def test_bad_linear_inputs_raise_clear_errors():
    x, w = torch.randn(4, 8), torch.randn(16, 8)
    with pytest.raises(ValueError, match=r"x of shape \(4, 7\) does not match weight"):
        cutlass_ext.linear(torch.randn(4, 7), w)
    with pytest.raises(TypeError, match="x has dtype torch.bfloat16, weight has torch.float32"):
        cutlass_ext.linear(x.bfloat16(), w)
    with pytest.raises(ValueError, match=r"bias must have shape \(16,\)"):
        cutlass_ext.linear(x, w, torch.randn(8))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        cutlass_ext.linear(x, torch.randn(2, 16, 8))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        cutlass_ext.linear(x.long(), w.long())
    with pytest.raises(ValueError, match="has 3 values, the output has 16 features"):
        cutlass_ext.linear(x, w, None, Epilogue("mul_vec(s)", s=torch.ones(3)))


def test_cpu_reference_problems_small():
    """The GEMM reference models, shrunk for the CPU, rebuilt with FusedLinear from their own Linear."""
    mod = load_problem("linear_scale_hardtanh_gelu")
    model = mod.Model(64, 32, 0.5, -2, 2)
    fused = FusedLinear.from_linear(model.gemm, "mul(0.5) | hardtanh(-2, 2) | gelu")
    x = torch.rand(16, 64)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-6, atol=1e-6)
    mod = load_problem("linear_swish_div_clamp_tanh_clamp")
    model = mod.Model(64, 32)
    fused = FusedLinear.from_linear(model.gemm, "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)")
    torch.testing.assert_close(fused(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif("not native_loaded()", reason="the compiled module is not loaded")
def test_opcheck_cpu():
    x, w, b = torch.randn(4, 16).bfloat16(), torch.randn(8, 16).bfloat16(), torch.randn(8).bfloat16()
    epi = Epilogue("gelu | mul(3)")
    torch.library.opcheck(torch.ops.cutlass_ext.fused_linear.default, (x, w, b, *epi.encode(), ""))


# --- GPU: the fused kernels -------------------------------------------------------------------------------------
def make(m, n, k, dtype, bias=True, batch=()):
    """Inputs scaled like nn.Linear's initialization, so that activations land in every op's interesting range."""
    x = torch.randn(*batch, m, k, device="cuda").to(dtype)
    w = (torch.rand(n, k, device="cuda") * 2 - 1).mul(3 / max(k, 1) ** 0.5).to(dtype)
    b = (torch.rand(n, device="cuda") * 2 - 1).to(dtype) if bias else None
    return x, w, b


def run_fused(x, w, b, epi, config=None, precision=None):
    path = cutlass_ext.linear_path(x, w, b, epi, precision)
    assert path.native, str(path)
    poison_allocator(x.numel() // x.shape[-1] * w.shape[0] * x.element_size())
    if config is not None:
        return torch.ops.cutlass_ext.fused_linear(x, w, b, *epi.encode(), config, precision or "")
    return cutlass_ext.linear(x, w, b, epi, precision)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op(name, dtype):
    """Each op alone, on the heuristic's pick and on every compiled configuration (their epilogues differ: the chain
    per subtile, on the whole tile, deferred, after a split-K reduction)."""
    from test_epilogue import TORCH_FORMS

    text = TORCH_FORMS[name][0]
    x, w, b = make(200, 136, 256, dtype)
    epi = Epilogue(text, v=torch.randn(136, device="cuda")) if "(v)" in text else Epilogue(text)
    for config in [None, *torch.ops.cutlass_ext.fused_linear_configs(dtype)]:
        check_against_float64(run_fused(x, w, b, epi, config), x, w, b, epi)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_random_chains(dtype):
    rng = random.Random(torch.initial_seed())
    for _ in range(20):
        n = rng.choice([8, 64, 136, 512])
        epi = random_chain(rng, n, "cuda")
        x, w, b = make(rng.choice([1, 17, 128, 300]), n, rng.choice([8, 64, 520]), dtype, bias=rng.random() < 0.7)
        check_against_float64(run_fused(x, w, b, epi), x, w, b, epi)


SHAPES = [  # (M, N, K): M = 1, odd M, M off every tile, large K, N and K on the 8-element alignment edge
    (1, 256, 512), (3, 128, 64), (127, 136, 520), (129, 264, 8), (1000, 1024, 128), (2048, 8, 4096),
    (64, 1024, 8192), (300, 520, 1032),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("m,n,k", SHAPES, ids=str)
def test_shapes(m, n, k, bias, dtype):
    x, w, b = make(m, n, k, dtype, bias)
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    check_against_float64(run_fused(x, w, b, epi), x, w, b, epi)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_every_compiled_configuration(dtype):
    configs = torch.ops.cutlass_ext.fused_linear_configs(dtype)
    assert len(configs) >= 4, configs
    rng = random.Random(torch.initial_seed())
    reading = Epilogue("add_vec(v) | silu | residual(0.5)", v=torch.randn(392, device="cuda"))
    for m, k in [(1, 64), (200, 136), (513, 1024)]:
        x, w, b = make(m, 392, k, dtype)
        # A chain that reads a vector and its input, and one that reads neither (the tile interpreter's chains).
        for epi in (reading, random_chain(rng, 392, "cuda", reads=False)):
            for config in configs:
                check_against_float64(run_fused(x, w, b, epi, config), x, w, b, epi)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("m,n,k,bias", [
    (128, 1024, 8192, True),  # 16 tiles of 64x128: 8 splits
    (1, 1024, 4096, False),   # one row, 64-row tiles
    (37, 264, 4096, True),    # M and N off the tile, 8 splits
    (300, 392, 2048, True),   # 12 tiles of 128x128: 4 splits
], ids=str)
def test_split_k(m, n, k, bias, dtype):
    """Few output tiles and long K: the heuristic splits K (SplitKLinear), the reduction kernel adds the float32
    partial products in a fixed order, then the bias and the chain (the per-feature vector and residual read there)."""
    x, w, b = make(m, n, k, dtype, bias)
    epi = Epilogue("add_vec(v) | silu | residual(0.5) | clamp(-3, 3)", v=torch.randn(n, device="cuda"))
    path = cutlass_ext.linear_path(x, w, b, epi)
    assert "_splitk" in str(path), str(path)
    y = run_fused(x, w, b, epi)
    check_against_float64(y, x, w, b, epi)
    assert torch.equal(y, run_fused(x, w, b, epi)), "the same call gave other bits"


@pytest.mark.gpu
def test_split_k_in_a_cuda_graph():
    """Decoding replays small GEMMs from CUDA graphs: the split-K pair (the GEMM, then the reduction launched as its
    programmatic dependent) captured once gives, on new inputs, the bits it gives eagerly."""
    dtype = torch.bfloat16
    x, w, b = make(16, 1024, 4096, dtype)
    epi = Epilogue("silu | mul(2)")
    assert "_splitk" in str(cutlass_ext.linear_path(x, w, b, epi))
    cutlass_ext.linear(x, w, b, epi)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = cutlass_ext.linear(x, w, b, epi)
    for _ in range(2):
        x.copy_(torch.randn_like(x))
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, cutlass_ext.linear(x, w, b, epi))
        check_against_float64(y, x, w, b, epi)


@pytest.mark.gpu
def test_split_k_splits_less_where_it_must():
    """A split-K configuration asked for by name stays correct where it must take fewer splits than its name says:
    K that does not cut into equal 16-byte slices (K = 1032 = 8 x 129: three splits), and outputs whose partials
    would pass its workspace bound (4096x1024: four splits of eight)."""
    dtype = torch.bfloat16
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    for m, n, k in [(96, 512, 1032), (4096, 1024, 1024)]:
        x, w, b = make(m, n, k, dtype)
        check_against_float64(run_fused(x, w, b, epi, "bf16_128x128x64_1x1_cooperative_splitk8"), x, w, b, epi)


def deferred_config(dtype):
    return f"{'bf16' if dtype == torch.bfloat16 else 'f16'}_128x256x64_2x1_cooperative_deferred"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("m,n,k", [
    (4000, 2056, 64),    # ~2 tiles per CTA, one k-block each: the consumers help with the first tile's chunks
    (8195, 4104, 512),   # ~8 tiles per CTA, partial tiles in M and N: the chain warps fall behind, and some tiles
                         # run in registers
    (1100, 1032, 4096),  # under a wave: one tile per CTA, run in registers
    (2056, 8192, 8192),  # ~4 tiles per CTA: every tile but the last deferred
], ids=str)
def test_chain_deferred_to_the_next_mainloop(m, n, k, dtype):
    """The 128x256 cooperative kernel that runs the chain of most tiles during the next tile's mainloop
    (deferred_chain_epilogue_sm90.hpp): chunks of a deferred tile are claimed by the chain warps and, when they are
    left, by the consumer warps; the other tiles run the chain in registers. Every shape here gives a different
    split between them."""
    config = deferred_config(dtype)
    assert config in torch.ops.cutlass_ext.fused_linear_configs(dtype)
    x, w, b = make(m, n, k, dtype, bias=m % 2 == 0)
    epi = Epilogue("add_vec(v) | silu | mul(0.5) | residual(0.25) | clamp(-1, 1) | tanh",
                   v=torch.randn(n, device="cuda"))
    check_against_float64(run_fused(x, w, b, epi, config), x, w, b, epi)
    epi = Epilogue("silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)")  # a reference chain, the heuristic's pick
    check_against_float64(run_fused(x, w, b, epi), x, w, b, epi)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("m,n,k", [
    (4100, 4104, 1024),  # many tiles per warpgroup, partial tiles in M and N
    (300, 136, 64),      # one k-block, a partial tile narrower than the 64-column subtile
], ids=str)
def test_chain_on_the_whole_tile(m, n, k, dtype):
    """The ping-pong kernel that adds the bias and runs the chain on the whole tile before the store
    (tile_chain_epilogue_sm90.hpp): cheap ops inline, costly ones through calls on 16 values, and chains that read a
    per-feature vector or their input through the chunked interpreter."""
    config = f"{'bf16' if dtype == torch.bfloat16 else 'f16'}_128x128x64_2x1_pingpong_tilechain"
    assert config in torch.ops.cutlass_ext.fused_linear_configs(dtype)
    chains = ["mul(0.5) | hardtanh(-2, 2) | gelu", "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)",
              "leaky_relu(0.1) | abs | neg | add(1) | hardswish | mish | softplus(2, 5) | elu(0.5) | sigmoid",
              "add_vec(v) | gelu_tanh | residual(0.5) | relu6 | hardsigmoid"]
    for i, text in enumerate(chains):
        x, w, b = make(m, n, k, dtype, bias=i % 2 == 0)
        epi = Epilogue(text, v=torch.randn(n, device="cuda")) if "(v)" in text else Epilogue(text)
        check_against_float64(run_fused(x, w, b, epi, config), x, w, b, epi)


@pytest.mark.gpu
def test_short_k_many_tiles_take_ping_pong():
    """The heuristic's short-K bucket: with a chain, the whole-tile chain; without one, plain ping-pong."""
    x = torch.empty(16384, 1024, device="cuda", dtype=torch.bfloat16)
    w = torch.empty(8192, 1024, device="cuda", dtype=torch.bfloat16)
    assert "bf16_128x128x64_2x1_pingpong_tilechain" in str(cutlass_ext.linear_path(x, w, None, "gelu"))
    plain = str(cutlass_ext.linear_path(x, w, None, ""))
    assert "bf16_128x128x64_2x1_pingpong" in plain and "tilechain" not in plain, plain


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_deferred_and_in_register_tiles_agree(dtype):
    """Both ways of the deferred-chain kernel run the chain on acc + bias rounded to the output dtype, so a row gives
    the same bits whether its tile was deferred (4096 rows: ~2 tiles per CTA, the first ones go to the idle chain
    warps) or run in registers (the first 128 rows alone: one tile per CTA, all in registers)."""
    config = deferred_config(dtype)
    x, w, b = make(4096, 2048, 512, dtype)
    epi = Epilogue("mul(3) | silu | residual(0.5) | gelu_tanh")
    whole = run_fused(x, w, b, epi, config)
    alone = run_fused(x[:128].clone(), w, b, epi, config)
    assert torch.equal(whole[:128], alone)
    # The plain kernel runs the chain on the unrounded value, so other bits: the rounding is there.
    assert not torch.equal(whole, run_fused(x, w, b, epi, config.replace("_deferred", "")))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_3d_input_and_empty_chain(dtype):
    x, w, b = make(7, 64, 32, dtype, batch=(2, 3))
    y = run_fused(x, w, b, Epilogue(""))
    assert y.shape == (2, 3, 7, 64)
    check_against_float64(y, x, w, b, Epilogue(""))


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k,why", [
    (16, 64, 1001, "multiples of 8"), (16, 1002, 64, "multiples of 8"), (16, 64, 64, "not row-major"),
    (16, 64, 64, "rows are not contiguous"), (16, 64, 0, None), (0, 64, 64, None)])
def test_off_the_fused_path_stays_correct(m, n, k, why):
    x, w, b = make(m, n, k, torch.bfloat16)
    if why == "not row-major":
        w = w.t().contiguous().t()
    if why == "rows are not contiguous":
        x = torch.randn(m, 2 * k, device="cuda", dtype=torch.bfloat16)[:, 1:k + 1]
    epi = Epilogue("relu | add(1)")
    path = cutlass_ext.linear_path(x, w, b, epi)
    if why is not None:
        assert not path.native and why in path.reason, str(path)
    y = cutlass_ext.linear(x, w, b, epi)
    assert y.shape == (m, n)
    if y.numel():
        torch.testing.assert_close(y, chain_eager(F.linear(x, w, b), epi).to(y.dtype), rtol=2e-2, atol=2e-2)




@pytest.mark.gpu
def test_autograd_takes_f_linear_and_the_chain_node():
    layer = FusedLinear(32, 64, epilogue="gelu", device="cuda", dtype=torch.bfloat16)
    x = torch.randn(4, 32, device="cuda", dtype=torch.bfloat16)
    path = cutlass_ext.linear_path(x, layer.weight, layer.bias, "gelu")
    assert path.native and "autograd: F.linear" in path.reason  # tests/test_autograd.py checks the gradients
    layer(x).float().sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    with torch.no_grad():
        assert cutlass_ext.linear_path(x, layer.weight, layer.bias, "gelu").native


@pytest.mark.gpu
def test_opcheck_cuda():
    x, w, b = make(32, 64, 128, torch.bfloat16)
    epi = Epilogue("mul_vec(s) | tanh", s=torch.rand(64, device="cuda"))
    torch.library.opcheck(torch.ops.cutlass_ext.fused_linear.default, (x, w, b, *epi.encode(), ""))


@pytest.mark.gpu
def test_torch_compile_fullgraph():
    layer = FusedLinear(256, 512, epilogue="mul(0.5) | hardtanh(-2, 2) | gelu", device="cuda", dtype=torch.bfloat16)
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        compiled = torch.compile(lambda t: layer(t) + 1, fullgraph=True)
        torch.testing.assert_close(compiled(x), layer(x) + 1, rtol=1.6e-2, atol=1e-5)


@pytest.mark.gpu
def test_autotune_caches_the_winner(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTLASS_EXT_CACHE_DIR", str(tmp_path))
    cutlass_ext.autotune.enable()
    try:
        x, w, b = make(256, 512, 256, torch.bfloat16)
        epi = Epilogue("silu")
        check_against_float64(cutlass_ext.linear(x, w, b, epi), x, w, b, epi)
        config = cutlass_ext.autotune.cached_config(x, w, b, epi)
        assert config in torch.ops.cutlass_ext.fused_linear_configs(torch.bfloat16)
        assert (tmp_path / "autotune.json").is_file() and config in (tmp_path / "autotune.json").read_text()
        assert "autotuned" in str(cutlass_ext.linear_path(x, w, b, epi))
    finally:
        cutlass_ext.autotune.enable(False)
        cutlass_ext.autotune._memory.clear()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("problem,chain", [
    ("linear_scale_hardtanh_gelu", "mul(0.5) | hardtanh(-2, 2) | gelu"),
    ("linear_swish_div_clamp_tanh_clamp", "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)"),
])
def test_reference_problems(problem, chain, dtype):
    """Full-size reference models, on their own inputs (torch.rand), rebuilt with FusedLinear from their Linear."""
    mod = load_problem(problem)
    model = mod.Model(*mod.get_init_inputs()).to("cuda", dtype)
    fused = FusedLinear.from_linear(model.gemm, chain)
    with torch.no_grad():
        for _ in range(2):
            x = mod.get_inputs()[0].to("cuda", dtype)
            got = fused(x)
            check_against_float64(got, x, model.gemm.weight, model.gemm.bias, fused.epilogue)
            torch.testing.assert_close(got, model(x), rtol=1e-2, atol=1e-2)


# --- GPU: float32, TF32 ('high') and split TF32 ('highest') ------------------------------------------------------
PRECISIONS = ["highest", "high"]
F32_ATOL = 1e-6  # float32 outputs here are O(1): a few float32 ulps


def check_float32(got, x, w, b, epi, precision):
    check_against_float64(got, x, w, b, epi, atol=F32_ATOL, precision=precision,
                          factor=4 if precision == "highest" else 2)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(OPS))
def test_float32_every_op(name):
    from test_epilogue import TORCH_FORMS

    text = TORCH_FORMS[name][0]
    x, w, b = make(96, 64, 256, torch.float32)
    epi = Epilogue(text, v=torch.randn(64, device="cuda")) if "(v)" in text else Epilogue(text)
    for precision in PRECISIONS:
        check_float32(run_fused(x, w, b, epi, precision=precision), x, w, b, epi, precision)


F32_SHAPES = [  # N and K on the 4-element (16-byte) alignment edge, M = 1, odd M, M off every tile, large K
    (1, 256, 512), (3, 128, 64), (127, 132, 516), (129, 260, 4), (1000, 1024, 128), (2048, 4, 4096),
    (64, 1024, 8192), (300, 516, 1028),
]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("m,n,k", F32_SHAPES, ids=str)
def test_float32_shapes(m, n, k, bias, precision):
    x, w, b = make(m, n, k, torch.float32, bias)
    epi = Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    check_float32(run_fused(x, w, b, epi, precision=precision), x, w, b, epi, precision)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", PRECISIONS)
def test_float32_every_compiled_configuration_and_random_chains(precision):
    configs = torch.ops.cutlass_ext.fused_linear_configs(torch.float32)
    assert len(configs) >= 3 and all(c.startswith("tf32_") for c in configs), configs
    epi = Epilogue("add_vec(v) | silu | residual(0.5)", v=torch.randn(392, device="cuda"))
    for m, k in [(1, 64), (200, 136), (513, 1024)]:
        x, w, b = make(m, 392, k, torch.float32)
        for config in configs:
            check_float32(run_fused(x, w, b, epi, config, precision), x, w, b, epi, precision)
    rng = random.Random(torch.initial_seed())
    for _ in range(10):
        n = rng.choice([4, 64, 132, 512])
        epi = random_chain(rng, n, "cuda")
        x, w, b = make(rng.choice([1, 17, 128, 300]), n, rng.choice([4, 64, 516]), torch.float32,
                       bias=rng.random() < 0.7)
        check_float32(run_fused(x, w, b, epi, precision=precision), x, w, b, epi, precision)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", PRECISIONS)
def test_float32_inf_and_nan_propagate_as_in_torch(precision):
    x, w, b = make(64, 128, 256, torch.float32)
    w = (w * 256).round() / 256  # exact in TF32: W_lo = 0, the case where inf * W_lo would make a NaN
    w[3, 7] = 0.0
    x[0, 7], x[1, 9], x[2, 11], x[3, 5] = float("inf"), float("-inf"), float("nan"), 3e38
    x[4, 5], x[4, 6] = float("inf"), float("-inf")
    epi = Epilogue("mul(2)")
    got = run_fused(x, w, b, epi, precision=precision)
    assert torch.isinf(got[0]).any() and torch.isnan(got[2]).all() and torch.isnan(got[4]).any()
    check_float32(got, x, w, b, epi, precision)


@pytest.mark.gpu
def test_float32_precision_follows_torch_unless_given():
    x, w, b = make(64, 128, 256, torch.float32)
    with float32_matmul_precision("high"):
        assert "TF32 (float32, precision 'high')" in str(cutlass_ext.linear_path(x, w, b))
        assert "split TF32" in str(cutlass_ext.linear_path(x, w, b, precision="highest"))
    with float32_matmul_precision("highest"):
        assert "split TF32" in str(cutlass_ext.linear_path(x, w, b))
        layer = FusedLinear(256, 128, epilogue="relu", precision="medium", device="cuda")
        assert "precision='medium'" in repr(layer)
        torch.testing.assert_close(layer(x), F.relu(torch_linear(x, layer.weight, layer.bias, "medium")),
                                   rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="precision must be one of"):
        cutlass_ext.linear(x, w, b, precision="double")
    with pytest.raises(ValueError, match="precision must be one of"):
        FusedLinear(4, 4, precision="fp64")
    # bf16 has one precision: the argument is accepted and changes nothing
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
    torch.testing.assert_close(cutlass_ext.linear(xb, wb, bb, precision="high"), cutlass_ext.linear(xb, wb, bb))


@pytest.mark.gpu
def test_float32_weight_split_cache_sees_weight_updates():
    layer = FusedLinear(256, 128, epilogue="tanh", precision="highest", device="cuda")
    x = torch.randn(32, 256, device="cuda")
    with torch.no_grad():
        check_float32(layer(x), x, layer.weight, layer.bias, layer.epilogue, "highest")
        layer.weight.mul_(-2)  # in place: same tensor, new version
        check_float32(layer(x), x, layer.weight, layer.bias, layer.epilogue, "highest")
        layer.load_state_dict({"weight": torch.randn(128, 256), "bias": torch.randn(128)})
        check_float32(layer(x), x, layer.weight, layer.bias, layer.epilogue, "highest")
    cutlass_ext.clear_weight_cache()
    with torch.no_grad():
        check_float32(layer(x), x, layer.weight, layer.bias, layer.epilogue, "highest")
    with torch.inference_mode():  # inference tensors: no version counter, so no cache, and still correct
        w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
        check_float32(cutlass_ext.linear(x, w, b, "tanh", "highest"), x, w, b, layer.epilogue, "highest")
        w.mul_(3)
        check_float32(cutlass_ext.linear(x, w, b, "tanh", "highest"), x, w, b, layer.epilogue, "highest")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", PRECISIONS)
def test_float32_off_the_fused_path(precision):
    x, w, b = make(16, 64, 66, torch.float32)
    path = cutlass_ext.linear_path(x, w, b, "relu", precision)
    assert not path.native and "multiples of 4" in path.reason, str(path)
    check_float32(cutlass_ext.linear(x, w, b, "relu", precision), x, w, b, Epilogue("relu"), precision)


@pytest.mark.gpu
def test_float32_opcheck_and_compile():
    x, w, b = make(32, 64, 128, torch.float32)
    epi = Epilogue("mul_vec(s) | tanh", s=torch.rand(64, device="cuda"))
    for precision in PRECISIONS:
        torch.library.opcheck(torch.ops.cutlass_ext.fused_linear.default, (x, w, b, *epi.encode(), "", precision))
    split = torch.ops.cutlass_ext.split_tf32(w)
    torch.library.opcheck(torch.ops.cutlass_ext.fused_linear.default,
                          (x, w, b, *epi.encode(), "", "highest", split))
    torch.library.opcheck(torch.ops.cutlass_ext.split_tf32.default, (w,))
    layer = FusedLinear(128, 64, epilogue="gelu", precision="highest", device="cuda")
    with torch.no_grad():
        compiled = torch.compile(lambda t: layer(t) * 2, fullgraph=True)
        check_float32(compiled(x) / 2, x, layer.weight, layer.bias, layer.epilogue, "highest")


@pytest.mark.gpu
def test_split_tf32_layout():
    w = torch.randn(8, 12, device="cuda") * torch.logspace(-30, 30, 12, device="cuda")
    split = torch.ops.cutlass_ext.split_tf32(w)
    hi, lo = split[:, :12], split[:, 12:]
    low_bits = 0x1FFF
    assert (hi.view(torch.int32) & low_bits).eq(0).all() and (lo.view(torch.int32) & low_bits).eq(0).all()
    assert ((hi.double() + lo.double() - w.double()).abs() <= w.double().abs() * 2.0 ** -21).all()
    assert ((w - hi).abs() <= w.abs() * 2.0 ** -11).all()


@pytest.mark.gpu
@pytest.mark.parametrize("problem,chain", [
    ("linear_scale_hardtanh_gelu", "mul(0.5) | hardtanh(-2, 2) | gelu"),
    ("linear_swish_div_clamp_tanh_clamp", "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)"),
    ("linear_groupnorm_hardtanh", None),
])
def test_float32_reference_problems_match_at_1e4(problem, chain):
    """Issues 4 and 5: the float32 models, 'highest', allclose(1e-4, 1e-4) on 5 fresh inputs each. The GroupNorm
    model is rebuilt from its Linear and GroupNorm (the GEMM, then the norm stage)."""
    mod = load_problem(problem)
    model = mod.Model(*mod.get_init_inputs()).to("cuda")
    if chain is None:
        fused = FusedLinear.from_linear_and_norm(model.gemm, model.group_norm, post="hardtanh(-2, 2)",
                                                 precision="highest")
    else:
        fused = FusedLinear.from_linear(model.gemm, chain, precision="highest")
    with torch.no_grad(), float32_matmul_precision("highest"):
        for i in range(5):
            x = mod.get_inputs()[0].to("cuda")
            got = fused(x)
            torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)
            if i == 0 and chain:
                check_float32(got, x, model.gemm.weight, model.gemm.bias, fused.epilogue, "highest")
