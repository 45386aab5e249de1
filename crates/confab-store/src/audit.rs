//! The admin audit log: every admin action, appended to the durable tier.

use crate::{StoreError, StoreFuture};

/// Longest `who`, in bytes.
pub const WHO_BYTES_MAX: usize = 128;
/// Longest `action` and `result`, in bytes; longer ones are cut.
pub const TEXT_BYTES_MAX: usize = 300;
/// Entries listed per request, at most.
pub const LIST_MAX: usize = 1000;

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Assigned by the store; ignored on insert.
    pub id: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Who: the token's `sub`, or `-` when the request carried no valid token.
    pub who: String,
    /// The node that served it.
    pub node: String,
    /// What: method and path, as `POST /admin/v1/keys/rotate`.
    pub action: String,
    /// The HTTP status answered.
    pub status: u16,
    /// What came of it, in a few words (the error, or `ok`).
    pub result: String,
}

impl AuditEntry {
    /// The entry cut to the store's limits (at char boundaries).
    pub fn bounded(mut self) -> Self {
        cut(&mut self.who, WHO_BYTES_MAX);
        cut(&mut self.node, 64);
        cut(&mut self.action, TEXT_BYTES_MAX);
        cut(&mut self.result, TEXT_BYTES_MAX);
        self
    }
}

fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Where the audit log lives.
pub trait AuditStore: Send + Sync + 'static {
    /// Appends an entry (cut to the limits); returns its id.
    fn audit<'a>(&'a self, entry: &'a AuditEntry) -> StoreFuture<'a, u64>;

    /// The newest entries first, at most `limit` (and [`LIST_MAX`]).
    fn audit_entries(&self, limit: usize) -> StoreFuture<'_, Vec<AuditEntry>>;
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("audit log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_cut_at_char_boundaries() {
        let entry = AuditEntry {
            id: 0,
            at_ms: 1,
            who: "运".repeat(100),
            node: "n".into(),
            action: "x".repeat(1000),
            status: 200,
            result: "ok".into(),
        }
        .bounded();
        assert!(entry.who.len() <= WHO_BYTES_MAX);
        assert!(entry.who.chars().all(|c| c == '运'));
        assert_eq!(entry.action.len(), TEXT_BYTES_MAX);
    }
}
