//! `confab up` on MySQL shards spread over private `mariadbd` servers, as an
//! operator runs it: `--config` with `[[store.mysql_shards]]`, real WebSocket
//! clients, a shard server killed (only its sessions answer `unavailable`, and
//! serve again once it is back), and `confab shards move` under load (no acked
//! turn lost or applied twice).

mod common;

use common::*;
use confab_proto::{ErrorCode, ServerFrame};
use confab_store::mysql::shard_of;
use confab_testkit::PrivateMariaDb;
use confab_testkit::load::{Load, assert_no_loss_no_duplicate, summary};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A config putting shards 32..=63 on `second` and the rest on `control`.
fn write_config(dir: &Path, control: &str, second: &str) -> std::path::PathBuf {
    let path = dir.join("shards.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nmysql_url = \"{control}\"\nmysql_acquire_timeout_ms = 500\n\n\
             [[store.mysql_shards]]\nfrom = 32\nto = 63\nurl = \"{second}\"\n"
        ),
    )
    .unwrap();
    path
}

/// `confab up --nodes 2 --config CONFIG`, once it says every node is ready.
fn up(dir: &Path, config: &Path, port: u16) -> ChildGuard {
    let mut child = ChildGuard::new(
        confab_up(2, port, &dir.join("data"))
            .arg("--config")
            .arg(config)
            .env("CONFAB_AUTH__JWT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("up.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().starts_with("Ctrl-C stops") {
            return child;
        }
    }
    drop(child);
    panic!(
        "confab up ended before it was ready: {}",
        std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
    );
}

/// The first `n` uids `user-<i>` whose shard `on` accepts.
fn users_where(n: usize, on: impl Fn(u32) -> bool) -> Vec<String> {
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|u| on(shard_of(&confab_core::Uid::new(u.as_str()).unwrap())))
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shard_server_stops_only_its_sessions_and_they_serve_again_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let control = PrivateMariaDb::start();
    let mut second = PrivateMariaDb::start();
    let config = write_config(dir.path(), &control.url(), &second.url());
    let port = free_ports(2);
    let cluster = up(dir.path(), &config, port);
    let url = format!("ws://127.0.0.1:{port}/v1/ws");

    let on_control = users_where(3, |s| s < 32);
    let on_second = users_where(3, |s| s >= 32);
    let mut clients = Vec::new();
    for uid in on_control.iter().chain(&on_second) {
        let mut client = Client::connect(&url, &token(uid)).await.unwrap();
        let (ack, _) = client.say("m-1", "39码的黑色有货吗？").await;
        assert_eq!(ack, 1, "{uid}");
        clients.push(client);
    }
    let (mut control_clients, mut second_clients): (Vec<_>, Vec<_>) = {
        let mut rest = clients;
        let second = rest.split_off(on_control.len());
        (rest, second)
    };
    // Load all along, on users of both servers.
    let load_on_control = users_where(6, |s| s < 32)[3..].to_vec();
    let load_on_second = users_where(6, |s| s >= 32)[3..].to_vec();
    let load = Load::start(
        vec![url.clone(), format!("ws://127.0.0.1:{}/v1/ws", port + 1)],
        &[load_on_control.clone(), load_on_second.clone()].concat(),
        Duration::from_millis(60),
        tokens(),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    second.kill();
    for (i, client) in second_clients.iter_mut().enumerate() {
        client
            .send(&confab_proto::ClientFrame::Say {
                id: "m-2".into(),
                text: "39码".into(),
            })
            .await;
        match client.recv().await {
            ServerFrame::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::Unavailable, "{}: {message}", on_second[i]);
            }
            other => panic!("{}: its server is down, yet {other:?}", on_second[i]),
        }
    }
    for client in &mut control_clients {
        let (ack, _) = client.say("m-2", "39码").await;
        assert_eq!(ack, 4, "sessions on the live server serve throughout");
    }
    let (code, _) = http_get(port, "/readyz").await.unwrap();
    assert_eq!(
        code, 200,
        "a shard server down does not take the node out of service"
    );

    second.restart();
    for (i, client) in second_clients.iter_mut().enumerate() {
        let mut said = None;
        // The first turns after the restart may still meet closed connections
        // of the old server; the client retries, as a client does.
        for attempt in 0..20 {
            client
                .send(&confab_proto::ClientFrame::Say {
                    id: "m-2".into(),
                    text: "39码".into(),
                })
                .await;
            match client.recv().await {
                ServerFrame::Ack { seq, .. } => {
                    said = Some(seq);
                    let reply = client.recv().await;
                    assert!(matches!(reply, ServerFrame::Reply { .. }), "{reply:?}");
                    break;
                }
                ServerFrame::Error {
                    code: ErrorCode::Unavailable | ErrorCode::Overloaded,
                    ..
                } => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
                other => panic!("{}: {other:?}", on_second[i]),
            }
        }
        assert_eq!(
            said,
            Some(4),
            "{}: serves again, the refused turn was never recorded",
            on_second[i]
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let logs = load.finish().await;
    eprintln!("shard server killed under load: {}", summary(&logs));
    assert_no_loss_no_duplicate(&logs, &url, &tokens()).await;
    let refusals = |users: &[String]| -> Vec<String> {
        logs.iter()
            .filter(|l| users.contains(&l.uid))
            .flat_map(|l| l.turns.iter().flat_map(|t| &t.setbacks))
            .map(|(_, why)| why.clone())
            .filter(|why| !why.starts_with("RateLimited"))
            .collect()
    };
    assert_eq!(
        refusals(&load_on_control),
        Vec::<String>::new(),
        "users on the live server were never refused"
    );
    let second_refused = refusals(&load_on_second);
    assert!(
        second_refused
            .iter()
            .any(|why| why.starts_with("Unavailable")),
        "users on the dead server were told so: {second_refused:?}"
    );
    drop((control_clients, second_clients));
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confab_shards_move_under_load_loses_no_acked_turn() {
    let dir = tempfile::tempdir().unwrap();
    let control = PrivateMariaDb::start();
    let second = PrivateMariaDb::start();
    let third = PrivateMariaDb::start();
    let config = write_config(dir.path(), &control.url(), &second.url());
    let port = free_ports(2);
    let cluster = up(dir.path(), &config, port);

    // Users on the shard that moves, and on others of both servers.
    let moving = users_where(6, |s| s == 3);
    let users: Vec<String> = moving
        .iter()
        .cloned()
        .chain(users_where(6, |s| s != 3))
        .collect();
    let load = Load::start(
        vec![
            format!("ws://127.0.0.1:{port}/v1/ws"),
            format!("ws://127.0.0.1:{}/v1/ws", port + 1),
        ],
        &users,
        Duration::from_millis(60),
        tokens(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let moved = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["shards", "move", "3", "--to", &third.url(), "--json"])
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(
        moved.status.success(),
        "confab shards move: {}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert_eq!(report["shard"], 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = load.finish().await;
    eprintln!("shard move under load: {}; {report}", summary(&logs));
    // What made a client send a turn again (not asserted: how long the freeze
    // takes depends on the machine; a turn that waited too long is answered
    // `unavailable` and sent again, never lost).
    let mut why: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for turn in logs.iter().flat_map(|l| &l.turns) {
        for (_, setback) in &turn.setbacks {
            *why.entry(setback.split(':').next().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    eprintln!("sent again because of: {why:?}");
    assert_no_loss_no_duplicate(&logs, &format!("ws://127.0.0.1:{port}/v1/ws"), &tokens()).await;

    // The map says shard 3 is on the third server, which holds every event of
    // the moving users, and the control server none.
    let listed = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["shards", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let ranges: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        ranges.iter().any(|r| r["from"] == 3
            && r["to"] == 3
            && r["url"] == format!("mysql://root@127.0.0.1:{}/test", third.port())),
        "{ranges:?}"
    );
    let answered: usize = logs
        .iter()
        .filter(|l| moving.contains(&l.uid))
        .map(|l| l.turns.len())
        .sum();
    let count = async |url: String| -> i64 {
        use sqlx::Connection;
        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events_03")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        n
    };
    let events = count(third.url()).await;
    assert!(
        events >= i64::try_from(answered * 3).unwrap(),
        "{events} events on the new server for {answered} answered turns"
    );
    assert_eq!(
        count(control.url()).await,
        0,
        "the old server was cleaned up"
    );
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
