# The kernel instantiations to compile: one instantiation per file under cutlass_ext/kernels/, the configuration
# in the file name. Kernels for every architecture are listed first; architecture-specific families follow,
# each built only when its architecture is in CUTLASS_EXT_ARCHS.

set(CUTLASS_EXT_KERNEL_SOURCES
  cutlass_ext/kernels/elementwise_f32.cu
  cutlass_ext/kernels/elementwise_bf16.cu
  cutlass_ext/kernels/elementwise_f16.cu
)
