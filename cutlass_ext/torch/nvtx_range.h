// An NVTX range in the "cutlass_ext" domain around each kernel launch, named by what runs: the fused GEMM's
// configuration name (bf16_128x256x64_2x1_cooperative, ...), split_tf32, elementwise or group_norm_chain. CUTLASS
// kernels all appear as cutlass::device_kernel<...> with a template argument list of a thousand characters; the
// range says which configuration a kernel is, in nsys and in ncu (--nvtx --nvtx-include "regex:cutlass_ext@.*/", or
// "cutlass_ext@<configuration>/"; checked on an H200). NVTX v3 is header-only and next to free when no tool
// listens.
#pragma once

#include <nvtx3/nvtx3.hpp>

namespace cutlass_ext {

struct NvtxDomain {
  static constexpr const char* name{"cutlass_ext"};
};
using NvtxRange = nvtx3::scoped_range_in<NvtxDomain>;

}  // namespace cutlass_ext
