#!/usr/bin/env bash
# Overload: one node offered more than it serves, with the gateway's admission on
# and off (the baseline), beside the echo floor, in the same run.
# usage: crates/confab-bench/scripts/overload.sh SESSIONS CAPACITY DURATION
#   CAPACITY: what the node serves on this machine (turns/s; about 10000 on 2 cores).
#   Rows: the echo floor at 2x; confab at 1x (admission on); 2x and 3x with
#   admission on; 2x and 3x with it off (gateway.admission_latency_target_ms = 0).
# The admission rows run with gateway.admission_latency_target_ms = ADMISSION_TARGET_MS
# (default 10) and gateway.admission_min_inflight = ADMISSION_FLOOR (default 64), the
# tuning docs/benchmarks.md found for this machine; BENCH_BIN=DIR runs kept binaries.
# The node runs on the embedded store (fsync at every commit), on a fresh data dir
# per row. During each row the node's RSS is read every second from /proc; the row
# prints its first and largest value. Overloaded answers do not fail a row
# (`--overload-ok`); `errors ms` is how fast they came back from their scheduled
# send.
set -euo pipefail
sessions=${1:-10000}
capacity=${2:-10000}
duration=${3:-20s}
cd "$(dirname "$0")/../../.."
source crates/confab-bench/scripts/lib.sh
target_ms=${ADMISSION_TARGET_MS:-10}
floor=${ADMISSION_FLOOR:-64}
bench_binaries
secret=bench-secret-0123456789abcdef
work=$(mktemp -d)
node_pid=
cleanup() {
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

turns() { # URL RATE
  CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench turns --url "$1" --sessions "$sessions" \
    --rate "$2" --duration "$duration" --overload-ok || true
}

row() { # LABEL RATE ADMISSION_TARGET_MS
  rm -rf "$work/data"
  CONFAB_AUTH__JWT_SECRET=$secret RUST_LOG=warn \
    CONFAB_GATEWAY__MAX_CONNECTIONS=100000 CONFAB_GATEWAY__MAX_CONNECTIONS_PER_IP=100000 \
    CONFAB_GATEWAY__ADMISSION_LATENCY_TARGET_MS="$3" CONFAB_GATEWAY__ADMISSION_MIN_INFLIGHT="$floor" \
    $bin/confab node --http-port 18181 --data-dir "$work/data" &
  node_pid=$!
  wait_ready "$node_pid" 18181
  : >"$work/rss"
  (while kill -0 "$node_pid" 2>/dev/null; do
    awk '/^VmRSS/ {print $2}' "/proc/$node_pid/status" >>"$work/rss" 2>/dev/null || true
    sleep 1
  done) &
  local sampler=$!
  echo "== $1: $sessions sessions, $2 turns/s offered, $duration (admission target $3 ms, floor $floor)"
  turns ws://127.0.0.1:18181/v1/ws "$2"
  kill "$sampler" 2>/dev/null || true
  echo "node rss KiB  first $(head -1 "$work/rss")  max $(sort -n "$work/rss" | tail -1)"
  curl -s http://127.0.0.1:18181/metrics | grep -E '^confab_admission_limit ' || true
  kill -TERM "$node_pid"
  wait "$node_pid" || true
  node_pid=
  echo
}

$bin/confab-bench echo --port 19090 2>/dev/null &
wait_port 19090
echo "== echo floor: $sessions sessions, $((capacity * 2)) turns/s offered, $duration"
turns ws://127.0.0.1:19090/v1/ws $((capacity * 2))
echo
row "confab, admission on, 1x" "$capacity" "$target_ms"
row "confab, admission on, 2x" $((capacity * 2)) "$target_ms"
row "confab, admission on, 3x" $((capacity * 3)) "$target_ms"
row "confab, admission off (baseline), 2x" $((capacity * 2)) 0
row "confab, admission off (baseline), 3x" $((capacity * 3)) 0
