//! What nodes send each other: the one cluster-visible message type,
//! [`PeerMsg`], and the serde values it carries as JSON. A leaf: every module
//! that talks to a peer imports from here, and this imports none of them.

use crate::{SessionAnswer, SessionAsk, TurnError, TurnOutcome};
use confab_core::{Epoch, MessageId, NodeId, Uid};
use ractor::{BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A serde value on the wire, as JSON.
pub struct Wire<T>(pub T);

impl<T: Serialize + DeserializeOwned + Send + 'static> BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("wire values always serialize")
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        // A panic here is caught by ractor_cluster: the message is dropped and
        // its caller's port closed (it sees the owner as unreachable).
        Wire(serde_json::from_slice(&bytes).expect("a peer sent a value this version cannot read"))
    }
}

/// A turn routed to its owner.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteTurn {
    /// Whose turn.
    pub uid: Uid,
    /// The client's message id.
    pub message_id: MessageId,
    /// What the user said.
    pub text: String,
    /// The epoch it was routed at.
    pub epoch: Epoch,
    /// Forwards so far.
    pub hops: u8,
    /// The forwarding span's trace context: the owner's span continues it.
    pub trace: crate::trace_context::TraceContext,
    /// How long the caller still waits, in ms, when the turn leaves: the owner
    /// does not run it after that. 0 (a peer from before the field): the owner's
    /// own turn timeout.
    #[serde(default)]
    pub budget_ms: u64,
}

/// A request routed to the session's owner.
#[derive(Serialize, Deserialize)]
pub struct RemoteRequest {
    /// Whose session.
    pub uid: Uid,
    /// What is asked.
    pub ask: SessionAsk,
    /// The epoch it was routed at.
    pub epoch: Epoch,
    /// Forwards so far.
    pub hops: u8,
}

/// The answer to a [`RemoteRequest`].
pub type RemoteAnswer = SessionAnswer;

/// A heartbeat: its sender, the epoch it knows, and its load.
#[derive(Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Who sent it.
    pub from: NodeId,
    /// The epoch its sender knows.
    pub epoch: Epoch,
    /// Its load when it sent this.
    pub load: MemberLoad,
}

/// How busy a member is: carried by its heartbeats, shown by `confabctl nodes`
/// and the dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLoad {
    /// Sessions resident in its memory.
    pub sessions_resident: u64,
    /// Turns admitted and not yet answered.
    pub inflight_turns: u64,
    /// Turns answered since it started (any outcome): a rate from two beats.
    pub turns_total: u64,
}

/// Sessions about to move to the receiving node: it holds their first turns
/// until their state arrives (or the handoff's hold passes).
#[derive(Debug, Serialize, Deserialize)]
pub struct Expect {
    /// The epoch that moved them.
    pub epoch: Epoch,
    /// The sessions, sorted.
    pub uids: Vec<Uid>,
}

/// A moved session's state, sent by its old owner once its last turn there is
/// done.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandoffState {
    /// Whose session.
    pub uid: Uid,
    /// The epoch that moved it.
    pub epoch: Epoch,
    /// Its snapshot (the codec's bytes, base64), or `None` when the old owner
    /// held nothing usable in memory: load it from the durable tier at once.
    pub snapshot: Option<String>,
}

/// Messages between nodes: the one cluster-visible message type.
#[derive(RactorClusterMessage)]
pub enum PeerMsg {
    /// A turn for a session this node owns.
    #[rpc]
    Turn(
        Wire<RemoteTurn>,
        RpcReplyPort<Wire<Result<TurnOutcome, TurnError>>>,
    ),
    /// A request for a session this node owns.
    #[rpc]
    Request(
        Wire<RemoteRequest>,
        RpcReplyPort<Wire<Result<RemoteAnswer, TurnError>>>,
    ),
    /// A member's heartbeat.
    Heartbeat(Wire<Heartbeat>),
    /// Sessions that are about to move here.
    Expect(Wire<Expect>),
    /// Moved sessions' states; the answer says, for each, whether it was taken.
    #[rpc]
    Handoff(Wire<Vec<HandoffState>>, RpcReplyPort<Wire<Vec<bool>>>),
    /// Drain this node, or tell how far its drain has come.
    #[rpc]
    Drain(
        Wire<DrainAsk>,
        RpcReplyPort<Wire<Result<DrainProgress, TurnError>>>,
    ),
    /// This node's own turn aggregate, for a cluster-wide sum ([`crate::stats`]).
    #[rpc]
    Stats(
        Wire<StatsAsk>,
        RpcReplyPort<Wire<confab_proto::admin::NodeStats>>,
    ),
}

/// What a [`PeerMsg::Stats`] asks: the node's whole aggregate (nothing to
/// choose yet; a struct, so that a later version can add a field).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StatsAsk {}

/// What a [`PeerMsg::Drain`] asks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum DrainAsk {
    /// Start draining (or report progress if already draining).
    Start,
    /// Report progress only.
    Progress,
}

/// Where a node stands in its life, as a drain sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainState {
    /// On the ring (or joining it), serving.
    Serving,
    /// Leaving: its sessions are moving away.
    Draining,
    /// Out of the member table: the process stops.
    Left,
}

/// How far a node's drain has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    /// The node.
    pub node: NodeId,
    /// Where it stands.
    pub state: DrainState,
    /// Session actors on the node when the drain began (0 when serving).
    pub sessions_at_start: usize,
    /// Session actors still on it (they stop once their final snapshot is written).
    pub sessions_left: usize,
}
