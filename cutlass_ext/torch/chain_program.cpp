#include "chain_program.h"

#include <c10/util/Exception.h>

#include <string_view>
#include <utility>

namespace cutlass_ext {
namespace {

// The device op names Python's lowering emits (python/cutlass_ext/epilogue.py, DEVICE_OPS).
constexpr std::pair<std::string_view, ChainOpCode> kOpNames[] = {
    {"add", ChainOpCode::kAdd},
    {"mul", ChainOpCode::kMul},
    {"clamp", ChainOpCode::kClamp},
    {"hardtanh", ChainOpCode::kHardtanh},
    {"relu", ChainOpCode::kRelu},
    {"leaky_relu", ChainOpCode::kLeakyRelu},
    {"gelu", ChainOpCode::kGelu},
    {"gelu_tanh", ChainOpCode::kGeluTanh},
    {"silu", ChainOpCode::kSilu},
    {"sigmoid", ChainOpCode::kSigmoid},
    {"tanh", ChainOpCode::kTanh},
    {"mish", ChainOpCode::kMish},
    {"softplus", ChainOpCode::kSoftplus},
    {"elu", ChainOpCode::kElu},
    {"hardswish", ChainOpCode::kHardswish},
    {"hardsigmoid", ChainOpCode::kHardsigmoid},
    {"abs", ChainOpCode::kAbs},
    {"neg", ChainOpCode::kNeg},
    {"add_vec", ChainOpCode::kAddVector},
    {"mul_vec", ChainOpCode::kMulVector},
    {"residual", ChainOpCode::kResidual},
};

ChainOpCode op_code(const std::string& name) {
  for (const auto& [known, code] : kOpNames) {
    if (known == name) return code;
  }
  TORCH_CHECK(false, "cutlass_ext: unknown device op '", name, "'");
}

ChainVectorDtype vector_dtype(const at::Tensor& v) {
  switch (v.scalar_type()) {
    case at::kFloat: return ChainVectorDtype::kF32;
    case at::kBFloat16: return ChainVectorDtype::kBF16;
    case at::kHalf: return ChainVectorDtype::kF16;
    default: TORCH_CHECK(false, "cutlass_ext: epilogue vectors must be float32, bfloat16 or float16, got ", v.scalar_type());
  }
}

}  // namespace

ChainProgram make_chain_program(c10::ArrayRef<std::string> ops, c10::ArrayRef<double> params,
                                at::TensorList vectors, int64_t features, c10::Device device) {
  TORCH_CHECK(ops.size() <= size_t(kMaxChainOps), "cutlass_ext: an epilogue chain has at most ", kMaxChainOps,
              " ops, got ", ops.size());
  TORCH_CHECK(params.size() == 2 * ops.size(), "cutlass_ext: expected 2 parameters per op (", 2 * ops.size(),
              "), got ", params.size());
  TORCH_CHECK(vectors.size() <= size_t(kMaxChainVectors), "cutlass_ext: an epilogue chain reads at most ",
              kMaxChainVectors, " vectors, got ", vectors.size());
  ChainProgram program{};
  program.num_ops = int32_t(ops.size());
  size_t next_vector = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    ChainOp& op = program.ops[i];
    op.code = op_code(ops[i]);
    op.a = float(params[2 * i]);
    op.b = float(params[2 * i + 1]);
    op.vector = -1;
    if (op.code == ChainOpCode::kAddVector || op.code == ChainOpCode::kMulVector) {
      TORCH_CHECK(next_vector < vectors.size(), "cutlass_ext: op '", ops[i], "' has no vector left to read");
      op.vector = int32_t(next_vector++);
    }
  }
  TORCH_CHECK(next_vector == vectors.size(), "cutlass_ext: ", vectors.size(), " vectors given, the ops read ",
              next_vector);
  program.reads = chain_reads(program);
  for (size_t i = 0; i < vectors.size(); ++i) {
    program.vectors[i] = make_chain_vector(vectors[i], features, device, "epilogue vector " + std::to_string(i));
  }
  return program;
}

DType kernel_dtype(c10::ScalarType t, const char* where) {
  switch (t) {
    case at::kFloat: return DType::kF32;
    case at::kBFloat16: return DType::kBF16;
    case at::kHalf: return DType::kF16;
    default: TORCH_CHECK(false, where, ": dtype ", t, " is not supported (float32, bfloat16 or float16)");
  }
}

ChainVector make_chain_vector(const at::Tensor& v, int64_t features, c10::Device device, const std::string& what) {
  TORCH_CHECK(v.device() == device, "cutlass_ext: ", what, " is on ", v.device(), ", expected ", device);
  TORCH_CHECK(v.dim() == 1 && v.size(0) == features, "cutlass_ext: ", what, " must have shape [", features,
              "], got ", v.sizes());
  TORCH_CHECK(v.is_contiguous(), "cutlass_ext: ", what, " must be contiguous");
  return ChainVector{v.data_ptr(), vector_dtype(v)};
}

}  // namespace cutlass_ext
