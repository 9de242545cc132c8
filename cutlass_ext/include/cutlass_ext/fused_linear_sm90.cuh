// The one generic sm90 fused-Linear GEMM: TMA loads, warp-specialized wgmma mainloop, TMA-store epilogue that runs
// the chain (chain_epilogue_sm90.hpp), after the GroupNorm for FusedEpilogue::kGroupNorm
// (group_norm_epilogue_sm90.hpp). A kernel file picks the element type, tile, cluster and schedule
// and registers the result with CUTLASS_EXT_SM90_FUSED_LINEAR.
//
//   A = x       (M x K, row-major: "T")
//   B = weight  (N x K row-major, i.e. K x N column-major: "N"), used in place, never transposed or copied
//   C = source  (M x N float32, row-major), only in the kSourceChain variant (the split-precision path)
//   D = out     (M x N, row-major; float32 partial products, one slice per split of K, in the kPartial variant)
// Element is bfloat16_t, half_t or float; float A and B run on TF32 tensor cores (the builder maps float to
// tfloat32_t wgmma, which reads the top 19 bits of each operand). SplitKLinear (below) pairs the kPartial GEMM
// with the reduction kernel of split_k_reduce.cuh.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/numeric_types.h>

#include <string>
#include <type_traits>

#include "cutlass_ext/chain_epilogue_sm90.hpp"
#include "cutlass_ext/deferred_chain_epilogue_sm90.hpp"
#include "cutlass_ext/fused_linear.h"
#include "cutlass_ext/group_norm_epilogue_sm90.hpp"
#include "cutlass_ext/split_k_reduce.cuh"
#include "cutlass_ext/tile_chain_epilogue_sm90.hpp"

namespace cutlass_ext::sm90 {

// Two consumer warpgroups on one tile, the epilogue after the mainloop: the most MMA throughput per tile.
struct Cooperative {
  using Mainloop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
  using Epilogue = cutlass::epilogue::TmaWarpSpecializedCooperative;
  using TileScheduler = void;  // persistent, data-parallel over output tiles
  static constexpr bool kWideEpilogueTile = true;  // see FusedLinear::EpilogueTile
  static constexpr int kEpilogueTileM = 128;       // the wide subtile's rows: both warpgroups
  static constexpr const char* kName = "cooperative";
  static constexpr bool kDefersChain = false;
  static constexpr bool kTileChain = false;  // see PingpongTileChain
};
// The same, the chain of some tiles deferred: the consumers store acc + bias and start the next tile while three
// producer warps run the chain on the stored tile (deferred_chain_epilogue_sm90.hpp). The chain's input is rounded
// to the output dtype first, as torch's is, on every tile.
struct CooperativeDeferred : Cooperative {
  static constexpr const char* kName = "cooperative_deferred";
  static constexpr bool kDefersChain = true;
};
// Two consumer warpgroups on alternating tiles: one's epilogue runs while the other's MMAs do, hiding the chain.
struct Pingpong {
  using Mainloop = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
  using Epilogue = cutlass::epilogue::TmaWarpSpecialized;
  using TileScheduler = void;
  // One warpgroup holds a whole tile: with 32 values a chain call, the 128x128 tile's consumers spill.
  static constexpr bool kWideEpilogueTile = false;
  static constexpr int kEpilogueTileM = 64;  // one warpgroup's subtile: CUTLASS takes no more
  static constexpr const char* kName = "pingpong";
  static constexpr bool kDefersChain = false;
  static constexpr bool kTileChain = false;
};
// Ping-pong, the bias and the chain run on the whole tile before CUTLASS's store (tile_chain_epilogue_sm90.hpp), each
// op decoded once per tile. For short K and many tiles, where one warpgroup's chain is as long as the other's
// mainloop: ping-pong's own per-subtile chain took 1.48-1.55x F.linear's time there, this one 1.25-1.40x
// (docs/perf-notes.md, item 48).
struct PingpongTileChain : Pingpong {
  static constexpr bool kWideEpilogueTile = true;  // no chain call in the subtile loop: 64x64 subtiles do not spill
  static constexpr const char* kName = "pingpong_tilechain";
  static constexpr bool kTileChain = true;
};

// The builder's mainloop with promoted accumulation: each k-block's wgmmas accumulate from zero into temporary
// registers, which are then added to the fp32 accumulator with ordinary (round-to-nearest) FADDs. This is
// CUTLASS's FP8 mainloop (MainloopSm90TmaGmmaWarpSpecializedFP8, promotion every 4 MMAs = one 32-deep k-block
// for TF32); nothing in it is FP8-specific. Why: the tensor cores' own accumulation rounds with a bias (measured:
// the split-TF32 error grew with K to 5-8x SGEMM's with the accumulator left in the wgmmas), which the
// accurate path cannot afford. The temporaries double the accumulator registers: 128x128 tiles at most.
template <class Mainloop>
struct PromotedAccumulation;
template <int Stages, class ClusterShape, class KernelSchedule, class... Rest>
struct PromotedAccumulation<cutlass::gemm::collective::CollectiveMma<
    cutlass::gemm::MainloopSm90TmaGmmaWarpSpecialized<Stages, ClusterShape, KernelSchedule>, Rest...>> {
  using type = cutlass::gemm::collective::CollectiveMma<
      cutlass::gemm::MainloopSm90TmaGmmaWarpSpecializedFP8<Stages, ClusterShape, KernelSchedule>, Rest...>;
};
template <class Mainloop>
struct SameMainloop {
  using type = Mainloop;
};

template <class Element, class TileShape, class ClusterShape, class Schedule, FusedEpilogue kEpilogue>
struct FusedLinear {
  static constexpr int kAlignment = 16 / sizeof(Element);  // TMA: 16-byte aligned rows
  static constexpr bool kAddsSource = kEpilogue == FusedEpilogue::kSourceChain;
  static constexpr bool kGroupNorm = kEpilogue == FusedEpilogue::kGroupNorm;
  static constexpr bool kPartial = kEpilogue == FusedEpilogue::kPartial;
  using ElementSource = std::conditional_t<kAddsSource, float, void>;
  using ElementD = std::conditional_t<kPartial, float, Element>;
  static constexpr bool kDefersChain = Schedule::kDefersChain;
  static_assert(!kDefersChain || kEpilogue == FusedEpilogue::kChain, "only chain(acc + bias) is deferred");
  static constexpr bool kTileChain = Schedule::kTileChain;
  static_assert(!kTileChain || kEpilogue == FusedEpilogue::kChain, "only chain(acc + bias) runs on the tile");
  // kPartial and kTileChain: ChainNode with an empty program, which casts the accumulator.
  using Fusion = std::conditional_t<kAddsSource, LinearSourceChainFusion<Element, TileShape>,
                                    std::conditional_t<kGroupNorm || kPartial || kTileChain, ChainFusion<ElementD>,
                                                       LinearChainFusion<Element, TileShape, kDefersChain>>>;

  // The epilogue subtile. Cooperative kernels with 16-bit outputs take 128x64, twice CUTLASS's default: each
  // consumer thread then runs the chain on 32 values a call instead of 16, and a tile takes half as many subtiles.
  // The interpreter decodes every op once per call, and every subtile costs two barriers and a TMA store
  // (docs/perf-notes.md, item 27). Float32 outputs and the GroupNorm kernel keep CUTLASS's: their larger staging
  // buffer would take a mainloop stage (see the static_assert below).
  static constexpr bool kWideEpilogueTile = Schedule::kWideEpilogueTile && sizeof(ElementD) == 2 && !kGroupNorm;
  using EpilogueTile = std::conditional_t<kWideEpilogueTile, cute::Shape<cute::Int<Schedule::kEpilogueTileM>, cute::_64>,
                                          cutlass::epilogue::collective::EpilogueTileAuto>;
  using BuiltEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape, EpilogueTile,
      float, float,                                              // accumulator, epilogue compute
      ElementSource, cutlass::layout::RowMajor, 16 / sizeof(float),  // C: float32 or none
      ElementD, cutlass::layout::RowMajor, 16 / sizeof(ElementD),  // D
      typename Schedule::Epilogue, Fusion>::CollectiveOp;
  using CollectiveEpilogue = std::conditional_t<
      kGroupNorm, GroupNormEpilogue<BuiltEpilogue, Element>,
      std::conditional_t<kDefersChain, DeferredChainEpilogue<BuiltEpilogue, Element>,
                         std::conditional_t<kTileChain, TileChainEpilogue<BuiltEpilogue, Element>, BuiltEpilogue>>>;

  using BuiltMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      Element, cutlass::layout::RowMajor, kAlignment,            // A = x
      Element, cutlass::layout::ColumnMajor, kAlignment,         // B = weight as stored
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      typename Schedule::Mainloop>::CollectiveOp;
  // The kAddsSource variant is the split-precision path's final GEMM: it needs FP32-level accumulation.
  using CollectiveMainloop = typename std::conditional_t<kAddsSource, PromotedAccumulation<BuiltMainloop>,
                                                         SameMainloop<BuiltMainloop>>::type;
  static_assert(!kWideEpilogueTile || CollectiveMainloop::DispatchPolicy::Stages >= 4,
                "the wide epilogue subtile must leave room for 4 mainloop stages");

  using BuiltKernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                           CollectiveEpilogue, typename Schedule::TileScheduler>;
  using Kernel = std::conditional_t<kDefersChain, DeferredChainKernel<BuiltKernel>, BuiltKernel>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const FusedLinearArgs& a, const ChainProgram& program) {
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    // Batch l (a split of K, kPartial only) reads columns [l k, (l + 1) k) of x and weight and writes slice l of D.
    const int64_t batch = a.splits > 1 ? 1 : 0;
    args.problem_shape = {a.m, a.n, a.k, a.splits};
    args.mainloop.ptr_A = static_cast<const Element*>(a.x);
    args.mainloop.dA = typename Kernel::StrideA{a.ldx, cute::Int<1>{}, batch * a.k};
    args.mainloop.ptr_B = static_cast<const Element*>(a.weight);
    args.mainloop.dB = typename Kernel::StrideB{a.ldw, cute::Int<1>{}, batch * a.k};
    // The fusion's arguments nest as its tree does (chain_epilogue_sm90.hpp).
    const typename BiasBroadcast<Element, TileShape>::Arguments bias{static_cast<const Element*>(a.bias), Element(0), {}};
    const typename Kernel::StrideD stride_d{a.ldo, cute::Int<1>{}, batch * a.m * a.ldo};
    if constexpr (kPartial) {  // acc alone: the split-K reduction adds the bias and runs the chain
      args.epilogue.thread = {{}, ChainProgram{}};
      args.epilogue.ptr_D = static_cast<float*>(a.out);
      args.epilogue.dD = stride_d;
      args.epilogue.ptr_C = nullptr;
      args.epilogue.dC = stride_d;
    } else if constexpr (kDefersChain) {  // two ways per tile: round(acc + bias) stored for the chain warps, or chain
      auto& plain = args.epilogue.plain;
      plain.thread = {{{}, bias, {}}, ChainProgram{}};
      plain.ptr_D = static_cast<Element*>(a.out);
      plain.dD = stride_d;
      plain.ptr_C = nullptr;
      plain.dC = stride_d;
      args.epilogue.chained = plain;
      args.epilogue.chained.thread = {{{}, bias, {}}, program};
      args.epilogue.chain = {a.out, a.ldo, program};
    } else if constexpr (kGroupNorm) {  // the bias and the pre-chain run before the norm, the post-chain in the fusion
      args.epilogue.base.thread = {{}, a.norm->post};
      args.epilogue.base.ptr_D = static_cast<Element*>(a.out);
      args.epilogue.base.dD = stride_d;
      args.epilogue.base.ptr_C = nullptr;
      args.epilogue.base.dC = stride_d;
      args.epilogue.extra = {a.bias, program, a.norm->group_size, a.norm->eps, a.norm->weight, a.norm->bias};
    } else if constexpr (kTileChain) {  // the fusion only casts; the wrapper adds the bias and runs the chain
      args.epilogue.base.thread = {{}, ChainProgram{}};
      args.epilogue.base.ptr_D = static_cast<Element*>(a.out);
      args.epilogue.base.dD = stride_d;
      args.epilogue.base.ptr_C = nullptr;
      args.epilogue.base.dC = stride_d;
      args.epilogue.extra = {a.bias, program};
    } else if constexpr (kAddsSource) {
      args.epilogue.thread = {{{{}, {}, {}}, bias, {}}, program};
      args.epilogue.ptr_D = static_cast<Element*>(a.out);
      args.epilogue.dD = stride_d;
      args.epilogue.ptr_C = static_cast<const float*>(a.source);
      args.epilogue.dC = typename Kernel::StrideC{a.lds, cute::Int<1>{}, int64_t(0)};
    } else {
      args.epilogue.thread = {{{}, bias, {}}, program};
      args.epilogue.ptr_D = static_cast<Element*>(a.out);
      args.epilogue.dD = stride_d;
      args.epilogue.ptr_C = nullptr;
      args.epilogue.dC = stride_d;
    }
    args.hw_info.device_id = a.device;
    args.hw_info.sm_count = a.sm_count;
    return args;
  }

  static size_t workspace_size(const FusedLinearArgs& a, const ChainProgram& program) {
    return Gemm::get_workspace_size(arguments(a, program));
  }

  // The adapter's initialize() + run(), less what costs host time on every call and need not: can_implement
  // (the torch layer checks shapes, strides and alignment) and cudaFuncSetAttribute (once per device here).
  // Host time matters: a 4096x1024x1024 GEMM takes ~18 us on an H200, about one call's worth of host work.
  static std::string run(const FusedLinearArgs& a, const ChainProgram& program, void* workspace, cudaStream_t stream) {
    const auto args = arguments(a, program);
    constexpr int kMaxDevices = 64;
    static bool smem_configured[kMaxDevices] = {};  // races only repeat an idempotent call
    if (a.device < 0 || a.device >= kMaxDevices) return "device index out of range";
    if (!smem_configured[a.device]) {
      const cudaError_t error = cudaFuncSetAttribute(cutlass::device_kernel<Kernel>,
                                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     int(Kernel::SharedStorageSize));
      if (error != cudaSuccess) return std::string("cudaFuncSetAttribute failed: ") + cudaGetErrorString(error);
      smem_configured[a.device] = true;
    }
    cutlass::Status status = Kernel::initialize_workspace(args, workspace, stream);
    if (status == cutlass::Status::kSuccess) {
      auto params = Kernel::to_underlying_arguments(args, workspace);
      status = Gemm::run(params, stream);
    }
    const cudaError_t error = cudaGetLastError();
    if (status != cutlass::Status::kSuccess || error != cudaSuccess) {
      return std::string("CUTLASS launch failed: ") + cutlass::cutlassGetStatusString(status) +
             (error != cudaSuccess ? std::string(" (") + cudaGetErrorString(error) + ")" : std::string());
    }
    return std::string();
  }
};

// Split K, for few output tiles: a batched launch of the kPartial GEMM, one batch per split of K, writes float32
// partial products into the workspace, splits x tiles CTAs at once; then split_k_reduce.cuh sums them in a fixed
// order, adds the bias, runs the chain and casts. Why: with fewer output tiles than SMs most SMs idle, the busy ones
// stream the whole weight, and each tile's chain runs on one CTA (128x1024x8192: 16 CTAs of the 64x128 ping-pong,
// 1.72x F.linear's time on an H200; split 8 ways, 0.93x: docs/perf-notes.md, item 29). The price: the partials'
// round trip through L2 (splits x M x N x 4 bytes, written then read) and a second launch. CUTLASS's stream-K
// scheduler in split-K mode reduces inside the GEMM, in series or with atomics, and measured slower (item 23).
// kMaxSplits is part of the configuration's name; splits_for() takes fewer when K or the workspace asks for it.
template <class Element, class TileShape, class ClusterShape, class Schedule, int kMaxSplits>
struct SplitKLinear {
  using Partial = FusedLinear<Element, TileShape, ClusterShape, Schedule, FusedEpilogue::kPartial>;
  // Past this, a configuration asked for by name on a large problem splits less (one split at worst: correct, slow).
  static constexpr size_t kMaxPartialBytes = size_t(64) << 20;

  // The most splits up to kMaxSplits that cut K into equal slices of whole 16-byte column groups (TMA) and keep the
  // partials under kMaxPartialBytes.
  static int splits_for(const FusedLinearArgs& a) {
    for (int s = kMaxSplits; s > 1; --s) {
      if (a.k % (s * Partial::kAlignment) == 0 && size_t(s) * a.m * a.n * sizeof(float) <= kMaxPartialBytes) return s;
    }
    return 1;
  }
  static size_t partial_bytes(const FusedLinearArgs& a, int splits) {
    return (size_t(splits) * a.m * a.n * sizeof(float) + 255) / 256 * 256;
  }
  static FusedLinearArgs partial_args(const FusedLinearArgs& a, int splits, void* partials) {
    FusedLinearArgs p = a;
    p.k = a.k / splits;
    p.splits = splits;
    p.bias = nullptr;
    p.out = partials;
    p.ldo = a.n;
    return p;
  }

  static size_t workspace_size(const FusedLinearArgs& a, const ChainProgram&) {
    const int splits = splits_for(a);
    return partial_bytes(a, splits) + Partial::workspace_size(partial_args(a, splits, nullptr), ChainProgram{});
  }

  // workspace: the partials, then the GEMM's own workspace (workspace_size() bytes in all).
  static std::string run(const FusedLinearArgs& a, const ChainProgram& program, void* workspace, cudaStream_t stream) {
    const int splits = splits_for(a);
    auto* partials = static_cast<float*>(workspace);
    const std::string error = Partial::run(partial_args(a, splits, partials), ChainProgram{},
                                           static_cast<char*>(workspace) + partial_bytes(a, splits), stream);
    if (!error.empty()) return error;
    const cudaError_t status =
        launch_split_k_reduce(partials, splits, a.m, a.n, static_cast<const Element*>(a.bias),
                              static_cast<Element*>(a.out), a.ldo, program, stream);
    if (status != cudaSuccess) return std::string("split-K reduction failed: ") + cudaGetErrorString(status);
    return std::string();
  }
};

// dtype_tile_cluster_schedule, e.g. "bf16_128x128x64_2x1_pingpong".
template <class TileShape, class ClusterShape, class Schedule>
std::string config_name(const char* dtype_name) {
  return std::string(dtype_name) + "_" + std::to_string(cute::size<0>(TileShape{})) + "x" +
         std::to_string(cute::size<1>(TileShape{})) + "x" + std::to_string(cute::size<2>(TileShape{})) + "_" +
         std::to_string(cute::size<0>(ClusterShape{})) + "x" + std::to_string(cute::size<1>(ClusterShape{})) + "_" +
         Schedule::kName;
}

template <class Element, class TileShape, class ClusterShape, class Schedule, FusedEpilogue kEpilogue>
FusedLinearKernel make_kernel(const char* dtype_name, DType dtype) {
  using Config = FusedLinear<Element, TileShape, ClusterShape, Schedule, kEpilogue>;
  const std::string name = config_name<TileShape, ClusterShape, Schedule>(dtype_name) +
                           (kEpilogue == FusedEpilogue::kGroupNorm ? "_gn" : "");
  return FusedLinearKernel{name, dtype, kEpilogue, cute::size<0>(TileShape{}), cute::size<1>(TileShape{}),
                           Schedule::kName, 1, &Config::workspace_size, &Config::run};
}

template <class Element, class TileShape, class ClusterShape, class Schedule, int kMaxSplits>
FusedLinearKernel make_split_k_kernel(const char* dtype_name, DType dtype) {
  using Config = SplitKLinear<Element, TileShape, ClusterShape, Schedule, kMaxSplits>;
  const std::string name =
      config_name<TileShape, ClusterShape, Schedule>(dtype_name) + "_splitk" + std::to_string(kMaxSplits);
  return FusedLinearKernel{name, dtype, FusedEpilogue::kChain, cute::size<0>(TileShape{}), cute::size<1>(TileShape{}),
                           Schedule::kName, kMaxSplits, &Config::workspace_size, &Config::run};
}

}  // namespace cutlass_ext::sm90

// One configuration, registered when the library loads; the kernel file's name repeats these parameters.
// EPILOGUE: kChain, kSourceChain (file name suffix _addc) or kGroupNorm (_gn), see FusedEpilogue.
#define CUTLASS_EXT_SM90_FUSED_LINEAR(ELEMENT, DTYPE, DTYPE_NAME, TM, TN, TK, CM, CN, SCHEDULE, EPILOGUE)      \
  namespace {                                                                                                  \
  const bool registered = ::cutlass_ext::register_fused_linear_kernel(                                         \
      ::cutlass_ext::sm90::make_kernel<ELEMENT, cute::Shape<cute::Int<TM>, cute::Int<TN>, cute::Int<TK>>,      \
                                       cute::Shape<cute::Int<CM>, cute::Int<CN>, cute::Int<1>>,                \
                                       ::cutlass_ext::sm90::SCHEDULE,                                          \
                                       ::cutlass_ext::FusedEpilogue::EPILOGUE>(DTYPE_NAME,                     \
                                                                                   ::cutlass_ext::DType::DTYPE)); \
  }

// One split-K GEMM (the kPartial variant of the tile), registered as three configurations of up to 2, 4 and 8 splits
// that share its kernel and the reduction kernel; the file's name ends in _splitk. 16 splits never measured best.
#define CUTLASS_EXT_SM90_SPLIT_K_LINEAR_ONE(ELEMENT, DTYPE, DTYPE_NAME, TM, TN, TK, CM, CN, SCHEDULE, SPLITS)       \
  ::cutlass_ext::register_fused_linear_kernel(                                                                     \
      ::cutlass_ext::sm90::make_split_k_kernel<ELEMENT, cute::Shape<cute::Int<TM>, cute::Int<TN>, cute::Int<TK>>,  \
                                               cute::Shape<cute::Int<CM>, cute::Int<CN>, cute::Int<1>>,            \
                                               ::cutlass_ext::sm90::SCHEDULE, SPLITS>(DTYPE_NAME,                  \
                                                                                      ::cutlass_ext::DType::DTYPE))
#define CUTLASS_EXT_SM90_SPLIT_K_LINEAR(ELEMENT, DTYPE, DTYPE_NAME, TM, TN, TK, CM, CN, SCHEDULE)                    \
  namespace {                                                                                                      \
  const bool registered =                                                                                          \
      CUTLASS_EXT_SM90_SPLIT_K_LINEAR_ONE(ELEMENT, DTYPE, DTYPE_NAME, TM, TN, TK, CM, CN, SCHEDULE, 2) &&          \
      CUTLASS_EXT_SM90_SPLIT_K_LINEAR_ONE(ELEMENT, DTYPE, DTYPE_NAME, TM, TN, TK, CM, CN, SCHEDULE, 4) &&          \
      CUTLASS_EXT_SM90_SPLIT_K_LINEAR_ONE(ELEMENT, DTYPE, DTYPE_NAME, TM, TN, TK, CM, CN, SCHEDULE, 8);           \
  }
