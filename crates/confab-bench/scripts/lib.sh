# What the bench scripts share; `source` it after `set -euo pipefail`.

# A TCP port on 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_mariadb DIR PORT POOL LOG_SIZE: a private mariadbd with its data in DIR/data,
# configured as a database server would be: a buffer pool of POOL that holds the
# working set (Debian's default is 128 MiB), a redo log of LOG_SIZE and an I/O
# capacity for an SSD. Durability is untouched: the redo log is flushed at every
# commit. Sets mariadb_pid; fails, with the tail of its log (and the server
# stopped), if it is not ready within 30 s.
start_mariadb() {
  local dir=$1 port=$2
  local tuned=(--innodb-buffer-pool-size="$3" --innodb-log-file-size="$4"
    --innodb-io-capacity=2000 --innodb-flush-log-at-trx-commit=1)
  mkdir -p "$dir"
  if ! mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$dir/data" \
    --auth-root-authentication-method=normal --skip-test-db "${tuned[@]}" >"$dir/install.log" 2>&1; then
    echo "mariadb-install-db failed; tail of $dir/install.log:" >&2
    tail -20 "$dir/install.log" >&2
    return 1
  fi
  mariadbd --no-defaults --user="$(id -un)" --datadir="$dir/data" --port="$port" \
    --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
    --skip-log-bin --skip-name-resolve "${tuned[@]}" >"$dir/log" 2>&1 &
  mariadb_pid=$!
  for _ in $(seq 150); do
    mariadb -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1 && return 0
    kill -0 "$mariadb_pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "the private mariadbd on port $port did not start; tail of $dir/log:" >&2
  tail -20 "$dir/log" >&2
  # Not left running over a data dir the caller's cleanup is about to delete.
  kill "$mariadb_pid" 2>/dev/null && wait "$mariadb_pid" 2>/dev/null
  return 1
}

# wait_ready PID PORT: waits until the node PID answers /readyz on PORT. A fresh
# MariaDB database is migrated first (64 event tables), so this allows 120 s. Fails,
# with what its readiness says, if the node exits or is not ready by then.
wait_ready() {
  local pid=$1 port=$2
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "the node did not become ready; its readiness says:" >&2
  curl -s "http://127.0.0.1:$port/readyz" >&2 || true
  return 1
}

# wait_port PORT: waits (up to 10 s) until something listens on PORT.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# bench_binaries: sets bin to the directory of the confab and confab-bench binaries:
# BENCH_BIN=DIR (absolute; a build kept for a before/after comparison), or a release
# build of the working tree made now.
bench_binaries() {
  if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
  else
    cargo build --release --locked -q -p confab -p confab-bench
    bin=target/release
  fi
}

# bench_mysql_port: sets mysql_port to the MariaDB the bench uses: port
# $BENCH_MYSQL_PORT (default 3306) of 127.0.0.1, or with BENCH_MYSQL=private a private
# mariadbd sized like a database server (1 GiB buffer pool, 512 MiB redo log), its
# data in mysql_dir (which the caller removes).
bench_mysql_port() {
  mysql_port=${BENCH_MYSQL_PORT:-3306}
  if [ "${BENCH_MYSQL:-}" = private ]; then
    mysql_port=$(free_port)
    mysql_dir=$(mktemp -d)
    start_mariadb "$mysql_dir" "$mysql_port" 1G 512M
  fi
}
