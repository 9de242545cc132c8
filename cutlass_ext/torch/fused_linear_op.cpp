#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "chain_program.h"
#include "cutlass_ext/fused_linear.h"
#include "ops.h"

namespace cutlass_ext {
namespace {

constexpr const char* kFn = "cutlass_ext.linear";

DType gemm_dtype(const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf, kFn,
              ": the fused kernels take bfloat16 or float16, got ", t.scalar_type());
  return t.scalar_type() == at::kBFloat16 ? DType::kBF16 : DType::kF16;
}

int sm_count(int device) {
  static int counts[64] = {};
  if (device < 0 || device >= 64) return 0;
  if (counts[device] == 0) cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device);
  return counts[device];
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Everything the kernels need, checked; x viewed as M x K.
struct Problem {
  at::Tensor x2;
  FusedLinearArgs args;
  DType dtype;
  ChainProgram program;
};

Problem prepare(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors) {
  TORCH_CHECK(x.is_cuda() && weight.device() == x.device(), kFn, ": x and weight must be on one CUDA device, got ",
              x.device(), " and ", weight.device());
  const DType dtype = gemm_dtype(x);
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), kFn, ": weight has dtype ", weight.scalar_type(), ", x has ",
              x.scalar_type());
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), kFn, ": x ", x.sizes(),
              " and weight ", weight.sizes(), " do not make x @ weight.T");
  const int64_t k = weight.size(1), n = weight.size(0);
  const int elems16 = 16 / int(x.element_size());
  TORCH_CHECK(k % elems16 == 0 && n % elems16 == 0, kFn, ": in_features (", k, ") and out_features (", n,
              ") must be multiples of ", elems16, " for the fused kernels");
  TORCH_CHECK(weight.stride(1) == 1 && weight.stride(0) % elems16 == 0 && aligned16(weight.data_ptr()), kFn,
              ": weight must be row-major with 16-byte aligned rows");
  if (bias) {
    TORCH_CHECK(bias->device() == x.device() && bias->scalar_type() == x.scalar_type() && bias->dim() == 1 &&
                    bias->size(0) == n && bias->is_contiguous() && aligned16(bias->data_ptr()),
                kFn, ": bias must be a contiguous, 16-byte aligned [", n, "] tensor of x's dtype and device");
  }
  Problem p;
  p.x2 = x.reshape({-1, k});
  TORCH_CHECK(p.x2.stride(1) == 1 && p.x2.stride(0) % elems16 == 0 && aligned16(p.x2.data_ptr()), kFn,
              ": x must have a unit last stride and 16-byte aligned rows");
  TORCH_CHECK(p.x2.size(0) <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX, kFn, ": dimensions must fit in int32");
  p.dtype = dtype;
  p.program = make_chain_program(ops, params, vectors, n, x.device());
  const int device = x.device().index();
  p.args = FusedLinearArgs{p.x2.data_ptr(), p.x2.stride(0), weight.data_ptr(), weight.stride(0),
                           bias ? bias->data_ptr() : nullptr, nullptr, n, int(p.x2.size(0)), int(n), int(k),
                           device, sm_count(device)};
  return p;
}

const FusedLinearKernel& pick(const Problem& p, c10::string_view config) {
  if (config.empty()) {
    const FusedLinearKernel* k =
        choose_fused_linear_kernel(p.dtype, p.args.m, p.args.n, p.args.k, p.program, p.args.sm_count);
    TORCH_CHECK(k != nullptr, kFn, ": no fused kernel was compiled for this dtype (is sm_90a in the build?)");
    return *k;
  }
  for (const FusedLinearKernel* k : fused_linear_kernels(p.dtype)) {
    if (k->name == config) return *k;
  }
  TORCH_CHECK(false, kFn, ": no compiled configuration named '", std::string(config), "'");
}

}  // namespace

at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors,
                        c10::string_view config) {
  Problem p = prepare(x, weight, bias, ops, params, vectors);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(p.args.n);
  at::Tensor out = at::empty(out_shape, x.options());
  if (out.numel() == 0) return out;
  if (p.args.k == 0) {  // no products: v0 is the bias (or 0), then the chain
    at::Tensor v0 = bias ? bias->expand({p.args.m, p.args.n}) : at::zeros({p.args.m, p.args.n}, x.options());
    elementwise_out(v0.contiguous(), ops, params, vectors, out.view({p.args.m, p.args.n}));
    return out;
  }
  p.args.out = out.data_ptr();
  const FusedLinearKernel& kernel = pick(p, config);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const size_t workspace_bytes = kernel.workspace_size(p.args, p.program);
  at::Tensor workspace;
  if (workspace_bytes > 0) workspace = at::empty({int64_t(workspace_bytes)}, x.options().dtype(at::kByte));
  const std::string error = kernel.run(p.args, p.program, workspace_bytes > 0 ? workspace.data_ptr() : nullptr,
                                       c10::cuda::getCurrentCUDAStream(x.device().index()));
  TORCH_CHECK(error.empty(), kFn, " (", kernel.name, "): ", error);
  return out;
}

std::string fused_linear_plan(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors) {
  const Problem p = prepare(x, weight, bias, ops, params, vectors);
  return pick(p, "").name;
}

std::vector<std::string> fused_linear_configs(c10::ScalarType dtype) {
  std::vector<std::string> names;
  if (dtype != at::kBFloat16 && dtype != at::kHalf) return names;
  for (const FusedLinearKernel* k : fused_linear_kernels(dtype == at::kBFloat16 ? DType::kBF16 : DType::kF16)) {
    names.push_back(k->name);
  }
  return names;
}

}  // namespace cutlass_ext
