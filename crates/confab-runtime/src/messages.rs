//! The supervisor's messages, in a module of their own: the session actors
//! and the Router send them, and the supervisor spawns the session actors.

use crate::handoff::Arrived;
use crate::wire::Expect;
use crate::{SessionRequest, TurnError, TurnRequest};
use confab_core::Uid;
use confab_core::ring::Ring;
use ractor::{ActorId, RpcReplyPort};
use std::sync::Arc;

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// A turn for a local session.
    Turn(TurnRequest),
    /// A request to a local session that is not a turn.
    Request(SessionRequest),
    /// Passivate the sessions idle for too long (sent by a timer).
    Sweep,
    /// This ring is about to be adopted: announce the sessions it moves to
    /// their new owners; the answer comes once the announcements are sent.
    Announce {
        /// The coming ring.
        ring: Arc<Ring>,
        /// Answered when done.
        reply: RpcReplyPort<()>,
    },
    /// The ring changed: hand the sessions this node no longer owns to their
    /// new owners ([`crate::handoff`]).
    RingChanged,
    /// Another node is about to hand these sessions here.
    Expect(Expect),
    /// Moved sessions' states arrived (`None`: one that did not decode); the
    /// answer says, for each, whether it was taken.
    Arrived {
        /// The states, in the order they came.
        states: Vec<Option<Arrived>>,
        /// For each, whether it was taken.
        reply: RpcReplyPort<Vec<bool>>,
    },
    /// A session was fenced by a newer owner: stop routing to it, and retire it
    /// once the turns already routed to it are answered.
    Fenced {
        /// Whose session.
        uid: Uid,
        /// Its actor.
        actor: ActorId,
    },
    /// How many sessions are resident.
    Resident {
        /// Where the count goes.
        reply: RpcReplyPort<usize>,
    },
    /// How many session actors are alive (resident, or stopping after a
    /// passivation or a move).
    Actors {
        /// Where the count goes.
        reply: RpcReplyPort<usize>,
    },
    /// Snapshot every resident session, stop them, and refuse new turns.
    Shutdown {
        /// How many snapshots were written.
        reply: RpcReplyPort<Result<usize, TurnError>>,
    },
}

// Local only: not serializable, never announced to other nodes.
impl ractor::Message for SupervisorMsg {}
