#!/usr/bin/env bash
# Runs the whole test suite many times on a busy machine, the way a maintainer checks that
# no test is flaky before trusting a change: `cargo test` ROUNDS times in a row with a CPU
# hog beside it (two busy processes, one per core of a small machine), then once with
# --test-threads=1. Prints every failing test by name and how often it failed, and exits 1
# if any test failed even once.
#
#   bash tests/stress.sh             # 20 rounds in this checkout
#   bash tests/stress.sh 5           # 5 rounds
#   bash tests/stress.sh 20 --clone  # in a fresh clone of this checkout's HEAD (as CI sees it)
#
# A test that fails once in these runs is broken: find out why (it is often a real bug in
# the chapter) rather than widening its timeout.
set -euo pipefail

rounds=${1:-20}
clone=${2:-}
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$clone" = "--clone" ]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/cluster-stress.XXXXXX")
    git clone -q . "$dir/repo"
    echo "fresh clone of $(git rev-parse --short HEAD) in $dir/repo"
    cd "$dir/repo"
fi

logs=target/stress
mkdir -p "$logs"
rm -f "$logs"/*.log

echo "building the tests"
cargo test --no-run -q

hogs=()
stop_hogs() {
    for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
    hogs=()
}
trap stop_hogs EXIT
start_hogs() {
    # Two busy loops: the machines this project is tested on have two cores.
    for _ in 1 2; do
        (while :; do :; done) &
        hogs+=($!)
    done
}

failed_runs=0
run() {
    local name=$1
    shift
    local log="$logs/$name.log"
    local start=$SECONDS
    # --no-fail-fast: one failing test binary must not hide the others.
    if cargo test --no-fail-fast "$@" >"$log" 2>&1; then
        printf '%-12s ok      %4d s\n' "$name" $((SECONDS - start))
    else
        failed_runs=$((failed_runs + 1))
        printf '%-12s FAILED  %4d s  (log: %s)\n' "$name" $((SECONDS - start)) "$log"
        grep -E '^test .* FAILED$' "$log" | sed 's/^/             /' || true
    fi
}

start_hogs
for i in $(seq 1 "$rounds"); do
    run "round-$i"
done
stop_hogs
run "one-thread" -- --test-threads=1

echo
if [ "$failed_runs" -eq 0 ]; then
    echo "$rounds busy rounds and one single-threaded run: every test passed every time"
    exit 0
fi
echo "tests that failed, with the number of runs each failed in:"
grep -hE '^test .* FAILED$' "$logs"/*.log | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' |
    sort | uniq -c | sort -rn
exit 1
