//! What the data-key ring's versions still cover in a store: how many snapshots
//! and events each version sealed, and which snapshots the re-encryption job
//! has left to rewrite (`confabctl keys status`, `keys retire`).
//!
//! The store reads a snapshot's first 10 bytes (magic, format, key version) and
//! looks for the sealed-value marker `enc:1:<version>:` in event bodies; both
//! are full scans, as fits an operator's occasional question.

use crate::{StoreError, StoreFuture};
use confab_core::Uid;
use confab_core::crypto::KeyVersion;
use confab_core::session::Snapshot;
use std::collections::BTreeMap;

/// The key "version" under which [`KeyUsageStore::snapshot_key_versions`]
/// counts snapshots of the plaintext format 1.
pub const PLAINTEXT_SNAPSHOTS: KeyVersion = 0;

/// Bytes of a snapshot's header that name its key version.
pub const SNAPSHOT_HEADER_BYTES: usize = 10;

/// Key usage, asked of the durable tier.
pub trait KeyUsageStore: Send + Sync + 'static {
    /// Snapshots per key version ([`PLAINTEXT_SNAPSHOTS`] for format 1).
    fn snapshot_key_versions(&self) -> StoreFuture<'_, BTreeMap<KeyVersion, u64>>;

    /// Events holding at least one value sealed under `version`.
    fn events_sealed_under(&self, version: KeyVersion) -> StoreFuture<'_, u64>;

    /// Up to `limit` uids above `after`, in uid order, whose snapshot is not
    /// sealed under `version`.
    fn snapshots_not_under<'a>(
        &'a self,
        version: KeyVersion,
        after: Option<&'a Uid>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Uid>>;
}

/// The header of a snapshot sealed under `version`.
pub fn sealed_header(version: KeyVersion) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[..4].copy_from_slice(b"CFSN");
    header[4..6]
        .copy_from_slice(&confab_core::session::SNAPSHOT_SEALED_FORMAT_VERSION.to_be_bytes());
    header[6..].copy_from_slice(&version.to_be_bytes());
    header
}

/// The marker every value sealed under `version` carries.
pub fn sealed_marker(version: KeyVersion) -> String {
    format!("{}{version}:", confab_core::crypto::SEALED_PREFIX)
}

/// Adds header counts up by key version.
pub(crate) fn by_version(
    headers: impl IntoIterator<Item = (Vec<u8>, i64)>,
) -> Result<BTreeMap<KeyVersion, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    for (header, count) in headers {
        let version = Snapshot::key_version(&header).unwrap_or(PLAINTEXT_SNAPSHOTS);
        *counts.entry(version).or_default() += u64::try_from(count).unwrap_or(0);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_its_version() {
        let header = sealed_header(258);
        assert_eq!(Snapshot::key_version(&header), Some(258));
        let counts = by_version([(header.to_vec(), 2), (b"CFSN\0\x01{\"ui".to_vec(), 3)]).unwrap();
        assert_eq!(counts, BTreeMap::from([(0, 3), (258, 2)]));
        assert_eq!(sealed_marker(3), "enc:1:3:");
    }
}
