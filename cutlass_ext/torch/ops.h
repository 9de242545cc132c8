// The CUDA implementations of the torch ops that library.cpp registers.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace cutlass_ext {

at::Tensor elementwise(const at::Tensor& x, c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                       at::TensorList vectors);
void elementwise_out(const at::Tensor& x, c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                     at::TensorList vectors, const at::Tensor& out);

}  // namespace cutlass_ext
