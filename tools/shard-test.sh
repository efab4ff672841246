#!/usr/bin/env bash
# The sharded topology of deploy/k8s/overlays/sharded, end to end on this machine: two servers,
# each serving its shard's tasks of the demo repository (--tasks, as the overlay's pods do),
# behind HAProxy configured by deploy/haproxy/render-haproxy.py from the overlay's GRPCRoute
# and HTTPRoute. Checks, over gRPC and HTTP/JSON: every task reaches its shard; an unknown task
# gets a clear error from the proxy; with one shard stopped its tasks fail fast with
# UNAVAILABLE while the other shard's keep working; restarted, it is routed to again.
# Part of tools/test.sh; on its own: tools/shard-test.sh (needs build/release).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/release
work=build/shard-test
client="$bin/server/taskmoe-client"

fail() {
  echo "shard-test: FAIL: $*" >&2
  exit 1
}

for tool in "$bin/server/taskmoe-server" "$client" "$bin/tools/taskmoe-extract"; do
  [[ -x "$tool" ]] || fail "$tool is missing: run tools/build.sh Release first"
done
command -v haproxy >/dev/null || fail "haproxy is not installed (tools/setup.sh test)"
command -v curl >/dev/null || fail "curl is not installed (tools/setup.sh test)"
rm -rf "$work"
mkdir -p "$work"

declare -A server_pid grpc_port http_port tasks_of
haproxy_pid=
cleanup() {
  for shard in "${!server_pid[@]}"; do
    kill -TERM "${server_pid[$shard]}" 2>/dev/null || true
  done
  if [[ -n "$haproxy_pid" ]]; then kill -TERM "$haproxy_pid" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A free loopback port (bound, then released for the process that will use it).
free_port() {
  /usr/bin/python3 -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_shard SHARD GRPC_PORT HTTP_PORT: the server of SHARD (ports 0: any), until SERVING.
start_shard() {
  local shard=$1 port_file="$work/$1.ports"
  rm -f "$port_file"
  "$bin/server/taskmoe-server" --model_repository="$work/demo-repository" \
    --tasks="${tasks_of[$shard]}" --host=127.0.0.1 --port="$2" --http_host=127.0.0.1 \
    --http_port="$3" --metrics_port=-1 --threads=1 --grace_period_s=5 \
    --port_file="$port_file" >>"$work/$shard.log" 2>&1 &
  server_pid[$shard]=$!
  local exited="the $shard server exited (log: $work/$shard.log)"
  for _ in $(seq 600); do
    [[ -s "$port_file" ]] && break
    kill -0 "${server_pid[$shard]}" 2>/dev/null || fail "$exited"
    sleep 0.1
  done
  grpc_port[$shard]=$(sed -n 's/^grpc_port=//p' "$port_file")
  http_port[$shard]=$(sed -n 's/^http_port=//p' "$port_file")
  until "$client" --target="127.0.0.1:${grpc_port[$shard]}" --health >/dev/null 2>&1; do
    kill -0 "${server_pid[$shard]}" 2>/dev/null || fail "$exited"
    sleep 0.2
  done
}

# http_translate PORT TASK TEXT: POST /v1/translate with the routing header; prints the HTTP
# status, a space and the body.
http_translate() {
  curl -s -o "$work/http.body" -w '%{http_code}' -X POST "http://127.0.0.1:$1/v1/translate" \
    -H "x-taskmoe-task: $2" -H 'Content-Type: application/json' \
    -d "{\"task\": \"$2\", \"texts\": [\"$3\"]}" || true
  echo " $(cat "$work/http.body")"
}

# ---- The demo model's subnetworks, and each shard's tasks from the overlay's route. ----
"$bin/tools/taskmoe-extract" --checkpoint=demo/taskmoe --out="$work/demo-repository" \
  --keep_experts >"$work/extract.log" 2>&1 || fail "extracting the demo repository: $(tail -3 "$work/extract.log")"
while read -r shard tasks; do tasks_of[$shard]=$tasks; done \
  < <(deploy/haproxy/render-haproxy.py --list-tasks)
shards=("${!tasks_of[@]}")
((${#shards[@]} == 2)) || fail "expected two shards in the overlay, found ${#shards[@]}"
for shard in "${shards[@]}"; do start_shard "$shard" 0 0; done

# ---- HAProxy in front, configured from the same routes. ----
proxy_port=$(free_port)
proxy_http_port=$(free_port)
backends=(--bind "127.0.0.1:$proxy_port" --http-bind "127.0.0.1:$proxy_http_port")
for shard in "${shards[@]}"; do
  backends+=(--backend "$shard=127.0.0.1:${grpc_port[$shard]}"
    --http-backend "$shard=127.0.0.1:${http_port[$shard]}")
done
deploy/haproxy/render-haproxy.py "${backends[@]}" >"$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg" || fail "HAProxy refuses the rendered configuration"
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
proxy=("$client" --target="127.0.0.1:$proxy_port" --deadline_ms=10000)
first_task() { echo "${tasks_of[$1]%%,*}"; }
# Until HAProxy's first connection checks have found both shards up.
for _ in $(seq 100); do
  "${proxy[@]}" --task="$(first_task "${shards[0]}")" "Hi" >/dev/null 2>&1 &&
    "${proxy[@]}" --task="$(first_task "${shards[1]}")" "Hi" >/dev/null 2>&1 && break
  sleep 0.1
done

# ---- Every task reaches its shard: the translation equals the shard's own. ----
text="Open the file."
routed=0
for shard in "${shards[@]}"; do
  for task in ${tasks_of[$shard]//,/ }; do
    through_proxy=$("${proxy[@]}" --task="$task" "$text") || fail "$task through the proxy"
    direct=$("$client" --target="127.0.0.1:${grpc_port[$shard]}" --task="$task" "$text") ||
      fail "$task on its shard $shard"
    [[ "$through_proxy" == "$direct" ]] ||
      fail "$task: '$through_proxy' through the proxy, '$direct' direct"
    http_proxy=$(http_translate "$proxy_http_port" "$task" "$text")
    http_direct=$(http_translate "${http_port[$shard]}" "$task" "$text")
    [[ "$http_proxy" == "200 "* && "$http_proxy" == "$http_direct" ]] ||
      fail "$task over HTTP: '$http_proxy' through the proxy, '$http_direct' direct"
    routed=$((routed + 1))
  done
done
echo "shard-test: ok: all $routed tasks reach their shard through HAProxy, gRPC and HTTP/JSON"

# ---- An unknown task gets the proxy's NOT_FOUND, on both protocols. ----
if unknown=$("${proxy[@]}" --task=xx-yy "$text" 2>&1); then fail "an unknown task was answered"; fi
[[ "$unknown" == *"NOT_FOUND: no shard serves the task"* ]] || fail "unknown task: '$unknown'"
http_unknown=$(http_translate "$proxy_http_port" xx-yy "$text")
[[ "$http_unknown" == '404 {"error": {"code": "NOT_FOUND", "message": "no shard serves'* ]] ||
  fail "unknown task over HTTP: '$http_unknown'"
echo "shard-test: ok: an unknown task gets '${unknown#taskmoe-client: }' (HTTP: 404)"

# ---- One shard stopped: its tasks fail fast, the other's keep working. ----
stopped=${shards[0]}
other=${shards[1]}
stopped_task=$(first_task "$stopped")
other_task=$(first_task "$other")
kill -TERM "${server_pid[$stopped]}"
wait "${server_pid[$stopped]}" || true
unset "server_pid[$stopped]"
sleep 1  # HAProxy's connection check (every 500 ms) marks the shard down
start=$(date +%s%N)
if down=$("${proxy[@]}" --task="$stopped_task" "$text" 2>&1); then
  fail "$stopped_task answered with its shard down"
fi
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[[ "$down" == *"UNAVAILABLE"* ]] || fail "$stopped_task with its shard down: '$down'"
((elapsed_ms < 1000)) || fail "$stopped_task took $elapsed_ms ms to fail"
http_down=$(http_translate "$proxy_http_port" "$stopped_task" "$text")
[[ "$http_down" == '503 {"error": {"code": "UNAVAILABLE"'* ]] ||
  fail "$stopped_task over HTTP with its shard down: '$http_down'"
"${proxy[@]}" --task="$other_task" "$text" >/dev/null || fail "$other_task failed while $stopped was down"
[[ "$(http_translate "$proxy_http_port" "$other_task" "$text")" == "200 "* ]] ||
  fail "$other_task over HTTP failed while $stopped was down"
echo "shard-test: ok: $stopped down: $stopped_task fails in $elapsed_ms ms" \
  "(${down#taskmoe-client: }; HTTP 503), $other_task still served"

# ---- It comes back: restarted on its ports, the proxy routes to it again. ----
start_shard "$stopped" "${grpc_port[$stopped]}" "${http_port[$stopped]}"
back=
for _ in $(seq 100); do
  if "${proxy[@]}" --task="$stopped_task" "$text" >/dev/null 2>&1 &&
    [[ "$(http_translate "$proxy_http_port" "$stopped_task" "$text")" == "200 "* ]]; then
    back=1
    break
  fi
  sleep 0.1
done
[[ -n "$back" ]] || fail "$stopped_task still fails 10 s after its shard restarted"
echo "shard-test: ok: $stopped restarted: $stopped_task served again"
echo "shard-test: all passed"
