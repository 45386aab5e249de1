//! Actions through the runtime, against a real HTTP service the test starts
//! (`confab_testkit::ActionService`, which pays once per idempotency key like a
//! payment API): retries under one key, the dead-letter queue and its replay, a
//! session moving to a new owner in the middle of an action, and external
//! pipeline stages. The store is real SQLite.

mod common;

use common::*;
use confab_core::session::Event;
use confab_core::{Epoch, Seq};
use confab_runtime::dialog::{Dialog, DialogConfig};
use confab_runtime::stages::{OnError, StageConfig, StagePoint};
use confab_runtime::{Runtime, RuntimeConfig, TurnError};
use confab_store::{ControlStore, EventStore, Store};
use confab_testkit::{ActionService, Mode};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A one-step lottery whose prize is an `http` action at the service.
fn lottery_flows(dir: &Path, service: &ActionService) {
    std::fs::create_dir_all(dir.join("v1")).unwrap();
    std::fs::write(
        dir.join("v1/lottery.toml"),
        format!(
            r#"
[[intents]]
name = "draw"
keywords = ["抽奖"]

[slots.box]
type = "enum"
when_asked = true
prompt = "which box?"
values = [{{ value = "1" }}, {{ value = "2" }}]

[actions.pay]
kind = "http"
url = "{}/draw"
timeout_ms = 5000

[[steps]]
ask = "box"

[[steps]]
action = "pay"
args = ["box"]

[[steps]]
branch = [{{ when = {{ slot = "action.status", equals = "failed" }}, reply = "failed: {{action.reason}}", clear = ["box"] }}]

[[steps]]
reply = "won {{action.prize}}"
clear = ["box"]
"#,
            service.url()
        ),
    )
    .unwrap();
}

fn fast_config(key: u8, epoch: u64) -> RuntimeConfig {
    let mut config = config(key);
    config.epoch = Epoch(epoch);
    config.actions.backoff = Duration::from_millis(5);
    config.actions.backoff_max = Duration::from_millis(20);
    config
}

async fn start_on(store: Arc<dyn Store>, config: RuntimeConfig, flows: &Path) -> Runtime {
    let dialog = Dialog::open(DialogConfig {
        flows_dir: flows.to_owned(),
        stable_version: "v1".into(),
        reload_poll: Duration::from_secs(3600),
    })
    .unwrap();
    Runtime::start(config, store, dialog).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_action_is_retried_under_one_key_and_paid_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = ActionService::start().await;
    lottery_flows(&dir.path().join("flows"), &service);
    let store = store(dir.path()).await;
    let rt = start_on(store.clone(), fast_config(1, 1), &dir.path().join("flows")).await;

    assert_eq!(say(&rt, "u1", "m-1", "抽奖").await.unwrap().2, "which box?");
    service.set_mode(Mode::FailNext(2));
    let (ack, reply_seq, text) = say(&rt, "u1", "m-2", "2").await.unwrap();
    assert!(text.starts_with("won "), "{text}");
    // received, understood, requested, succeeded, replied.
    assert_eq!((ack, reply_seq), (4, 8));
    let key = "u1:6".to_owned();
    assert_eq!(service.calls(), vec![key.clone(), key.clone(), key.clone()]);
    assert_eq!(service.paid().len(), 1);
    // The same message again answers from the log: no fourth call.
    let again = rt.turn(uid("u1"), mid("m-2"), "2".into()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.reply.text, text);
    assert_eq!(service.calls().len(), 3);
    assert_eq!(store.dead_letter_depth().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_failing_past_its_retries_is_dead_lettered_and_a_replay_pays_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = ActionService::start().await;
    lottery_flows(&dir.path().join("flows"), &service);
    let store = store(dir.path()).await;
    let rt = start_on(store.clone(), fast_config(1, 1), &dir.path().join("flows")).await;

    say(&rt, "u2", "m-1", "抽奖").await.unwrap();
    service.set_mode(Mode::FailAll);
    let (_, _, text) = say(&rt, "u2", "m-2", "1").await.unwrap();
    assert!(text.starts_with("failed: "), "{text}");
    assert_eq!(service.calls().len(), 4, "the first attempt and 3 retries");
    // Read as the sessions see it: the reason is sealed at rest.
    let entries = opened(store.clone()).dead_letters(10).await.unwrap();
    assert_eq!(entries.len(), 1);
    let entry = entries[0].clone();
    assert_eq!(
        (entry.uid.as_str(), entry.seq, entry.action.as_str()),
        ("u2", Seq(6), "pay")
    );
    assert_eq!(entry.attempts, 4);
    assert!(entry.reason.contains("500"), "{}", entry.reason);

    // Replayed while the service still fails: it stays, with more attempts.
    let (ok, message) = rt.replay(entry.clone()).await.unwrap();
    assert!(!ok, "{message}");
    assert_eq!(
        opened(store.clone()).dead_letters(10).await.unwrap()[0].attempts,
        8
    );

    service.set_mode(Mode::Serve);
    let (ok, message) = rt.replay(entry.clone()).await.unwrap();
    assert!(ok, "{message}");
    assert_eq!(store.dead_letter_depth().await.unwrap(), 0);
    assert_eq!(service.paid().len(), 1);
    assert!(service.calls().iter().all(|k| k == "u2:6"));
    let log = store.events_after(&uid("u2"), Seq(0), 100).await.unwrap();
    assert!(matches!(
        log.last().map(|e| &e.event),
        Some(Event::ActionSucceeded {
            requested: Seq(6),
            ..
        })
    ));
    // A second replay of the same entry finds the success and calls nothing.
    let calls = service.calls().len();
    let (ok, message) = rt.replay(entry).await.unwrap();
    assert!(ok && message.contains("already"), "{message}");
    assert_eq!(service.calls().len(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moved_in_the_middle_of_an_action_runs_it_again_under_its_key_and_pays_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = ActionService::start().await;
    lottery_flows(&dir.path().join("flows"), &service);
    let flows = dir.path().join("flows");
    // Two nodes on one store: the old owner at epoch 1, the new one at 2.
    let old = start_on(store(dir.path()).await, fast_config(1, 1), &flows).await;
    say(&old, "u3", "m-1", "抽奖").await.unwrap();
    service.set_mode(Mode::HoldNext);
    let turn = {
        let old = old.clone();
        tokio::spawn(async move { old.turn(uid("u3"), mid("m-2"), "1".into()).await })
    };
    service.arrived().await;

    // The move: the new owner claims the session, finds the action pending
    // and runs it again under the same key while the first call still hangs.
    let new = start_on(store(dir.path()).await, fast_config(1, 2), &flows).await;
    new.hello(uid("u3")).await.unwrap();
    assert_eq!(service.paid().len(), 1);
    service.release();
    let stale = turn.await.unwrap();
    assert!(
        matches!(&stale, Err(TurnError::Unavailable(m)) if m.contains("no longer owns")),
        "{stale:?}"
    );
    assert_eq!(service.calls(), vec!["u3:6".to_owned(), "u3:6".to_owned()]);
    assert_eq!(service.paid().len(), 1, "paid once across the move");
    // The client's retry on the new owner gets the turn's one reply.
    let done = new.turn(uid("u3"), mid("m-2"), "1".into()).await.unwrap();
    assert!(
        done.duplicate && done.reply.text.starts_with("won "),
        "{done:?}"
    );
    assert_eq!(service.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_stages_change_the_text_and_a_failing_one_is_skipped_or_fails_the_turn() {
    let dir = tempfile::tempdir().unwrap();
    let service = ActionService::start().await;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/flows");
    let stage = |name: &str, at, path: &str, on_error| StageConfig {
        name: name.into(),
        at,
        url: format!("{}/stage/{path}", service.url()),
        timeout_ms: 2000,
        retries: 1,
        on_error,
    };
    let mut config = fast_config(1, 1);
    config.stages = vec![
        stage("asr", StagePoint::BeforeNlu, "replace", OnError::Fail),
        stage("llm", StagePoint::AfterReply, "prefix", OnError::Skip),
    ];
    let store = store(dir.path()).await;
    let rt = start_on(store.clone(), config, &shipped).await;
    let (_, _, text) = say(&rt, "s1", "m-1", "三十九码黑色有货吗").await.unwrap();
    assert_eq!(text, "【AI】黑色 39码 有货，今天下单今天发货。");
    let log = opened(store.clone())
        .events_after(&uid("s1"), Seq(0), 10)
        .await
        .unwrap();
    assert!(
        matches!(&log[0].event, Event::TurnReceived { text, .. } if text == "39码黑色有货吗"),
        "the stage's output is what is recorded: {:?}",
        log[0].event
    );
    assert_eq!(service.stage_calls(), vec!["replace", "prefix"]);

    // The service goes away: the `fail` stage fails the turn (nothing recorded).
    service.stop();
    let down = say(&rt, "s1", "m-2", "有货吗").await;
    assert!(
        matches!(&down, Err(TurnError::Unavailable(m)) if m.contains("stage asr")),
        "{down:?}"
    );
    assert_eq!(
        store
            .events_after(&uid("s1"), Seq(0), 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_slot_under_any_name_is_masked_wherever_it_leaves_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(flows.join("v1")).unwrap();
    std::fs::write(
        flows.join("v1/contact.toml"),
        r#"
[[intents]]
name = "contact"
keywords = ["联系"]

[slots.mobile]
type = "phone"
prompt = "your number?"
invalid = "{value} is not a number"

[[steps]]
ask = "mobile"

[[steps]]
reply = "we will call {mobile}"
"#,
    )
    .unwrap();
    let rt = start_on(store(dir.path()).await, fast_config(1, 1), &flows).await;
    let refused = rt
        .turn(uid("p1"), mid("m-1"), "联系我 138 1234 567".into())
        .await
        .unwrap();
    assert!(
        !refused.reply.text.contains("1234"),
        "{}",
        refused.reply.text
    );
    let done = rt
        .turn(uid("p1"), mid("m-2"), "13812345678".into())
        .await
        .unwrap();
    assert_eq!(done.reply.text, "we will call 138****5678");
    assert_eq!(done.reply.slots["mobile"], "138****5678");
    let again = rt
        .turn(uid("p1"), mid("m-2"), "13812345678".into())
        .await
        .unwrap();
    assert_eq!(
        again.reply.slots["mobile"], "138****5678",
        "a duplicate too"
    );
    let view = rt.show(uid("p1")).await.unwrap();
    assert_eq!(view.slots["mobile"], "138****5678");
    let resumed = rt.replies_after(&uid("p1"), Seq(0), 10).await.unwrap();
    assert!(
        resumed
            .iter()
            .all(|r| r.slots.get("mobile").is_none_or(|m| m == "138****5678"))
    );
}
