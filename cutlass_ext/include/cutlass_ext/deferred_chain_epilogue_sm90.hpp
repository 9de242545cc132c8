// The chain, run while the tensor cores work on the next tile: a variant of CUTLASS's sm90 cooperative kernel
// whose three idle producer warps run the chain.
//
// Why: in the cooperative schedule both consumer warpgroups run the epilogue after the mainloop, and the tensor
// cores idle meanwhile. A chain such as swish | div | clamp | tanh | clamp is ~40 instructions per output value,
// which at 1024x8192x8192 cost +10-16% over the empty chain (docs/perf-notes.md, round 3), all of it time without
// MMAs. Here the consumers only store acc + bias rounded to the output dtype (CUTLASS's TMA epilogue with an empty
// chain; torch too rounds a Linear's output before its tail), then go on to the next tile's mainloop. Warps 1-3 of
// the producer warpgroup (CUTLASS leaves them idle without a C operand) read the tile back while it is still in
// L2, run the chain and store it again. After their last tile the consumers join them. The work is in chunks of
// rows, claimed one at a time with a ticket counter, so whoever is free takes the next one.
//
// Measured (perf-notes items 21-22): 0.955x the plain kernel's time at 2048x8192x8192 with the gelu chain, a tie at
// 1024 rows, slower at short K (one tile per CTA leaves nothing to hide behind): the heuristic picks it for long K
// only. Why not a stash in shared memory: 64 KB leaves room for 3 mainloop stages instead of 4 (3-6% with an empty
// chain), and CUTLASS's own kernel gives its epilogue one idle warp, which cannot keep up with the mainloop.
//
// Synchronization, with p a tile's sequence number in this CTA (every warp walks the same tile sequence):
//   tiles_written: the number of tiles stored; after a tile's stores the consumers meet at a named barrier and
//                  one of them adds 1 (release). A chain warp waits for a count past p (acquire) to read tile p.
//   next_ticket:   chunk c of tile p is ticket p * kChunks + c; a warp takes the next ticket and runs its chunk, until
//                  the ticket's tile is past the CTA's last one. Tickets only grow, so each warp meets the tiles in
//                  order and every chunk runs exactly once.
// The output tile is its own buffer: nothing is reused, so the consumers never wait for the chain warps.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/reg_reconfig.h>
#include <cutlass/numeric_conversion.h>

#include "cutlass_ext/chain_interpreter.cuh"

namespace cutlass_ext::sm90 {

struct DeferredChainParams {
  void* out;  // M x N, row stride ldo; 16-byte aligned rows
  int64_t ldo;
  ChainProgram chain;
};

// What the kernel below needs from its epilogue. It is also the CollectiveEpilogue that CUTLASS's cooperative kernel
// (which this kernel derives from, for its arguments, shared storage and launch) is instantiated with. Base is the
// builder's epilogue for the same tile and fusion, run with an empty chain: it stores acc + bias, rounded.
template <class Base, class Element>
struct DeferredChainEpilogue {
  using ElementC = typename Base::ElementC;
  using StrideC = typename Base::StrideC;
  using ElementD = typename Base::ElementD;
  using StrideD = typename Base::StrideD;
  using ThreadEpilogueOp = typename Base::ThreadEpilogueOp;  // named by GemmUniversalAdapter
  using LoadPipeline = typename Base::LoadPipeline;
  using LoadPipelineState = typename Base::LoadPipelineState;
  using StorePipeline = typename Base::StorePipeline;
  using StorePipelineState = typename Base::StorePipelineState;
  using PipelineStorage = typename Base::PipelineStorage;
  static constexpr bool RequiresTransactionBytes = Base::RequiresTransactionBytes;
  template <class TileShapeMNK>
  static constexpr int get_store_pipe_increment(TileShapeMNK tile) {
    return Base::get_store_pipe_increment(tile);
  }

  static constexpr int kTileM = cute::size<0>(typename Base::CtaTileMNK{});
  static constexpr int kTileN = cute::size<1>(typename Base::CtaTileMNK{});
  static_assert(kTileM == 128 && kTileN == 256, "written for the 128x256 cooperative tile");
  static constexpr int kConsumerThreads = 2 * cutlass::NumThreadsPerWarpGroup;
  static constexpr int kValuesPerLane = 8;  // 16 bytes: a warp covers one 256-column row
  static_assert(kTileN == 32 * kValuesPerLane);
  static constexpr int kRowsPerChunk = 2;
  static constexpr int kChunks = kTileM / kRowsPerChunk;

  struct TensorStorage {
    typename Base::TensorStorage base;
    uint32_t tiles_written;
    uint32_t next_ticket;
  };
  struct SharedStorage {
    TensorStorage tensors;
    PipelineStorage pipeline;
  };
  struct Arguments {
    typename Base::Arguments base;
    DeferredChainParams chain;
  };
  struct Params {
    typename Base::Params base;
    DeferredChainParams chain;
  };

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& shape, Arguments const& args, void* workspace) {
    return Params{Base::to_underlying_arguments(shape, args.base, workspace), args.chain};
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const& shape, Arguments const& args) {
    return Base::get_workspace_size(shape, args.base);
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const& shape, Arguments const& args, void* workspace,
                                              cudaStream_t stream, cutlass::CudaHostAdapter* adapter = nullptr) {
    return Base::initialize_workspace(shape, args.base, workspace, stream, adapter);
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const& shape, Arguments const& args) {
    return Base::can_implement(shape, args.base);
  }
  CUTLASS_DEVICE static void prefetch_tma_descriptors(Params const& params) {
    Base::prefetch_tma_descriptors(params.base);
  }

  struct Tile {
    int m0, n0;  // the tile's first row and column
    int m, n;    // the problem's
  };

  // Call in every thread before the kernel's first barrier; thread 0 zeroes the counters.
  CUTLASS_DEVICE DeferredChainEpilogue(Params const& params_, TensorStorage& shared_)
      : base(params_.base, shared_.base), params(params_.chain), shared(shared_) {
    if (threadIdx.x == 0) shared.tiles_written = shared.next_ticket = 0;
  }

  Base base;  // the consumers store each tile with it

  // A consumer thread, after base.store() of a tile: once the tile's TMA stores are complete (the thread that
  // issued them waits) and both warpgroups are here (one may be tiles ahead at short K), the count of stored tiles
  // moves, with release order.
  CUTLASS_DEVICE void publish_tile(int thread_idx) {
    if (thread_idx < cutlass::NumThreadsPerWarp) {  // CUTLASS's epilogue issues its TMA stores from this warp
      asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
      asm volatile("fence.proxy.async.global;" ::: "memory");
    }
    cutlass::arch::NamedBarrier::sync(kConsumerThreads, cutlass::arch::ReservedNamedBarriers::EpilogueBarrier);
    if (thread_idx == 0) {
      const uint32_t counter = cute::cast_smem_ptr_to_uint(&shared.tiles_written);
      asm volatile("red.release.cta.shared::cta.add.u32 [%0], 1;" :: "r"(counter) : "memory");
    }
  }

  // One warp, all lanes: claims chunks and runs the chain on them until the tiles run out. tile_at(p) gives the
  // Tile of sequence number p (called with non-decreasing p), with m0 < 0 past the CTA's last tile.
  template <class TileAt>
  CUTLASS_DEVICE void run_chain(TileAt&& tile_at, int lane) {
    if (params.chain.num_ops == 0) return;  // uniform: the consumers stored the final values
    const uint32_t counter = cute::cast_smem_ptr_to_uint(&shared.tiles_written);
    while (true) {
      uint32_t ticket = 0;
      if (lane == 0) ticket = atomicAdd(&shared.next_ticket, 1u);
      ticket = __shfl_sync(0xffffffffu, ticket, 0);
      const uint32_t seq = ticket / kChunks;
      const Tile tile = tile_at(seq);
      if (tile.m0 < 0) return;
      while (true) {
        uint32_t written;
        asm volatile("ld.acquire.cta.shared::cta.u32 %0, [%1];" : "=r"(written) : "r"(counter) : "memory");
        if (written > seq) break;
        __nanosleep(200);  // spinning would take issue slots from the mainloop's warps
      }
      run_chunk(int(ticket % kChunks), tile, lane);
    }
  }

 private:
  DeferredChainParams const& params;  // the chain and where it runs
  TensorStorage& shared;

  // The chain over kRowsPerChunk rows of the tile, 8 consecutive columns per lane: a 16-byte load and store per
  // lane, a whole 512-byte row per warp instruction. The loads of all rows go first.
  CUTLASS_DEVICE void run_chunk(int chunk, Tile tile, int lane) {
    using Values = cutlass::Array<Element, kValuesPerLane>;
    const int feature = tile.n0 + kValuesPerLane * lane;
    if (feature >= tile.n) return;  // n is a multiple of 8: a lane's 8 columns are all in or all out
    Element* out = static_cast<Element*>(params.out) + feature;
    const int row0 = tile.m0 + chunk * kRowsPerChunk;
    Values in[kRowsPerChunk];
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kRowsPerChunk; ++i) {
      if (row0 + i < tile.m) in[i] = *reinterpret_cast<const Values*>(out + int64_t(row0 + i) * params.ldo);
    }
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kRowsPerChunk; ++i) {
      if (row0 + i >= tile.m) break;
      cutlass::Array<float, kValuesPerLane> v =
          cutlass::NumericArrayConverter<float, Element, kValuesPerLane>{}(in[i]);
      apply_chain(params.chain, v, [&](int k) { return int64_t(feature + k); },
                  [&](int k) { return float(in[i][k]); });
      *reinterpret_cast<Values*>(out + int64_t(row0 + i) * params.ldo) =
          cutlass::NumericArrayConverter<Element, float, kValuesPerLane>{}(v);
    }
  }
};

// CUTLASS's cooperative kernel (Gemm, instantiated with a DeferredChainEpilogue) with its own operator(): the
// warp roles above. Everything else (arguments, shared storage, grid, cluster launch) is Gemm's.
template <class Gemm>
struct DeferredChainKernel : Gemm {
  using typename Gemm::Params;
  using typename Gemm::SharedStorage;
  using typename Gemm::CollectiveMainloop;
  using typename Gemm::CollectiveEpilogue;
  using typename Gemm::TileScheduler;
  using typename Gemm::TiledMma;
  using typename Gemm::TileShape;
  using typename Gemm::ClusterShape;
  using MainloopPipeline = typename CollectiveMainloop::MainloopPipeline;
  using PipelineState = typename CollectiveMainloop::PipelineState;
  using Tile = typename CollectiveEpilogue::Tile;
  static_assert(Gemm::NumMmaWarpGroups == 2 && Gemm::MaxThreadsPerBlock == 384);
  // The consumers' increase (from the launch's 168 per thread) is taken from what the producer warpgroup gives back:
  // 256 x (224 - 168) <= 128 x (168 - 56), or the consumers would wait forever. CUTLASS's split is 40 / 232; the
  // chain warps need more than 40 to run the interpreter without spilling.
  static constexpr uint32_t kProducerRegisters = 56;
  static constexpr uint32_t kConsumerRegisters = 224;

  CUTLASS_DEVICE void operator()(Params const& params, char* smem) {
    using namespace cute;
    SharedStorage& storage = *reinterpret_cast<SharedStorage*>(smem);
    const int thread_idx = int(threadIdx.x);
    const int lane = cutlass::canonical_lane_idx();
    const int warp_group = cutlass::canonical_warp_group_idx();
    const int warp_in_group = cutlass::canonical_warp_idx_sync() % cutlass::NumWarpsPerWarpGroup;
    const bool loads = warp_group == 0 && warp_in_group == 0;

    if (loads && cute::elect_one_sync()) CollectiveMainloop::prefetch_tma_descriptors(params.mainloop);
    CollectiveEpilogue epilogue(params.epilogue, storage.tensors.epilogue);

    typename MainloopPipeline::Params pipeline_params;
    if (loads) pipeline_params.role = MainloopPipeline::ThreadCategory::Producer;
    if (warp_group > 0) pipeline_params.role = MainloopPipeline::ThreadCategory::Consumer;
    pipeline_params.is_leader = thread_idx % cutlass::NumThreadsPerWarpGroup == 0;
    pipeline_params.num_consumers = CollectiveEpilogue::kConsumerThreads;
    pipeline_params.num_producers = CollectiveMainloop::NumProducerThreadEvents;
    pipeline_params.transaction_bytes = params.mainloop.tma_transaction_bytes;
    MainloopPipeline pipeline(storage.pipelines.mainloop, pipeline_params, ClusterShape{});
    // CUTLASS's epilogue takes a C-load pipeline (never used: no C operand) and its TMA-store pipeline.
    using EpilogueLoadPipeline = typename CollectiveEpilogue::LoadPipeline;
    using EpilogueStorePipeline = typename CollectiveEpilogue::StorePipeline;
    typename EpilogueLoadPipeline::Params epilogue_load_params;
    if (warp_group > 0) epilogue_load_params.role = EpilogueLoadPipeline::ThreadCategory::Consumer;
    epilogue_load_params.dst_blockid = cute::block_rank_in_cluster();
    epilogue_load_params.producer_arv_count = cutlass::NumThreadsPerWarp;
    epilogue_load_params.consumer_arv_count = CollectiveEpilogue::kConsumerThreads;
    if constexpr (CollectiveEpilogue::RequiresTransactionBytes) {
      epilogue_load_params.transaction_bytes = params.epilogue.base.tma_transaction_bytes;
    }
    EpilogueLoadPipeline epilogue_load_pipeline(storage.pipelines.epi_load, epilogue_load_params);
    typename EpilogueStorePipeline::Params epilogue_store_params;
    epilogue_store_params.always_wait = true;
    EpilogueStorePipeline epilogue_store_pipeline(epilogue_store_params);

    // The pipeline's barriers and the epilogue's counters are visible to the whole cluster after this.
    asm volatile("fence.acq_rel.cluster;" ::: "memory");
    if constexpr (size(ClusterShape{}) > 1) {
      cute::cluster_arrive_relaxed();
      cute::cluster_wait();
    } else {
      __syncthreads();
    }

    const auto problem_shape = append<4>(params.problem_shape, Int<1>{});
    CollectiveMainloop mainloop;
    auto load_inputs = mainloop.load_init(problem_shape, params.mainloop);
    auto tile_of = [&](auto const& work) {
      return Tile{int(work.M_idx) * CollectiveEpilogue::kTileM, int(work.N_idx) * CollectiveEpilogue::kTileN,
                  int(get<0>(problem_shape)), int(get<1>(problem_shape))};
    };
    auto block_coord = [&](auto const& work) {
      return make_coord(idx2crd(work.M_idx, shape<2>(get<0>(load_inputs))),
                        idx2crd(work.N_idx, shape<2>(get<1>(load_inputs))), _,
                        idx2crd(work.L_idx, shape<4>(get<1>(load_inputs))));
    };
    auto k_tiles = [&](auto const& work) {
      return TileScheduler::get_work_k_tile_count(work, problem_shape, TileShape{});
    };
    // A chain warp's view of the tile sequence: a scheduler of its own, walked forward to tile `seq`.
    auto run_chain = [&] {
      TileScheduler tiles{params.scheduler};
      auto tile_work = tiles.initial_work_tile_info(ClusterShape{});
      uint32_t tile_seq = 0;
      epilogue.run_chain(
          [&](uint32_t seq) {
            while (tile_seq < seq && tile_work.is_valid()) {
              tile_work = get<0>(tiles.fetch_next_work(tile_work));
              ++tile_seq;
            }
            return tile_work.is_valid() ? tile_of(tile_work) : Tile{-1, -1, 0, 0};
          },
          lane);
    };

    TileScheduler scheduler{params.scheduler};
    auto work = scheduler.initial_work_tile_info(ClusterShape{});
    if (warp_group == 0) {
      cutlass::arch::warpgroup_reg_dealloc<kProducerRegisters>();
      if (loads) {
        PipelineState state = cutlass::make_producer_start_state<MainloopPipeline>();
        while (work.is_valid()) {
          auto k_tile_iter = make_coord_iterator(
              idx2crd(TileScheduler::get_work_k_tile_start(work), shape<3>(get<0>(load_inputs))),
              shape<3>(get<0>(load_inputs)));
          mainloop.load(params.mainloop, pipeline, state, load_inputs, block_coord(work), k_tile_iter, k_tiles(work),
                        lane, cute::block_rank_in_cluster(), storage.tensors.mainloop);
          state.advance(k_tiles(work));
          work = get<0>(scheduler.fetch_next_work(work));
        }
        mainloop.load_tail(pipeline, state);  // keeps this CTA alive until its cluster peer is done with it
      } else {
        run_chain();
      }
    } else {
      cutlass::arch::warpgroup_reg_alloc<kConsumerRegisters>();
      const int mma_thread_idx = thread_idx - cutlass::NumThreadsPerWarpGroup;
      TiledMma tiled_mma;
      PipelineState state;
      typename CollectiveEpilogue::LoadPipelineState epilogue_load_state;
      auto epilogue_store_state = cutlass::make_producer_start_state<EpilogueStorePipeline>();
      while (work.is_valid()) {
        auto accumulators = partition_fragment_C(tiled_mma, take<0, 2>(TileShape{}));
        mainloop.mma(pipeline, state, accumulators, k_tiles(work), mma_thread_idx, storage.tensors.mainloop,
                     params.mainloop);
        mainloop.mma_tail(pipeline, state, k_tiles(work));
        state.advance(k_tiles(work));
        auto [load_state, store_state] = epilogue.base.store(
            epilogue_load_pipeline, epilogue_load_state, epilogue_store_pipeline, epilogue_store_state,
            problem_shape, TileShape{}, block_coord(work), accumulators, tiled_mma, mma_thread_idx,
            storage.tensors.epilogue.base);
        epilogue_load_state = load_state;
        epilogue_store_state = store_state;
        epilogue.publish_tile(mma_thread_idx);
        work = get<0>(scheduler.fetch_next_work(work));
      }
      epilogue.base.store_tail(epilogue_load_pipeline, epilogue_load_state, epilogue_store_pipeline,
                               epilogue_store_state);
      run_chain();  // the chain of the tiles left, with the chain warps
    }
  }
};

}  // namespace cutlass_ext::sm90
