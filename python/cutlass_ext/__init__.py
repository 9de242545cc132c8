"""cutlass_ext: nn.Linear and the elementwise tail after it as one CUTLASS GEMM, for PyTorch.

    import cutlass_ext
    y = cutlass_ext.elementwise(x, "mul(0.5) | hardtanh(-2, 2) | gelu")
    print(cutlass_ext.native_info())      # is the compiled module loaded, for which GPUs, and if not, why

`python -m cutlass_ext` prints a report of the install and checks it on the GPU.
"""

from ._native import NativeInfo, native_info
from .epilogue import MAX_OPS, MAX_VECTORS, OPS, Epilogue, Op, as_epilogue
from .ops import Path, elementwise, elementwise_path

__version__ = "0.1.0"

__all__ = [
    "MAX_OPS", "MAX_VECTORS", "OPS", "Epilogue", "NativeInfo", "Op", "Path",
    "as_epilogue", "elementwise", "elementwise_path", "native_info",
]
