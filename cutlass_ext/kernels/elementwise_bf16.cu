#include "cutlass_ext/elementwise_kernel.cuh"

template cudaError_t cutlass_ext::launch_elementwise<cutlass::bfloat16_t>(const ElementwiseArgs&, const ChainProgram&, cudaStream_t);
template cudaError_t cutlass_ext::launch_chain_backward<cutlass::bfloat16_t>(const ChainBackwardArgs&, const ChainProgram&, cudaStream_t);
