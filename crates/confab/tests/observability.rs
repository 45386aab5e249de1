//! What ops see of a running cluster, through the shipped binary: a turn's trace
//! across the socket's node and the owner, exported over OTLP to a receiver
//! this test runs; log lines that name their node; `/metrics` as Prometheus
//! checks it (`promtool check metrics`), and a real Prometheus scraping
//! `confab up` and answering with the turn rate.

mod common;

use common::{
    ChildGuard, Client, Node, SECRET, WAIT, confabctl, eventually, eventually_value, free_port,
    http_get,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    trace_id: Vec<u8>,
    name: String,
    /// The exporting node (`service.instance.id`).
    node: String,
    attributes: BTreeMap<String, String>,
}

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn otlp_receiver() -> (u16, Arc<Mutex<Vec<ReceivedSpan>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    let resource_attributes = resource
                        .resource
                        .map(|r| attributes(&r.attributes))
                        .unwrap_or_default();
                    let node = resource_attributes
                        .get("service.instance.id")
                        .cloned()
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.push(ReceivedSpan {
                                trace_id: span.trace_id,
                                name: span.name,
                                node: node.clone(),
                                attributes: attributes(&span.attributes),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

fn attributes(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// A uid that `node`'s ring places on `owner`.
async fn uid_owned_by(node: &Node, owner: &str) -> String {
    for i in 0..10_000 {
        let uid = format!("traced-{i}");
        let (code, stdout, _) = confabctl(node, &["--json", "session", "locate", &uid]).await;
        assert_eq!(code, 0, "session locate");
        let location: confab_proto::admin::SessionLocation = serde_json::from_str(&stdout).unwrap();
        if location.owner == owner {
            return uid;
        }
    }
    panic!("no uid placed on {owner}");
}

/// A turn sent to node-1 for a session node-2 owns: one trace holds node-1's
/// `turn` span (uid, seq, node, epoch, policy) and node-2's spans of the same
/// turn, down to its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_turn_is_one_trace_across_both_nodes() {
    let (otlp_port, spans) = otlp_receiver().await;
    let endpoint = format!("http://127.0.0.1:{otlp_port}");
    let dir = tempfile::tempdir().unwrap();
    let (nodes, _) = common::cluster_with(dir.path(), 2, |_| {
        vec![("CONFAB_TELEMETRY__OTLP_ENDPOINT".into(), endpoint.clone())]
    })
    .await;
    let uid = uid_owned_by(&nodes[0], "node-2").await;
    let mut client = Client::as_uid(&nodes[0], &uid).await;
    let (seq, reply) = client.say("traced-1", "39码的黑色有货吗？").await;
    assert!(
        matches!(reply, confab_proto::ServerFrame::Reply { .. }),
        "{reply:?}"
    );

    let (turn, trace) = eventually_value(|| {
        let spans = Arc::clone(&spans);
        let uid = uid.clone();
        async move {
            let spans = spans.lock().unwrap().clone();
            let turn = spans.iter().find(|s| {
                s.name == "turn" && s.attributes.get("uid") == Some(&uid) && s.node == "node-1"
            })?;
            let trace: Vec<ReceivedSpan> = spans
                .iter()
                .filter(|s| s.trace_id == turn.trace_id)
                .cloned()
                .collect();
            let owner_committed = trace
                .iter()
                .any(|s| s.node == "node-2" && s.name == "commit");
            owner_committed.then(|| (turn.clone(), trace))
        }
    })
    .await;
    let names = |node: &str| {
        trace
            .iter()
            .filter(|s| s.node == node)
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        turn.attributes.get("seq"),
        Some(&seq.to_string()),
        "{turn:?}"
    );
    assert_eq!(
        turn.attributes.get("node").map(String::as_str),
        Some("node-1")
    );
    assert_eq!(
        turn.attributes.get("policy").map(String::as_str),
        Some("v1")
    );
    assert!(turn.attributes.contains_key("epoch"), "{turn:?}");
    assert!(
        names("node-1").contains(&"forward"),
        "node-1's spans: {:?}",
        names("node-1")
    );
    for span in ["owner turn", "session turn", "dialog", "commit"] {
        assert!(
            names("node-2").contains(&span),
            "node-2's spans of the trace lack {span:?}: {:?}",
            names("node-2")
        );
    }
    for node in nodes {
        node.stop().await;
    }
}

/// `log.format = "json"`: every line is one JSON object naming its node, and
/// by default no library (ractor_cluster, sqlx, hyper) speaks below warn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_each_name_their_node_and_libraries_stay_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["node", "--http-port", &port.to_string()])
        .args(["--cluster-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--jwt-secret", SECRET])
        .env_remove("RUST_LOG")
        .env("CONFAB_LOG__FORMAT", "json")
        .env("CONFAB_NODE__ID", "7")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    eventually(|| async { http_get(port, "/readyz").await.map(|r| r.0) == Some(200) }).await;
    let mut client = Client::connect(
        &format!("ws://127.0.0.1:{port}/v1/ws"),
        &common::token("logged"),
    )
    .await
    .unwrap();
    client.say("l-1", "你好").await;
    drop(client);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    let lines = lines.join().unwrap();
    assert!(lines.len() >= 3, "too few lines: {lines:?}");
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        // The node id "7" looks like a number: it is read as the string it is.
        assert_eq!(object["node"], "7", "{line}");
        let target = object["target"].as_str().unwrap_or_default();
        let level = object["level"].as_str().unwrap_or_default();
        assert!(
            target.starts_with("confab") || level == "WARN" || level == "ERROR",
            "a library's {level} line by default: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("confab node ready")),
        "{lines:?}"
    );
}

/// A node's `/metrics` passes `promtool check metrics`, every confab metric has
/// its `# HELP`, and `confab_migration_seconds` is a histogram once sessions
/// moved (a second node joined).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_migrations_are_a_histogram() {
    let promtool = which("promtool");
    let dir = tempfile::tempdir().unwrap();
    let seed_port = free_port();
    let seed = format!("127.0.0.1:{seed_port}");
    let first = Node::start_member(
        dir.path(),
        &[],
        &[
            "--node-id",
            "node-1",
            "--cluster-port",
            &seed_port.to_string(),
        ],
    )
    .await;
    for i in 0..24 {
        let mut client = Client::as_uid(&first, &format!("moved-{i}")).await;
        client.say(&format!("m-{i}"), "你好").await;
    }
    let second =
        Node::start_member(dir.path(), &[], &["--node-id", "node-2", "--seeds", &seed]).await;
    let text = eventually_value(|| async {
        let (_, text) = http_get(first.port, "/metrics").await?;
        text.contains("confab_migration_seconds_bucket")
            .then_some(text)
    })
    .await;
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for line in text.lines().filter(|l| l.starts_with("# TYPE confab_")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no # HELP line"
        );
    }
    assert!(
        text.contains("# TYPE confab_migration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("confab_build_info{version=\""), "{text}");
    assert!(text.contains("confab_intents_total{"), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    assert!(
        text.contains("confab_turns_total{outcome=\"rate_limited\"} 0"),
        "{text}"
    );
    second.stop().await;
    first.stop().await;
}

/// A real Prometheus scrapes a 2-node `confab up` and answers, through its
/// query API, with a turn rate above zero while users talk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_confab_up_and_reads_the_turn_rate() {
    let prometheus = which("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let http = common::free_ports(2);
    let up = ChildGuard::new(
        common::confab_up(2, http, &dir.path().join("data"))
            .args(["--jwt-secret", SECRET])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for port in [http, http + 1] {
        eventually_value(|| async { (http_get(port, "/readyz").await?.0 == 200).then_some(()) })
            .await;
    }
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: confab\n    \
             static_configs:\n      - targets: ['127.0.0.1:{http}', '127.0.0.1:{}']\n",
            http + 1
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let server = ChildGuard::new(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Users talk until Prometheus has seen the rate (it needs two scrapes).
    let talking = tokio::spawn(async move {
        let mut client = Client::connect(
            &format!("ws://127.0.0.1:{http}/v1/ws"),
            &common::token("scraped"),
        )
        .await
        .unwrap();
        for i in 0.. {
            client.say(&format!("p-{i}"), "你好").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let query = "sum(rate(confab_turns_total{outcome=\"ok\"}[5s]))";
    let rate = tokio::time::timeout(WAIT * 3, async {
        loop {
            if let Some(rate) = prometheus_value(prom_port, query).await
                && rate > 0.0
            {
                return rate;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("Prometheus never answered a turn rate above 0");
    talking.abort();
    eprintln!("Prometheus read {rate:.2} turns/s");
    let up_members = prometheus_value(prom_port, "sum(up{job=\"confab\"})").await;
    assert_eq!(up_members, Some(2.0), "both nodes scraped");
    server.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert!(up.stop_with(nix::sys::signal::Signal::SIGINT).success());
}

/// The value of an instant query, if Prometheus answers with one sample.
async fn prometheus_value(port: u16, query: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", urlencode(query));
    let (status, body) = http_get(port, &path).await?;
    if status != 200 {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A tool on the PATH, or a failure that says how to get it (.ci/run installs it).
fn which(tool: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("{tool} is not installed: apt-get install prometheus (.ci/run installs it)")
        })
}
