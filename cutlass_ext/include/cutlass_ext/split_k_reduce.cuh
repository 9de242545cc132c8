// The second half of a split-K configuration (SplitKLinear in fused_linear_sm90.cuh):
//   out[m, n] = chain(partials[0][m, n] + ... + partials[S-1][m, n] + bias[n]), cast to the output dtype.
// The S float32 slices are added in order s = 0, 1, ..., S-1, so a call gives the same bits every time; then the
// bias and the chain in fp32, as the GEMM epilogues do (v0 for `residual` is the sum plus the bias).
#pragma once

#include <cuda_runtime.h>

#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

#include <cstdint>

#include "cutlass_ext/chain_interpreter.cuh"

namespace cutlass_ext {
namespace split_k_detail {

constexpr int kThreads = 256;
// 8 consecutive features per thread: two 16-byte loads per slice and one 16-byte store of 16-bit outputs. The fused
// path takes N a multiple of 8 (16-byte rows for TMA), so a thread's features are all in the row.
constexpr int kVec = 8;

template <class Element>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(const float* __restrict__ partials, int splits, int m, int n, const Element* __restrict__ bias,
                  Element* __restrict__ out, int64_t ldo, const __grid_constant__ ChainProgram program) {
  using Values = cutlass::AlignedArray<float, kVec, 32>;
  using Output = cutlass::AlignedArray<Element, kVec, 16>;
  // Launched as a programmatic dependent of the GEMM (below): wait here until its partials are written.
  asm volatile("griddepcontrol.wait;" ::: "memory");
  const int64_t per_row = n / kVec;
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= int64_t(m) * per_row) return;
  const int64_t row = i / per_row;
  const int col = int(i - row * per_row) * kVec;
  const int64_t slice = int64_t(m) * n;
  const Values* p = reinterpret_cast<const Values*>(partials + row * n + col);
  cutlass::Array<float, kVec> v = p[0];
#pragma unroll 4
  for (int s = 1; s < splits; ++s) {
    const Values part = p[s * slice / kVec];
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kVec; ++j) v[j] += part[j];
  }
  if (bias != nullptr) {
    const cutlass::Array<float, kVec> b =
        cutlass::NumericArrayConverter<float, Element, kVec>{}(*reinterpret_cast<const Output*>(bias + col));
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kVec; ++j) v[j] += b[j];
  }
  const cutlass::Array<float, kVec> v0 = v;
  apply_chain<precision_for<Element>>(program, v, [&](int j) { return unsigned(col + j); },
                                      [&](int j) { return v0[j]; });
  Output y;
  static_cast<cutlass::Array<Element, kVec>&>(y) = cutlass::NumericArrayConverter<Element, float, kVec>{}(v);
  *reinterpret_cast<Output*>(out + row * ldo + col) = y;
}

}  // namespace split_k_detail

// partials: `splits` slices of m x n float32, contiguous, 32-byte aligned; bias: n values or nullptr; out: m x n,
// row stride ldo; n, ldo and the pointers 16-byte aligned (multiples of 8 elements). sm_90 and later.
//
// Launched with programmatic stream serialization: the launch and the blocks' start overlap the end of the kernel
// before it in the stream (the GEMM that writes the partials), and griddepcontrol.wait holds each block until that
// kernel has finished and its writes are visible. Measured against a plain launch (H200, perf-notes item 29): 1-2 us
// less a call, out of 10-30 us (128x1024x8192: 0.89x F.linear's time against 0.99x).
template <class Element>
cudaError_t launch_split_k_reduce(const float* partials, int splits, int m, int n, const Element* bias, Element* out,
                                  int64_t ldo, const ChainProgram& program, cudaStream_t stream) {
  using namespace split_k_detail;
  const int64_t threads = int64_t(m) * (n / kVec);
  if (threads == 0) return cudaSuccess;
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(unsigned(blocks));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, reduce_kernel<Element>, partials, splits, m, n, bias, out, ldo, program);
}

}  // namespace cutlass_ext
