#!/usr/bin/env bash
# Measures chapters 4-6 against Node.js's cluster (and nginx, when installed), side by side.
#
#   bench/run.sh                 # 3 repetitions, 5 s per target, 2 workers, 50 connections
#   bench/run.sh --reps 5
#   DURATION=10 WORKERS=2 CONNECTIONS=50 bench/run.sh
#
# Every target answers "Hello world by <pid>" and is loaded the same way: a new connection
# per request (that is what the master has to balance). The load comes from wrk when it is
# installed (apt-get install wrk), otherwise from our own loadgen; the table says which.
# Node.js targets run only when `node` is on PATH, nginx only when `nginx` is.
#
# One pass loads every target once, each chapter right beside its Node.js counterpart.
# The script makes --reps passes; each starts one pair further down the list, and every
# second pass runs Node.js first within each pair, so that no target always runs first,
# or always after the same one, while the machine's state drifts. It prints every pass's
# figure, the range per target, and each ratio taken within one pass, with its range:
# quote ranges, not one pass.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-50}
. bench/common.sh
bench_options "$0" "$@"

# (--bin would limit every package to that binary, so two builds.)
cargo build --release -q -p ch04-proxy -p ch05-handle-passing -p ch06-round-robin
cargo build --release -q -p loadgen
bin=target/release

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

# The targets, in pairs that are compared: each chapter and its Node.js counterpart.
if command -v node >/dev/null; then
  pairs=("ch04-proxy node-proxy" "ch05-handle-passing node-shared-handle" "ch06-round-robin node-round-robin")
else
  pairs=(ch04-proxy ch05-handle-passing ch06-round-robin)
fi
if command -v nginx >/dev/null; then pairs+=(nginx); fi
targets=()
for pair in "${pairs[@]}"; do read -ra two <<<"$pair"; targets+=("${two[@]}"); done

run_nginx() { # run_nginx NAME
  local port; port=$(free_port)
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
  rate[$1]=$(load "http://127.0.0.1:$port/")
  stop
}

# measure TARGET PASS: one target, once; its rate goes to rate[TARGET.PASS].
measure() {
  local key=$1.$2
  case $1 in
    ch04-proxy) run "$key" $bin/ch04-proxy ;;
    ch05-handle-passing) run "$key" $bin/ch05-handle-passing ;;
    ch06-round-robin) run "$key" $bin/ch06-round-robin ;;
    node-proxy) run_node "$key" node book/node/ch04-proxy.js ;;
    node-shared-handle) run_node "$key" NODE_CLUSTER_SCHED_POLICY=none node book/node/cluster.js ;;
    node-round-robin) run_node "$key" NODE_CLUSTER_SCHED_POLICY=rr node book/node/cluster.js ;;
    nginx) run_nginx "$key" ;;
  esac
}

# The load client must not be the bottleneck: in each pass, measure one target with both
# clients (lg[PASS] beside rate[ch05-handle-passing.PASS]).
declare -A lg
check_client() { # check_client PASS
  command -v wrk >/dev/null || return 0
  local port; port=$(free_port)
  start loadgen-check $bin/ch05-handle-passing --port "$port" --workers "$WORKERS" || return 0
  lg[$1]=$($bin/loadgen "http://127.0.0.1:$port/" -n $((DURATION * 4000)) -c "$CONNECTIONS" | awk '/requests\/s/ {for (i=1;i<=NF;i++) if ($i=="requests/s;") printf "%.0f", $(i-1)}')
  stop
}

n=${#pairs[@]}
for pass in $(seq "$REPS"); do
  # Pass 1 runs the pairs in the list's order, pass 2 starts at the second pair, and so on;
  # in every second pass, Node.js goes first within each pair.
  order=()
  for i in $(seq 0 $((n - 1))); do
    read -ra two <<<"${pairs[$(((i + pass - 1) % n))]}"
    if [ $((pass % 2)) = 0 ] && [ ${#two[@]} = 2 ]; then two=("${two[1]}" "${two[0]}"); fi
    order+=("${two[@]}")
  done
  echo "pass $pass of $REPS: ${order[*]}" >&2
  for target in "${order[@]}"; do measure "$target" "$pass"; done
  check_client "$pass"
done

# range V...: "min – max" of the numbers given (or the one number), empty if none.
range() {
  [ $# -gt 0 ] || return 0
  printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {if (lo == hi) print lo; else print lo " – " hi}'
}

echo
echo "$(nproc) CPUs, $WORKERS workers, load: $tool; $REPS passes, the order rotated each pass"
printf '%-22s' target
for pass in $(seq "$REPS"); do printf ' %9s' "pass $pass"; done
printf '   %s\n' 'range (requests/s)'
for name in "${targets[@]}"; do
  values=()
  printf '%-22s' "$name"
  for pass in $(seq "$REPS"); do
    v=${rate[$name.$pass]:-}
    printf ' %9s' "${v:--}"
    [ -n "$v" ] && values+=("$v")
  done
  printf '   %s\n' "$(range "${values[@]}")"
done

# ratio A B TITLE: A's rate over B's, within each pass, and the range over the passes.
ratio() {
  local values=() pass a b r
  printf '%-38s' "$3"
  for pass in $(seq "$REPS"); do
    a=${rate[$1.$pass]:-}; b=${rate[$2.$pass]:-}
    if [ -n "$a" ] && [ -n "$b" ] && [ "$b" != 0 ]; then
      r=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')
      values+=("$r")
      printf ' %8sx' "$r"
    else
      printf ' %9s' -
    fi
  done
  [ ${#values[@]} -gt 0 ] && printf '   %sx' "$(range "${values[@]}")"
  echo
}
echo
printf '%-38s' 'ratio, within one pass'
for pass in $(seq "$REPS"); do printf ' %9s' "pass $pass"; done
printf '   %s\n' range
ratio ch04-proxy node-proxy "ch04 proxy / Node proxy master"
ratio ch05-handle-passing nginx "ch05 handle passing / nginx"
ratio ch05-handle-passing node-shared-handle "ch05 handle passing / Node shared"
ratio ch06-round-robin node-round-robin "ch06 round-robin / Node round-robin"
if [ ${#lg[@]} -gt 0 ]; then
  echo
  echo "load client check on ch05 (same target, same settings), per pass:"
  for pass in $(seq "$REPS"); do
    echo "  pass $pass: wrk ${rate[ch05-handle-passing.$pass]:--} req/s, loadgen ${lg[$pass]:--} req/s"
  done
fi
if [ "$failed" = 1 ]; then
  echo "some targets did not start (see above): their figures are missing" >&2
  exit 1
fi
