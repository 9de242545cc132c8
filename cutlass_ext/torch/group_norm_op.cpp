#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>

#include "chain_program.h"
#include "cutlass_ext/group_norm.h"
#include "nvtx_range.h"
#include "ops.h"

namespace cutlass_ext {
namespace {

constexpr const char* kFn = "cutlass_ext.group_norm_chain";

}  // namespace

at::Tensor group_norm_chain(const at::Tensor& x, int64_t num_groups, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, double eps, c10::ArrayRef<std::string> ops,
                            c10::ArrayRef<double> params, at::TensorList vectors) {
  const DType dtype = kernel_dtype(x.scalar_type(), kFn);
  TORCH_CHECK(x.dim() >= 1, kFn, ": x must have a feature dimension, got a 0-d tensor");
  const int64_t features = x.size(-1);
  TORCH_CHECK(features <= INT32_MAX, kFn, ": at most 2^31 - 1 features, got ", features);
  TORCH_CHECK(num_groups > 0 && features % num_groups == 0, kFn, ": ", features, " features do not split into ",
              num_groups, " groups");
  TORCH_CHECK(features / num_groups <= kMaxGroupNormGroupSize, kFn, ": groups of ", features / num_groups,
              " features exceed the kernel's ", kMaxGroupNormGroupSize);
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, kFn, ": eps must be finite and >= 0, got ", eps);
  TORCH_CHECK(x.is_cuda(), kFn, ": x must be a CUDA tensor, got ", x.device());
  const ChainProgram program = make_chain_program(ops, params, vectors, features, x.device());
  GroupNormArgs args{};
  args.weight = weight ? make_chain_vector(*weight, features, x.device(), "group_norm weight") : ChainVector{};
  args.bias = bias ? make_chain_vector(*bias, features, x.device(), "group_norm bias") : ChainVector{};
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  args.x = input.data_ptr();
  args.y = out.data_ptr();
  args.rows = features > 0 ? x.numel() / features : 0;
  args.features = features;
  args.groups = num_groups;
  args.eps = float(eps);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const NvtxRange range{"group_norm_chain"};
  const cudaError_t status = run_group_norm(dtype, args, program, c10::cuda::getCurrentCUDAStream(x.device().index()));
  TORCH_CHECK(status == cudaSuccess, kFn, ": kernel launch failed: ", cudaGetErrorString(status));
  return out;
}

}  // namespace cutlass_ext
