//! The dialog engine through the public surface: real `confab node` processes,
//! WebSocket clients and `confabctl`. The shipped conversation scripts, hot
//! reload (a file change and `policy reload`, a bad file refused with its line),
//! the canary by uid tail and its rollback across two nodes, the input filter's
//! audit events, the dead-letter queue, and a prize never paid twice across a
//! crash. Actions go to a real HTTP service the test starts.

mod common;

use common::*;
use confab_dialog::script::{Heard, Script, check_turn};
use confab_proto::admin::{CanaryStatus, DlqList, PolicyStatus, SessionView};
use confab_proto::{ClientFrame, ErrorCode, ServerFrame};
use confab_testkit::{ActionService, Mode};
use std::path::Path;

/// Says `text` and returns what came back, as a script sees it.
async fn hear(client: &mut Client, id: &str, text: &str) -> (Heard, Option<String>) {
    client
        .send(&ClientFrame::Say {
            id: id.into(),
            text: text.into(),
        })
        .await;
    match client.recv().await {
        ServerFrame::Ack { .. } => match client.recv().await {
            ServerFrame::Reply {
                intent,
                text,
                slots,
                policy,
                ..
            } => (
                Heard::Reply {
                    intent,
                    text,
                    slots,
                },
                Some(policy),
            ),
            other => panic!("expected a reply, got {other:?}"),
        },
        ServerFrame::Error {
            code: ErrorCode::RejectedInput,
            ..
        } => (Heard::Rejected, None),
        other => panic!("expected an ack or a refusal, got {other:?}"),
    }
}

async fn say_text(client: &mut Client, id: &str, text: &str) -> (String, String) {
    match hear(client, id, text).await {
        (Heard::Reply { text, .. }, Some(policy)) => (text, policy),
        other => panic!("{other:?}"),
    }
}

/// Says `text` with fresh ids until the reply's (text, policy) satisfies `done`;
/// the deadline only guards against a hang.
async fn say_until(
    client: &mut Client,
    counter: &mut u32,
    text: &str,
    done: impl Fn(&str, &str) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        *counter += 1;
        let (reply, policy) = say_text(client, &format!("poll-{counter}"), text).await;
        if done(&reply, &policy) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered as expected: {reply} ({policy})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_conversation_scripts_hold_over_websocket() {
    // The lottery script's daily limit counts by UTC day on the node's clock:
    // do not start a minute before midnight.
    let day_ms = 86_400_000;
    let ms_of_day = now_s() * 1000 % day_ms;
    if ms_of_day > day_ms - 60_000 {
        tokio::time::sleep(std::time::Duration::from_millis(day_ms - ms_of_day + 1000)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/conversations");
    let mut files: Vec<_> = std::fs::read_dir(&scripts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 8);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let script = Script::parse(&name, &std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut client = Client::as_uid(&node, &script.uid).await;
        for (i, turn) in script.turns.iter().enumerate() {
            if turn.reconnect {
                client = Client::as_uid(&node, &script.uid).await;
            }
            let (heard, _) = hear(&mut client, &format!("m-{i}"), &turn.say).await;
            if let Err(e) = check_turn(i, turn, &heard) {
                panic!("{name}: {e}");
            }
        }
    }
    // The filter's refusals are recorded as audit events, and nothing else.
    let db = format!("sqlite://{}", dir.path().join("confab.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let kinds: Vec<(String,)> =
        sqlx::query_as("SELECT kind FROM events WHERE uid = '20008' ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let kinds: Vec<&str> = kinds.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "input_rejected",
            "input_rejected",
            "input_rejected",
            "input_rejected",
            "input_rejected",
            "turn_received",
            "nlu_result",
            "reply_produced"
        ]
    );
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn flows_env(flows: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("CONFAB_DIALOG__FLOWS_DIR", flows.display().to_string()),
        ("CONFAB_DIALOG__RELOAD_POLL_MS", "100".into()),
        ("CONFAB_DIALOG__ACTION_BACKOFF_MS", "5".into()),
        ("CONFAB_DIALOG__ACTION_BACKOFF_MAX_MS", "20".into()),
    ]
}

async fn start_on_flows(data: &Path, flows: &Path) -> Node {
    start_on_flows_as(data, flows, "node-1").await
}

/// A node of id `id` on the flows: a second node on the same store needs an
/// id of its own (a live node's id is refused).
async fn start_on_flows_as(data: &Path, flows: &Path, id: &str) -> Node {
    let env = flows_env(flows);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("CONFAB_NODE__ID", id));
    Node::start_with(data, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_file_change_goes_live_without_a_restart_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    copy_shipped_flows(&flows);
    let node = start_on_flows(&dir.path().join("data"), &flows).await;
    let mut client = Client::as_uid(&node, "30001").await;
    let (text, _) = say_text(&mut client, "m-1", "你好").await;
    assert!(text.starts_with("您好！我是鞋店客服"), "{text}");
    client
        .send(&ClientFrame::Say {
            id: "m-2".into(),
            text: "39码黑色有货吗".into(),
        })
        .await;
    let _ack = client.recv().await;
    let _reply = client.recv().await;

    // A file change: picked up by the node on its own.
    let common_toml = flows.join("v1/common.toml");
    edit(&common_toml, "您好！我是鞋店客服", "欢迎光临！我是鞋店客服");
    let mut n = 0;
    say_until(&mut client, &mut n, "你好", |text, _| {
        text.starts_with("欢迎光临")
    })
    .await;

    // A bad file: refused with its file and line; the old policy keeps serving.
    std::fs::write(
        flows.join("v1/broken.toml"),
        "[[intents]]\nname = \"x\"\nkeywords = [\"a\" \"b\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = confabctl(&node, &["policy", "reload"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("v1/broken.toml:3:"), "{stderr}");
    let (text, _) = say_text(&mut client, "m-100", "你好").await;
    assert!(text.starts_with("欢迎光临"), "{text}");
    let (code, stdout, _) = confabctl(&node, &["--json", "policy", "status"]).await;
    assert_eq!(code, 0);
    let status: PolicyStatus = serde_json::from_str(&stdout).unwrap();
    let error = status.last_error.expect("the refusal is shown");
    assert_eq!(
        (error.file.as_str(), error.line),
        ("v1/broken.toml", Some(3))
    );
    // The session kept its slots through the reloads.
    let (text, _) = say_text(&mut client, "m-101", "有货吗").await;
    assert!(text.starts_with("黑色 39码 有货"), "{text}");

    std::fs::remove_file(flows.join("v1/broken.toml")).unwrap();
    let (code, stdout, stderr) = confabctl(&node, &["policy", "reload"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (_, stdout, _) = confabctl(&node, &["--json", "policy", "status"]).await;
    let status: PolicyStatus = serde_json::from_str(&stdout).unwrap();
    assert!(status.last_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_takes_its_uid_tails_on_every_node_and_a_rollback_returns_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    copy_shipped_flows(&flows);
    // v2: the same flows with another greeting.
    std::fs::create_dir_all(flows.join("v2")).unwrap();
    for entry in std::fs::read_dir(flows.join("v1")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, flows.join("v2").join(path.file_name().unwrap())).unwrap();
    }
    edit(&flows.join("v2/common.toml"), "您好！", "v2 您好！");
    let data = dir.path().join("data");
    let a = start_on_flows(&data, &flows).await;
    // A second node on the same embedded store: the split is the store's.
    let b = start_on_flows_as(&data, &flows, "node-2").await;

    // A mid-flow session on v1 keeps its slots when its uid moves to v2.
    let mut tail0 = Client::as_uid(&a, "40010").await;
    let (_, policy) = say_text(&mut tail0, "m-1", "39码黑色有货吗").await;
    assert_eq!(policy, "v1");

    let (code, stdout, stderr) =
        confabctl(&a, &["--json", "canary", "set", "v2", "--tails", "0,1"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let status: CanaryStatus = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            status.canary.as_deref(),
            status.tails.as_slice(),
            status.canary_percent
        ),
        (Some("v2"), &[0, 1][..], 20)
    );

    // The two nodes are one cluster: the session's owner may be the other
    // node, which serves the new split within its poll.
    let mut n = 0;
    say_until(&mut tail0, &mut n, "你好", |text, policy| {
        policy == "v2" && text.starts_with("v2 您好")
    })
    .await;
    let (text, policy) = say_text(&mut tail0, "m-3", "有货吗").await;
    assert_eq!(
        (policy.as_str(), text.starts_with("黑色 39码 有货")),
        ("v2", true),
        "{text}"
    );
    let mut tail2 = Client::as_uid(&a, "40012").await;
    assert_eq!(say_text(&mut tail2, "m-1", "你好").await.1, "v1");
    // A non-numeric uid goes by its CRC-32's last digit: crc32("alice") ends in 5.
    let mut alice = Client::as_uid(&a, "alice").await;
    assert_eq!(say_text(&mut alice, "m-1", "你好").await.1, "v1");

    // The other node serves the same split within its poll.
    let mut on_b = Client::as_uid(&b, "40021").await;
    let mut n = 0;
    say_until(&mut on_b, &mut n, "你好", |_, policy| policy == "v2").await;
    let (_, stdout, _) = confabctl(&b, &["--json", "canary", "status"]).await;
    let status: CanaryStatus = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status.canary.as_deref(), Some("v2"));
    // A node that restarts serves the stored split from its first turn.
    drop(on_b);
    b.stop().await;
    let b = start_on_flows_as(&data, &flows, "node-2").await;
    let mut on_b = Client::as_uid(&b, "40021").await;
    assert_eq!(say_text(&mut on_b, "after-restart", "你好").await.1, "v2");

    // Bad splits are refused and change nothing.
    let (code, _, stderr) = confabctl(&a, &["canary", "set", "v9", "--tails", "3"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("v9"), "{stderr}");
    let (code, _, stderr) = confabctl(&a, &["canary", "set", "v1", "--tails", "3"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("\"v1\" is the stable version already"),
        "{stderr}"
    );

    // Rollback: every user back on stable, on the node asked at once, on the
    // other within its poll (either may own a session).
    let (code, _, stderr) = confabctl(&a, &["canary", "rollback"]).await;
    assert_eq!(code, 0, "{stderr}");
    let rolled_back = std::time::Instant::now();
    say_until(&mut tail0, &mut n, "你好", |_, policy| policy == "v1").await;
    say_until(&mut on_b, &mut n, "你好", |_, policy| policy == "v1").await;
    eprintln!(
        "rollback reached the other node in {} ms",
        rolled_back.elapsed().as_millis()
    );
    // Nothing to promote now: said so, not a complaint about tails.
    let (code, _, stderr) = confabctl(&a, &["canary", "promote"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("there is no canary to promote"), "{stderr}");
}

/// The shipped flows with the lottery's prize paid by the service.
fn flows_paying_at(flows: &Path, service: &ActionService) {
    copy_shipped_flows(flows);
    edit(
        &flows.join("v1/lottery.toml"),
        "[actions.draw_prize]\nkind = \"builtin\"\nbuiltin = \"lottery_draw\"",
        &format!(
            "[actions.draw_prize]\nkind = \"http\"\nurl = \"{}/draw\"\ntimeout_ms = 20000",
            service.url()
        ),
    );
}

async fn to_the_draw(client: &mut Client) {
    say_text(client, "d-1", "我要抽奖").await;
    say_text(client, "d-2", "2号").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prize_waits_in_the_dlq_and_confabctl_replays_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = ActionService::start().await;
    let flows = dir.path().join("flows");
    flows_paying_at(&flows, &service);
    let node = start_on_flows(&dir.path().join("data"), &flows).await;
    let mut client = Client::as_uid(&node, "50001").await;
    to_the_draw(&mut client).await;
    service.set_mode(Mode::FailAll);
    let (text, _) = say_text(&mut client, "d-3", "是").await;
    assert!(text.contains("奖品发放遇到问题"), "{text}");
    assert_eq!(service.calls().len(), 4);

    let (code, stdout, _) = confabctl(&node, &["--json", "dlq", "list"]).await;
    assert_eq!(code, 0);
    let list: DlqList = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list.depth, 1);
    let entry = &list.entries[0];
    assert_eq!(
        (entry.uid.as_str(), entry.action.as_str(), entry.attempts),
        ("50001", "draw_prize", 4)
    );
    let (_, metrics) = http_get(node.port, "/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "confab_dlq_depth 1"),
        "{metrics}"
    );
    let (code, human, _) = confabctl(&node, &["dlq", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        human.contains("50001") && human.contains("draw_prize"),
        "{human}"
    );

    // Still failing: the replay says so and exits 1; the entry stays.
    let (code, _, _) = confabctl(&node, &["dlq", "replay", &entry.id.to_string()]).await;
    assert_eq!(code, 1);
    service.set_mode(Mode::Serve);
    let (code, stdout, stderr) = confabctl(&node, &["dlq", "replay", "--all"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(service.paid().len(), 1);
    let key = format!("50001:{}", entry.seq);
    assert!(
        service.calls().iter().all(|k| *k == key),
        "{:?}",
        service.calls()
    );
    let (_, stdout, _) = confabctl(&node, &["--json", "dlq", "list"]).await;
    assert_eq!(serde_json::from_str::<DlqList>(&stdout).unwrap().depth, 0);
    // The entry is gone: replaying it again is refused, and nothing is paid.
    let (code, _, stderr) = confabctl(&node, &["dlq", "replay", &entry.id.to_string()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(service.paid().len(), 1);
    let (_, metrics) = http_get(node.port, "/metrics").await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "confab_dlq_depth 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prize_interrupted_by_a_crash_is_paid_once_and_answered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let service = ActionService::start().await;
    let flows = dir.path().join("flows");
    flows_paying_at(&flows, &service);
    let data = dir.path().join("data");
    let node = start_on_flows(&data, &flows).await;
    let mut client = Client::as_uid(&node, "50002").await;
    to_the_draw(&mut client).await;
    service.set_mode(Mode::HoldNext);
    client
        .send(&ClientFrame::Say {
            id: "d-3".into(),
            text: "是".into(),
        })
        .await;
    service.arrived().await;
    // The prize call is in flight: the node dies.
    node.kill().await;
    service.release();
    let node = start_on_flows(&data, &flows).await;
    // Any touch of the session finishes the pending action under its key.
    let mut client = Client::as_uid(&node, "50002").await;
    let (text, _) = say_text(&mut client, "d-3", "是").await;
    assert!(text.starts_with("恭喜！2 号盒子开出了："), "{text}");
    let calls = service.calls();
    assert_eq!(
        calls.len(),
        2,
        "the interrupted call and the one after the restart"
    );
    assert_eq!(calls[0], calls[1], "one key for both");
    assert_eq!(service.paid().len(), 1, "paid once");

    let (code, stdout, _) = confabctl(&node, &["--json", "session", "show", "50002"]).await;
    assert_eq!(code, 0);
    let view: SessionView = serde_json::from_str(&stdout).unwrap();
    assert_eq!((view.pending_action, view.owner.as_str()), (None, "node-1"));
}

/// A turn that waited behind a slow one (a prize call held by its service)
/// past its caller's wait (`runtime.turn_timeout_ms`) is not run when the
/// session reaches it: the client was told to retry, nothing is recorded for
/// it, and its retry with the same id is recorded once, as new. The slow turn
/// itself was under way, so it runs on and is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_caller_gave_up_is_not_run_and_its_retry_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = ActionService::start().await;
    let flows = dir.path().join("flows");
    flows_paying_at(&flows, &service);
    let mut env = flows_env(&flows);
    env.push(("CONFAB_RUNTIME__TURN_TIMEOUT_MS", "1000".into()));
    env.push(("CONFAB_STORE__COMMIT_WAIT_MAX_MS", "500".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = Node::start_with(&dir.path().join("data"), &env).await;
    let mut client = Client::as_uid(&node, "50003").await;
    to_the_draw(&mut client).await;
    service.set_mode(Mode::HoldNext);
    client
        .send_all(&[
            ClientFrame::Say {
                id: "d-3".into(),
                text: "是".into(),
            },
            ClientFrame::Say {
                id: "m-4".into(),
                text: "你好".into(),
            },
        ])
        .await;
    service.arrived().await;
    // Both callers give up while the prize call is held: d-3 after a second,
    // m-4 (queued behind it in the session) a second later.
    for id in ["d-3", "m-4"] {
        match client.recv().await {
            ServerFrame::Error {
                id: Some(got),
                code: ErrorCode::Internal,
                message,
            } if got == id => {
                assert!(message.contains("retry with the same id"), "{message}");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    service.release();
    // The session reaches m-4 before m-5, after d-3 ends.
    let (m5_ack, m5_reply) = client.say("m-5", "你好").await;
    let ServerFrame::Reply { seq: m5_seq, .. } = m5_reply else {
        panic!("{m5_reply:?}")
    };
    // Every reply recorded so far, as a reconnecting client reads them back:
    // d-3's (it ran on), none for m-4.
    let mut again = Client::as_uid(&node, "50003").await;
    again.send(&ClientFrame::Resume { after_seq: 0 }).await;
    let mut replied = Vec::new();
    loop {
        let ServerFrame::Reply { id, seq, .. } = again.recv().await else {
            continue;
        };
        replied.push(id);
        if seq == m5_seq {
            break;
        }
    }
    assert_eq!(replied, ["d-1", "d-2", "d-3", "m-5"]);
    // The retry is new: recorded after m-5, not answered from an earlier record.
    let (m4_ack, _) = client.say("m-4", "你好").await;
    assert!(m4_ack > m5_seq, "m-4 acked at {m4_ack}, m-5 at {m5_ack}");
    assert_eq!(service.paid().len(), 1, "the prize was paid once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_show_masks_sensitive_slots_and_the_admin_api_needs_the_admin_scope() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path()).await;
    let mut client = Client::as_uid(&node, "60001").await;
    say_text(&mut client, "m-1", "请回电 13812345678").await;
    let (code, stdout, _) = confabctl(&node, &["--json", "session", "show", "60001"]).await;
    assert_eq!(code, 0);
    let view: SessionView = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        view.slots.get("phone").map(String::as_str),
        Some("138****5678")
    );
    assert!(!stdout.contains("13812345678"));
    let (code, human, _) = confabctl(&node, &["session", "show", "60001"]).await;
    assert_eq!(code, 0);
    assert!(
        human.contains("138****5678") && !human.contains("13812345678"),
        "{human}"
    );

    // A chat token is not enough; no token is refused before anything runs.
    let output = tokio::process::Command::new(confabctl_path())
        .args([
            "--node",
            &format!("http://127.0.0.1:{}", node.port),
            "--token",
            &token("60001"),
            "status",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("admin"));
    let (status, _) = http_get(node.port, "/admin/v1/status").await.unwrap();
    assert_eq!(status, 401);
    // Authentication comes before the request is read: a bad query gets 401 too.
    let (status, _) = http_get(node.port, "/admin/v1/dlq?limit=abc")
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = http_get(node.port, "/admin/v1/no-such-thing")
        .await
        .unwrap();
    assert_eq!(status, 401);
}

/// `policy status`'s refusal, polled until `check` holds.
async fn policy_error_until(node: &Node, check: impl Fn(Option<&str>) -> bool) {
    eventually(|| async {
        let (_, stdout, _) = confabctl(node, &["--json", "policy", "status"]).await;
        let status: PolicyStatus = serde_json::from_str(&stdout).unwrap();
        let error = status
            .last_error
            .map(|e| format!("{}:{:?}: {}", e.file, e.line, e.message));
        check(error.as_deref())
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_slot_names_both_files_and_a_deleted_broken_file_clears_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    copy_shipped_flows(&flows);
    let node = start_on_flows(&dir.path().join("data"), &flows).await;
    // A new file, sorting before callback.toml, declares callback's phone slot
    // again: the refusal names both files (with their lines).
    std::fs::write(
        flows.join("v1/a_new.toml"),
        "[slots.phone]\ntype = \"phone\"\nprompt = \"号码？\"\n\n[[intents]]\nname = \"new_one\"\nkeywords = [\"新的\"]\nreply = \"好\"\n",
    )
    .unwrap();
    policy_error_until(&node, |error| {
        error.is_some_and(|e| {
            e.contains("slot phone is declared in two flow files")
                && e.contains("v1/a_new.toml")
                && e.contains("v1/callback.toml")
        })
    })
    .await;
    // Deleting it is enough: no manual reload, and the status says so.
    std::fs::remove_file(flows.join("v1/a_new.toml")).unwrap();
    policy_error_until(&node, |error| error.is_none()).await;
}
