# CUTLASS headers: CUTLASS_DIR if given, else those shipped in the nvidia-cutlass package, found without
# importing it. Sets CUTLASS_INCLUDE_DIR and CUTLASS_INCLUDE_DIRS (with tools/util/include when present).

if(NOT CUTLASS_DIR AND DEFINED ENV{CUTLASS_DIR})
  set(CUTLASS_DIR "$ENV{CUTLASS_DIR}")
endif()
if(NOT CUTLASS_DIR)
  execute_process(COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_SOURCE_DIR}/cmake/probe_python.py" cutlass
                  OUTPUT_VARIABLE probe OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(probe MATCHES "CUTLASS_SOURCE_DIR=([^\n]*)")
    set(CUTLASS_DIR "${CMAKE_MATCH_1}")
  endif()
endif()
if(NOT CUTLASS_DIR OR NOT EXISTS "${CUTLASS_DIR}/include/cutlass/cutlass.h")
  message(FATAL_ERROR "cutlass_ext: CUTLASS headers not found (CUTLASS_DIR='${CUTLASS_DIR}'). "
    "Install them with `pip install nvidia-cutlass==4.2.0.0` (pip does this itself unless you build with "
    "--no-build-isolation), or point CUTLASS_DIR at a CUTLASS checkout (the folder holding include/cutlass).")
endif()
set(CUTLASS_INCLUDE_DIR "${CUTLASS_DIR}/include")
set(CUTLASS_INCLUDE_DIRS "${CUTLASS_INCLUDE_DIR}")
if(EXISTS "${CUTLASS_DIR}/tools/util/include")
  list(APPEND CUTLASS_INCLUDE_DIRS "${CUTLASS_DIR}/tools/util/include")
endif()
file(STRINGS "${CUTLASS_INCLUDE_DIR}/cutlass/version.h" cutlass_version_lines REGEX "#define CUTLASS_(MAJOR|MINOR) ")
message(STATUS "cutlass_ext: CUTLASS at ${CUTLASS_DIR} (${cutlass_version_lines})")
