#include "cutlass_ext/elementwise_kernel.cuh"

template cudaError_t cutlass_ext::launch_elementwise<float>(const ElementwiseArgs&, const ChainProgram&, cudaStream_t);
template cudaError_t cutlass_ext::launch_chain_backward<float>(const ChainBackwardArgs&, const ChainProgram&, cudaStream_t);
