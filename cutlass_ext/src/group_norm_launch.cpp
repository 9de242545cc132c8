#include "cutlass_ext/group_norm.h"

#include <cutlass/numeric_types.h>

namespace cutlass_ext {

cudaError_t run_group_norm(DType dtype, const GroupNormArgs& args, const ChainProgram& program, cudaStream_t stream) {
  switch (dtype) {
    case DType::kF32: return launch_group_norm<float>(args, program, stream);
    case DType::kBF16: return launch_group_norm<cutlass::bfloat16_t>(args, program, stream);
    case DType::kF16: return launch_group_norm<cutlass::half_t>(args, program, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cutlass_ext
