// The normalization stage of a chain, torch-free: y = post_chain(group_norm(x)) over the last dimension of a
// row-major [rows, features] tensor, in one pass that reads x once and writes y once.
//
// It serves the norms that the GEMM's own epilogue does not take (group_norm_epilogue_sm90.hpp: bf16/fp16 and
// groups of 256 or 512 features): float32, other group sizes, and the elementwise API. Statistics gathered in the
// GEMM epilogue with atomics would not save its traffic (it must read the pre-norm values and write the result
// either way); computed here from the values held in registers they cost no memory traffic, need no atomics and
// no zeroed workspace, and are the exact two-pass variance of the values as stored, which is what torch computes
// on the GEMM's rounded output (docs/perf-notes.md, "GroupNorm stage").
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cutlass_ext/chain_program.h"
#include "cutlass_ext/elementwise.h"  // DType

namespace cutlass_ext {

struct GroupNormArgs {
  const void* x;      // rows x features, contiguous
  void* y;            // same shape, contiguous; may equal x
  int64_t rows;
  int64_t features;   // divisible by groups
  int64_t groups;
  float eps;
  ChainVector weight; // gamma[feature], or data == nullptr for 1
  ChainVector bias;   // beta[feature], or data == nullptr for 0
};

// The largest group (features / groups) the kernel holds in registers (1024 threads x 16 values). Larger groups
// are the caller's to run otherwise (the torch reference).
constexpr int64_t kMaxGroupNormGroupSize = 16384;

// Every element of x: v = (x - mean) * rstd * gamma + beta over its (row, group), mean and biased variance in fp32,
// rstd = rsqrt(var + eps) (torch's GroupNorm), then the post-chain `program`, whose per-feature vectors and v0 see
// the normalized value and its feature. In cutlass_ext/src/group_norm_launch.cpp.
template <typename Element>
cudaError_t launch_group_norm(const GroupNormArgs& args, const ChainProgram& program, cudaStream_t stream);
cudaError_t run_group_norm(DType dtype, const GroupNormArgs& args, const ChainProgram& program, cudaStream_t stream);

}  // namespace cutlass_ext
