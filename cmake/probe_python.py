"""Prints what the CMake build needs to know about torch and CUTLASS, as `key=value` lines.

Run by CMakeLists.txt with the interpreter that runs the build. Nothing here imports nvidia-cutlass
(its package pulls in cuda-python); importlib finds its folder without running it.
"""
import importlib.util
import os
import sys


def emit(key, value):
    print(f"{key}={value}")


def probe_cutlass():
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return
    root = os.path.join(list(spec.submodule_search_locations)[0], "source")
    if os.path.isfile(os.path.join(root, "include", "cutlass", "cutlass.h")):
        emit("CUTLASS_SOURCE_DIR", root)


def probe_torch():
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as e:  # noqa: BLE001 - any failure means "no usable torch here"
        emit("TORCH_ERROR", f"{type(e).__name__}: {e}".replace("\n", " "))
        return
    emit("TORCH_VERSION", torch.__version__)
    emit("TORCH_CUDA_VERSION", torch.version.cuda or "")
    emit("TORCH_CXX11_ABI", int(torch._C._GLIBCXX_USE_CXX11_ABI))
    emit("TORCH_INCLUDE_DIRS", ";".join(cpp_extension.include_paths()))
    emit("TORCH_LIBRARY_DIR", os.path.join(os.path.dirname(torch.__file__), "lib"))
    if torch.version.cuda and torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        emit("GPU_CAPABILITIES", ";".join(f"{a}{b}" for a, b in caps))


if __name__ == "__main__":
    what = sys.argv[1]
    probe_cutlass() if what == "cutlass" else probe_torch()
