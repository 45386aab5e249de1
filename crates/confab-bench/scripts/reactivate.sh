#!/usr/bin/env bash
# Reactivation: what waking a passivated session adds to its first turn, beside a
# resident session's, on one node on MariaDB + Redis; first on a quiet node, then
# while the node serves RATE turns/s of SESSIONS other sessions (`confab-bench turns`
# running beside the probes, its report printed after theirs).
# usage: crates/confab-bench/scripts/reactivate.sh SESSIONS RATE COLD
#   COLD: passivated sessions woken per row, 20 per second (and 20 resident ones).
# The node passivates sessions idle for 4 s (runtime.passivate_after_s = 4): the load's
# sessions talk every SESSIONS / RATE s and stay resident. MariaDB: a fresh database on
# 127.0.0.1:3306 (or $BENCH_MYSQL_PORT; BENCH_MYSQL=private starts a private mariadbd
# sized like a database server, as turns.sh does); Redis: 127.0.0.1:6379 (or $BENCH_REDIS_URL),
# under a key prefix of its own. DURABLE=embedded puts Redis in front of the node's
# embedded SQLite store instead of MariaDB (no database server sharing the cores).
# BENCH_BIN=DIR runs kept binaries.
set -euo pipefail
sessions=${1:-10000}
rate=${2:-10000}
cold=${3:-600}
cd "$(dirname "$0")/../../.."
source crates/confab-bench/scripts/lib.sh
bench_binaries
secret=bench-secret-0123456789abcdef
data=$(mktemp -d)
durable=${DURABLE:-mysql}
case $durable in mysql | embedded) ;; *) echo "DURABLE must be mysql or embedded, not $durable" >&2; exit 2 ;; esac
[ "$durable" = embedded ] || bench_mysql_port
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/}
db=confab_bench_$$
port=$(free_port)
probe_rate=40
node_pid=
cleanup() {
  [ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data" "${mysql_dir:-}"
  [ "$durable" = embedded ] || mariadb -h127.0.0.1 -P"$mysql_port" -uroot -e "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
  redis-cli -u "$redis_url" --scan --pattern "$db:*" | xargs -r -n 1000 redis-cli -u "$redis_url" DEL >/dev/null || true
}
trap cleanup EXIT
mysql_env=()
if [ "$durable" = mysql ]; then
  mariadb -h127.0.0.1 -P"$mysql_port" -uroot -e "CREATE DATABASE $db"
  mysql_env=(CONFAB_STORE__MYSQL_URL=mysql://root@127.0.0.1:$mysql_port/$db)
fi
env CONFAB_AUTH__JWT_SECRET=$secret RUST_LOG=warn \
  CONFAB_GATEWAY__MAX_CONNECTIONS=100000 CONFAB_GATEWAY__MAX_CONNECTIONS_PER_IP=100000 \
  "${mysql_env[@]}" \
  CONFAB_STORE__REDIS_URL=$redis_url CONFAB_STORE__REDIS_KEY_PREFIX=$db \
  CONFAB_RUNTIME__PASSIVATE_AFTER_S=4 \
  $bin/confab node --http-port "$port" --data-dir "$data" &
node_pid=$!
wait_ready "$node_pid" "$port"
url=ws://127.0.0.1:$port/v1/ws
probes() { # UID_PREFIX
  CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench reactivate --url "$url" \
    --passivate-after 4s --cold "$cold" --warm 20 --rate "$probe_rate" --uid-prefix "$1" || true
}

echo "== quiet node: $cold passivated sessions woken beside 20 resident ones"
probes quiet
echo
# Seeding, 6 s alone, the probes, and a margin.
duration=$((30 + cold * 2 / probe_rate))
echo "== busy node: the same, while it serves $rate turns/s of $sessions other sessions (${duration}s)"
CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench turns --url "$url" --sessions "$sessions" \
  --rate "$rate" --duration "${duration}s" --uid-prefix load --overload-ok >"$data/load.out" 2>"$data/load.err" &
load_pid=$!
# The probes start once every load session is connected and talking.
for _ in $(seq 600); do
  grep -q '^sending' "$data/load.err" 2>/dev/null && break
  kill -0 "$load_pid" 2>/dev/null || break
  sleep 0.2
done
sleep 3
probes busy
if ! kill -0 "$load_pid" 2>/dev/null; then
  echo "warning: the load ended before the last probe: this row is partly a quiet node's"
fi
wait "$load_pid" || true
echo "-- the load beside the probes:"
cat "$data/load.out"
