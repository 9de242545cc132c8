// The standalone elementwise chain kernel: y = chain(x), element by element, fp32 math.
//
// Memory-bound, so the contiguous path is built for bandwidth: 16-byte loads and stores, kUnroll independent
// loads in flight per thread before the first use, a grid-stride loop over a grid sized to the GPU. Anything
// not contiguous, or not 16-byte aligned, takes the strided path (one element per thread, offsets from the
// coordinates), which is correct for any strides, in place included.
#pragma once

#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

#include <algorithm>

#include "cutlass_ext/chain_interpreter.cuh"
#include "cutlass_ext/elementwise.h"

namespace cutlass_ext {
namespace elementwise_detail {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

// Contiguous x and y, kVec elements per access (16 bytes, or 1 element when the pointers are not aligned).
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    contiguous_kernel(const T* x, T* y, int64_t numel, int64_t features, const __grid_constant__ ChainProgram program) {
  using Vec = cutlass::Array<T, kVec>;
  using Fragment = cutlass::Array<float, kVec>;
  cutlass::NumericArrayConverter<float, T, kVec> to_float;
  cutlass::NumericArrayConverter<T, float, kVec> from_float;

  const int64_t num_vecs = numel / kVec;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t first = int64_t(blockIdx.x) * kThreads + threadIdx.x; first < num_vecs; first += stride * kUnroll) {
    Vec in[kUnroll];
    CUTLASS_PRAGMA_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t idx = first + u * stride;
      if (idx < num_vecs) in[u] = reinterpret_cast<const Vec*>(x)[idx];
    }
    CUTLASS_PRAGMA_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t idx = first + u * stride;
      if (idx < num_vecs) {
        Fragment v = to_float(in[u]);
        apply_chain(program, v, [&](int i) { return (idx * kVec + i) % features; });
        reinterpret_cast<Vec*>(y)[idx] = from_float(v);
      }
    }
  }
  // The last numel % kVec elements, one per thread of the first block.
  const int64_t tail = num_vecs * kVec + threadIdx.x;
  if (blockIdx.x == 0 && tail < numel) {
    cutlass::Array<float, 1> v;
    v[0] = float(x[tail]);
    apply_chain(program, v, [&](int) { return tail % features; });
    y[tail] = T(v[0]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    strided_kernel(const T* x, T* y, int64_t numel, const __grid_constant__ StridedLayout layout,
                   const __grid_constant__ ChainProgram program) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < numel; i += stride) {
    int64_t rest = i, x_offset = 0, y_offset = 0, feature = 0;
    for (int d = layout.rank - 1; d >= 0; --d) {
      const int64_t size = layout.sizes[d];
      const int64_t q = rest / size;
      const int64_t coord = rest - q * size;
      if (d == layout.rank - 1) feature = coord;
      x_offset += coord * layout.x_strides[d];
      y_offset += coord * layout.y_strides[d];
      rest = q;
    }
    cutlass::Array<float, 1> v;
    v[0] = float(x[x_offset]);
    apply_chain(program, v, [&](int) { return feature; });
    y[y_offset] = T(v[0]);
  }
}

inline int sm_count() {
  static int counts[64] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device >= 64) return 132;
  if (counts[device] == 0) cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device);
  return counts[device] > 0 ? counts[device] : 132;
}

// Enough blocks to fill every SM several times over; the grid-stride loops cover the rest.
inline int grid_for(int64_t work_items) {
  const int64_t needed = (work_items + kThreads - 1) / kThreads;
  return int(std::max<int64_t>(1, std::min<int64_t>(needed, int64_t(sm_count()) * 16)));
}

}  // namespace elementwise_detail

template <typename Element>
cudaError_t launch_elementwise(const ElementwiseArgs& args, const ChainProgram& program, cudaStream_t stream) {
  using namespace elementwise_detail;
  if (args.numel == 0) return cudaSuccess;
  const auto* x = static_cast<const Element*>(args.x);
  auto* y = static_cast<Element*>(args.y);
  constexpr int kVec = 16 / sizeof(Element);
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  if (args.contiguous && aligned) {
    contiguous_kernel<Element, kVec><<<grid_for((args.numel / kVec + kUnroll - 1) / kUnroll), kThreads, 0, stream>>>(
        x, y, args.numel, args.features, program);
  } else if (args.contiguous) {
    contiguous_kernel<Element, 1><<<grid_for((args.numel + kUnroll - 1) / kUnroll), kThreads, 0, stream>>>(
        x, y, args.numel, args.features, program);
  } else {
    strided_kernel<Element><<<grid_for(args.numel), kThreads, 0, stream>>>(x, y, args.numel, args.layout, program);
  }
  return cudaGetLastError();
}

}  // namespace cutlass_ext
