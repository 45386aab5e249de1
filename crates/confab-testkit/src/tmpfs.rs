//! A small tmpfs of the test's own: a disk that fills up on demand.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs mounted at a directory, unmounted on drop (lazily, so a process
/// still holding a file there does not keep it mounted).
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8m`, `256m`) at `path`, creating it.
    ///
    /// # Errors
    ///
    /// When `mount` fails, most often for want of root: the message says so.
    pub fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!(
                "cannot mount a tmpfs at {} ({status}): a disk that fills up needs root",
                path.display()
            ));
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills it (`true`) with a filler file written until no byte fits, or
    /// deletes the filler (`false`).
    ///
    /// # Errors
    ///
    /// If the filler cannot be created or removed.
    pub fn fill(&self, full: bool) -> std::io::Result<()> {
        let filler = self.path.join("filler");
        if !full {
            return match std::fs::remove_file(&filler) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 64 * 1024];
        // Bounded by the tmpfs's size: the write that finds no room ends it.
        while file.write_all(&chunk).is_ok() {}
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
