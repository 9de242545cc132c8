#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cmath>

#include "chain_program.h"
#include "cutlass_ext/fused_linear.h"
#include "nvtx_range.h"
#include "ops.h"

namespace cutlass_ext {
namespace {

constexpr const char* kFn = "cutlass_ext.linear";

// How float32 inputs are multiplied. torch's names (torch.get_float32_matmul_precision): 'highest' is the
// split-precision path (FP32-level error, three TF32 products), 'high' and 'medium' one TF32 GEMM.
enum class Precision { kHalf, kTF32, kSplitTF32 };

Precision parse_precision(DType dtype, c10::string_view precision) {
  if (dtype != DType::kF32) return Precision::kHalf;  // bf16/fp16 inputs: one precision, the argument is unused
  if (precision == "highest") return Precision::kSplitTF32;
  if (precision == "high" || precision == "medium") return Precision::kTF32;
  TORCH_CHECK(false, kFn, ": float32 inputs need precision 'highest', 'high' or 'medium', got '",
              std::string(precision), "'");
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
  Precision precision;
  ChainProgram program;
};

Problem prepare(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors,
                c10::string_view precision) {
  TORCH_CHECK(x.is_cuda() && weight.device() == x.device(), kFn, ": x and weight must be on one CUDA device, got ",
              x.device(), " and ", weight.device());
  const DType dtype = kernel_dtype(x.scalar_type(), kFn);
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
  p.precision = parse_precision(dtype, precision);
  p.program = make_chain_program(ops, params, vectors, n, x.device());
  const int device = x.device().index();
  p.args = FusedLinearArgs{p.x2.data_ptr(), p.x2.stride(0), weight.data_ptr(), weight.stride(0),
                           bias ? bias->data_ptr() : nullptr, nullptr, n, nullptr, 0, nullptr, int(p.x2.size(0)),
                           int(n), int(k), device, sm_count(device)};
  return p;
}

const FusedLinearKernel& pick(const Problem& p, c10::string_view config,
                              FusedEpilogue epilogue = FusedEpilogue::kChain) {
  if (config.empty()) {
    const FusedLinearKernel* k = choose_fused_linear_kernel(p.dtype, epilogue, p.args.m, p.args.n, p.args.k,
                                                            p.program, p.args.sm_count);
    TORCH_CHECK(k != nullptr, kFn, ": no fused kernel was compiled for this dtype (is sm_90a in the build?)");
    return *k;
  }
  const FusedLinearKernel* k =
      find_fused_linear_kernel(p.dtype, epilogue, std::string_view(config.data(), config.size()));
  TORCH_CHECK(k != nullptr, kFn, ": no compiled configuration named '", std::string(config), "'");
  return *k;
}

void launch(const FusedLinearKernel& kernel, const FusedLinearArgs& args, const ChainProgram& program,
            const at::Tensor& like, cudaStream_t stream) {
  const size_t workspace_bytes = kernel.workspace_size(args, program);
  at::Tensor workspace;
  if (workspace_bytes > 0) workspace = at::empty({int64_t(workspace_bytes)}, like.options().dtype(at::kByte));
  const NvtxRange range{kernel.name.c_str()};
  const std::string error = kernel.run(args, program, workspace_bytes > 0 ? workspace.data_ptr() : nullptr, stream);
  TORCH_CHECK(error.empty(), kFn, " (", kernel.name, "): ", error);
}

at::Tensor split_tf32_rows(const at::Tensor& t, bool lo_first, cudaStream_t stream) {
  at::Tensor out = at::empty({t.size(0), 2 * t.size(1)}, t.options());
  const NvtxRange range{"split_tf32"};
  const cudaError_t error = split_tf32(t.data_ptr<float>(), t.stride(0), t.size(0), t.size(1), out.data_ptr<float>(),
                                       out.stride(0), lo_first, stream);
  TORCH_CHECK(error == cudaSuccess, kFn, ": split_tf32 failed: ", cudaGetErrorString(error));
  return out;
}

// The split-precision product (precision 'highest'): with x = x_hi + x_lo and W = W_hi + W_lo split into TF32
// pairs (split_tf32),
//   out = chain( x_hi W_hi^T  +  S  +  bias ),   S = [x_lo | x_hi] [W_hi | W_lo]^T = x_lo W_hi^T + x_hi W_lo^T,
// dropping x_lo W_lo^T (2^-22 relative). S is its own GEMM (K' = 2K), so the small terms are summed apart from
// the large ones: one accumulator for all three products measured 50x SGEMM's error. The second GEMM adds S as
// its C operand in the epilogue. Every product of TF32 values is exact in fp32, and the final GEMM accumulates in
// fp32 registers (promoted accumulation, fused_linear_sm90.cuh): the tensor cores' own accumulation measured
// 5-8x SGEMM's error.
// Operands: xs = [x_lo | x_hi] (M x 2K, made here), ws = [W_hi | W_lo] (N x 2K, split_tf32(weight), which the
// caller may cache); x_hi is xs's right half and W_hi ws's left half, read in place with a 2K row stride.
void run_split_tf32(const Problem& p, const at::Tensor& weight, const std::optional<at::Tensor>& weight_split,
                    const FusedLinearKernel& small_kernel, const FusedLinearKernel& final_kernel, cudaStream_t stream) {
  const int64_t k = p.args.k;
  TORCH_CHECK(2 * k <= INT32_MAX, kFn, ": in_features must be under 2^30 for precision 'highest'");
  const at::Tensor xs = split_tf32_rows(p.x2, /*lo_first=*/true, stream);
  at::Tensor ws;
  if (weight_split) {
    ws = *weight_split;
    TORCH_CHECK(ws.device() == weight.device() && ws.scalar_type() == at::kFloat && ws.dim() == 2 &&
                    ws.size(0) == weight.size(0) && ws.size(1) == 2 * k && ws.is_contiguous() &&
                    aligned16(ws.data_ptr()),
                kFn, ": weight_split must be split_tf32(weight): a contiguous, 16-byte aligned float32 [", weight.size(0), ", ", 2 * k,
                "] tensor on ", weight.device(), ", got ", ws.sizes());
  } else {
    ws = split_tf32_rows(weight, /*lo_first=*/false, stream);
  }
  const at::Tensor small = at::empty({p.args.m, p.args.n}, xs.options());

  FusedLinearArgs s = p.args;  // S = [x_lo | x_hi] [W_hi | W_lo]^T, no bias, no chain
  s.x = xs.data_ptr(), s.ldx = 2 * k, s.weight = ws.data_ptr(), s.ldw = 2 * k, s.k = int(2 * k);
  s.bias = nullptr, s.out = small.data_ptr(), s.ldo = p.args.n;
  launch(small_kernel, s, ChainProgram{}, xs, stream);

  FusedLinearArgs f = p.args;  // out = chain(x_hi W_hi^T + S + bias)
  f.x = xs.data_ptr<float>() + k, f.ldx = 2 * k, f.weight = ws.data_ptr(), f.ldw = 2 * k;
  f.source = small.data_ptr<float>(), f.lds = p.args.n;
  launch(final_kernel, f, p.program, xs, stream);
}

}  // namespace

at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors,
                        c10::string_view config, c10::string_view precision,
                        const std::optional<at::Tensor>& weight_split) {
  Problem p = prepare(x, weight, bias, ops, params, vectors, precision);
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
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index());
  if (p.precision == Precision::kSplitTF32) {
    // The first GEMM (K' = 2K) runs the configuration asked for or picked; the final one the same tile where it
    // has a kSourceChain twin, else the heuristic's pick among those.
    const FusedLinearKernel* same = find_fused_linear_kernel(p.dtype, FusedEpilogue::kSourceChain, kernel.name);
    run_split_tf32(p, weight, weight_split, kernel,
                   same != nullptr ? *same : pick(p, "", FusedEpilogue::kSourceChain), stream);
  } else {
    launch(kernel, p.args, p.program, x, stream);
  }
  return out;
}

at::Tensor fused_linear_group_norm(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, c10::ArrayRef<std::string> ops,
                                  c10::ArrayRef<double> params, at::TensorList vectors, int64_t num_groups,
                                  const std::optional<at::Tensor>& norm_weight,
                                  const std::optional<at::Tensor>& norm_bias, double eps,
                                  c10::ArrayRef<std::string> post_ops, c10::ArrayRef<double> post_params,
                                  at::TensorList post_vectors, c10::string_view config) {
  TORCH_CHECK(x.scalar_type() != at::kFloat, kFn,
              ": the GroupNorm in the GEMM's epilogue takes bfloat16 and float16 inputs, got float32");
  Problem p = prepare(x, weight, bias, ops, params, vectors, "");
  const int64_t n = p.args.n;
  TORCH_CHECK(num_groups > 0 && n % num_groups == 0, kFn, ": ", n, " features do not split into ", num_groups,
              " groups");
  TORCH_CHECK(group_norm_epilogue_takes(n / num_groups), kFn, ": groups of ", n / num_groups,
              " features; the GroupNorm in the GEMM's epilogue takes groups of 256 or 512");
  TORCH_CHECK(std::isfinite(eps) && eps >= 0, kFn, ": eps must be finite and >= 0, got ", eps);
  if (p.args.k == 0 || p.args.m == 0) {  // no products (or no rows): the GEMM, then the normalization stage
    return group_norm_chain(fused_linear(x, weight, bias, ops, params, vectors, "", "", std::nullopt), num_groups,
                            norm_weight, norm_bias, eps, post_ops, post_params, post_vectors);
  }
  const LinearGroupNorm norm{
      int(n / num_groups), float(eps),
      norm_weight ? make_chain_vector(*norm_weight, n, x.device(), "group_norm weight") : ChainVector{},
      norm_bias ? make_chain_vector(*norm_bias, n, x.device(), "group_norm bias") : ChainVector{},
      make_chain_program(post_ops, post_params, post_vectors, n, x.device())};
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end() - 1);
  out_shape.push_back(n);
  at::Tensor out = at::empty(out_shape, x.options());
  p.args.out = out.data_ptr();
  p.args.norm = &norm;
  const FusedLinearKernel& kernel = pick(p, config, FusedEpilogue::kGroupNorm);
  const c10::cuda::CUDAGuard device_guard(x.device());
  launch(kernel, p.args, p.program, x, c10::cuda::getCurrentCUDAStream(x.device().index()));
  return out;
}

std::string fused_linear_plan(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors,
                              c10::string_view precision) {
  const Problem p = prepare(x, weight, bias, ops, params, vectors, precision);
  return pick(p, "").name;
}

at::Tensor split_tf32_weight(const at::Tensor& weight) {
  TORCH_CHECK(weight.is_cuda() && weight.scalar_type() == at::kFloat && weight.dim() == 2, kFn,
              ": split_tf32 takes a 2-D float32 CUDA tensor, got ", weight.scalar_type(), " ", weight.sizes(), " on ",
              weight.device());
  const at::Tensor w = weight.contiguous();
  TORCH_CHECK(w.size(1) % 4 == 0 && aligned16(w.data_ptr()), kFn,
              ": split_tf32 needs in_features a multiple of 4 and 16-byte aligned rows");
  const c10::cuda::CUDAGuard device_guard(w.device());
  return split_tf32_rows(w, /*lo_first=*/false, c10::cuda::getCurrentCUDAStream(w.device().index()));
}

std::vector<std::string> fused_linear_configs(c10::ScalarType dtype) {
  std::vector<std::string> names;
  if (dtype != at::kBFloat16 && dtype != at::kHalf && dtype != at::kFloat) return names;
  for (const FusedLinearKernel* k : fused_linear_kernels(kernel_dtype(dtype, kFn))) names.push_back(k->name);
  return names;
}

}  // namespace cutlass_ext
