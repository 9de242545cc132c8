// Builds the device ChainProgram from the op schema's arguments (device op names, two parameters per op, the
// per-feature vectors in the order the ops use them), checking everything the kernels rely on.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "cutlass_ext/chain_program.h"
#include "cutlass_ext/elementwise.h"  // DType

namespace cutlass_ext {

// features: the length every vector must have (the output's last dimension). device: where they must live.
ChainProgram make_chain_program(c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                                at::TensorList vectors, int64_t features, c10::Device device);

// The kernels' dtype for a tensor's (float32, bfloat16 or float16); where: the op's name in the error.
DType kernel_dtype(c10::ScalarType t, const char* where);

// One per-feature vector, checked the same way (what: its name in the error messages).
ChainVector make_chain_vector(const at::Tensor& v, int64_t features, c10::Device device, const std::string& what);

}  // namespace cutlass_ext
