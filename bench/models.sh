#!/usr/bin/env bash
# The prologue's measurement: each server model of chapter 0 (a process per connection,
# a thread per connection, one event loop), and Node.js and nginx when they are installed,
# loaded with 10, 100, 1,000 and 10,000 kept-alive connections. Records requests/s, the
# memory of the server's processes, their context switches, and how long a new client
# waits for its first answer, in a CSV and an SVG chart drawn from it.
#
#   bash bench/models.sh            # the full run: release build, 5 s per point
#   bash bench/models.sh --quick    # 10 and 100 connections, 1 s each, debug build
#   OUT=dir MACHINE="my laptop" DURATION=10 bash bench/models.sh
#
# Writes $OUT/models-DATE.csv and $OUT/models-DATE.svg (OUT defaults to target/bench).
# Redraw a chart from a CSV: models-bench chart FILE.csv FILE.svg
set -euo pipefail
cd "$(dirname "$0")/.."

quick=
[ "${1:-}" = --quick ] && quick=1

# A file descriptor per connection, on both sides: raise the soft limit as far as the
# hard limit lets us, and say where it ended up.
soft=$(ulimit -Sn)
hard=$(ulimit -Hn)
ulimit -Sn "$hard" 2>/dev/null || true
echo "open files: soft limit raised from $soft to $(ulimit -Sn) (hard limit $hard)"

if [ -n "$quick" ]; then
  cargo build -q -p ch00-server-models -p loadgen -p models-bench
  bin=target/debug
  args=(--quick --models process,thread,event)
else
  cargo build --release -q -p ch00-server-models -p loadgen -p models-bench
  bin=target/release
  args=(--duration "${DURATION:-5}")
  if [ "$(ulimit -Sn)" -lt 10100 ]; then
    # 10,000 connections need 10,000 fds in the client and in the server.
    args+=(--levels 10,100,1000)
    echo "open files limited to $(ulimit -Sn): measuring up to 1,000 connections, not 10,000"
  fi
  command -v node >/dev/null && args+=(--node book/node/ch00-event-loop.js)
  command -v nginx >/dev/null && args+=(--nginx)
fi

out=${OUT:-target/bench}
mkdir -p "$out"
date=$(date -u +%F)
stamp=$(date -u +%F-%H%M%S)
machine=${MACHINE:-"$(hostname), $(nproc) CPUs, Linux $(uname -r | cut -d- -f1)"}
"$bin/models-bench" --bin "$bin" "${args[@]}" --machine "$machine" --date "$date" \
  --csv "$out/models-$stamp.csv" --svg "$out/models-$stamp.svg"
