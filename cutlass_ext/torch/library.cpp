// The torch op schemas of namespace cutlass_ext and their CUDA kernels. The Python package registers the fake
// (meta) implementations for torch.compile and the CPU implementations (the reference math), in
// python/cutlass_ext/_library.py.
//
// An epilogue travels as `ops` (device op names, see chain_program.cpp), `params` (two per op) and `vectors`
// (the per-feature tensors, in the order the ops read them); python/cutlass_ext/epilogue.py encodes it.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(cutlass_ext, m) {
  m.def("elementwise(Tensor x, str[] ops, float[] params, Tensor[] vectors) -> Tensor");
  m.def("elementwise_out(Tensor x, str[] ops, float[] params, Tensor[] vectors, Tensor(a!) out) -> ()");
  m.def("chain_backward(Tensor z, Tensor grad, str[] ops, float[] params, Tensor[] vectors) -> Tensor");
  m.def("fused_linear(Tensor x, Tensor weight, Tensor? bias, str[] ops, float[] params, Tensor[] vectors, "
        "str config=\"\", str precision=\"\", Tensor? weight_split=None) -> Tensor");
  m.def("fused_linear_group_norm(Tensor x, Tensor weight, Tensor? bias, str[] ops, float[] params, "
        "Tensor[] vectors, int num_groups, Tensor? norm_weight, Tensor? norm_bias, float eps, str[] post_ops, "
        "float[] post_params, Tensor[] post_vectors, str config=\"\") -> Tensor");
  m.def("fused_linear_plan(Tensor x, Tensor weight, Tensor? bias, str[] ops, float[] params, Tensor[] vectors, "
        "str precision=\"\") -> str");
  m.def("split_tf32(Tensor weight) -> Tensor");
  m.def("group_norm_chain(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, str[] ops, "
        "float[] params, Tensor[] vectors) -> Tensor");
  m.def("fused_linear_configs(ScalarType dtype) -> str[]", &cutlass_ext::fused_linear_configs);
}

TORCH_LIBRARY_IMPL(cutlass_ext, CUDA, m) {
  m.impl("elementwise", &cutlass_ext::elementwise);
  m.impl("elementwise_out", &cutlass_ext::elementwise_out);
  m.impl("chain_backward", &cutlass_ext::chain_backward);
  m.impl("fused_linear", &cutlass_ext::fused_linear);
  m.impl("fused_linear_group_norm", &cutlass_ext::fused_linear_group_norm);
  m.impl("fused_linear_plan", &cutlass_ext::fused_linear_plan);
  m.impl("split_tf32", &cutlass_ext::split_tf32_weight);
  m.impl("group_norm_chain", &cutlass_ext::group_norm_chain);
}
