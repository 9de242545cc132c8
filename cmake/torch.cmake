# Finds the torch that is already installed; never a second one. scikit-build-core runs CMake with the
# interpreter that runs pip. Under pip's build isolation that interpreter's own site-packages are hidden
# (a sitecustomize.py put on PYTHONPATH removes them), so when `import torch` fails we ask again with
# `python -I`, which ignores PYTHONPATH and so sees the interpreter's real environment.
#
# Sets TORCH_VERSION, TORCH_CUDA_VERSION, TORCH_CXX11_ABI, TORCH_INCLUDE_DIRS, TORCH_LIBRARIES and
# CUTLASS_EXT_HAVE_TORCH_CUDA (FALSE after cutlass_ext_skip_native() for a CPU-only torch).

function(_cutlass_ext_run_probe what out_var)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" ${ARGN} "${CMAKE_CURRENT_SOURCE_DIR}/cmake/probe_python.py" ${what}
    OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    set(out "TORCH_ERROR=probe failed (${rc}): ${err}")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

# Parses key=value lines of the probe into variables of the caller's scope.
macro(_cutlass_ext_parse_probe text)
  string(REPLACE "\n" ";" _lines "${text}")
  foreach(_line IN LISTS _lines)
    if(_line MATCHES "^([A-Z_0-9]+)=(.*)$")
      set(${CMAKE_MATCH_1} "${CMAKE_MATCH_2}")
    endif()
  endforeach()
endmacro()

set(CUTLASS_EXT_HAVE_TORCH_CUDA FALSE)
_cutlass_ext_run_probe(torch probe)
if(probe MATCHES "TORCH_ERROR=")
  _cutlass_ext_run_probe(torch probe_isolated -I)
  if(NOT probe_isolated MATCHES "TORCH_ERROR=")
    set(probe "${probe_isolated}")
  endif()
endif()
_cutlass_ext_parse_probe("${probe}")

if(DEFINED TORCH_ERROR)
  message(FATAL_ERROR "cutlass_ext: torch is not importable by ${Python_EXECUTABLE} (${TORCH_ERROR}).\n"
    "Install torch first (the build uses the torch you have and never downloads one), then build again. "
    "If your installer isolates the build from your environment (uv, build), add --no-build-isolation; "
    "to install the pure-Python package regardless, set CUTLASS_EXT_NATIVE=OFF.")
endif()
message(STATUS "cutlass_ext: torch ${TORCH_VERSION} (CUDA '${TORCH_CUDA_VERSION}') at ${TORCH_LIBRARY_DIR}")

if(TORCH_CUDA_VERSION STREQUAL "")
  cutlass_ext_skip_native("torch ${TORCH_VERSION} is a CPU-only build; a CUDA build of torch is needed")
  return()
endif()

set(TORCH_LIBRARIES "")
foreach(lib c10 c10_cuda torch_cpu torch_cuda torch)
  list(APPEND TORCH_LIBRARIES "${TORCH_LIBRARY_DIR}/lib${lib}.so")
endforeach()
set(CUTLASS_EXT_HAVE_TORCH_CUDA TRUE)
