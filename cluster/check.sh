#!/usr/bin/env bash
# Checks cluster/ without any cluster: the Kubernetes manifests render and
# validate against the Kubernetes schemas, every config key they (and the
# Dockerfile) set exists in config/node.toml, the config and flows the pods see
# are config/'s, the Prometheus config and alert rules pass promtool (and the
# rules' unit tests), and the Grafana dashboard parses and names only metrics
# the crates export. docs/deploy.md says what each check covers.
#
#   bash cluster/check.sh
#
# Needs kubectl (kustomize is built in), python3 3.11 or newer, and promtool
# (Debian: apt-get install prometheus; installed when missing and root). The
# schema validator, kubernetes-validate (PyPI, pinned), is installed into
# target/cluster-check/venv on first use; it bundles the schemas and runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATOR=kubernetes-validate
VALIDATOR_VERSION=1.37.0
# Its dependencies, pinned too (pip freeze of a working install).
VALIDATOR_DEPS="attrs==26.1.0 importlib_resources==7.1.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 packaging==26.4 PyYAML==6.0.4 referencing==0.37.0 rpds-py==2026.9.1 typing_extensions==4.16.0"
# The oldest Kubernetes the manifests claim to work on, and the newest known.
K8S_VERSIONS=1.29.0,1.37.0
venv=target/cluster-check/venv

started=$SECONDS
fail() { echo "error: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- tools ------------------------------------------------------------------
command -v kubectl >/dev/null 2>&1 \
  || fail "kubectl is needed to render the kustomize overlays (no server is used): install it (https://kubernetes.io/docs/tasks/tools/) and run again."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || fail "python3 3.11 or newer is needed (tomllib): install it and run again."

validator_ok() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$VALIDATOR_VERSION" <<'EOF' 2>/dev/null
import sys, yaml, kubernetes_validate
sys.exit(kubernetes_validate.__version__ != sys.argv[1])
EOF
}
if ! validator_ok; then
  echo "== installing $VALIDATOR $VALIDATOR_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Debian's python3 makes venvs only with python3-venv.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null 2>&1 || true
    rm -rf "$venv"
  fi
  { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } \
    && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$VALIDATOR==$VALIDATOR_VERSION" $VALIDATOR_DEPS \
    || fail "cannot install $VALIDATOR==$VALIDATOR_VERSION from PyPI into $venv (python3 -m venv needs python3-venv on Debian; pip needs PyPI). The schema check is never skipped: fix that and run again."
  validator_ok || fail "$VALIDATOR $VALIDATOR_VERSION installed into $venv does not import."
fi
py="$venv/bin/python"

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing promtool (Debian package prometheus)"
    # promtool comes with the server package; only promtool is used.
    install_prometheus() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }
    install_prometheus || { apt-get update -q >/dev/null 2>&1 && install_prometheus; } || true
  fi
  command -v promtool >/dev/null 2>&1 \
    || fail "promtool is needed for the Prometheus config and rules: install it (Debian: apt-get install prometheus) and run again."
fi

# --- the checks ---------------------------------------------------------------
passed=0
failed=()
check() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed+=("$name")
  fi
}

render() {
  local overlay
  for overlay in dev prod; do
    kubectl kustomize "cluster/k8s/overlays/$overlay" >"$tmp/$overlay.yaml" || return 1
    echo "  cluster/k8s/overlays/$overlay: $(grep -c '^kind:' "$tmp/$overlay.yaml") objects"
  done
}

prometheus_config() {
  local out
  if out=$(promtool check config cluster/prometheus/prometheus.yml 2>&1); then
    sed 's/^/  /' <<<"$out"
    return 0
  fi
  if ! grep -q 'field kubernetes_sd_configs not found' <<<"$out"; then
    sed 's/^/  /' <<<"$out" >&2
    return 1
  fi
  # Debian builds Prometheus without Kubernetes service discovery, so its
  # promtool refuses the block. Its fields are checked by checks.py, and
  # promtool checks everything else in a copy without it.
  echo "  this promtool ($(promtool --version 2>&1 | head -1)) has no Kubernetes service discovery:"
  mkdir -p "$tmp/prometheus"
  cp cluster/prometheus/rules.yml "$tmp/prometheus/"
  "$py" cluster/checks.py prom-k8s-sd cluster/prometheus/prometheus.yml "$tmp/prometheus/prometheus.yml" || return 1
  promtool check config "$tmp/prometheus/prometheus.yml" 2>&1 | sed 's/^/  /'
  return "${PIPESTATUS[0]}"
}

dashboard() {
  "$py" cluster/checks.py metrics "$tmp/dashboard-rules.yml" || return 1
  # Every query of the dashboard parses as PromQL (its variables replaced).
  promtool check rules "$tmp/dashboard-rules.yml" 2>&1 | sed 's/^/  /'
  return "${PIPESTATUS[0]}"
}

check "kustomize: render the dev and prod overlays" render
if [ -s "$tmp/dev.yaml" ] && [ -s "$tmp/prod.yaml" ]; then
  check "schemas: every rendered object ($VALIDATOR $VALIDATOR_VERSION, Kubernetes ${K8S_VERSIONS/,/ and })" \
    "$py" cluster/checks.py validate "$K8S_VERSIONS" "$tmp/dev.yaml" "$tmp/prod.yaml"
  check "config: keys set by the manifests and the Dockerfile, config files in the pods" \
    "$py" cluster/checks.py config "$tmp/dev.yaml" "$tmp/prod.yaml"
else
  failed+=("schemas (nothing rendered)" "config (nothing rendered)")
fi
check "promtool check config cluster/prometheus/prometheus.yml" prometheus_config
check "promtool check rules cluster/prometheus/rules.yml" promtool check rules cluster/prometheus/rules.yml
check "promtool test rules cluster/prometheus/rules_test.yml" promtool test rules cluster/prometheus/rules_test.yml
check "grafana: cluster/grafana/confab.json parses, its queries parse and name exported metrics" dashboard

echo "cluster checks: $((SECONDS - started)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  for name in "${failed[@]}"; do echo "FAILED: $name" >&2; done
  echo "cluster: $passed passed, ${#failed[@]} failed"
  exit 1
fi
echo "cluster: $passed passed, 0 failed"
