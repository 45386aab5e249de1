#!/usr/bin/env bash
# Measures the echo floor and one confab node (embedded store) in the same run.
# usage: crates/confab-bench/scripts/turns.sh SESSIONS RATE DURATION
# Builds release binaries, starts both servers on free ports with fresh data,
# runs `confab-bench turns` against each, prints both reports, stops both.
set -euo pipefail
sessions=${1:-1000}
rate=${2:-10000}
duration=${3:-30s}
cd "$(dirname "$0")/../../.."
cargo build --release --locked -q -p confab -p confab-bench
bin=target/release
secret=bench-secret-0123456789abcdef
data=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT

$bin/confab-bench echo --port 19090 2>/dev/null &
CONFAB_AUTH__JWT_SECRET=$secret RUST_LOG=warn $bin/confab node --http-port 18181 --data-dir "$data" &
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:18181/readyz >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== echo floor: $sessions sessions, $rate turns/s, $duration"
$bin/confab-bench turns --url ws://127.0.0.1:19090/v1/ws --sessions "$sessions" --rate "$rate" --duration "$duration" "${@:4}"
echo
echo "== confab, one node, embedded store: $sessions sessions, $rate turns/s, $duration"
CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench turns --url ws://127.0.0.1:18181/v1/ws --sessions "$sessions" --rate "$rate" --duration "$duration" "${@:4}"
echo
curl -s http://127.0.0.1:18181/metrics | grep -E '^confab_(commit_seconds|commit_batch_events)_(sum|count)'
