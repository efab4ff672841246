#!/usr/bin/env bash
# Configures and builds one build type into build/<type> (Release, Asan, Debug, ...).
# Usage: tools/build.sh [Release|Asan|Debug|RelWithDebInfo] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
type="${1:-Release}"
shift || true
dir="build/$(echo "$type" | tr '[:upper:]' '[:lower:]')"
# The CPUs this process may use. GNU nproc also obeys OMP_NUM_THREADS, which tools/test.sh
# sets for the kernels' thread teams, not for the compiler's jobs.
cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
cmake --build "$dir" -j "$(cores)"
