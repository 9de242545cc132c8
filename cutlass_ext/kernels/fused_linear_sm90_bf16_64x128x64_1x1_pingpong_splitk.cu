#include "cutlass_ext/fused_linear_sm90.cuh"

CUTLASS_EXT_SM90_SPLIT_K_LINEAR(cutlass::bfloat16_t, kBF16, "bf16", 64, 128, 64, 1, 1, Pingpong)
