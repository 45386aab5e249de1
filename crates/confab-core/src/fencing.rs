//! The store's fence: the epoch a session is claimed at, which refuses the
//! writes of any older owner. Every store (SQLite, MySQL, Redis, the
//! simulator's) takes these two decisions the same way.

use crate::ids::Epoch;
use crate::mutation::{self, Mutation};

/// What a claim at some epoch does to a fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The claim is newer: the fence rises to it.
    Raise,
    /// The fence already holds this epoch: nothing to change.
    Held,
    /// A newer epoch holds the fence: the claim is refused.
    Refused,
}

/// A claim at `epoch` against the fence `current`.
pub fn claim(current: Epoch, epoch: Epoch) -> Claim {
    if epoch > current {
        Claim::Raise
    } else if epoch == current || mutation::active(Mutation::NoFencing) {
        Claim::Held
    } else {
        Claim::Refused
    }
}

/// Whether the fence `current` admits a write made at `epoch`.
pub fn admits_write(current: Epoch, epoch: Epoch) -> bool {
    epoch >= current || mutation::active(Mutation::NoFencing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_admits_its_epoch_and_newer_ones_only() {
        assert!(admits_write(Epoch(3), Epoch(3)));
        assert!(admits_write(Epoch(3), Epoch(4)));
        assert!(!admits_write(Epoch(3), Epoch(2)));
        assert_eq!(claim(Epoch(3), Epoch(4)), Claim::Raise);
        assert_eq!(claim(Epoch(3), Epoch(3)), Claim::Held);
        assert_eq!(claim(Epoch(3), Epoch(2)), Claim::Refused);
    }
}
