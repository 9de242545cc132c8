// The chain, run while the tensor cores work on the next tile: a variant of CUTLASS's sm90 cooperative kernel
// whose three idle producer warps run the chain of some of the tiles.
//
// Why: in the cooperative schedule both consumer warpgroups run the epilogue after the mainloop, and the tensor
// cores idle meanwhile. A chain such as swish | div | clamp | tanh | clamp is ~40 instructions per output value,
// which at 1024x8192x8192 cost +10-16% over the empty chain (docs/perf-notes.md, round 3), all of it time without
// MMAs.
//
// Each tile goes one of two ways, decided by the consumers once its mainloop is done:
//   deferred:      the consumers store acc + bias rounded to the output dtype (CUTLASS's TMA epilogue with an
//                  empty chain; torch too rounds a Linear's output before its tail), publish the tile and start the
//                  next mainloop. Warps 1-3 of the producer warpgroup (CUTLASS leaves them idle without a C
//                  operand) read it back while it is still in L2, run the chain and store it again, in chunks of
//                  rows that whoever is free claims one at a time.
//   in registers:  the consumers run the chain on the accumulators before the store, as the plain cooperative
//                  kernel does, on the same rounded input (ChainNode's kRoundsInput): both ways give equal values.
// A tile is deferred when one of kSlots slots is free (the chain warps have claimed every chunk of the tile it held)
// and it is not the CTA's last one (no mainloop would hide its chain, and reading a tile back costs more than
// running the chain on registers). The deferred values wait in the output itself, so more than one tile can be
// pending: with one slot, a tile was deferred only if the chain warps had claimed all of the one before, and at
// 2048x8192x8192 112 of the 380 tiles that could be deferred were not, though the chain warps were busy only a
// third of the kernel (docs/perf-notes.md, item 41). At short K the chain warps take the share they keep up with,
// and with one tile per CTA every tile runs in registers. After their last tile the consumers help with the chunks
// left.
//
// Measured (H100, time / F.linear, perf-notes items 21-22 and 26): the first version deferred every tile, the last
// included: 0.955x the plain kernel's time at 2048x8192x8192 with the gelu chain, a tie at 1024 rows, slower at
// short K and at one tile per CTA. This one: 0.998 against the plain kernel's 1.045 at 2048 rows (gelu chain),
// 3-6% faster at 4096-16384 rows; at 1024 rows (swish chain) 1.110 against 1.147, a tie in a second run; in TF32 no
// faster (not compiled). It is slower than the plain kernel at one tile per CTA, and 10% at K = 1024 with ~8 tiles
// per CTA, where the chain is most of a tile's time and the chain warps take issue slots from the consumers' own
// chain (an H100 reading; the in-register tiles' cost below is presumably part of it): the heuristic picks it for
// long K and more than a wave of tiles. Its in-register tiles cost more than the
// plain kernel's: ~18.5K cycles against ~9.8K for the chain at 4096x1024x1024 on the H200, where every tile runs in
// registers. Having the chain warps' code in the binary costs it, not running that code. A never-deferring
// variant without that code ran within 3% of the plain kernel; one with it, its chain warps exiting at once, did
// not (docs/perf-notes.md, item 44). Its cause is open. Fetching the chain's code early did not help, and moving the
// chain warps' code out of line recovered less than half (item 45). Why not a stash in shared
// memory: 64 KB leaves room for 3 mainloop stages instead of 4 (3-6% with an empty chain), and CUTLASS's own kernel
// gives its epilogue one idle warp, which cannot keep up with the mainloop.
//
// Synchronization, with p a tile's sequence number in this CTA (every warp walks the same tile sequence):
//   work[s]:   (p << kChunkBits) | c: the tile in slot s and the next of its kChunks row chunks to claim. A claimer
//              reads the slots, picks the oldest tile with a chunk left, adds 1 to its slot (acquire) and runs
//              chunk c of the value it got back when that one is still under kChunks (the add may find the tile
//              claimed, or a newer tile published in the slot meanwhile: a claimer's tiles need not come in order).
//              Consumer thread 0 writes (p << kChunkBits) (release) into a free slot, one whose c >= kChunks, once
//              tile p's stores are complete; it chose the slot when it decided to defer p, and only it fills
//              slots, so the slot stays free meanwhile. A claimer adds only after reading c < kChunks, so c passes
//              kChunks by at most the number of claimers, far from the sequence bits.
//   finished:  set (release) by consumer thread 0 after its last tile, after its last write to work. A claimer
//              that reads it set, then finds no chunk left in any slot, stops.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
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
// builder's epilogue for the same tile, its fusion chain(round(acc + bias)): run with an empty chain for the
// deferred tiles, with the chain for the others.
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
  using TensorStorage = typename Base::TensorStorage;
  // Tiles deferred and not yet wholly claimed, at most. More slots let the chain warps fall further behind and catch
  // up; at the end the consumers wait for at most this many tiles' chunks. Measured (H200, perf-notes item 42): with
  // two, every tile but a CTA's last is deferred at 2048x8192x8192 (273 of 380 with one), yet the kernel is no
  // faster there; 1.5-2% faster at 4096 and 8192 rows. Four were no better than one.
  static constexpr int kSlots = 2;
  // The claim counters live beside the (unused) C-load pipeline's barriers, not in TensorStorage: Base's
  // TensorStorage is 1024-byte aligned, so 8 more bytes there would take 1 KB, and with the 128x64 epilogue subtile
  // a mainloop stage (the kernel has 1 KB of shared memory to spare).
  struct PipelineStorage {
    typename Base::PipelineStorage base;
    uint32_t work[kSlots];
    uint32_t finished;
  };
  static constexpr bool RequiresTransactionBytes = Base::RequiresTransactionBytes;
  template <class TileShapeMNK>
  static constexpr int get_store_pipe_increment(TileShapeMNK tile) {
    return Base::get_store_pipe_increment(tile);
  }

  static constexpr int kTileM = cute::size<0>(typename Base::CtaTileMNK{});
  static constexpr int kTileN = cute::size<1>(typename Base::CtaTileMNK{});
  static_assert(kTileM == 128 && kTileN == 256, "written for the 128x256 cooperative tile");
  static constexpr int kConsumerThreads = 2 * cutlass::NumThreadsPerWarpGroup;
  static constexpr int kValuesPerLane = 8;  // a warp covers one 256-column row, 16 bytes per lane in bf16/fp16
  static_assert(kTileN == 32 * kValuesPerLane);
  static constexpr int kRowsPerChunk = 2;
  static constexpr int kChunks = kTileM / kRowsPerChunk;
  static constexpr int kChunkBits = 12;  // kChunks plus the claimers' overshoot (at most 11 warps) fits
  static_assert(kChunks + 32 < (1 << kChunkBits));
  static constexpr uint32_t kMaxSequence = (1u << (32 - kChunkBits)) - 1;  // later tiles run in registers
  static constexpr uint32_t kNoChunk = ~0u;                                // its chunk bits are >= kChunks
  // The consumers' decision barrier, one past CUTLASS's reserved ones.
  static constexpr int kDecisionBarrier = int(cutlass::arch::ReservedNamedBarriers::FirstUserBarrier);

  struct SharedStorage {
    TensorStorage tensors;
    PipelineStorage pipeline;
  };
  struct Arguments {
    typename Base::Arguments plain;    // an empty chain: stores round(acc + bias) (the deferred tiles)
    typename Base::Arguments chained;  // the chain (the tiles in registers)
    DeferredChainParams chain;
  };
  struct Params {
    typename Base::Params plain;
    typename Base::Params chained;
    DeferredChainParams chain;
  };

  // The fusion has no workspace (bias broadcast and chain), so the two share the one Base asks for: none.
  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& shape, Arguments const& args, void* workspace) {
    return Params{Base::to_underlying_arguments(shape, args.plain, workspace),
                  Base::to_underlying_arguments(shape, args.chained, workspace), args.chain};
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const& shape, Arguments const& args) {
    return Base::get_workspace_size(shape, args.plain);
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const& shape, Arguments const& args, void* workspace,
                                              cudaStream_t stream, cutlass::CudaHostAdapter* adapter = nullptr) {
    return Base::initialize_workspace(shape, args.plain, workspace, stream, adapter);
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const& shape, Arguments const& args) {
    return Base::can_implement(shape, args.plain) && Base::can_implement(shape, args.chained);
  }
  CUTLASS_DEVICE static void prefetch_tma_descriptors(Params const& params) {
    Base::prefetch_tma_descriptors(params.plain);
    Base::prefetch_tma_descriptors(params.chained);
  }

  struct Tile {
    int m0, n0;  // the tile's first row and column
    int m, n;    // the problem's
  };

  // Call in every thread before the kernel's first barrier; thread 0 sets the counters.
  CUTLASS_DEVICE DeferredChainEpilogue(Params const& params_, TensorStorage& tensors_, PipelineStorage& shared_)
      : params(params_), tensors(tensors_), shared(shared_) {
    if (threadIdx.x == 0) {
      for (int s = 0; s < kSlots; ++s) shared.work[s] = kChunks;  // no tile, no chunk left: free
      shared.finished = 0;
    }
  }

  // The epilogue that stores a tile: the chain in registers, or round(acc + bias) for a deferred tile.
  CUTLASS_DEVICE Base tile_store(bool deferred) {
    return Base(deferred ? params.plain : params.chained, tensors);
  }

  // Every consumer thread, after tile `sequence`'s mainloop: whether to defer it, the same answer in all of them.
  CUTLASS_DEVICE bool defer_tile(uint32_t sequence, bool last, int thread_idx) {
    if (params.chain.chain.num_ops == 0 || last || sequence >= kMaxSequence) return false;  // uniform
    uint32_t slot_free = 0;
    if (thread_idx == 0) {
      free_slot = -1;
      for (int s = 0; s < kSlots; ++s) {
        if (chunk_of(load_relaxed(&shared.work[s])) >= kChunks) free_slot = s;
      }
      slot_free = free_slot >= 0;
    }
    uint32_t any;  // thread 0's answer, for all: an OR over the consumers at a named barrier
    asm volatile(
        "{\n .reg .pred p, q;\n setp.ne.u32 p, %1, 0;\n bar.red.or.pred q, %2, %3, p;\n selp.u32 %0, 1, 0, q;\n}"
        : "=r"(any)
        : "r"(slot_free), "n"(kDecisionBarrier), "n"(kConsumerThreads)
        : "memory");
    return warp_uniform(any) != 0;
  }

  // Every consumer thread, after the store of a deferred tile: once its TMA stores are complete, the tile is
  // published. The stores are all issued by warp 0 (CUTLASS's epilogue, after a barrier of every consumer), so
  // only warp 0 waits; the others go on to the next mainloop.
  CUTLASS_DEVICE void publish_tile(uint32_t sequence, int thread_idx) {
    if (warp_uniform(thread_idx / cutlass::NumThreadsPerWarp) == 0) {
      asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
      asm volatile("fence.proxy.async.global;" ::: "memory");
      __syncwarp();
      if (thread_idx == 0) store_release(&shared.work[free_slot], sequence << kChunkBits);
    }
  }

  // Consumer thread 0, after its last tile's store.
  CUTLASS_DEVICE void finish(int thread_idx) {
    if (thread_idx == 0) store_release(&shared.finished, 1);
  }

  // One warp, all lanes: claims chunks and runs the chain on them until the consumers have finished and no chunk is
  // left. tile_at(p) gives the Tile of sequence number p. Inlined, with its own copy of the interpreter, for these
  // reasons (docs/perf-notes.md, item 45). Out of line (the consumers' chain subroutine then sits right after the
  // kernel's body, as in the plain kernel), the in-register tiles recovered less than half of their extra cost, and
  // the deferred ones got dearer. Calling the consumers' subroutine instead makes ptxas drop the register split
  // (C7507). Loading the next chunk during this one's chain was slower (items 28, 45).
  template <class TileAt>
  CUTLASS_DEVICE void run_chain(TileAt&& tile_at, int lane) {
    if (params.chain.chain.num_ops == 0) return;  // uniform: nothing is ever deferred
    while (true) {
      uint32_t claimed = 0;
      if (lane == 0) claimed = claim_chunk();
      claimed = __shfl_sync(0xffffffffu, claimed, 0);
      if (claimed == kNoChunk) return;
      run_chunk(int(chunk_of(claimed)), tile_at(claimed >> kChunkBits), lane);
    }
  }

 private:
  Params const& params;
  TensorStorage& tensors;
  PipelineStorage& shared;  // the counters
  int free_slot = -1;       // consumer thread 0: the slot of the tile it decided to defer

  CUTLASS_DEVICE static uint32_t chunk_of(uint32_t work) { return work & ((1u << kChunkBits) - 1); }

  // v, which is the same in every lane, as a value the compiler knows to be: a branch on it does not make the
  // consumers' loop divergent, which would move the mainloop's addressing off the uniform datapath (measured: ~5
  // R2UR per wgmma, and 1.14x the plain kernel's time at 4096x1024x1024).
  template <class T>
  CUTLASS_DEVICE static T warp_uniform(T v) {
    return __shfl_sync(0xffffffffu, v, 0);
  }

  CUTLASS_DEVICE static uint32_t load_relaxed(uint32_t* p) {
    uint32_t v;
    asm volatile("ld.relaxed.cta.shared::cta.u32 %0, [%1];" : "=r"(v) : "r"(cute::cast_smem_ptr_to_uint(p)) : "memory");
    return v;
  }
  CUTLASS_DEVICE static uint32_t load_acquire(uint32_t* p) {
    uint32_t v;
    asm volatile("ld.acquire.cta.shared::cta.u32 %0, [%1];" : "=r"(v) : "r"(cute::cast_smem_ptr_to_uint(p)) : "memory");
    return v;
  }
  CUTLASS_DEVICE static void store_release(uint32_t* p, uint32_t v) {
    asm volatile("st.release.cta.shared::cta.u32 [%0], %1;" :: "r"(cute::cast_smem_ptr_to_uint(p)), "r"(v) : "memory");
  }

  // Lane 0 of a claimer: the next chunk (as its slot's value with that chunk), oldest tile first, waiting for one to
  // be published; kNoChunk once the consumers have finished and every chunk is claimed.
  CUTLASS_DEVICE uint32_t claim_chunk() {
    while (true) {
      // finished first: once it reads set, the reads of work below see the last publication.
      const bool finished = load_acquire(&shared.finished) != 0;
      int slot = -1;
      uint32_t oldest = 0;
      for (int s = 0; s < kSlots; ++s) {
        const uint32_t w = load_relaxed(&shared.work[s]);
        if (chunk_of(w) < kChunks && (slot < 0 || w < oldest)) {
          slot = s;
          oldest = w;
        }
      }
      if (slot >= 0) {
        uint32_t claimed;
        asm volatile("atom.acquire.cta.shared::cta.add.u32 %0, [%1], 1;"
                     : "=r"(claimed) : "r"(cute::cast_smem_ptr_to_uint(&shared.work[slot])) : "memory");
        if (chunk_of(claimed) < kChunks) return claimed;
      } else if (finished) {
        return kNoChunk;
      } else {
        __nanosleep(200);  // spinning would take issue slots from the mainloop's warps
      }
    }
  }

  // The chain over kRowsPerChunk rows of the tile, 8 consecutive columns per lane: a 16-byte load and store per
  // lane in bf16/fp16, a whole row per warp instruction. The loads of all rows go first, and the chain runs once over
  // all of them: the interpreter decodes each op once per call, so fewer, larger calls cost fewer instructions.
  CUTLASS_DEVICE void run_chunk(int chunk, Tile tile, int lane) {
    using Values = cutlass::AlignedArray<Element, kValuesPerLane, 16>;  // rows are 16-byte aligned
    constexpr int kValues = kRowsPerChunk * kValuesPerLane;
    const int feature = tile.n0 + kValuesPerLane * lane;
    if (feature >= tile.n) return;  // n is a multiple of 8: a lane's 8 columns are all in or all out
    Element* out = static_cast<Element*>(params.chain.out) + feature;
    const int row0 = tile.m0 + chunk * kRowsPerChunk;
    Values in[kRowsPerChunk];
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kRowsPerChunk; ++i) {
      if (row0 + i < tile.m) {
        in[i] = *reinterpret_cast<const Values*>(out + int64_t(row0 + i) * params.chain.ldo);
      } else {
        in[i].fill(Element(0));  // a row past M: run on, never stored
      }
    }
    cutlass::Array<float, kValues> v;
    CUTLASS_PRAGMA_UNROLL
    for (int j = 0; j < kValues; ++j) v[j] = float(in[j / kValuesPerLane][j % kValuesPerLane]);
    apply_chain<precision_for<Element>>(
        params.chain.chain, v, [&](int j) { return unsigned(feature + j % kValuesPerLane); },
        [&](int j) { return float(in[j / kValuesPerLane][j % kValuesPerLane]); });
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kRowsPerChunk; ++i) {
      if (row0 + i >= tile.m) break;
      cutlass::Array<float, kValuesPerLane> row;
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < kValuesPerLane; ++k) row[k] = v[i * kValuesPerLane + k];
      Values y;  // aligned, for a vector store
      static_cast<cutlass::Array<Element, kValuesPerLane>&>(y) =
          cutlass::NumericArrayConverter<Element, float, kValuesPerLane>{}(row);
      *reinterpret_cast<Values*>(out + int64_t(row0 + i) * params.chain.ldo) = y;
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
  // chain warps need more than 40 to run the interpreter without spilling. 72 / 216 measured no faster at long K and
  // slower at K = 1024 (docs/perf-notes.md, item 45).
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
    CollectiveEpilogue epilogue(params.epilogue, storage.tensors.epilogue, storage.pipelines.epi_load);

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
      epilogue_load_params.transaction_bytes = params.epilogue.plain.tma_transaction_bytes;
    }
    EpilogueLoadPipeline epilogue_load_pipeline(storage.pipelines.epi_load.base, epilogue_load_params);
    typename EpilogueStorePipeline::Params epilogue_store_params;
    epilogue_store_params.always_wait = true;
    EpilogueStorePipeline epilogue_store_pipeline(epilogue_store_params);

    // The epilogue's counters (set by thread 0 above) are visible to the CTA after its barrier, and the pipelines'
    // barriers to the cluster after the cluster's (their constructors fence the inits), as in CUTLASS's kernel. A
    // cluster-scope fence here instead cost ~2 us at the start of every CTA (ncu: 4096x1024x1024, empty chain,
    // 20.0 us against the plain kernel's 18.0, the warps stalled on the fence and the first stage's wait).
    __syncthreads();
    if constexpr (size(ClusterShape{}) > 1) {
      cute::cluster_arrive_relaxed();
      cute::cluster_wait();
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
    // A claimer's view of the tile sequence: a scheduler of its own, walked to tile `seq` (forward, or from the
    // start for an older tile than the last: rare, see claim_chunk).
    auto run_chain = [&] {
      TileScheduler tiles{params.scheduler};
      auto tile_work = tiles.initial_work_tile_info(ClusterShape{});
      uint32_t tile_seq = 0;
      epilogue.run_chain(
          [&](uint32_t seq) {
            if (seq < tile_seq) {
              tiles = TileScheduler{params.scheduler};
              tile_work = tiles.initial_work_tile_info(ClusterShape{});
              tile_seq = 0;
            }
            for (; tile_seq < seq; ++tile_seq) tile_work = get<0>(tiles.fetch_next_work(tile_work));
            return tile_of(tile_work);
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
      uint32_t sequence = 0;
      while (work.is_valid()) {
        auto accumulators = partition_fragment_C(tiled_mma, take<0, 2>(TileShape{}));
        mainloop.mma(pipeline, state, accumulators, k_tiles(work), mma_thread_idx, storage.tensors.mainloop,
                     params.mainloop);
        mainloop.mma_tail(pipeline, state, k_tiles(work));
        state.advance(k_tiles(work));
        TileScheduler peek = scheduler;  // the next tile is fetched after the store: less to keep in registers
        const bool last = !get<0>(peek.fetch_next_work(work)).is_valid();
        const bool deferred = epilogue.defer_tile(sequence, last, mma_thread_idx);
        auto [load_state, store_state] = epilogue.tile_store(deferred).store(
            epilogue_load_pipeline, epilogue_load_state, epilogue_store_pipeline, epilogue_store_state,
            problem_shape, TileShape{}, block_coord(work), accumulators, tiled_mma, mma_thread_idx,
            storage.tensors.epilogue);
        epilogue_load_state = load_state;
        epilogue_store_state = store_state;
        if (deferred) epilogue.publish_tile(sequence, mma_thread_idx);
        work = get<0>(scheduler.fetch_next_work(work));
        ++sequence;
      }
      epilogue.tile_store(false).store_tail(epilogue_load_pipeline, epilogue_load_state, epilogue_store_pipeline,
                                            epilogue_store_state);
      epilogue.finish(mma_thread_idx);
      run_chain();  // the chunks left, with the chain warps
    }
  }
};

}  // namespace cutlass_ext::sm90
