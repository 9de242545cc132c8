// The bias and the chain over a whole output tile in registers, before CUTLASS's epilogue stores it: a wrapper of the
// builder's TMA epilogue, whose own fusion then only casts (ChainFusion with an empty program).
//
//   D = cast( chain( acc + bias[n] ) )     // chain by apply_chain_to_tile: each op decoded once per tile
//
// Why: CUTLASS's epilogue visits a tile one subtile at a time (16 or 32 values a thread), with two warpgroup
// barriers and a TMA store between subtiles; running the chain there (ChainNode) decodes every op once per subtile
// and gives a warp no more than one subtile of independent work between barriers. In the ping-pong schedule, where
// one warpgroup's epilogue should fit under the other's mainloop, that epilogue took longer than a K = 1024
// mainloop. Here the chain runs on all of a thread's values with no barrier, then CUTLASS stores the tile.
//
// Measured (docs/perf-notes.md, item 48), gelu chain at 16384x8192x1024, time / F.linear: ping-pong 1.514 -> 1.254
// with this epilogue (H100), 1.483 -> 1.326 (H200), where the cooperative 128x256 kernel took 1.40. Used by the
// ping-pong configuration the heuristic picks for short K and many tiles only:
//   - The chain still is not free there: the warpgroup running it takes issue slots from the one issuing the MMAs
//     (ncu: the mainloop's HGMMA issue stalls on dispatch and not-selected, the tensor cores wait more).
//   - With an empty chain this kernel is 4-13% slower than plain ping-pong, the cause not found (ptxas spills two
//     registers into the mainloop here and not there; a 64x32 subtile did not help).
//   - On the cooperative 128x256 kernel the same epilogue was faster at long K (2048x8192x8192: 1.084 against
//     1.162) but no faster than the deferred kernel, and slower at K = 1024, where CUTLASS's subtile loop overlaps
//     one subtile's chain with the previous one's stores.
// Cheap ops run inline over the whole tile and costly ones through calls on 16 values: running every op, or the whole
// chain, through such calls was 1.3-1.4x slower (item 48).
//
// The bias is read per column from global memory (one load per column a thread holds, 32 in a 128x128 tile; the
// vector stays in L1), a partial tile's columns past N clamped (those values are never stored).
#pragma once

#include <cute/tensor.hpp>

#include "cutlass_ext/chain_interpreter.cuh"
#include "cutlass_ext/wrapped_epilogue_sm90.hpp"

namespace cutlass_ext::sm90 {

struct TileChainParams {
  const void* bias;  // N values of the output dtype, or nullptr
  ChainProgram chain;
};

template <class Base, class Element>
struct TileChainEpilogue : WrappedEpilogue<Base, TileChainParams> {
  static constexpr int kTileM = cute::size<0>(typename Base::CtaTileMNK{});
  static constexpr int kTileN = cute::size<1>(typename Base::CtaTileMNK{});
  // Costly ops run out of line on this many values a call (apply_chain_to_tile); so do whole chains that read a
  // per-feature vector or their input (apply_chain_by_chunks).
  static constexpr int kChunk = 16;

  using Params = typename WrappedEpilogue<Base, TileChainParams>::Params;

  CUTLASS_DEVICE TileChainEpilogue(Params const& params, typename Base::TensorStorage& shared)
      : WrappedEpilogue<Base, TileChainParams>(params, shared), tile(params.extra) {}

  template <class ProblemShapeMNKL, class TileShapeMNK, class TileCoordMNKL, class AccEngine, class AccLayout,
            class TiledMma>
  CUTLASS_DEVICE auto store(typename Base::LoadPipeline load_pipeline,
                            typename Base::LoadPipelineState load_state,
                            typename Base::StorePipeline store_pipeline,
                            typename Base::StorePipelineState store_state, ProblemShapeMNKL problem_shape_mnkl,
                            TileShapeMNK tile_shape_mnk, TileCoordMNKL tile_coord_mnkl,
                            cute::Tensor<AccEngine, AccLayout> accumulators, TiledMma tiled_mma, int thread_idx,
                            typename Base::TensorStorage& shared, int subtile_idx = -1) {
    bias_and_chain(accumulators, problem_shape_mnkl, tile_coord_mnkl, tiled_mma, thread_idx);
    return Base::store(load_pipeline, load_state, store_pipeline, store_state, problem_shape_mnkl, tile_shape_mnk,
                       tile_coord_mnkl, accumulators, tiled_mma, thread_idx, shared, subtile_idx);
  }

 private:
  TileChainParams const& tile;

  template <class Acc, class ProblemShapeMNKL, class TileCoordMNKL, class TiledMma>
  CUTLASS_DEVICE void bias_and_chain(Acc& accumulators, ProblemShapeMNKL problem_shape_mnkl,
                                     TileCoordMNKL tile_coord_mnkl, TiledMma tiled_mma, int thread_idx) {
    using namespace cute;
    // The wgmma accumulator fragment: ((2 columns, 2 rows, column blocks of 8), MMA_M, MMA_N); a column's values
    // are (c, j, mma_n) with every r and mma_m.
    using Layout = typename Acc::layout_type;
    static_assert(rank(Layout{}) == 3 && rank<0>(Layout{}) == 3, "the wgmma accumulator layout");
    constexpr int kCols = size<0, 0>(Layout{}), kRows = size<0, 1>(Layout{}), kBlocks = size<0, 2>(Layout{});
    constexpr int kMmaM = size<1>(Layout{}), kMmaN = size<2>(Layout{});
    constexpr int kValues = size(Layout{});
    const int n = int(get<1>(problem_shape_mnkl));
    const int n0 = int(get<1>(tile_coord_mnkl)) * kTileN;
    Tensor coords = tiled_mma.get_slice(thread_idx).partition_C(
        make_identity_tensor(make_shape(Int<kTileM>{}, Int<kTileN>{})));  // (m, n) in the tile, per value
    // The output feature of a value, by its index or its (MMA, MMA_M, MMA_N) coordinate.
    auto feature = [&](auto i) { return unsigned(min(n0 + int(get<1>(coords(i))), n - 1)); };

    if (tile.bias != nullptr) {  // uniform
      const Element* bias = static_cast<const Element*>(tile.bias);
      CUTLASS_PRAGMA_UNROLL
      for (int nn = 0; nn < kMmaN; ++nn) {
        CUTLASS_PRAGMA_UNROLL
        for (int j = 0; j < kBlocks; ++j) {
          CUTLASS_PRAGMA_UNROLL
          for (int c = 0; c < kCols; ++c) {
            const float b = float(bias[feature(make_coord(make_coord(c, 0, j), 0, nn))]);
            CUTLASS_PRAGMA_UNROLL
            for (int mm = 0; mm < kMmaM; ++mm) {
              CUTLASS_PRAGMA_UNROLL
              for (int r = 0; r < kRows; ++r) accumulators(make_coord(make_coord(c, r, j), mm, nn)) += b;
            }
          }
        }
      }
    }
    if (tile.chain.num_ops == 0) return;  // uniform

    cutlass::Array<float, kValues> v;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kValues; ++i) v[i] = accumulators(i);
    if (tile.chain.reads != 0) {  // uniform: the chain needs feature indices or its input beside its values
      apply_chain_by_chunks<precision_for<Element>, kChunk>(tile.chain, v, feature);
    } else {
      apply_chain_to_tile<precision_for<Element>, kChunk>(tile.chain, v);
    }
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kValues; ++i) accumulators(i) = v[i];
  }
};

}  // namespace cutlass_ext::sm90
