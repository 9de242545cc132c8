// Runs a ChainProgram over a thread's fragment of N values, in fp32.
//
// The op loop is outside the element loop: each op is decoded once per fragment, not once per element, and the
// switch is on a value that is the same for every thread of the launch (no divergence). The math of each op
// lives in epilogue_ops.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cutlass/array.h>

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

// v: the fragment, in and out. feature_of(i): the output-feature index (column) of element i, called only by the
// per-feature vector ops. v0_of(i): the chain's input for element i, called only by kResidual; a caller that
// still holds its input (the elementwise kernel's loaded values) rereads it there instead of keeping a copy of
// the fragment in registers for the whole chain.
// kCheapOnly: compile only the ops for which op_is_cheap holds, for callers that dispatch on chain_is_cheap. The
// other ops' code (exp, erf, tanh, log1p) sets the register count of the whole loop even when it never runs; a
// memory-bound kernel without it fits more resident threads (docs/perf-notes.md, item 46). Such a caller given
// another op traps rather than skip it.
template <bool kCheapOnly = false, int N, class FeatureOf, class InputOf>
__device__ __forceinline__ void apply_chain(const ChainProgram& program, cutlass::Array<float, N>& v,
                                            FeatureOf feature_of, InputOf v0_of) {
  auto each = [&v](auto f) {
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) v[i] = f(v[i], i);
  };
  auto each_costly = [&each](auto f) {  // the ops that op_is_cheap excludes
    if constexpr (!kCheapOnly) each(f);
  };
  for (int k = 0; k < program.num_ops; ++k) {
    const ChainOp op = program.ops[k];
    const float a = op.a, b = op.b;
    if constexpr (kCheapOnly) {
      if (!op_is_cheap(op.code)) __trap();  // uniform; a dispatch bug, never a silently skipped op
    }
    switch (op.code) {
      case ChainOpCode::kAdd: each([a](float x, int) { return ops::add(x, a); }); break;
      case ChainOpCode::kMul: each([a](float x, int) { return ops::mul(x, a); }); break;
      case ChainOpCode::kClamp: case ChainOpCode::kHardtanh: case ChainOpCode::kRelu:
        each([a, b](float x, int) { return ops::clamp(x, a, b); });
        break;
      case ChainOpCode::kLeakyRelu: each([a](float x, int) { return ops::leaky_relu(x, a); }); break;
      case ChainOpCode::kGelu: each_costly([](float x, int) { return ops::gelu(x); }); break;
      case ChainOpCode::kGeluTanh: each_costly([](float x, int) { return ops::gelu_tanh(x); }); break;
      case ChainOpCode::kSilu: each_costly([](float x, int) { return ops::silu(x); }); break;
      case ChainOpCode::kSigmoid: each_costly([](float x, int) { return ops::sigmoid(x); }); break;
      case ChainOpCode::kTanh: each_costly([](float x, int) { return ops::tanh(x); }); break;
      case ChainOpCode::kMish: each_costly([](float x, int) { return ops::mish(x); }); break;
      case ChainOpCode::kSoftplus: each_costly([a, b](float x, int) { return ops::softplus(x, a, b); }); break;
      case ChainOpCode::kElu: each_costly([a](float x, int) { return ops::elu(x, a); }); break;
      case ChainOpCode::kHardswish: each([](float x, int) { return ops::hardswish(x); }); break;
      case ChainOpCode::kHardsigmoid: each([](float x, int) { return ops::hardsigmoid(x); }); break;
      case ChainOpCode::kAbs: each([](float x, int) { return ops::abs(x); }); break;
      case ChainOpCode::kNeg: each([](float x, int) { return ops::neg(x); }); break;
      case ChainOpCode::kAddVector: {
        const ChainVector vec = program.vectors[op.vector];
        each([&](float x, int i) { return x + load_vector_element(vec, feature_of(i)); });
        break;
      }
      case ChainOpCode::kMulVector: {
        const ChainVector vec = program.vectors[op.vector];
        each([&](float x, int i) { return x * load_vector_element(vec, feature_of(i)); });
        break;
      }
      case ChainOpCode::kResidual: each([&](float x, int i) { return ops::residual(x, v0_of(i), a); }); break;
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
template <int N>
__device__ __noinline__ cutlass::Array<float, N> apply_chain_outlined(const ChainProgram& program,
                                                                     cutlass::Array<float, N> v,
                                                                     cutlass::Array<int, N> features) {
  cutlass::Array<float, N> v0;
  if (program.reads & kReadsInput) v0 = v;  // uniform
  apply_chain(program, v, [&](int i) { return unsigned(features[i]); }, [&](int i) { return v0[i]; });
  return v;
}

}  // namespace cutlass_ext
