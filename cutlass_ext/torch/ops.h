// The CUDA implementations of the torch ops that library.cpp registers.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace cutlass_ext {

at::Tensor elementwise(const at::Tensor& x, c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                       at::TensorList vectors);
void elementwise_out(const at::Tensor& x, c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                     at::TensorList vectors, const at::Tensor& out);
// grad * d chain / dz at z, the chain's backward pass (autograd's special values; apply_chain_derivative).
at::Tensor chain_backward(const at::Tensor& z, const at::Tensor& grad, c10::ArrayRef<std::string> ops,
                          c10::ArrayRef<double> params, at::TensorList vectors);

// y = chain(x @ weight.T + bias) as one sm90 GEMM. config: a name from fused_linear_configs, or "" for the
// shape heuristic's choice. precision (float32 inputs only): 'highest' (split TF32, two GEMMs), 'high' or
// 'medium' (one TF32 GEMM). weight_split: split_tf32_weight(weight), reused across calls by the caller; made
// here when absent ('highest' only).
at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors,
                        c10::string_view config, c10::string_view precision,
                        const std::optional<at::Tensor>& weight_split);
// y = post(group_norm(pre(x @ weight.T + bias))) as one sm90 GEMM whose epilogue gathers each (row, group)'s
// statistics and normalizes in registers (FusedEpilogue::kGroupNorm): bfloat16 / float16, groups of 256 or 512
// features (group_norm_epilogue_takes). ops/params/vectors are the pre-chain, post_* the post-chain.
at::Tensor fused_linear_group_norm(const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, c10::ArrayRef<std::string> ops,
                                  c10::ArrayRef<double> params, at::TensorList vectors, int64_t num_groups,
                                  const std::optional<at::Tensor>& norm_weight,
                                  const std::optional<at::Tensor>& norm_bias, double eps,
                                  c10::ArrayRef<std::string> post_ops, c10::ArrayRef<double> post_params,
                                  at::TensorList post_vectors, c10::string_view config);
// The configuration fused_linear would run for these inputs (same checks, no launch).
std::string fused_linear_plan(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params, at::TensorList vectors,
                              c10::string_view precision);
// A float32 weight (N x K) as the split-precision path reads it: [W_hi | W_lo], N x 2K, both TF32 values.
at::Tensor split_tf32_weight(const at::Tensor& weight);
// y = chain(group_norm(x, num_groups, weight, bias, eps)) over x's last dimension (the normalization stage of an
// epilogue, group_norm.h); weight and bias are per-feature, float32, bfloat16 or float16.
at::Tensor group_norm_chain(const at::Tensor& x, int64_t num_groups, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, double eps, c10::ArrayRef<std::string> ops,
                            c10::ArrayRef<double> params, at::TensorList vectors);
// Names of the compiled configurations for a dtype.
std::vector<std::string> fused_linear_configs(c10::ScalarType dtype);

}  // namespace cutlass_ext
