#!/usr/bin/env bash
# Measures the echo floor and one confab node in the same run.
# usage: [STORE=embedded|tiered] crates/confab-bench/scripts/turns.sh SESSIONS RATE DURATION [turns flags...]
#   STORE=embedded (default): the node on its embedded SQLite store.
#   STORE=tiered: the node on MariaDB (a fresh database on 127.0.0.1:3306, or on
#     port $BENCH_MYSQL_PORT as root without password; BENCH_MYSQL=private starts
#     a private mariadbd sized like a database server, see lib.sh) with Redis in front
#     (BENCH_REDIS=off leaves Redis out) (127.0.0.1:6379, or $BENCH_REDIS_URL,
#     under a key prefix of its own). A warm-up run first creates every session,
#     the node restarts (a clean stop snapshots them to both tiers), and the
#     measured run then loads every session again: the Redis hit ratio printed at
#     the end is that of those loads.
# Builds release binaries (unless BENCH_BIN), starts the servers on free ports with fresh data,
# runs `confab-bench turns` against each, prints the reports, stops everything.
set -euo pipefail
sessions=${1:-1000}
rate=${2:-10000}
duration=${3:-30s}
store=${STORE:-embedded}
cd "$(dirname "$0")/../../.."
source crates/confab-bench/scripts/lib.sh
bench_binaries
secret=bench-secret-0123456789abcdef
data=$(mktemp -d)
bench_mysql_port
mysql_server=mysql://root@127.0.0.1:$mysql_port
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/}
db=confab_bench_$$
# Every client of the bench comes from 127.0.0.1: lift the per-address limit.
node_env=(CONFAB_AUTH__JWT_SECRET=$secret RUST_LOG=warn
  CONFAB_GATEWAY__MAX_CONNECTIONS=100000 CONFAB_GATEWAY__MAX_CONNECTIONS_PER_IP=100000)
cleanup() {
  # The node first, so that its shutdown snapshots reach a running store.
  [ -n "${node_pid:-}" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data" "${mysql_dir:-}"
  if [ "$store" = tiered ]; then
    mariadb -h127.0.0.1 -P"$mysql_port" -uroot -e "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
    redis-cli --scan --pattern "$db:*" | xargs -r -n 1000 redis-cli DEL >/dev/null || true
  fi
}
trap cleanup EXIT
if [ "$store" = tiered ]; then
  mariadb -h127.0.0.1 -P"$mysql_port" -uroot -e "CREATE DATABASE $db"
  node_env+=(CONFAB_STORE__MYSQL_URL=$mysql_server/$db CONFAB_STORE__REDIS_KEY_PREFIX=$db)
  # BENCH_REDIS=off: MariaDB alone, to see what the hot tier costs.
  [ "${BENCH_REDIS:-on}" = off ] || node_env+=(CONFAB_STORE__REDIS_URL=$redis_url)
fi

start_node() {
  env "${node_env[@]}" $bin/confab node --http-port 18181 --data-dir "$data" &
  node_pid=$!
  wait_ready "$node_pid" 18181
}
# The node's user + system time so far, in clock ticks (0 once it has exited).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
turns() {
  CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench turns --url "$1" --sessions "$sessions" --rate "$rate" "${@:2}"
}

$bin/confab-bench echo --port 19090 2>/dev/null &
wait_port 19090
start_node
echo "== echo floor: $sessions sessions, $rate turns/s, $duration"
turns ws://127.0.0.1:19090/v1/ws --duration "$duration" "${@:4}"
echo
if [ "$store" = tiered ]; then
  echo "== warm-up: every session once, then a clean restart"
  turns ws://127.0.0.1:18181/v1/ws --duration 5s --id-prefix warm "${@:4}" >/dev/null
  kill -TERM $node_pid
  wait $node_pid || true
  start_node
fi
echo "== confab, one node, $store store: $sessions sessions, $rate turns/s, $duration"
cpu_before=$(cpu_ticks "$node_pid")
turns ws://127.0.0.1:18181/v1/ws --duration "$duration" "${@:4}" || true # still a figure
cpu_after=$(cpu_ticks "$node_pid")
echo
# CPU per turn: the node's user + system time over the run (connecting included)
# divided by the turns it served (outcome ok); a measure of cost that a load generator
# sharing the cores does not blur as much as latency.
answered=$( (curl -s http://127.0.0.1:18181/metrics || true) | awk '/^confab_turns_total/ && /outcome="ok"/ {n += $NF} END {print n + 0}')
awk -v t="$((cpu_after - cpu_before))" -v hz="$(getconf CLK_TCK)" -v n="$answered" \
  'BEGIN { if (n > 0) printf "node cpu      %.1f s for %d turns: %.0f us per turn\n", t / hz, n, t / hz / n * 1e6 }'
metrics=$(curl -s http://127.0.0.1:18181/metrics)
echo "$metrics" | grep -E '^confab_(commit_seconds|commit_batch_events)_(sum|count)' || true
if [ "$store" = tiered ]; then
  echo "$metrics" | grep -E '^confab_store_(requests|bypass)_total' | grep 'tier="redis"' || true
  echo "$metrics" | awk '/^confab_store_requests_total/ && /tier="redis"/ && /op="load"/ {
      if ($0 ~ /result="hit"/) h += $NF; else if ($0 ~ /result="miss"/) m += $NF }
    END { if (h + m > 0) printf "redis hit ratio (session loads): %.4f (%d hits, %d misses)\n", h / (h + m), h, m }'
fi
