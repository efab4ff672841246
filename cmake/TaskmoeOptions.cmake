# Compiler options shared by every first-party target: strict warnings, warnings as errors,
# and the instruction set of the machine we build for (oneDNN dispatches its own kernels at
# run time; our own loops rely on the compiler's auto-vectorisation).
set(TASKMOE_MARCH "x86-64-v3" CACHE STRING
    "-march for first-party code (x86-64-v3 = AVX2/FMA; 'native' for the build machine)")

# kernels/cpu_dispatch.h: AVX-512 copies of a few hot loops, chosen at run time. OFF compiles
# only the TASKMOE_MARCH versions (sanitizer builds always do).
option(TASKMOE_CPU_DISPATCH "compile AVX-512 clones of hot loops, picked at run time" ON)

function(taskmoe_set_target_options target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Werror -Wshadow -Wnon-virtual-dtor -Wno-unused-parameter
    -Wno-missing-field-initializers  # designated initializers rely on member defaults
    -march=${TASKMOE_MARCH}
    # clang (the fuzz build) reports `#pragma omp simd` loops it cannot vectorise, e.g. float
    # reductions, as -Wpass-failed warnings: missed optimisations, not defects in the code.
    $<$<CXX_COMPILER_ID:Clang>:-Wno-pass-failed>)
  if(NOT TASKMOE_CPU_DISPATCH)
    target_compile_definitions(${target} PRIVATE TASKMOE_NO_CPU_DISPATCH)
  endif()
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()
