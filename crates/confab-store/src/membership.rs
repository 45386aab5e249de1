//! Where the cluster's member table lives: one record, changed only by
//! compare-and-set on its version, so that of two concurrent proposals made from
//! the same table exactly one wins. The embedded SQLite store holds it for local
//! clusters, Redis in production. The membership state machine
//! (`confab_core::membership`) asks for reads and compare-and-sets; the shell
//! carries them out here.

use crate::{StoreError, StoreFuture};
use confab_core::membership::MemberTable;

/// The outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the proposal was stored.
    pub applied: bool,
    /// The table stored now (the proposal if applied, else the one that won).
    pub table: MemberTable,
}

/// A store of the member table.
pub trait MembershipStore: Send + Sync + 'static {
    /// The table; an empty one at version 0 if none was ever stored.
    fn read_members(&self) -> StoreFuture<'_, MemberTable>;

    /// Stores `table` if the stored version is still `expected`. The proposal's
    /// version must be `expected + 1`.
    fn cas_members<'a>(
        &'a self,
        expected: u64,
        table: &'a MemberTable,
    ) -> StoreFuture<'a, CasOutcome>;
}

/// Refuses a proposal whose version does not follow the one it was made from.
pub(crate) fn check_proposal(expected: u64, table: &MemberTable) -> Result<String, StoreError> {
    if table.version != expected + 1 {
        return Err(StoreError::Corrupt(format!(
            "a member table proposed from version {expected} must have version {}, not {}",
            expected + 1,
            table.version
        )));
    }
    Ok(serde_json::to_string(table).expect("member tables always serialize"))
}

/// Decodes a stored table; nothing stored (or an empty body) is the empty table
/// at version 0.
pub(crate) fn decode(body: Option<&str>) -> Result<MemberTable, StoreError> {
    match body {
        None | Some("") => Ok(MemberTable::default()),
        Some(body) => serde_json::from_str(body)
            .map_err(|e| StoreError::Corrupt(format!("stored member table does not decode: {e}"))),
    }
}
