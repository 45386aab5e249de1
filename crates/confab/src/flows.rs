//! The shipped flows (`config/flows/`), built into the binary so that `confab up`
//! serves them with nothing else installed. A node without `dialog.flows_dir`
//! uses `<data_dir>/flows`, written from these on first start and then the
//! operator's to edit: it is never overwritten.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// Path under the flows dir, and text.
const SHIPPED: &[(&str, &str)] = &[
    (
        "filter.toml",
        include_str!("../../../config/flows/filter.toml"),
    ),
    (
        "v1/policy.toml",
        include_str!("../../../config/flows/v1/policy.toml"),
    ),
    (
        "v1/common.toml",
        include_str!("../../../config/flows/v1/common.toml"),
    ),
    (
        "v1/shoe_shop.toml",
        include_str!("../../../config/flows/v1/shoe_shop.toml"),
    ),
    (
        "v1/callback.toml",
        include_str!("../../../config/flows/v1/callback.toml"),
    ),
    (
        "v1/order_status.toml",
        include_str!("../../../config/flows/v1/order_status.toml"),
    ),
    (
        "v1/lottery.toml",
        include_str!("../../../config/flows/v1/lottery.toml"),
    ),
];

/// The flows dir to serve: the configured one (which must exist), or
/// `<data_dir>/flows`, created from the shipped flows if missing.
pub(crate) fn flows_dir(configured: &Path, data_dir: &Path) -> anyhow::Result<PathBuf> {
    if !configured.as_os_str().is_empty() {
        anyhow::ensure!(
            configured.is_dir(),
            "dialog.flows_dir {} is not a directory",
            configured.display()
        );
        return Ok(configured.to_owned());
    }
    let dir = data_dir.join("flows");
    if !dir.exists() {
        // The nodes of `confab up` share a data dir and start at once: the
        // flows are written beside it and renamed into place, so that no node
        // ever reads a half-written dir. The first rename wins; the others
        // find the dir there and drop their copy.
        let staging = data_dir.join(format!(".flows-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        write_shipped(&staging)?;
        match std::fs::rename(&staging, &dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "shipped flows written; edit them, they reload without a restart");
            }
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&staging);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e).with_context(|| format!("cannot create {}", dir.display()));
            }
        }
    }
    Ok(dir)
}

/// Writes the shipped flows under `dir`.
pub(crate) fn write_shipped(dir: &Path) -> anyhow::Result<()> {
    for (relative, text) in SHIPPED {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every file of config/flows is shipped, so `confab up` serves what the
    /// repository documents.
    #[test]
    fn every_file_of_config_flows_is_shipped() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/flows");
        let mut on_disk = Vec::new();
        for entry in walk(&root) {
            on_disk.push(entry);
        }
        on_disk.sort();
        let mut shipped: Vec<String> = super::SHIPPED
            .iter()
            .map(|(p, _)| (*p).to_owned())
            .collect();
        shipped.sort();
        assert_eq!(on_disk, shipped);
    }

    fn walk(root: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                out.extend(walk(&path).into_iter().map(|p| format!("{name}/{p}")));
            } else {
                out.push(name);
            }
        }
        out
    }
}
