# Sourced by the benchmark scripts (not run): starts taskmoe-server on a free port in the
# background and waits until it answers health checks, and stops it again.
#   start_server NAME PORT_FILE [server flags...]  sets server_pid and target (host:port)
#   stop_server                                     SIGTERM, then waits (safe to call twice)
# Needs $bin (the build directory). Exits the script when the server dies while starting.
# server_launcher: words put before the server's path (tools/emulated-cpu-test.sh: qemu-x86_64).
# server_binary: the server to start, when not $bin's (tools/batching-bench.sh --baseline).
server_pid=
target=
server_launcher=()
server_binary=

stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}

start_server() {
  local name=$1 port_file=$2
  shift 2
  rm -f "$port_file"
  "${server_launcher[@]}" "${server_binary:-$bin/server/taskmoe-server}" --host=127.0.0.1 --port=0 --metrics_port=-1 \
    --port_file="$port_file" "$@" &
  server_pid=$!
  local exited
  exited="$(basename "$0"): the server for $name exited"
  for _ in $(seq 1200); do
    [[ -s "$port_file" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "$exited" >&2; exit 1; }
    sleep 0.1
  done
  target="127.0.0.1:$(sed -n 's/^grpc_port=//p' "$port_file")"
  until "$bin/server/taskmoe-client" --target="$target" --health >/dev/null 2>&1; do
    kill -0 "$server_pid" 2>/dev/null || { echo "$exited" >&2; exit 1; }
    sleep 0.2
  done
}
