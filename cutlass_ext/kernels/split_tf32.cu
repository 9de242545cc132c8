// split_tf32 (declared in fused_linear.h): float32 -> [hi | lo] (or [lo | hi]) TF32 pairs for the
// split-precision GEMM. Memory-bound: one read, two writes, 16 bytes per thread and access.
#include <cstdint>

#include "cutlass_ext/fused_linear.h"

namespace cutlass_ext {
namespace {

// Round to the nearest TF32 value (10 explicit mantissa bits), ties away from zero, by adding half a TF32 ulp to
// the bit pattern and clearing the 13 low bits; a carry into the exponent is the correct round-up. A finite
// value that would round to inf is truncated instead. Only called on finite values.
__device__ __forceinline__ float round_to_tf32(float v) {
  const uint32_t bits = __float_as_uint(v);
  const float rounded = __uint_as_float((bits + 0x1000u) & 0xffffe000u);
  return isinf(rounded) ? __uint_as_float(bits & 0xffffe000u) : rounded;
}

__global__ void split_tf32_kernel(const float* __restrict__ in, int64_t ld_in, int64_t rows, int64_t vecs_per_row,
                                  float* __restrict__ out, int64_t ld_out, bool lo_first) {
  const int64_t cols = vecs_per_row * 4;
  const int64_t total = rows * vecs_per_row;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / vecs_per_row, col = (i - row * vecs_per_row) * 4;
    const float4 v4 = *reinterpret_cast<const float4*>(in + row * ld_in + col);
    const float v[4] = {v4.x, v4.y, v4.z, v4.w};
    float hi[4], lo[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bool finite = isfinite(v[j]);
      hi[j] = finite ? round_to_tf32(v[j]) : v[j];
      lo[j] = finite ? round_to_tf32(v[j] - hi[j]) : 0.0f;  // v - hi is exact; lo keeps its top 11 bits
    }
    float* const dst = out + row * ld_out + col;
    *reinterpret_cast<float4*>(dst + (lo_first ? cols : 0)) = make_float4(hi[0], hi[1], hi[2], hi[3]);
    *reinterpret_cast<float4*>(dst + (lo_first ? 0 : cols)) = make_float4(lo[0], lo[1], lo[2], lo[3]);
  }
}

}  // namespace

cudaError_t split_tf32(const float* in, int64_t ld_in, int64_t rows, int64_t cols, float* out, int64_t ld_out,
                       bool lo_first, cudaStream_t stream) {
  const int64_t vecs = rows * (cols / 4);
  if (vecs == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = (vecs + kThreads - 1) / kThreads;
  const int grid = int(blocks < 65536 ? blocks : 65536);  // grid-stride beyond
  split_tf32_kernel<<<grid, kThreads, 0, stream>>>(in, ld_in, rows, cols / 4, out, ld_out, lo_first);
  return cudaGetLastError();
}

}  // namespace cutlass_ext
