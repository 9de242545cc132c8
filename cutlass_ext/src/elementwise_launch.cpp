#include "cutlass_ext/elementwise.h"

#include <cutlass/numeric_types.h>

namespace cutlass_ext {

cudaError_t run_elementwise(DType dtype, const ElementwiseArgs& args, const ChainProgram& program,
                            cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32: return launch_elementwise<float>(args, program, stream);
    case DType::kBF16: return launch_elementwise<cutlass::bfloat16_t>(args, program, stream);
    case DType::kF16: return launch_elementwise<cutlass::half_t>(args, program, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t run_chain_backward(DType dtype, const ChainBackwardArgs& args, const ChainProgram& program,
                               cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32: return launch_chain_backward<float>(args, program, stream);
    case DType::kBF16: return launch_chain_backward<cutlass::bfloat16_t>(args, program, stream);
    case DType::kF16: return launch_chain_backward<cutlass::half_t>(args, program, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cutlass_ext
