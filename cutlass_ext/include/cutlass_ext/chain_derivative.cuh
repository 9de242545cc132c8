// The backward pass of a chain, grad_v0 = grad * d chain / d v0, for the chain-backward kernel
// (elementwise_kernel.cuh) only: the GEMM epilogues never include it.
//
// Autograd runs the ops backwards from the output, each multiplying the gradient by its derivative at its input
// (epilogue_derivatives.cuh) or selecting (where(mask, g, 0)), and a residual adds a g to v0's gradient. Run
// forwards, in the chain's order, the map from the gradient at the current op's output to grad_v0 is g -> g P + C,
// or the constant C once a select has cut it (no later NaN or inf reaches v0 through a cut): a product multiplies
// P, a cut sets C += 0 P (NaN when P is, as autograd's 0 * NaN further back), a residual adds a to P (and reopens
// a cut: its a g bypasses it). The same values as autograd's up to float32 rounding, the same factors multiplied
// in another order.
#pragma once

#include <cutlass/array.h>

#include "cutlass_ext/chain_interpreter.cuh"
#include "cutlass_ext/epilogue_derivatives.cuh"

namespace cutlass_ext {

struct ChainGradient {
  float p = 1.f, c = 0.f;
  bool cut = false;
  __device__ __forceinline__ void multiply(float derivative) { p *= derivative; }
  __device__ __forceinline__ void select(bool passes, float derivative) {
    if (passes) {
      p *= derivative;
    } else if (!cut) {
      c += 0.f * p;
      cut = true;
    }
  }
  __device__ __forceinline__ void residual(float a) {
    p = cut ? a : p + a;
    cut = false;
  }
  __device__ __forceinline__ float of(float grad) const { return cut ? c : grad * p + c; }
};

// On entry v holds v0; g the composed gradient map of each value on return. v is left as the last op's input:
// nothing reads the chain's value, and skipping the last op's value saves its math (a gelu or tanh at the end of
// most chains).
template <int N, class FeatureOf>
__device__ __forceinline__ void apply_chain_derivative(const ChainProgram& program, cutlass::Array<float, N>& v,
                                                       ChainGradient (&g)[N], FeatureOf feature_of) {
  cutlass::Array<float, N> v0;
  if (program.reads & kReadsInput) v0 = v;  // uniform
  for (int k = 0; k < program.num_ops; ++k) {
    const ChainOp op = program.ops[k];
    const float a = op.a, b = op.b;
    const bool next_reads_value = k + 1 < program.num_ops;  // uniform
    // Each op: step(x, i) -> its derivative and value for a product, or passes(x), derivative(x) and value(x, i)
    // for a select.
    auto product = [&](auto step) {
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < N; ++i) {
        const ops::Step r = step(v[i], i);
        g[i].multiply(r.derivative);
        if (next_reads_value) v[i] = r.value;
      }
    };
    auto select = [&](auto passes, auto derivative, auto value) {
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < N; ++i) {
        g[i].select(passes(v[i]), derivative(v[i]));
        if (next_reads_value) v[i] = value(v[i], i);
      }
    };
    auto constant = [](float c) { return [c](float) { return c; }; };
    auto clamped = [a, b](float x, int) { return ops::clamp(x, a, b); };
    switch (op.code) {
      case ChainOpCode::kAdd: product([a](float x, int) { return ops::Step{1.f, ops::add(x, a)}; }); break;
      case ChainOpCode::kMul: product([a](float x, int) { return ops::Step{a, ops::mul(x, a)}; }); break;
      case ChainOpCode::kClamp:
        select([a, b](float x) { return ops::clamp_passes(x, a, b); }, constant(1.f), clamped);
        break;
      case ChainOpCode::kHardtanh:
        select([a, b](float x) { return ops::hardtanh_passes(x, a, b); }, constant(1.f), clamped);
        break;
      case ChainOpCode::kRelu: select([](float x) { return ops::relu_passes(x); }, constant(1.f), clamped); break;
      case ChainOpCode::kLeakyRelu:
        product([a](float x, int) { return ops::Step{ops::leaky_relu_derivative(x, a), ops::leaky_relu(x, a)}; });
        break;
      case ChainOpCode::kGelu: product([](float x, int) { return ops::gelu_step(x); }); break;
      case ChainOpCode::kGeluTanh: product([](float x, int) { return ops::gelu_tanh_step(x); }); break;
      case ChainOpCode::kSilu: product([](float x, int) { return ops::silu_step(x); }); break;
      case ChainOpCode::kSigmoid: product([](float x, int) { return ops::sigmoid_step(x); }); break;
      case ChainOpCode::kTanh: product([](float x, int) { return ops::tanh_step(x); }); break;
      case ChainOpCode::kMish: product([](float x, int) { return ops::mish_step(x); }); break;
      case ChainOpCode::kSoftplus: product([a, b](float x, int) { return ops::softplus_step(x, a, b); }); break;
      case ChainOpCode::kElu:
        product([a](float x, int) { return ops::Step{ops::elu_derivative(x, a), ops::elu(x, a)}; });
        break;
      case ChainOpCode::kHardswish:
        select([](float x) { return ops::hardswish_passes(x); }, [](float x) { return ops::hardswish_derivative(x); },
               [](float x, int) { return ops::hardswish(x); });
        break;
      case ChainOpCode::kHardsigmoid:
        select([](float x) { return ops::hardsigmoid_passes(x); }, constant(1.f / 6.f),
               [](float x, int) { return ops::hardsigmoid(x); });
        break;
      case ChainOpCode::kAbs:
        product([](float x, int) { return ops::Step{ops::abs_derivative(x), ops::abs(x)}; });
        break;
      case ChainOpCode::kNeg: product([](float x, int) { return ops::Step{-1.f, ops::neg(x)}; }); break;
      case ChainOpCode::kAddVector: {
        const ChainVector vec = program.vectors[op.vector];
        product([&](float x, int i) { return ops::Step{1.f, x + load_vector_element(vec, feature_of(i))}; });
        break;
      }
      case ChainOpCode::kMulVector: {
        const ChainVector vec = program.vectors[op.vector];
        product([&](float x, int i) {
          const float scale = load_vector_element(vec, feature_of(i));
          return ops::Step{scale, x * scale};
        });
        break;
      }
      case ChainOpCode::kResidual:
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < N; ++i) {
          g[i].residual(a);
          if (next_reads_value) v[i] = ops::residual(v[i], v0[i], a);
        }
        break;
    }
  }
}

}  // namespace cutlass_ext
