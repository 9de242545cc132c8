// The standalone elementwise chain, torch-free: pointers, shape, strides and a stream in; a CUDA status out.
// cutlass_ext/torch/elementwise_op.cpp checks the tensors and fills ElementwiseArgs; the kernels are in
// elementwise_kernel.cuh, instantiated once per dtype under cutlass_ext/kernels/.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cutlass_ext/chain_program.h"

namespace cutlass_ext {

enum class DType : int32_t { kF32, kBF16, kF16 };

// Ranks above this are made contiguous by the caller first.
constexpr int kMaxElementwiseRank = 8;

struct StridedLayout {
  int32_t rank;
  int64_t sizes[kMaxElementwiseRank];
  int64_t x_strides[kMaxElementwiseRank];  // in elements
  int64_t y_strides[kMaxElementwiseRank];
};

struct ElementwiseArgs {
  const void* x;
  void* y;            // may equal x (in place)
  int64_t numel;
  int64_t features;   // size of the last dimension: what the per-feature vector ops index (1 for a scalar)
  bool contiguous;    // x and y both row-major contiguous: the vectorized path; else `layout` is used
  StridedLayout layout;
};

// The chain's backward pass, out = grad * d chain / dz at z: three contiguous tensors of numel elements.
struct ChainBackwardArgs {
  const void* z;     // the chain's input
  const void* grad;  // the gradient of the chain's output
  void* out;         // the gradient of z; may equal grad
  int64_t numel;
  int64_t features;  // size of the last dimension (the per-feature vector ops)
};

// One instantiation per dtype, each in its own file under cutlass_ext/kernels/.
template <typename Element>
cudaError_t launch_elementwise(const ElementwiseArgs& args, const ChainProgram& program, cudaStream_t stream);
template <typename Element>
cudaError_t launch_chain_backward(const ChainBackwardArgs& args, const ChainProgram& program, cudaStream_t stream);

cudaError_t run_elementwise(DType dtype, const ElementwiseArgs& args, const ChainProgram& program,
                            cudaStream_t stream);
cudaError_t run_chain_backward(DType dtype, const ChainBackwardArgs& args, const ChainProgram& program,
                               cudaStream_t stream);

}  // namespace cutlass_ext
