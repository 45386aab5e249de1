#!/usr/bin/env bash
# Throughput against p99: the echo floor, a node on the embedded store and a node
# on MariaDB + Redis, each at the same rising offered rates, drawn as one SVG.
# usage: crates/confab-bench/scripts/curve.sh SESSIONS DURATION OUT.svg [RATES...]
#   RATES default: 2500 5000 7500 10000 12500 15000 20000 (turns/s offered).
# The MariaDB is private (1 GiB buffer pool, redo log flushed at every commit, as in
# turns.sh's BENCH_MYSQL=private); Redis is the machine's, under a key prefix of
# its own. Each store runs one node (a fresh data dir, a fresh database) that is
# warmed up first: every session talks twice at 2,000 turns/s, so that the points
# measure sessions that are resident and claimed, as in a node's steady state,
# not 10,000 first turns. The rates then rise on that node, each with message
# ids of its own, 5 s apart so that a saturated point's queue has drained.
# The JSON reports are kept beside the SVG (OUT.svg.d/) for the figures.
set -euo pipefail
sessions=${1:-10000}
duration=${2:-15s}
out=${3:-docs/turns-p99.svg}
shift 3 || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(2500 5000 7500 10000 12500 15000 20000)
cd "$(dirname "$0")/../../.."
source crates/confab-bench/scripts/lib.sh
cargo build --release --locked -q -p confab -p confab-bench
bin=target/release
secret=bench-secret-0123456789abcdef
work=$(mktemp -d)
reports=$out.d
rm -rf "$reports" && mkdir -p "$reports"
node_pid=
cleanup() {
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  redis-cli --scan --pattern "curve$$*" | xargs -r -n 1000 redis-cli DEL >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mysql_port=$(free_port)
start_mariadb "$work/mysql" "$mysql_port" 1G 512M

turns() { # URL RATE OUT.json
  CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench turns --url "$1" --sessions "$sessions" \
    --rate "$2" --duration "$duration" --id-prefix "r$2" --overload-ok --json >"$3" || true
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"  {r['target_rate']:>7.0f}/s offered: {r['throughput_per_s']:>7.0f}/s served, p99 {r['latency_ms']['p99']:.1f} ms, errors {r['errors']}\")" "$3"
}

node() { # STORE
  rm -rf "$work/data"
  local env=(CONFAB_AUTH__JWT_SECRET=$secret RUST_LOG=warn
    CONFAB_GATEWAY__MAX_CONNECTIONS=100000 CONFAB_GATEWAY__MAX_CONNECTIONS_PER_IP=100000)
  if [ "$1" = tiered ]; then
    local db=curve$$
    mariadb -h127.0.0.1 -P"$mysql_port" -uroot -e "CREATE DATABASE $db"
    env+=(CONFAB_STORE__MYSQL_URL=mysql://root@127.0.0.1:$mysql_port/$db
      CONFAB_STORE__REDIS_URL=redis://127.0.0.1:6379/ CONFAB_STORE__REDIS_KEY_PREFIX=$db)
  fi
  env "${env[@]}" $bin/confab node --http-port 18181 --data-dir "$work/data" &
  node_pid=$!
  wait_ready "$node_pid" 18181
  # Warm-up: every session twice (not measured).
  CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench turns --url ws://127.0.0.1:18181/v1/ws \
    --sessions "$sessions" --rate 2000 --duration "$((sessions / 1000))s" --id-prefix warm \
    --overload-ok >/dev/null || true
}

$bin/confab-bench echo --port 19090 2>/dev/null &
wait_port 19090
echo "== echo floor"
for rate in "${rates[@]}"; do turns ws://127.0.0.1:19090/v1/ws "$rate" "$reports/echo-$rate.json"; done
for store in embedded tiered; do
  echo "== confab, $store store"
  node "$store"
  for rate in "${rates[@]}"; do
    sleep 5
    turns ws://127.0.0.1:18181/v1/ws "$rate" "$reports/$store-$rate.json"
  done
  kill -TERM "$node_pid"
  wait "$node_pid" || true
  node_pid=
done
series() { local files; files=$(printf "$reports/$1-%s.json," "${rates[@]}"); echo "${files%,}"; }
$bin/confab-bench plot --out "$out" \
  --series "echo floor=$(series echo)" \
  --series "confab, embedded store (fsync)=$(series embedded)" \
  --series "confab, MariaDB + Redis=$(series tiered)" \
  --title "one node, $sessions warmed sessions: turns served against p99 (open loop, $duration per point)"
