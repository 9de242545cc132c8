// The runtime epilogue chain as a node of CUTLASS's sm90 epilogue visitor tree (EVT):
//
//   D = ChainNode( Plus( AccFetch, RowBroadcast(bias) ) )      // chain(acc + bias[n]), cast to D's type
//   D = ChainNode( Plus( Plus( AccFetch, SrcFetch ), RowBroadcast(bias) ) )   // with a float32 C operand
//
//   D = ChainNode( AccFetch )    // the post-chain of the in-epilogue GroupNorm (group_norm_epilogue_sm90.hpp)
//
// ChainNode runs the ChainProgram (chain_interpreter.cuh, the same interpreter and op math as the elementwise
// kernel) over each fragment in registers, after the accumulator and before the store.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp>
#include <cutlass/numeric_conversion.h>

#include "cutlass_ext/chain_interpreter.cuh"

namespace cutlass_ext::sm90 {

// kRoundsInput: the chain's input is rounded to ElementOutput first. The deferred-chain kernel runs some tiles' chain
// in registers and the others on the stored, rounded values (deferred_chain_epilogue_sm90.hpp): both must give the
// same values.
template <class ElementOutput, bool kRoundsInput = false>
struct ChainNode {
  struct SharedStorage {};
  using Arguments = ChainProgram;
  using Params = ChainProgram;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const&) {
    return true;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }

  CUTLASS_HOST_DEVICE ChainNode() : params(nullptr) {}
  // params lives in the kernel's __grid_constant__ parameters: keep a pointer, not a ~300-byte copy.
  CUTLASS_HOST_DEVICE ChainNode(Params const& params_, SharedStorage const&) : params(&params_) {}

  CUTLASS_DEVICE bool is_producer_load_needed() const { return false; }
  CUTLASS_DEVICE bool is_C_load_needed() const { return false; }

  template <class... Args>
  CUTLASS_DEVICE auto get_producer_load_callbacks(cutlass::epilogue::fusion::detail::ProducerLoadArgs<Args...> const&) {
    return cutlass::epilogue::fusion::detail::EmptyProducerLoadCallbacks{};
  }

  // tCcD: each fragment element's coordinate, relative to this thread's first one; residue: (M, N) minus that
  // first coordinate. So the output feature of an element is N - residue_n + its relative n.
  template <class CoordTensor, class Residue>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::detail::EmptyConsumerStoreCallbacks {
    CUTLASS_DEVICE ConsumerStoreCallbacks(Params const& params_, CoordTensor tCcD_, Residue residue_, int n_)
        : params(params_), tCcD(tCcD_), residue(residue_), n(n_) {}

    Params const& params;
    CoordTensor tCcD;  // (CPY, CPY_M, CPY_N, EPI_M, EPI_N)
    Residue residue;
    int n;

    template <typename ElementAccumulator, typename ElementInput, int FragmentSize>
    CUTLASS_DEVICE cutlass::Array<ElementOutput, FragmentSize> visit(
        cutlass::Array<ElementAccumulator, FragmentSize> const&, int epi_v, int epi_m, int epi_n,
        cutlass::Array<ElementInput, FragmentSize> const& frg_input) {
      cutlass::Array<float, FragmentSize> v = cutlass::NumericArrayConverter<float, ElementInput, FragmentSize>{}(frg_input);
      if (params.num_ops == 0) {  // uniform: no call, no feature indices (the split-precision path's first GEMM)
        return cutlass::NumericArrayConverter<ElementOutput, float, FragmentSize>{}(v);
      }
      if constexpr (kRoundsInput) {
        v = cutlass::NumericArrayConverter<float, ElementOutput, FragmentSize>{}(
            cutlass::NumericArrayConverter<ElementOutput, float, FragmentSize>{}(v));
      }
      cutlass::Array<int, FragmentSize> features{};
      if (params.reads & kReadsFeatures) {  // uniform: most chains read no vector
        auto coords = tCcD(cute::_, cute::_, cute::_, epi_m, epi_n);
        const int first_n = n - int(cute::get<1>(residue));
        // Columns past N (a partial tile) are never stored; clamp them so that vector reads stay in bounds.
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < FragmentSize; ++i) {
          const int col = first_n + int(cute::get<1>(coords(epi_v * FragmentSize + i)));
          features[i] = col < n ? col : n - 1;
        }
      }
      v = apply_chain_outlined<precision_for<ElementOutput>>(params, v, features);
      return cutlass::NumericArrayConverter<ElementOutput, float, FragmentSize>{}(v);
    }
  };

  template <bool ReferenceSrc, class... Args>
  CUTLASS_DEVICE auto get_consumer_store_callbacks(cutlass::epilogue::fusion::detail::ConsumerStoreArgs<Args...> const& args) {
    const int n = int(cute::get<1>(args.problem_shape_mnkl));
    return ConsumerStoreCallbacks<decltype(args.tCcD), decltype(args.residue_tCcD)>(*params, args.tCcD,
                                                                                    args.residue_tCcD, n);
  }

  Params const* params;
};

namespace evt = cutlass::epilogue::fusion;
template <class Element, class TileShape>
using BiasBroadcast = evt::Sm90RowBroadcast<0, TileShape, Element, float>;  // bias[n]; a null pointer adds 0
using Plus = evt::Sm90Compute<cutlass::plus, float, float, cutlass::FloatRoundStyle::round_to_nearest>;

// chain(acc): the post-chain of the in-epilogue GroupNorm, which leaves the normalized values in the accumulators
//   arguments: {acc: {}, chain: ChainProgram}
template <class Element>
using ChainFusion = evt::Sm90EVT<ChainNode<Element>, evt::Sm90AccFetch>;

// chain(acc + bias[n]); with kRoundsInput, chain(round(acc + bias[n]))
//   arguments: {{acc: {}, bias: {ptr, 0, {}}, plus: {}}, chain: ChainProgram}
template <class Element, class TileShape, bool kRoundsInput = false>
using LinearChainFusion = evt::Sm90EVT<ChainNode<Element, kRoundsInput>,                // chain(v0), cast
                                       evt::Sm90EVT<Plus,                               // v0 = acc + bias[n]
                                                    evt::Sm90AccFetch,                  // acc
                                                    BiasBroadcast<Element, TileShape>>>;

// acc + small, except where acc is inf or NaN: there it is the result. In the split-precision path acc holds the
// large terms x_hi W_hi^T and C the small ones; an inf in x is in x_hi (its x_lo is 0) and makes acc inf or NaN
// exactly as an FP32 GEMM would, while C would hold inf * W_lo of any sign, or NaN where W_lo is 0.
template <class T>
struct PlusSmallTerms {
  CUTLASS_HOST_DEVICE T operator()(T const& acc, T const& small) const { return isfinite(acc) ? acc + small : acc; }
};
template <int N>
struct PlusSmallTerms<cutlass::Array<float, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<float, N> operator()(cutlass::Array<float, N> const& acc,
                                                          cutlass::Array<float, N> const& small) const {
    cutlass::Array<float, N> out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = PlusSmallTerms<float>{}(acc[i], small[i]);
    return out;
  }
};

// chain(acc + C + bias[n]), C an M x N float32 operand: the split-precision path adds its small terms here, so
// that they are summed apart from the large ones (see fused_linear_op.cpp).
//   arguments: {{{acc: {}, C: {}, plus: {}}, bias: {ptr, 0, {}}, plus: {}}, chain: ChainProgram}
template <class Element, class TileShape>
using LinearSourceChainFusion = evt::Sm90EVT<
    ChainNode<Element>,                                                                   // chain(v0), cast
    evt::Sm90EVT<Plus,                                                                    // v0 = ... + bias[n]
                 evt::Sm90EVT<evt::Sm90Compute<PlusSmallTerms, float, float,              // acc + C
                                               cutlass::FloatRoundStyle::round_to_nearest>,
                              evt::Sm90AccFetch, evt::Sm90SrcFetch<float>>,
                 BiasBroadcast<Element, TileShape>>>;

}  // namespace cutlass_ext::sm90
