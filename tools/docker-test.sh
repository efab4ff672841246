#!/usr/bin/env bash
# Builds deploy/Dockerfile and runs the image as a user would, checking what the image
# promises (docs/operations.md "Container image"): the server runs as the non-root user 10001,
# Docker's health check turns healthy, a translation equals the local build's, the metrics and
# HTTP ports answer, and SIGTERM drains a call in flight and exits 0 within the grace period.
# Prints the build time and the image size. Part of tools/test.sh; on its own:
#   tools/docker-test.sh            (needs build/release: tools/build.sh Release first)
#
# Everything stays on this machine: when no Docker daemon answers, the script starts one with
# no bridge network and no iptables rules (containers use the host network, so all traffic is
# on 127.0.0.1) and stops it at the end. Without a registry, the Debian 12 base images are made
# here: debootstrap (minbase) from Debian's archive, imported as debian:12 and debian:12-slim
# (only when no such image exists). The container runs on the image's own ports, 8500 (gRPC),
# 8080 (HTTP) and 9464 (metrics), so its HEALTHCHECK is tested as shipped: they must be free.
# At the end it removes the image it built and the build stage's images (about 2.3 GB in all;
# --keep-image keeps them, and a later run then reuses the build stage's package layer). The
# base images stay: `docker image rm debian:12 debian:12-slim` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."
keep_image=
case "${1:-}" in
  --keep-image) keep_image=1 ;;
  "") ;;
  *)
    echo "usage: tools/docker-test.sh [--keep-image]" >&2
    exit 2
    ;;
esac
bin=build/release
work=build/docker-test
image=taskmoe-serve:test
container=taskmoe-docker-test
grpc_port=8500
http_port=8080
metrics_port=9464

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
# Debian's client (docker.io), which matches its daemon; another on PATH may be newer.
docker=(/usr/bin/docker)
if [[ $(id -u) -ne 0 ]]; then docker=(sudo /usr/bin/docker); fi

fail() {
  echo "docker-test: FAIL: $*" >&2
  exit 1
}

for tool in "$bin/server/taskmoe-server" "$bin/server/taskmoe-client" \
  "$bin/tools/taskmoe-extract"; do
  [[ -x "$tool" ]] || fail "$tool is missing: run tools/build.sh Release first"
done
for port in $grpc_port $http_port $metrics_port; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is in use; the container serves on the image's ports 8500, 8080 and 9464"
  fi
done
rm -rf "$work"
mkdir -p "$work"

dockerd_pid=
source tools/server-process.sh
cleanup() {
  "${docker[@]}" rm -f "$container" >/dev/null 2>&1 || true
  stop_server
  if [[ -z "$keep_image" ]] && "${docker[@]}" info >/dev/null 2>&1; then
    "${docker[@]}" image rm "$image" >/dev/null 2>&1 || true
    "${docker[@]}" image prune -f --filter label=taskmoe-serve.stage=build >/dev/null 2>&1 || true
  fi
  if [[ -n "$dockerd_pid" ]]; then
    echo "docker-test: stopping the Docker daemon it started"
    "${sudo_cmd[@]}" kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      "${sudo_cmd[@]}" kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.2
    done
  fi
}
trap cleanup EXIT

# ---- A Docker daemon: the one running, or one of our own. ----
if ! "${docker[@]}" info >/dev/null 2>&1; then
  echo "docker-test: starting dockerd (no bridge, no iptables; log in $work/dockerd.log)"
  "${sudo_cmd[@]}" dockerd --bridge=none --iptables=false --ip6tables=false \
    --pidfile="$PWD/$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  for _ in $(seq 150); do
    "${docker[@]}" info >/dev/null 2>&1 && break
    sleep 0.2
  done
  "${docker[@]}" info >/dev/null 2>&1 || fail "dockerd did not start: $(tail -3 "$work/dockerd.log")"
  dockerd_pid=$(cat "$work/dockerd.pid")
fi

# ---- Debian 12 base images, made here when absent. ----
if ! "${docker[@]}" image inspect debian:12 >/dev/null 2>&1; then
  echo "docker-test: making the debian:12 base image (debootstrap minbase)"
  rootfs="$work/rootfs"
  "${sudo_cmd[@]}" debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
    >"$work/debootstrap.log" 2>&1 || fail "debootstrap failed: $(tail -3 "$work/debootstrap.log")"
  # The same suites as Debian's own image: the release, its updates and security fixes.
  "${sudo_cmd[@]}" rm -f "$rootfs/etc/apt/sources.list"
  "${sudo_cmd[@]}" tee "$rootfs/etc/apt/sources.list.d/debian.sources" >/dev/null <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  "${sudo_cmd[@]}" rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  "${sudo_cmd[@]}" tar -C "$rootfs" --numeric-owner -c . |
    "${docker[@]}" import --change 'CMD ["bash"]' - debian:12 >/dev/null
  "${sudo_cmd[@]}" rm -rf "$rootfs"
fi
if ! "${docker[@]}" image inspect debian:12-slim >/dev/null 2>&1; then
  "${docker[@]}" tag debian:12 debian:12-slim
fi

# ---- The image. ----
echo "docker-test: building deploy/Dockerfile (log in $work/build.log)"
build_start=$SECONDS
# The host network for the build too: the daemon has no bridge for apt-get to reach Debian.
DOCKER_BUILDKIT=0 "${docker[@]}" build --network host -f deploy/Dockerfile -t "$image" . \
  >"$work/build.log" 2>&1 || fail "docker build failed: $(tail -20 "$work/build.log")"
build_seconds=$((SECONDS - build_start))
image_bytes=$("${docker[@]}" image inspect --format '{{.Size}}' "$image")

# ---- The local build on the same checkpoint, to compare translations with. ----
"$bin/tools/taskmoe-extract" --checkpoint=demo/taskmoe --out="$work/demo-repository" \
  --keep_experts >"$work/extract.log" 2>&1 || fail "extracting the demo repository: $(tail -3 "$work/extract.log")"
start_server local "$work/local.ports" --model_repository="$work/demo-repository"
local_target=$target

# ---- The container, as shipped (its CMD, ports and HEALTHCHECK). ----
"${docker[@]}" run -d --name "$container" --network host "$image" >/dev/null
container_pid=$("${docker[@]}" inspect --format '{{.State.Pid}}' "$container")
uid=$(stat -c %u "/proc/$container_pid")
[[ "$uid" == 10001 ]] || fail "the server runs as uid $uid, not 10001"
echo "docker-test: ok: the server process runs as uid 10001"

client=("$bin/server/taskmoe-client" --target="127.0.0.1:$grpc_port")
for _ in $(seq 600); do
  "${client[@]}" --health >/dev/null 2>&1 && break
  [[ "$("${docker[@]}" inspect --format '{{.State.Running}}' "$container")" == true ]] ||
    fail "the container exited: $("${docker[@]}" logs "$container" 2>&1 | tail -5)"
  sleep 0.2
done
"${client[@]}" --health >/dev/null || fail "the server never became SERVING"
# Docker's own HEALTHCHECK runs every 10 s inside the container.
for _ in $(seq 60); do
  health=$("${docker[@]}" inspect --format '{{.State.Health.Status}}' "$container")
  [[ "$health" == healthy ]] && break
  sleep 1
done
[[ "$health" == healthy ]] || fail "Docker's health check says '$health'"
echo "docker-test: ok: SERVING, and Docker's HEALTHCHECK says healthy"

texts=("Open the file." "Save the document as PDF. Close the window." "Insert a new table.")
for task in en-de fr-en en-ru; do
  from_image=$("${client[@]}" --task="$task" "${texts[@]}") || fail "$task: the image's server"
  from_local=$("$bin/server/taskmoe-client" --target="$local_target" --task="$task" \
    "${texts[@]}") || fail "$task: the local server"
  [[ "$from_image" == "$from_local" ]] ||
    fail "$task: the image translates differently: '$from_image' against '$from_local'"
done
echo "docker-test: ok: translations equal the local build's (en-de, fr-en, en-ru)"

# The HTTP/JSON port: the same translation as gRPC's.
http_reply=$(curl -sf -X POST "http://127.0.0.1:$http_port/v1/translate" \
  -H 'Content-Type: application/json' \
  -d '{"task": "en-de", "texts": ["Open the file."]}') || fail "no HTTP reply on :$http_port"
grpc_text=$("${client[@]}" --task=en-de "Open the file.")
first_text='import json, sys; print(json.load(sys.stdin)["translations"][0]["text"])'
http_text=$(/usr/bin/python3 -c "$first_text" <<<"$http_reply")
[[ "$http_text" == "$grpc_text" ]] || fail "HTTP says '$http_text', gRPC '$grpc_text'"
echo "docker-test: ok: the HTTP/JSON port translates as gRPC does"

metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics") || fail "no metrics on :$metrics_port"
models=$(grep -c '^taskmoe_model_info{' <<<"$metrics" || true)
[[ "$models" == 16 ]] || fail "taskmoe_model_info has $models series, not 16"
grep -q '^taskmoe_requests_total{.*code="OK".*task="en-de"' <<<"$metrics" ||
  grep -q '^taskmoe_requests_total{.*task="en-de".*code="OK"' <<<"$metrics" ||
  fail "the metrics do not count the en-de requests"
echo "docker-test: ok: /metrics scraped (16 models, requests counted)"

# ---- SIGTERM with a call in flight: it finishes, then the server exits 0 in time. ----
# The shipped container first: SIGTERM stops it cleanly. Then one whose decoding is slowed
# down (the server's debug flags: 20 ms per step, 100 steps per sentence), so that a call is
# surely in flight when SIGTERM comes.
"${docker[@]}" kill --signal=TERM "$container" >/dev/null
exit_code=$(timeout 60 "${docker[@]}" wait "$container") || fail "the server did not exit in 60 s"
[[ "$exit_code" == 0 ]] || fail "the server exited with $exit_code after SIGTERM"
"${docker[@]}" rm "$container" >/dev/null
"${docker[@]}" run -d --name "$container" --network host "$image" --model_repository=/models/demo \
  --port="$grpc_port" --metrics_port=-1 --debug_step_delay_ms=20 --debug_ignore_eos \
  --max_output_tokens=100 >/dev/null
for _ in $(seq 600); do
  "${client[@]}" --health >/dev/null 2>&1 && break
  sleep 0.2
done
"${client[@]}" --task=en-de "Open the file." "Close the window." >"$work/inflight.out" \
  2>"$work/inflight.err" &
inflight_pid=$!
sleep 0.5
kill -0 "$inflight_pid" 2>/dev/null ||
  fail "the call meant to be in flight at SIGTERM had ended: $(cat "$work/inflight.err")"
stop_start=$SECONDS
"${docker[@]}" kill --signal=TERM "$container" >/dev/null
exit_code=$(timeout 60 "${docker[@]}" wait "$container") || fail "the server did not exit in 60 s"
stop_seconds=$((SECONDS - stop_start))
wait "$inflight_pid" || fail "the call in flight failed: $(cat "$work/inflight.err")"
[[ $(wc -l <"$work/inflight.out") == 2 ]] || fail "the call in flight lost translations"
[[ "$exit_code" == 0 ]] || fail "the server exited with $exit_code after SIGTERM"
((stop_seconds <= 40)) || fail "stopping took $stop_seconds s (grace period 30 s + 10 s)"
drained=$("${docker[@]}" logs "$container" 2>&1 | grep -o 'stopped after draining for .*' || true)
[[ -n "$drained" ]] || fail "the server's log does not say it drained"
echo "docker-test: ok: SIGTERM: the call in flight finished, exit 0 (${drained})"

echo "docker-test: all passed; build ${build_seconds} s, image $((image_bytes / 1000000)) MB"
