#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "chain_program.h"
#include "cutlass_ext/elementwise.h"
#include "nvtx_range.h"
#include "ops.h"

namespace cutlass_ext {
namespace {

constexpr const char* kFn = "cutlass_ext.elementwise";

void run(const at::Tensor& x, const at::Tensor& out, const ChainProgram& program) {
  if (x.numel() == 0) return;
  if (x.dim() > kMaxElementwiseRank && !(x.is_contiguous() && out.is_contiguous())) {
    // Rare: more dimensions than the strided kernel indexes. Run on contiguous copies.
    at::Tensor result = at::empty(x.sizes(), x.options());
    run(x.contiguous(), result, program);
    out.copy_(result);
    return;
  }
  ElementwiseArgs args{};
  args.x = x.data_ptr();
  args.y = out.data_ptr();
  args.numel = x.numel();
  args.features = x.dim() > 0 ? x.size(-1) : 1;
  args.contiguous = x.is_contiguous() && out.is_contiguous();
  args.layout.rank = int32_t(x.dim());
  for (int64_t d = 0; d < x.dim() && !args.contiguous; ++d) {
    args.layout.sizes[d] = x.size(d);
    args.layout.x_strides[d] = x.stride(d);
    args.layout.y_strides[d] = out.stride(d);
  }
  const c10::cuda::CUDAGuard device_guard(x.device());
  const NvtxRange range{"elementwise"};
  const cudaError_t status =
      run_elementwise(kernel_dtype(x.scalar_type(), kFn), args, program, c10::cuda::getCurrentCUDAStream(x.device().index()));
  TORCH_CHECK(status == cudaSuccess, "cutlass_ext.elementwise: kernel launch failed: ", cudaGetErrorString(status));
}

void check_input(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "cutlass_ext.elementwise: x must be a CUDA tensor, got ", x.device());
  kernel_dtype(x.scalar_type(), kFn);
}

}  // namespace

at::Tensor elementwise(const at::Tensor& x, c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                       at::TensorList vectors) {
  check_input(x);
  const ChainProgram program = make_chain_program(ops, params, vectors, x.dim() > 0 ? x.size(-1) : 1, x.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  run(x, out, program);
  return out;
}

void elementwise_out(const at::Tensor& x, c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                     at::TensorList vectors, const at::Tensor& out) {
  check_input(x);
  TORCH_CHECK(out.device() == x.device(), "cutlass_ext.elementwise: out is on ", out.device(), ", x on ", x.device());
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "cutlass_ext.elementwise: out has dtype ", out.scalar_type(),
              ", x has ", x.scalar_type());
  TORCH_CHECK(out.sizes() == x.sizes(), "cutlass_ext.elementwise: out has shape ", out.sizes(), ", x has ", x.sizes());
  at::assert_no_internal_overlap(out);
  at::assert_no_partial_overlap(out, x);
  const ChainProgram program = make_chain_program(ops, params, vectors, x.dim() > 0 ? x.size(-1) : 1, x.device());
  run(x, out, program);
}

at::Tensor chain_backward(const at::Tensor& z, const at::Tensor& grad, c10::ArrayRef<std::string> ops,
                          c10::ArrayRef<double> params, at::TensorList vectors) {
  constexpr const char* fn = "cutlass_ext.chain_backward";
  TORCH_CHECK(z.is_cuda(), fn, ": z must be a CUDA tensor, got ", z.device());
  const DType dtype = kernel_dtype(z.scalar_type(), fn);
  TORCH_CHECK(grad.device() == z.device(), fn, ": grad is on ", grad.device(), ", z on ", z.device());
  TORCH_CHECK(grad.scalar_type() == z.scalar_type(), fn, ": grad has dtype ", grad.scalar_type(), ", z has ",
              z.scalar_type());
  TORCH_CHECK(grad.sizes() == z.sizes(), fn, ": grad has shape ", grad.sizes(), ", z has ", z.sizes());
  const int64_t features = z.dim() > 0 ? z.size(-1) : 1;
  const ChainProgram program = make_chain_program(ops, params, vectors, features, z.device());
  const at::Tensor z_c = z.contiguous(), grad_c = grad.contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options());
  if (z.numel() == 0) return out;
  const ChainBackwardArgs args{z_c.data_ptr(), grad_c.data_ptr(), out.data_ptr(), z.numel(), features};
  const c10::cuda::CUDAGuard device_guard(z.device());
  const NvtxRange range{"chain_backward"};
  const cudaError_t status =
      run_chain_backward(dtype, args, program, c10::cuda::getCurrentCUDAStream(z.device().index()));
  TORCH_CHECK(status == cudaSuccess, fn, ": kernel launch failed: ", cudaGetErrorString(status));
  return out;
}

}  // namespace cutlass_ext
