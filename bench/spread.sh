#!/usr/bin/env bash
# How evenly does a shared listening socket (chapter 5) spread connections, and under which
# conditions does it stop being even? Prints one per-worker table per condition.
#
#   bench/spread.sh             # 2000 requests per condition
#   REQUESTS=5000 bench/spread.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-2000}
# (--bin would limit every package to that binary, so two builds.)
cargo build --release -q -p ch05-handle-passing -p ch06-round-robin
cargo build --release -q -p loadgen
bin=target/release
log=$(mktemp)
master=
cleanup() { [ -n "$master" ] && kill -TERM "$master" 2>/dev/null; rm -f "$log"; }
trap cleanup EXIT

measure() { # measure CHAPTER WORKERS CLIENTS EXCLUSIVE
  local extra=()
  [ "$1" = ch05-handle-passing ] && extra=(--exclusive "$4")
  setsid $bin/$1 --port 0 --workers "$2" "${extra[@]}" >"$log" 2>&1 &
  master=$!
  local url=
  for _ in $(seq 100); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | tail -1 | sed 's/listening on //') || true
    [ -n "$url" ] && grep -q "shared by\|workers serve" "$log" && break
    sleep 0.1
  done
  echo "== $1, $2 workers on $(nproc) CPUs, $3 client(s) at a time${4:+, EPOLLEXCLUSIVE $4}"
  $bin/loadgen "$url" -n "$REQUESTS" -c "$3" | sed -n '/worker  pid/,$p'
  kill -TERM "$master"; wait "$master" 2>/dev/null || true; master=
  echo
}

for workers in 2 4; do
  for clients in 1 16; do
    measure ch05-handle-passing "$workers" "$clients" off
  done
done
measure ch05-handle-passing 4 1 on
measure ch06-round-robin 4 1 ""
