//! The secrets a node needs, and the dev defaults kept in the data dir.
//!
//! The JWT secret is looked up in this order: `--jwt-secret`, then
//! `CONFAB_AUTH__JWT_SECRET`, then `auth.jwt_secret` in the config file, then
//! `<data_dir>/dev-jwt-secret` (which `confab up` creates). The snapshot key is
//! `store.snapshot_hmac_key` (hex) or `<data_dir>/snapshot-hmac.key`, created on
//! first start.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

const DEV_JWT_SECRET_FILE: &str = "dev-jwt-secret";
const SNAPSHOT_KEY_FILE: &str = "snapshot-hmac.key";
const MASTER_KEYS_FILE: &str = "master-keys";

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness from the os: {e}"))?;
    Ok(hex::encode(buf))
}

fn read_trimmed(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Creates a file only readable by its owner, unless it already exists (another
/// process may have won the race: its content is kept).
fn create_secret_file(path: &Path, content: &str) -> anyhow::Result<String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Written whole to a file of this process's own, then linked into place:
    // a node starting beside this one sees no file or the whole secret, never
    // an empty one (`create_new` then write would show it empty meanwhile).
    let staging = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&staging)
        .and_then(|mut file| {
            file.write_all(content.as_bytes())
                .and_then(|()| file.sync_all())
        })
        .with_context(|| format!("writing {}", staging.display()))?;
    let linked = std::fs::hard_link(&staging, path);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(content.to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_trimmed(path)?.with_context(|| format!("{} exists but is empty", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DEV_JWT_SECRET_FILE)
}

/// The JWT secret from config, or the data dir's dev secret.
pub(crate) fn jwt_secret(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    read_trimmed(&dev_secret_path(data_dir))?.with_context(|| {
        format!(
            "no jwt secret: pass --jwt-secret, set CONFAB_AUTH__JWT_SECRET or auth.jwt_secret, \
             or run `confab up --data-dir {}` once to create a dev secret",
            data_dir.display()
        )
    })
}

/// The JWT secret from config, or the data dir's dev secret, created if missing.
pub(crate) fn jwt_secret_or_create(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    let path = dev_secret_path(data_dir);
    match read_trimmed(&path)? {
        Some(secret) => Ok(secret),
        None => create_secret_file(&path, &random_hex(32)?),
    }
}

/// The cluster cookie: configured, or the data dir's, created if missing (so
/// that the nodes of a `confab up` cluster, which share a data dir, agree).
pub(crate) fn cluster_cookie(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    let path = data_dir.join("cluster-cookie");
    match read_trimmed(&path)? {
        Some(cookie) => Ok(cookie),
        None => create_secret_file(&path, &random_hex(32)?),
    }
}

/// The master keys that wrap the data-key ring: `crypto.keys`
/// (`CONFAB_CRYPTO__KEYS`), else the file `crypto.keys_file`, else the data dir's
/// `master-keys`, created if missing (a dev default: nodes sharing a data dir
/// agree, as `confab up`'s do).
pub(crate) fn master_keys(
    inline: &str,
    keys_file: &Path,
    data_dir: &Path,
) -> anyhow::Result<confab_runtime::keys::MasterKeys> {
    use confab_runtime::keys::MasterKeys;
    if !inline.is_empty() {
        return MasterKeys::from_env_value(inline).map_err(anyhow::Error::msg);
    }
    if !keys_file.as_os_str().is_empty() {
        return MasterKeys::from_file(keys_file).map_err(anyhow::Error::msg);
    }
    let path = data_dir.join(MASTER_KEYS_FILE);
    if read_trimmed(&path)?.is_none() {
        create_secret_file(&path, &MasterKeys::generate())?;
    }
    MasterKeys::from_file(&path).map_err(anyhow::Error::msg)
}

/// The snapshot HMAC key: configured hex, or the data dir's key, created if missing.
pub(crate) fn snapshot_key(configured_hex: &str, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let hex_key = if configured_hex.is_empty() {
        let path = data_dir.join(SNAPSHOT_KEY_FILE);
        match read_trimmed(&path)? {
            Some(key) => key,
            None => create_secret_file(&path, &random_hex(32)?)?,
        }
    } else {
        configured_hex.to_owned()
    };
    hex::decode(&hex_key).context("store.snapshot_hmac_key must be hex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_secret_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(jwt_secret("", dir.path()).is_err());
        let first = jwt_secret_or_create("", dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(jwt_secret("", dir.path()).unwrap(), first);
        assert_eq!(jwt_secret_or_create("", dir.path()).unwrap(), first);
        assert_eq!(jwt_secret("given", dir.path()).unwrap(), "given");
    }

    #[test]
    fn the_snapshot_key_is_stable_and_hex_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = snapshot_key("", dir.path()).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(snapshot_key("", dir.path()).unwrap(), key);
        assert!(snapshot_key("not hex", dir.path()).is_err());
    }
}
