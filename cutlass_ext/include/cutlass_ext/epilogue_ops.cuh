// The math of every epilogue op on the device: the single definition that the elementwise kernel and every GEMM
// epilogue use. Each function follows the formula of PyTorch's own CUDA kernel for the op, in fp32, with its
// special cases (NaN in gives NaN out wherever torch's does). tests/ hold these to python/cutlass_ext/epilogue.py,
// whose reference math is torch itself.
#pragma once

#include <cuda_runtime.h>

namespace cutlass_ext::ops {

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

__device__ __forceinline__ float gelu(float v) {
  constexpr float kSqrtHalf = 0.70710678118654752440f;
  return v * 0.5f * (1.f + erff(v * kSqrtHalf));
}

__device__ __forceinline__ float gelu_tanh(float v) {
  constexpr float kBeta = 0.79788456080286535588f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  const float inner = kBeta * (v + kKappa * (v * v * v));
  return 0.5f * v * (1.f + tanhf(inner));
}

// 1 / d for the denominators of sigmoid and silu, d = 1 + exp(-v), which lie in [1, inf] or are NaN: the hardware
// reciprocal (MUFU.RCP, at most 1 ulp from the correctly rounded result), which gives 1/inf = 0 and NaN for NaN as
// a division does. Why not torch's IEEE division: an IEEE division or __frcp_rn compiles to ~70 instructions with
// a slow path for operands that cannot occur here, which made silu the most expensive op of the reference chains
// (docs/perf-notes.md, round 3). .ftz only matters for d > 2^126, where 1/d is subnormal and becomes 0.
__device__ __forceinline__ float reciprocal_of_denominator(float d) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(d));
  return r;
}

// torch: v / (1 + exp(-v)), and 1 / (1 + exp(-v)). Same NaN/inf results: -inf * 0 is NaN as -inf / inf is.
__device__ __forceinline__ float silu(float v) { return v * reciprocal_of_denominator(1.f + expf(-v)); }
__device__ __forceinline__ float sigmoid(float v) { return reciprocal_of_denominator(1.f + expf(-v)); }
__device__ __forceinline__ float tanh(float v) { return tanhf(v); }
__device__ __forceinline__ float mish(float v) { return v * tanhf(log1pf(expf(v))); }

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
