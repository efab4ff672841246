# Compiler options shared by every first-party target: strict warnings, warnings as errors,
# and the instruction set of the machine we build for (oneDNN dispatches its own kernels at
# run time; our own loops rely on the compiler's auto-vectorisation).
set(TASKMOE_MARCH "x86-64-v3" CACHE STRING
    "-march for first-party code (x86-64-v3 = AVX2/FMA, the lowest that builds; x86-64-v4; 'native')")

# Asan and Tsan, the sanitizer build types: some defaults differ for them (below, and in
# TaskmoeTests.cmake and tests/CMakeLists.txt).
if(CMAKE_BUILD_TYPE MATCHES "^(Asan|Tsan)$")
  set(TASKMOE_SANITIZER_BUILD ON)
else()
  set(TASKMOE_SANITIZER_BUILD OFF)
endif()

# kernels/cpu_dispatch.h: AVX-512 copies of a few hot loops, chosen at run time. OFF compiles
# only the TASKMOE_MARCH versions (sanitizer builds always do).
option(TASKMOE_CPU_DISPATCH "compile AVX-512 clones of hot loops, picked at run time" ON)

# The sanitizer builds compile each target's sources in unity batches (CMake's UNITY_BUILD,
# eight sources a unit): the test command builds ASan and TSan on two cores, and most of a
# source's compile is the same gRPC, Abseil and GoogleTest headers (docs/reliability.md, "The
# test command's time"). Release keeps one object per source: its -O3 code is what ships,
# and its build is the one that catches a library source's missing includes. The test
# executables compile in unity batches in every build (TASKMOE_UNITY_BUILD_TESTS). Sources
# with compile options of their own (the AVX-512 and VNNI kernels, tests/kernels/reference.cc)
# stay out of units: CMake compiles them alone. So that units can form, names at namespace
# scope (anonymous namespaces included) differ between a target's sources.
option(TASKMOE_UNITY_BUILD "compile each target's sources in unity batches"
       ${TASKMOE_SANITIZER_BUILD})
set(CMAKE_UNITY_BUILD ${TASKMOE_UNITY_BUILD})
set(CMAKE_UNITY_BUILD_BATCH_SIZE 8)
option(TASKMOE_UNITY_BUILD_TESTS "compile the test executables' sources in unity batches" ON)

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
  # Every program checks at start that the CPU has TASKMOE_MARCH's features, and says which it
  # lacks instead of dying of SIGILL (kernels/isa_requirement.h).
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    target_link_libraries(${target} PRIVATE taskmoe_isa_requirement)
  endif()
endfunction()

# The x86-64 level (3 or 4) of TASKMOE_MARCH, for that check. x86-64-v3 is the lowest that
# builds: our kernels (f32_gemm.cc, softmax.cc, attention.cc, ...) use AVX2 and FMA intrinsics
# directly. Another -march (e.g. 'native') is checked as x86-64-v3, the kernels' own level.
if(TASKMOE_MARCH MATCHES "^x86-64(-v2)?$")
  message(FATAL_ERROR "TASKMOE_MARCH=${TASKMOE_MARCH}: the kernels use AVX2 and FMA "
                      "intrinsics; x86-64-v3 is the lowest level taskmoe-serve builds for")
elseif(TASKMOE_MARCH MATCHES "^x86-64-v([34])$")
  set(TASKMOE_BUILD_ISA_LEVEL ${CMAKE_MATCH_1})
else()
  set(TASKMOE_BUILD_ISA_LEVEL 3)
  message(STATUS "TASKMOE_MARCH=${TASKMOE_MARCH}: programs check at start for x86-64-v3's "
                 "features only (kernels/isa_requirement.h)")
endif()
