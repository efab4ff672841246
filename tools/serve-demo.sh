#!/usr/bin/env bash
# The serve command of the README: installs what is needed, builds Release, and starts the
# gRPC server on the bundled demo model. Extra arguments go to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh serve
tools/build.sh Release -DTASKMOE_BUILD_TESTS=OFF

server=build/release/server/taskmoe-server
demo=models/demo
if [[ -x "$server" && -d "$demo/repository" ]]; then
  exec "$server" --model_repository="$demo/repository" "$@"
fi

# Until the server and the demo model land (issues #5 and #4), run what exists: the kernel
# library's matmul benchmark at decoder shapes.
echo "serve-demo: the gRPC server and the demo model are not built yet in this version;"
echo "serve-demo: running the kernel benchmark instead (matmul GFLOP/s per precision)."
exec build/release/bench/kernels_bench --benchmark_filter='K:1024/N:1024' \
  --benchmark_min_time=0.1 "$@"
