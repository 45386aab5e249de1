//! Draining a node, as Akka's graceful leave does it: the node moves itself
//! `Draining` in the member table, which takes it off the ring (its sessions
//! move to their new owners while it still answers the turns queued for them),
//! and once no session actor is left on it, it removes itself and has left.
//!
//! Any node can be asked to drain any member: the request goes to that member's
//! peer actor. Progress is read the same way, so `confabctl nodes drain` can
//! follow a drain from any node.

use crate::wire::{DrainAsk, PeerMsg, Wire};
pub use crate::wire::{DrainProgress, DrainState};
use crate::{Runtime, TurnError};
use confab_core::NodeId;
use confab_core::membership::Input;
use ractor::rpc::CallResult;

/// The drain of this node: its state, the sessions it held at the start, and
/// whether every one of them has moved (the membership loop decides it, once,
/// when it reports `Drained`; the node closes its connections on it).
pub(crate) struct DrainCell {
    state: tokio::sync::watch::Sender<DrainState>,
    at_start: std::sync::atomic::AtomicUsize,
    moved: tokio::sync::watch::Sender<bool>,
}

impl Default for DrainCell {
    fn default() -> Self {
        Self {
            state: tokio::sync::watch::Sender::new(DrainState::Serving),
            at_start: Default::default(),
            moved: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl DrainCell {
    pub(crate) fn state(&self) -> DrainState {
        *self.state.borrow()
    }

    /// The `reason` label of a move made now: `drain` while this node drains.
    pub(crate) fn move_reason(&self) -> &'static str {
        match self.state() {
            DrainState::Serving => "ring_change",
            DrainState::Draining | DrainState::Left => "drain",
        }
    }

    /// No session actor is left on this draining node: every session moved.
    pub(crate) fn set_moved(&self) {
        self.moved.send_replace(true);
    }

    /// The membership machine reported that this node left.
    pub(crate) fn set_left(&self) {
        self.moved.send_replace(true);
        self.state.send_replace(DrainState::Left);
    }
}

impl Runtime {
    /// Drains this node: it leaves the ring at once, its sessions move, and it
    /// leaves the cluster once none is left. Asking again reports progress.
    pub async fn drain(&self) -> Result<DrainProgress, TurnError> {
        let Some(membership) = self.shared.cluster.membership.get() else {
            return Err(TurnError::Unavailable(
                "this node runs without a cluster: stop it instead".into(),
            ));
        };
        let cell = &self.shared.drain;
        if cell.state() == DrainState::Serving {
            membership.try_send(Input::Drain).map_err(|_| {
                TurnError::Overloaded("membership is busy: ask again to drain".into())
            })?;
            let alive = self.session_actors().await.unwrap_or(0);
            cell.at_start
                .store(alive, std::sync::atomic::Ordering::Release);
            cell.state.send_replace(DrainState::Draining);
            tracing::info!(sessions = alive, "draining: leaving the ring");
        }
        Ok(self.drain_progress().await)
    }

    /// How far this node's drain has come.
    pub async fn drain_progress(&self) -> DrainProgress {
        let cell = &self.shared.drain;
        DrainProgress {
            node: self.node_id().clone(),
            state: cell.state(),
            sessions_at_start: cell.at_start.load(std::sync::atomic::Ordering::Acquire),
            sessions_left: self
                .session_actors()
                .await
                .unwrap_or(cell.at_start.load(std::sync::atomic::Ordering::Acquire)),
        }
    }

    /// Follows this node's drain state (the node binary stops once it has left).
    pub fn drain_state(&self) -> tokio::sync::watch::Receiver<DrainState> {
        self.shared.drain.state.subscribe()
    }

    /// Turns true once this draining node holds no session actor: every session
    /// moved to its new owner (the node binary then closes its connections).
    pub fn drain_moved(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.drain.moved.subscribe()
    }

    /// Drains `node` (this one or another member, through its peer actor).
    pub async fn drain_node(&self, node: &NodeId) -> Result<DrainProgress, TurnError> {
        if node == self.node_id() {
            return self.drain().await;
        }
        let in_table = self
            .members()
            .is_some_and(|table| table.members.contains_key(node));
        if !in_table {
            return Err(TurnError::Rejected(format!(
                "{node} is not a member of the cluster (see `confabctl nodes`)"
            )));
        }
        self.ask_peer_drain(node, DrainAsk::Start).await
    }

    /// The drain progress of `node`. A node no longer in the member table has left.
    pub async fn drain_progress_of(&self, node: &NodeId) -> Result<DrainProgress, TurnError> {
        if node == self.node_id() {
            return Ok(self.drain_progress().await);
        }
        let Some(table) = self.members() else {
            return Err(TurnError::Unavailable(
                "this node has not read the member table yet: ask again".into(),
            ));
        };
        if !table.members.contains_key(node) {
            return Ok(DrainProgress {
                node: node.clone(),
                state: DrainState::Left,
                sessions_at_start: 0,
                sessions_left: 0,
            });
        }
        self.ask_peer_drain(node, DrainAsk::Progress).await
    }

    async fn ask_peer_drain(
        &self,
        node: &NodeId,
        ask: DrainAsk,
    ) -> Result<DrainProgress, TurnError> {
        let Some(peer) = self.shared.peer(node) else {
            return Err(TurnError::Unavailable(format!(
                "{node} is not connected to this node: ask another node, or wait until it is seen down"
            )));
        };
        let timeout = self.shared.config.turn_timeout;
        match peer
            .call(|port| PeerMsg::Drain(Wire(ask), port), Some(timeout))
            .await
        {
            Ok(CallResult::Success(Wire(result))) => result,
            Ok(CallResult::Timeout) => Err(TurnError::Unavailable(format!(
                "{node} did not answer within {} ms",
                timeout.as_millis()
            ))),
            Ok(CallResult::SenderError) | Err(_) => Err(TurnError::Unavailable(format!(
                "{node} is unreachable (it may just have left)"
            ))),
        }
    }
}
