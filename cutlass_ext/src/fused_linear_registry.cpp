// The compiled fused-Linear configurations and the shape heuristic that picks one.
#include <algorithm>

#include "cutlass_ext/fused_linear.h"

namespace cutlass_ext {
namespace {

std::vector<FusedLinearKernel>& registry() {
  static std::vector<FusedLinearKernel> kernels;  // filled by static initializers at load, read-only after
  return kernels;
}

// Lookups walk the registry in place: they run on every call, and a (dtype, epilogue, tile, schedule) or a
// name matches at most one configuration, so no sorted copy is needed.
template <class Match>
const FusedLinearKernel* find_if(DType dtype, FusedEpilogue epilogue, Match match) {
  for (const FusedLinearKernel& k : registry()) {
    if (k.dtype == dtype && k.epilogue == epilogue && match(k)) return &k;
  }
  return nullptr;
}

const FusedLinearKernel* find_config(DType dtype, FusedEpilogue epilogue, int tile_m, int tile_n,
                                     const char* schedule, int splits = 1) {
  return find_if(dtype, epilogue, [&](const FusedLinearKernel& k) {
    return k.tile_m == tile_m && k.tile_n == tile_n && k.schedule == schedule && k.splits == splits;
  });
}

int64_t tiles(int64_t m, int64_t n, int tile_m, int tile_n) {
  return ((m + tile_m - 1) / tile_m) * ((n + tile_n - 1) / tile_n);
}

// bf16/fp16 with at most 64 output tiles: a split-K configuration (SplitKLinear, fused_linear_sm90.cuh), or nullptr.
// Measured (H200, bf16, mul | hardtanh | gelu, time / F.linear, benchmarks/bench_configs.py, perf-notes item 29): with
// few tiles the one-kernel GEMM leaves most SMs idle (128x1024x8192 on 64x128 ping-pong: 1.72x), and splitting K
// until splits x tiles reaches ~128 CTAs was best or within 7% of the best split (the same shape: 0.93x with 8
// splits, 0.96x with 4, 1.03x with 16); more than 8 splits never paid, nor slices under 512 columns of K. The
// 64x128 ping-pong tile split best up to M = 128 (0.93x against 0.98x for 128x128 at 128x1024x8192) and at K = 1024
// (512x1024x1024: 1.35x against 1.50x); at 512 rows and longer K the 128x128 cooperative (512x1024x8192: 1.08x with
// 4 splits, against 1.20x). Past 64 tiles the one-kernel configurations were as fast or faster (128x8192x8192:
// 1.08x unsplit, 1.15x with 2 splits).
const FusedLinearKernel* split_k_config(DType dtype, int m, int n, int k) {
  const bool narrow = m <= 128 || k <= 1024;
  const int tile_m = narrow ? 64 : 128;
  const int64_t output_tiles = tiles(m, n, tile_m, 128);
  if (output_tiles > 64) return nullptr;
  for (int splits : {8, 4, 2}) {
    if (output_tiles * splits <= 128 && k / splits >= 512 && k % (8 * splits) == 0) {
      return find_config(dtype, FusedEpilogue::kChain, tile_m, 128, narrow ? "pingpong" : "cooperative", splits);
    }
  }
  return nullptr;
}

}  // namespace

bool register_fused_linear_kernel(FusedLinearKernel kernel) {
  registry().push_back(std::move(kernel));
  return true;
}

const FusedLinearKernel* find_fused_linear_kernel(DType dtype, FusedEpilogue epilogue, std::string_view name) {
  return find_if(dtype, epilogue, [&](const FusedLinearKernel& k) { return k.name == name; });
}

std::vector<const FusedLinearKernel*> fused_linear_kernels(DType dtype, FusedEpilogue epilogue) {
  std::vector<const FusedLinearKernel*> out;
  for (const FusedLinearKernel& k : registry()) {
    if (k.dtype == dtype && k.epilogue == epilogue) out.push_back(&k);
  }
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->name < b->name; });
  return out;
}

// Shape buckets, from per-configuration timings (benchmarks/bench_configs.py; before it, a --configs mode of
// bench_linear.py) on H200s and H100s, bf16, with mul | hardtanh | gelu (docs/perf-notes.md, "fused Linear"). A
// preference falls through to the first compiled configuration when it is not in the build.
const FusedLinearKernel* choose_fused_linear_kernel(DType dtype, FusedEpilogue epilogue, int m, int n, int k,
                                                    const ChainProgram& program, int sm_count) {
  // Measured: the chain moved the best configuration only between near-ties, except in the short-K many-tiles bucket
  // and the last one below.
  const bool has_chain = program.num_ops > 0;
  if (epilogue == FusedEpilogue::kGroupNorm) {  // one configuration: 128x256, 1x2 cluster
    return find_if(dtype, epilogue, [](const FusedLinearKernel&) { return true; });
  }
  const int64_t tiles_128 = tiles(m, n, 128, 128);
  const int64_t tiles_256 = tiles(m, n, 128, 256);
  const bool wave_256 = tiles_256 * 10 >= int64_t(sm_count) * 9;  // at least 90% of a wave of 128x256 tiles
  const FusedLinearKernel* pick = nullptr;
  auto prefer = [&](int tile_m, int tile_n, const char* schedule) {
    return find_config(dtype, epilogue, tile_m, tile_n, schedule);
  };
  const bool adds_source = epilogue == FusedEpilogue::kSourceChain;
  if (dtype == DType::kF32) {
    // TF32: the bf16 buckets less the ping-pong 128x128 one (a 128x128x32 float stage is as large as a 128x128x64
    // bf16 one, and ping-pong did not beat cooperative at long K there). adds_source (promoted accumulation)
    // has no 128x256 tile.
    if (m <= 128 || tiles_128 <= 32) {
      pick = prefer(64, 128, "pingpong");
    } else if (tiles_128 <= 2 * sm_count || adds_source) {
      pick = prefer(128, 128, "cooperative");
    } else {
      pick = prefer(128, 256, "cooperative");
    }
  } else if (const FusedLinearKernel* split =
                 epilogue == FusedEpilogue::kChain ? split_k_config(dtype, m, n, k) : nullptr) {
    pick = split;  // at most 64 output tiles: split K
  } else if (m <= 128 || tiles_128 <= 32) {
    // M in (0, 128], or at most 32 tiles of 128x128: 64-row tiles give twice the CTAs and waste less of each MMA.
    pick = prefer(64, 128, "pingpong");
  } else if (k <= 2048 && tiles_128 >= (has_chain ? 8 : 3) * int64_t(sm_count)) {
    // Short K and many tiles (8 waves of 128x128 tiles with a chain, 3 without): ping-pong, one warpgroup's epilogue
    // beside the other's mainloop; with a chain, the epilogue that runs it on the whole tile (perf-notes item 48,
    // time / F.linear, gelu chain, this pick first): 16384x8192x1024 1.33 against 1.40 for the 128x256 cooperative
    // (H200), 1.25 against plain ping-pong's 1.51 (H100); 8192x4096x1024 (15.5 waves) 1.40 against 1.42; with 4 waves
    // the cooperative wins (2048x4096x1024: 1.42 against 1.40). Empty chain, plain ping-pong against the cooperative:
    // 16384x8192x1024 0.93 against 1.09, 2048x4096x1024 1.00 against 1.04; 512x8192x1024 (2 waves) 1.13 against 1.06.
    pick = prefer(128, 128, has_chain ? "pingpong_tilechain" : "pingpong");
  } else if (k <= 2048 && tiles_256 >= sm_count / 2) {
    // Short K, at least half a wave of 128x256 tiles: the chain costs as much as the mainloop whatever the
    // schedule; the 128x256 cooperative tile puts the most threads on it (4096x1024x1024: 25.2 us against 29.0
    // for 128x128 cooperative, H100).
    pick = prefer(128, 256, "cooperative");
  } else if (tiles_128 <= 2 * sm_count && !wave_256) {
    // Up to two waves of 128x128 tiles and under ~a wave of 128x256: 128x128 cooperative, a 2x1 cluster sharing
    // the weight loads.
    pick = prefer(128, 128, "cooperative");
  } else if (k <= 4096 && n > 1024 && tiles_128 > 2 * sm_count) {
    // Many tiles, moderate K: ping-pong hides the chain behind the other warpgroup's MMAs; its 2x1 cluster halves
    // the weight loads (8192x4096x4096: 442 us against 518 for 1x1).
    pick = prefer(128, 128, "pingpong");
  } else {
    // The 128x256 cooperative tile has the most MMA throughput: at least ~a wave of its tiles and long K
    // (1024x8192x8192, H100, CUDA-graph replay: 178.7 us empty, 194.5 with the gelu chain, against 190.6 and
    // 199.3 for 128x128 ping-pong; with the swish chain the two are within 1%); N = 1024 at K = 4096
    // (8192x1024x4096: 1.18x F.linear against 1.29-1.32x for ping-pong, two runs); and a near-full single wave
    // (512x8192x4096: 1.18x against 1.24-1.25x for 128x128 cooperative; perf-notes item 25).
    pick = prefer(128, 256, "cooperative");
  }
  // bf16/fp16 with a chain, long K and more than a wave of 128x256 tiles: the deferred-chain variant of the 128x256
  // cooperative (deferred_chain_epilogue_sm90.hpp) runs the chain of the tiles it can, never a CTA's last, during
  // the next tile's mainloop (H100, time / F.linear, perf-notes item 26: gelu chain 2048x8192x8192 0.998 against
  // 1.045, 4096-16384 rows 3-6% faster; at 1024 rows a gain of 0-4%, within the noise). At one tile per CTA it
  // costs a few percent more than the plain kernel, and at short K its chain warps compete with the consumers' own
  // chain for issue slots (8192x4096x1024: 1.711 against 1.556). In TF32 it was no faster on the H100 nor on the
  // H200 (perf-notes item 43; not compiled).
  const bool defers = has_chain && epilogue == FusedEpilogue::kChain && dtype != DType::kF32 && k > 4096 &&
                      tiles_256 > sm_count;
  if (defers && pick != nullptr && pick->tile_m == 128 && pick->tile_n == 256 && pick->schedule == "cooperative") {
    if (const FusedLinearKernel* deferred = prefer(128, 256, "cooperative_deferred")) pick = deferred;
  }
  if (pick == nullptr) {  // the preferred configuration is not in this build: the first compiled one-kernel config
    for (const FusedLinearKernel* k : fused_linear_kernels(dtype, epilogue)) {
      if (k->splits == 1) return k;
    }
  }
  return pick;
}

}  // namespace cutlass_ext
