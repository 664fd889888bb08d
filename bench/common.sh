# What the bench scripts that start servers share: the --reps option, a scratch folder, and
# the servers themselves, each in a process group of its own, killed on exit.
#
#   . "$(dirname "$0")/common.sh"; bench_options "$0" "$@"

# bench_options SCRIPT ARGS...: reads --reps N into REPS (default: $REPS, or 3); --help
# prints SCRIPT's opening comment.
bench_options() {
  local script=$1; shift
  REPS=${REPS:-3}
  while [ $# -gt 0 ]; do
    case $1 in
      --reps) REPS=${2:?--reps needs a number}; shift 2 ;;
      --reps=*) REPS=${1#--reps=}; shift ;;
      -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$script"; exit 0 ;;
      *) echo "$script: unknown argument '$1' (try --reps N)" >&2; exit 2 ;;
    esac
  done
  case $REPS in
    ''|*[!0-9]*|0) echo "$script: --reps takes a whole number from 1, not '$REPS'" >&2; exit 2 ;;
  esac
}

work=$(mktemp -d)
pids=()
failed=0
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME COMMAND...: runs COMMAND in its own process group and waits for the master's
# ready line (a worker's own `listening on` line comes earlier and is not it).
start() {
  local name=$1; shift
  setsid "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    if grep -qs 'master.*listening on http://' "$work/$name.log"; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$work/$name.log" >&2; failed=1; return 1
}

# stop: stops the server started last, its whole process group.
stop() { kill -TERM -- "-${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
