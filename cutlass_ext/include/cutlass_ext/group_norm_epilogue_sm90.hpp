// GroupNorm over the output features inside the GEMM's epilogue: out = post(group_norm(pre(acc + bias))), with no
// second pass over the output.
//
// The cooperative 128x256 kernel holds a whole 128x256 output tile in the registers of its two consumer
// warpgroups. In the wgmma accumulator layout a row of a warpgroup's 64x256 half lives in the 4 threads of one
// quad (lanes 4q..4q+3 hold rows q and q+8, 64 values of each), so a row's statistics over the tile are a
// thread-local sum and two shuffles. A group of 256 features is one tile; a group of 512 is the tile pair of a
// 1x2 cluster (the two CTAs of a cluster always work on the same rows and neighbouring tiles), which swap their
// per-row (mean, M2) through distributed shared memory and combine them (Chan's formula) in the same order.
// Then every value is normalized in place and CUTLASS's epilogue stores it, running the post-chain on the way
// (ChainNode over the accumulator).
//
// Like torch on a Linear's output, the statistics and the normalization see the pre-norm values rounded to the
// output dtype.
//
// The swap, per quad q of consumer threads (thread t of both CTAs holds the same rows): the quad's first lane
// writes its two rows' (mean, M2) into the peer's slot [parity][q] and then the slot's flag, a tile sequence
// number, with a release store; the quad's lanes read their own slot after an acquire load of its flag shows the
// number. Slots alternate by tile parity: a CTA writes tile t's slot only after it has read the peer's tile t-1,
// which the peer wrote after reading its own tile t-2 slot, so a slot is never overwritten before it has been
// read. The flags start at 0 (sequence numbers start at 1), written before the kernel's cluster barrier. Both CTAs
// of a cluster run the same tiles in the same order, so neither exits while the other may still write to it.
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

#include "cutlass_ext/chain_interpreter.cuh"
#include "cutlass_ext/wrapped_epilogue_sm90.hpp"

namespace cutlass_ext::sm90 {

// What the norm needs besides the post-chain (which is the base epilogue's fusion).
struct GroupNormEpilogueParams {
  const void* linear_bias;  // N values of the output dtype, or nullptr
  ChainProgram pre;         // on acc + bias, before the statistics
  int group_size;           // 256 or 512 with the 128x256 tile (group_norm_epilogue_takes)
  float eps;
  ChainVector weight;       // gamma[feature], or data == nullptr for 1
  ChainVector bias;         // beta[feature], or data == nullptr for 0
};

template <class Base, class Element>
struct GroupNormEpilogue : WrappedEpilogue<Base, GroupNormEpilogueParams> {
  static constexpr int kTileM = cute::size<0>(typename Base::CtaTileMNK{});
  static constexpr int kTileN = cute::size<1>(typename Base::CtaTileMNK{});
  static constexpr int kQuads = kTileM / 2;  // 4 consumer threads per quad, 2 rows each (wgmma layout)
  static_assert(kTileN == 256 && kTileM == 128, "written for the 128x256 cooperative tile");

  static constexpr int kThreads = 2 * cutlass::NumThreadsPerWarpGroup;  // the two consumer warpgroups
  static_assert(kThreads == kTileN, "one consumer thread per column stages the tile's vectors");

  struct Exchange {
    float4 stats[2][kQuads];  // [tile parity][quad]: mean and M2 of the quad's two rows
    uint32_t flag[2][kQuads];
    float vectors[3][kTileN];  // the tile's Linear bias, gamma and beta, as float
  };
  struct TensorStorage {
    typename Base::TensorStorage base;
    Exchange exchange;
  };
  struct SharedStorage {
    TensorStorage tensors;
    typename Base::PipelineStorage pipeline;
  };
  using Params = typename WrappedEpilogue<Base, GroupNormEpilogueParams>::Params;

  // The kernel constructs one epilogue object in every thread before its cluster barrier, and more later in the
  // epilogue warps; thread 0 (a producer thread, which constructs only the first) zeroes the flags, and the fence
  // makes that visible to the peer before the barrier lets it write.
  CUTLASS_DEVICE GroupNormEpilogue(Params const& params, TensorStorage& shared)
      : WrappedEpilogue<Base, GroupNormEpilogueParams>(params, shared.base), norm(params.extra),
        exchange(shared.exchange) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < 2 * kQuads; ++i) exchange.flag[i / kQuads][i % kQuads] = 0;
      asm volatile("fence.acq_rel.cluster;" ::: "memory");
    }
  }

  template <class ProblemShapeMNKL, class TileShapeMNK, class TileCoordMNKL, class TiledMma>
  CUTLASS_DEVICE auto load(typename Base::LoadPipeline pipeline, typename Base::LoadPipelineState state,
                           ProblemShapeMNKL problem_shape_mnkl, TileShapeMNK tile_shape_mnk,
                           TileCoordMNKL tile_coord_mnkl, TiledMma tiled_mma, int thread_idx, TensorStorage& shared,
                           int subtile_idx = -1) {
    return Base::load(pipeline, state, problem_shape_mnkl, tile_shape_mnk, tile_coord_mnkl, tiled_mma, thread_idx,
                      shared.base, subtile_idx);
  }

  template <class ProblemShapeMNKL, class TileShapeMNK, class TileCoordMNKL, class AccEngine, class AccLayout,
            class TiledMma>
  CUTLASS_DEVICE auto store(typename Base::LoadPipeline load_pipeline,
                            typename Base::LoadPipelineState load_state,
                            typename Base::StorePipeline store_pipeline,
                            typename Base::StorePipelineState store_state, ProblemShapeMNKL problem_shape_mnkl,
                            TileShapeMNK tile_shape_mnk, TileCoordMNKL tile_coord_mnkl,
                            cute::Tensor<AccEngine, AccLayout> accumulators, TiledMma tiled_mma, int thread_idx,
                            TensorStorage& shared, int subtile_idx = -1) {
    normalize(accumulators, problem_shape_mnkl, tile_coord_mnkl, tiled_mma, thread_idx);
    return Base::store(load_pipeline, load_state, store_pipeline, store_state, problem_shape_mnkl, tile_shape_mnk,
                       tile_coord_mnkl, accumulators, tiled_mma, thread_idx, shared.base, subtile_idx);
  }

 private:
  GroupNormEpilogueParams const& norm;
  Exchange& exchange;
  uint32_t tiles_done = 0;

  // (mean, M2) of the peer CTA's half of this quad's two rows, after publishing ours.
  CUTLASS_DEVICE float4 swap_with_peer(float4 mine, int quad, bool first_lane) {
    const uint32_t seq = ++tiles_done;
    const int parity = seq & 1;
    const dim3 id = cute::block_id_in_cluster();
    const uint32_t peer = id.x + (id.y ^ 1u) * cute::cluster_shape().x;
    const uint32_t stats = cute::cast_smem_ptr_to_uint(&exchange.stats[parity][quad]);
    const uint32_t flag = cute::cast_smem_ptr_to_uint(&exchange.flag[parity][quad]);
    uint32_t peer_stats, peer_flag;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(peer_stats) : "r"(stats), "r"(peer));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(peer_flag) : "r"(flag), "r"(peer));
    if (first_lane) {
      asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};"
                   :: "r"(peer_stats), "f"(mine.x), "f"(mine.y), "f"(mine.z), "f"(mine.w) : "memory");
      asm volatile("st.release.cluster.shared::cluster.u32 [%0], %1;" :: "r"(peer_flag), "r"(seq) : "memory");
    }
    uint32_t seen;
    do {
      asm volatile("ld.acquire.cluster.shared::cta.u32 %0, [%1];" : "=r"(seen) : "r"(flag) : "memory");
    } while (seen != seq);
    float4 theirs;
    asm volatile("ld.shared::cta.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(theirs.x), "=f"(theirs.y), "=f"(theirs.z), "=f"(theirs.w) : "r"(stats) : "memory");
    return theirs;
  }

  template <class Acc, class ProblemShapeMNKL, class TileCoordMNKL, class TiledMma>
  CUTLASS_DEVICE void normalize(Acc& accumulators, ProblemShapeMNKL problem_shape_mnkl, TileCoordMNKL tile_coord_mnkl,
                                TiledMma tiled_mma, int thread_idx) {
    using namespace cute;
    // One m64n256 wgmma atom per warpgroup; its per-thread fragment is (2 columns, 2 rows, 32 column blocks of 8).
    using AccLayout = typename Acc::layout_type;
    static_assert(size<1>(AccLayout{}) == 1 && size<2>(AccLayout{}) == 1, "one wgmma atom per warpgroup");
    static_assert(size<0>(AccLayout{}) == 2 * 2 * (kTileN / 8), "the m64n256 accumulator fragment");
    constexpr int kBlocks = kTileN / 8;
    const int n = int(get<1>(problem_shape_mnkl));
    const int n0 = int(get<1>(tile_coord_mnkl)) * kTileN;
    Tensor coords = tiled_mma.get_slice(thread_idx).partition_C(
        make_identity_tensor(make_shape(Int<kTileM>{}, Int<kTileN>{})));  // (m, n) in the tile, per value
    // Value (c, r, j): column pair c, row r (q or q + 8), column block j.
    auto acc = [&](int c, int r, int j) -> float& { return accumulators(make_coord(make_coord(c, r, j), 0, 0)); };
    auto feature = [&](int i) { return min(n0 + int(get<1>(coords(i))), n - 1); };  // clamped: vector reads

    // The tile's bias, gamma and beta into shared memory, one coalesced load of each per thread: read from global
    // memory per value, they were 192 dependent loads per thread per tile and cost more than the rest of the norm.
    // The previous tile's readers are done: CUTLASS's store synchronizes the consumer threads after them.
    {
      const int f = min(n0 + thread_idx, n - 1);
      const Element* linear_bias = static_cast<const Element*>(norm.linear_bias);
      exchange.vectors[0][thread_idx] = linear_bias == nullptr ? 0.f : float(linear_bias[f]);
      exchange.vectors[1][thread_idx] = norm.weight.data == nullptr ? 1.f : load_vector_element(norm.weight, f);
      exchange.vectors[2][thread_idx] = norm.bias.data == nullptr ? 0.f : load_vector_element(norm.bias, f);
      cutlass::arch::NamedBarrier::sync(kThreads, cutlass::arch::ReservedNamedBarriers::EpilogueBarrier);
    }
    auto tile_column = [&](int c, int j) { return int(get<1>(coords(make_coord(make_coord(c, 0, j), 0, 0)))); };

    // v = pre(acc + bias), rounded to the output dtype as the stored Linear output would be.
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kBlocks; ++j) {
      CUTLASS_PRAGMA_UNROLL
      for (int c = 0; c < 2; ++c) {
        const float b = exchange.vectors[0][tile_column(c, j)];
        acc(c, 0, j) += b;
        acc(c, 1, j) += b;
      }
    }
    if (norm.pre.num_ops > 0) {  // uniform; out of line, 16 values a call, as in ChainNode
      constexpr int kValues = size(AccLayout{});
      cutlass::Array<float, kValues> v;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kValues; ++i) v[i] = accumulators(i);
      apply_chain_by_chunks<precision_for<Element>, 16>(norm.pre, v, feature);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kValues; ++i) accumulators(i) = v[i];
    }
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < size(accumulators); ++i) accumulators(i) = float(Element(accumulators(i)));

    // Per row (r = 0: row q, r = 1: row q + 8 of the warp's 16), the mean and M2 over this tile's 256 columns: the
    // thread's 64 values, then the quad's 4 threads.
    float mean[2], m2[2];
    CUTLASS_PRAGMA_UNROLL
    for (int r = 0; r < 2; ++r) {
      float sum = 0.f;
      CUTLASS_PRAGMA_UNROLL
      for (int j = 0; j < kBlocks; ++j) sum += acc(0, r, j) + acc(1, r, j);
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      mean[r] = sum * (1.f / kTileN);
      float squares = 0.f;
      CUTLASS_PRAGMA_UNROLL
      for (int j = 0; j < kBlocks; ++j) {
        CUTLASS_PRAGMA_UNROLL
        for (int c = 0; c < 2; ++c) {
          const float d = acc(c, r, j) - mean[r];
          squares += d * d;
        }
      }
      squares += __shfl_xor_sync(0xffffffffu, squares, 1);
      squares += __shfl_xor_sync(0xffffffffu, squares, 2);
      m2[r] = squares;
    }
    float count = float(kTileN);
    if (norm.group_size == 2 * kTileN) {  // uniform: combine with the peer tile, even tile first
      const float4 mine = make_float4(mean[0], m2[0], mean[1], m2[1]);
      const float4 theirs = swap_with_peer(mine, thread_idx / 4, thread_idx % 4 == 0);
      const bool even = (n0 / kTileN) % 2 == 0;
      const float their_mean[2] = {theirs.x, theirs.z}, their_m2[2] = {theirs.y, theirs.w};
      CUTLASS_PRAGMA_UNROLL
      for (int r = 0; r < 2; ++r) {
        const float mean_a = even ? mean[r] : their_mean[r], m2_a = even ? m2[r] : their_m2[r];
        const float mean_b = even ? their_mean[r] : mean[r], m2_b = even ? their_m2[r] : m2[r];
        const float delta = mean_b - mean_a;
        mean[r] = 0.5f * (mean_a + mean_b);
        m2[r] = (m2_a + m2_b) + delta * delta * (0.5f * kTileN);  // n_a n_b / (n_a + n_b), n_a = n_b = 256
      }
      count = 2.f * kTileN;
    }

    // (v - mean) * rstd * gamma + beta, in place; CUTLASS's epilogue then runs the post-chain and stores.
    float rstd[2];
    CUTLASS_PRAGMA_UNROLL
    for (int r = 0; r < 2; ++r) rstd[r] = rsqrtf(m2[r] / count + norm.eps);
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kBlocks; ++j) {
      CUTLASS_PRAGMA_UNROLL
      for (int c = 0; c < 2; ++c) {
        const float gamma = exchange.vectors[1][tile_column(c, j)];
        const float beta = exchange.vectors[2][tile_column(c, j)];
        CUTLASS_PRAGMA_UNROLL
        for (int r = 0; r < 2; ++r) acc(c, r, j) = (acc(c, r, j) - mean[r]) * (rstd[r] * gamma) + beta;
      }
    }
  }
};

}  // namespace cutlass_ext::sm90
