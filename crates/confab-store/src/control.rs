//! What operators act on, beside the sessions' logs: the dead-letter queue of
//! actions that failed past their retries (replayed by `confabctl dlq replay`),
//! and cluster-wide settings, changed only by compare-and-set on a revision so
//! that of two concurrent writers exactly one wins.
//!
//! Both durable stores hold them (SQLite and MySQL); [`crate::tiered::TieredStore`]
//! hands every request to its durable store, Redis holds none of it.

use crate::{StoreError, StoreFuture};
use confab_core::session::Slots;
use confab_core::{Seq, Uid};

/// Longest setting key, in bytes (MySQL's `settings.name` is `VARCHAR(128)`).
pub const SETTING_KEY_BYTES_MAX: usize = 128;

/// Largest setting body, in bytes: well under MySQL's `max_allowed_packet`
/// (16 MiB by default), ample for a configuration document.
pub const SETTING_BODY_BYTES_MAX: usize = 4 << 20;

/// Longest action name of a dead letter, in bytes (MySQL's
/// `dead_letters.kind` is `VARCHAR(64)`).
pub const ACTION_BYTES_MAX: usize = 64;

/// Largest action arguments of a dead letter, in bytes of JSON.
pub const ARGS_BYTES_MAX: usize = 1 << 20;

/// Longest reason kept with a dead letter, in bytes: a longer one is cut (at a
/// character boundary) rather than refused, so that a verbose error never
/// costs the entry.
pub const REASON_BYTES_MAX: usize = 4096;

/// An action that failed past its retries, waiting for `confabctl dlq replay`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// Assigned by the store when the entry is first queued; ignored on insert.
    pub id: u64,
    /// The session whose turn asked for the action.
    pub uid: Uid,
    /// The seq of the `action_requested` event: with `uid` (and `action`) the
    /// idempotency key, so that queuing the same failure twice keeps one entry.
    pub seq: Seq,
    /// The action's name: 1 to [`ACTION_BYTES_MAX`] bytes of printable ASCII,
    /// no spaces.
    pub action: String,
    /// The action's arguments, as the dialog filled them.
    pub args: Slots,
    /// Why the last attempt failed; cut to [`REASON_BYTES_MAX`] bytes.
    pub reason: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When the entry was first queued, in ms since the Unix epoch.
    pub created_ms: u64,
}

/// A cluster-wide setting, changed only by compare-and-set on its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// 1 for the first write, one more for each write after it.
    pub revision: u64,
    /// The setting's value, opaque to the store.
    pub body: String,
}

/// The dead-letter queue and the cluster's settings.
pub trait ControlStore: Send + Sync + 'static {
    /// Queues an entry; if (uid, seq, action) is already waiting, updates its
    /// reason and attempts instead. Returns the entry's id. Idempotent: calling
    /// it twice for the same key leaves one entry. A key whose entry was
    /// resolved waits again, under its old id.
    ///
    /// An action name or arguments over their limits are refused with
    /// [`StoreError::Invalid`].
    fn dead_letter<'a>(&'a self, entry: &'a DeadLetter) -> StoreFuture<'a, u64>;

    /// Waiting entries, oldest (lowest id) first, at most `limit`.
    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<DeadLetter>>;

    /// One entry by id, if it is waiting.
    fn dead_letter_by_id(&self, id: u64) -> StoreFuture<'_, Option<DeadLetter>>;

    /// Takes a waiting entry out of the queue (its action succeeded on replay);
    /// false if it was not waiting. The row is kept, marked resolved at `at_ms`
    /// (MySQL's column is `replayed_ms`).
    fn resolve_dead_letter(&self, id: u64, at_ms: u64) -> StoreFuture<'_, bool>;

    /// How many entries wait.
    fn dead_letter_depth(&self) -> StoreFuture<'_, u64>;

    /// A setting, `None` if never written.
    ///
    /// A key that is empty, longer than [`SETTING_KEY_BYTES_MAX`] bytes or not
    /// printable ASCII without spaces is refused with [`StoreError::Invalid`].
    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Setting>>;

    /// Writes `body` at revision `expected + 1` if the stored revision is
    /// `expected` (0: absent). Ok(true) if written, Ok(false) if another writer
    /// got there first.
    ///
    /// A bad key (see [`ControlStore::setting`]) or a body over
    /// [`SETTING_BODY_BYTES_MAX`] bytes is refused with [`StoreError::Invalid`].
    fn put_setting<'a>(
        &'a self,
        key: &'a str,
        expected: u64,
        body: &'a str,
    ) -> StoreFuture<'a, bool>;
}

/// A dead letter checked against the limits, as the stores write it.
pub(crate) struct DeadLetterRow<'a> {
    /// The arguments as JSON.
    pub(crate) args: String,
    /// The reason, cut to [`REASON_BYTES_MAX`].
    pub(crate) reason: &'a str,
}

impl<'a> DeadLetterRow<'a> {
    /// Checks `entry` against the limits.
    pub(crate) fn of(entry: &'a DeadLetter) -> Result<Self, StoreError> {
        check_name("action name", &entry.action, ACTION_BYTES_MAX)?;
        let args = serde_json::to_string(&entry.args).expect("slots always serialize");
        if args.len() > ARGS_BYTES_MAX {
            return Err(StoreError::Invalid(format!(
                "the arguments of action {} are {} bytes of json, at most {ARGS_BYTES_MAX} are allowed",
                entry.action,
                args.len()
            )));
        }
        let mut cut = entry.reason.len().min(REASON_BYTES_MAX);
        while !entry.reason.is_char_boundary(cut) {
            cut -= 1;
        }
        Ok(Self {
            args,
            reason: &entry.reason[..cut],
        })
    }
}

/// Decodes a dead letter's stored arguments.
pub(crate) fn decode_args(id: u64, json: &[u8]) -> Result<Slots, StoreError> {
    serde_json::from_slice(json).map_err(|e| {
        StoreError::Corrupt(format!("arguments of dead letter {id} do not decode: {e}"))
    })
}

/// Refuses a setting key the stores cannot hold as it is.
pub(crate) fn check_setting_key(key: &str) -> Result<(), StoreError> {
    check_name("setting key", key, SETTING_KEY_BYTES_MAX)
}

/// Refuses a write the stores cannot hold, or whose revision would overflow.
pub(crate) fn check_setting_write(key: &str, expected: u64, body: &str) -> Result<(), StoreError> {
    check_setting_key(key)?;
    if body.len() > SETTING_BODY_BYTES_MAX {
        return Err(StoreError::Invalid(format!(
            "setting {key} is {} bytes, at most {SETTING_BODY_BYTES_MAX} are allowed",
            body.len()
        )));
    }
    if expected == u64::MAX {
        return Err(StoreError::Invalid(format!(
            "setting {key} cannot go past revision {expected}"
        )));
    }
    Ok(())
}

/// 1 to `max` bytes of printable ASCII without spaces: stored the same way, and
/// compared byte for byte, in every store.
fn check_name(what: &str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::Invalid(format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(StoreError::Invalid(format!(
            "{what} is {} bytes, at most {max} are allowed: use a shorter one",
            value.len()
        )));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::Invalid(format!(
            "{what} {value:?} must be printable ascii without spaces"
        )));
    }
    Ok(())
}

/// Implements [`ControlStore`] for a type whose inherent methods do the work
/// (`insert_dead_letter`, `waiting_dead_letters`, `waiting_dead_letter`,
/// `mark_resolved`, `count_waiting`, `load_setting`, `cas_setting`), checking
/// the input first and counting every request in `confab_store_requests_total`.
macro_rules! control_with_request_metrics {
    ($store:ty, $tier:expr) => {
        impl $crate::control::ControlStore for $store {
            fn dead_letter<'a>(
                &'a self,
                entry: &'a $crate::control::DeadLetter,
            ) -> $crate::StoreFuture<'a, u64> {
                Box::pin(async move {
                    let inserted = async {
                        let row = $crate::control::DeadLetterRow::of(entry)?;
                        self.insert_dead_letter(entry, &row).await
                    }
                    .await;
                    $crate::counted($tier, "dead_letter", inserted, |_| true)
                })
            }

            fn dead_letters(
                &self,
                limit: usize,
            ) -> $crate::StoreFuture<'_, Vec<$crate::control::DeadLetter>> {
                Box::pin(async move {
                    let loaded = self.waiting_dead_letters(limit).await;
                    $crate::counted($tier, "dead_letters", loaded, |v| !v.is_empty())
                })
            }

            fn dead_letter_by_id(
                &self,
                id: u64,
            ) -> $crate::StoreFuture<'_, Option<$crate::control::DeadLetter>> {
                Box::pin(async move {
                    let loaded = self.waiting_dead_letter(id).await;
                    $crate::counted($tier, "dead_letter_by_id", loaded, Option::is_some)
                })
            }

            fn resolve_dead_letter(&self, id: u64, at_ms: u64) -> $crate::StoreFuture<'_, bool> {
                Box::pin(async move {
                    let resolved = self.mark_resolved(id, at_ms).await;
                    $crate::counted($tier, "resolve_dead_letter", resolved, |r| *r)
                })
            }

            fn dead_letter_depth(&self) -> $crate::StoreFuture<'_, u64> {
                Box::pin(async move {
                    let depth = self.count_waiting().await;
                    $crate::counted($tier, "dead_letter_depth", depth, |_| true)
                })
            }

            fn setting<'a>(
                &'a self,
                key: &'a str,
            ) -> $crate::StoreFuture<'a, Option<$crate::control::Setting>> {
                Box::pin(async move {
                    let loaded = async {
                        $crate::control::check_setting_key(key)?;
                        self.load_setting(key).await
                    }
                    .await;
                    $crate::counted($tier, "setting", loaded, Option::is_some)
                })
            }

            fn put_setting<'a>(
                &'a self,
                key: &'a str,
                expected: u64,
                body: &'a str,
            ) -> $crate::StoreFuture<'a, bool> {
                Box::pin(async move {
                    let written = async {
                        $crate::control::check_setting_write(key, expected, body)?;
                        self.cas_setting(key, expected, body).await
                    }
                    .await;
                    $crate::counted($tier, "put_setting", written, |w| *w)
                })
            }
        }
    };
}
pub(crate) use control_with_request_metrics;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, reason: &str) -> DeadLetter {
        DeadLetter {
            id: 0,
            uid: Uid::new("a").unwrap(),
            seq: Seq(1),
            action: action.into(),
            args: Slots::new(),
            reason: reason.into(),
            attempts: 1,
            created_ms: 0,
        }
    }

    #[test]
    fn names_are_checked_at_their_edges() {
        assert!(check_setting_key(&"k".repeat(SETTING_KEY_BYTES_MAX)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(SETTING_KEY_BYTES_MAX + 1),
            "a key".into(),
            "设置".into(),
        ] {
            let err = check_setting_key(&bad).unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{bad:?}: {err}");
        }
        assert!(DeadLetterRow::of(&entry(&"a".repeat(ACTION_BYTES_MAX), "")).is_ok());
        assert!(DeadLetterRow::of(&entry(&"a".repeat(ACTION_BYTES_MAX + 1), "")).is_err());
        assert!(check_setting_write("k", u64::MAX, "").is_err());
        assert!(check_setting_write("k", 0, &"x".repeat(SETTING_BODY_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reason = "码".repeat(REASON_BYTES_MAX); // 3 bytes each
        let entry = entry("ship", &reason);
        let row = DeadLetterRow::of(&entry).unwrap();
        assert_eq!(row.reason.len(), REASON_BYTES_MAX / 3 * 3);
        let short = self::entry("ship", "timeout");
        assert_eq!(DeadLetterRow::of(&short).unwrap().reason, "timeout");
    }
}
