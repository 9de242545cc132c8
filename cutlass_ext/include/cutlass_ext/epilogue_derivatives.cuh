// The derivative of every epilogue op, for the backward pass of a chain (chain_derivative.cuh): d op / dv at the
// op's input v, by the formula of torch's CUDA backward kernel for the op (grad_input = grad_output * derivative),
// written as torch writes it, so that zeros, NaN and inf come out where autograd puts them. Two fast forms
// keep them: the normal CDF of the forward GELU (normal_cdf: exact 0 and 1 in the tails, NaN for NaN) instead of
// erff, and the hardware reciprocal without .ftz (reciprocal below) instead of an IEEE division. What is not used
// here is the forward's ex2.approx.ftz and rcp.approx.ftz wherever their result is a factor of the derivative: a
// flushed 0 where torch keeps a subnormal turns an infinite incoming gradient into NaN where torch gives inf. The
// chain-backward kernel is bound by this math, not by memory (docs/perf-notes.md, items 38 and 39).
//
// Where torch's backward selects instead (where(mask, grad, 0): clamp, hardtanh, relu, hardsigmoid, hardswish at
// or under -3), `<op>_passes(v)` is the mask and the derivative applies where it is true: false gives exactly 0,
// even for a NaN or inf gradient, where a product would give NaN. tests/test_autograd.py holds each to torch's
// autograd.
#pragma once

#include <cuda_runtime.h>

#include "cutlass_ext/epilogue_ops.cuh"

namespace cutlass_ext::ops {

// add: 1; mul(a): a; neg: -1.

// The three user ops that run as clamp keep torch's three backward rules (derivative 1 where they pass), which
// differ at the bounds and for NaN: torch.clamp passes the gradient where lo <= v <= hi (NaN: not); F.hardtanh
// and F.relu6 unless v <= lo or v >= hi (NaN: passes); F.relu unless its result is <= 0 (threshold_backward).
__device__ __forceinline__ bool clamp_passes(float v, float lo, float hi) { return v >= lo && v <= hi; }
__device__ __forceinline__ bool hardtanh_passes(float v, float lo, float hi) { return !(v <= lo || v >= hi); }
__device__ __forceinline__ bool relu_passes(float v) { return !(v <= 0.f); }

__device__ __forceinline__ float leaky_relu_derivative(float v, float slope) { return v > 0.f ? 1.f : slope; }

// The ops with a transcendental part give their derivative and their value together (a Step), sharing that part:
// the backward pass needs both wherever another op follows, and this kernel is bound by its math, not its memory.
// The value is within a float32 ulp or two of epilogue_ops.cuh's (it only places the next op's derivative).
struct Step {
  float derivative, value;
};

// 1 / d by the hardware (MUFU.RCP, at most 1 ulp from the correctly rounded result) with subnormal results kept:
// 6 instructions without a branch. An IEEE division compiles to a branch around a slow-path call per value, which
// keeps ptxas from interleaving a thread's 8 values (docs/perf-notes.md, item 39). 1/inf = 0 and NaN stays NaN.
__device__ __forceinline__ float reciprocal(float d) {
  float r;
  asm("rcp.approx.f32 %0, %1;" : "=f"(r) : "f"(d));
  return r;
}

// derivative cdf + v pdf, value v cdf. pdf by expf, which keeps its subnormal values (torch's exp does).
__device__ __forceinline__ Step gelu_step(float v) {
  constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
  const float cdf = normal_cdf(v);
  const float pdf = expf(-0.5f * v * v) * kInvSqrt2Pi;
  return {cdf + v * pdf, v * cdf};
}

// derivative (1 + tanh u) / 2 + v/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 kappa v^2), u = sqrt(2/pi) (v + kappa v^3);
// value v/2 (1 + tanh u).
__device__ __forceinline__ Step gelu_tanh_step(float v) {
  constexpr float kBeta = 0.79788456080286535588f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  const float v2 = v * v;
  const float t = tanhf(kBeta * (v + kKappa * v2 * v));
  const float left = 0.5f * v;
  return {0.5f * (1.f + t) + left * (1.f - t * t) * (kBeta * (1.f + 3.f * kKappa * v2)), left * (1.f + t)};
}

// torch's 1 / (1 + exp(-v)), subnormal results included (v in (-88.7, -87.3)).
__device__ __forceinline__ float sigmoid_keeping_subnormals(float v) { return reciprocal(1.f + expf(-v)); }

// silu: s (1 + v (1 - s)); sigmoid: (1 - s) s and tanh: 1 - t^2, from the op's result as sigmoid_backward and
// tanh_backward; mish: tanh(softplus(v)) + v s (1 - tanh^2(softplus(v))).
__device__ __forceinline__ Step silu_step(float v) {
  const float s = sigmoid_keeping_subnormals(v);
  return {s * (1.f + v * (1.f - s)), v * s};
}
__device__ __forceinline__ Step sigmoid_step(float v) {
  const float s = sigmoid_keeping_subnormals(v);
  return {(1.f - s) * s, s};
}
__device__ __forceinline__ Step tanh_step(float v) {
  const float t = tanhf(v);
  return {1.f - t * t, t};
}
__device__ __forceinline__ Step mish_step(float v) {
  const float t = tanhf(log1pf(expf(v)));
  return {t + v * sigmoid_keeping_subnormals(v) * (1.f - t * t), v * t};
}

// derivative 1 above the threshold, else z / (z + 1), z = e^(v beta); value as softplus's.
__device__ __forceinline__ Step softplus_step(float v, float beta, float threshold) {
  const float z = expf(v * beta);
  return v * beta > threshold ? Step{1.f, v} : Step{z * reciprocal(z + 1.f), log1pf(z) * reciprocal(beta)};
}

// elu_backward of the input: alpha e^v where v <= 0, else 1 (NaN: 1).
__device__ __forceinline__ float elu_derivative(float v, float alpha) { return v <= 0.f ? alpha * expf(v) : 1.f; }

// hardsigmoid passes inside (-3, 3) (NaN: not), with 1/6; hardswish passes unless v <= -3 (NaN: passes), with
// v / 3 + 1/2 under 3, then 1 (torch's bounds, which are not where hardswish's own pieces meet).
__device__ __forceinline__ bool hardsigmoid_passes(float v) { return v > -3.f && v < 3.f; }
__device__ __forceinline__ bool hardswish_passes(float v) { return !(v <= -3.f); }
__device__ __forceinline__ float hardswish_derivative(float v) { return v < 3.f ? v / 3.f + 0.5f : 1.f; }

// sgn(v): 0 at 0 and for NaN.
__device__ __forceinline__ float abs_derivative(float v) { return v > 0.f ? 1.f : v < 0.f ? -1.f : 0.f; }

// residual(v, v0, a) = v + a v0: its derivative is the chain's business, a added to d chain / d v0
// (ChainGradient::residual).

}  // namespace cutlass_ext::ops
