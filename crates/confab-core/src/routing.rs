//! The router's decision for one turn: serve it here, send it to its owner, or
//! wait for a fresher ring. A pure function of the ring this node holds.
//!
//! - A turn routed by another node at an **older** epoch is routed again by this
//!   node's ring, never dropped.
//! - A turn routed at a **newer** epoch than this node knows means this node's
//!   ring is stale: it refreshes its membership, then routes again.
//! - A turn forwarded `MAX_HOPS` times means the nodes disagree about the ring
//!   (a change is spreading): the turn waits for a refresh instead of bouncing.

use crate::ids::{Epoch, NodeId, Uid};
use crate::membership::Status;
use crate::ring::Ring;

/// Forwards a turn may take before it waits for a fresher ring.
pub const MAX_HOPS: u8 = 3;

/// Where a turn goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns the session: serve it here.
    Serve,
    /// Send it to the owner, with the epoch it was routed at.
    Forward {
        /// The owner on this node's ring.
        to: NodeId,
        /// This node's epoch, carried with the turn.
        epoch: Epoch,
    },
    /// This node's ring is stale, empty, or disagrees with the sender's: refresh
    /// membership, then route again.
    Refresh,
}

/// Routes a turn for `uid` that arrived at `me`, from a client (`seen` =
/// `None`) or forwarded by another node at epoch `seen` after `hops` forwards.
pub fn route(ring: &Ring, me: &NodeId, uid: &Uid, seen: Option<Epoch>, hops: u8) -> Route {
    if seen.is_some_and(|epoch| epoch > ring.epoch()) {
        return Route::Refresh;
    }
    match ring.owner(uid) {
        None => Route::Refresh,
        Some(owner) if owner == me => Route::Serve,
        Some(_) if hops >= MAX_HOPS => Route::Refresh,
        Some(owner) => Route::Forward {
            to: owner.clone(),
            epoch: ring.epoch(),
        },
    }
}

/// Whether a turn forwarded to its owner is failed at once instead of
/// waiting for the owner's answer: the owner was declared down (or left the
/// table), this node is not `linked` to it (no link, or the owner not heard
/// within the quorum window: `Membership::hears`), or this node is no longer
/// `serving` (cut off from the majority: a silent partition leaves its links
/// open, and no one it hears can declare the owner down, so its answer may
/// never come). The turn may have been recorded there: the client retries
/// with the same id, and the retry goes where the ring sends it next.
pub fn forward_lost(owner_status: Option<Status>, linked: bool, serving: bool) -> bool {
    !serving || !linked || matches!(owner_status, None | Some(Status::Down))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn a_forwarded_turn_is_given_up_when_its_owner_is_down_gone_or_unlinked_or_this_node_cut_off() {
        assert!(!forward_lost(Some(Status::Up), true, true));
        assert!(!forward_lost(Some(Status::Draining), true, true));
        assert!(forward_lost(Some(Status::Down), true, true));
        assert!(forward_lost(None, true, true));
        assert!(forward_lost(Some(Status::Up), false, true));
        assert!(
            forward_lost(Some(Status::Up), true, false),
            "cut off from the majority"
        );
    }

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    /// A uid the ring gives to `owner`.
    fn uid_owned_by(ring: &Ring, owner: &str) -> Uid {
        (0..)
            .map(|i| uid(&format!("user-{i}")))
            .find(|u| ring.owner(u) == Some(&id(owner)))
            .unwrap()
    }

    fn ring(epoch: u64, nodes: &[&str]) -> Ring {
        Ring::new(Epoch(epoch), nodes.iter().map(|n| id(n)))
    }

    #[test]
    fn the_owner_serves_and_any_other_node_forwards_to_it() {
        let r = ring(4, &["a", "b", "c"]);
        let u = uid_owned_by(&r, "b");
        assert_eq!(route(&r, &id("b"), &u, None, 0), Route::Serve);
        for from in ["a", "c"] {
            assert_eq!(
                route(&r, &id(from), &u, None, 0),
                Route::Forward {
                    to: id("b"),
                    epoch: Epoch(4)
                }
            );
        }
    }

    #[test]
    fn a_turn_routed_at_an_older_epoch_is_routed_again_not_dropped() {
        // `a` forwarded at epoch 3 to `c`; at epoch 4 the session is `b`'s.
        let r = ring(4, &["a", "b", "c"]);
        let u = uid_owned_by(&r, "b");
        assert_eq!(
            route(&r, &id("c"), &u, Some(Epoch(3)), 1),
            Route::Forward {
                to: id("b"),
                epoch: Epoch(4)
            }
        );
        assert_eq!(route(&r, &id("b"), &u, Some(Epoch(3)), 1), Route::Serve);
    }

    #[test]
    fn a_turn_routed_at_a_newer_epoch_waits_for_a_fresher_ring() {
        let r = ring(4, &["a", "b"]);
        let u = uid_owned_by(&r, "a");
        assert_eq!(route(&r, &id("a"), &u, Some(Epoch(5)), 1), Route::Refresh);
    }

    #[test]
    fn bouncing_between_disagreeing_rings_stops_after_max_hops() {
        let r = ring(4, &["a", "b"]);
        let u = uid_owned_by(&r, "b");
        assert_eq!(
            route(&r, &id("a"), &u, Some(Epoch(4)), MAX_HOPS),
            Route::Refresh
        );
        assert_eq!(
            route(&r, &id("b"), &u, Some(Epoch(4)), MAX_HOPS),
            Route::Serve,
            "the owner serves whatever the hops"
        );
    }

    #[test]
    fn an_empty_ring_routes_nowhere() {
        let r = ring(0, &[]);
        assert_eq!(route(&r, &id("a"), &uid("x"), None, 0), Route::Refresh);
    }
}
