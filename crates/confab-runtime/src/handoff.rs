//! The shell of the handoff protocol ([`confab_core::handoff`]): the decisions
//! are the core machines'; this module carries them over the cluster links.
//!
//! - The supervisor drives [`confab_core::handoff::Node`] (admission, the
//!   announcements before a ring change, the moves after it, expected and
//!   arrived states), each session actor its [`confab_core::handoff::Session`].
//! - The outbox task drives [`confab_core::handoff::Outbox`]: moved sessions'
//!   states, gathered into batches per new owner, sent as one peer message
//!   each, and each session told whether its state was taken.
//!
//! What stays here is transport only: the peer calls and their timeouts, and
//! the monotonic clock the machines read as milliseconds.

use crate::Shared;
use crate::wire::HandoffState;
use base64::Engine as _;
use confab_core::Uid;
use confab_core::handoff::{Batch, HandoffConfig, Outbox};
use ractor::rpc::CallResult;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A moved session's state as the supervisor takes it.
pub struct Arrived {
    /// Whose session.
    pub uid: Uid,
    /// The epoch that moved it.
    pub epoch: confab_core::Epoch,
    /// The snapshot bytes (`None`: the old owner held nothing usable; load
    /// from the durable tier).
    pub snapshot: Option<Vec<u8>>,
}

/// How long a new owner holds an expected session's turns for its state, and
/// an old owner waits for the answer (the core's `HandoffConfig::hold_ms`).
pub const HANDOFF_WAIT: Duration = Duration::from_millis(1_000);

/// The machines' clock: milliseconds since the process first read it, on
/// tokio's clock (so paused-time tests drive it too).
pub(crate) fn mono_ms() -> u64 {
    let since = Instant::now().saturating_duration_since(origin());
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The instant a machine's millisecond `ms` stands for.
pub(crate) fn instant_at(ms: u64) -> Instant {
    origin() + Duration::from_millis(ms)
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The protocol's limits, from the runtime's config.
pub(crate) fn config_of(config: &crate::RuntimeConfig) -> HandoffConfig {
    HandoffConfig {
        hold_ms: u64::try_from(HANDOFF_WAIT.as_millis()).unwrap_or(u64::MAX),
        resident_max: config.resident_sessions_max,
        queue_max: config.session_queue_max,
        arrived_keep_ms: u64::try_from(config.passivate_after.as_millis()).unwrap_or(u64::MAX),
        handoff_max: config.handing_off_max,
        ..HandoffConfig::default()
    }
}

/// Snapshot bytes on the wire.
pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One state on its way out, and where to say whether the new owner took it.
pub(crate) type Outgoing = (confab_core::NodeId, HandoffState, oneshot::Sender<bool>);

/// Starts the outbox task: it feeds moved sessions' states to the core
/// [`Outbox`], sends the batches it makes (a join or a drain moves thousands
/// at once; one peer message each would make the new owner's link the
/// bottleneck), and answers each session.
pub(crate) fn start_outbox(shared: &Arc<Shared>, capacity: usize) -> mpsc::Sender<Outgoing> {
    // Weak: the outbox lives in `Shared`, and ends when it is dropped.
    let weak = Arc::downgrade(shared);
    let config = config_of(&shared.config);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(capacity.max(1));
    // One answer per batch sent; at most `capacity` states wait, so at most
    // that many batches are out.
    let (answers_tx, mut answers_rx) = mpsc::channel::<(u64, Vec<bool>)>(capacity.max(1));
    tokio::spawn(async move {
        let mut outbox: Outbox<String> = Outbox::new(config);
        let mut waiting: BTreeMap<Uid, VecDeque<oneshot::Sender<bool>>> = BTreeMap::new();
        loop {
            let due = outbox.poll_timeout().map(instant_at);
            tokio::select! {
                got = rx.recv() => {
                    let Some((to, state, done)) = got else { return };
                    waiting.entry(state.uid.clone()).or_default().push_back(done);
                    outbox.push(mono_ms(), to, state.uid, state.epoch, state.snapshot);
                }
                Some((id, taken)) = answers_rx.recv() => {
                    tell(&mut waiting, outbox.answered(id, &taken));
                }
                () = sleep_until(due), if due.is_some() => {}
            }
            let now = mono_ms();
            for batch in outbox.poll_batches(now) {
                let Some(shared) = weak.upgrade() else { return };
                tokio::spawn(send_batch(shared, batch, answers_tx.clone()));
            }
            tell(&mut waiting, outbox.handle_timeout(now));
        }
    });
    tx
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

/// Tells each session whether its state was taken.
fn tell(waiting: &mut BTreeMap<Uid, VecDeque<oneshot::Sender<bool>>>, results: Vec<(Uid, bool)>) {
    for (uid, taken) in results {
        if let Some(senders) = waiting.get_mut(&uid) {
            if let Some(done) = senders.pop_front() {
                let _ = done.send(taken);
            }
            if senders.is_empty() {
                waiting.remove(&uid);
            }
        }
    }
}

/// Sends one batch to its new owner and reports the answer (none within
/// [`HANDOFF_WAIT`], or no link: nothing taken).
async fn send_batch(
    shared: Arc<Shared>,
    batch: Batch<String>,
    answers: mpsc::Sender<(u64, Vec<bool>)>,
) {
    let states: Vec<HandoffState> = batch
        .states
        .into_iter()
        .map(|moved| HandoffState {
            uid: moved.uid,
            epoch: moved.epoch,
            snapshot: moved.state,
        })
        .collect();
    let taken = match shared.peer(&batch.to) {
        None => Vec::new(),
        Some(peer) => match peer
            .call(
                |port| crate::wire::PeerMsg::Handoff(crate::wire::Wire(states), port),
                Some(HANDOFF_WAIT),
            )
            .await
        {
            Ok(CallResult::Success(crate::wire::Wire(taken))) => taken,
            _ => Vec::new(),
        },
    };
    let _ = answers.send((batch.id, taken)).await;
}
