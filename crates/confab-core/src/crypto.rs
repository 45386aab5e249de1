//! Encryption at rest: the data-key ring, sealed values and sealed events.
//!
//! Every key version is 32 random bytes of key material, from which two keys
//! are derived (HMAC-SHA256 of the material over a label, as HKDF-Expand does
//! for one block): an AES-256-GCM key for values and snapshot bodies, and an
//! HMAC-SHA256 key that signs snapshots. Rotating the material rotates both.
//!
//! A sealed value is text, so that it fits where the plaintext was:
//!
//! ```text
//! enc:1:<key version>:<base64url(nonce 12 bytes | ciphertext | tag 16 bytes)>
//! ```
//!
//! The associated data binds the value to its session and its field
//! (`uid \0 field`): a ciphertext copied to another session or another slot
//! does not open. Nonces are inputs (96 random bits each, from the caller), as
//! every source of randomness in the core is.
//!
//! The core takes no IO: where the material comes from and how it is kept
//! (wrapped by a master key in the store) is the runtime's business.

use crate::ids::Uid;
use crate::session::{Event, Slots};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Bytes of a key version's material.
pub const KEY_BYTES: usize = 32;

/// Bytes of an AES-GCM nonce.
pub const NONCE_BYTES: usize = 12;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "enc:1:";

/// A key version's number: 1, 2, 3...
pub type KeyVersion = u32;

/// Why a value or a ring could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Key material of the wrong size.
    #[error("key material is {0} bytes, {KEY_BYTES} are needed")]
    KeySize(usize),
    /// A sealed value names a key version the ring does not hold.
    #[error("key version {0} is not in the key ring (retired, or never fetched)")]
    UnknownVersion(KeyVersion),
    /// Not the sealed format.
    #[error("sealed value is malformed: {0}")]
    Malformed(&'static str),
    /// The tag does not verify: tampered, or moved to another session or field.
    #[error("sealed value does not open: tampered, or moved from another session or field")]
    Tampered,
    /// The ring has no key version to write with.
    #[error("the key ring is empty")]
    Empty,
}

/// One key version.
#[derive(Clone)]
pub struct DataKey {
    version: KeyVersion,
    aead: Aes256Gcm,
    /// The HMAC keyed once: its inner and outer pads already hashed, so
    /// each signature costs only the blocks of what it signs.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey(v{})", self.version)
    }
}

fn derive(material: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(material).expect("hmac accepts any key length");
    mac.update(label);
    mac.update(&[1]);
    mac.finalize().into_bytes().into()
}

impl DataKey {
    /// A key version from its material.
    pub fn new(version: KeyVersion, material: &[u8]) -> Result<Self, CryptoError> {
        if material.len() != KEY_BYTES {
            return Err(CryptoError::KeySize(material.len()));
        }
        let aes = derive(material, b"confab aes-256-gcm");
        Ok(Self {
            version,
            aead: Aes256Gcm::new_from_slice(&aes).expect("a 32-byte key"),
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&derive(
                material,
                b"confab snapshot hmac-sha256",
            ))
            .expect("hmac accepts any key length"),
        })
    }

    /// Its version.
    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// The HMAC-SHA256 that signs snapshots under this version.
    pub fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }

    /// AES-256-GCM of `plaintext` with associated data `aad`: ciphertext and tag.
    pub fn encrypt(&self, nonce: &[u8; NONCE_BYTES], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.aead
            .encrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("aes-gcm encrypts any message under 64 GiB")
    }

    /// Opens what [`DataKey::encrypt`] made with the same nonce and `aad`.
    pub fn decrypt(
        &self,
        nonce: &[u8; NONCE_BYTES],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.aead
            .decrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)
    }
}

/// The key versions a node can read, and the one it writes with (the newest).
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<KeyVersion, DataKey>,
}

impl KeyRing {
    /// A ring of these versions.
    pub fn new(keys: impl IntoIterator<Item = DataKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.version, k)).collect(),
        }
    }

    /// The version new writes use: the newest.
    pub fn current(&self) -> Result<&DataKey, CryptoError> {
        self.keys.values().next_back().ok_or(CryptoError::Empty)
    }

    /// A version, if held.
    pub fn get(&self, version: KeyVersion) -> Result<&DataKey, CryptoError> {
        self.keys
            .get(&version)
            .ok_or(CryptoError::UnknownVersion(version))
    }

    /// The versions held, oldest first.
    pub fn versions(&self) -> Vec<KeyVersion> {
        self.keys.keys().copied().collect()
    }

    /// Seals `plaintext` as the `field` of `uid`'s session, under the current
    /// version.
    pub fn seal(
        &self,
        uid: &Uid,
        field: &str,
        plaintext: &str,
        nonce: [u8; NONCE_BYTES],
    ) -> Result<String, CryptoError> {
        let key = self.current()?;
        let mut sealed = nonce.to_vec();
        sealed.extend(key.encrypt(&nonce, &aad(uid, field), plaintext.as_bytes()));
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            key.version,
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// Opens a value [`KeyRing::seal`] made for the same session and field.
    pub fn open(&self, uid: &Uid, field: &str, sealed: &str) -> Result<String, CryptoError> {
        let (version, body) = parse_sealed(sealed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::Malformed("not base64url"))?;
        if bytes.len() < NONCE_BYTES + 16 {
            return Err(CryptoError::Malformed("shorter than a nonce and a tag"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
        let plaintext = self
            .get(version)?
            .decrypt(&nonce, &aad(uid, field), ciphertext)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Malformed("not utf-8 inside"))
    }
}

fn aad(uid: &Uid, field: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(uid.as_str().len() + field.len() + 1);
    aad.extend_from_slice(uid.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

/// Whether a stored string is a sealed value.
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// The key version a sealed value was written under.
pub fn sealed_version(value: &str) -> Option<KeyVersion> {
    parse_sealed(value).ok().map(|(version, _)| version)
}

fn parse_sealed(value: &str) -> Result<(KeyVersion, &str), CryptoError> {
    let rest = value
        .strip_prefix(SEALED_PREFIX)
        .ok_or(CryptoError::Malformed("no enc:1: prefix"))?;
    let (version, body) = rest
        .split_once(':')
        .ok_or(CryptoError::Malformed("no key version"))?;
    let version = version
        .parse()
        .map_err(|_| CryptoError::Malformed("key version is not a number"))?;
    Ok((version, body))
}

/// The ring as the node shares it: read on every write, replaced when a
/// version is added.
#[derive(Debug, Clone, Default)]
pub struct SharedRing(Arc<RwLock<Arc<KeyRing>>>);

impl SharedRing {
    /// Shares this ring.
    pub fn new(ring: KeyRing) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(ring))))
    }

    /// The ring now.
    pub fn get(&self) -> Arc<KeyRing> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the ring.
    pub fn replace(&self, ring: KeyRing) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
    }
}

/// Which slots are sealed: their names.
pub trait Sensitive {
    /// Whether a slot of this name is sealed at rest.
    fn is_sensitive(&self, slot: &str) -> bool;
}

impl Sensitive for std::collections::BTreeSet<String> {
    fn is_sensitive(&self, slot: &str) -> bool {
        self.contains(slot)
    }
}

/// What [`seal_event`] and [`open_event`] need.
pub struct Sealing<'a> {
    /// The ring.
    pub ring: &'a KeyRing,
    /// The session.
    pub uid: &'a Uid,
    /// Which slots are sealed.
    pub sensitive: &'a dyn Sensitive,
}

impl Sealing<'_> {
    fn seal_slots(
        &self,
        slots: &Slots,
        nonces: &mut dyn FnMut() -> [u8; NONCE_BYTES],
    ) -> Result<Slots, CryptoError> {
        slots
            .iter()
            .map(|(name, value)| {
                // A plaintext that looks sealed is sealed too, so that every
                // stored value with the prefix is a ciphertext.
                let value = if self.sensitive.is_sensitive(name) || is_sealed(value) {
                    self.ring.seal(self.uid, name, value, nonces())?
                } else {
                    value.clone()
                };
                Ok((name.clone(), value))
            })
            .collect()
    }

    fn open_slots(&self, slots: &Slots) -> Result<Slots, CryptoError> {
        slots
            .iter()
            .map(|(name, value)| {
                let value = if is_sealed(value) {
                    self.ring.open(self.uid, name, value)?
                } else {
                    value.clone()
                };
                Ok((name.clone(), value))
            })
            .collect()
    }
}

/// The field name a user's text is sealed under.
pub const TEXT_FIELD: &str = "text";

/// The field name a failed action's reason is sealed under.
pub const REASON_FIELD: &str = "reason";

/// What [`map_event`] does to each user text, reason and slot map of an event.
trait Transform {
    /// A text field (`text`, `reason`).
    fn text(&mut self, field: &str, value: &str) -> Result<String, CryptoError>;
    /// A slot map.
    fn slots(&mut self, slots: &Slots) -> Result<Slots, CryptoError>;
}

/// The event with its user texts, its failed action's reason and its slot maps
/// passed through `t`; everything else kept.
fn map_event(event: &Event, t: &mut impl Transform) -> Result<Event, CryptoError> {
    Ok(match event {
        Event::TurnReceived { message_id, text } => Event::TurnReceived {
            message_id: message_id.clone(),
            text: t.text(TEXT_FIELD, text)?,
        },
        Event::InputRejected {
            message_id,
            reason,
            text,
        } => Event::InputRejected {
            message_id: message_id.clone(),
            reason: reason.clone(),
            text: t.text(TEXT_FIELD, text)?,
        },
        Event::NluResult {
            intent,
            confidence,
            slots_filled,
        } => Event::NluResult {
            intent: intent.clone(),
            confidence: *confidence,
            slots_filled: t.slots(slots_filled)?,
        },
        Event::ReplyProduced {
            message_id,
            text,
            policy,
            intent,
            slots,
            dialog,
        } => Event::ReplyProduced {
            message_id: message_id.clone(),
            text: text.clone(),
            policy: policy.clone(),
            intent: intent.clone(),
            slots: t.slots(slots)?,
            dialog: dialog.clone(),
        },
        Event::ActionRequested {
            action,
            args,
            policy,
            dialog,
        } => Event::ActionRequested {
            action: action.clone(),
            args: t.slots(args)?,
            policy: policy.clone(),
            dialog: dialog.clone(),
        },
        Event::ActionSucceeded {
            requested,
            action,
            result,
        } => Event::ActionSucceeded {
            requested: *requested,
            action: action.clone(),
            result: t.slots(result)?,
        },
        Event::ActionFailed {
            requested,
            action,
            reason,
            attempts,
        } => Event::ActionFailed {
            requested: *requested,
            action: action.clone(),
            // The service's error may quote what it was sent.
            reason: t.text(REASON_FIELD, reason)?,
            attempts: *attempts,
        },
    })
}

struct Seal<'a, 'b> {
    sealing: &'a Sealing<'b>,
    nonces: &'a mut dyn FnMut() -> [u8; NONCE_BYTES],
}

impl Transform for Seal<'_, '_> {
    fn text(&mut self, field: &str, value: &str) -> Result<String, CryptoError> {
        let nonce = (self.nonces)();
        self.sealing
            .ring
            .seal(self.sealing.uid, field, value, nonce)
    }

    fn slots(&mut self, slots: &Slots) -> Result<Slots, CryptoError> {
        self.sealing.seal_slots(slots, self.nonces)
    }
}

struct Open<'a, 'b>(&'a Sealing<'b>);

impl Transform for Open<'_, '_> {
    fn text(&mut self, field: &str, value: &str) -> Result<String, CryptoError> {
        if is_sealed(value) {
            self.0.ring.open(self.0.uid, field, value)
        } else {
            Ok(value.to_owned())
        }
    }

    fn slots(&mut self, slots: &Slots) -> Result<Slots, CryptoError> {
        self.0.open_slots(slots)
    }
}

/// An event as stored: every user text (a turn's, a refused input's), every
/// sensitive slot value (in what the NLU filled, a reply's slots, an action's
/// arguments and result) and a failed action's reason (the service's error may
/// quote what it was sent) sealed under the ring's current version.
///
/// Every user text is sealed, not only those a sensitive slot was filled from:
/// a phone number typed where none was asked for is still one.
pub fn seal_event(
    sealing: &Sealing<'_>,
    event: &Event,
    nonces: &mut dyn FnMut() -> [u8; NONCE_BYTES],
) -> Result<Event, CryptoError> {
    map_event(event, &mut Seal { sealing, nonces })
}

/// An event as the session uses it: every sealed value opened.
pub fn open_event(sealing: &Sealing<'_>, event: &Event) -> Result<Event, CryptoError> {
    map_event(event, &mut Open(sealing))
}

/// The key versions an event's sealed values use, in order.
pub fn event_key_versions(event: &Event) -> Vec<KeyVersion> {
    let mut versions = std::collections::BTreeSet::new();
    let mut note = |value: &String| {
        if let Some(version) = sealed_version(value) {
            versions.insert(version);
        }
    };
    match event {
        Event::TurnReceived { text, .. } | Event::InputRejected { text, .. } => note(text),
        Event::NluResult { slots_filled, .. } => slots_filled.values().for_each(note),
        Event::ReplyProduced { slots, .. } => slots.values().for_each(note),
        Event::ActionRequested { args, .. } => args.values().for_each(note),
        Event::ActionSucceeded { result, .. } => result.values().for_each(note),
        Event::ActionFailed { reason, .. } => note(reason),
    }
    versions.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;

    fn ring(versions: &[KeyVersion]) -> KeyRing {
        KeyRing::new(
            versions
                .iter()
                .map(|&v| DataKey::new(v, &[u8::try_from(v).unwrap(); KEY_BYTES]).unwrap()),
        )
    }

    fn counter() -> impl FnMut() -> [u8; NONCE_BYTES] {
        let mut n = 0u8;
        move || {
            n += 1;
            [n; NONCE_BYTES]
        }
    }

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_session_and_field() {
        let ring = ring(&[1]);
        let sealed = ring
            .seal(&uid("alice"), "phone", "13912345678", [7; NONCE_BYTES])
            .unwrap();
        assert!(sealed.starts_with("enc:1:1:"), "{sealed}");
        assert!(!sealed.contains("13912345678"));
        assert_eq!(
            ring.open(&uid("alice"), "phone", &sealed).unwrap(),
            "13912345678"
        );
        assert_eq!(
            ring.open(&uid("bob"), "phone", &sealed),
            Err(CryptoError::Tampered)
        );
        assert_eq!(
            ring.open(&uid("alice"), "address", &sealed),
            Err(CryptoError::Tampered)
        );
        // A flipped character of the ciphertext.
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            ring.open(&uid("alice"), "phone", &tampered),
            Err(CryptoError::Tampered)
        );
        for malformed in [
            "enc:1:x:AAAA",
            "enc:1:1",
            "enc:1:1:!!!",
            "enc:1:1:AAAA",
            "plain",
        ] {
            assert!(
                matches!(
                    ring.open(&uid("alice"), "phone", malformed),
                    Err(CryptoError::Malformed(_))
                ),
                "{malformed}"
            );
        }
    }

    #[test]
    fn new_writes_use_the_newest_version_and_old_ones_still_open() {
        let old = ring(&[1]);
        let sealed_old = old.seal(&uid("a"), "phone", "1", [1; 12]).unwrap();
        let rotated = ring(&[1, 2]);
        let sealed_new = rotated.seal(&uid("a"), "phone", "2", [2; 12]).unwrap();
        assert_eq!(sealed_version(&sealed_old), Some(1));
        assert_eq!(sealed_version(&sealed_new), Some(2));
        assert_eq!(rotated.open(&uid("a"), "phone", &sealed_old).unwrap(), "1");
        // A ring without version 2 cannot read what it wrote, and says why.
        assert_eq!(
            old.open(&uid("a"), "phone", &sealed_new),
            Err(CryptoError::UnknownVersion(2))
        );
        assert_eq!(KeyRing::default().current().err(), Some(CryptoError::Empty));
        assert_eq!(
            DataKey::new(1, &[0; 16]).err(),
            Some(CryptoError::KeySize(16))
        );
    }

    #[test]
    fn events_keep_no_user_text_or_sensitive_slot_in_the_clear() {
        let ring = ring(&[3]);
        let sensitive: std::collections::BTreeSet<String> =
            ["phone".to_owned()].into_iter().collect();
        let alice = uid("alice");
        let sealing = Sealing {
            ring: &ring,
            uid: &alice,
            sensitive: &sensitive,
        };
        let slots: Slots = [
            ("phone".to_owned(), "13912345678".to_owned()),
            ("size".to_owned(), "38".to_owned()),
            ("note".to_owned(), "enc:1:9:looks-sealed".to_owned()),
        ]
        .into_iter()
        .collect();
        let events = [
            Event::TurnReceived {
                message_id: MessageId::new("m-1").unwrap(),
                text: "我的手机号是13912345678".into(),
            },
            Event::NluResult {
                intent: "inform".into(),
                confidence: 0.9,
                slots_filled: slots.clone(),
            },
            Event::ActionRequested {
                action: "ship".into(),
                args: slots,
                policy: "v1".into(),
                dialog: Slots::new(),
            },
            Event::InputRejected {
                message_id: MessageId::new("m-2").unwrap(),
                reason: "profanity".into(),
                text: "13912345678 滚".into(),
            },
        ];
        let mut nonces = counter();
        for event in &events {
            let sealed = seal_event(&sealing, event, &mut nonces).unwrap();
            let json = serde_json::to_string(&sealed).unwrap();
            assert!(!json.contains("13912345678"), "{json}");
            assert!(!json.contains("手机号"), "{json}");
            assert_eq!(event_key_versions(&sealed), vec![3]);
            if let Event::NluResult { slots_filled, .. } = &sealed {
                assert_eq!(slots_filled["size"], "38", "not sensitive: kept as is");
                assert!(is_sealed(&slots_filled["note"]));
            }
            assert_eq!(&open_event(&sealing, &sealed).unwrap(), event);
        }
    }
}
