// The epilogue chain as data: a small POD that every kernel receives at launch, by value, as a kernel parameter.
//
// Python (python/cutlass_ext/epilogue.py) lowers a user's chain to these device ops; cutlass_ext/torch/
// chain_program.cpp builds the POD from the op names; chain_interpreter.cuh runs it. Nothing is compiled per
// chain: one kernel runs any chain, and since every thread of a launch runs the same program, the interpreter's
// branches are uniform across the warp.
#pragma once

#include <cstdint>

namespace cutlass_ext {

// 16 ops covers every chain seen in practice; the struct stays ~330 bytes, far under the kernel-parameter limit.
constexpr int kMaxChainOps = 16;
// Per-feature vectors (a second bias, a per-channel scale) that one chain may read.
constexpr int kMaxChainVectors = 4;

// The device ops. Several user-level ops lower to one of these: sub -> add, relu6 -> hardtanh, and div(s) ->
// mul(1/s) with the reciprocal rounded to float32, which is what torch's CUDA kernels do for a scalar divisor (and
// cheaper than an IEEE division per element). clamp, hardtanh and relu compute the same value (as in torch) and
// differ in their derivative at the bounds (epilogue_ops.cuh).
enum class ChainOpCode : int32_t {
  kAdd,          // v + a
  kMul,          // v * a
  kClamp,        // clamp(v, a, b); NaN stays NaN, as torch.clamp
  kHardtanh,     // clamp(v, a, b), F.hardtanh's derivative
  kRelu,         // clamp(v, a = 0, b = inf), F.relu's derivative
  kLeakyRelu,    // v > 0 ? v : v * a
  kGelu,         // v/2 * (1 + erf(v / sqrt 2))
  kGeluTanh,     // v/2 * (1 + tanh(sqrt(2/pi) * (v + 0.044715 v^3)))
  kSilu,         // v / (1 + exp(-v))
  kSigmoid,      // 1 / (1 + exp(-v))
  kTanh,         // tanh(v)
  kMish,         // v * tanh(log1p(exp(v)))
  kSoftplus,     // v * a > b ? v : log1p(exp(v * a)) / a   (a = beta, b = threshold)
  kElu,          // v > 0 ? v : a * expm1(v)
  kHardswish,    // v * min(max(v + 3, 0), 6) / 6
  kHardsigmoid,  // min(max(v + 3, 0), 6) / 6
  kAbs,          // |v|
  kNeg,          // -v
  kAddVector,    // v + vec[feature]
  kMulVector,    // v * vec[feature]
  kResidual,     // v + a * v0, v0 being the chain's input (the accumulator plus bias in a GEMM)
};

enum class ChainVectorDtype : int32_t { kF32, kBF16, kF16 };

// 16 bytes, 16-aligned: the interpreter reads an op with one vector load.
struct alignas(16) ChainOp {
  ChainOpCode code;
  int32_t vector;  // index into ChainProgram::vectors, for kAddVector / kMulVector
  float a;
  float b;
};

struct ChainVector {
  const void* data;  // length = number of output features, contiguous
  ChainVectorDtype dtype;
};

// What a chain reads besides the values it runs on (ChainProgram::reads).
enum ChainReads : uint32_t {
  kReadsFeatures = 1,  // a per-feature vector op: the interpreter needs each value's output feature
  kReadsInput = 2,     // kResidual: the interpreter keeps the chain's input until the op
};

struct ChainProgram {
  ChainOp ops[kMaxChainOps];
  int32_t num_ops;
  uint32_t reads;  // ChainReads bits, = chain_reads(*this): set wherever ops are (make_chain_program)
  ChainVector vectors[kMaxChainVectors];
};

inline uint32_t chain_reads(const ChainProgram& program) {
  uint32_t reads = 0;
  for (int i = 0; i < program.num_ops; ++i) {
    switch (program.ops[i].code) {
      case ChainOpCode::kAddVector: case ChainOpCode::kMulVector: reads |= kReadsFeatures; break;
      case ChainOpCode::kResidual: reads |= kReadsInput; break;
      default: break;
    }
  }
  return reads;
}

// True for the ops that are a few arithmetic instructions (no exp/erf/tanh/log). A chain of only these leaves a
// memory-bound kernel memory-bound, which changes the best launch shape, and lets the elementwise kernel run an
// interpreter that holds only these ops' code (elementwise_kernel.cuh). constexpr: the device code uses it too.
constexpr bool op_is_cheap(ChainOpCode code) {
  switch (code) {
    case ChainOpCode::kGelu: case ChainOpCode::kGeluTanh: case ChainOpCode::kSilu: case ChainOpCode::kSigmoid:
    case ChainOpCode::kTanh: case ChainOpCode::kMish: case ChainOpCode::kSoftplus: case ChainOpCode::kElu:
      return false;
    default:
      return true;
  }
}

inline bool chain_is_cheap(const ChainProgram& program) {
  for (int i = 0; i < program.num_ops; ++i) {
    if (!op_is_cheap(program.ops[i].code)) return false;
  }
  return true;
}

}  // namespace cutlass_ext
