// The fused Linear, torch-free: y = chain(x @ W^T + b), one GEMM whose epilogue runs the chain in registers.
//
// Every compiled configuration (one per file under cutlass_ext/kernels/) registers itself here when the library
// loads; src/fused_linear_registry.cpp holds the list and the shape heuristic that picks one.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cutlass_ext/chain_program.h"
#include "cutlass_ext/elementwise.h"  // DType

namespace cutlass_ext {

struct FusedLinearArgs {
  const void* x;       // M x K, row stride ldx (elements), unit column stride
  int64_t ldx;
  const void* weight;  // N x K as nn.Linear stores it, row stride ldw
  int64_t ldw;
  const void* bias;    // N values, or nullptr
  void* out;           // M x N, row stride ldo
  int64_t ldo;
  const float* source; // M x N float32 added to the accumulator (kernels with adds_source only), row stride lds
  int64_t lds;
  int m, n, k;
  int device;
  int sm_count;
};

// One compiled kernel configuration.
struct FusedLinearKernel {
  std::string name;  // dtype_tile_cluster_schedule, e.g. "bf16_128x128x64_1x1_pingpong"; "tf32_..." for float
  DType dtype;
  bool adds_source;  // chain(acc + C + bias) rather than chain(acc + bias); same name as its plain twin
  int tile_m, tile_n;
  std::string schedule;  // "pingpong" or "cooperative"
  size_t (*workspace_size)(const FusedLinearArgs&, const ChainProgram&);
  // Launches on the stream; returns an empty string on success, else what went wrong.
  std::string (*run)(const FusedLinearArgs&, const ChainProgram&, void* workspace, cudaStream_t);
};

bool register_fused_linear_kernel(FusedLinearKernel kernel);

// Every compiled configuration for a dtype (plain or adds_source), sorted by name.
std::vector<const FusedLinearKernel*> fused_linear_kernels(DType dtype, bool adds_source = false);

// The configuration of that name (nullptr when none is compiled).
const FusedLinearKernel* find_fused_linear_kernel(DType dtype, bool adds_source, std::string_view name);

// The configuration the shape heuristic picks (nullptr when none is compiled for the dtype).
const FusedLinearKernel* choose_fused_linear_kernel(DType dtype, bool adds_source, int m, int n, int k,
                                                    const ChainProgram& program, int sm_count);

// The split-precision path (float32 at FP32-level accuracy on TF32 tensor cores): each float32 value v is split
// into hi = tf32(v) and lo = tf32(v - hi), both exact TF32 values, written side by side in one row of 2 * cols:
// [hi | lo], or [lo | hi] with lo_first. Then x @ W^T = x_hi W_hi^T + (x_lo W_hi^T + x_hi W_lo^T) + O(2^-22),
// the bracket being ONE GEMM over the K-concatenated [x_lo | x_hi] and [W_hi | W_lo] (fused_linear_op.cpp).
// Non-finite values keep v in hi and 0 in lo, so inf and NaN propagate as in an FP32 GEMM.
// cols % 4 == 0, 16-byte aligned rows. In cutlass_ext/kernels/split_tf32.cu.
cudaError_t split_tf32(const float* in, int64_t ld_in, int64_t rows, int64_t cols, float* out, int64_t ld_out,
                       bool lo_first, cudaStream_t stream);

}  // namespace cutlass_ext
