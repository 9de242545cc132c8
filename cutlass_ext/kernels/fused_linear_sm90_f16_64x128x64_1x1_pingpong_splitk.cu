#include "cutlass_ext/fused_linear_sm90.cuh"

CUTLASS_EXT_SM90_SPLIT_K_LINEAR(cutlass::half_t, kF16, "f16", 64, 128, 64, 1, 1, Pingpong)
