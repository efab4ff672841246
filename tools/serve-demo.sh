#!/usr/bin/env bash
# The serve command of the README: installs what is needed, builds Release, extracts the
# per-task subnetworks of the bundled demo TaskMoE model into a model repository (again only
# when the checkpoint changes; tools/demo-repository.sh), and runs the server on it in the
# foreground (Ctrl-C stops it): gRPC, HTTP/JSON with the playground page, metrics. Extra
# arguments go to the server, e.g. --precision=int8 or --port=9000.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh serve
tools/build.sh Release -DTASKMOE_BUILD_TESTS=OFF

bin=build/release
server=$bin/server/taskmoe-server
repository=build/demo-repository
port=8500
http_port=8080
metrics_port=9464

# Experts kept apart (--keep_experts): an expert several tasks chose is held once, and the
# continuous batch runs it once per step for all of their rows (docs/operations.md).
source tools/demo-repository.sh
demo_repository "$repository" --keep_experts

client=$bin/server/taskmoe-client
cat <<EOF
serve-demo: starting taskmoe-server on port $port (gRPC); the playground page and HTTP/JSON API
on http://localhost:$http_port/ ; metrics on http://localhost:$metrics_port/metrics.
serve-demo: once it says "ready", call it from another shell:
  $client --list_tasks
  $client --task=en-de "Open the file."
  echo "Save the document as PDF." | $client --task=en-fr
  $client --task=en-de --stream "Insert a new table."
  $client --health
  curl -s localhost:$http_port/v1/translate -d '{"task": "en-de", "texts": ["Open the file."]}'
(--target=host:port for another server; docs/api.md describes the API.)
EOF
exec "$server" --model_repository="$repository" --port="$port" --metrics_port="$metrics_port" \
  --http_port="$http_port" --playground "$@"
