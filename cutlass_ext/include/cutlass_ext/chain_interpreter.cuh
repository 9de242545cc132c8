// Runs a ChainProgram over a thread's fragment of N values, in fp32.
//
// The op loop is outside the element loop: each op is decoded once per fragment, not once per element, and the
// switch is on a value that is the same for every thread of the launch (no divergence). The math of each op
// lives in epilogue_ops.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cutlass/array.h>
#include <cutlass/numeric_types.h>

#include <type_traits>

#include "cutlass_ext/chain_program.h"
#include "cutlass_ext/epilogue_ops.cuh"

namespace cutlass_ext {

// Index: unsigned where every feature index fits (the GEMM epilogues: no sign extension to 64 bits), int64_t
// elsewhere.
template <class Index>
__device__ __forceinline__ float load_vector_element(const ChainVector& vec, Index feature) {
  switch (vec.dtype) {
    case ChainVectorDtype::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(vec.data)[feature]);
    case ChainVectorDtype::kF16:
      return __half2float(static_cast<const __half*>(vec.data)[feature]);
    default:
      return static_cast<const float*>(vec.data)[feature];
  }
}

// The op forms for a chain whose result is rounded to Element (epilogue_ops.cuh, Precision): the 16-bit ones only
// where nothing but that rounding follows.
template <class Element>
constexpr ops::Precision precision_for =
    std::is_same_v<Element, cutlass::bfloat16_t> || std::is_same_v<Element, __nv_bfloat16> ? ops::Precision::kBFloat16
    : std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, __half>           ? ops::Precision::kFloat16
                                                                                            : ops::Precision::kFloat32;

// Which ops an interpreter compiles. A kernel's register count is set by the costliest op its switch holds, whether
// it runs or not (docs/perf-notes.md, item 46), and a GEMM epilogue's code size by every op it unrolls.
enum class OpSet {
  kAll,
  kCheap,   // op_is_cheap: a memory-bound kernel's cheap chains, the tile interpreter's inline ops
  kCostly,  // !op_is_cheap: the tile interpreter's out-of-line ops
};

// Passed as feature_of or v0_of by a caller that has neither (the tile interpreter): the ops that read them trap.
struct Unavailable {
  __device__ float operator()(int) const { return 0.f; }
};

// One op over a thread's fragment of N values, in fp32; the one dispatch of every interpreter below.
// v: the fragment, in and out. feature_of(i): the output-feature index (column) of element i, called only by the
// per-feature vector ops. v0_of(i): the chain's input for element i, called only by kResidual; a caller that
// still holds its input (the elementwise kernel's loaded values) rereads it there instead of keeping a copy of
// the fragment in registers for the whole chain. An op outside kOps is not compiled: callers dispatch on
// op_is_cheap first, and trap on an op they do not hold (a dispatch bug, never a skipped op). P: the ops' forms
// (precision_for the output element).
template <ops::Precision P, OpSet kOps, int N, class FeatureOf, class InputOf>
__device__ __forceinline__ void apply_op(const ChainOp& op, const ChainVector* vectors, cutlass::Array<float, N>& v,
                                         FeatureOf feature_of, InputOf v0_of) {
  constexpr bool kCheap = kOps != OpSet::kCostly, kCostly = kOps != OpSet::kCheap;
  constexpr bool kHasFeatures = !std::is_same_v<FeatureOf, Unavailable>;
  constexpr bool kHasInput = !std::is_same_v<InputOf, Unavailable>;
  auto each = [&v](auto f) {
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) v[i] = f(v[i], i);
  };
  auto each_cheap = [&each](auto f) {
    if constexpr (kCheap) each(f);
  };
  auto each_costly = [&each](auto f) {
    if constexpr (kCostly) each(f);
  };
  const float a = op.a, b = op.b;
  switch (op.code) {
    case ChainOpCode::kAdd: each_cheap([a](float x, int) { return ops::add(x, a); }); break;
    case ChainOpCode::kMul: each_cheap([a](float x, int) { return ops::mul(x, a); }); break;
    case ChainOpCode::kClamp: case ChainOpCode::kHardtanh: case ChainOpCode::kRelu:
      each_cheap([a, b](float x, int) { return ops::clamp(x, a, b); });
      break;
    case ChainOpCode::kLeakyRelu: each_cheap([a](float x, int) { return ops::leaky_relu(x, a); }); break;
    case ChainOpCode::kGelu: each_costly([](float x, int) { return ops::gelu<P>(x); }); break;
    case ChainOpCode::kGeluTanh: each_costly([](float x, int) { return ops::gelu_tanh(x); }); break;
    case ChainOpCode::kSilu: each_costly([](float x, int) { return ops::silu<P>(x); }); break;
    case ChainOpCode::kSigmoid: each_costly([](float x, int) { return ops::sigmoid<P>(x); }); break;
    case ChainOpCode::kTanh: each_costly([](float x, int) { return ops::tanh<P>(x); }); break;
    case ChainOpCode::kMish: each_costly([](float x, int) { return ops::mish<P>(x); }); break;
    case ChainOpCode::kSoftplus: each_costly([a, b](float x, int) { return ops::softplus(x, a, b); }); break;
    case ChainOpCode::kElu: each_costly([a](float x, int) { return ops::elu(x, a); }); break;
    case ChainOpCode::kHardswish: each_cheap([](float x, int) { return ops::hardswish(x); }); break;
    case ChainOpCode::kHardsigmoid: each_cheap([](float x, int) { return ops::hardsigmoid(x); }); break;
    case ChainOpCode::kAbs: each_cheap([](float x, int) { return ops::abs(x); }); break;
    case ChainOpCode::kNeg: each_cheap([](float x, int) { return ops::neg(x); }); break;
    case ChainOpCode::kAddVector:
      if constexpr (kHasFeatures) {
        const ChainVector vec = vectors[op.vector];
        each_cheap([&](float x, int i) { return x + load_vector_element(vec, feature_of(i)); });
      } else {
        __trap();
      }
      break;
    case ChainOpCode::kMulVector:
      if constexpr (kHasFeatures) {
        const ChainVector vec = vectors[op.vector];
        each_cheap([&](float x, int i) { return x * load_vector_element(vec, feature_of(i)); });
      } else {
        __trap();
      }
      break;
    case ChainOpCode::kResidual:
      if constexpr (kHasInput) {
        each_cheap([&](float x, int i) { return ops::residual(x, v0_of(i), a); });
      } else {
        __trap();
      }
      break;
  }
}

// The chain over a thread's fragment, one op after another (the op loop outside the element loop: each op is
// decoded once per fragment, not once per element). Arguments as apply_op's.
// kCheapOnly: compile only the ops for which op_is_cheap holds, for callers that dispatch on chain_is_cheap (the
// memory-bound kernels: item 46).
template <ops::Precision P, bool kCheapOnly = false, int N, class FeatureOf, class InputOf>
__device__ __forceinline__ void apply_chain(const ChainProgram& program, cutlass::Array<float, N>& v,
                                            FeatureOf feature_of, InputOf v0_of) {
  for (int k = 0; k < program.num_ops; ++k) {
    const ChainOp op = program.ops[k];  // one 16-byte load
    if constexpr (kCheapOnly) {
      if (!op_is_cheap(op.code)) __trap();  // uniform
    }
    apply_op<P, kCheapOnly ? OpSet::kCheap : OpSet::kAll>(op, program.vectors, v, feature_of, v0_of);
  }
}

// A costly op over N values, out of line: apply_chain_to_tile's transcendentals, one copy per kernel. The op comes
// as scalars: a ChainOp by value (16-byte aligned) made ptxas pass the values through local memory.
template <ops::Precision P, int N>
__device__ __noinline__ cutlass::Array<float, N> apply_costly_op_outlined(ChainOpCode code, float a, float b,
                                                                         cutlass::Array<float, N> v) {
  apply_op<P, OpSet::kCostly>(ChainOp{code, 0, a, b}, nullptr, v, Unavailable{}, Unavailable{});
  return v;
}

// The chain over a thread's whole output tile in registers (the GEMM epilogues' accumulators, e.g. 128 values), each
// op decoded once per tile. Cheap ops run inline over all N values; costly ones out of line, kChunk values a call
// (their code unrolled over the tile would be ~2K instructions an op). Why: run a subtile at a time, as CUTLASS's
// epilogue visits it, the interpreter decoded every op once per 16 or 32 values behind a load, a branch tree and an
// indirect branch, and paid the call's moves for every op (docs/perf-notes.md, items 27 and 45).
// Only chains that read neither a per-feature vector nor their input (program.reads == 0): 128 feature indices or a
// copy of the tile would not fit in registers beside it; the others trap. Callers run them with
// apply_chain_by_chunks (below).
template <ops::Precision P, int kChunk, int N>
__device__ __forceinline__ void apply_chain_to_tile(const ChainProgram& program, cutlass::Array<float, N>& v) {
  static_assert(N % kChunk == 0, "whole chunks");
  for (int k = 0; k < program.num_ops; ++k) {
    const ChainOp op = program.ops[k];
    if (op_is_cheap(op.code)) {  // uniform
      apply_op<P, OpSet::kCheap>(op, program.vectors, v, Unavailable{}, Unavailable{});
      continue;
    }
    CUTLASS_PRAGMA_UNROLL
    for (int c = 0; c < N; c += kChunk) {
      cutlass::Array<float, kChunk> chunk;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kChunk; ++i) chunk[i] = v[c + i];
      chunk = apply_costly_op_outlined<P>(op.code, op.a, op.b, chunk);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kChunk; ++i) v[c + i] = chunk[i];
    }
  }
}

// The same, out of line, for the GEMM epilogues: CUTLASS unrolls its loop over epilogue subtiles, so an inlined
// interpreter (every op's code, unrolled over the fragment) is copied once per subtile: ~80K instructions in the
// 128x128 kernel, which thrashed the instruction cache and made the chain cost more than the GEMM itself
// (docs/perf-notes.md, "fused Linear"). One out-of-line copy per kernel, called with the fragment and its output
// features (columns) in registers, keeps the code small.
// features: read only when program.reads has kReadsFeatures; callers fill them only then. v0 for kResidual is the
// fragment as passed in, copied only when program.reads has kReadsInput (no chain without a residual keeps it).
template <ops::Precision P, int N>
__device__ __noinline__ cutlass::Array<float, N> apply_chain_outlined(const ChainProgram& program,
                                                                     cutlass::Array<float, N> v,
                                                                     cutlass::Array<int, N> features) {
  cutlass::Array<float, N> v0;
  if (program.reads & kReadsInput) v0 = v;  // uniform
  apply_chain<P>(program, v, [&](int i) { return unsigned(features[i]); }, [&](int i) { return v0[i]; });
  return v;
}

// The whole chain kChunk values at a time, each call out of line (apply_chain_outlined): for a GEMM tile in registers
// too large for a copy of its input or its feature indices beside it (the whole-tile epilogue's chains that read a
// vector or their input, the GroupNorm epilogue's pre-chain). feature_of(i): value i's output feature, called only
// for chains that read a vector.
template <ops::Precision P, int kChunk, int N, class FeatureOf>
__device__ __forceinline__ void apply_chain_by_chunks(const ChainProgram& program, cutlass::Array<float, N>& v,
                                                      FeatureOf feature_of) {
  static_assert(N % kChunk == 0, "whole chunks");
  CUTLASS_PRAGMA_UNROLL
  for (int i0 = 0; i0 < N; i0 += kChunk) {
    cutlass::Array<float, kChunk> chunk;
    cutlass::Array<int, kChunk> features{};
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kChunk; ++i) {
      chunk[i] = v[i0 + i];
      if (program.reads & kReadsFeatures) features[i] = int(feature_of(i0 + i));  // uniform
    }
    chunk = apply_chain_outlined<P>(program, chunk, features);
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kChunk; ++i) v[i0 + i] = chunk[i];
  }
}

}  // namespace cutlass_ext
