// The parameters of an epilogue that wraps the builder's collective epilogue Base and does something to the
// accumulators before Base stores them (the whole-tile chain, the GroupNorm): its Arguments and Params carry Base's
// and the wrapper's own (Extra), and the static members the kernel and the adapter call forward to Base.
#pragma once

#include <cutlass/cuda_host_adapter.hpp>
#include <cutlass/cutlass.h>

namespace cutlass_ext::sm90 {

template <class Base, class Extra>
struct WrappedEpilogue : Base {
  struct Arguments {
    typename Base::Arguments base;
    Extra extra;
  };
  struct Params : Base::Params {  // a Base::Params: the kernel reads some of its fields directly
    Extra extra;
  };

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& shape, Arguments const& args, void* workspace) {
    Params params;
    static_cast<typename Base::Params&>(params) = Base::to_underlying_arguments(shape, args.base, workspace);
    params.extra = args.extra;
    return params;
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

  CUTLASS_DEVICE WrappedEpilogue(Params const& params, typename Base::TensorStorage& shared) : Base(params, shared) {}
};

}  // namespace cutlass_ext::sm90
