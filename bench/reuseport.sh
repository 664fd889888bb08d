#!/usr/bin/env bash
# Chapter 10's measurements, in one run:
#
# 1. The spread and the CPU cost per connection of every way to share a port: chapter 5
#    (one shared socket, with and without EPOLLEXCLUSIVE), chapter 6 (the master accepts
#    and hands out), chapter 10 (a SO_REUSEPORT socket per worker), beside nginx (shared
#    socket, and `listen ... reuseport`) and Node's cluster (round-robin, and shared
#    handle), with 2, 4 and 8 workers, one client at a time and CONCURRENT at a time.
# 2. What a worker's death costs under load: kill -9 one worker of four while loadgen
#    runs, count the failed requests; chapters 5, 6 and 10 and nginx with reuseport; and
#    chapter 10 again with net.ipv4.tcp_migrate_req=1, in a network namespace of its own
#    (needs root and unshare; the machine's own setting is left alone).
#
#   bash bench/reuseport.sh
#   REQUESTS=8000 WORKER_COUNTS="2 4" KILLS=3 bash bench/reuseport.sh
#
# Every request is a new connection (that is what is being spread). CPU is the time the
# kernel charged to the server's processes (master and workers, every thread), read from
# /proc/PID/task/*/schedstat before and after: the same time utime+stime count, to the
# nanosecond instead of to the 10 ms tick. Wake-ups are the servers' voluntary context
# switches over the same span. The load client runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-4000}
CONCURRENT=${CONCURRENT:-16}
WORKER_COUNTS=${WORKER_COUNTS:-"2 4 8"}
KILLS=${KILLS:-5}
KILL_REQUESTS=${KILL_REQUESTS:-60000}
bin=target/release
work=$(mktemp -d)
group=
cleanup() {
  [ -n "$group" ] && kill -KILL -- "-$group" 2>/dev/null
  rm -rf "$work"
  return 0
}
trap cleanup EXIT

if [ "${1:-}" != --kills-in-namespace ]; then
  # (--bin would limit every package to that binary, so two builds.)
  cargo build --release -q -p ch05-handle-passing -p ch06-round-robin -p ch10-reuseport
  cargo build --release -q -p loadgen
fi

# start NAME WORKERS COMMAND...: runs COMMAND in a process group of its own, waits until it
# serves, and sets $group and $url. The chapters and Node print the master's ready line;
# nginx is polled.
start() {
  local name=$1 workers=$2; shift 2
  # Emptied here, before the server starts, so that no line of an earlier start is read.
  : >"$work/$name.log"
  setsid "$@" >>"$work/$name.log" 2>&1 &
  group=$!
  url=
  for _ in $(seq 200); do
    case $name in
      nginx*) (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && url="http://127.0.0.1:$nginx_port/" ;;
      *) url=$(grep -o 'master\[[0-9]*\] listening on http://[0-9.:]*' "$work/$name.log" | head -1 | sed 's/.*listening on //') || true ;;
    esac
    [ -n "$url" ] && break
    sleep 0.05
  done
  if [ -z "$url" ]; then echo "$name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; fi
  # nginx may still be starting workers: wait until all of them run.
  for _ in $(seq 100); do
    [ "$(pgrep -g "$group" | wc -l)" -gt "$workers" ] && break
    sleep 0.05
  done
}

stop() { kill -TERM -- "-$group" 2>/dev/null || true; wait "$group" 2>/dev/null || true; group=; }

# The server's CPU time in ns and its voluntary context switches so far, over every
# thread of every process in its group.
cpu_ns() { pgrep -g "$group" | while read -r p; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{s += $1} END {printf "%.0f", s}'; }
wakeups() { pgrep -g "$group" | while read -r p; do cat /proc/"$p"/task/*/status 2>/dev/null; done | awk '/^voluntary_ctxt_switches/ {s += $2} END {printf "%.0f", s}'; }

nginx_conf() { # nginx_conf WORKERS reuseport|""
  nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/nginx"
  cat >"$work/nginx.conf" <<CONF
worker_processes $1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$nginx_port $2;
    location / { return 200 "Hello world by \$pid (worker \$pid)\n"; }
  }
}
CONF
}

# launch TARGET WORKERS: starts one of the targets below.
launch() {
  local target=$1 n=$2
  case $target in
    ch05) start "$target" "$n" $bin/ch05-handle-passing --port 0 --workers "$n" ;;
    ch05-exclusive) start "$target" "$n" $bin/ch05-handle-passing --port 0 --workers "$n" --exclusive on ;;
    ch06) start "$target" "$n" $bin/ch06-round-robin --port 0 --workers "$n" ;;
    ch10) start "$target" "$n" $bin/ch10-reuseport --port 0 --workers "$n" ;;
    nginx) nginx_conf "$n" ""; start "$target" "$n" nginx -c "$work/nginx.conf" -g 'daemon off;' ;;
    nginx-reuseport) nginx_conf "$n" reuseport; start "$target" "$n" nginx -c "$work/nginx.conf" -g 'daemon off;' ;;
    node-rr) start "$target" "$n" env PORT=0 WORKERS="$n" NODE_CLUSTER_SCHED_POLICY=rr node book/node/cluster.js ;;
    node-none) start "$target" "$n" env PORT=0 WORKERS="$n" NODE_CLUSTER_SCHED_POLICY=none node book/node/cluster.js ;;
  esac
}

label() {
  case $1 in
    ch05) echo "ch05 shared socket" ;;
    ch05-exclusive) echo "ch05 --exclusive on" ;;
    ch06) echo "ch06 round-robin" ;;
    ch10) echo "ch10 SO_REUSEPORT" ;;
    nginx) echo "nginx shared socket" ;;
    nginx-reuseport) echo "nginx reuseport" ;;
    node-rr) echo "Node cluster rr" ;;
    node-none) echo "Node cluster none" ;;
  esac
}

# measure TARGET WORKERS CLIENTS: one row of the spread table.
measure() {
  local target=$1 n=$2 clients=$3
  local cpu0 wake0 cpu1 wake1 out
  cpu0=$(cpu_ns); wake0=$(wakeups)
  out=$($bin/loadgen "$url" -n "$REQUESTS" -c "$clients")
  cpu1=$(cpu_ns); wake1=$(wakeups)
  # The answers per worker, most first, with a 0 for each worker that answered nothing.
  echo "$out" | awk -v n="$n" -v label="$(label "$target")" -v clients="$clients" \
    -v cpu="$((cpu1 - cpu0))" -v wake="$((wake1 - wake0))" '
    /answered, .* errors/ { ok = $1; errors = $3 }
    /%/ && $1 ~ /^[0-9]+$/ { counts[k++] = $3 }
    END {
      for (i = k; i < n; i++) counts[i] = 0
      # sort descending
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (counts[j] > counts[i]) { t = counts[i]; counts[i] = counts[j]; counts[j] = t }
      shares = ""
      for (i = 0; i < n; i++) shares = shares sprintf("%3.0f", counts[i] * 100 / (ok ? ok : 1))
      top2 = (counts[0] + (n > 1 ? counts[1] : 0)) * 100 / (ok ? ok : 1)
      printf "%-20s %3d  %-26s %5.0f%%  %8.1f  %6.2f  %s\n", label, clients, shares, top2, cpu / 1000 / (ok ? ok : 1), wake / (ok ? ok : 1), errors
    }'
}

spread() {
  local targets=(ch05 ch05-exclusive ch06 ch10)
  command -v nginx >/dev/null && targets+=(nginx nginx-reuseport)
  command -v node >/dev/null && targets+=(node-none node-rr)
  echo "Linux $(uname -r), $(nproc) CPUs; $REQUESTS requests per row, each on a new connection (loadgen)"
  for n in $WORKER_COUNTS; do
    echo
    echo "== $n workers"
    printf '%-20s %3s  %-26s %6s  %8s  %6s  %s\n' target cl "shares, most first (%)" "top 2" "us/conn" "wakes" errors
    for target in "${targets[@]}"; do
      launch "$target" "$n"
      # One request first, so that every worker sits in epoll_wait before the count.
      $bin/loadgen "$url" -n "$n" -c 1 >/dev/null
      measure "$target" "$n" 1
      measure "$target" "$n" "$CONCURRENT"
      stop
    done
  done
}

# kills TARGET: KILLS times, start it with 4 workers, kill -9 one worker while
# $CONCURRENT clients load it, and count what failed.
kills() {
  local target=$1 lost=() kinds="" back=()
  for _ in $(seq "$KILLS"); do
    launch "$target" 4
    $bin/loadgen "$url" -n "$KILL_REQUESTS" -c "$CONCURRENT" >"$work/load.out" &
    local load=$!
    sleep 0.3
    kill -0 "$load" 2>/dev/null || echo "    (the load was over before the kill: raise KILL_REQUESTS)"
    local victim
    case $target in
      nginx*) victim=$(pgrep -P "$group" | sed -n 2p) ;;
      *) victim=$(grep -o 'forked worker 2 (pid [0-9]*' "$work/$target.log" | grep -o '[0-9]*$') ;;
    esac
    kill -KILL "$victim"
    wait "$load" || true
    lost+=("$(awk '/answered, .* errors/ {print $3}' "$work/load.out")")
    kinds+=$(sed -n 's/^ *[0-9]* x //p' "$work/load.out" | sort -u | tr '\n' ';')
    if [ "$target" = ch10 ]; then
      for _ in $(seq 40); do grep -q 'after its last worker died' "$work/$target.log" && break; sleep 0.05; done
      back+=("$(grep -o '[0-9]* ms after its last worker died' "$work/$target.log" | head -1 | cut -d' ' -f1 || true)")
    fi
    stop
  done
  echo "$(label "$target")${2:-}"
  echo "    failed requests per kill:         ${lost[*]}"
  [ ${#back[@]} -gt 0 ] && echo "    its slot listening again after:   ${back[*]} ms"
  [ -n "$kinds" ] && echo "    errors seen: $(echo "$kinds" | tr ';' '\n' | sort -u | grep -v '^$' | paste -sd ';' | sed 's/;/; /g')"
  return 0
}

if [ "${1:-}" = --kills-in-namespace ]; then
  ip link set lo up
  sysctl -qw net.ipv4.tcp_migrate_req=1
  kills ch10 ", tcp_migrate_req=1"
  exit 0
fi

spread
echo
echo "== kill -9 one worker of 4 under load: $CONCURRENT clients, $KILL_REQUESTS requests, the kill after 0.3 s; $KILLS kills each"
echo "net.ipv4.tcp_migrate_req = $(cat /proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null || echo '(none: kernel before 5.14)')"
for target in ch05 ch06 ch10; do kills "$target"; done
command -v nginx >/dev/null && kills nginx-reuseport
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -e /proc/sys/net/ipv4/tcp_migrate_req ]; then
  unshare -n bash "$0" --kills-in-namespace || echo "(could not measure with tcp_migrate_req=1 in a network namespace)"
else
  echo "(tcp_migrate_req=1 not measured: it needs root, unshare and Linux 5.14+)"
fi
