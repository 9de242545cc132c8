// The normalization stage (group_norm.h): one team of threads per (row, group), the group's values held in
// registers from one read to one write.
//
// A team is a power-of-two number of threads, the fewest that hold the group at kValuesPerThread values each
// (a 512-feature bf16 group: 32 threads, 2 accesses of 16 bytes each); thread t of a team takes accesses t,
// t + team, ..., so a team reads its group in contiguous, coalesced sweeps. Teams of up to 32 threads reduce with
// warp shuffles (several teams per warp); larger teams are a whole block and reduce through shared memory.
// Every thread sums its values in the same order and the trees are fixed: results are deterministic.
#pragma once

#include <cutlass/array.h>
#include <cutlass/numeric_conversion.h>

#include <algorithm>

#include "cutlass_ext/chain_interpreter.cuh"
#include "cutlass_ext/group_norm.h"

namespace cutlass_ext {
namespace group_norm_detail {

// 16 values per thread, the chain inlined once over all of them (as in the elementwise kernel), under the 64
// registers that 1024-thread blocks allow (with ~130 bytes of spill; 32 values with the chain out of line per
// access measured 1.4x slower: docs/perf-notes.md). The largest group held is then 1024 x 16 = 16384 values.
constexpr int kValuesPerThread = 16;
constexpr int kMaxTeam = 1024;
constexpr int kMinBlock = 256;
static_assert(kMaxTeam * kValuesPerThread == kMaxGroupNormGroupSize, "group_norm.h promises this group size");

// The sum of v over the thread's team, in every thread of the team. Teams of up to 32 threads reduce within
// their warp; larger ones (whole warps, one or more teams per block) through scratch: a float per warp.
__device__ __forceinline__ float team_sum(float v, int team, float* scratch) {
  for (int offset = min(team, 32) / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (team <= 32) return v;
  __syncthreads();  // the previous call's readers are done with scratch
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  const int first_warp = threadIdx.x / team * (team / 32);
  float total = 0.f;
  for (int w = 0; w < team / 32; ++w) total += scratch[first_warp + w];
  return total;
}

// p[0..kVec) as float: 16-byte loads where p is 16-byte aligned, else one load per value. The lanes of a warp read
// runs of kVec values kVec apart, so one load per value costs a warp several L1 wavefronts (docs/perf-notes.md,
// items 46-47).
template <int kVec, class V>
__device__ __forceinline__ cutlass::Array<float, kVec> load_run(const V* p) {
  cutlass::Array<float, kVec> out;
  constexpr int kPerLoad = 16 / sizeof(V);
  if constexpr (kVec % kPerLoad == 0) {
    if (reinterpret_cast<uintptr_t>(p) % 16 == 0) {
      CUTLASS_PRAGMA_UNROLL
      for (int c = 0; c < kVec / kPerLoad; ++c) {
        const auto raw = reinterpret_cast<const cutlass::AlignedArray<V, kPerLoad>*>(p)[c];
        CUTLASS_PRAGMA_UNROLL
        for (int k = 0; k < kPerLoad; ++k) out[c * kPerLoad + k] = float(raw[k]);
      }
      return out;
    }
  }
  CUTLASS_PRAGMA_UNROLL
  for (int e = 0; e < kVec; ++e) out[e] = float(p[e]);
  return out;
}

// vec[feature + e] for e < kVec as float, `absent` where vec has no data: the affine of one access. The dtype
// switch is uniform and outside the loop over the values.
template <int kVec>
__device__ __forceinline__ cutlass::Array<float, kVec> load_vector_run(const ChainVector& vec, int64_t feature,
                                                                      float absent) {
  if (vec.data == nullptr) {
    cutlass::Array<float, kVec> out;
    out.fill(absent);
    return out;
  }
  switch (vec.dtype) {
    case ChainVectorDtype::kBF16: return load_run<kVec>(static_cast<const cutlass::bfloat16_t*>(vec.data) + feature);
    case ChainVectorDtype::kF16: return load_run<kVec>(static_cast<const cutlass::half_t*>(vec.data) + feature);
    default: return load_run<kVec>(static_cast<const float*>(vec.data) + feature);
  }
}

template <typename T, int kVec, bool kCheapOnly>
__global__ void __launch_bounds__(kMaxTeam)
    group_norm_kernel(const T* x, T* y, int64_t total_groups, int group_size, int groups, int team, float eps,
                      const __grid_constant__ ChainVector weight, const __grid_constant__ ChainVector bias,
                      const __grid_constant__ ChainProgram program) {
  constexpr int kAccesses = kValuesPerThread / kVec;
  // AlignedArray, not Array: an Array is aligned as its element, and accesses through it compiled to 2- and
  // 4-byte loads and stores (docs/perf-notes.md, item 47).
  using Access = cutlass::AlignedArray<T, kVec>;
  cutlass::NumericArrayConverter<float, T, kVec> to_float;
  __shared__ float scratch[kMaxTeam / 32];

  const int teams_per_block = blockDim.x / team;
  const int member = threadIdx.x % team;
  const int accesses = group_size / kVec;
  // The loop bound is uniform across the block, so every thread reaches team_sum's barriers.
  for (int64_t first = int64_t(blockIdx.x) * teams_per_block; first < total_groups;
       first += int64_t(gridDim.x) * teams_per_block) {
    const int64_t group = first + threadIdx.x / team;
    const bool group_valid = group < total_groups;
    const int64_t base = (group_valid ? group : 0) * group_size;  // element offset of the group
    const int first_feature = int(group_valid ? group % groups : 0) * group_size;

    // The values stay packed in x's dtype until normalized.
    Access in[kAccesses];
    float sum = 0.f;
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kAccesses; ++j) {
      const int a = member + j * team;
      if (group_valid && a < accesses) {
        in[j] = reinterpret_cast<const Access*>(x + base)[a];
      } else {
        in[j].clear();
      }
      const cutlass::Array<float, kVec> f = to_float(in[j]);
      CUTLASS_PRAGMA_UNROLL
      for (int e = 0; e < kVec; ++e) sum += f[e];
    }
    const float mean = team_sum(sum, team, scratch) / float(group_size);
    float squares = 0.f;
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kAccesses; ++j) {
      if (member + j * team < accesses) {
        const cutlass::Array<float, kVec> f = to_float(in[j]);
        CUTLASS_PRAGMA_UNROLL
        for (int e = 0; e < kVec; ++e) squares += (f[e] - mean) * (f[e] - mean);
      }
    }
    const float rstd = rsqrtf(team_sum(squares, team, scratch) / float(group_size) + eps);

    // Normalize and run the post-chain over all the thread's values at once: one inlined copy of the interpreter.
    // Slots past the group's end (and in invalid groups) clamp their feature so that vector reads stay in bounds;
    // they are never stored.
    auto local_of = [&](int i) { return (member + i / kVec * team) * kVec + i % kVec; };
    auto feature_of = [&](int i) { return int64_t(first_feature + min(local_of(i), group_size - 1)); };
    cutlass::Array<float, kValuesPerThread> v;
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kAccesses; ++j) {
      const int64_t feature = first_feature + min(member + j * team, accesses - 1) * kVec;  // of value 0
      const cutlass::Array<float, kVec> f = to_float(in[j]);
      const cutlass::Array<float, kVec> gamma = load_vector_run<kVec>(weight, feature, 1.f);
      const cutlass::Array<float, kVec> beta = load_vector_run<kVec>(bias, feature, 0.f);
      CUTLASS_PRAGMA_UNROLL
      for (int e = 0; e < kVec; ++e) v[j * kVec + e] = (f[e] - mean) * (rstd * gamma[e]) + beta[e];
    }
    const cutlass::Array<float, kValuesPerThread> normalized = v;  // the chain's v0 (residual)
    apply_chain<precision_for<T>, kCheapOnly>(program, v, feature_of, [&](int i) { return normalized[i]; });
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kAccesses; ++j) {
      const int a = member + j * team;
      if (group_valid && a < accesses) {
        cutlass::Array<float, kVec> f;
        CUTLASS_PRAGMA_UNROLL
        for (int e = 0; e < kVec; ++e) f[e] = v[j * kVec + e];
        Access out;
        static_cast<cutlass::Array<T, kVec>&>(out) = cutlass::NumericArrayConverter<T, float, kVec>{}(f);
        reinterpret_cast<Access*>(y + base)[a] = out;
      }
    }
  }
}

// The team for a group of `accesses` accesses: the smallest power of two holding it, 0 when none does.
inline int team_for(int64_t accesses, int accesses_per_thread) {
  int team = 1;
  while (int64_t(team) * accesses_per_thread < accesses) team *= 2;
  return team <= kMaxTeam ? team : 0;
}

template <typename T, int kVec>
cudaError_t launch(const GroupNormArgs& args, const ChainProgram& program, cudaStream_t stream) {
  const int64_t group_size = args.features / args.groups;
  const int team = team_for(group_size / kVec, kValuesPerThread / kVec);
  if (team == 0) return cudaErrorInvalidValue;  // the caller checks kMaxGroupNormGroupSize first
  const int block = std::max(team, kMinBlock);
  const int64_t total_groups = args.rows * args.groups;
  const int64_t blocks = std::min<int64_t>((total_groups + block / team - 1) / (block / team), 1 << 30);
  // A post-chain of cheap ops only runs an interpreter without the other ops' code: fewer registers, less spill.
  auto* kernel = chain_is_cheap(program) ? group_norm_kernel<T, kVec, true> : group_norm_kernel<T, kVec, false>;
  kernel<<<int(blocks), block, 0, stream>>>(static_cast<const T*>(args.x), static_cast<T*>(args.y), total_groups,
                                            int(group_size), int(args.groups), team, args.eps, args.weight, args.bias,
                                            program);
  return cudaGetLastError();
}

}  // namespace group_norm_detail

// 16-byte accesses where the group's bytes allow them and the pointers are aligned, else one element per access.
template <typename T>
cudaError_t launch_group_norm(const GroupNormArgs& args, const ChainProgram& program, cudaStream_t stream) {
  if (args.rows == 0 || args.features == 0) return cudaSuccess;
  constexpr int kVec = 16 / sizeof(T);
  const bool vectorized = (args.features / args.groups) % kVec == 0 && reinterpret_cast<uintptr_t>(args.x) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(args.y) % 16 == 0;
  return vectorized ? group_norm_detail::launch<T, kVec>(args, program, stream)
                    : group_norm_detail::launch<T, 1>(args, program, stream);
}

}  // namespace cutlass_ext
