// The standalone elementwise chain kernel, y = chain(x), and the chain's backward pass, grad_x = grad_y * chain'(x),
// element by element, fp32 math.
//
// Memory-bound, so the contiguous path is built for bandwidth: 16-byte loads and stores, several independent
// loads in flight per thread before the first use, one block per chunk of the tensor. Contiguous
// tensors whose pointers are not 16-byte aligned take the same kernel with one-element accesses; anything else
// takes the strided path (one element per thread, offsets from the coordinates), correct for any strides.
// In place (x == y) is safe on every path: each element is read and then written by the same thread.
#pragma once

#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

#include <algorithm>

#include "cutlass_ext/chain_derivative.cuh"
#include "cutlass_ext/chain_interpreter.cuh"
#include "cutlass_ext/elementwise.h"

namespace cutlass_ext {
namespace elementwise_detail {

constexpr int kThreads = 256;

// Each thread loads kVec * kUnroll elements per iteration, all in flight before the first use, and runs the chain
// over them (the ops decoded once per batch). More values per thread amortize decoding and hide the math of
// exp/erf/tanh chains; fewer leave registers for more resident threads, which a memory-bound chain wants. The
// launch shapes and register caps (kMinBlocks blocks of 256 threads per SM) are set in launch_elementwise.

// The contiguous kernels' accesses: kVec elements per access (16 bytes, or 1 element when the pointers are not
// aligned). A block covers one chunk of kThreads * kUnroll accesses, thread t taking accesses t, t + kThreads, ...:
// neighbouring threads touch neighbouring addresses. The grid has one block per chunk (a persistent grid, one
// block per resident slot looping over chunks, measured 10% slower in fp32); the loop only guards huge tensors.
// A thread's kUnroll accesses from `first` are loaded together (all in flight before the first use), as float.
template <int kVec, int kUnroll, typename T>
__device__ __forceinline__ void load_accesses(const T* p, int64_t first, int64_t num_accesses,
                                              cutlass::Array<float, kVec * kUnroll>& v) {
  // AlignedArray, not Array: an Array is aligned as its element, and accesses through it compiled to 2- and
  // 4-byte loads and stores (docs/perf-notes.md, item 47).
  using Access = cutlass::AlignedArray<T, kVec>;
  cutlass::NumericArrayConverter<float, T, kVec> to_float;
  Access in[kUnroll];
  CUTLASS_PRAGMA_UNROLL
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t idx = first + u * kThreads;
    if (idx < num_accesses) {
      in[u] = reinterpret_cast<const Access*>(p)[idx];
    } else {
      in[u].clear();
    }
  }
  CUTLASS_PRAGMA_UNROLL
  for (int u = 0; u < kUnroll; ++u) {
    const cutlass::Array<float, kVec> f = to_float(in[u]);
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kVec; ++j) v[u * kVec + j] = f[j];
  }
}

template <int kVec, int kUnroll, typename T>
__device__ __forceinline__ void store_accesses(T* p, int64_t first, int64_t num_accesses,
                                               const cutlass::Array<float, kVec * kUnroll>& v) {
  // AlignedArray, not Array: an Array is aligned as its element, and accesses through it compiled to 2- and
  // 4-byte loads and stores (docs/perf-notes.md, item 47).
  using Access = cutlass::AlignedArray<T, kVec>;
  cutlass::NumericArrayConverter<T, float, kVec> from_float;
  CUTLASS_PRAGMA_UNROLL
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t idx = first + u * kThreads;
    cutlass::Array<float, kVec> f;
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kVec; ++j) f[j] = v[u * kVec + j];
    Access out;
    static_cast<cutlass::Array<T, kVec>&>(out) = from_float(f);
    if (idx < num_accesses) reinterpret_cast<Access*>(p)[idx] = out;
  }
}

// The element index of value i of the thread's accesses from `first`.
template <int kVec>
__device__ __forceinline__ int64_t element_of(int64_t first, int i) {
  return (first + (i / kVec) * kThreads) * kVec + i % kVec;
}

// Contiguous x and y.
template <typename T, int kVec, int kUnroll, bool kCheapOnly, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    contiguous_kernel(const T* x, T* y, int64_t numel, int64_t features, const __grid_constant__ ChainProgram program) {
  const int64_t num_accesses = numel / kVec;
  for (int64_t chunk = int64_t(blockIdx.x) * kThreads * kUnroll; chunk < num_accesses;
       chunk += int64_t(gridDim.x) * kThreads * kUnroll) {
    const int64_t first = chunk + threadIdx.x;
    cutlass::Array<float, kVec * kUnroll> v;
    load_accesses<kVec, kUnroll>(x, first, num_accesses, v);
    auto element = [&](int i) { return element_of<kVec>(first, i); };
    // The residual op rereads its input (cached, and not yet overwritten when in place) rather than keeping the
    // loaded values alive in registers through the whole chain.
    apply_chain<precision_for<T>, kCheapOnly>(program, v, [&](int i) { return element(i) % features; },
                            [&](int i) { return float(x[element(i)]); });
    store_accesses<kVec, kUnroll>(y, first, num_accesses, v);
  }
  // The last numel % kVec elements, one per thread of the first block.
  const int64_t tail = num_accesses * kVec + threadIdx.x;
  if (blockIdx.x == 0 && tail < numel) {
    cutlass::Array<float, 1> v;
    const T in = x[tail];
    v[0] = float(in);
    apply_chain<precision_for<T>, kCheapOnly>(program, v, [&](int) { return tail % features; },
                                              [&](int) { return float(in); });
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
    const T in = x[x_offset];
    v[0] = float(in);
    apply_chain<precision_for<T>>(program, v, [&](int) { return feature; }, [&](int) { return float(in); });
    y[y_offset] = T(v[0]);
  }
}

// The backward pass over contiguous z (the chain's input, saved by the forward pass), grad and out: out = grad *
// d chain / dz with autograd's special values (apply_chain_derivative). Bound by its math and by how many warps
// hide its latency: 4 blocks an SM (64 registers, 24-48 bytes of spill) measured up to 7% faster than the 72-80
// registers and 3 blocks ptxas picks alone (bf16 chains and float32 swish; a tie for float32 gelu;
// docs/perf-notes.md, item 39).
template <typename T, int kVec, int kUnroll>
__global__ void __launch_bounds__(kThreads, 4)
    chain_backward_kernel(const T* z, const T* grad, T* out, int64_t numel, int64_t features,
                          const __grid_constant__ ChainProgram program) {
  constexpr int kElementsPerThread = kVec * kUnroll;
  const int64_t num_accesses = numel / kVec;
  for (int64_t chunk = int64_t(blockIdx.x) * kThreads * kUnroll; chunk < num_accesses;
       chunk += int64_t(gridDim.x) * kThreads * kUnroll) {
    const int64_t first = chunk + threadIdx.x;
    cutlass::Array<float, kElementsPerThread> v, g;
    load_accesses<kVec, kUnroll>(z, first, num_accesses, v);
    load_accesses<kVec, kUnroll>(grad, first, num_accesses, g);
    ChainGradient maps[kElementsPerThread];
    apply_chain_derivative(program, v, maps, [&](int i) { return element_of<kVec>(first, i) % features; });
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kElementsPerThread; ++i) g[i] = maps[i].of(g[i]);
    store_accesses<kVec, kUnroll>(out, first, num_accesses, g);
  }
  const int64_t tail = num_accesses * kVec + threadIdx.x;  // the last numel % kVec elements
  if (blockIdx.x == 0 && tail < numel) {
    cutlass::Array<float, 1> v;
    v[0] = float(z[tail]);
    ChainGradient map[1];
    apply_chain_derivative(program, v, map, [&](int) { return tail % features; });
    out[tail] = T(map[0].of(float(grad[tail])));
  }
}

// One block per chunk of work, capped at the largest grid a launch takes (the kernels loop past it).
inline int grid_for(int64_t work, int64_t work_per_block) {
  return int(std::min<int64_t>((work + work_per_block - 1) / work_per_block, 0x7fffffff));
}

}  // namespace elementwise_detail

template <typename Element>
cudaError_t launch_elementwise(const ElementwiseArgs& args, const ChainProgram& program, cudaStream_t stream) {
  using namespace elementwise_detail;
  if (args.numel == 0) return cudaSuccess;
  const auto* x = static_cast<const Element*>(args.x);
  auto* y = static_cast<Element*>(args.y);
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  constexpr int kVec = 16 / sizeof(Element);
  // Measured on an H200 (docs/perf-notes.md, elementwise kernel and item 46), of copy bandwidth:
  // - chains of cheap ops only (op_is_cheap), with an interpreter that holds only their code: one 16-byte access
  //   per thread for one op (32 registers, 8 blocks an SM: hardtanh 99% in bf16, 100% in float32), two for longer
  //   chains (40 registers, 6 blocks: mul | add | clamp 98% in bf16), where decoding each op per access costs;
  // - chains with transcendentals: 16 values per thread, 5 blocks (mul | hardtanh | gelu 94% in float32; bf16
  //   chains are bound by their math, 71-80%).
  // The full interpreter's exp/erf/tanh code alone held bf16 hardtanh to 87%: it sets the register count.
  const bool cheap = chain_is_cheap(program);
  if (args.contiguous && aligned && cheap && program.num_ops <= 1) {
    contiguous_kernel<Element, kVec, 1, true, 8><<<grid_for(args.numel, kThreads * kVec), kThreads, 0, stream>>>(
        x, y, args.numel, args.features, program);
  } else if (args.contiguous && aligned && cheap) {
    contiguous_kernel<Element, kVec, 2, true, 6><<<grid_for(args.numel, kThreads * kVec * 2), kThreads, 0, stream>>>(
        x, y, args.numel, args.features, program);
  } else if (args.contiguous && aligned) {
    constexpr int kUnroll = 16 / kVec;
    contiguous_kernel<Element, kVec, kUnroll, false, 5><<<grid_for(args.numel, kThreads * 16), kThreads, 0, stream>>>(
        x, y, args.numel, args.features, program);
  } else if (args.contiguous) {
    contiguous_kernel<Element, 1, 8, false, 6><<<grid_for(args.numel, kThreads * 8), kThreads, 0, stream>>>(
        x, y, args.numel, args.features, program);
  } else {
    strided_kernel<Element><<<grid_for(args.numel, kThreads), kThreads, 0, stream>>>(
        x, y, args.numel, args.layout, program);
  }
  return cudaGetLastError();
}

// 8 values per thread (two 16-byte accesses per tensor in float32, one in bf16/fp16), or 8 one-element accesses
// when a pointer is not 16-byte aligned. 16 bf16 values per thread, as in the forward kernel, took 1.4-1.6x the
// time (docs/perf-notes.md, item 38): the derivatives' math bounds this kernel, and fewer resident warps hid less.
template <typename Element>
cudaError_t launch_chain_backward(const ChainBackwardArgs& args, const ChainProgram& program, cudaStream_t stream) {
  using namespace elementwise_detail;
  if (args.numel == 0) return cudaSuccess;
  const auto* z = static_cast<const Element*>(args.z);
  const auto* grad = static_cast<const Element*>(args.grad);
  auto* out = static_cast<Element*>(args.out);
  const bool aligned = (reinterpret_cast<uintptr_t>(z) | reinterpret_cast<uintptr_t>(grad) |
                        reinterpret_cast<uintptr_t>(out)) % 16 == 0;
  constexpr int kVec = 16 / sizeof(Element);
  if (aligned) {
    constexpr int kUnroll = 8 / kVec;
    chain_backward_kernel<Element, kVec, kUnroll><<<grid_for(args.numel, kThreads * 8), kThreads, 0, stream>>>(
        z, grad, out, args.numel, args.features, program);
  } else {
    chain_backward_kernel<Element, 1, 8><<<grid_for(args.numel, kThreads * 8), kThreads, 0, stream>>>(
        z, grad, out, args.numel, args.features, program);
  }
  return cudaGetLastError();
}

}  // namespace cutlass_ext
