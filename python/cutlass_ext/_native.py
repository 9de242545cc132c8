"""Finds and loads the compiled module (_C.so, a torch op library), and says why when it cannot be used.

What was built is recorded by CMake in _build_info.json beside the library: whether the compiled module was
built at all (and if not, why), and for which CUDA architectures.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import warnings
from dataclasses import dataclass

import torch

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Set to a built _C.so to use it instead of the installed one (a development build, say).
LIBRARY_ENV = "CUTLASS_EXT_LIBRARY"


@dataclass(frozen=True)
class NativeInfo:
    loaded: bool
    library: str | None  # the file that loaded
    archs: tuple[str, ...]  # CUDA architectures compiled in, e.g. ("90a",)
    tried: tuple[str, ...]  # each candidate and what happened to it
    reason: str | None  # why it is not loaded
    build: dict  # _build_info.json as written by CMake

    def __str__(self) -> str:
        lines = [f"compiled module: {'loaded from ' + self.library if self.loaded else 'NOT loaded'}"]
        if self.loaded:
            lines.append(f"  built for: {', '.join('sm_' + a for a in self.archs) or 'no architecture'}")
        else:
            lines.append(f"  reason: {self.reason}")
        lines += [f"  tried: {t}" for t in self.tried]
        for key in ("torch_version", "torch_cuda_version", "nvcc_version", "cutlass_include"):
            if self.build.get(key):
                lines.append(f"  build {key}: {self.build[key]}")
        return "\n".join(lines)


def _read_build_info(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, "_build_info.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=None)
def native_info() -> NativeInfo:
    """Loads the compiled module once; every later call returns the same answer."""
    explicit = os.environ.get(LIBRARY_ENV)
    candidates = [explicit] if explicit else sorted(glob.glob(os.path.join(_PACKAGE_DIR, "_C*.so")))
    build = _read_build_info(os.path.dirname(candidates[0]) if candidates else _PACKAGE_DIR)
    build = build or _read_build_info(_PACKAGE_DIR) or {}
    archs = tuple(build.get("archs", ()))
    if not candidates:
        if build.get("native") is False:
            reason = f"the package was built without it: {build.get('reason')}"
        elif not build:
            reason = ("no compiled module next to the package (a source checkout on sys.path? install it with "
                      "`pip install .`)")
        else:
            reason = "the compiled module is missing from the installed package"
        return NativeInfo(False, None, archs, (f"{_PACKAGE_DIR}/_C*.so: not found",), reason, build)
    tried = []
    for path in candidates:
        try:
            torch.ops.load_library(path)
        except (OSError, RuntimeError) as e:
            cause = str(e).splitlines()[0]
            built_with = build.get("torch_version")
            if built_with and built_with != torch.__version__:
                cause += f" (built against torch {built_with}, running torch {torch.__version__}: rebuild it)"
            tried.append(f"{path}: {cause}")
            continue
        tried.append(f"{path}: loaded")
        from . import _library

        _library.register_python_impls()
        return NativeInfo(True, path, archs, tuple(tried), None, build)
    return NativeInfo(False, None, archs, tuple(tried), "loading failed: " + "; ".join(tried), build)


def _arch_runs_on(arch: str, major: int, minor: int) -> bool:
    """sm_XY machine code runs on compute capability X.y for y >= Y; 'a'/'f' variants only on their own."""
    digits = arch.rstrip("af")
    a_major, a_minor = int(digits[:-1]), int(digits[-1])
    if arch != digits:
        return (a_major, a_minor) == (major, minor)
    return a_major == major and minor >= a_minor


_support: dict[torch.device, tuple[bool, str]] = {}


# Constant for torch.compile: decided once per process and device, outside the traced graph (and cached: this
# runs on every call of the functional API, where host time is the cost of small GEMMs).
@torch.compiler.assume_constant_result
def device_support(device: torch.device) -> tuple[bool, str]:
    """(True, '') when the compiled kernels can run on ``device``; else (False, why)."""
    found = _support.get(device)
    if found is None:
        found = _support[device] = _device_support(device)
    return found


def _device_support(device: torch.device) -> tuple[bool, str]:
    info = native_info()
    if not info.loaded:
        return False, f"the compiled module is not loaded: {info.reason}"
    if not info.archs:
        return False, (f"the compiled module {info.library} has no build record (_build_info.json beside it, written "
                       "by the build) saying which GPUs it was compiled for; reinstall, or copy the record with it")
    major, minor = torch.cuda.get_device_capability(device)
    if not any(_arch_runs_on(a, major, minor) for a in info.archs):
        built = ", ".join("sm_" + a for a in info.archs)
        return False, (f"the compiled module has no kernels for this GPU (sm_{major}{minor}); it was built for "
                       f"{built}. Rebuild with CUTLASS_EXT_CUDA_ARCHS={major}{minor}{'a' if major == 9 else ''}")
    return True, ""


_warned: set[str] = set()


def warn_fallback(reason: str) -> None:
    """Says once per cause that CUDA tensors run on the (correct, slower) reference path."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"cutlass_ext: running the PyTorch reference instead of the compiled kernels: {reason}",
                      RuntimeWarning, stacklevel=3)
