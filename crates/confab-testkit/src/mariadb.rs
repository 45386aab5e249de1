//! A private `mariadbd`.

use crate::process::{self, NotReady};
use sqlx::Connection;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tempfile::TempDir;

const INSTALL_DB: &str = "mariadb-install-db";
const MARIADBD: &str = "mariadbd";
/// Generous: a start after a SIGKILL runs crash recovery, and the machine may
/// be busy compiling.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports `start` tries when the one it picked gets taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// Settings that keep the server small and quick to start. They are given to
/// `mariadb-install-db` too (which passes them on to the server it bootstraps
/// with), so that the files it creates match what the server expects.
const SMALL: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    // The default redo log is 96 MiB, written out in full on install.
    "--innodb-log-file-size=16M",
];

/// A `mariadbd` of the test's own on 127.0.0.1 and a free port, with its data
/// directory in a temporary directory and a database `test`.
///
/// `root` connects over TCP without a password. Killing the server (SIGKILL)
/// keeps the data directory, so [`PrivateMariaDb::restart`] finds every
/// committed transaction again after InnoDB's crash recovery.
///
/// The server's output goes to `mariadbd.log` in the temporary directory
/// (`mariadb-install-db`'s to `install.log`). Dropping it kills the server and
/// deletes the directory.
#[derive(Debug)]
pub struct PrivateMariaDb {
    port: u16,
    child: Child,
    /// Certificate, key and CA (PEM) when started with TLS required.
    tls: Option<[PathBuf; 3]>,
    /// Holds the data and the logs; `Drop` kills the child before this is deleted.
    dir: TempDir,
}

impl PrivateMariaDb {
    /// Creates a data directory, starts a server on it, waits until `root` can
    /// run `SELECT 1` over TCP and creates the database `test`.
    ///
    /// Blocks while it does (about a second); fine in a `#[tokio::test]`, it
    /// does not need a runtime of the caller's.
    ///
    /// # Panics
    ///
    /// If `mariadb-install-db` fails, or the server exits or is not ready within
    /// 30 s; the message has the tail of the log.
    pub fn start() -> PrivateMariaDb {
        Self::start_with(None)
    }

    /// As [`PrivateMariaDb::start`], with TLS required of every client
    /// (`--require-secure-transport`): the server's certificate, its key and the
    /// CA that signed it, as PEM files. A plaintext login is refused.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> PrivateMariaDb {
        Self::start_with(Some([cert.to_owned(), key.to_owned(), ca.to_owned()]))
    }

    fn start_with(tls: Option<[PathBuf; 3]>) -> PrivateMariaDb {
        let dir = tempfile::Builder::new()
            .prefix("confab-mariadb-")
            .tempdir()
            .expect("create a temporary directory");
        install(dir.path());
        for attempt in 1..=PORT_ATTEMPTS {
            let port = crate::free_port();
            let mut child = spawn(dir.path(), port, tls.as_ref());
            match wait_ready(&mut child, dir.path(), port) {
                Ok(()) => {
                    let server = PrivateMariaDb {
                        port,
                        child,
                        tls,
                        dir,
                    };
                    server.create_test_database();
                    return server;
                }
                Err(NotReady::Exited(_))
                    if attempt < PORT_ATTEMPTS
                        && process::port_was_taken(&log_path(dir.path())) =>
                {
                    continue;
                }
                Err(why) => fail(&mut child, dir.path(), port, why),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `mysql://root@127.0.0.1:<port>/test`.
    pub fn url(&self) -> String {
        format!("{}/test", self.server_url())
    }

    /// `mysql://root@127.0.0.1:<port>`, without a database (for
    /// [`crate::TestDatabase::create`], say).
    pub fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        process::is_running(&mut self.child)
    }

    /// SIGKILLs the server and waits for it to be gone; its port refuses
    /// connections. The data directory stays. Does nothing if it is not running.
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    /// Starts the server again on the same port and data directory (killing it
    /// first if it is still running) and waits until it is ready.
    ///
    /// # Panics
    ///
    /// As [`PrivateMariaDb::start`]; also if the port was taken meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.dir.path(), self.port, self.tls.as_ref());
        if let Err(why) = wait_ready(&mut self.child, self.dir.path(), self.port) {
            fail(&mut self.child, self.dir.path(), self.port, why);
        }
    }

    fn create_test_database(&self) {
        let url = self.server_url();
        block_on(async {
            let mut conn = sqlx::MySqlConnection::connect(&url).await?;
            sqlx::query("CREATE DATABASE test")
                .execute(&mut conn)
                .await?;
            conn.close().await
        })
        .unwrap_or_else(|e| panic!("cannot create the database test on {url}: {e}"));
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        process::kill(&mut self.child);
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("mariadbd.log")
}

/// `--user=root` when we are root: mariadbd refuses to run as root without it
/// ("Please consult the MariaDB Documentation to find out how to run mariadbd
/// as root!"). Any other user runs it as itself and needs nothing.
fn user_args() -> &'static [&'static str] {
    if nix::unistd::geteuid().is_root() {
        &["--user=root"]
    } else {
        &[]
    }
}

/// Times `mariadb-install-db` is tried before a test gives up.
const INSTALL_ATTEMPTS: usize = 2;

/// Creates the system tables in `<dir>/data`. A failed install is tried once
/// more in an emptied data directory (one failed in a CI run with nothing of
/// its cause in the log's tail, while other tests started servers of their
/// own); the first failure's log is printed, so that it is seen either way.
fn install(dir: &Path) {
    let log = dir.join("install.log");
    for attempt in 1..=INSTALL_ATTEMPTS {
        let data = dir.join("data");
        let _ = std::fs::remove_dir_all(&data);
        let mut cmd = Command::new(crate::process::binary(INSTALL_DB));
        // `--no-defaults` must come first: no /etc/mysql/*.cnf may leak in.
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            // root@localhost, root@127.0.0.1 and root@::1 without a password, rather
            // than root@localhost through unix_socket authentication only.
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(user_args())
            .args(SMALL);
        let status = process::spawn_logged(&mut cmd, &log)
            .wait()
            .expect("wait for mariadb-install-db");
        if status.success() {
            return;
        }
        let tail = process::log_tail(&log, 120);
        assert!(
            attempt < INSTALL_ATTEMPTS,
            "{INSTALL_DB} failed ({status}) {attempt} times; tail of {}:\n{tail}",
            log.display(),
        );
        eprintln!("{INSTALL_DB} failed ({status}); trying once more. Its log:\n{tail}");
    }
}

fn spawn(dir: &Path, port: u16, tls: Option<&[PathBuf; 3]>) -> Child {
    let mut cmd = Command::new(crate::process::binary(MARIADBD));
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        // Its own socket and pid file, not /run/mysqld's of the shared server.
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--tmpdir={}", dir.display()))
        // Clients are matched against root@127.0.0.1 by address, with no DNS
        // lookup of the client.
        .arg("--skip-name-resolve")
        .arg("--skip-log-bin")
        .args(user_args())
        .args(SMALL);
    if let Some([cert, key, ca]) = tls {
        cmd.arg(format!("--ssl-cert={}", cert.display()))
            .arg(format!("--ssl-key={}", key.display()))
            .arg(format!("--ssl-ca={}", ca.display()))
            .arg("--require-secure-transport=ON");
    }
    process::spawn_logged(&mut cmd, &log_path(dir))
}

fn wait_ready(child: &mut Child, dir: &Path, port: u16) -> Result<(), NotReady> {
    let url = format!("mysql://root@127.0.0.1:{port}");
    // As the server names it: the path with any symbolic link resolved.
    let datadir = std::fs::canonicalize(dir.join("data")).unwrap_or_else(|_| dir.join("data"));
    process::wait_ready(child, READY_TIMEOUT, || block_on(serves(&url, &datadir)))
}

/// Whether `root` can connect to `url` and the server that answers keeps its
/// data in `datadir`: ours, not another that holds the port while ours has
/// not bound it yet or failed to.
async fn serves(url: &str, datadir: &Path) -> bool {
    let attempt = async {
        let mut conn = sqlx::MySqlConnection::connect(url).await?;
        let theirs: String = sqlx::query_scalar("SELECT @@datadir")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(theirs)
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        // Both resolved: the server may name it with or without symbolic links.
        Ok(Ok(theirs)) => std::fs::canonicalize(theirs.trim_end_matches('/'))
            .is_ok_and(|theirs| theirs == datadir),
        _ => false,
    }
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own, so
/// that it works whether or not the caller is inside a tokio runtime (where
/// `block_on` would panic).
fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a tokio runtime")
                    .block_on(fut)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn fail(child: &mut Child, dir: &Path, port: u16, why: NotReady) -> ! {
    process::kill(child);
    let what = match why {
        NotReady::Exited(status) => format!("exited ({status})"),
        NotReady::TimedOut => format!("was not ready within {READY_TIMEOUT:?}"),
    };
    panic!(
        "private mariadbd on 127.0.0.1:{port} {what}; tail of {}:\n{}",
        log_path(dir).display(),
        process::log_tail(&log_path(dir), 30)
    );
}
