#!/usr/bin/env bash
# What sharing a count costs: chapter 6b's /count with --state local, master and agent,
# and the book's Node.js counter (STATE=local and master) when `node` is on PATH, side by
# side over 3 passes (--reps N).
#
#   bench/state.sh
#   bench/state.sh --reps 5
#   DURATION=5 WORKERS=2 CONNECTIONS=50 bench/state.sh
#
# Every target is loaded the same way: CONNECTIONS kept-alive connections sending GET
# /count as fast as the answers come, so what is measured is the count, not the
# connection (the master hands each connection over once). The load comes from wrk when it
# is installed (apt-get install wrk), otherwise from our loadgen -k; the table says which.
# For each run it prints requests/s, the latency's median and 99th percentile, and the CPU
# time the master and the agent used: where the work went. Each pass starts one target
# further down the list, so that none always runs first while the machine's state drifts.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-50}
. bench/common.sh
bench_options "$0" "$@"

cargo build --release -q -p ch06b-shared-state -p loadgen
bin=target/release
# Other work on the machine shows in every figure: say how much there was.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# cpu PID: the CPU time the process has used so far, in clock ticks (0 if there is none).
cpu() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# load URL: prints "requests/s p50_ms p99_ms" over keep-alive connections.
load() {
  if command -v wrk >/dev/null; then
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$1" | awk '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      $1 == "50%" {p50 = ms($2)} $1 == "99%" {p99 = ms($2)} /Requests\/sec/ {rate = $2}
      END {printf "%.0f %.2f %.2f\n", rate, p50, p99}'
  else
    $bin/loadgen "$1" -k -n $((DURATION * 20000)) -c "$CONNECTIONS" | awk '
      /requests\/s/ {for (i = 1; i <= NF; i++) {if ($i == "requests/s;") rate = $(i-1); if ($i == "p50") p50 = $(i+1); if ($i == "p99") p99 = $(i+1)}}
      END {printf "%.0f %.2f %.2f\n", rate, p50, p99}'
  fi
}

tool=$(command -v wrk >/dev/null && echo "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}') -t2 -c$CONNECTIONS -d${DURATION}s, keep-alive" || echo "loadgen -k -c$CONNECTIONS (wrk not installed)")
declare -A result
failed=0

# measure TARGET PASS: one target, once: result[TARGET.PASS] = "rate p50 p99 master-cpu agent-cpu".
measure() {
  local name=$1 key=$1.$2 port master agent before_m before_a
  port=$(free_port)
  case $name in
    ch06b-*) start "$key" $bin/ch06b-shared-state --port "$port" --workers "$WORKERS" --state "${name#ch06b-}" || return 0 ;;
    node-*) start "$key" env STATE="${name#node-}" PORT="$port" WORKERS="$WORKERS" node book/node/ch06b-counter.js || return 0 ;;
  esac
  master=${pids[-1]}
  agent=$(grep -o 'started the agent (pid [0-9]*' "$work/$key.log" | grep -o '[0-9]*$' || true)
  before_m=$(cpu "$master"); before_a=$(cpu "$agent")
  read -r rate p50 p99 < <(load "http://127.0.0.1:$port/count")
  local hz; hz=$(getconf CLK_TCK)
  local cm ca
  cm=$(awk -v a="$(cpu "$master")" -v b="$before_m" -v hz="$hz" 'BEGIN {printf "%.2f", (a - b) / hz}')
  ca=-
  [ -n "$agent" ] && ca=$(awk -v a="$(cpu "$agent")" -v b="$before_a" -v hz="$hz" 'BEGIN {printf "%.2f", (a - b) / hz}')
  result[$key]="$rate $p50 $p99 $cm $ca"
  stop
}

targets=(ch06b-local ch06b-master ch06b-agent)
if command -v node >/dev/null; then targets+=(node-local node-master); fi
n=${#targets[@]}
for pass in $(seq "$REPS"); do
  order=()
  for i in $(seq 0 $((n - 1))); do order+=("${targets[$(((i + pass - 1) % n))]}"); done
  echo "pass $pass of $REPS: ${order[*]}" >&2
  for target in "${order[@]}"; do measure "$target" "$pass"; done
done

# range V...: "min – max" of the numbers given (or the one number), empty if none.
range() {
  [ $# -gt 0 ] || return 0
  printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {if (lo == hi) print lo; else print lo " – " hi}'
}

echo
echo "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) CPUs, $(uname -sr); load average $load_before at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "rustc $(rustc --version | awk '{print $2}'), $(command -v node >/dev/null && echo "node $(node --version)" || echo "no node"); $WORKERS workers; load: $tool; passes: $REPS"
# column N TITLE: one figure of every run, per target, with its range.
column() {
  echo
  printf '%-14s' "$2"
  for pass in $(seq "$REPS"); do printf ' %9s' "pass $pass"; done
  printf '   %s\n' range
  for name in "${targets[@]}"; do
    local values=() v
    printf '%-14s' "$name"
    for pass in $(seq "$REPS"); do
      v=$(echo "${result[$name.$pass]:-}" | awk -v n="$1" '{print $n}')
      printf ' %9s' "${v:--}"
      [ -n "$v" ] && [ "$v" != - ] && values+=("$v")
    done
    printf '   %s\n' "$(range "${values[@]}")"
  done
}
column 1 "requests/s"
column 2 "p50 (ms)"
column 3 "p99 (ms)"
column 4 "master CPU s"
column 5 "agent CPU s"
if [ "$failed" = 1 ]; then
  echo "some targets did not start (see above): their figures are missing" >&2
  exit 1
fi
