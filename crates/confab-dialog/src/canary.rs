//! Which policy version serves a uid: the stable one, or the canary for the
//! uids whose **tail** is in the canary's set.
//!
//! A uid's tail is a digit, 0 to 9:
//! - a uid of decimal digits only (`10086`) has its last digit (`6`);
//! - any other uid has the last decimal digit of the IEEE CRC-32 of its bytes
//!   (`crc32("alice") = 663665735`, tail `5`). That is what MySQL's
//!   `CRC32(uid) % 10` gives, so ops can count a split in SQL.
//!
//! The tail never changes for a uid, so a user stays on one side of a split
//! across reconnects, nodes and restarts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A uid's tail, 0 to 9.
pub fn uid_tail(uid: &str) -> u8 {
    let last_digit = uid.bytes().last().filter(u8::is_ascii_digit);
    match last_digit {
        Some(d) if uid.bytes().all(|b| b.is_ascii_digit()) => d - b'0',
        _ => u8::try_from(crc32fast::hash(uid.as_bytes()) % 10).unwrap_or(0),
    }
}

/// The split in force: the stable version, and a canary on some tails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Every uid not on the canary.
    pub stable: String,
    /// The canary version, if any.
    pub canary: Option<String>,
    /// The tails sent to the canary.
    pub tails: BTreeSet<u8>,
}

/// Why a split was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// The version is not loaded.
    #[error("policy version {0:?} is not loaded; loaded: {1}")]
    UnknownVersion(String, String),
    /// A tail outside 0 to 9.
    #[error("uid tail {0} is not a digit 0 to 9")]
    BadTail(u8),
    /// No tails for a canary.
    #[error("a canary needs at least one uid tail (--tails 0,1)")]
    NoTails,
    /// The canary named is the stable version: nobody would move.
    #[error(
        "policy version {0:?} is the stable version already: a canary is another version (see `confabctl policy`)"
    )]
    CanaryIsStable(String),
    /// A promotion with no canary set.
    #[error(
        "there is no canary to promote: set one first (`confabctl canary set VERSION --tails 0,1`)"
    )]
    NoCanary,
}

impl Rollout {
    /// Everyone on `stable`.
    pub fn stable(version: impl Into<String>) -> Self {
        Self {
            stable: version.into(),
            canary: None,
            tails: BTreeSet::new(),
        }
    }

    /// The version that serves `uid`.
    pub fn version_for(&self, uid: &str) -> &str {
        match &self.canary {
            Some(canary) if self.tails.contains(&uid_tail(uid)) => canary,
            _ => &self.stable,
        }
    }

    /// A canary of `version` on `tails`, checked against the loaded versions.
    pub fn with_canary<'a>(
        &self,
        version: &str,
        tails: &[u8],
        loaded: impl Iterator<Item = &'a String> + Clone,
    ) -> Result<Self, RolloutError> {
        check_loaded(version, loaded)?;
        if let Some(bad) = tails.iter().find(|t| **t > 9) {
            return Err(RolloutError::BadTail(*bad));
        }
        if tails.is_empty() {
            return Err(RolloutError::NoTails);
        }
        if version == self.stable {
            return Err(RolloutError::CanaryIsStable(version.to_owned()));
        }
        Ok(Self {
            stable: self.stable.clone(),
            canary: Some(version.to_owned()),
            tails: tails.iter().copied().collect(),
        })
    }

    /// Every user back on stable.
    pub fn rolled_back(&self) -> Self {
        Self::stable(self.stable.clone())
    }

    /// The canary made stable for everyone; `None` if there is no canary.
    pub fn promoted(&self) -> Option<Self> {
        self.canary.as_ref().map(|c| Self::stable(c.clone()))
    }

    /// Percent of tails on the canary.
    pub fn canary_percent(&self) -> u8 {
        if self.canary.is_some() {
            u8::try_from(self.tails.len() * 10).unwrap_or(100)
        } else {
            0
        }
    }
}

/// Refuses a version that is not loaded.
pub fn check_loaded<'a>(
    version: &str,
    mut loaded: impl Iterator<Item = &'a String> + Clone,
) -> Result<(), RolloutError> {
    if loaded.clone().any(|v| v == version) {
        return Ok(());
    }
    let names: Vec<&str> = loaded.by_ref().map(String::as_str).collect();
    Err(RolloutError::UnknownVersion(
        version.to_owned(),
        names.join(", "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_uids_use_their_last_digit_and_others_a_pinned_crc() {
        assert_eq!(uid_tail("10086"), 6);
        assert_eq!(uid_tail("7"), 7);
        // Pinned: crc32("alice") = 663665735, as MySQL's CRC32('alice').
        assert_eq!(crc32fast::hash(b"alice"), 663_665_735);
        assert_eq!(uid_tail("alice"), 5);
        assert_eq!(
            uid_tail("user-42"),
            u8::try_from(crc32fast::hash(b"user-42") % 10).unwrap()
        );
    }

    #[test]
    fn a_canary_takes_only_its_tails_and_rollback_returns_everyone() {
        let loaded = ["v1".to_owned(), "v2".to_owned()];
        let rollout = Rollout::stable("v1")
            .with_canary("v2", &[0, 1], loaded.iter())
            .unwrap();
        assert_eq!(rollout.version_for("10080"), "v2");
        assert_eq!(rollout.version_for("10081"), "v2");
        assert_eq!(rollout.version_for("10082"), "v1");
        assert_eq!(rollout.canary_percent(), 20);
        let back = rollout.rolled_back();
        assert_eq!(back.version_for("10080"), "v1");
        assert_eq!(rollout.promoted().unwrap().version_for("10082"), "v2");
    }

    #[test]
    fn bad_splits_are_refused_with_what_to_do() {
        let loaded = ["v1".to_owned()];
        let stable = Rollout::stable("v1");
        let unknown = stable.with_canary("v9", &[0], loaded.iter()).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "policy version \"v9\" is not loaded; loaded: v1"
        );
        assert_eq!(
            stable.with_canary("v1", &[10], loaded.iter()),
            Err(RolloutError::BadTail(10))
        );
        assert_eq!(
            stable.with_canary("v1", &[], loaded.iter()),
            Err(RolloutError::NoTails)
        );
        assert_eq!(
            stable.with_canary("v1", &[0, 1], loaded.iter()),
            Err(RolloutError::CanaryIsStable("v1".into()))
        );
        assert_eq!(stable.promoted(), None);
    }

    proptest::proptest! {
        /// Every uid lands on exactly one side, and the canary gets the uids of
        /// its tails and no others.
        #[test]
        fn the_split_follows_the_tail(uid in "[ -~]{1,40}", tails in proptest::collection::btree_set(0u8..10, 1..10)) {
            let loaded = ["v1".to_owned(), "v2".to_owned()];
            let tails: Vec<u8> = tails.into_iter().collect();
            let rollout = Rollout::stable("v1").with_canary("v2", &tails, loaded.iter()).unwrap();
            let on_canary = rollout.version_for(&uid) == "v2";
            proptest::prop_assert_eq!(on_canary, tails.contains(&uid_tail(&uid)));
        }
    }
}
