#!/usr/bin/env bash
# Configures and builds one build type into build/<type> (Release, Asan, Debug, ...).
# Usage: tools/build.sh [Release|Asan|Debug|RelWithDebInfo] [extra cmake args...] [-- targets...]
# (without targets it builds everything the configuration enables). CC/CXX choose the compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/cores.sh
type="${1:-Release}"
shift || true
dir="build/$(echo "$type" | tr '[:upper:]' '[:lower:]')"
cmake_args=()
while (($# > 0)) && [[ $1 != -- ]]; do
  cmake_args+=("$1")
  shift
done
build_args=()
if (($# > 0)); then
  shift  # the --
  (($# > 0)) && build_args=(--target "$@")
fi
# CMake keeps the compiler a directory was first configured with and ignores CC/CXX afterwards:
# a directory that another compiler than $CXX configured is made afresh (tools/test.sh and
# tools/tsan.sh build their sanitizer directories with clang).
if [[ -n ${CXX:-} && -f $dir/CMakeCache.txt ]]; then
  cached=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$dir/CMakeCache.txt")
  wanted=$(command -v "$CXX" || echo "$CXX")
  if [[ $(readlink -f "$cached") != $(readlink -f "$wanted") ]]; then
    echo "build: $dir was configured with $cached, not $CXX: configuring it afresh"
    rm -rf "$dir"
  fi
fi
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "${cmake_args[@]}" >/dev/null
cmake --build "$dir" -j "$(usable_cores)" "${build_args[@]}"
