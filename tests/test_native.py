"""How the package reports the compiled module: loaded or not, for which GPUs, and why."""

import pytest
import torch

import cutlass_ext
from cutlass_ext import _native
from conftest import REQUIRE_NATIVE


def test_native_info_says_what_happened():
    info = cutlass_ext.native_info()
    text = str(info)
    assert text.startswith("compiled module: ")
    assert info.tried, "the report lists what was tried"
    if info.loaded:
        assert info.library and info.archs and info.reason is None
    else:
        assert info.reason and "NOT loaded" in text and info.reason in text


def test_native_module_is_there_when_required():
    """CUTLASS_EXT_REQUIRE_NATIVE=1 (CI and the GPU runs) turns a missing compiled module into a failure."""
    if not REQUIRE_NATIVE:
        pytest.skip("CUTLASS_EXT_REQUIRE_NATIVE is not set")
    assert cutlass_ext.native_info().loaded, str(cutlass_ext.native_info())


def test_visible_gpu_runs_the_module_when_required():
    """With CUTLASS_EXT_REQUIRE_NATIVE=1 and a CUDA GPU visible, the GPU tests must not all skip because the module
    cannot run on it (a build for another architecture, a lost build record): one failure says why."""
    if not REQUIRE_NATIVE or not torch.cuda.is_available():
        pytest.skip("CUTLASS_EXT_REQUIRE_NATIVE is not set, or no CUDA GPU is visible")
    ok, why = _native.device_support(torch.device("cuda"))
    assert ok, why


def test_a_module_without_its_build_record_says_so(monkeypatch):
    """A library copied without _build_info.json loads, but nothing says which GPUs it runs on: the reason names the
    missing record instead of an empty list of architectures."""
    lost = _native.NativeInfo(True, "/somewhere/_C.so", (), ("/somewhere/_C.so",), None, {})
    monkeypatch.setattr(_native, "native_info", lambda: lost)
    ok, why = _native._device_support(torch.device("cuda"))
    assert not ok and "_build_info.json" in why and "/somewhere/_C.so" in why


@pytest.mark.parametrize("arch,cap,runs", [
    ("90a", (9, 0), True), ("90a", (10, 0), False), ("90", (9, 0), True), ("80", (8, 6), True),
    ("86", (8, 0), False), ("80", (9, 0), False), ("100a", (10, 0), True), ("120", (12, 1), True),
])
def test_arch_compatibility(arch, cap, runs):
    assert _native._arch_runs_on(arch, *cap) is runs
