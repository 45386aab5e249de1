//! The consistent hash ring: 32 virtual nodes per member over the `hashring` crate.
//!
//! Placement must be identical in every process, on every platform and in every
//! version, or sessions would silently move. So nothing here relies on std's
//! `Hash` of platform-sized integers: a virtual node hashes as the bytes
//! `node id | 0x00 | vnode index (u32, big-endian)` and a uid as its own bytes,
//! both through `hashring`'s SipHash-2-4 with keys (0, 0). The golden test pins
//! the result.

use crate::ids::{Epoch, NodeId, Uid};
use hashring::HashRing;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

/// Virtual nodes per member.
pub const VNODES_PER_NODE: u32 = 32;

/// One virtual node: a member and an index below [`VNODES_PER_NODE`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VNode {
    /// The member that owns this point of the ring.
    pub node: NodeId,
    /// Its index among the member's virtual nodes.
    pub index: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.node.as_str().as_bytes());
        state.write(&[0x00]);
        state.write(&self.index.to_be_bytes());
    }
}

/// A uid as a ring key: its bytes and nothing else.
struct RingKey<'a>(&'a Uid);

impl Hash for RingKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_str().as_bytes());
    }
}

/// The ring at one epoch.
pub struct Ring {
    epoch: Epoch,
    members: BTreeSet<NodeId>,
    ring: HashRing<VNode>,
    /// The virtual nodes' positions and members, in ring order: owners by
    /// position ([`Ring::owner_at`]), for a uid whose position is known.
    points: Vec<(u64, NodeId)>,
}

impl Ring {
    /// Builds the ring of these members at this epoch.
    pub fn new(epoch: Epoch, members: impl IntoIterator<Item = NodeId>) -> Self {
        let members: BTreeSet<NodeId> = members.into_iter().collect();
        let mut ring = HashRing::new();
        // Sorted input and one batch: the ring's order does not depend on call order.
        ring.batch_add(
            members
                .iter()
                .flat_map(|node| {
                    (0..VNODES_PER_NODE).map(|index| VNode {
                        node: node.clone(),
                        index,
                    })
                })
                .collect(),
        );
        let mut ring = Self {
            epoch,
            members,
            ring,
            points: Vec::new(),
        };
        ring.points = ring
            .vnodes()
            .into_iter()
            .map(|(at, vnode)| (at, vnode.node))
            .collect();
        ring
    }

    /// The epoch this ring was built for.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The members, sorted.
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.members.iter()
    }

    /// The member that owns this uid, or `None` on an empty ring.
    pub fn owner(&self, uid: &Uid) -> Option<&NodeId> {
        self.vnode_of(uid).map(|vnode| &vnode.node)
    }

    /// The position of `uid` on every ring: the same hash `owner` reads.
    /// A node that holds thousands of sessions keeps each one's position, so
    /// that a ring change asks [`Ring::owner_at`] and hashes no uid again.
    pub fn position_of(uid: &Uid) -> u64 {
        use std::hash::BuildHasher;
        hashring::DefaultHashBuilder.hash_one(RingKey(uid))
    }

    /// The member that owns the uid at `position` ([`Ring::position_of`]):
    /// the first virtual node at or after it, round the ring; `None` on an
    /// empty ring. The same answer as [`Ring::owner`] (`hashring`'s lookup).
    pub fn owner_at(&self, position: u64) -> Option<&NodeId> {
        let n = self
            .points
            .binary_search_by(|(at, _)| at.cmp(&position))
            .unwrap_or_else(|n| n);
        self.points
            .get(n)
            .or_else(|| self.points.first())
            .map(|(_, node)| node)
    }

    /// The virtual node this uid falls on, or `None` on an empty ring.
    pub fn vnode_of(&self, uid: &Uid) -> Option<&VNode> {
        self.ring.get(&RingKey(uid))
    }

    /// The ring position (64-bit hash) of a virtual node.
    pub fn position(vnode: &VNode) -> u64 {
        use std::hash::BuildHasher;
        hashring::DefaultHashBuilder.hash_one(vnode)
    }

    /// Every virtual node with its position, in ring order.
    pub fn vnodes(&self) -> Vec<(u64, VNode)> {
        let mut all: Vec<(u64, VNode)> = self
            .members
            .iter()
            .flat_map(|node| {
                (0..VNODES_PER_NODE).map(|index| VNode {
                    node: node.clone(),
                    index,
                })
            })
            .map(|vnode| (Self::position(&vnode), vnode))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn three() -> Ring {
        Ring::new(Epoch(1), [node("node-1"), node("node-2"), node("node-3")])
    }

    #[test]
    fn vnode_positions_are_pinned() {
        let vnode = VNode {
            node: node("node-1"),
            index: 0,
        };
        assert_eq!(Ring::position(&vnode), GOLDEN_VNODE_POSITION);
    }

    /// Owners of fixed uids on a fixed three-node ring. If this test fails, a
    /// dependency or a code change moved sessions: that is a breaking change.
    #[test]
    fn owners_are_pinned() {
        let ring = three();
        let owners: Vec<String> = GOLDEN_OWNERS
            .iter()
            .map(|(uid, _)| ring.owner(&Uid::new(*uid).unwrap()).unwrap().to_string())
            .collect();
        let expected: Vec<String> = GOLDEN_OWNERS.iter().map(|(_, o)| o.to_string()).collect();
        assert_eq!(owners, expected);
    }

    #[test]
    fn owners_by_position_are_the_rings_owners() {
        let rings = [
            Ring::new(Epoch(1), []),
            Ring::new(Epoch(1), [node("node-1")]),
            three(),
            Ring::new(
                Epoch(2),
                ["node-1", "node-2", "node-3", "node-4", "n5"].map(node),
            ),
        ];
        for ring in &rings {
            for i in 0..5_000 {
                let uid = Uid::new(format!("user-{i}")).unwrap();
                assert_eq!(ring.owner_at(Ring::position_of(&uid)), ring.owner(&uid));
            }
            // The ends of the ring: before the first point and after the last.
            for position in [0, u64::MAX] {
                let expected = ring.points.first().map(|(_, n)| n);
                assert_eq!(ring.owner_at(position), expected, "{position}");
            }
        }
    }

    #[test]
    fn member_order_does_not_matter() {
        let a = three();
        let b = Ring::new(Epoch(1), [node("node-3"), node("node-1"), node("node-2")]);
        for i in 0..500 {
            let uid = Uid::new(format!("user-{i}")).unwrap();
            assert_eq!(a.owner(&uid), b.owner(&uid));
        }
    }

    #[test]
    fn every_member_gets_32_vnodes_and_a_share_of_uids() {
        let ring = three();
        assert_eq!(ring.vnodes().len(), 96);
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..3000 {
            let uid = Uid::new(format!("user-{i}")).unwrap();
            *counts.entry(ring.owner(&uid).unwrap().clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n > 500), "{counts:?}");
    }

    #[test]
    fn removing_a_member_moves_only_its_uids() {
        let before = three();
        let after = Ring::new(Epoch(2), [node("node-1"), node("node-2")]);
        for i in 0..1000 {
            let uid = Uid::new(format!("user-{i}")).unwrap();
            let old = before.owner(&uid).unwrap();
            if old.as_str() != "node-3" {
                assert_eq!(after.owner(&uid), Some(old));
            }
        }
    }

    #[test]
    fn an_empty_ring_has_no_owner() {
        let ring = Ring::new(Epoch(0), []);
        assert_eq!(ring.owner(&Uid::new("a").unwrap()), None);
    }

    const GOLDEN_VNODE_POSITION: u64 = 6904515638184370949;
    const GOLDEN_OWNERS: &[(&str, &str)] = &[
        ("alice", "node-1"),
        ("bob", "node-3"),
        ("carol", "node-3"),
        ("dave", "node-2"),
        ("eve", "node-2"),
        ("frank", "node-1"),
        ("grace", "node-3"),
        ("heidi", "node-3"),
        ("ivan", "node-2"),
        ("judy", "node-2"),
        ("u-0001", "node-1"),
        ("u-0002", "node-2"),
        ("wx:oAbC123", "node-2"),
        ("18612345678", "node-2"),
    ];
}
