"""`python -m cutlass_ext`: what is installed, whether the compiled kernels load and fit this GPU, and a check
that they compute what the reference computes."""

import sys

import torch

import cutlass_ext
from cutlass_ext import _native


def main() -> int:
    print(f"cutlass_ext {cutlass_ext.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    info = cutlass_ext.native_info()
    print(info)
    if not torch.cuda.is_available():
        print("GPU: none visible; the reference path (torch ops) runs on the CPU")
        return 0
    device = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name(device)}, sm_{''.join(map(str, torch.cuda.get_device_capability()))}")
    ok, why = _native.device_support(device)
    if not ok:
        print(f"native kernels: NOT usable here: {why}")
        return 1
    epi = cutlass_ext.Epilogue("mul(0.5) | hardtanh(-2, 2) | gelu")
    x = torch.randn(1000, 1027, device=device, dtype=torch.bfloat16)
    got = cutlass_ext.elementwise(x, epi)
    want = epi.reference(x)
    good = torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-2)
    print(f"native kernels: usable; check of elementwise('{epi}'): {'OK' if good else 'MISMATCH'}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
