#include "cutlass_ext/elementwise_kernel.cuh"

template cudaError_t cutlass_ext::launch_elementwise<cutlass::half_t>(const ElementwiseArgs&, const ChainProgram&, cudaStream_t);
template cudaError_t cutlass_ext::launch_chain_backward<cutlass::half_t>(const ChainBackwardArgs&, const ChainProgram&, cudaStream_t);
