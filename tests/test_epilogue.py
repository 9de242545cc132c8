"""The epilogue spec (CPU only): building, parsing, printing, validation, and the reference math against torch."""

import math
import pathlib
import re

import pytest
import torch
import torch.nn.functional as F

from cutlass_ext import MAX_OPS, MAX_VECTORS, OPS, Epilogue, Op
from cutlass_ext.epilogue import DEVICE_OPS, run_device_ops

ROOT = pathlib.Path(__file__).resolve().parents[1]

ROUND_TRIPS = [
    "mul(0.5) | hardtanh(-2, 2) | gelu",
    "silu | div(2) | clamp(-1, 1) | tanh | clamp(-1, 1)",
    "clamp(max=1)",
    "clamp(-1)",
    "hardtanh(max_val=3)",
    "leaky_relu(0.2) | relu | relu6",
    "softplus(2, 10) | softplus(threshold=10) | elu(0.5)",
    "sub(3) | add(1e-05) | neg | abs | residual(2) | residual",
    "gelu_tanh | sigmoid | mish | swish | hardswish | hardsigmoid",
    "add_vec(bias2) | mul_vec(scale)",
]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_parse_print_round_trip(text):
    vectors = {name: torch.ones(4) for name in ("bias2", "scale") if name in text}
    epi = Epilogue(text, **vectors)
    assert str(epi) == text
    assert Epilogue(str(epi), **vectors) == epi


def test_built_from_objects_equals_parsed():
    built = Epilogue([Op("mul", 0.5), Op("hardtanh", -2, 2), Op("gelu")])
    assert built == Epilogue("mul(0.5) | hardtanh(min_val=-2, max_val=2) | gelu")
    assert repr(built) == "Epilogue('mul(0.5) | hardtanh(-2, 2) | gelu')"
    assert Epilogue("mul(0.5)") | "hardtanh(-2, 2)" | Op("gelu") == built
    assert "mul(0.5)" | Epilogue("hardtanh(-2, 2) | gelu") == built
    assert len(Epilogue("")) == 0 and str(Epilogue(None)) == ""


def test_lowering():
    names, params, vectors = Epilogue("sub(3) | relu | relu6 | hardtanh | clamp(max=2) | swish | div(3)").encode()
    assert names == ["add", "relu", "hardtanh", "hardtanh", "clamp", "silu", "mul"]
    third = (torch.tensor(1.0) / torch.tensor(3.0)).item()  # the float32 reciprocal
    assert params == [-3.0, 0.0, 0.0, math.inf, 0.0, 6.0, -1.0, 1.0, -math.inf, 2.0, 0.0, 0.0, third, 0.0]
    assert vectors == []


BAD = [
    ("gelu2", ValueError, r"unknown epilogue op 'gelu2'.*Did you mean gelu"),
    ("mul", ValueError, r"mul needs parameter 'value'"),
    ("gelu(1)", ValueError, r"gelu takes at most 0 parameter"),
    ("hardtanh(-1, 1, 2)", ValueError, r"at most 2 parameter"),
    ("leaky_relu(slope=0.1)", ValueError, r"no parameter 'slope'"),
    ("mul(inf)", ValueError, r"must be finite"),
    ("mul(nan)", ValueError, r"must be finite"),
    ("add(1e999)", ValueError, r"must be finite"),
    ("hardtanh(2, -2)", ValueError, r"min \(2\) must not exceed max \(-2\)"),
    ("clamp(3, 1)", ValueError, r"must not exceed"),
    ("clamp", ValueError, r"at least one of min and max"),
    ("mul(0.5) |", ValueError, r"cannot parse"),
    ("mul(0.5) + gelu", ValueError, r"expected an op"),
    ("mul(scale)", ValueError, r"vector 'scale' is not given"),
    ("mul('x')", ValueError, r"takes numbers"),
    ("add_vec(1.0)", ValueError, r"takes the name of one vector"),
    (" | ".join(["relu"] * (MAX_OPS + 1)), ValueError, rf"at most {MAX_OPS} ops"),
]


@pytest.mark.parametrize("text,exc,message", BAD)
def test_bad_chains_raise_clear_errors(text, exc, message):
    with pytest.raises(exc, match=message):
        Epilogue(text)


def test_bad_objects_raise_clear_errors():
    with pytest.raises(TypeError, match="must be a real number"):
        Op("mul", True)
    with pytest.raises(TypeError, match="must be a real number"):
        Op("mul", "2")
    with pytest.raises(TypeError, match="1-D tensor"):
        Op("add_vec", [1.0, 2.0])
    with pytest.raises(ValueError, match="must be 1-D"):
        Op("add_vec", torch.ones(2, 2))
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        Op("mul_vec", torch.ones(4, dtype=torch.int32))
    with pytest.raises(TypeError, match="Op objects"):
        Epilogue(["relu"])
    with pytest.raises(ValueError, match="does not use the vector"):
        Epilogue("relu", b=torch.ones(3))
    with pytest.raises(ValueError, match=f"at most {MAX_VECTORS} per-feature vectors"):
        Epilogue([Op("add_vec", torch.ones(3))] * (MAX_VECTORS + 1))


def test_vector_checks_against_the_input():
    epi = Epilogue("add_vec(b)", b=torch.ones(8))
    epi.check_for(8, torch.device("cpu"))
    with pytest.raises(ValueError, match="has 8 values, the output has 9 features"):
        epi.check_for(9, torch.device("cpu"))
    with pytest.raises(ValueError, match="is on cpu, the input on meta"):
        epi.check_for(8, torch.device("meta"))
    with pytest.raises(ValueError, match="needs a feature dimension"):
        epi.check_for(None, torch.device("cpu"))


# Each user-level op against the torch expression it stands for. The reference must equal it exactly.
TORCH_FORMS = {
    "add": ("add(1.5)", lambda x: x + 1.5),
    "sub": ("sub(1.5)", lambda x: x - 1.5),
    "mul": ("mul(0.3)", lambda x: x * 0.3),
    "div": ("div(3)", lambda x: x / 3),
    "clamp": ("clamp(-0.5, 2)", lambda x: torch.clamp(x, -0.5, 2)),
    "hardtanh": ("hardtanh(-2, 2)", lambda x: F.hardtanh(x, -2, 2)),
    "relu": ("relu", F.relu),
    "relu6": ("relu6", F.relu6),
    "leaky_relu": ("leaky_relu(0.2)", lambda x: F.leaky_relu(x, 0.2)),
    "gelu": ("gelu", F.gelu),
    "gelu_tanh": ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
    "silu": ("silu", F.silu),
    "swish": ("swish", lambda x: x * torch.sigmoid(x)),
    "sigmoid": ("sigmoid", torch.sigmoid),
    "tanh": ("tanh", torch.tanh),
    "mish": ("mish", F.mish),
    "softplus": ("softplus(2, 5)", lambda x: F.softplus(x, 2, 5)),
    "elu": ("elu(0.7)", lambda x: F.elu(x, 0.7)),
    "hardswish": ("hardswish", F.hardswish),
    "hardsigmoid": ("hardsigmoid", F.hardsigmoid),
    "abs": ("abs", torch.abs),
    "neg": ("neg", torch.neg),
    "add_vec": ("add_vec(v)", lambda x: x + VEC),
    "mul_vec": ("mul_vec(v)", lambda x: x * VEC),
    "residual": ("sigmoid | mul(2) | residual", lambda x: x + 2 * torch.sigmoid(x)),
}
VEC = torch.linspace(-2, 2, 16)
SPECIALS = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0, 6.0, 50.0, -50.0,
                         88.0, -88.0, 1e30, -1e30])


def test_every_op_has_a_torch_form():
    assert set(TORCH_FORMS) == set(OPS)


@pytest.mark.parametrize("name", sorted(TORCH_FORMS))
def test_reference_is_torch(name, gen):
    text, torch_form = TORCH_FORMS[name]
    x = torch.cat([torch.randn(64, 16, generator=gen) * 4, SPECIALS[None, :]])
    epi = Epilogue(text, v=VEC) if "(v)" in text else Epilogue(text)
    got = epi.reference(x)
    # swish and residual are written as compositions in torch, and div multiplies by the float32 reciprocal as
    # torch's CUDA kernels do (the CPU divides): one float32 rounding apart. Everything else is bit-identical.
    exact = name not in ("swish", "residual", "div")
    torch.testing.assert_close(got, torch_form(x), rtol=0 if exact else 2e-7, atol=0 if exact else 1e-7,
                               equal_nan=True)


def test_reference_is_float32_math_with_one_rounding(gen):
    x = (torch.randn(32, 8, generator=gen) * 3).to(torch.bfloat16)
    epi = Epilogue("mul(0.37) | add(0.11) | gelu")
    want = F.gelu(x.float() * 0.37 + 0.11).to(torch.bfloat16)
    assert torch.equal(epi.reference(x), want)
    assert epi.reference(x, out_dtype=torch.float32).dtype == torch.float32


def test_device_op_names_and_limits_match_the_cpp():
    cpp = (ROOT / "cutlass_ext/torch/chain_program.cpp").read_text()
    assert set(re.findall(r'\{"(\w+)", ChainOpCode::', cpp)) == set(DEVICE_OPS)
    header = (ROOT / "cutlass_ext/include/cutlass_ext/chain_program.h").read_text()
    assert int(re.search(r"kMaxChainOps = (\d+)", header).group(1)) == MAX_OPS
    assert int(re.search(r"kMaxChainVectors = (\d+)", header).group(1)) == MAX_VECTORS


def test_run_device_ops_reads_vectors_in_order(gen):
    a, b = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    x = torch.randn(3, 5, generator=gen)
    got = run_device_ops(x, ["add_vec", "mul_vec"], [0.0] * 4, [a, b])
    assert torch.equal(got, (x + a) * b)
