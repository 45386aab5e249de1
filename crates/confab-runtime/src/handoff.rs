//! Moving a session's state straight to its new owner when the ring changes,
//! as [`confab_core::handoff`] lays out:
//!
//! 1. The old owner's supervisor takes the moved sessions off its map (no new
//!    turn reaches them there: its Router forwards by the new ring) and tells
//!    each new owner which sessions to expect ([`crate::cluster::Expect`]).
//! 2. Each moved actor finishes the turns already queued to it, then sends its
//!    snapshot to the new owner ([`crate::cluster::HandoffState`]), writes it to
//!    the store as a passivation does, and stops.
//! 3. On the new owner, a turn for an expected session waits (the session's
//!    mailbox buffers the turns behind it) until the state arrives or
//!    [`HANDOFF_WAIT`] passes. The session is then claimed at the new epoch,
//!    which fences the old owner's writes, and rebuilt from the state that
//!    arrived plus any events after it, or from the durable tier alone.
//!
//! A crashed owner sends nothing: its sessions are not expected, so their new
//! owners load them from the durable tier at once.

use crate::cluster::{Expect, HandoffState};
use crate::supervisor::SupervisorMsg;
use crate::{Runtime, Shared};
use base64::Engine as _;
use ractor::rpc::CallResult;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A state as the supervisor takes it: whose, the epoch that moved it, and the
/// snapshot bytes (`None`: load from the durable tier).
pub(crate) type Arrived = (confab_core::Uid, confab_core::Epoch, Option<Vec<u8>>);
use tokio::time::Instant;

/// How long a new owner holds an expected session's turns for its state
/// before it loads the session from the durable tier (the core's
/// `HandoffConfig::timeout_ms`).
pub const HANDOFF_WAIT: Duration = Duration::from_millis(1_000);

/// Snapshot bytes on the wire.
pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a new session actor starts from.
pub(crate) enum Incoming {
    /// Nothing: load from the durable tier.
    Nothing,
    /// Its old owner is handing it off: wait for the state until the deadline.
    Awaiting(oneshot::Receiver<Option<Vec<u8>>>, Instant),
    /// Its old owner's state (snapshot bytes), or `None`: the old owner held
    /// nothing usable, load from the durable tier.
    Arrived(Option<Vec<u8>>),
}

impl Incoming {
    /// Whether the session is coming from another node.
    pub(crate) fn is_handoff(&self) -> bool {
        !matches!(self, Incoming::Nothing)
    }

    /// The state to start from: waits for it if it is on its way.
    pub(crate) async fn state(self) -> Option<Vec<u8>> {
        match self {
            Incoming::Nothing => None,
            Incoming::Arrived(state) => state,
            Incoming::Awaiting(rx, deadline) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(state)) => state,
                Ok(Err(_)) | Err(_) => None,
            },
        }
    }
}

/// One state on its way out, and where to say whether the new owner took it.
pub(crate) type Outgoing = (confab_core::NodeId, HandoffState, oneshot::Sender<bool>);

/// States sent to one node in one message, at most.
const BATCH_MAX: usize = 256;
/// How long the outbox gathers states before it sends what it has.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// Starts the outbox: moved sessions' states, gathered into one message per new
/// owner from whatever is waiting (a join or a drain moves thousands at once;
/// one peer message each would make the new owner's link the bottleneck).
pub(crate) fn start_outbox(shared: &Arc<Shared>, capacity: usize) -> mpsc::Sender<Outgoing> {
    // Weak: the outbox lives in `Shared`, and ends when it is dropped.
    let shared = Arc::downgrade(shared);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(capacity.max(1));
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut by_node: BTreeMap<
                confab_core::NodeId,
                Vec<(HandoffState, oneshot::Sender<bool>)>,
            > = BTreeMap::new();
            // What else comes within BATCH_LINGER joins this round.
            let linger = tokio::time::Instant::now() + BATCH_LINGER;
            let mut waiting = Some(first);
            let mut gathered = 0;
            while let Some((to, state, done)) = waiting.take() {
                by_node.entry(to).or_default().push((state, done));
                gathered += 1;
                if gathered < BATCH_MAX * 8 {
                    waiting = tokio::time::timeout_at(linger, rx.recv())
                        .await
                        .ok()
                        .flatten();
                }
            }
            for (to, items) in by_node {
                let mut items = items.into_iter().peekable();
                while items.peek().is_some() {
                    let chunk: Vec<_> = items.by_ref().take(BATCH_MAX).collect();
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    tokio::spawn(send_batch(shared, to.clone(), chunk));
                }
            }
        }
    });
    tx
}

/// Sends one batch of states to `to` and tells each sender whether its state
/// was taken (no answer within [`HANDOFF_WAIT`]: not taken).
async fn send_batch(
    shared: Arc<Shared>,
    to: confab_core::NodeId,
    items: Vec<(HandoffState, oneshot::Sender<bool>)>,
) {
    let (states, done): (Vec<HandoffState>, Vec<oneshot::Sender<bool>>) = items.into_iter().unzip();
    let taken = match shared.peer(&to) {
        None => Vec::new(),
        Some(peer) => match peer
            .call(
                |port| crate::cluster::PeerMsg::Handoff(crate::cluster::Wire(states), port),
                Some(HANDOFF_WAIT),
            )
            .await
        {
            Ok(CallResult::Success(crate::cluster::Wire(taken))) => taken,
            _ => Vec::new(),
        },
    };
    for (i, done) in done.into_iter().enumerate() {
        let _ = done.send(taken.get(i).copied().unwrap_or(false));
    }
}

impl Runtime {
    /// Another node is about to hand these sessions here.
    pub(crate) fn expect(&self, expect: Expect) {
        let _ = self.supervisor.cast(SupervisorMsg::Expect(expect));
    }

    /// Moved sessions' states arrived; for each, whether it was taken.
    pub(crate) async fn states_arrived(&self, batch: Vec<HandoffState>) -> Vec<bool> {
        let count = batch.len();
        // A state that does not decode is refused (its session loads from the
        // durable tier); `None` stands for it here.
        let states: Vec<Option<Arrived>> = batch
            .into_iter()
            .map(|handoff| {
                let state = match handoff.snapshot {
                    None => None,
                    Some(text) => Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .ok()?,
                    ),
                };
                Some((handoff.uid, handoff.epoch, state))
            })
            .collect();
        match self
            .supervisor
            .call(
                |reply| SupervisorMsg::Arrived { states, reply },
                Some(HANDOFF_WAIT),
            )
            .await
        {
            Ok(CallResult::Success(taken)) => taken,
            _ => vec![false; count],
        }
    }
}
