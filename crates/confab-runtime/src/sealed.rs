//! The store as sessions see it: plaintext in, ciphertext at rest.
//!
//! [`SealedStore`] sits in front of the whole store (Redis included): every
//! event is sealed before `append` ([`confab_core::crypto::seal_event`]: user
//! texts and sensitive slot values), and opened after `events_after` and
//! `load`; a dead letter's sensitive arguments and its reason are sealed and
//! opened the same way. Snapshots pass through: they are sealed whole by the session
//! ([`confab_core::session::Snapshot::seal`]). Settings and membership hold no
//! user data.

use confab_core::Uid;
use confab_core::crypto::{self, NONCE_BYTES, Sealing, Sensitive, SharedRing};
use confab_core::session::{RecordedEvent, Slots};
use confab_store::control::{DeadLetter, Setting};
use confab_store::{
    ControlStore, EventStore, SessionLog, SnapshotStore, Store, StoreError, StoreFuture,
    StoredSnapshot,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The slots sealed at rest: the fixed sensitive names and those the flows mark.
pub struct SensitiveSlots {
    marked: Arc<BTreeSet<String>>,
}

impl SensitiveSlots {
    /// The fixed names and `marked`.
    pub fn new(marked: Arc<BTreeSet<String>>) -> Self {
        Self { marked }
    }
}

impl Sensitive for SensitiveSlots {
    fn is_sensitive(&self, slot: &str) -> bool {
        confab_dialog::SENSITIVE_SLOTS.contains(&slot) || self.marked.contains(slot)
    }
}

/// Where the sensitive slot names come from now (the flows reload).
pub type SensitiveSource = Arc<dyn Fn() -> SensitiveSlots + Send + Sync>;

/// Bytes of a dead letter's reason kept before sealing, so that the sealed form
/// (base64, a nonce, a tag, a prefix) stays within the store's
/// [`confab_store::control::REASON_BYTES_MAX`].
const REASON_PLAINTEXT_MAX: usize = confab_store::control::REASON_BYTES_MAX * 3 / 4 - 64;

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// 96 random bits from the operating system.
pub fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).expect("the operating system gives randomness");
    nonce
}

/// Nonces fetched from the operating system at once by [`Nonces`].
const NONCES_PER_FILL: usize = 64;

/// Random nonces for one batch of events, fetched from the operating system
/// [`NONCES_PER_FILL`] at a time: the same 96 random bits per nonce as
/// [`random_nonce`], one `getrandom` call for up to 64 of them instead of one
/// each (a turn seals two or three values, a commit batch a hundred or more).
struct Nonces {
    bytes: [u8; NONCE_BYTES * NONCES_PER_FILL],
    next: usize,
}

impl Nonces {
    fn new() -> Self {
        Self {
            bytes: [0; NONCE_BYTES * NONCES_PER_FILL],
            next: NONCES_PER_FILL,
        }
    }

    fn next_nonce(&mut self) -> [u8; NONCE_BYTES] {
        if self.next == NONCES_PER_FILL {
            getrandom::fill(&mut self.bytes).expect("the operating system gives randomness");
            self.next = 0;
        }
        let at = self.next * NONCE_BYTES;
        self.next += 1;
        // Each nonce is used once: its bytes are cleared as they are handed out.
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&self.bytes[at..at + NONCE_BYTES]);
        self.bytes[at..at + NONCE_BYTES].fill(0);
        nonce
    }
}

/// Seals and opens what passes through to `inner`.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    ring: SharedRing,
    sensitive: SensitiveSource,
}

impl SealedStore {
    /// Wraps a store.
    pub fn new(inner: Arc<dyn Store>, ring: SharedRing, sensitive: SensitiveSource) -> Self {
        Self {
            inner,
            ring,
            sensitive,
        }
    }

    fn seal_events(&self, events: &[RecordedEvent]) -> Result<Vec<RecordedEvent>, StoreError> {
        let ring = self.ring.get();
        let sensitive = (self.sensitive)();
        let mut pool = Nonces::new();
        let mut nonces = || pool.next_nonce();
        events
            .iter()
            .map(|recorded| {
                let sealing = Sealing {
                    ring: &ring,
                    uid: &recorded.uid,
                    sensitive: &sensitive,
                };
                let event = crypto::seal_event(&sealing, &recorded.event, &mut nonces)
                    .map_err(|e| StoreError::Invalid(format!("sealing an event: {e}")))?;
                // Field by field: `..recorded.clone()` copied the plaintext
                // event too, only to drop it.
                Ok(RecordedEvent {
                    uid: recorded.uid.clone(),
                    seq: recorded.seq,
                    at_ms: recorded.at_ms,
                    epoch: recorded.epoch,
                    event,
                })
            })
            .collect()
    }

    fn open_events(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>, StoreError> {
        let ring = self.ring.get();
        let sensitive = (self.sensitive)();
        events
            .into_iter()
            .map(|recorded| {
                let sealing = Sealing {
                    ring: &ring,
                    uid: &recorded.uid,
                    sensitive: &sensitive,
                };
                let event = crypto::open_event(&sealing, &recorded.event).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "event {} of {} does not open: {e}",
                        recorded.seq.0, recorded.uid
                    ))
                })?;
                Ok(RecordedEvent { event, ..recorded })
            })
            .collect()
    }

    fn seal_args(&self, uid: &Uid, args: &Slots) -> Result<Slots, StoreError> {
        let ring = self.ring.get();
        let sensitive = (self.sensitive)();
        args.iter()
            .map(|(name, value)| {
                let value = if sensitive.is_sensitive(name) || crypto::is_sealed(value) {
                    ring.seal(uid, name, value, random_nonce())
                        .map_err(|e| StoreError::Invalid(format!("sealing {name}: {e}")))?
                } else {
                    value.clone()
                };
                Ok((name.clone(), value))
            })
            .collect()
    }

    fn open_letter(&self, mut letter: DeadLetter) -> Result<DeadLetter, StoreError> {
        let ring = self.ring.get();
        if crypto::is_sealed(&letter.reason) {
            letter.reason = ring
                .open(&letter.uid, crypto::REASON_FIELD, &letter.reason)
                .map_err(|e| {
                    StoreError::Corrupt(format!("dead letter {} does not open: {e}", letter.id))
                })?;
        }
        for (name, value) in letter.args.iter_mut() {
            if crypto::is_sealed(value) {
                *value = ring.open(&letter.uid, name, value).map_err(|e| {
                    StoreError::Corrupt(format!("dead letter {} does not open: {e}", letter.id))
                })?;
            }
        }
        Ok(letter)
    }
}

impl EventStore for SealedStore {
    fn commit_lane(&self, uid: &Uid) -> usize {
        self.inner.commit_lane(uid)
    }

    fn commit_writers(&self) -> usize {
        self.inner.commit_writers()
    }

    fn append<'a>(&'a self, events: &'a [RecordedEvent]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let sealed = self.seal_events(events)?;
            self.inner.append(&sealed).await
        })
    }

    fn claim<'a>(&'a self, uid: &'a Uid, epoch: confab_core::Epoch) -> StoreFuture<'a, ()> {
        self.inner.claim(uid, epoch)
    }

    fn events_after<'a>(
        &'a self,
        uid: &'a Uid,
        after: confab_core::Seq,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        Box::pin(async move {
            let events = self.inner.events_after(uid, after, limit).await?;
            self.open_events(events)
        })
    }
}

impl SnapshotStore for SealedStore {
    fn read_snapshot<'a>(&'a self, uid: &'a Uid) -> StoreFuture<'a, Option<StoredSnapshot>> {
        self.inner.read_snapshot(uid)
    }

    fn write_snapshots<'a>(&'a self, snapshots: &'a [StoredSnapshot]) -> StoreFuture<'a, ()> {
        self.inner.write_snapshots(snapshots)
    }
}

impl ControlStore for SealedStore {
    fn dead_letter<'a>(&'a self, entry: &'a DeadLetter) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let reason = cut(&entry.reason, REASON_PLAINTEXT_MAX);
            let reason = self
                .ring
                .get()
                .seal(&entry.uid, crypto::REASON_FIELD, reason, random_nonce())
                .map_err(|e| StoreError::Invalid(format!("sealing a reason: {e}")))?;
            let sealed = DeadLetter {
                args: self.seal_args(&entry.uid, &entry.args)?,
                reason,
                ..entry.clone()
            };
            self.inner.dead_letter(&sealed).await
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<'_, Vec<DeadLetter>> {
        Box::pin(async move {
            let letters = self.inner.dead_letters(limit).await?;
            letters
                .into_iter()
                .map(|letter| self.open_letter(letter))
                .collect()
        })
    }

    fn dead_letter_by_id(&self, id: u64) -> StoreFuture<'_, Option<DeadLetter>> {
        Box::pin(async move {
            match self.inner.dead_letter_by_id(id).await? {
                Some(letter) => self.open_letter(letter).map(Some),
                None => Ok(None),
            }
        })
    }

    fn resolve_dead_letter(&self, id: u64, at_ms: u64) -> StoreFuture<'_, bool> {
        self.inner.resolve_dead_letter(id, at_ms)
    }

    fn dead_letter_depth(&self) -> StoreFuture<'_, u64> {
        self.inner.dead_letter_depth()
    }

    fn setting<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Setting>> {
        self.inner.setting(key)
    }

    fn put_setting<'a>(
        &'a self,
        key: &'a str,
        expected: u64,
        body: &'a str,
    ) -> StoreFuture<'a, bool> {
        self.inner.put_setting(key, expected, body)
    }
}

impl confab_store::key_usage::KeyUsageStore for SealedStore {
    fn snapshot_key_versions(
        &self,
    ) -> StoreFuture<'_, std::collections::BTreeMap<crypto::KeyVersion, u64>> {
        self.inner.snapshot_key_versions()
    }

    fn events_sealed_under(&self, version: crypto::KeyVersion) -> StoreFuture<'_, u64> {
        self.inner.events_sealed_under(version)
    }

    fn snapshots_not_under<'a>(
        &'a self,
        version: crypto::KeyVersion,
        after: Option<&'a Uid>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Uid>> {
        self.inner.snapshots_not_under(version, after, limit)
    }
}

impl confab_store::audit::AuditStore for SealedStore {
    fn audit<'a>(&'a self, entry: &'a confab_store::audit::AuditEntry) -> StoreFuture<'a, u64> {
        self.inner.audit(entry)
    }

    fn audit_entries(&self, limit: usize) -> StoreFuture<'_, Vec<confab_store::audit::AuditEntry>> {
        self.inner.audit_entries(limit)
    }
}

impl Store for SealedStore {
    fn tier(&self) -> &'static str {
        self.inner.tier()
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }

    fn load<'a>(&'a self, uid: &'a Uid, limit: usize) -> StoreFuture<'a, SessionLog> {
        Box::pin(async move {
            let log = self.inner.load(uid, limit).await?;
            Ok(SessionLog {
                snapshot: log.snapshot,
                events: self.open_events(log.events)?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_hands_out_distinct_random_nonces_across_its_refills() {
        let mut pool = Nonces::new();
        let drawn: Vec<[u8; NONCE_BYTES]> = (0..NONCES_PER_FILL * 3 + 5)
            .map(|_| pool.next_nonce())
            .collect();
        let distinct: BTreeSet<_> = drawn.iter().collect();
        assert_eq!(distinct.len(), drawn.len(), "a nonce came out twice");
        assert!(
            !drawn.contains(&[0; NONCE_BYTES]),
            "an unfilled nonce came out"
        );
    }
}
