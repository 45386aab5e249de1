//! The data-key ring, kept cluster-wide in the store.
//!
//! Envelope encryption, as a KMS does it: each data-key version is 32 random
//! bytes, kept in the store only *wrapped* (encrypted) by a master key that
//! never reaches the store. The master keys come from a [`KeyProvider`]: a
//! file ([`MasterKeys::from_file`], `crypto.keys_file`) or the environment
//! ([`MasterKeys::from_env_value`], `CONFAB_CRYPTO__KEYS`); `docs/security.md`
//! shows how Vault transit or AWS KMS would implement the trait.
//!
//! The ring is the setting [`RING_SETTING`], changed by compare-and-set:
//! - the first node to start writes version 1;
//! - [`KeyManager::rotate`] adds a version; every node re-reads the setting every
//!   [`FOLLOW_EVERY`] and writes with the newest version from then on;
//! - [`KeyManager::retire`] removes a version nothing uses any more.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use confab_core::crypto::{DataKey, KEY_BYTES, KeyRing, KeyVersion, NONCE_BYTES, SharedRing};
use confab_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The setting that holds the wrapped ring.
pub const RING_SETTING: &str = "crypto.data_keys";

/// How often each node re-reads the ring: a rotation reaches every node within it.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Versions a ring holds, at most.
pub const VERSIONS_MAX: usize = 64;

/// Compare-and-set attempts of one change before it gives up.
const CAS_ATTEMPTS: usize = 8;

/// A boxed future, for the provider's methods.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A data key as the store keeps it: wrapped by a master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Which master key wrapped it (the provider's name for it).
    pub master: String,
    /// The wrapped material, base64.
    pub wrapped: String,
}

/// Wraps and unwraps data keys with master keys it never lets out.
pub trait KeyProvider: Send + Sync + 'static {
    /// Wraps `material` (data-key version `version`) with the newest master key.
    fn wrap<'a>(
        &'a self,
        version: KeyVersion,
        material: &'a [u8; KEY_BYTES],
    ) -> ProviderFuture<'a, WrappedKey>;

    /// Unwraps what [`KeyProvider::wrap`] made for `version`.
    fn unwrap<'a>(
        &'a self,
        version: KeyVersion,
        wrapped: &'a WrappedKey,
    ) -> ProviderFuture<'a, [u8; KEY_BYTES]>;
}

/// Master keys held in memory, by name: what the file and environment
/// providers give. The newest (last in name order) wraps.
pub struct MasterKeys {
    keys: BTreeMap<String, DataKey>,
}

impl MasterKeys {
    /// Parses `NAME=HEX,NAME=HEX...` (or one per line): each 32 bytes, hex.
    /// Names sort the keys; the last wraps new data keys.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for entry in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
        {
            let (name, hex_key) = entry.split_once('=').ok_or_else(|| {
                format!("master key entry {:?}: expected NAME=HEX", redact(entry))
            })?;
            let name = name.trim();
            if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "master key name {name:?}: 1 to 64 printable characters"
                ));
            }
            let material =
                hex::decode(hex_key.trim()).map_err(|_| format!("master key {name}: not hex"))?;
            let key = DataKey::new(0, &material).map_err(|e| format!("master key {name}: {e}"))?;
            keys.insert(name.to_owned(), key);
        }
        if keys.is_empty() {
            return Err("no master key: give NAME=HEX (32 bytes of hex)".into());
        }
        Ok(Self { keys })
    }

    /// The file provider: master keys from a file only its owner may read.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is readable by others (mode {:o}): chmod 600 it",
                    path.display(),
                    meta.permissions().mode() & 0o777
                ));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The environment provider: master keys from a variable's value.
    pub fn from_env_value(value: &str) -> Result<Self, String> {
        Self::parse(value).map_err(|e| format!("CONFAB_CRYPTO__KEYS: {e}"))
    }

    /// A new master-key file's content: one fresh key named `m1`.
    pub fn generate() -> String {
        let mut material = [0u8; KEY_BYTES];
        getrandom::fill(&mut material).expect("the operating system gives randomness");
        format!("m1={}\n", hex::encode(material))
    }

    fn aad(version: KeyVersion) -> Vec<u8> {
        format!("confab data key v{version}").into_bytes()
    }
}

fn redact(entry: &str) -> String {
    entry.chars().take(8).collect::<String>() + "..."
}

impl KeyProvider for MasterKeys {
    fn wrap<'a>(
        &'a self,
        version: KeyVersion,
        material: &'a [u8; KEY_BYTES],
    ) -> ProviderFuture<'a, WrappedKey> {
        Box::pin(async move {
            let (name, master) = self.keys.iter().next_back().expect("parse keeps one key");
            let nonce = crate::sealed::random_nonce();
            let mut wrapped = nonce.to_vec();
            wrapped.extend(master.encrypt(&nonce, &Self::aad(version), material));
            Ok(WrappedKey {
                master: name.clone(),
                wrapped: STANDARD.encode(wrapped),
            })
        })
    }

    fn unwrap<'a>(
        &'a self,
        version: KeyVersion,
        wrapped: &'a WrappedKey,
    ) -> ProviderFuture<'a, [u8; KEY_BYTES]> {
        Box::pin(async move {
            let master = self.keys.get(&wrapped.master).ok_or_else(|| {
                format!(
                    "data key v{version} is wrapped by master key {:?}, which this node lacks",
                    wrapped.master
                )
            })?;
            let bytes = STANDARD
                .decode(&wrapped.wrapped)
                .map_err(|_| format!("data key v{version}: wrapped value is not base64"))?;
            if bytes.len() < NONCE_BYTES {
                return Err(format!("data key v{version}: wrapped value is truncated"));
            }
            let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
            let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce");
            let material = master
                .decrypt(&nonce, &Self::aad(version), ciphertext)
                .map_err(|_| {
                    format!(
                        "data key v{version} does not unwrap with master key {:?}: a different key under that name",
                        wrapped.master
                    )
                })?;
            material
                .try_into()
                .map_err(|_| format!("data key v{version}: not {KEY_BYTES} bytes"))
        })
    }
}

/// One version as the setting keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// The version.
    pub version: KeyVersion,
    /// When it was added, ms since the Unix epoch.
    pub created_ms: u64,
    /// The material, wrapped.
    #[serde(flatten)]
    pub key: WrappedKey,
}

/// The setting's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRing {
    /// Every version, oldest first.
    pub versions: Vec<StoredVersion>,
}

/// Why the ring could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// The provider failed (a missing master key, mostly).
    #[error("{0}")]
    Provider(String),
    /// The setting does not parse.
    #[error("the stored key ring is corrupt: {0}")]
    Corrupt(String),
    /// Too many writers at once.
    #[error("the key ring changed under {CAS_ATTEMPTS} attempts in a row: retry")]
    Contended,
    /// A request that cannot be granted.
    #[error("{0}")]
    Refused(String),
}

/// Keeps this node's ring in step with the store's.
#[derive(Clone)]
pub struct KeyManager {
    store: Arc<dyn Store>,
    provider: Arc<dyn KeyProvider>,
    ring: SharedRing,
    /// The revision of the ring installed; held while a refresh reads and
    /// installs, so that a slow refresh never installs an older ring over a
    /// newer one.
    revision: Arc<tokio::sync::Mutex<u64>>,
}

impl KeyManager {
    /// Reads the ring from the store, writing version 1 if there is none yet.
    pub async fn start(
        store: Arc<dyn Store>,
        provider: Arc<dyn KeyProvider>,
    ) -> Result<Self, KeyError> {
        let manager = Self {
            store,
            provider,
            ring: SharedRing::default(),
            revision: Arc::default(),
        };
        for _ in 0..CAS_ATTEMPTS {
            let (revision, stored) = manager.read().await?;
            if !stored.versions.is_empty() {
                manager.install(revision, &stored).await?;
                return Ok(manager);
            }
            let first = manager.new_version(1).await?;
            let ring = StoredRing {
                versions: vec![first],
            };
            if manager.write(revision, &ring).await? {
                info!("data-key ring created at version 1");
            }
        }
        Err(KeyError::Contended)
    }

    /// The ring, shared with the sessions.
    pub fn ring(&self) -> SharedRing {
        self.ring.clone()
    }

    async fn read(&self) -> Result<(u64, StoredRing), KeyError> {
        match self.store.setting(RING_SETTING).await? {
            None => Ok((0, StoredRing::default())),
            Some(setting) => {
                let ring = serde_json::from_str(&setting.body)
                    .map_err(|e| KeyError::Corrupt(e.to_string()))?;
                Ok((setting.revision, ring))
            }
        }
    }

    async fn write(&self, expected: u64, ring: &StoredRing) -> Result<bool, KeyError> {
        let body = serde_json::to_string(ring).expect("a ring serializes");
        Ok(self
            .store
            .put_setting(RING_SETTING, expected, &body)
            .await?)
    }

    async fn new_version(&self, version: KeyVersion) -> Result<StoredVersion, KeyError> {
        let mut material = [0u8; KEY_BYTES];
        getrandom::fill(&mut material).expect("the operating system gives randomness");
        let key = self
            .provider
            .wrap(version, &material)
            .await
            .map_err(KeyError::Provider)?;
        Ok(StoredVersion {
            version,
            created_ms: crate::shared::now_ms(),
            key,
        })
    }

    /// Installs `stored` unless a ring at `revision` or newer is installed.
    async fn install(&self, revision: u64, stored: &StoredRing) -> Result<(), KeyError> {
        let mut installed = self.revision.lock().await;
        if revision <= *installed && !self.ring.get().versions().is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(stored.versions.len());
        for v in &stored.versions {
            let material = self
                .provider
                .unwrap(v.version, &v.key)
                .await
                .map_err(KeyError::Provider)?;
            keys.push(
                DataKey::new(v.version, &material).map_err(|e| KeyError::Corrupt(e.to_string()))?,
            );
        }
        let ring = KeyRing::new(keys);
        if let Ok(current) = ring.current() {
            metrics::gauge!("confab_data_key_version").set(f64::from(current.version()));
        }
        self.ring.replace(ring);
        *installed = revision;
        Ok(())
    }

    /// Re-reads the ring, installing it if it is newer than the one held.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let (revision, stored) = self.read().await?;
        if revision > *self.revision.lock().await {
            self.install(revision, &stored).await?;
            info!(
                versions = ?self.ring.get().versions(),
                "data-key ring reloaded"
            );
        }
        Ok(())
    }

    /// Follows the store's ring until the process ends.
    pub fn follow(&self) {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FOLLOW_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = manager.refresh().await {
                    warn!(error = %e, "data-key ring not refreshed; writing with the versions held");
                }
            }
        });
    }

    /// The versions in the store, oldest first.
    pub async fn versions(&self) -> Result<Vec<StoredVersion>, KeyError> {
        Ok(self.read().await?.1.versions)
    }

    /// Adds a version; new writes use it once each node has read it. Returns it.
    pub async fn rotate(&self) -> Result<KeyVersion, KeyError> {
        for _ in 0..CAS_ATTEMPTS {
            let (revision, mut stored) = self.read().await?;
            if stored.versions.len() >= VERSIONS_MAX {
                return Err(KeyError::Refused(format!(
                    "the ring holds {VERSIONS_MAX} versions, its limit: retire old ones first"
                )));
            }
            let next = stored.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            stored.versions.push(self.new_version(next).await?);
            if self.write(revision, &stored).await? {
                self.refresh().await?;
                return Ok(next);
            }
        }
        Err(KeyError::Contended)
    }

    /// Removes a version. The caller checks first that nothing uses it; the
    /// newest version is never removed.
    pub async fn retire(&self, version: KeyVersion) -> Result<(), KeyError> {
        for _ in 0..CAS_ATTEMPTS {
            let (revision, mut stored) = self.read().await?;
            let newest = stored.versions.iter().map(|v| v.version).max();
            if newest == Some(version) {
                return Err(KeyError::Refused(format!(
                    "v{version} is the newest version, what every write uses: rotate first"
                )));
            }
            let before = stored.versions.len();
            stored.versions.retain(|v| v.version != version);
            if stored.versions.len() == before {
                return Err(KeyError::Refused(format!(
                    "no version v{version} in the ring"
                )));
            }
            if self.write(revision, &stored).await? {
                self.refresh().await?;
                return Ok(());
            }
        }
        Err(KeyError::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_parse_and_refuse_bad_entries() {
        let k = "00".repeat(32);
        assert!(MasterKeys::parse(&format!("m1={k}")).is_ok());
        assert!(MasterKeys::parse(&format!("# comment\nm1={k}\nm2={k}\n")).is_ok());
        for bad in [
            "",
            "m1",
            "m1=zz",
            &format!("m1={}", "00".repeat(16)),
            &format!("={k}"),
        ] {
            assert!(MasterKeys::parse(bad).is_err(), "{bad}");
        }
        let generated = MasterKeys::generate();
        assert!(MasterKeys::parse(&generated).is_ok());
    }

    #[tokio::test]
    async fn a_wrapped_key_unwraps_only_with_its_master_and_version() {
        let keys = MasterKeys::parse(&format!("m1={}", "11".repeat(32))).unwrap();
        let material = [9u8; KEY_BYTES];
        let wrapped = keys.wrap(3, &material).await.unwrap();
        assert!(!wrapped.wrapped.contains(&STANDARD.encode(material)));
        assert_eq!(keys.unwrap(3, &wrapped).await.unwrap(), material);
        assert!(
            keys.unwrap(4, &wrapped).await.is_err(),
            "bound to its version"
        );
        let other = MasterKeys::parse(&format!("m1={}", "22".repeat(32))).unwrap();
        assert!(other.unwrap(3, &wrapped).await.is_err());
        let missing = MasterKeys::parse(&format!("m9={}", "11".repeat(32))).unwrap();
        let e = missing.unwrap(3, &wrapped).await.unwrap_err();
        assert!(e.contains("lacks"), "{e}");
    }
}
