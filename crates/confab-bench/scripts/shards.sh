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
cargo build --release --locked -q -p confab -p confab-bench
bin=target/release
secret=bench-secret-0123456789abcdef
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tuned=(--innodb-buffer-pool-size=512M --innodb-log-file-size=256M --innodb-io-capacity=2000
  --innodb-flush-log-at-trx-commit=1)
pids=()
start_mariadb() { # NAME PORT
  local dir=$work/$1
  mkdir -p "$dir"
  mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$dir/data" \
    --auth-root-authentication-method=normal --skip-test-db "${tuned[@]}" >/dev/null 2>&1
  mariadbd --no-defaults --user="$(id -un)" --datadir="$dir/data" --port="$2" \
    --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
    --skip-log-bin --skip-name-resolve "${tuned[@]}" >"$dir/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 150); do
    mariadb -h127.0.0.1 -P"$2" -uroot -e 'SELECT 1' >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "mariadbd $1 did not start" >&2
  exit 1
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
start_mariadb a "$port_a"
start_mariadb b "$port_b"

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
  # A fresh database is migrated first (64 event tables on each server): allow 120 s.
  local ready=
  for _ in $(seq 600); do
    curl -sf http://127.0.0.1:18181/readyz >/dev/null 2>&1 && ready=1 && break
    kill -0 "$node_pid" 2>/dev/null || break
    sleep 0.2
  done
  if [ -z "$ready" ]; then
    echo "the node did not become ready on $1; its readiness says:" >&2
    curl -s http://127.0.0.1:18181/readyz >&2 || true
    exit 1
  fi
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
