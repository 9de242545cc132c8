#include "cutlass_ext/fused_linear_sm90.cuh"

CUTLASS_EXT_SM90_FUSED_LINEAR(cutlass::bfloat16_t, kBF16, "bf16", 128, 128, 64, 2, 1, PingpongTileChain, kChain)
