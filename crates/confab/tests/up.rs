//! `confab up`, as a newcomer runs it: it starts, prints a token that works,
//! stops cleanly on SIGTERM, and the next `confab up` on the same data dir
//! carries on.

mod common;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs `confab up` until it prints its token; returns the child and the token.
fn up(data_dir: &std::path::Path, port: u16) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args([
            "up",
            "--http-port",
            &port.to_string(),
            "--cluster-port",
            &free_ports(3).to_string(),
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CONFAB_AUTH__JWT_SECRET")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut token = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(t) = line.strip_prefix("token for uid demo (24h): ") {
            token = Some(t.trim().to_owned());
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    (child, token.expect("confab up printed a token"))
}

fn stop(mut child: std::process::Child) {
    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "confab up exited with {status}");
}

#[tokio::test]
async fn confab_up_serves_stops_cleanly_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(3);
    let (child, token) = up(dir.path(), port);
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    let mut client = Client::connect(&url, &token).await.unwrap();
    let (ack, _) = client.say("m-1", "39码的黑色有货吗？").await;
    assert_eq!(ack, 1);
    drop(client);
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
    assert!(dir.path().join("dev-jwt-secret").exists());

    // Same data dir: the same dev secret, so the old token still works, and the
    // session is where it was.
    let (child, second_token) = up(dir.path(), port);
    assert_eq!(second_token.split('.').next(), token.split('.').next());
    let client = Client::connect(&url, &token).await.unwrap();
    assert_eq!(client.last_seq(), 3);
    drop(client);
    tokio::task::spawn_blocking(move || stop(child))
        .await
        .unwrap();
}
