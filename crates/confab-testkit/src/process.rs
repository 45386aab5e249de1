//! What the server helpers share: spawning a server with its output in a log
//! file, waiting for it to answer, killing it.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a starting server is probed.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// Spawns `cmd` with stdin closed and stdout and stderr appended to `log`
/// (appended, so that the log of a restarted server keeps its earlier runs).
pub(crate) fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = open_log(log);
    let err = out.try_clone().expect("clone the log file handle");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn open_log(log: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()))
}

/// Whether the child has not exited yet.
pub(crate) fn is_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// SIGKILLs the child (if still running) and reaps it.
pub(crate) fn kill(child: &mut Child) {
    // `Child::kill` sends SIGKILL on Unix; it fails only when the child has
    // already been reaped, which is fine.
    let _ = child.kill();
    let _ = child.wait();
}

/// Why a server did not become ready.
pub(crate) enum NotReady {
    /// The process exited first.
    Exited(ExitStatus),
    /// It was still not answering at the deadline.
    TimedOut,
}

/// Polls `probe` until it returns true, the child exits or `timeout` passes.
pub(crate) fn wait_ready(
    child: &mut Child,
    timeout: Duration,
    mut probe: impl FnMut() -> bool,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotReady::Exited(status));
        }
        if probe() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut);
        }
        std::thread::sleep(POLL);
    }
}

/// The last `lines` lines of the log at `path`, for panic messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Whether the server's log says its port was taken (by another process that
/// got it between [`crate::free_port`] and the server's bind).
pub(crate) fn port_was_taken(log: &Path) -> bool {
    log_tail(log, 40).contains("Address already in use")
}

/// The path of a server binary: found on `PATH`, else in `/usr/sbin` (where
/// Debian puts `mariadbd`, often off a user's `PATH`). Panics naming the package
/// to install when it is nowhere.
pub(crate) fn binary(name: &str) -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (Debian: apt-get install redis-server mariadb-server)")
        })
}
