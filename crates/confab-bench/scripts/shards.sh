#!/usr/bin/env bash
# Turns per second of one node on one MariaDB server, then on two (the 64 shards
# split 0-31 / 32-63 by [[store.mysql_shards]]), in the same run.
# usage: crates/confab-bench/scripts/shards.sh SESSIONS RATE DURATION [turns flags...]
# Starts two private mariadbd (each a 512 MiB buffer pool, redo log flushed at every
# commit) on free ports, builds release binaries, runs `confab-bench turns` against a
# node on fresh databases: first with every shard on server A, then with half of them
# on server B. No Redis: the durable tier is what is measured. Stops everything.
set -euo pipefail
sessions=${1:-2000}
rate=${2:-20000}
duration=${3:-20s}
cd "$(dirname "$0")/../../.."
source crates/confab-bench/scripts/lib.sh
cargo build --release --locked -q -p confab -p confab-bench
bin=target/release
secret=bench-secret-0123456789abcdef
work=$(mktemp -d)
pids=()
start_server() { # NAME PORT
  start_mariadb "$work/$1" "$2" 512M 256M
  pids+=("$mariadb_pid")
}
cleanup() {
  [ -n "${node_pid:-}" ] && kill -TERM "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port_a=$(free_port)
port_b=$(free_port)
start_server a "$port_a"
start_server b "$port_b"

run() { # LABEL CONFIG
  local db=bench_$RANDOM
  for port in "$port_a" "$port_b"; do
    mariadb -h127.0.0.1 -P"$port" -uroot -e "CREATE DATABASE $db"
  done
  sed "s/@DB@/$db/g" "$2" >"$work/node.toml"
  rm -rf "$work/data"
  CONFAB_AUTH__JWT_SECRET=$secret RUST_LOG=warn \
    CONFAB_GATEWAY__MAX_CONNECTIONS=100000 CONFAB_GATEWAY__MAX_CONNECTIONS_PER_IP=100000 $bin/confab node --config "$work/node.toml" \
    --http-port 18181 --data-dir "$work/data" &
  node_pid=$!
  wait_ready "$node_pid" 18181
  echo "== $1: $sessions sessions, $rate turns/s offered, $duration"
  CONFAB_AUTH__JWT_SECRET=$secret $bin/confab-bench turns --url ws://127.0.0.1:18181/v1/ws \
    --sessions "$sessions" --rate "$rate" --duration "$duration" --uid-prefix "$db" "${@:3}" || true # a FAILED run (overloaded turns) is still a figure
  curl -s http://127.0.0.1:18181/metrics | grep -E '^confab_(commit_seconds|commit_batch_events)_(sum|count)' || true
  kill -TERM "$node_pid"
  wait "$node_pid" || true
  node_pid=
  echo
}

cat >"$work/one.toml" <<EOF
[store]
mysql_url = "mysql://root@127.0.0.1:$port_a/@DB@"
EOF
cat >"$work/two.toml" <<EOF
[store]
mysql_url = "mysql://root@127.0.0.1:$port_a/@DB@"

[[store.mysql_shards]]
from = 32
to = 63
url = "mysql://root@127.0.0.1:$port_b/@DB@"
EOF
run "one MariaDB server (64 shards)" "$work/one.toml" "${@:4}"
run "two MariaDB servers (32 shards each)" "$work/two.toml" "${@:4}"
run "one MariaDB server again" "$work/one.toml" "${@:4}"
