#include "cutlass_ext/elementwise_kernel.cuh"

template cudaError_t cutlass_ext::launch_elementwise<cutlass::bfloat16_t>(const ElementwiseArgs&, const ChainProgram&, cudaStream_t);
