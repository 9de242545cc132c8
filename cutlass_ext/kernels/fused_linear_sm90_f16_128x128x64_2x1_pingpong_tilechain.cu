#include "cutlass_ext/fused_linear_sm90.cuh"

CUTLASS_EXT_SM90_FUSED_LINEAR(cutlass::half_t, kF16, "f16", 128, 128, 64, 2, 1, PingpongTileChain, kChain)
