# _build_info.json, installed next to the Python package: what this build produced and why. Read at run time by
# cutlass_ext.native_info(), so that a user can see whether the compiled module was built and for which GPUs.

function(cutlass_ext_write_build_info native reason)
  if(native)
    set(native_json "true")
  else()
    set(native_json "false")
  endif()
  string(REPLACE "\\" "\\\\" reason "${reason}")
  string(REPLACE "\"" "\\\"" reason "${reason}")
  string(REPLACE "\n" " " reason "${reason}")
  set(archs_json "")
  foreach(arch IN LISTS CUTLASS_EXT_ARCHS)
    list(APPEND archs_json "\"${arch}\"")
  endforeach()
  list(JOIN archs_json ", " archs_json)
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/_build_info.json" "{
  \"native\": ${native_json},
  \"reason\": \"${reason}\",
  \"archs\": [${archs_json}],
  \"torch_version\": \"${TORCH_VERSION}\",
  \"torch_cuda_version\": \"${TORCH_CUDA_VERSION}\",
  \"nvcc_version\": \"${CMAKE_CUDA_COMPILER_VERSION}\",
  \"cutlass_include\": \"${CUTLASS_INCLUDE_DIR}\"
}
")
  install(FILES "${CMAKE_CURRENT_BINARY_DIR}/_build_info.json" DESTINATION cutlass_ext)
endfunction()

# Installs the pure-Python package only, after saying why as loudly as CMake can (pip shows it with -v;
# the package repeats it at run time). With CUTLASS_EXT_NATIVE=ON the same reason fails the build instead.
macro(cutlass_ext_skip_native reason)
  if(CUTLASS_EXT_NATIVE STREQUAL "ON")
    message(FATAL_ERROR "cutlass_ext: CUTLASS_EXT_NATIVE=ON but the compiled module cannot be built: ${reason}")
  endif()
  message(WARNING "\n"
    "==================================================================================\n"
    " cutlass_ext: building WITHOUT the compiled CUDA module.\n"
    " Reason: ${reason}\n"
    " The package will run its pure PyTorch reference path only (correct, not fused).\n"
    "==================================================================================")
  cutlass_ext_write_build_info(FALSE "${reason}")
endmacro()
