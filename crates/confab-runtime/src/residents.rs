//! The resident sessions' actors, readable from any task: a turn for a
//! resident session goes straight into its actor's mailbox from the task
//! that routes it, without a hop through the supervisor.
//!
//! The supervisor is still the only writer: it adds a session's actor when
//! it spawns it and takes it out *before* it tells the actor to hand off,
//! passivate or retire. A task delivers while it holds the entry (a read lock
//! on its shard) and the supervisor removes it under the write lock, so every
//! turn delivered this way is in the actor's mailbox ahead of that message,
//! as a turn the supervisor itself queued would be. A turn that finds no entry,
//! or a full queue, goes to the supervisor, which asks the node's machine
//! ([`confab_core::handoff::Node::admit`]).
//!
//! The machine does not see the turns delivered here, so each session's
//! `Activity` (turns queued, time of the last one) is kept beside its actor
//! and handed to the machine when it decides who is idle and who hands off
//! first ([`confab_core::handoff::Activity`]). The simulator delivers the same
//! way.

use crate::messages::SupervisorMsg;
use crate::session_actor::{Activity, SessionMsg};
use confab_core::Uid;
use confab_core::handoff::HandoffConfig;
use dashmap::DashMap;
use ractor::{ActorRef, MessagingErr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A resident session: its actor and its activity.
#[derive(Clone)]
pub(crate) struct Resident {
    pub(crate) actor: ActorRef<SessionMsg>,
    pub(crate) activity: Arc<Activity>,
}

/// The node's resident sessions.
pub(crate) struct Residents {
    by_uid: DashMap<Uid, Resident>,
    config: HandoffConfig,
}

impl Residents {
    /// None yet; `config` bounds each session's queue.
    pub(crate) fn new(config: HandoffConfig) -> Self {
        Self {
            by_uid: DashMap::new(),
            config,
        }
    }

    /// Queues a turn or request to its resident session's actor, if the
    /// session is resident here and its queue has room (a turn only; a
    /// request is not counted); otherwise hands the message back, for the
    /// supervisor (`None`: delivered).
    #[must_use = "a message handed back goes to the supervisor"]
    pub(crate) fn deliver(&self, message: SupervisorMsg) -> Option<SupervisorMsg> {
        let (uid, counted) = match &message {
            SupervisorMsg::Turn(turn) => (&turn.uid, true),
            SupervisorMsg::Request(request) => (&request.uid, false),
            _ => return Some(message),
        };
        // Held until the message is in the mailbox: the supervisor cannot take
        // the session out (and tell its actor to leave) in between.
        let Some(resident) = self.by_uid.get(uid) else {
            return Some(message);
        };
        let activity = &resident.activity;
        if counted && !activity.count_in(&self.config) {
            return Some(message);
        }
        activity.touch();
        let sent = match message {
            SupervisorMsg::Turn(turn) => resident.actor.cast(SessionMsg::Turn(turn)),
            SupervisorMsg::Request(request) => resident.actor.cast(SessionMsg::Request(request)),
            other => return Some(other),
        };
        match sent {
            Ok(()) => None,
            // The actor has stopped and the supervisor has not heard yet: it
            // answers the message as it answers one for a stopped actor.
            Err(MessagingErr::SendErr(SessionMsg::Turn(turn))) => {
                activity.queued.fetch_sub(1, Ordering::AcqRel);
                Some(SupervisorMsg::Turn(turn))
            }
            Err(MessagingErr::SendErr(SessionMsg::Request(request))) => {
                Some(SupervisorMsg::Request(request))
            }
            // Dropped with the message: its caller is told the reply port closed.
            Err(_) => {
                if counted {
                    activity.queued.fetch_sub(1, Ordering::AcqRel);
                }
                None
            }
        }
    }

    /// The bounds a delivery keeps.
    pub(crate) fn config(&self) -> &HandoffConfig {
        &self.config
    }

    /// Adds (or replaces) `uid`'s session.
    pub(crate) fn insert(&self, uid: Uid, resident: Resident) {
        self.by_uid.insert(uid, resident);
    }

    /// Takes `uid`'s session out: no turn is delivered to it from now on.
    pub(crate) fn remove(&self, uid: &Uid) {
        self.by_uid.remove(uid);
    }

    /// Takes every session out.
    pub(crate) fn clear(&self) {
        self.by_uid.clear();
    }
}
