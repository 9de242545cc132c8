# The CUDA compiler and the architectures to build for.
# Sets CUTLASS_EXT_HAVE_NVCC and CUTLASS_EXT_ARCHS (e.g. "90a;80"); kernels.cmake turns them into -gencode flags.

include(CheckLanguage)
set(CUTLASS_EXT_HAVE_NVCC FALSE)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  cutlass_ext_skip_native("no CUDA compiler (nvcc) found; put the CUDA toolkit's bin/ on PATH or set CUDACXX")
  return()
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

# torch's headers and libcudart must come from the same CUDA major version as nvcc.
string(REGEX MATCH "^[0-9]+" nvcc_major "${CMAKE_CUDA_COMPILER_VERSION}")
string(REGEX MATCH "^[0-9]+" torch_cuda_major "${TORCH_CUDA_VERSION}")
if(NOT nvcc_major STREQUAL torch_cuda_major)
  cutlass_ext_skip_native("nvcc ${CMAKE_CUDA_COMPILER_VERSION} does not match torch's CUDA ${TORCH_CUDA_VERSION}; "
    "install a CUDA ${torch_cuda_major}.x toolkit or a torch built for CUDA ${nvcc_major}")
  return()
endif()

# Architectures: explicit list, else the GPUs present (Hopper as 90a: its kernels need wgmma/TMA), else 90a.
if(CUTLASS_EXT_CUDA_ARCHS)
  set(CUTLASS_EXT_ARCHS ${CUTLASS_EXT_CUDA_ARCHS})
  set(arch_origin "CUTLASS_EXT_CUDA_ARCHS")
elseif(GPU_CAPABILITIES)
  set(CUTLASS_EXT_ARCHS "")
  foreach(cap IN LISTS GPU_CAPABILITIES)
    if(cap STREQUAL "90")
      set(cap 90a)
    endif()
    list(APPEND CUTLASS_EXT_ARCHS ${cap})
  endforeach()
  set(arch_origin "the GPUs present")
else()
  set(CUTLASS_EXT_ARCHS 90a)
  set(arch_origin "the default (no GPU seen)")
endif()
string(REPLACE "," ";" CUTLASS_EXT_ARCHS "${CUTLASS_EXT_ARCHS}")
list(REMOVE_DUPLICATES CUTLASS_EXT_ARCHS)
foreach(arch IN LISTS CUTLASS_EXT_ARCHS)
  if(NOT arch MATCHES "^[0-9]+[af]?$")
    message(FATAL_ERROR "cutlass_ext: bad CUDA architecture '${arch}' in '${CUTLASS_EXT_ARCHS}'; "
      "write them as in CUTLASS_EXT_CUDA_ARCHS=\"80;90a\"")
  endif()
endforeach()
message(STATUS "cutlass_ext: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, building for ${CUTLASS_EXT_ARCHS} (from ${arch_origin})")
set(CUTLASS_EXT_HAVE_NVCC TRUE)
