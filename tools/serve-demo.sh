#!/usr/bin/env bash
# The serve command of the README: installs what is needed, builds Release, extracts the
# per-task subnetworks of the bundled demo TaskMoE model into a model repository (again only
# when the checkpoint changes), and runs the server on it in the foreground (Ctrl-C stops
# it): gRPC, HTTP/JSON with the playground page, metrics. Extra arguments go to the server,
# e.g. --precision=int8 or --port=9000.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh serve
tools/build.sh Release -DTASKMOE_BUILD_TESTS=OFF

bin=build/release
server=$bin/server/taskmoe-server
checkpoint=demo/taskmoe
repository=build/demo-repository
port=8500
http_port=8080
metrics_port=9464

if [[ ! -f "$checkpoint/config.json" ]]; then
  echo "serve-demo: $checkpoint/config.json is missing: the demo model is not in this checkout" >&2
  exit 1
fi

# The repository remembers the digest of the checkpoint it came from; extraction (a few
# seconds) runs only when that differs. It writes beside the old repository and swaps, so an
# interrupted run never leaves a half-written one behind.
digest=$(cat "$checkpoint/config.json" "$checkpoint/model.safetensors" "$checkpoint/spm.model" |
  sha256sum | cut -d' ' -f1)
stamp="$repository/.checkpoint-sha256"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$digest" ]]; then
  echo "serve-demo: extracting the per-task subnetworks of $checkpoint into $repository"
  rm -rf "$repository.new"
  "$bin/tools/taskmoe-extract" --checkpoint="$checkpoint" --out="$repository.new"
  echo "$digest" >"$repository.new/.checkpoint-sha256"
  rm -rf "$repository"
  mv "$repository.new" "$repository"
else
  echo "serve-demo: $repository is up to date with $checkpoint"
fi

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
