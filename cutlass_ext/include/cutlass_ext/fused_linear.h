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

// What the epilogue computes, besides the cast to the output dtype:
//   kChain:       chain(acc + bias)
//   kSourceChain: chain(acc + C + bias), C an M x N float32 operand (the split-precision path's final GEMM)
//   kGroupNorm:   post(group_norm(pre(acc + bias))) over groups of the output features, the statistics gathered in
//                 the epilogue (group_norm_epilogue_sm90.hpp); `program` is the pre-chain
//   kPartial:     acc alone, as float32, one M x N slice per split of K: the GEMM of a split-K configuration, whose
//                 reduction kernel then sums the slices, adds the bias and runs the chain (split_k_reduce.cuh).
//                 Split-K configurations register as kChain: to a caller they compute chain(acc + bias).
enum class FusedEpilogue { kChain, kSourceChain, kGroupNorm, kPartial };

// The normalization of a kGroupNorm kernel: torch's GroupNorm over groups of group_size consecutive features
// (biased variance, eps inside the square root), the per-feature affine, then the post-chain.
struct LinearGroupNorm {
  int group_size;
  float eps;
  ChainVector weight;  // gamma[feature], or data == nullptr for 1
  ChainVector bias;    // beta[feature], or data == nullptr for 0
  ChainProgram post;
};

// The group sizes the kGroupNorm kernels take: a row's group is one 128x256 tile or the two tiles of a 1x2 cluster.
inline bool group_norm_epilogue_takes(int64_t group_size) { return group_size == 256 || group_size == 512; }

struct FusedLinearArgs {
  const void* x;       // M x K, row stride ldx (elements), unit column stride
  int64_t ldx;
  const void* weight;  // N x K as nn.Linear stores it, row stride ldw
  int64_t ldw;
  const void* bias;    // N values, or nullptr
  void* out;           // M x N, row stride ldo
  int64_t ldo;
  const float* source; // M x N float32 added to the accumulator (kSourceChain kernels only), row stride lds
  int64_t lds;
  const LinearGroupNorm* norm;  // kGroupNorm kernels only
  int m, n, k;
  int device;
  int sm_count;
  // kPartial kernels: the GEMM runs `splits` times, split s on columns [s k, (s + 1) k) of x and weight, and writes
  // slice s of out at s * m * ldo (a batched GEMM whose batch stride in x and weight is k).
  int splits = 1;
};

// One compiled kernel configuration.
struct FusedLinearKernel {
  std::string name;  // dtype_tile_cluster_schedule, e.g. "bf16_128x128x64_1x1_pingpong"; "tf32_..." for float
  DType dtype;
  FusedEpilogue epilogue;  // kSourceChain kernels share their kChain twin's name; kGroupNorm names end in _gn
  int tile_m, tile_n;
  std::string schedule;  // "pingpong" or "cooperative"
  int splits;            // split-K configurations (names ending in _splitk<splits>): the most splits of K; else 1
  size_t (*workspace_size)(const FusedLinearArgs&, const ChainProgram&);
  // Launches on the stream; returns an empty string on success, else what went wrong.
  std::string (*run)(const FusedLinearArgs&, const ChainProgram&, void* workspace, cudaStream_t);
};

bool register_fused_linear_kernel(FusedLinearKernel kernel);

// Every compiled configuration for a dtype and epilogue, sorted by name.
std::vector<const FusedLinearKernel*> fused_linear_kernels(DType dtype, FusedEpilogue epilogue = FusedEpilogue::kChain);

// The configuration of that name (nullptr when none is compiled).
const FusedLinearKernel* find_fused_linear_kernel(DType dtype, FusedEpilogue epilogue, std::string_view name);

// The configuration the shape heuristic picks (nullptr when none is compiled for the dtype and epilogue).
const FusedLinearKernel* choose_fused_linear_kernel(DType dtype, FusedEpilogue epilogue, int m, int n, int k,
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
