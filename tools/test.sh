#!/usr/bin/env bash
# The test command of the README (and of CI): installs what the tests need, checks
# formatting, the layering of includes (tools/check-includes.py) and the deployment files
# (tools/check-deploy.sh), builds Release and ASan+UBSan,
# and runs every test under both builds, the Release build on emulated older CPUs
# (tools/emulated-cpu-test.sh), the sharded deployment behind HAProxy and the
# container image (built and run), the server's tests under ThreadSanitizer
# (tools/tsan.sh), fuzzes each libFuzzer target briefly
# (tools/fuzz.sh), then runs the Python tests of the reference trainer.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

tools/setup.sh test
tools/check-format.sh
tools/check-includes.py
tools/check-deploy.sh

tools/build.sh Release -DTASKMOE_BUILD_TESTS=ON

# OMP_NUM_THREADS=2: the kernels' parallel paths run even where the tests' machine has 1 core.
export OMP_NUM_THREADS=2
echo "== ctest (Release)"
ctest --test-dir build/release --output-on-failure -j 2

# The same build on CPUs this one is not, emulated by QEMU (tools/emulated-cpu-test.sh, about
# 3 min): without AVX2 every program stops at start naming what it lacks; on an AVX2-only AMD
# EPYC, whose CPUID has no AVX-512 at all, the models' and kernels' tests pass, the demo model
# translates as this machine capped at AVX2 does, and the server serves it in bf16.
echo "== CPUs without AVX-512 or AVX2 (QEMU)"
tools/emulated-cpu-test.sh build/release

# Deployment, for real: the sharded topology behind HAProxy (tools/shard-test.sh, ~20 s).
echo "== sharded topology behind HAProxy"
tools/shard-test.sh

# deploy/Dockerfile built and run (tools/docker-test.sh: about 5 min on 2 cores, more where
# the Debian base images must first be made). It runs in the background beside the sanitizer
# stages: much of it waits on Debian's archive (debootstrap, the image's apt-get) rather than
# on the CPU, and its container serves on ports (8500, 8080, 9464) outside the ephemeral range
# the tests' servers bind. Its log is printed, and its status checked, at the end.
docker_log=build/docker-test.log
echo "== container image (in the background; log in $docker_log)"
tools/docker-test.sh >"$docker_log" 2>&1 &
docker_pid=$!
docker_status() {
  local status=0
  wait "$docker_pid" || status=$?
  echo "== container image"
  cat "$docker_log"
  return $status
}
# If a later stage fails, the image test still finishes (and stops the Docker daemon it
# started) before the script exits.
trap 'wait "$docker_pid" 2>/dev/null || true' EXIT

# Sanitizer builds leave out the AVX-512 copies of kernels/cpu_dispatch.h, and the ASan suite
# runs with oneDNN (and so every kernel-path choice, kernels/cpu_features.h) capped at AVX2: the
# Release suite tests the paths this machine picks, the ASan suite those of an AVX2-only CPU
# (our f32 and int8 kernels, bf16 computed by the f32 one), whatever the machine.
# The ASan build is clang's, also instrumented for libFuzzer (TASKMOE_BUILD_FUZZERS): one build
# for the ASan suite and the fuzz targets, which the fuzz stage below then only runs. Measured on
# 2 cores: this build in 424 s, against 539 s with gcc plus 226 s for a fuzz build of its own
# (docs/reliability.md, "The test command's time"). A build/asan that gcc configured is made
# afresh (tools/build.sh). Both sanitizer builds compile each target's sources in unity batches
# (cmake/TaskmoeOptions.cmake): on the 2-vCPU AVX2-only EPYC this build took 332 s against 577 s.
asan_dir=build/asan
CC=clang CXX=clang++ tools/build.sh Asan -DTASKMOE_BUILD_TESTS=ON -DTASKMOE_BUILD_BENCHMARKS=OFF \
  -DTASKMOE_BUILD_FUZZERS=ON
echo "== ctest (ASan+UBSan, kernel paths of an AVX2-only CPU)"
ONEDNN_MAX_CPU_ISA=AVX2 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir "$asan_dir" --output-on-failure -j 2
# (One ctest test per GoogleTest suite in the sanitizer builds: cmake/TaskmoeTests.cmake.)

# ThreadSanitizer over the server's tests (build/tsan: only the server and its tests; build and
# tests about 4.5 min on 2 cores; tools/tsan.sh says how uninstrumented libraries are
# handled). docs/reliability.md, "The test command's time": each stage's time.
echo "== ThreadSanitizer (server tests)"
tools/tsan.sh

# A short libFuzzer run of every fuzz target (docs/fuzzing.md), built above with the ASan suite:
# about 1 minute of fuzzing on 2 cores (longer runs: tools/fuzz.sh).
echo "== fuzz (10 s per target)"
TASKMOE_FUZZ_BUILD_DIR="$asan_dir" tools/fuzz.sh 10

if [[ -d training/tests ]]; then
  echo "== Python tests (training)"
  /usr/bin/python3 -m unittest discover -s training/tests
fi
docker_status
echo "tests: all passed in $((SECONDS - start)) s"
