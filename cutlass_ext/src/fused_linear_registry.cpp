// The compiled fused-Linear configurations and the shape heuristic that picks one.
#include <algorithm>

#include "cutlass_ext/fused_linear.h"

namespace cutlass_ext {
namespace {

std::vector<FusedLinearKernel>& registry() {
  static std::vector<FusedLinearKernel> kernels;  // filled by static initializers at load, read-only after
  return kernels;
}

const FusedLinearKernel* find(DType dtype, int tile_m, int tile_n, bool pingpong) {
  for (const FusedLinearKernel* k : fused_linear_kernels(dtype)) {
    if (k->tile_m == tile_m && k->tile_n == tile_n && k->pingpong == pingpong) return k;
  }
  return nullptr;
}

int64_t tiles(int64_t m, int64_t n, int tile_m, int tile_n) {
  return ((m + tile_m - 1) / tile_m) * ((n + tile_n - 1) / tile_n);
}

}  // namespace

bool register_fused_linear_kernel(FusedLinearKernel kernel) {
  registry().push_back(std::move(kernel));
  return true;
}

std::vector<const FusedLinearKernel*> fused_linear_kernels(DType dtype) {
  std::vector<const FusedLinearKernel*> out;
  for (const FusedLinearKernel& k : registry()) {
    if (k.dtype == dtype) out.push_back(&k);
  }
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->name < b->name; });
  return out;
}

// Shape buckets, measured on an H200 (docs/perf-notes.md, "fused Linear"). Preferences fall through when a
// configuration is not compiled.
const FusedLinearKernel* choose_fused_linear_kernel(DType dtype, int m, int n, int k, const ChainProgram& program,
                                                    int sm_count) {
  (void)k;
  const FusedLinearKernel* pick = nullptr;
  if (m <= 64) {
    // M in (0, 64]: a 64-row tile wastes the least of each MMA.
    pick = find(dtype, 64, 128, true);
  } else if (tiles(m, n, 128, 256) < 2 * sm_count) {
    // Fewer than two waves of 128x256 tiles: smaller ping-pong tiles keep every SM busy and hide the chain.
    pick = find(dtype, 128, 128, true);
  } else if (chain_is_cheap(program)) {
    // Large, cheap epilogue: the cooperative 128x256 tile has the most MMA throughput.
    pick = find(dtype, 128, 256, false);
  } else {
    // Large, with exp/erf/tanh in the chain: ping-pong hides the epilogue behind the other warpgroup's MMAs.
    pick = find(dtype, 128, 128, true);
  }
  if (pick == nullptr) {
    const auto all = fused_linear_kernels(dtype);
    pick = all.empty() ? nullptr : all.front();
  }
  return pick;
}

}  // namespace cutlass_ext
