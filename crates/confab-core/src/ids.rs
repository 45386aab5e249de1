//! Identifiers of the domain, as newtypes so that a uid is never mistaken for a
//! message id and a seq never for an epoch.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest uid accepted, in bytes (CONTRACT.md: 1 to 128 bytes of printable ASCII).
pub const UID_BYTES_MAX: usize = 128;

/// Longest client message id accepted, in bytes.
pub const MESSAGE_ID_BYTES_MAX: usize = 128;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which identifier.
        what: &'static str,
    },
    /// The identifier is longer than its limit.
    #[error("{what} is {len} bytes, the limit is {max}")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The identifier holds a byte outside printable ASCII.
    #[error("{what} must be printable ascii (0x20..=0x7e)")]
    NotPrintable {
        /// Which identifier.
        what: &'static str,
    },
}

fn check_printable(what: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    if !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(IdError::NotPrintable { what });
    }
    Ok(())
}

/// A chat user's id: the JWT `sub`, 1 to 128 bytes of printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Uid(String);

impl Serialize for Uid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written as a string, borrowed: serde's `into` cloned every id it wrote.
        serializer.serialize_str(&self.0)
    }
}

impl Uid {
    /// Validates and wraps a uid.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_printable("uid", &value, UID_BYTES_MAX)?;
        Ok(Self(value))
    }

    /// The uid as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Uid {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Uid> for String {
    fn from(value: Uid) -> Self {
        value.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's message id, unique per uid: the key of idempotent turns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct MessageId(String);

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written as a string, borrowed: serde's `into` cloned every id it wrote.
        serializer.serialize_str(&self.0)
    }
}

impl MessageId {
    /// Validates and wraps a message id (1 to 128 bytes of printable ASCII).
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_printable("message id", &value, MESSAGE_ID_BYTES_MAX)?;
        Ok(Self(value))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<MessageId> for String {
    fn from(value: MessageId) -> Self {
        value.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's id, such as `node-1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct NodeId(String);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written as a string, borrowed: serde's `into` cloned every id it wrote.
        serializer.serialize_str(&self.0)
    }
}

impl NodeId {
    /// Validates and wraps a node id (1 to 64 bytes of printable ASCII).
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_printable("node id", &value, 64)?;
        Ok(Self(value))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<NodeId> for String {
    fn from(value: NodeId) -> Self {
        value.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The position of an event in a session's log: rises by exactly one per event,
/// starting at 1. `Seq(0)` means "nothing recorded yet".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The seq that follows this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The ring epoch: rises each time the membership changes. Every store write
/// carries it so that a stale owner can be fenced.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_limits_are_enforced_at_the_edges() {
        assert!(Uid::new("a").is_ok());
        assert!(Uid::new("x".repeat(UID_BYTES_MAX)).is_ok());
        assert_eq!(
            Uid::new("x".repeat(UID_BYTES_MAX + 1)),
            Err(IdError::TooLong {
                what: "uid",
                len: 129,
                max: 128
            })
        );
        assert_eq!(Uid::new(""), Err(IdError::Empty { what: "uid" }));
        assert_eq!(
            Uid::new("tab\there"),
            Err(IdError::NotPrintable { what: "uid" })
        );
        assert_eq!(Uid::new("é"), Err(IdError::NotPrintable { what: "uid" }));
    }

    #[test]
    fn message_id_is_validated_when_deserialized() {
        let err = serde_json::from_str::<MessageId>(&format!("\"{}\"", "m".repeat(129)));
        assert!(err.is_err());
        let ok: MessageId = serde_json::from_str("\"m-1\"").unwrap();
        assert_eq!(ok.as_str(), "m-1");
    }
}
