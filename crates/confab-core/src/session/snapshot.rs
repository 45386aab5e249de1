//! The snapshot codec: a versioned, HMAC-SHA256-signed encoding of a session.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! magic  "CFSN"           4 bytes
//! format version          2 bytes (currently 1)
//! body                    JSON of {uid, seq, at_ms, epoch, state}
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
//! body                    AES-256-GCM(JSON of the snapshot), associated data:
//!                         the 10 header bytes and the uid
//! mac                     32 bytes: HMAC-SHA256(version's mac key, all of the above)
//! ```
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
const MAC_BYTES: usize = 32;
const HEADER_BYTES: usize = 6;

/// The plaintext format, still read.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;

/// The encrypted format, written under the data-key ring.
pub const SNAPSHOT_SEALED_FORMAT_VERSION: u16 = 2;

/// Bytes of format 2's header: magic, format version, key version.
const SEALED_HEADER_BYTES: usize = 10;

/// Shortest HMAC key accepted, in bytes.
pub const SNAPSHOT_KEY_BYTES_MIN: usize = 16;

/// The key that signs snapshots.
#[derive(Clone)]
pub struct SnapshotKey(Vec<u8>);

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
        Ok(Self(bytes))
    }

    pub(super) fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac accepts any key length")
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

    /// Encodes and signs.
    pub fn encode(&self, key: &SnapshotKey) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a snapshot always serializes");
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + MAC_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&body);
        let mut mac = key.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Encrypts under `key` with this nonce, and signs with its HMAC key
    /// (format 2).
    pub fn seal(&self, key: &DataKey, nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a snapshot always serializes");
        let mut out = Vec::with_capacity(SEALED_HEADER_BYTES + NONCE_BYTES + body.len() + 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_SEALED_FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&key.version().to_be_bytes());
        let aad = sealed_aad(&out, &self.uid);
        out.extend_from_slice(&nonce);
        out.extend(key.encrypt(&nonce, &aad, &body));
        let mut mac = key.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
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
        if bytes.len() < SEALED_HEADER_BYTES + NONCE_BYTES + 16 + MAC_BYTES {
            return Err(SnapshotError::Truncated { len: bytes.len() });
        }
        let version = Self::key_version(bytes).expect("format 2 checked by the caller");
        let key = ring.get(version)?;
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
        let mut mac = key.mac();
        mac.update(signed);
        mac.verify_slice(tag)
            .map_err(|_| SnapshotError::ChecksumMismatch)?;
        let (header, rest) = signed.split_at(SEALED_HEADER_BYTES);
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
        let body = key.decrypt(&nonce, &sealed_aad(header, uid), ciphertext)?;
        let snapshot: Snapshot =
            serde_json::from_slice(&body).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if snapshot.seq != snapshot.state.seq() {
            return Err(SnapshotError::Inconsistent {
                header: snapshot.seq,
                state: snapshot.state.seq(),
            });
        }
        Ok(snapshot)
    }

    /// Verifies and decodes a format-1 snapshot.
    pub fn decode(bytes: &[u8], key: &SnapshotKey) -> Result<Self, SnapshotError> {
        if bytes.len() < HEADER_BYTES + MAC_BYTES {
            return Err(SnapshotError::Truncated { len: bytes.len() });
        }
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_BYTES);
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
        let snapshot: Snapshot = serde_json::from_slice(&signed[HEADER_BYTES..])
            .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if snapshot.seq != snapshot.state.seq() {
            return Err(SnapshotError::Inconsistent {
                header: snapshot.seq,
                state: snapshot.state.seq(),
            });
        }
        Ok(snapshot)
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
