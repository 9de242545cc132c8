// The fused Linear, torch-free: y = chain(x @ W^T + b), one GEMM whose epilogue runs the chain in registers.
//
// Every compiled configuration (one per file under cutlass_ext/kernels/) registers itself here when the library
// loads; src/fused_linear_registry.cpp holds the list and the shape heuristic that picks one.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
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
  int m, n, k;
  int device;
  int sm_count;
};

// One compiled kernel configuration.
struct FusedLinearKernel {
  std::string name;  // dtype_tile_cluster_schedule, e.g. "bf16_128x128x64_1x1_pingpong"
  DType dtype;
  int tile_m, tile_n;
  std::string schedule;  // "pingpong" or "cooperative"
  size_t (*workspace_size)(const FusedLinearArgs&, const ChainProgram&);
  // Launches on the stream; returns an empty string on success, else what went wrong.
  std::string (*run)(const FusedLinearArgs&, const ChainProgram&, void* workspace, cudaStream_t);
};

bool register_fused_linear_kernel(FusedLinearKernel kernel);

// Every compiled configuration for a dtype, sorted by name.
std::vector<const FusedLinearKernel*> fused_linear_kernels(DType dtype);

// The configuration the shape heuristic picks (nullptr when none is compiled for the dtype).
const FusedLinearKernel* choose_fused_linear_kernel(DType dtype, int m, int n, int k, const ChainProgram& program,
                                                    int sm_count);

}  // namespace cutlass_ext
