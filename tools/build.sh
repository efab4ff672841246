#!/usr/bin/env bash
# Configures and builds one build type into build/<type> (Release, Asan, Debug, ...).
# Usage: tools/build.sh [Release|Asan|Debug|RelWithDebInfo] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
type="${1:-Release}"
shift || true
dir="build/$(echo "$type" | tr '[:upper:]' '[:lower:]')"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
