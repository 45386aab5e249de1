//! Planted bugs, to prove that the simulator's checkers can fail.
//!
//! Each [`Mutation`] breaks one decision of the core on purpose. They can be
//! switched on only when the crate is built with the `mutations` feature, which
//! only the simulator (`simulations/`) enables; without it [`active`] is a
//! constant `false` and the broken branches compile away. The switch is per
//! thread, so simulations on different threads do not see each other's.

/// A deliberately broken decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mutation {
    /// The store's fence admits every write and every claim: a stale owner may
    /// write after a newer one claimed the session.
    NoFencing,
    /// A turn is acknowledged when its events are sent to the store, before the
    /// store has committed them.
    AckBeforeCommit,
    /// The turns a new owner holds for a moved session's state are dropped
    /// when the state arrives.
    DropHandoffBuffer,
    /// A node routes by a new ring without first telling the new owners which
    /// sessions to expect.
    RouteBeforeExpect,
    /// A session claims (and is started) where the ring in force does not name
    /// its node.
    ClaimOffRing,
    /// A node that was paused (or whose clock jumped) judges the others by
    /// heartbeat times from before the pause, and declares them down.
    StaleHeartbeats,
    /// A failed commit of an action's outcome (its result unknown, or found
    /// in the log already) keeps the session's memory, where the action is
    /// still pending: the next turn runs it again though its success may be
    /// in the log.
    ActionRerun,
    /// A read (`hello`, `resume`) is answered from the session's memory with
    /// no proof that this node still owns it: a node whose ring is stale
    /// reports an older `last_seq` than the new owner has acked.
    ReadFromMemory,
    /// A joining node goes up without hearing the members already up, as if
    /// an open socket were a working link: cut off, it becomes part of the
    /// ring it cannot serve, and is declared down again.
    SocketIsLink,
    /// A node declares members down whatever it hears: cut off from the
    /// majority, it declares the majority down, and two sides decide.
    NoQuorum,
    /// A node dials only its seeds, as if the member table named no one to
    /// link to: a member that lost its link to a peer other than a seed (a
    /// reset, a crash, a partition) is never linked to it again.
    DialSeedsOnly,
}

impl Mutation {
    /// Every mutation, in order.
    pub const ALL: [Mutation; 11] = [
        Mutation::NoFencing,
        Mutation::AckBeforeCommit,
        Mutation::DropHandoffBuffer,
        Mutation::RouteBeforeExpect,
        Mutation::ClaimOffRing,
        Mutation::StaleHeartbeats,
        Mutation::ActionRerun,
        Mutation::ReadFromMemory,
        Mutation::SocketIsLink,
        Mutation::NoQuorum,
        Mutation::DialSeedsOnly,
    ];

    /// The name `confab-sim --mutate` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::NoFencing => "no-fencing",
            Mutation::AckBeforeCommit => "ack-before-commit",
            Mutation::DropHandoffBuffer => "drop-handoff-buffer",
            Mutation::RouteBeforeExpect => "route-before-expect",
            Mutation::ClaimOffRing => "claim-off-ring",
            Mutation::StaleHeartbeats => "stale-heartbeats",
            Mutation::ActionRerun => "action-rerun",
            Mutation::ReadFromMemory => "read-from-memory",
            Mutation::SocketIsLink => "socket-is-link",
            Mutation::NoQuorum => "no-quorum",
            Mutation::DialSeedsOnly => "dial-seeds-only",
        }
    }

    /// The mutation of that name.
    pub fn from_name(name: &str) -> Option<Mutation> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[cfg(feature = "mutations")]
mod switch {
    use super::Mutation;
    use std::cell::Cell;

    thread_local! {
        static ACTIVE: Cell<Option<Mutation>> = const { Cell::new(None) };
    }

    /// Switches `mutation` on for this thread (`None`: the correct code).
    pub fn set(mutation: Option<Mutation>) {
        ACTIVE.with(|active| active.set(mutation));
    }

    /// Whether `mutation` is switched on for this thread.
    pub fn active(mutation: Mutation) -> bool {
        ACTIVE.with(|active| active.get() == Some(mutation))
    }
}

#[cfg(feature = "mutations")]
pub use switch::{active, set};

/// Whether `mutation` is switched on: never, without the `mutations` feature.
#[cfg(not(feature = "mutations"))]
#[inline(always)]
pub const fn active(_mutation: Mutation) -> bool {
    false
}

#[cfg(all(test, feature = "mutations"))]
mod tests {
    use super::*;

    #[test]
    fn a_mutation_is_on_only_for_the_thread_that_set_it() {
        set(Some(Mutation::NoFencing));
        assert!(active(Mutation::NoFencing));
        assert!(!active(Mutation::AckBeforeCommit));
        std::thread::spawn(|| assert!(!active(Mutation::NoFencing)))
            .join()
            .unwrap();
        set(None);
        assert!(!active(Mutation::NoFencing));
    }

    #[test]
    fn names_round_trip() {
        for m in Mutation::ALL {
            assert_eq!(Mutation::from_name(m.name()), Some(m));
        }
        assert_eq!(Mutation::from_name("no-such-bug"), None);
    }
}
