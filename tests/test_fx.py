"""cutlass_ext.fuse: the torch.fx pass that finds Linear + chain regions in a model. CPU: what it fuses and where it
stops, the state_dict, the replay of the original ops, and the fused op's output (the reference path) against the
model. GPU (marked `gpu`): the reference problems fused at full size against their models."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import cutlass_ext
from cutlass_ext import fx as cfx
from cutlass_ext.epilogue import MAX_OPS
from cutlass_ext.nn import FusedLinear

from test_linear import load_problem, poison_allocator


def regions(gm):
    return [m for m in gm.modules() if isinstance(m, cfx.FusedRegion)]


def fused_lines(gm):
    return [line for line in cfx.report_lines(gm) if ": fused: " in line]


@pytest.fixture
def force_fused(monkeypatch):
    """Every region runs its fused op (on the CPU: cutlass_ext's reference path) wherever only the device stops it.
    Yields the list of regions that did, one entry per call."""
    real_plan, real_run = cfx.FusedRegion._plan, cfx.FusedRegion._run
    ran = []

    def plan(self, x, weight, bias, tensors):
        epi, why = real_plan(self, x, weight, bias, tensors)
        return epi, None if why == f"{x.device.type} tensors" else why

    def run(self, x, weight, bias, epi):
        ran.append(self.name)
        return real_run(self, x, weight, bias, epi)

    monkeypatch.setattr(cfx.FusedRegion, "_plan", plan)
    monkeypatch.setattr(cfx.FusedRegion, "_run", run)
    yield ran


class LinearGroupNorm(nn.Module):
    """Linear(64, 48) -> GroupNorm(4, 48) -> hardtanh, as the reference problem (which CI's checkout may not have)."""

    def __init__(self):
        super().__init__()
        self.gemm, self.group_norm = nn.Linear(64, 48), nn.GroupNorm(4, 48)

    def forward(self, x):
        return F.hardtanh(self.group_norm(self.gemm(x)), -2.0, 2.0)


class LinearScaleHardtanhGelu(nn.Module):
    """linear_scale_hardtanh_gelu's form, shrunk: the chain's ops as modules and an operator, as the problem writes
    them. A stand-in for checkouts without the problem files, such as CI's."""

    def __init__(self):
        super().__init__()
        self.gemm, self.hardtanh, self.gelu = nn.Linear(64, 48), nn.Hardtanh(-2, 2), nn.GELU()

    def forward(self, x):
        return self.gelu(self.hardtanh(self.gemm(x) * 0.5))


class LinearSwishDivClampTanhClamp(nn.Module):
    """linear_swish_div_clamp_tanh_clamp's form, shrunk: swish spelled out, torch functions for the rest."""

    def __init__(self):
        super().__init__()
        self.gemm = nn.Linear(64, 48)

    def forward(self, x):
        x = self.gemm(x)
        x = x * torch.sigmoid(x)
        return torch.clamp(torch.tanh(torch.clamp(x / 2.0, min=-1.0, max=1.0)), min=-1.0, max=1.0)


STAND_INS = {"linear_scale_hardtanh_gelu": LinearScaleHardtanhGelu,
             "linear_swish_div_clamp_tanh_clamp": LinearSwishDivClampTanhClamp,
             "linear_groupnorm_hardtanh": LinearGroupNorm}


def small_problem(name, source="file"):
    """The reference model at 64 -> 48 features: from its problem file (skipped where there is none), or our
    stand-in with the same ops (LinearGroupNorm calls hardtanh as a function where the problem has a module)."""
    if source == "stand-in":
        return STAND_INS[name]()
    mod = load_problem(name)
    args = {"linear_scale_hardtanh_gelu": (64, 48, 0.5, -2, 2), "linear_swish_div_clamp_tanh_clamp": (64, 48),
            "linear_groupnorm_hardtanh": (64, 48, 4, -2.0, 2.0)}[name]
    return mod.Model(*args)


PROBLEMS = [
    ("linear_scale_hardtanh_gelu", "mul(0.5) | hardtanh(-2, 2) | gelu"),
    ("linear_swish_div_clamp_tanh_clamp", "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)"),
    ("linear_groupnorm_hardtanh", "group_norm(4, weight=group_norm.weight, bias=group_norm.bias) | hardtanh(-2, 2)"),
]


@pytest.mark.parametrize("source", ["file", "stand-in"])
@pytest.mark.parametrize("problem,chain", PROBLEMS)
def test_reference_problems_become_one_region(problem, chain, source, gen, force_fused):
    model = small_problem(problem, source)
    fused = cutlass_ext.fuse(model)
    assert fused_lines(fused) == [f"gemm: fused: {chain} (the chain ends at the model's output)"]
    computing = [n for n in fused.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    assert [n.target for n in computing] == ["gemm_fused"]  # nothing else left in the graph
    assert fused.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert fused.state_dict()[key].data_ptr() == value.data_ptr()  # shared, not copied
    with torch.no_grad():  # under autograd the region replays the original ops
        for _ in range(3):
            x = torch.rand(8, 64, generator=gen) * 4 - 2
            torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-6)
    assert force_fused == [f"gemm -> {chain}"] * 3


def test_replay_runs_the_original_ops_off_the_gpu(gen):
    model = nn.Sequential(nn.Linear(64, 48), nn.SiLU(), nn.Tanh())
    fused = cutlass_ext.fuse(model)
    x = torch.randn(8, 64, generator=gen)
    (region,) = regions(fused)
    assert torch.equal(fused(x), model(x))  # bit for bit: the same torch ops
    assert "autograd" in region.path(x, model[0].weight, model[0].bias).reason
    with torch.no_grad():
        assert torch.equal(fused(x), model(x))
        why = region.path(x, model[0].weight, model[0].bias)
        assert not why.native and why.reason == "the original ops, for cpu tensors"


class Patterns(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 64)
        self.scale = nn.Parameter(torch.rand(64) + 0.5)
        self.w3 = nn.Parameter(torch.randn(16, 64) / 8)
        self.drop, self.ln, self.unused = nn.Dropout(0.1), nn.LayerNorm(64), nn.Linear(3, 3)
        self.register_buffer("steps", torch.zeros(()), persistent=False)

    def forward(self, x):
        y = self.fc1(x) * 0.5
        y = y * torch.sigmoid(y)          # swish, in the middle of the chain
        y = self.drop(y) * self.scale     # Dropout (eval), a per-feature parameter
        z = self.fc2(y)
        z = z + torch.tanh(z)             # a residual of the chain's input
        w = 1 - F.linear(z, self.w3).relu()   # F.linear without bias; number - value
        u = self.ln(self.fc2(y)).clamp(max=2.0)   # fc2 again (shared weight); a LayerNorm, then a post-chain
        v = torch.tanh(torch.sigmoid(x)) * 2      # a chain with no Linear
        return w, u, v


def test_patterns(gen, force_fused):
    model = Patterns().eval()
    fused = cutlass_ext.fuse(model)
    assert fused_lines(fused) == [
        "fc1: fused: mul(0.5) | silu | mul_vec(scale) (the chain ends at a value used by fc2 (Linear), fc2 (Linear))",
        "fc2: fused: tanh | residual (the chain ends at linear (linear), the next GEMM)",
        "linear: fused: relu | neg | add(1) (the chain ends at the model's output)",
        "fc2: fused: layer_norm(weight=ln.weight, bias=ln.bias) | clamp(max=2) (the chain ends at the model's output)",
        "sigmoid_1 (sigmoid) and after: fused: sigmoid | tanh | mul(2) (the chain ends at the model's output)",
    ]
    assert fused.state_dict().keys() == model.state_dict().keys()  # unused Linear kept, non-persistent buffer not
    x = torch.randn(5, 32, generator=gen)
    with torch.no_grad():
        for got, want in zip(fused(x), model(x)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert len(force_fused) == 5


class OneLinear(nn.Module):
    """A Linear(8, 8) `fc` and a per-feature parameter `lo`, with the forward given."""

    def __init__(self, forward):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.lo = nn.Parameter(torch.zeros(8))
        self.body = forward

    def forward(self, x):
        return self.body(self, x)


@pytest.mark.parametrize("forward,why", [
    (lambda m, x: torch.softmax(m.fc(x), -1), "softmax (softmax), which the pass does not fuse"),
    (lambda m, x: torch.clamp(m.fc(x), min=m.lo), "clamp (clamp), which the pass does not fuse"),
    (lambda m, x: 2 / m.fc(x), "truediv (truediv), which the pass does not fuse"),
    (lambda m, x: m.fc(x).float(), "float_1 (float), which the pass does not fuse"),
])
def test_where_chains_stop(forward, why):
    model = OneLinear(forward)
    fused = cutlass_ext.fuse(model)
    assert cfx.report_lines(fused) == [f"fc: not fused: nothing to fuse before {why}"]
    x = torch.randn(3, 8)
    torch.testing.assert_close(fused(x), model(x), rtol=0, atol=0)


def test_shared_values_and_residuals_that_cannot_fuse():
    def forward(m, x):
        y = m.fc(x)
        a = torch.softmax(y, -1) + y      # y's second use is an add the chain never reaches
        b = m.fc(x)
        c = m.fc(x)
        return a, b.relu(), b, c + c.relu_()  # b used twice: no chain; relu_ would overwrite c before the add

    fused = cutlass_ext.fuse(OneLinear(forward))
    assert cfx.report_lines(fused) == [
        "fc: not fused: nothing to fuse before softmax (softmax), which the pass does not fuse, and add (add) adds "
        "the chain's input to that value",
        "fc: not fused: nothing to fuse before a value used by relu (relu), the model's output",
        "fc: not fused: nothing to fuse before relu_ (relu_), which overwrites a value the residual reads, and add_1 "
        "(add) adds the chain's input to that value",
    ]


def test_the_epilogue_limits(force_fused):
    def forward(m, x):
        y = m.fc(x)
        for _ in range(MAX_OPS + 4):
            y = y * 1.5
        return y

    model = OneLinear(forward)
    fused = cutlass_ext.fuse(model)
    (line,) = fused_lines(fused)
    assert line.count("mul(1.5)") == MAX_OPS and line.endswith("(the chain ends at the epilogue's limits)")
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))
    assert len(force_fused) == 1


def test_replay_where_the_fused_op_would_differ(gen):
    """What fusable() refuses (each checked before the device, so on the CPU too), and that forward then replays."""
    gn = LinearGroupNorm()
    fused = cutlass_ext.fuse(gn)
    (region,) = regions(fused)
    w, b, norm = gn.gemm.weight, gn.gemm.bias, (gn.group_norm.weight, gn.group_norm.bias)
    x = torch.randn(4, 64, generator=gen)
    assert "autograd" in region.fusable(x, w, b, norm)  # the parameters require grad
    with torch.no_grad():
        assert region.fusable(x, w, b, norm) == "cpu tensors"
        assert "float64" in region.fusable(x.double(), w.double(), b.double(), norm)
        assert "one value per feature" in region.fusable(x, w, b, (norm[0][:4], norm[1]))
        x3 = torch.randn(2, 48, 64, generator=gen)  # Linear output (2, 48, 48): GroupNorm's channels are dim 1
        assert "not 2-D" in region.fusable(x3, w, b, norm)
        assert torch.equal(fused(x3), gn(x3))

    alone = cutlass_ext.fuse(nn.Sequential(nn.Linear(8, 8)))
    assert cfx.report_lines(alone) == ["0: not fused: nothing to fuse before the model's output"]

    class Vec(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.drop = nn.Linear(8, 8), nn.Dropout(0.5)
            self.register_buffer("scale", torch.rand(8, dtype=torch.float64))

        def forward(self, x):
            return self.drop(self.fc(x)).relu() * self.scale

    model = Vec()
    fused = cutlass_ext.fuse(model)
    (region,) = regions(fused)
    x = torch.randn(3, 8, generator=gen)
    with torch.no_grad():
        assert region.fusable(x, model.fc.weight, model.fc.bias, (model.scale,)) == "a Dropout in training mode"
        model.eval()
        assert "promotes torch.float32 values to torch.float64" in region.fusable(
            x, model.fc.weight, model.fc.bias, (model.scale,))
        assert fused(x).dtype == torch.float64 and torch.equal(fused(x), model(x))


def test_untraceable_modules_fuse_their_children(gen, force_fused):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16), nn.Hardtanh(-1, 1))

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this module
                return self.mlp(x)
            return -self.mlp(x)

    model = Block()
    fused = cutlass_ext.fuse(model)
    lines = cfx.report_lines(fused)
    assert lines[0].startswith("(not traced by torch.fx: TraceError")
    assert lines[1:] == ["mlp.0: fused: gelu (the chain ends at 2 (Linear), the next GEMM)",
                         "mlp.2: fused: hardtanh (the chain ends at the model's output)"]
    assert isinstance(fused.mlp, fx.GraphModule) and not isinstance(model.mlp, fx.GraphModule)  # model unchanged
    assert fused.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        for sign in (1, -1):
            x = sign * (torch.rand(4, 16, generator=gen) + 0.1)
            torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-6)
    assert len(force_fused) == 4


def test_state_dict_copy_pickle_and_compile(gen, force_fused):
    model = nn.Sequential(nn.Linear(64, 48), nn.Hardtanh(-2, 2), nn.GELU())
    fused = cutlass_ext.fuse(model)
    other = nn.Sequential(nn.Linear(64, 48), nn.Hardtanh(-2, 2), nn.GELU())
    fused.load_state_dict(other.state_dict())  # loads into the model's own parameters
    assert torch.equal(model[0].weight, other[0].weight)
    x = torch.randn(4, 64, generator=gen)
    with torch.no_grad():
        want = other(x)
        for copied in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
            torch.testing.assert_close(copied(x), want, rtol=1e-5, atol=1e-6)
            copied.get_submodule("0").weight.data.zero_()  # its own parameters now
        torch.testing.assert_close(fused(x), want, rtol=1e-5, atol=1e-6)
        assert len(force_fused) == 3
        torch._dynamo.reset()
        compiled = torch.compile(fused, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), want, rtol=1e-5, atol=1e-6)


def test_cutlass_ext_modules_stay_whole_and_fusing_twice_changes_nothing(gen):
    model = nn.Sequential(FusedLinear(8, 8, epilogue="gelu"), nn.Tanh(), nn.Linear(8, 8), nn.ReLU())
    fused = cutlass_ext.fuse(model)
    assert cfx.report_lines(fused) == ["2: fused: relu (the chain ends at the model's output)"]
    again = cutlass_ext.fuse(fused)
    assert cfx.report_lines(again) == ["nothing to fuse: no Linear, nor a chain of two or more elementwise ops"]
    x = torch.randn(3, 8, generator=gen)
    assert torch.equal(again(x), model(x))


def test_writes_hooks_aliases_and_later_changes(gen, force_fused):
    """What would make a region compute something else than the model: an in-place write between its ops, a write
    through an alias of a residual's input, a forward hook, and module attributes changed after fuse."""
    def write_between(m, x):
        y = m.fc(x)
        x.mul_(2)  # the region would run after this write, and read 2x
        return y.relu()

    def alias(m, x):
        z = m.fc(x)
        return z + m.ident(z).relu_()  # relu_ overwrites z itself: 2 relu(z), not relu(z) + z

    def standalone(m, x):
        y = m.act(x).tanh()  # nn.ReLU(inplace=True) overwrites x, which the add reads
        return y + x

    reports = {
        write_between: ["fc: not fused: mul_ (mul_) writes in place between the region's first and last op"],
        alias: ["fc: not fused: nothing to fuse before relu_ (relu_), which overwrites a value the residual reads, "
                "and add (add) adds the chain's input to that value"],
        standalone: ["nothing to fuse: no Linear, nor a chain of two or more elementwise ops"],
    }
    for forward, want in reports.items():
        model = OneLinear(forward)
        model.ident, model.act = nn.Identity(), nn.ReLU(inplace=True)
        fused = cutlass_ext.fuse(model)
        assert cfx.report_lines(fused) == want
        x = torch.randn(3, 8, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(fused(x.clone()), model(x.clone()), rtol=0, atol=0)

    hooked = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    hooked[0].register_forward_hook(lambda module, args, out: out * 2)
    assert cfx.report_lines(cutlass_ext.fuse(hooked)) == [
        "nothing to fuse: no Linear, nor a chain of two or more elementwise ops"]

    model = nn.Sequential(nn.Linear(8, 8), nn.LeakyReLU(0.1), nn.LayerNorm(8))
    fused = cutlass_ext.fuse(model)
    x = torch.randn(3, 8, generator=gen)
    with torch.no_grad():
        model[1].negative_slope, model[2].eps = 0.5, 1e-2  # read on each call, as the model's own ops do
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-6)
        model[1].negative_slope = float("nan")  # the op would refuse it: the original ops run
        assert "attributes" in regions(fused)[0].fusable(x, model[0].weight, model[0].bias,
                                                          (model[2].weight, model[2].bias))
    assert len(force_fused) == 1


def test_state_dict_keys_are_the_models(gen):
    class Keys(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.alias = self.fc         # one module under two names: both keys
            self.plain = torch.rand(8)   # a tensor attribute, not a buffer: no key
            self.fc_fused = nn.Linear(2, 2)  # unused, and named as a region would be

        def forward(self, x):
            return (self.fc(x) * self.plain + torch.arange(8)).relu()  # a constant made in forward: no key

    model = Keys()
    fused = cutlass_ext.fuse(model)
    assert list(fused.state_dict()) == list(model.state_dict())
    assert fused.fc_fused is model.fc_fused
    fused.load_state_dict(model.state_dict())
    x = torch.randn(3, 8, generator=gen)
    assert torch.equal(fused(x), model(x))


def test_bad_input():
    with pytest.raises(TypeError, match="expects an nn.Module"):
        cutlass_ext.fuse(lambda x: x)


# --- GPU: the reference problems, fused from the model itself ----------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("problem", [p for p, _ in PROBLEMS])
def test_gpu_reference_problems(problem, dtype):
    """Full size, on the problems' own inputs: the fused model within the problems' rule (1e-2 in bf16/fp16, 1e-4
    in float32 at torch's default 'highest') of the model, on the fused path."""
    mod = load_problem(problem)
    model = mod.Model(*mod.get_init_inputs()).to("cuda", dtype)
    fused = cutlass_ext.fuse(model)
    (region,) = regions(fused)
    norm = [model.group_norm.weight, model.group_norm.bias] if "groupnorm" in problem else []
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    with torch.no_grad():
        for _ in range(2):
            x = mod.get_inputs()[0].to("cuda", dtype)
            path = region.path(x, model.gemm.weight, model.gemm.bias, *norm)
            assert path.native and "fused sm90 GEMM" in path.reason, str(path)
            want = model(x)
            poison_allocator(want.numel() * want.element_size())
            torch.testing.assert_close(fused(x), want, rtol=tol, atol=tol)


@pytest.mark.gpu
def test_gpu_patterns_and_replays():
    model = Patterns().to("cuda", torch.bfloat16).eval()
    fused = cutlass_ext.fuse(model)
    x = torch.randn(64, 32, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for got, want in zip(fused(x), model(x)):
            torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
        (alone,) = [r for r in regions(fused) if not r.linear]
        assert alone.path(x).native
        gn_model = LinearGroupNorm().cuda()
        gn = cutlass_ext.fuse(gn_model)
        (region,) = regions(gn)
        x3 = torch.randn(2, 48, 64, device="cuda")
        assert not region.path(x3, gn_model.gemm.weight, gn_model.gemm.bias, gn_model.group_norm.weight,
                               gn_model.group_norm.bias).native
        assert torch.equal(gn(x3), gn_model(x3))
