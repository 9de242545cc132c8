"""Shared test setup. GPU tests carry the `gpu` mark and are skipped, with the reason, where no CUDA GPU can run
the compiled kernels. Set CUTLASS_EXT_REQUIRE_NATIVE=1 (as the GPU runs do) to make that a failure instead."""

import os
import zlib

import pytest
import torch

from cutlass_ext import _native

REQUIRE_NATIVE = os.environ.get("CUTLASS_EXT_REQUIRE_NATIVE") == "1"


def gpu_unusable_reason():
    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    ok, why = _native.device_support(torch.device("cuda"))
    return None if ok else why


def pytest_collection_modifyitems(config, items):
    reason = gpu_unusable_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))


# Fresh random inputs every run; the seed is printed in the header so that a failure can be replayed.
SEED = int(os.environ.get("CUTLASS_EXT_TEST_SEED", int.from_bytes(os.urandom(4), "little")))


def pytest_report_header(config):
    return f"cutlass_ext: random seed {SEED} (replay with CUTLASS_EXT_TEST_SEED={SEED}); {_native.native_info().reason or 'compiled module loaded'}"


@pytest.fixture
def gen(request):
    """A generator seeded from the run's seed and the test's name."""
    return torch.Generator().manual_seed(SEED ^ zlib.crc32(request.node.name.encode()))
