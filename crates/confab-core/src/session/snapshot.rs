//! The snapshot codec: a versioned, HMAC-SHA256-signed encoding of a session.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic  "CFSN"           4 bytes
//! format version          2 bytes (currently 1)
//! body                    the snapshot {uid, seq, at_ms, epoch, state}, see below
//! mac                     32 bytes: HMAC-SHA256(key, magic | version | body)
//! ```
//!
//! The MAC is checked before anything else is trusted, so any flipped byte, a
//! truncation or a wrong key gives [`SnapshotError::ChecksumMismatch`].
//!
//! Format 2, what nodes write, encrypts the body under a version of the data-key
//! ring ([`crate::crypto`]) and signs with that version's HMAC key, so the
//! signing key rotates with the ring:
//!
//! ```text
//! magic  "CFSN"           4 bytes
//! format version          2 bytes (2)
//! key version             4 bytes
//! nonce                   12 bytes
//! body                    AES-256-GCM(the snapshot's body), associated data:
//!                         the 10 header bytes and the uid
//! mac                     32 bytes: HMAC-SHA256(version's mac key, all of the above)
//! ```
//!
//! The body, in both formats, is the byte 0x01 and the snapshot in postcard
//! (a compact binary encoding: varints, length-prefixed strings, fields in
//! order). Bodies written before it are JSON, which starts with `{`, and are
//! still read: the first byte tells them apart, so no format number changed and
//! the key-usage scans, which read the 10 header bytes, see the same headers. A
//! node older than this one refuses a binary body as malformed and rebuilds the
//! session from its events, as it does for any snapshot it cannot read.
//!
//! Format 1 (a plaintext body signed with `store.snapshot_hmac_key`) is still
//! read, so that snapshots written before the ring open; the re-encryption job
//! rewrites them in format 2.

use super::SessionState;
use crate::crypto::{CryptoError, DataKey, KeyRing, KeyVersion, NONCE_BYTES};
use crate::ids::{Epoch, Seq, Uid};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"CFSN";
/// Bytes of the signature that ends a snapshot (HMAC-SHA256).
pub const SNAPSHOT_MAC_BYTES: usize = 32;
const HEADER_BYTES: usize = 6;

/// The plaintext format, still read.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;

/// The encrypted format, written under the data-key ring.
pub const SNAPSHOT_SEALED_FORMAT_VERSION: u16 = 2;

/// The first byte of a body in postcard (a compact binary encoding, positional:
/// every field is written); a body in JSON, as written before, starts with `{`.
const BINARY_BODY: u8 = 1;

/// Bytes of format 2's header: magic, format version, key version.
const SEALED_HEADER_BYTES: usize = 10;

/// Shortest HMAC key accepted, in bytes.
pub const SNAPSHOT_KEY_BYTES_MIN: usize = 16;

/// The key that signs snapshots: the HMAC keyed once (its inner and outer
/// pads already hashed, two SHA-256 blocks a signature would otherwise
/// repeat).
#[derive(Clone)]
pub struct SnapshotKey(Hmac<Sha256>);

impl SnapshotKey {
    /// Wraps a key; it must hold at least 16 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SnapshotError> {
        let bytes = bytes.into();
        if bytes.len() < SNAPSHOT_KEY_BYTES_MIN {
            return Err(SnapshotError::KeyTooShort {
                len: bytes.len(),
                min: SNAPSHOT_KEY_BYTES_MIN,
            });
        }
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mac = Hmac::<Sha256>::new_from_slice(&bytes).expect("hmac accepts any key length");
        Ok(Self(mac))
    }

    pub(super) fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey(..)")
    }
}

/// Why a snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The key is too short to be a key.
    #[error("snapshot key is {len} bytes, at least {min} are needed")]
    KeyTooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Fewer bytes than a header and a MAC.
    #[error("snapshot is truncated ({len} bytes)")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The MAC does not match: tampered, corrupted or signed with another key.
    #[error("snapshot checksum mismatch: tampered, corrupted or signed with another key")]
    ChecksumMismatch,
    /// Not a confab snapshot.
    #[error("not a confab snapshot (bad magic)")]
    BadMagic,
    /// Written by a format this code does not read.
    #[error(
        "snapshot format version {0} is not supported (this build reads {SNAPSHOT_FORMAT_VERSION})"
    )]
    UnsupportedVersion(u16),
    /// Signed correctly but its body does not parse.
    #[error("snapshot body is malformed: {0}")]
    Malformed(String),
    /// The body does not decrypt, or the key version is not in the ring.
    #[error("snapshot does not decrypt: {0}")]
    Crypto(#[from] CryptoError),
    /// A snapshot of another session.
    #[error("snapshot belongs to {found}, not {expected}")]
    OtherSession {
        /// The session asked for.
        expected: Uid,
        /// The session inside.
        found: Uid,
    },
    /// A format-1 snapshot, and no legacy key to check it with.
    #[error(
        "snapshot is in the plaintext format 1 and no store.snapshot_hmac_key is there to check it"
    )]
    NoLegacyKey,
    /// The header's seq disagrees with the state inside.
    #[error("snapshot seq {header} disagrees with its state's seq {state}")]
    Inconsistent {
        /// The seq in the header.
        header: Seq,
        /// The seq of the state.
        state: Seq,
    },
}

/// A session frozen at a seq.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Whose session.
    pub uid: Uid,
    /// The seq of the last event folded into `state`.
    pub seq: Seq,
    /// When it was taken, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The ring epoch of the owner that took it.
    pub epoch: Epoch,
    /// The state.
    pub state: SessionState,
}

impl Snapshot {
    /// Freezes a state.
    pub fn new(uid: Uid, at_ms: u64, epoch: Epoch, state: SessionState) -> Self {
        Self {
            uid,
            seq: state.seq(),
            at_ms,
            epoch,
            state,
        }
    }

    /// The snapshot, borrowed: what [`SnapshotRef::encode`] and
    /// [`SnapshotRef::seal`] write.
    pub fn borrowed(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            uid: &self.uid,
            seq: self.seq,
            at_ms: self.at_ms,
            epoch: self.epoch,
            state: &self.state,
        }
    }

    /// Encodes and signs (format 1).
    pub fn encode(&self, key: &SnapshotKey) -> Vec<u8> {
        self.borrowed().encode(key)
    }

    /// Encrypts under `key` with this nonce, and signs with its HMAC key
    /// (format 2).
    pub fn seal(&self, key: &DataKey, nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        self.borrowed().seal(key, nonce)
    }

    /// The key version a stored snapshot was sealed under; `None` for format 1
    /// (or bytes that are no snapshot).
    pub fn key_version(bytes: &[u8]) -> Option<KeyVersion> {
        if bytes.len() < SEALED_HEADER_BYTES || &bytes[..4] != MAGIC {
            return None;
        }
        let format = u16::from_be_bytes([bytes[4], bytes[5]]);
        (format == SNAPSHOT_SEALED_FORMAT_VERSION)
            .then(|| u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]))
    }

    /// Verifies, decrypts and decodes `uid`'s snapshot in either format: format
    /// 2 with the ring, format 1 with the legacy key.
    pub fn open(
        bytes: &[u8],
        uid: &Uid,
        ring: &KeyRing,
        legacy: Option<&SnapshotKey>,
    ) -> Result<Self, SnapshotError> {
        if bytes.len() < HEADER_BYTES {
            return Err(SnapshotError::Truncated { len: bytes.len() });
        }
        if &bytes[..4] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let format = u16::from_be_bytes([bytes[4], bytes[5]]);
        let snapshot = match format {
            SNAPSHOT_FORMAT_VERSION => {
                Self::decode(bytes, legacy.ok_or(SnapshotError::NoLegacyKey)?)?
            }
            SNAPSHOT_SEALED_FORMAT_VERSION => Self::open_sealed(bytes, uid, ring)?,
            other => return Err(SnapshotError::UnsupportedVersion(other)),
        };
        if &snapshot.uid != uid {
            return Err(SnapshotError::OtherSession {
                expected: uid.clone(),
                found: snapshot.uid,
            });
        }
        Ok(snapshot)
    }

    fn open_sealed(bytes: &[u8], uid: &Uid, ring: &KeyRing) -> Result<Self, SnapshotError> {
        if bytes.len() < SEALED_HEADER_BYTES + NONCE_BYTES + 16 + SNAPSHOT_MAC_BYTES {
            return Err(SnapshotError::Truncated { len: bytes.len() });
        }
        let version = Self::key_version(bytes).expect("format 2 checked by the caller");
        let key = ring.get(version)?;
        let (signed, tag) = bytes.split_at(bytes.len() - SNAPSHOT_MAC_BYTES);
        let mut mac = key.mac();
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| SnapshotError::ChecksumMismatch)?;
        let (header, rest) = signed.split_at(SEALED_HEADER_BYTES);
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
        let body = key.decrypt(&nonce, &sealed_aad(header, uid), ciphertext)?;
        Self::from_body(&body)
    }

    /// Verifies and decodes a format-1 snapshot.
    pub fn decode(bytes: &[u8], key: &SnapshotKey) -> Result<Self, SnapshotError> {
        if bytes.len() < HEADER_BYTES + SNAPSHOT_MAC_BYTES {
            return Err(SnapshotError::Truncated { len: bytes.len() });
        }
        let (signed, tag) = bytes.split_at(bytes.len() - SNAPSHOT_MAC_BYTES);
        let mut mac = key.mac();
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| SnapshotError::ChecksumMismatch)?;
        if &signed[..4] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u16::from_be_bytes([signed[4], signed[5]]);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        Self::from_body(&signed[HEADER_BYTES..])
    }

    #[cfg(test)]
    fn body(&self) -> Vec<u8> {
        self.borrowed().body()
    }

    /// A body in either encoding, checked for a state that agrees with it.
    fn from_body(body: &[u8]) -> Result<Self, SnapshotError> {
        let malformed = |e: &dyn std::fmt::Display| SnapshotError::Malformed(e.to_string());
        let snapshot: Snapshot = match body.split_first() {
            Some((&BINARY_BODY, rest)) => match postcard::take_from_bytes(rest) {
                Ok((snapshot, [])) => snapshot,
                Ok((_, trailing)) => {
                    return Err(malformed(&format_args!(
                        "{} bytes after the snapshot",
                        trailing.len()
                    )));
                }
                Err(e) => return Err(malformed(&e)),
            },
            _ => serde_json::from_slice(body).map_err(|e| malformed(&e))?,
        };
        if snapshot.seq != snapshot.state.seq() {
            return Err(SnapshotError::Inconsistent {
                header: snapshot.seq,
                state: snapshot.state.seq(),
            });
        }
        Ok(snapshot)
    }
}

/// A session's state frozen at its seq, borrowed: it encodes to the same bytes
/// as a [`Snapshot`] of that state, without copying the state first.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SnapshotRef<'a> {
    /// Whose session.
    pub uid: &'a Uid,
    /// The seq of the last event folded into `state`.
    pub seq: Seq,
    /// When it was taken, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The ring epoch of the owner that took it.
    pub epoch: Epoch,
    /// The state.
    pub state: &'a SessionState,
}

impl<'a> SnapshotRef<'a> {
    /// Freezes a state, borrowed.
    pub fn new(uid: &'a Uid, at_ms: u64, epoch: Epoch, state: &'a SessionState) -> Self {
        Self {
            uid,
            seq: state.seq(),
            at_ms,
            epoch,
            state,
        }
    }

    /// Encodes and signs.
    pub fn encode(&self, key: &SnapshotKey) -> Vec<u8> {
        let mut out = self.signed();
        let mut mac = key.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// What [`SnapshotRef::encode`] signs, without the signature: its bytes
    /// but the last [`SNAPSHOT_MAC_BYTES`]. For a checker that compares a
    /// stored snapshot with its own replay of the log: the same header and
    /// body make the same signature under the same key, so comparing these
    /// bytes needs no HMAC of its own.
    pub fn signed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_CAPACITY);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        self.body_into(out)
    }

    /// Encrypts under `key` with this nonce, and signs with its HMAC key
    /// (format 2).
    pub fn seal(&self, key: &DataKey, nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(SEALED_HEADER_BYTES + NONCE_BYTES + body.len() + 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_SEALED_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&key.version().to_be_bytes());
        let aad = sealed_aad(&out, self.uid);
        out.extend_from_slice(&nonce);
        out.extend(key.encrypt(&nonce, &aad, &body));
        let mut mac = key.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The body: [`BINARY_BODY`] and the snapshot in postcard.
    fn body(&self) -> Vec<u8> {
        self.body_into(Vec::new())
    }

    /// `out` followed by the body.
    fn body_into(&self, mut out: Vec<u8>) -> Vec<u8> {
        out.push(BINARY_BODY);
        postcard::serialize_with_flavor(self, Appended(out)).expect("a snapshot always serializes")
    }
}

/// What an encoding reserves at first: a snapshot of a session with a few
/// turns fits, a longer one grows the buffer a few times.
const ENCODED_CAPACITY: usize = 1024;

/// postcard's output appended to a `Vec`, a slice at a time
/// (`postcard::to_extend` pushes slices byte by byte: it was a third of the
/// encoding's time).
struct Appended(Vec<u8>);

impl postcard::ser_flavors::Flavor for Appended {
    type Output = Vec<u8>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

fn sealed_aad(header: &[u8], uid: &Uid) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(uid.as_str().as_bytes());
    aad
}

/// When a session takes a snapshot of its own, besides the final one it takes
/// on leaving (hand-off, passivation, shutdown): once `every_events` events
/// piled up since the last one, or `every_ms` after the first event that is
/// in none, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Events since the last snapshot that make one due at once.
    pub every_events: u64,
    /// How long the first event not in a snapshot may wait for one (ms).
    pub every_ms: u64,
}

/// What a session does about snapshots after a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotDue {
    /// Take one now.
    Now,
    /// Set a timer for this long (ms), then take one if the state changed.
    After(u64),
    /// Nothing: no change since the last, or a timer is already set.
    Nothing,
}

impl SnapshotPolicy {
    /// After a commit that left the session at `seq`, the last snapshot taken
    /// being at `snapshot_seq`, with a snapshot timer set or not.
    pub fn after_commit(&self, seq: Seq, snapshot_seq: Seq, timer_set: bool) -> SnapshotDue {
        let since = seq.0.saturating_sub(snapshot_seq.0);
        if since == 0 {
            SnapshotDue::Nothing
        } else if since >= self.every_events {
            SnapshotDue::Now
        } else if timer_set {
            SnapshotDue::Nothing
        } else {
            SnapshotDue::After(self.every_ms)
        }
    }

    /// When the timer fires: take one if the state changed since the last.
    pub fn on_timer(&self, seq: Seq, snapshot_seq: Seq) -> bool {
        seq > snapshot_seq
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_after_enough_events_or_once_a_timer_for_the_first_unsnapshotted_one() {
        let p = SnapshotPolicy {
            every_events: 3,
            every_ms: 30_000,
        };
        assert_eq!(p.after_commit(Seq(5), Seq(5), false), SnapshotDue::Nothing);
        assert_eq!(
            p.after_commit(Seq(6), Seq(5), false),
            SnapshotDue::After(30_000)
        );
        assert_eq!(p.after_commit(Seq(7), Seq(5), true), SnapshotDue::Nothing);
        assert_eq!(p.after_commit(Seq(8), Seq(5), true), SnapshotDue::Now);
        assert!(p.on_timer(Seq(6), Seq(5)));
        assert!(!p.on_timer(Seq(5), Seq(5)), "nothing changed: no snapshot");
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;
    use crate::crypto::KEY_BYTES;

    fn uid() -> Uid {
        Uid::new("alice").unwrap()
    }

    fn key() -> SnapshotKey {
        SnapshotKey::new(vec![1; 32]).unwrap()
    }

    fn data_key() -> DataKey {
        DataKey::new(3, &[9; KEY_BYTES]).unwrap()
    }

    /// A state with every field set: turns, ids, an open turn, the dialog's
    /// position, a pending action and a day's action count.
    fn rich_state() -> SessionState {
        let turns: Vec<_> = (1..=40u64)
            .map(|i| {
                serde_json::json!({
                    "message_id": format!("m-{i}"), "turn_seq": 3 * i - 2, "reply_seq": 3 * i,
                    "user_text": format!("size {i} please"), "reply_text": "noted: size {i}",
                    "intent": "inform", "policy": "shoes-v2",
                    "slots": {"size": i.to_string(), "phone": "13912345678"},
                })
            })
            .collect();
        let processed: Vec<_> = (1..=40u64)
            .map(|i| serde_json::json!([format!("m-{i}"), [3 * i - 2, 3 * i]]))
            .collect();
        serde_json::from_value(serde_json::json!({
            "seq": 122, "slots": {"size": "40", "colour": "red"},
            "last_intent": "order", "last_confidence": 0.875,
            "recent_turns": turns, "processed": processed,
            "open_turn": {"message_id": "m-41", "turn_seq": 121, "text": "buy them"},
            "dialog": {"flow": "order", "step": "confirm"},
            "pending_action": {"requested": 122, "action": "coupon", "args": {"size": "40"},
                               "policy": "shoes-v2", "message_id": "m-41"},
            "action_days": {"coupon": {"day": 20_000, "count": 2}},
        }))
        .unwrap()
    }

    fn rich() -> Snapshot {
        Snapshot::new(uid(), 1_700_000_000_000, Epoch(4), rich_state())
    }

    /// `body` signed as a format-1 snapshot.
    fn signed(body: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        bytes.extend_from_slice(body);
        let mut mac = key().mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        bytes
    }

    /// `body` sealed as a format-2 snapshot of `uid()`.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let key = data_key();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_SEALED_FORMAT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&key.version().to_be_bytes());
        let aad = sealed_aad(&bytes, &uid());
        bytes.extend_from_slice(&[5; NONCE_BYTES]);
        bytes.extend(key.encrypt(&[5; NONCE_BYTES], &aad, body));
        let mut mac = key.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        bytes
    }

    fn ring() -> KeyRing {
        KeyRing::new([data_key()])
    }

    /// The key is keyed once and cloned per signature: each signature is
    /// still HMAC-SHA256 of the raw key over the header and body, and
    /// `signed` is exactly what it covers.
    #[test]
    fn a_signature_is_the_hmac_of_the_key_over_the_signed_bytes() {
        let snapshot = rich();
        let signed = snapshot.borrowed().signed();
        for _ in 0..2 {
            let bytes = snapshot.encode(&key());
            assert_eq!(bytes.len(), signed.len() + SNAPSHOT_MAC_BYTES);
            assert_eq!(&bytes[..signed.len()], &signed[..]);
            let mut fresh = Hmac::<Sha256>::new_from_slice(&[1; 32]).unwrap();
            fresh.update(&signed);
            assert_eq!(&bytes[signed.len()..], &fresh.finalize().into_bytes()[..]);
        }
        let other = SnapshotKey::new(vec![2; 32]).unwrap();
        assert_ne!(snapshot.encode(&other), snapshot.encode(&key()));
        let data_key = data_key();
        let (mut once, mut twice) = (data_key.mac(), data_key.mac());
        once.update(b"one");
        twice.update(b"one");
        assert_eq!(once.finalize().into_bytes(), twice.finalize().into_bytes());
    }

    #[test]
    fn the_binary_body_keeps_every_field_in_both_formats() {
        let snapshot = rich();
        let signed = snapshot.encode(&key());
        assert_eq!(
            signed[HEADER_BYTES], BINARY_BODY,
            "nodes write the binary body"
        );
        assert_eq!(Snapshot::decode(&signed, &key()).unwrap(), snapshot);
        let sealed = snapshot.seal(&data_key(), [7; NONCE_BYTES]);
        let opened = Snapshot::open(&sealed, &uid(), &ring(), None).unwrap();
        assert_eq!(opened, snapshot);
        assert!(
            opened
                .state
                .duplicate(&crate::MessageId::new("m-7").unwrap())
                .is_some(),
            "the id index is rebuilt from the binary body"
        );
        let json = serde_json::to_vec(&snapshot).unwrap();
        assert!(
            snapshot.body().len() * 2 < json.len(),
            "binary {} bytes against JSON {}",
            snapshot.body().len(),
            json.len()
        );
    }

    #[test]
    fn json_bodies_written_before_still_open_in_both_formats() {
        let snapshot = rich();
        let json = serde_json::to_vec(&snapshot).unwrap();
        assert_eq!(Snapshot::decode(&signed(&json), &key()).unwrap(), snapshot);
        let opened = Snapshot::open(&sealed(&json), &uid(), &ring(), None).unwrap();
        assert_eq!(opened, snapshot);
        // As older nodes wrote it: the empty dialog, action and day counts left out.
        let plain = Snapshot::new(uid(), 1, Epoch(1), SessionState::default());
        let mut older = serde_json::to_value(&plain).unwrap();
        for field in ["dialog", "pending_action", "action_days"] {
            older["state"].as_object_mut().unwrap().remove(field);
        }
        let older = serde_json::to_vec(&older).unwrap();
        assert_eq!(Snapshot::decode(&signed(&older), &key()).unwrap(), plain);
    }

    /// The binary body of a small state with every field set, pinned. If this
    /// fails, the layout changed: bump [`BINARY_BODY`] and keep reading this one.
    const GOLDEN_BODY: &str = concat!(
        "0105616c69636507e8070207010473697a6502343001056f726465720000003f01036d2d3101030268",
        "690568656c6c6f0567726565740270310001036d2d31010301036d2d3204036275790104666c6f7705",
        "6f72646572010706636f75706f6e010473697a65023430027031036d2d320106636f75706f6e0301",
    );

    fn golden() -> Snapshot {
        let state = serde_json::from_value(serde_json::json!({
            "seq": 7, "slots": {"size": "40"}, "last_intent": "order", "last_confidence": 0.5,
            "recent_turns": [{"message_id": "m-1", "turn_seq": 1, "reply_seq": 3,
                "user_text": "hi", "reply_text": "hello", "intent": "greet", "policy": "p1",
                "slots": {}}],
            "processed": [["m-1", [1, 3]]],
            "open_turn": {"message_id": "m-2", "turn_seq": 4, "text": "buy"},
            "dialog": {"flow": "order"},
            "pending_action": {"requested": 7, "action": "coupon", "args": {"size": "40"},
                               "policy": "p1", "message_id": "m-2"},
            "action_days": {"coupon": {"day": 3, "count": 1}},
        }))
        .unwrap();
        Snapshot::new(uid(), 1_000, Epoch(2), state)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_binary_layout_is_pinned() {
        let snapshot = golden();
        assert_eq!(
            hex(&snapshot.body()),
            GOLDEN_BODY,
            "the binary layout changed"
        );
        let bytes: Vec<u8> = (0..GOLDEN_BODY.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&GOLDEN_BODY[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(Snapshot::from_body(&bytes).unwrap(), snapshot);
    }

    proptest::proptest! {
        #[test]
        fn any_binary_body_parses_or_is_malformed(rest in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut body = vec![BINARY_BODY];
            body.extend(rest);
            if let Err(e) = Snapshot::from_body(&body) {
                proptest::prop_assert!(
                    matches!(e, SnapshotError::Malformed(_) | SnapshotError::Inconsistent { .. }),
                    "{e:?}"
                );
            }
        }

        #[test]
        fn a_changed_byte_of_a_real_body_parses_or_is_malformed(at in 1usize..4096, to in proptest::num::u8::ANY) {
            let mut body = golden().body();
            let at = at % body.len();
            body[at] = to;
            if let Err(e) = Snapshot::from_body(&body) {
                proptest::prop_assert!(
                    matches!(e, SnapshotError::Malformed(_) | SnapshotError::Inconsistent { .. }),
                    "{e:?}"
                );
            }
        }
    }

    #[test]
    fn a_body_that_does_not_parse_is_malformed_not_a_panic() {
        let snapshot = rich();
        let mut body = snapshot.body();
        body.push(0);
        let trailing = Snapshot::decode(&signed(&body), &key());
        assert!(
            matches!(&trailing, Err(SnapshotError::Malformed(m)) if m.contains("1 bytes after")),
            "{trailing:?}"
        );
        let body = snapshot.body();
        let cut = Snapshot::decode(&signed(&body[..body.len() / 2]), &key());
        assert!(matches!(cut, Err(SnapshotError::Malformed(_))), "{cut:?}");
        for body in [&[][..], &[2, 0, 0][..], b"not json"] {
            let refused = Snapshot::open(&sealed(body), &uid(), &ring(), None);
            assert!(
                matches!(refused, Err(SnapshotError::Malformed(_))),
                "{refused:?}"
            );
        }
    }
}
