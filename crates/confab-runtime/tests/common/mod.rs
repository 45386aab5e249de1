//! What the runtime tests share: a test policy, a config, and short-hands.
#![allow(dead_code, unreachable_pub)]

use confab_core::session::{
    ActionOutcome, PendingAction, ReplyDecision, Slots, SnapshotKey, TurnDecision,
};
use confab_core::{Epoch, MessageId, NodeId, Uid};
use confab_dialog::shoe_shop::ShoeShopNlu;
use confab_dialog::{
    BasicInputFilter, Decision, Nlu, Pipeline, Policy, TurnContext, Understanding,
};
use confab_runtime::dialog::Dialog;
use confab_runtime::{Runtime, RuntimeConfig, TurnError};
use confab_store::Store;
use confab_store::sqlite::{SqliteOptions, SqliteStore};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A policy that panics on "boom" and blocks on "wait" until the gate opens.
#[derive(Clone, Default)]
pub struct TestPolicy {
    gate: Arc<(Mutex<bool>, Condvar)>,
    /// Turns that have reached the gate.
    pub waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestPolicy {
    pub fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl Policy for TestPolicy {
    fn version(&self) -> &str {
        "test"
    }

    fn understand(&self, _: TurnContext<'_>, text: &str) -> Understanding {
        ShoeShopNlu::new().understand(text)
    }

    fn resume(&self, _: TurnContext<'_>, _: &PendingAction, _: &ActionOutcome) -> ReplyDecision {
        unreachable!("the test policy calls no action")
    }

    fn decide(&self, _: TurnContext<'_>, text: &str, u: &Understanding) -> Decision {
        if text == "boom" {
            panic!("policy bug triggered on purpose");
        }
        if text == "wait" {
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut open = self.gate.0.lock().unwrap();
            while !*open {
                open = self.gate.1.wait(open).unwrap();
            }
        }
        Decision::Reply(TurnDecision {
            intent: u.intent.clone(),
            confidence: u.confidence,
            slots_filled: u.slots.clone(),
            slots_cleared: Vec::new(),
            reply_text: format!("echo: {text}"),
            policy: "test".into(),
            dialog: Slots::new(),
        })
    }
}

pub fn config(key: u8) -> RuntimeConfig {
    RuntimeConfig {
        node_id: NodeId::new("node-1").unwrap(),
        inflight_turns_max: 64,
        session_queue_max: 8,
        passivate_after: Duration::from_secs(3600),
        batch_events_max: 256,
        batch_delay_max: Duration::from_millis(2),
        commit_concurrency: 2,
        commit_retries: 3,
        commit_wait_max: Duration::from_secs(5),
        snapshot_every_events: 1_000_000,
        snapshot_every: Duration::from_secs(3600),
        turn_timeout: Duration::from_secs(10),
        resident_sessions_max: 1000,
        handing_off_max: 64,
        snapshot_key: SnapshotKey::new(vec![key; 32]).unwrap(),
        ring: test_ring(),
        reencrypt_per_s: 0,
        epoch: Epoch(1),
        actions: Default::default(),
        stages: Vec::new(),
        stats_names_max: 64,
    }
}

pub async fn store(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(dir, &SqliteOptions::default())
            .await
            .unwrap(),
    )
}

pub async fn start(store: Arc<dyn Store>, config: RuntimeConfig, policy: TestPolicy) -> Runtime {
    let pipeline = Pipeline::new(Arc::new(BasicInputFilter), Arc::new(policy));
    Runtime::start(config, store, Dialog::fixed(&pipeline))
        .await
        .unwrap()
}

pub fn uid(s: &str) -> Uid {
    Uid::new(s).unwrap()
}

pub fn mid(s: &str) -> MessageId {
    MessageId::new(s).unwrap()
}

pub async fn say(
    rt: &Runtime,
    u: &str,
    id: &str,
    text: &str,
) -> Result<(u64, u64, String), TurnError> {
    rt.turn(uid(u), mid(id), text.into())
        .await
        .map(|o| (o.ack_seq.0, o.reply.seq.0, o.reply.text))
}

/// Waits for a condition that the runtime reaches on its own; the deadline only
/// guards against a hang, the assertion is the condition.
pub async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition never held");
}

/// The data-key ring every test runtime seals with.
pub fn test_ring() -> confab_core::crypto::SharedRing {
    confab_core::crypto::SharedRing::new(confab_core::crypto::KeyRing::new([
        confab_core::crypto::DataKey::new(1, &[7; 32]).unwrap(),
    ]))
}

/// `store` as the sessions see it: what it holds, opened with the test ring.
pub fn opened(store: Arc<dyn confab_store::Store>) -> confab_runtime::sealed::SealedStore {
    confab_runtime::sealed::SealedStore::new(
        store,
        test_ring(),
        Arc::new(|| confab_runtime::sealed::SensitiveSlots::new(Default::default())),
    )
}
