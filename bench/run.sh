#!/usr/bin/env bash
# Measures chapters 4-6 against Node.js's cluster (and nginx, when installed) in one run.
#
#   bench/run.sh                 # 5 s per target, 2 workers, 50 connections
#   DURATION=10 WORKERS=2 CONNECTIONS=50 bench/run.sh
#
# Every target answers "Hello world by <pid>" and is loaded the same way: a new connection
# per request (that is what the master has to balance). The load comes from wrk when it is
# installed (apt-get install wrk), otherwise from our own loadgen; the table says which.
# Node.js targets run only when `node` is on PATH, nginx only when `nginx` is.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-50}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# (--bin would limit every package to that binary, so two builds.)
cargo build --release -q -p ch04-proxy -p ch05-handle-passing -p ch06-round-robin
cargo build --release -q -p loadgen
bin=target/release

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME COMMAND...: runs COMMAND in its own process group and waits for its ready line.
start() {
  local name=$1; shift
  setsid "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    if grep -q 'listening on http://' "$work/$name.log"; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; failed=1; return 1
}

stop() { kill -TERM -- "-${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# load URL: prints requests per second, new connection per request.
load() {
  if command -v wrk >/dev/null; then
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -H 'Connection: close' "$1" | awk '/Requests\/sec/ {printf "%.0f", $2}'
  else
    $bin/loadgen "$1" -n $((DURATION * 4000)) -c "$CONNECTIONS" | awk '/requests\/s/ {for (i=1;i<=NF;i++) if ($i=="requests/s;") printf "%.0f", $(i-1)}'
  fi
}

tool=$(command -v wrk >/dev/null && echo "wrk -t2 -c$CONNECTIONS -d${DURATION}s, Connection: close" || echo "loadgen -c$CONNECTIONS (wrk not installed)")
declare -A rate
failed=0
run() { # run NAME COMMAND...
  local name=$1; shift
  local port; port=$(free_port)
  if start "$name" env PORT="$port" WORKERS="$WORKERS" "$@" --port "$port" --workers "$WORKERS"; then
    rate[$name]=$(load "http://127.0.0.1:$port/")
    stop
  fi
}
run_node() { # run_node NAME ENV... FILE
  local name=$1; shift
  local port; port=$(free_port)
  if start "$name" env PORT="$port" WORKERS="$WORKERS" "$@"; then
    rate[$name]=$(load "http://127.0.0.1:$port/")
    stop
  fi
}

run ch04-proxy $bin/ch04-proxy
run ch05-handle-passing $bin/ch05-handle-passing
run ch06-round-robin $bin/ch06-round-robin
if command -v node >/dev/null; then
  run_node node-proxy node book/node/ch04-proxy.js
  run_node node-shared-handle NODE_CLUSTER_SCHED_POLICY=none node book/node/cluster.js
  run_node node-round-robin NODE_CLUSTER_SCHED_POLICY=rr node book/node/cluster.js
fi
if command -v nginx >/dev/null; then
  port=$(free_port)
  cat >"$work/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$port; location / { return 200 "Hello world by nginx\n"; } }
}
CONF
  setsid nginx -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  rate[nginx]=$(load "http://127.0.0.1:$port/")
  stop
fi

# The load client must not be the bottleneck: measure one target with both clients.
if command -v wrk >/dev/null; then
  port=$(free_port)
  start loadgen-check $bin/ch05-handle-passing --port "$port" --workers "$WORKERS"
  lg=$($bin/loadgen "http://127.0.0.1:$port/" -n $((DURATION * 4000)) -c "$CONNECTIONS" | awk '/requests\/s/ {for (i=1;i<=NF;i++) if ($i=="requests/s;") printf "%.0f", $(i-1)}')
  stop
fi

echo
echo "$(nproc) CPUs, $WORKERS workers, load: $tool"
printf '%-22s %10s\n' target 'requests/s'
for name in ch04-proxy node-proxy ch05-handle-passing node-shared-handle ch06-round-robin node-round-robin nginx; do
  [ -n "${rate[$name]:-}" ] && printf '%-22s %10s\n' "$name" "${rate[$name]}"
done
ratio() { [ -n "${rate[$1]:-}" ] && [ -n "${rate[$2]:-}" ] && awk -v a="${rate[$1]}" -v b="${rate[$2]}" -v t="$3" 'BEGIN {printf "%-44s %5.2fx\n", t, a/b}'; }
echo
ratio ch04-proxy node-proxy "ch04 proxy vs Node proxy master" || true
ratio ch05-handle-passing nginx "ch05 handle passing vs nginx" || true
ratio ch06-round-robin node-round-robin "ch06 round-robin vs Node round-robin" || true
if [ -n "${lg:-}" ]; then
  echo
  echo "load client check on ch05: wrk ${rate[ch05-handle-passing]} req/s, loadgen $lg req/s (same target, same settings)"
fi
if [ "$failed" = 1 ]; then
  echo "some targets did not start (see above): their rows are missing" >&2
  exit 1
fi
