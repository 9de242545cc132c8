// The math of every epilogue op on the device: the single definition that the elementwise kernel and every GEMM
// epilogue use. Each function follows the formula of PyTorch's own CUDA kernel for the op, in fp32, with its
// special cases (NaN in gives NaN out wherever torch's does). tests/ hold these to python/cutlass_ext/epilogue.py,
// whose reference math is torch itself.
#pragma once

#include <cuda_runtime.h>

namespace cutlass_ext::ops {

// How exactly an op's math is done, chosen by the output dtype (chain_interpreter.cuh, precision_for):
// - kFloat32: to about torch's float32 result (float32 outputs).
// - kBFloat16: only well under a bfloat16 output's rounding step of 2^-8 to 2^-7 (relative): hardware
//   approximations in place of the libm sequences, which cuts the costliest ops' instructions by a third to a
//   half. Each form below states its error; none is above 2^-11, an eighth of the step.
// - kFloat16: float16's step (2^-11 to 2^-10) leaves room only for the e^-v form (2^-17); MUFU.TANH's 2^-11 would
//   be a whole step, and the degree-5 GELU, emulated, is off by more than an ulp at 62 inputs in [-3.5, -3.2].
// Why: the GEMM epilogues run the chain in time no MMA runs, or beside the MMAs at the cost of their issue slots
// (docs/perf-notes.md, items 49 and 50).
enum class Precision { kFloat32, kFloat16, kBFloat16 };

// std::max / std::min as torch's kernels use them: comparison-based, so a NaN first argument propagates
// (fmaxf/fminf would drop it).
__device__ __forceinline__ float max_keep_nan(float x, float y) { return x < y ? y : x; }
__device__ __forceinline__ float min_keep_nan(float x, float y) { return y < x ? y : x; }

__device__ __forceinline__ float add(float v, float a) { return v + a; }
__device__ __forceinline__ float mul(float v, float a) { return v * a; }

// torch.clamp: NaN stays NaN; otherwise min(max(v, lo), hi). lo and hi are never NaN (the chain is validated),
// so the NaN-propagating min/max of sm_80+ give exactly that in two instructions.
__device__ __forceinline__ float clamp(float v, float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  float r;
  asm("max.NaN.f32 %0, %1, %2;\n\tmin.NaN.f32 %0, %0, %3;" : "=f"(r) : "f"(v), "f"(lo), "f"(hi));
  return r;
#else
  return isnan(v) ? v : fminf(fmaxf(v, lo), hi);
#endif
}

__device__ __forceinline__ float leaky_relu(float v, float slope) { return v > 0.f ? v : v * slope; }

// 1 / d for the denominators of sigmoid, silu and gelu_tanh, d = 1 + exp(-y), which lie in [1, inf] or are NaN:
// the hardware reciprocal (MUFU.RCP, at most 1 ulp from the correctly rounded result), which gives 1/inf = 0 and
// NaN for NaN as a division does. Why not torch's IEEE division: an IEEE division or __frcp_rn compiles to ~70
// instructions with a slow path for operands that cannot occur here, which made silu the most expensive op of the
// reference chains (docs/perf-notes.md, round 3). .ftz only matters for d > 2^126, where 1/d is subnormal and
// becomes 0.
__device__ __forceinline__ float reciprocal_of_denominator(float d) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(d));
  return r;
}

// 2^a by the hardware (MUFU.EX2, about 2 ulp): 2^-inf = 0, 2^inf = inf, NaN stays NaN. .ftz: results under 2^-126
// become 0, where the ops below need only their absolute value.
__device__ __forceinline__ float exp2_approx(float a) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
  return r;
}

// The standard normal CDF Phi(v) = (1 + erf(v / sqrt 2)) / 2, for torch's exact GELU (v Phi(v)) and its
// derivative (epilogue_derivatives.cuh), computed as
//   q = Phi(-|v|) = 2^(R(min(|v|, 5.6)) - v^2 / (2 ln 2)),   Phi(v) = 1/2 + sign(v) (1/2 - q),
// R(t) = log2(erfcx(t / sqrt 2) / 2) a polynomial fitted by tools/fit_gelu.py on [0, 5.6] (weighted least squares):
// - kFloat32: degree 8, weight q, so that q's absolute error is 7.5e-9 in exact arithmetic. Its absolute error is
//   that of torch's 1 + erf, ~3e-8: both round a value near 1/2 (or 1) before the difference that makes the tail.
// - kBFloat16: degree 5, weight sqrt(q) (three fused multiply-adds fewer). Emulated over v in [-3, 8] and rounded to
//   bfloat16: at most 0.519 ulp from float64 (torch's float32 GELU rounded: 0.523), 0.14% of values not correctly
//   rounded (torch's: 0.02%). Under -3 both round the same float32 difference 1/2 - q, and so does torch.
// Why not erff: ~16 instructions instead of ~28 (erff merges two polynomials with selects); GELU is the costliest
// op of most chains, and a fused epilogue's chain is time in which no MMA runs (docs/perf-notes.md, item 24).
// Specials: Phi(inf) = 1, Phi(-inf) = 0, NaN stays NaN (min drops a NaN, v * v keeps it); v * v = inf makes q = 0,
// and under -5.5 the result is 0 (q rounds away against 1/2), as torch's 1 + erf rounds to 0.
template <Precision P = Precision::kFloat32>
__device__ __forceinline__ float normal_cdf(float v) {
  constexpr float kMinusHalfLog2e = -0.72134752044448170368f;  // -1 / (2 ln 2)
  const float t = fminf(fabsf(v), 5.6f);
  float r;
  if constexpr (P == Precision::kBFloat16) {
    constexpr float kR[] = {-1.00001335f, -1.15077913f,    0.260954529f,
                            -0.0511841364f, 0.00675109681f, -0.000419025542f};
    r = kR[5];
#pragma unroll
    for (int i = 4; i >= 0; --i) r = fmaf(r, t, kR[i]);
  } else {
    constexpr float kR[] = {-1.f, -1.15110576f, 0.262142599f, -0.0525050275f, 0.00707547227f, -0.000145870406f,
                            -0.000182547534f, 3.86207466e-05f, -2.77205049e-06f};
    r = kR[8];
#pragma unroll
    for (int i = 7; i >= 0; --i) r = fmaf(r, t, kR[i]);
  }
  const float q = exp2_approx(fmaf(kMinusHalfLog2e, v * v, r));
  return 0.5f + copysignf(0.5f - q, v);
}

// torch's exact GELU, v/2 (1 + erf(v / sqrt 2)) = v Phi(v). Accuracy of the kFloat32 form, float32 emulation of this
// code against float64, by range of v (max relative error, ours / torch's float32 GELU on the CPU): [-5,-4) 5.8e-2 /
// 4.9e-2 (values under 1.3e-4), [-4,-3) 6.2e-4 / 9.3e-4, [-3,-2) 1.3e-5 / 6.3e-5, [-1,1) 3.0e-7 / 6.9e-7, [1,12)
// 1.3e-7 / 1.9e-7; under -5.5 both give -0. Specials as torch's: gelu(inf) = inf, gelu(-inf) = -inf * 0 = NaN,
// NaN stays NaN. The kBFloat16 form: normal_cdf's.
template <Precision P>
__device__ __forceinline__ float gelu(float v) { return v * normal_cdf<P>(v); }

// torch's tanh GELU, v/2 (1 + tanh(u)), u = sqrt(2/pi) (v + 0.044715 v^3), as v sigmoid(2u) = v / (1 + e^-2u):
// the same value without tanhf (~7 instructions instead of ~23) and without the cancellation of 1 + tanh(u) for
// negative u. Specials as torch's: inf -> inf, -inf -> -inf * 0 = NaN, NaN -> NaN.
__device__ __forceinline__ float gelu_tanh(float v) {
  constexpr float kC1 = -2.30220819813f;   // -2 sqrt(2/pi) log2(e)
  constexpr float kC3 = -0.10294323958f;   // kC1 * 0.044715
  const float minus_2u_log2e = v * fmaf(kC3, v * v, kC1);
  return v * reciprocal_of_denominator(1.f + exp2_approx(minus_2u_log2e));
}

// e^-v. kBFloat16 and kFloat16: 2^(-v log2 e) by the hardware (2 instructions instead of expf's 9): exp2_approx's
// ~2 ulp plus the product's rounding carried into the exponent, |v| 2^-24 relative (under 2^-17 wherever e^-v is a
// normal float32; silu and sigmoid need only 1 + e^-v).
template <Precision P>
__device__ __forceinline__ float exp_of_minus(float v) {
  if constexpr (P != Precision::kFloat32) {
    return exp2_approx(v * -1.44269504088896340736f);
  } else {
    return expf(-v);
  }
}

// tanh. kBFloat16: the hardware's (MUFU.TANH, 1 instruction instead of tanhf's 17), relative error at most 2^-10.99
// (PTX ISA, tanh.approx.f32): tanh(+-inf) = +-1, NaN stays NaN, subnormal inputs kept.
template <Precision P>
__device__ __forceinline__ float tanh(float v) {
  if constexpr (P == Precision::kBFloat16) {
    float r;
    asm("tanh.approx.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
  } else {
    return tanhf(v);
  }
}

// torch: v / (1 + exp(-v)), and 1 / (1 + exp(-v)). Same NaN/inf results: -inf * 0 is NaN as -inf / inf is.
template <Precision P>
__device__ __forceinline__ float silu(float v) { return v * reciprocal_of_denominator(1.f + exp_of_minus<P>(v)); }
template <Precision P>
__device__ __forceinline__ float sigmoid(float v) { return reciprocal_of_denominator(1.f + exp_of_minus<P>(v)); }
// The tanh of softplus(v) >= 0 in its kBFloat16 form too; softplus itself stays log1pf(expf(v)), whose value for
// v << 0 (e^v, down to 1e-38) no shortcut keeps.
template <Precision P>
__device__ __forceinline__ float mish(float v) { return v * tanh<P>(log1pf(expf(v))); }

__device__ __forceinline__ float softplus(float v, float beta, float threshold) {
  return v * beta > threshold ? v : log1pf(expf(v * beta)) / beta;
}

__device__ __forceinline__ float elu(float v, float alpha) { return v <= 0.f ? expm1f(v) * alpha : v; }

constexpr float kOneSixth = 1.f / 6.f;
__device__ __forceinline__ float relu6_shifted(float v) { return min_keep_nan(max_keep_nan(v + 3.f, 0.f), 6.f); }
__device__ __forceinline__ float hardsigmoid(float v) { return relu6_shifted(v) * kOneSixth; }
__device__ __forceinline__ float hardswish(float v) { return v * relu6_shifted(v) * kOneSixth; }

__device__ __forceinline__ float abs(float v) { return fabsf(v); }
__device__ __forceinline__ float neg(float v) { return -v; }

// v + a * v0, rounded twice like torch's `v + a * v0` (no fused multiply-add).
__device__ __forceinline__ float residual(float v, float v0, float a) { return v + __fmul_rn(a, v0); }

}  // namespace cutlass_ext::ops
