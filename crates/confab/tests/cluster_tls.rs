//! Nodes linked by mutual TLS: a cluster whose members' certificates one CA
//! signed forms and routes turns; a node whose certificate another CA signed
//! never links to it. The certificates are made by `openssl` for the test
//! (`confab_testkit::make_certificates`).

mod common;

use common::*;
use confab_proto::ServerFrame;
use confab_proto::admin::NodesView;
use std::path::Path;

fn tls_env(dir: &Path, ca: &str, node: &str) -> Vec<(String, String)> {
    let path = |f: String| dir.join(f).display().to_string();
    vec![
        (
            "CONFAB_CLUSTER__TLS_CERT".into(),
            path(format!("{node}.pem")),
        ),
        (
            "CONFAB_CLUSTER__TLS_KEY".into(),
            path(format!("{node}.key")),
        ),
        ("CONFAB_CLUSTER__TLS_CA".into(), path(format!("{ca}.pem"))),
        // One cookie for all, the rogue too: only TLS keeps it out.
        (
            "CONFAB_CLUSTER__COOKIE".into(),
            "one-cookie-for-every-node".into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_certificates_from_the_ca_link_over_tls_and_serve_any_user() {
    let certs = tempfile::tempdir().unwrap();
    let local = ["node-1", "node-2", "node-3", "node-4"].map(|node| (node, "127.0.0.1"));
    confab_testkit::make_certificates(certs.path(), "ca", &local).unwrap();
    let data = tempfile::tempdir().unwrap();
    // Isolated mode: node-2 and node-3 only know node-1 as a seed; they find
    // each other by the addresses published in the store.
    let (nodes, seed) = cluster_with(data.path(), 3, |id| tls_env(certs.path(), "ca", id)).await;
    let mut owners = std::collections::BTreeSet::new();
    for u in 0..9 {
        let uid = format!("tls-user-{u}");
        for (i, node) in nodes.iter().enumerate() {
            let mut client = Client::as_uid(node, &uid).await;
            let ServerFrame::Hello { node: owner, .. } = &client.hello else {
                unreachable!()
            };
            owners.insert(owner.clone());
            let (ack, _) = client.say(&format!("m-{i}"), "你好").await;
            assert_eq!(ack, u64::try_from(i).unwrap() * 3 + 1, "{uid} via node {i}");
        }
    }
    assert_eq!(
        owners.len(),
        3,
        "turns reached every member over TLS: {owners:?}"
    );

    // A node whose certificate another CA signed, on the same store and with
    // the same cookie, joins the member table but no member links to it.
    confab_testkit::make_certificates(certs.path(), "rogue-ca", &[("rogue", "127.0.0.1")]).unwrap();
    let mut rogue = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("node")
        .args([
            "--node-id",
            "rogue",
            "--http-port",
            &free_port().to_string(),
        ])
        .args(["--cluster-port", &free_port().to_string(), "--seeds", &seed])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--jwt-secret", SECRET])
        .envs(tls_env(certs.path(), "rogue-ca", "rogue"))
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // It dials node-1 every second, and the members dial it once it is in the
    // table: watched for 3 s (three redials) after it first shows up.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen_at: Option<tokio::time::Instant> = None;
    while seen_at.is_none_or(|at| at.elapsed() < std::time::Duration::from_secs(3)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rogue node never reached the member table"
        );
        for node in &nodes {
            let (_, stdout, _) = confabctl(node, &["--json", "nodes"]).await;
            let view: NodesView = serde_json::from_str(&stdout).unwrap();
            if let Some(member) = view.nodes.iter().find(|n| n.id == "rogue") {
                seen_at.get_or_insert_with(tokio::time::Instant::now);
                assert!(
                    !member.connected,
                    "a member linked to the rogue node: {stdout}"
                );
                // Not linked to the members, it never goes up onto the ring.
                assert_ne!(
                    member.status, "up",
                    "the rogue node is on the ring: {stdout}"
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = rogue.kill();
    let _ = rogue.wait();
    assert_eq!(linked_members(&nodes[0]).await.len(), 3);

    // A connection that never starts its TLS handshake does not stop node-1
    // from accepting others: a handshake made while it hangs completes, and a
    // properly signed node-4 joins.
    let silent = tokio::net::TcpStream::connect(&seed).await.unwrap();
    let file = |f: &str| certs.path().join(f).display().to_string();
    let handshake = tokio::process::Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &seed, "-brief"])
        .args(["-cert", &file("node-4.pem"), "-key", &file("node-4.key")])
        .args(["-CAfile", &file("ca.pem"), "-verify_return_error"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&handshake.stderr).into_owned()
        + &String::from_utf8_lossy(&handshake.stdout);
    assert!(
        said.contains("CONNECTION ESTABLISHED"),
        "no TLS handshake with node-1 while a silent connection is open: {said}"
    );
    let env = tls_env(certs.path(), "ca", "node-4");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let joined = Node::start_member(
        data.path(),
        &env,
        &["--node-id", "node-4", "--seeds", &seed],
    )
    .await;
    eventually(|| async { linked_members(&joined).await.len() == 4 }).await;
    drop(silent);
}
