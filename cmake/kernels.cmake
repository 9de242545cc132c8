# The kernel instantiations to compile: one per file under cutlass_ext/kernels/, the configuration in the file
# name. Each file is built only for the architectures it can run on.
#   CUTLASS_EXT_KERNEL_SOURCES: what this build compiles

# Any architecture: the standalone elementwise chain, the normalization stage, and the TF32 operand split (plain
# CUDA; the torch op that calls it links it on every build).
set(elementwise_sources
  cutlass_ext/kernels/elementwise_f32.cu
  cutlass_ext/kernels/elementwise_bf16.cu
  cutlass_ext/kernels/elementwise_f16.cu
  cutlass_ext/kernels/group_norm_f32.cu
  cutlass_ext/kernels/group_norm_bf16.cu
  cutlass_ext/kernels/group_norm_f16.cu
  cutlass_ext/kernels/split_tf32.cu
)

# sm_90a only (wgmma, TMA): the fused Linear, dtype_tile_cluster_schedule.
set(sm90_sources "")
foreach(dtype bf16 f16)
  # Each measured best for some bucket of the heuristic (src/fused_linear_registry.cpp); 64x256 ping-pong and a
  # 128x128 stream-K cooperative were tried and dropped: rarely best, never by more than a few percent. So was a
  # 128x256 stream-K, bf16 and TF32: its gains and losses changed sign between machines (perf-notes item 32).
  foreach(config 128x256x64_2x1_cooperative 128x128x64_2x1_cooperative 128x128x64_2x1_pingpong
                 64x128x64_1x1_pingpong
                 # the chain on the whole tile before the store (tile_chain_epilogue_sm90.hpp): short K, many tiles
                 128x128x64_2x1_pingpong_tilechain
                 # the chain of most tiles run during the next tile's mainloop (deferred_chain_epilogue_sm90.hpp)
                 128x256x64_2x1_cooperative_deferred
                 # the GroupNorm in the epilogue (group_norm_epilogue_sm90.hpp): a 1x2 cluster covers 512 features
                 128x256x64_1x2_cooperative_gn
                 # split K for few output tiles (SplitKLinear in fused_linear_sm90.cuh): 2, 4 and 8 splits each
                 64x128x64_1x1_pingpong_splitk 128x128x64_1x1_cooperative_splitk)
    list(APPEND sm90_sources cutlass_ext/kernels/fused_linear_sm90_${dtype}_${config}.cu)
  endforeach()
endforeach()
# float32 on TF32 tensor cores: three tiles of chain(acc + bias), and two of chain(acc + C + bias) with promoted
# accumulation (_addc: the split-precision path's final GEMM; its doubled accumulators rule out 128x256). A TF32
# deferred-chain kernel was tried and dropped: no faster than the plain 128x256 (perf-notes item 26).
foreach(config 128x256x32_2x1_cooperative 128x128x32_2x1_cooperative 64x128x32_1x1_pingpong
               128x128x32_2x1_cooperative_addc 64x128x32_1x1_pingpong_addc)
  list(APPEND sm90_sources cutlass_ext/kernels/fused_linear_sm90_tf32_${config}.cu)
endforeach()

set(all_gencodes "")
foreach(arch IN LISTS CUTLASS_EXT_ARCHS)
  list(APPEND all_gencodes "-gencode=arch=compute_${arch},code=sm_${arch}")
endforeach()
set_source_files_properties(${elementwise_sources} PROPERTIES COMPILE_OPTIONS "${all_gencodes}")
set(CUTLASS_EXT_KERNEL_SOURCES ${elementwise_sources})

if("90a" IN_LIST CUTLASS_EXT_ARCHS)
  set_source_files_properties(${sm90_sources} PROPERTIES COMPILE_OPTIONS "-gencode=arch=compute_90a,code=sm_90a")
  list(APPEND CUTLASS_EXT_KERNEL_SOURCES ${sm90_sources})
else()
  message(STATUS "cutlass_ext: 90a is not in CUTLASS_EXT_CUDA_ARCHS: no fused-Linear kernels (torch fallback)")
endif()
