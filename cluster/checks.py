"""The checks of cluster/check.sh that need Python: run by it, with the
interpreter of its venv (PyYAML and kubernetes-validate), from the repository
root. Each subcommand prints what it checked and exits 1 with the reasons on
any failure.

  validate VERSIONS FILE...     every object of the rendered manifests against
                                the Kubernetes schemas (kubernetes-validate)
  config FILE...                the config keys the manifests and the Dockerfile
                                set exist in config/node.toml; the files a pod
                                sees under /etc/confab are config/'s
  metrics                       the PromQL of the dashboard and the alert rules
                                names only metrics the crates export; writes
                                the dashboard's queries as a rules file for
                                promtool to parse (argument: its path)
  prom-k8s-sd IN OUT            checks the kubernetes_sd_configs blocks of a
                                Prometheus config and writes a copy without them
                                (for a promtool built without Kubernetes SD)
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml

ROOT = pathlib.Path.cwd()
CONFIG = ROOT / "config"
BASE_COPY = ROOT / "cluster/k8s/base/config"
RUST_CONFIG = ROOT / "crates/confab/src/config.rs"

# Metrics the dashboard or the rules may use before the crates export them
# (a name being added as they are written), as {name: kind}. The check says
# which are still pending; drop a name once the crates have it. Empty: every
# metric used is exported (confab_intents_total, confab_build_info,
# confab_ring_members and the buckets of confab_migration_seconds came with
# the metric catalog, crates/confab-gateway/src/catalog.rs).
PENDING_METRICS = {}


class Failures:
    def __init__(self):
        self.items = []

    def add(self, message):
        self.items.append(message)

    def finish(self, what):
        if self.items:
            for item in self.items:
                print(f"  FAIL {item}", file=sys.stderr)
            print(f"error: {what}: {len(self.items)} problem(s)", file=sys.stderr)
            sys.exit(1)


def load_docs(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((path, doc))
    return docs


def kind_name(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --- validate -----------------------------------------------------------------


def cmd_validate(versions, paths):
    import kubernetes_validate
    from kubernetes_validate import utils as kv

    failures = Failures()
    docs = load_docs(paths)
    for version in versions.split(","):
        for path, doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kv.SchemaNotFoundError:
                failures.add(
                    f"{path}: {kind_name(doc)}: no schema for {doc.get('apiVersion')} "
                    f"{doc.get('kind')} in Kubernetes {version} (a removed or misspelled API?)"
                )
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path) or "(top)"
                failures.add(f"{path}: {kind_name(doc)} (Kubernetes {version}): {where}: {e.message}")
            except kv.VersionNotSupportedError:
                failures.add(f"kubernetes-validate has no schemas for Kubernetes {version}")
    failures.finish("schema validation")
    print(
        f"  {len(docs)} objects valid against the Kubernetes {versions.replace(',', ' and ')} "
        f"schemas (strict: no unknown fields), kubernetes-validate {kubernetes_validate.__version__}"
    )


# --- config -------------------------------------------------------------------


def flatten(table, prefix=""):
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def secret_keys():
    """The keys whose value the node also takes from a file
    (CONFAB_SECTION__KEY_FILE): SECRET_KEYS in crates/confab/src/config.rs."""
    text = RUST_CONFIG.read_text(encoding="utf-8")
    m = re.search(r"SECRET_KEYS\s*:\s*&\[&str\]\s*=\s*&\[(.*?)\];", text, re.S)
    if not m:
        sys.exit(f"error: cannot find SECRET_KEYS in {RUST_CONFIG}: the _FILE check needs it")
    return set(re.findall(r'"([a-z_]+\.[a-z_]+)"', m.group(1)))


ENV_KEY = re.compile(r"^CONFAB_([A-Z0-9_]+?)__([A-Z0-9_]+)$")


def duration_s(text):
    """Seconds of `30s`, `10m`, `1h`, `2d` (as confabctl reads them), or None."""
    m = re.fullmatch(r"([0-9]+)([smhd])", text or "")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] if m else None


# String keys that take one of a few words (config/node.toml says which).
ENUM_KEYS = {
    "log.format": {"text", "json"},
    "store.sqlite_synchronous": {"full", "normal"},
}


def check_env_value(failures, where, name, dotted, value, defaults):
    """A literal value must parse as the type of the key's default."""
    default = defaults.get(dotted)
    if value is None or "$(" in value:
        return
    if dotted in ENUM_KEYS and value not in ENUM_KEYS[dotted]:
        failures.add(f"{where}: {name}={value!r}: {dotted} is one of {sorted(ENUM_KEYS[dotted])}")
    if isinstance(default, bool):
        if value not in ("true", "false"):
            failures.add(f"{where}: {name}={value!r}: {dotted} is a boolean")
    elif isinstance(default, int):
        if not re.fullmatch(r"[0-9]+", value):
            failures.add(f"{where}: {name}={value!r}: {dotted} is a number")
    elif isinstance(default, list):
        items = [i.strip() for i in value.strip("[]").split(",") if i.strip()]
        if dotted == "node.seeds":
            for item in items:
                if not re.fullmatch(r"[A-Za-z0-9.-]+:[0-9]+", item):
                    failures.add(f"{where}: {name}: seed {item!r} is not HOST:PORT")


def config_key_of(failures, where, name, keys, secrets):
    """The config key a CONFAB_SECTION__KEY[_FILE] variable sets, or None (with
    a failure) when node.toml has no such key."""
    m = ENV_KEY.match(name)
    if not m:
        return None, False
    dotted = f"{m.group(1).lower()}.{m.group(2).lower()}"
    if dotted in keys:
        return dotted, dotted.endswith("_file")
    if dotted.endswith("_file"):
        stem = dotted[: -len("_file")]
        if stem in keys and stem in secrets:
            return stem, True
        if stem in keys:
            failures.add(
                f"{where}: {name}: {stem} exists but the node reads no _FILE form of it "
                f"(only {', '.join(sorted(secrets))}: SECRET_KEYS in {RUST_CONFIG.relative_to(ROOT)})"
            )
            return None, True
    failures.add(f"{where}: {name}: config/node.toml has no key {dotted}")
    return None, False


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def pod_files(spec, container, configmaps, secrets_seen):
    """What the container sees under its mounts: {path: bytes or None}, and
    {mount path: volume} (None: content unknown, e.g. a Secret)."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files = {}
    mounts = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        mounts[mount["mountPath"]] = volume
        if volume is None:
            continue
        sources = []
        if "configMap" in volume:
            sources.append(("configMap", volume["configMap"]))
        if "secret" in volume:
            sources.append(("secret", volume["secret"]))
        for source in volume.get("projected", {}).get("sources", []):
            for kind in ("configMap", "secret"):
                if kind in source:
                    sources.append((kind, source[kind]))
        for kind, source in sources:
            name = source.get("name") or source.get("secretName")
            data = configmaps.get(name) if kind == "configMap" else secrets_seen.get(name)
            items = source.get("items")
            if items is None:
                items = [{"key": k, "path": k} for k in (data or {})]
            for item in items:
                path = f"{mount['mountPath'].rstrip('/')}/{item['path']}"
                content = None
                if kind == "configMap" and data is not None:
                    if item["key"] not in data:
                        raise KeyError(f"ConfigMap {name} has no key {item['key']}")
                    content = data[item["key"]].encode("utf-8")
                files[path] = content
    return files, mounts


def cmd_config(paths):
    failures = Failures()
    node_toml = (CONFIG / "node.toml").read_bytes()
    defaults = flatten(tomllib.loads(node_toml.decode("utf-8")))
    keys = set(defaults)
    secrets = secret_keys()
    checked_vars = set()

    # 1. The copies kustomize reads (it loads nothing outside its root) are config/'s.
    expected = {"node.toml": CONFIG / "node.toml"}
    for f in sorted((CONFIG / "flows").rglob("*")):
        if f.is_file():
            expected[f"flows/{f.relative_to(CONFIG / 'flows')}"] = f
    copies = {
        str(f.relative_to(BASE_COPY)): f for f in sorted(BASE_COPY.rglob("*")) if f.is_file()
    }
    for rel, source in expected.items():
        copy = copies.get(rel)
        if copy is None:
            failures.add(f"{BASE_COPY.relative_to(ROOT)}/{rel} is missing: cp {source.relative_to(ROOT)} {BASE_COPY.relative_to(ROOT)}/{rel}")
        elif copy.read_bytes() != source.read_bytes():
            failures.add(f"{BASE_COPY.relative_to(ROOT)}/{rel} differs from {source.relative_to(ROOT)}: cp {source.relative_to(ROOT)} {BASE_COPY.relative_to(ROOT)}/{rel}")
    for rel in copies:
        if rel not in expected:
            failures.add(f"{BASE_COPY.relative_to(ROOT)}/{rel} has no original under config/: remove it")

    # 2. The Dockerfile's ENV.
    dockerfile = (ROOT / "cluster/Dockerfile").read_text(encoding="utf-8")
    for stmt in re.findall(r"^ENV\s+((?:.*\\\n)*.*)$", dockerfile, re.M):
        for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", stmt.replace("\\\n", " ")):
            dotted, _ = config_key_of(failures, "cluster/Dockerfile", name, keys, secrets)
            if dotted:
                checked_vars.add(name)
                check_env_value(failures, "cluster/Dockerfile", name, dotted, value, defaults)

    # 3. Each rendered overlay.
    token_rs = (ROOT / "crates/confab/src/token.rs").read_text(encoding="utf-8")
    ctl_rs = (ROOT / "crates/confabctl/src/main.rs").read_text(encoding="utf-8")
    for path in paths:
        docs = [doc for _, doc in load_docs([path])]
        configmaps = {
            d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"
        }
        secret_objs = {
            d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "Secret"
        }
        services = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Service"}
        sets = [d for d in docs if d.get("kind") == "StatefulSet"]
        if not sets:
            failures.add(f"{path}: no StatefulSet")
        for sts in sets:
            where = f"{path}: StatefulSet/{sts['metadata']['name']}"
            spec = sts["spec"]["template"]["spec"]
            headless = sts["spec"]["serviceName"]
            if headless not in services:
                failures.add(f"{where}: serviceName {headless} is not a Service of the render")
            elif services[headless]["spec"].get("clusterIP") != "None" or not services[headless]["spec"].get("publishNotReadyAddresses"):
                failures.add(f"{where}: Service {headless} must be headless with publishNotReadyAddresses")
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                cwhere = f"{where} container {container['name']}"
                try:
                    files, mounts = pod_files(spec, container, configmaps, secret_objs)
                except KeyError as e:
                    failures.add(f"{cwhere}: {e.args[0]}")
                    continue
                defined = set()
                env = container.get("env", [])
                for var in env:
                    name, value = var["name"], var.get("value")
                    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value or ""):
                        if ref not in defined:
                            failures.add(f"{cwhere}: {name} refers to $({ref}), not defined before it (Kubernetes would leave it as is)")
                    defined.add(name)
                    dotted, is_file = config_key_of(failures, cwhere, name, keys, secrets)
                    if not dotted and not is_file:
                        continue
                    checked_vars.add(name)
                    if is_file:
                        mount = [m for m in mounts if under(value or "", m)]
                        if not mount:
                            failures.add(f"{cwhere}: {name}={value}: no volume is mounted there")
                        elif value not in files:
                            volume = mounts[mount[0]]
                            written = any(
                                value in " ".join(c.get("command", []) + c.get("args", []))
                                for c in spec.get("initContainers", [])
                            )
                            if not (volume and "emptyDir" in volume and written):
                                failures.add(f"{cwhere}: {name}={value}: the mounted volume holds no such file")
                    else:
                        check_env_value(failures, cwhere, name, dotted, value, defaults)
                if container["name"] != "confab":
                    continue
                envs = {v["name"]: v for v in env}
                # The pod's node id is its name.
                node_id = envs.get("CONFAB_NODE__ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if node_id != "metadata.name":
                    failures.add(f"{cwhere}: CONFAB_NODE__ID must come from the pod name (fieldRef metadata.name)")
                ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
                if ports.get("http") != 8080 or ports.get("cluster") != 7070:
                    failures.add(f"{cwhere}: ports http 8080 and cluster 7070 expected, got {ports}")
                for var, port in (("CONFAB_NODE__HTTP_PORT", "http"), ("CONFAB_NODE__CLUSTER_PORT", "cluster")):
                    if var in envs and envs[var].get("value") != str(ports.get(port)):
                        failures.add(f"{cwhere}: {var} is not the {port} port {ports.get(port)}")
                seeds = envs.get("CONFAB_NODE__SEEDS", {}).get("value", "")
                for seed in filter(None, (s.strip() for s in seeds.split(","))):
                    if not re.fullmatch(rf"{re.escape(sts['metadata']['name'])}-[0-9]+\.{re.escape(headless)}(\.[a-z0-9.-]+)?:{ports.get('cluster')}", seed):
                        failures.add(f"{cwhere}: seed {seed!r} is not <pod>.{headless}:{ports.get('cluster')}")
                advertise = envs.get("CONFAB_CLUSTER__ADVERTISE", {}).get("value", "")
                if advertise != f"$(POD_NAME).{headless}.$(NAMESPACE).svc.cluster.local:{ports.get('cluster')}":
                    failures.add(f"{cwhere}: CONFAB_CLUSTER__ADVERTISE {advertise!r} is not the pod's name under {headless}")
                # What the node reads: --config FILE and the flows dir, as config/ has them.
                args = container.get("args", [])
                config_file = args[args.index("--config") + 1] if "--config" in args else None
                if config_file is None:
                    failures.add(f"{cwhere}: no --config argument")
                elif files.get(config_file) != node_toml:
                    failures.add(f"{cwhere}: {config_file} in the pod is not config/node.toml")
                else:
                    unknown = set(flatten(tomllib.loads(files[config_file].decode("utf-8")))) - keys
                    if unknown:
                        failures.add(f"{cwhere}: {config_file} sets keys config/node.toml lacks: {sorted(unknown)}")
                flows_dir = envs.get("CONFAB_DIALOG__FLOWS_DIR", {}).get("value")
                if not flows_dir:
                    failures.add(f"{cwhere}: CONFAB_DIALOG__FLOWS_DIR is not set")
                else:
                    seen = {p[len(flows_dir) + 1:]: c for p, c in files.items() if under(p, flows_dir) and p != flows_dir}
                    want = {rel[len("flows/"):]: f.read_bytes() for rel, f in expected.items() if rel.startswith("flows/")}
                    for rel in sorted(set(want) | set(seen)):
                        if rel not in seen:
                            failures.add(f"{cwhere}: {flows_dir}/{rel} is missing from the pod (add it to configMapGenerator confab-flows and the config volume's items)")
                        elif rel not in want:
                            failures.add(f"{cwhere}: {flows_dir}/{rel} is not a file of config/flows")
                        elif seen[rel] != want[rel]:
                            failures.add(f"{cwhere}: {flows_dir}/{rel} differs from config/flows/{rel}")
                # Probes.
                for probe, want_path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                    get = container.get(probe, {}).get("httpGet", {})
                    if get.get("path") != want_path or get.get("port") not in ("http", 8080):
                        failures.add(f"{cwhere}: {probe} must GET {want_path} on the http port")
                # The preStop drain: flags that exist, a wait within the grace period.
                pre = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                script = " ".join(pre)
                if "confabctl" not in script or "nodes drain" not in script or "confab token" not in script:
                    failures.add(f"{cwhere}: the preStop hook must mint a token and run confabctl nodes drain")
                fields = set(re.findall(r"\b([a-z_]+)\s*:", token_rs + ctl_rs))
                for flag in sorted(set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", script))):
                    if flag.replace("-", "_") not in fields:
                        failures.add(f"{cwhere}: preStop uses --{flag}, which neither `confab token` nor confabctl has")
                wait = envs.get("DRAIN_WAIT", {}).get("value")
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if "$DRAIN_WAIT" in script:
                    seconds = duration_s(wait)
                    if seconds is None:
                        failures.add(f"{cwhere}: DRAIN_WAIT {wait!r} is not a duration (30s, 10m, 1h)")
                    elif seconds + 30 > grace:
                        failures.add(f"{cwhere}: terminationGracePeriodSeconds {grace} leaves under 30 s after the drain's wait ({wait})")
                sc = container.get("securityContext", {})
                if not sc.get("readOnlyRootFilesystem") or not spec.get("securityContext", {}).get("runAsNonRoot"):
                    failures.add(f"{cwhere}: runAsNonRoot and readOnlyRootFilesystem expected")
                data_dir = envs.get("CONFAB_NODE__DATA_DIR", {}).get("value")
                if data_dir not in mounts:
                    failures.add(f"{cwhere}: the data dir {data_dir} is not a mounted volume (the root filesystem is read-only)")
    failures.finish("config keys and files")
    print(
        f"  {len(checked_vars)} CONFAB_ variables name keys of config/node.toml "
        f"({', '.join(sorted(checked_vars))}); node.toml and {len(expected) - 1} flow files in the pods "
        f"and in cluster/k8s/base/config/ are config/'s, byte for byte"
    )


# --- metrics ------------------------------------------------------------------


def exported_metrics():
    """{name: kind} of the metrics the crates export, and the histograms that
    have buckets (so _bucket series). Read from the metric catalog
    (crates/confab-gateway/src/catalog.rs: counter(...), labelled(...),
    gauge(...), histogram(NAME, BUCKETS, ...) and Metric { name, kind }) and
    from every metrics::counter!/gauge!/histogram! call in the crates."""
    names = {}
    bucketed = set()
    global_buckets = False
    for rs in sorted((ROOT / "crates").rglob("*.rs")):
        if "/tests/" in str(rs) or "/target/" in str(rs):
            continue
        text = rs.read_text(encoding="utf-8")
        for kind, name in re.findall(r"metrics::(counter|gauge|histogram)!\(\s*\"(confab_[a-z0-9_]+)\"", text):
            names.setdefault(name, kind)
        for ctor, name in re.findall(r"\b(counter|labelled|gauge|histogram)\(\s*\"(confab_[a-z0-9_]+)\"", text):
            kind = {"labelled": "counter"}.get(ctor, ctor)
            names[name] = kind
            if kind == "histogram":
                bucketed.add(name)
        for name, kind in re.findall(r"name:\s*\"(confab_[a-z0-9_]+)\",\s*kind:\s*Kind::(Counter|Gauge|Histogram)\(?", text):
            names[name] = kind.lower()
            if kind == "Histogram":
                bucketed.add(name)
        bucketed.update(re.findall(r"Matcher::Full\(\s*\"(confab_[a-z0-9_]+)\"", text))
        global_buckets |= ".set_buckets(" in text
    if global_buckets:
        bucketed.update(n for n, k in names.items() if k == "histogram")
    return names, bucketed


def series_ok(series, names, bucketed, pending):
    """None if `series` is a series the exporter writes (or a pending one), else why not."""
    for base, kind in list(names.items()) + list(pending.items()):
        if kind != "histogram":
            if series == base:
                return None
            continue
        if series in (f"{base}_sum", f"{base}_count"):
            return None
        if series == f"{base}_bucket":
            if base in bucketed or base in pending:
                return None
            return f"{base} has no buckets (the exporter writes it as a summary: no _bucket series)"
        if series == base:
            return None  # a summary's quantiles
    return "no crate exports it"


def dashboard_exprs(dash):
    out = []

    def walk(panels):
        for panel in panels:
            for t in panel.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel {panel.get('title')!r}", t["expr"]))
            walk(panel.get("panels", []))

    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and q:
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q.strip())
            out.append((f"variable {var['name']}", m.group(1) if m else q))
    return out


def grafana_to_promql(expr):
    """The dashboard's variables replaced, so that promtool can parse the query."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
        .replace("$job", ".*")
        .replace("$namespace", ".*")
    )


def cmd_metrics(rules_out):
    failures = Failures()
    names, bucketed = exported_metrics()
    pending = {n: k for n, k in PENDING_METRICS.items() if n not in names or (k == "histogram" and n not in bucketed)}
    dash_path = ROOT / "cluster/grafana/confab.json"
    try:
        dash = json.loads(dash_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        failures.add(f"{dash_path.relative_to(ROOT)} is not JSON: {e}")
        failures.finish("the Grafana dashboard")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        failures.add("the dashboard needs a schemaVersion of 36 or more")
    ds_vars = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds_vars:
        failures.add("the dashboard has no Prometheus datasource variable")
    ds_name = ds_vars[0]["name"] if ds_vars else "datasource"
    titles = []

    def walk(panels):
        for panel in panels:
            titles.append(panel.get("title"))
            if panel.get("type") != "row":
                for obj in [panel] + panel.get("targets", []):
                    uid = obj.get("datasource", {}).get("uid")
                    if uid != f"${{{ds_name}}}":
                        failures.add(f"panel {panel.get('title')!r}: datasource {uid!r} is not ${{{ds_name}}}")
            walk(panel.get("panels", []))

    walk(dash.get("panels", []))
    exprs = [("cluster/grafana/confab.json " + w, e) for w, e in dashboard_exprs(dash)]
    rules = yaml.safe_load((ROOT / "cluster/prometheus/rules.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            exprs.append((f"cluster/prometheus/rules.yml {rule.get('alert') or rule.get('record')}", rule["expr"]))
    used = set()
    for where, expr in exprs:
        for series in sorted(set(re.findall(r"\bconfab_[a-z0-9_]+\b", expr))):
            used.add(series)
            why = series_ok(series, names, bucketed, pending)
            if why:
                failures.add(f"{where}: {series}: {why}")
    # The dashboard's queries as recording rules: promtool parses them.
    with open(rules_out, "w", encoding="utf-8") as f:
        yaml.safe_dump(
            {"groups": [{"name": "dashboard", "rules": [
                {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)}
                for i, (_, e) in enumerate(dashboard_exprs(dash))
            ]}]},
            f,
        )
    failures.finish("metric names")
    print(f"  {len(titles)} dashboard panels, {len(exprs)} PromQL expressions: every metric they name is exported ({len(used)} series)")
    waiting = sorted(n for n in pending if any(u == n or u.startswith(n + "_") for u in used))
    if waiting:
        print(f"  note: used before the crates export them (PENDING_METRICS in cluster/checks.py): {', '.join(waiting)}")


# --- prom-k8s-sd --------------------------------------------------------------

K8S_SD_KEYS = {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata",
               "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects",
               "enable_http2", "bearer_token", "bearer_token_file"}
K8S_SD_ROLES = {"pod", "node", "service", "endpoints", "endpointslice", "ingress"}


def cmd_prom_k8s_sd(src, dst):
    failures = Failures()
    config = yaml.safe_load(pathlib.Path(src).read_text(encoding="utf-8"))
    stripped = 0
    for job in config.get("scrape_configs", []):
        blocks = job.pop("kubernetes_sd_configs", None)
        if blocks is None:
            continue
        stripped += 1
        for block in blocks:
            unknown = set(block) - K8S_SD_KEYS
            if unknown:
                failures.add(f"job {job['job_name']}: unknown kubernetes_sd_configs fields {sorted(unknown)}")
            if block.get("role") not in K8S_SD_ROLES:
                failures.add(f"job {job['job_name']}: kubernetes_sd_configs role {block.get('role')!r} is not one of {sorted(K8S_SD_ROLES)}")
        for relabel in job.get("relabel_configs", []):
            for label in relabel.get("source_labels", []):
                if label.startswith("__meta_") and not label.startswith("__meta_kubernetes_"):
                    failures.add(f"job {job['job_name']}: {label} is not a Kubernetes SD label")
        job["static_configs"] = job.get("static_configs", []) or [{"targets": []}]
    failures.finish("kubernetes_sd_configs")
    pathlib.Path(dst).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    print(f"  {stripped} job(s) with kubernetes_sd_configs: roles and fields checked here, the rest by promtool")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "validate" and len(args) >= 2:
        cmd_validate(args[0], args[1:])
    elif command == "config" and args:
        cmd_config(args)
    elif command == "metrics" and len(args) == 1:
        cmd_metrics(args[0])
    elif command == "prom-k8s-sd" and len(args) == 2:
        cmd_prom_k8s_sd(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
