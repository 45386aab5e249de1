#!/usr/bin/env bash
# Headless-browser tests of the chat page (/) and the ops dashboard (/dashboard)
# against a real 3-node `confab up` cluster. The entry point .ci/run calls:
#
#   bash tests/browser/run.sh
#
# Environment:
#   CONFAB_BIN_DIR          where `confab` and `confabctl` are (default: target/debug)
#   CONFAB_SCREENSHOTS_DIR  where the screenshots and the cluster's log go
#                           (default: target/browser-screenshots)
#   CONFAB_CHROMIUM         the Chromium to drive (default: /usr/bin/chromium)
#
# It needs node (20 or newer), npm and Chromium (Debian: apt-get install chromium
# nodejs npm); when Chromium is missing and this runs as root with apt-get, it is
# installed. node_modules (playwright-core, pinned in package.json and
# package-lock.json) is installed with `npm ci` when missing. It never skips: a
# missing tool, binary or failed check exits non-zero and says why.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
started=$(date +%s)

fail() {
  echo "error: browser tests: $*" >&2
  exit 1
}

bin_dir=${CONFAB_BIN_DIR:-$root/target/debug}
case $bin_dir in /*) ;; *) bin_dir=$root/$bin_dir ;; esac
shots=${CONFAB_SCREENSHOTS_DIR:-$root/target/browser-screenshots}
case $shots in /*) ;; *) shots=$root/$shots ;; esac
chromium=${CONFAB_CHROMIUM:-/usr/bin/chromium}

echo "== browser tests: binaries in $bin_dir, screenshots to $shots"

for bin in confab confabctl; do
  [ -x "$bin_dir/$bin" ] || fail "$bin_dir/$bin is missing: build it first (cargo build -p confab -p confabctl) or set CONFAB_BIN_DIR"
done

command -v node >/dev/null 2>&1 || fail "node is not installed (Debian: apt-get install nodejs npm; node 20 or newer)"
command -v npm >/dev/null 2>&1 || fail "npm is not installed (Debian: apt-get install npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "node $(node --version) is too old: playwright-core needs node 20 or newer"

if [ ! -x "$chromium" ]; then
  if [ "$chromium" = /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== Chromium is missing: installing it (apt-get install chromium)"
    apt-get update -qq || fail "apt-get update failed; install Chromium by hand (apt-get install chromium)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
      fail "apt-get install chromium failed; install it by hand"
  fi
  [ -x "$chromium" ] || fail "no Chromium at $chromium (Debian: apt-get install chromium, or set CONFAB_CHROMIUM)"
fi

# node_modules: installed from the lock file when missing or not the pinned version.
pinned=$(node -p 'require(process.argv[1]).dependencies["playwright-core"]' "$here/package.json")
installed=$(node -p 'try { require(process.argv[1]).version } catch (_) { "" }' \
  "$here/node_modules/playwright-core/package.json")
if [ "$installed" != "$pinned" ]; then
  echo "== installing node_modules (npm ci: playwright-core $pinned)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) ||
    fail "npm ci failed in $here (the npm registry must be reachable)"
fi

mkdir -p "$shots"
status=0
CONFAB_BIN_DIR=$bin_dir CONFAB_SCREENSHOTS_DIR=$shots CONFAB_CHROMIUM=$chromium \
  node "$here/cluster.test.mjs" || status=$?
elapsed=$(($(date +%s) - started))
if [ "$status" -ne 0 ]; then
  echo "error: browser tests FAILED (exit $status) after ${elapsed}s; screenshots and the cluster log are in $shots" >&2
  exit 1
fi
echo "== browser tests passed in ${elapsed}s; screenshots in $shots"
