#include "cutlass_ext/fused_linear_sm90.cuh"

CUTLASS_EXT_SM90_FUSED_LINEAR(float, kF32, "tf32", 128, 256, 32, 2, 1, CooperativeDeferred, kChain)
