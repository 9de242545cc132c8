#include "cutlass_ext/group_norm_kernel.cuh"

template cudaError_t cutlass_ext::launch_group_norm<cutlass::half_t>(const GroupNormArgs&, const ChainProgram&, cudaStream_t);
