"""cutlass_ext: nn.Linear and the elementwise tail after it as one CUTLASS GEMM, for PyTorch.

    import cutlass_ext
    y = cutlass_ext.linear(x, weight, bias, "mul(0.5) | hardtanh(-2, 2) | gelu")   # one GEMM on Hopper
    layer = cutlass_ext.nn.FusedLinear.from_linear(linear, "gelu")                  # a drop-in nn.Linear
    fused = cutlass_ext.fuse(model)       # every Linear + elementwise tail of a model, found by torch.fx
    y = cutlass_ext.elementwise(x, "mul(0.5) | hardtanh(-2, 2) | gelu")            # the chain alone
    print(cutlass_ext.native_info())      # is the compiled module loaded, for which GPUs, and if not, why

`python -m cutlass_ext` prints a report of the install and checks it on the GPU.
"""

from . import autotune, fx, nn
from ._native import NativeInfo, native_info
from .epilogue import MAX_OPS, MAX_VECTORS, OPS, Epilogue, Op, as_epilogue
from .fx import fuse
from .ops import PRECISIONS, Path, clear_weight_cache, elementwise, elementwise_path, linear, linear_path

__version__ = "0.1.0"

# Load the compiled module now (it never raises: native_info() records why it could not), so that the torch ops
# torch.ops.cutlass_ext.* exist as soon as the package is imported.
native_info()

__all__ = [
    "MAX_OPS", "MAX_VECTORS", "OPS", "PRECISIONS", "Epilogue", "NativeInfo", "Op", "Path",
    "as_epilogue", "autotune", "clear_weight_cache", "elementwise", "elementwise_path", "fuse", "fx", "linear",
    "linear_path", "native_info", "nn",
]
