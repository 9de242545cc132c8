#include "cutlass_ext/elementwise_kernel.cuh"

template cudaError_t cutlass_ext::launch_elementwise<float>(const ElementwiseArgs&, const ChainProgram&, cudaStream_t);
