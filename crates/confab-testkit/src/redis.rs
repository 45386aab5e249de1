//! A private `redis-server`.

use crate::process::{self, NotReady};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tempfile::TempDir;

const REDIS_SERVER: &str = "redis-server";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports `start` tries when the one it picked gets taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// A `redis-server` of the test's own on 127.0.0.1 and a free port, without
/// persistence (no RDB, no AOF): killing it loses its data.
///
/// Its output goes to `redis.log` in its temporary directory. Dropping it kills
/// the server and deletes the directory.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Child,
    /// Certificate, key and CA (PEM) when it speaks only TLS.
    tls: Option<[PathBuf; 3]>,
    /// Holds the log; `Drop` kills the child before this is deleted.
    dir: TempDir,
}

impl PrivateRedis {
    /// Starts a server and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` cannot be run, exits, or does not answer within 10 s;
    /// the message has the tail of its log.
    pub fn start() -> PrivateRedis {
        Self::start_with(None)
    }

    /// As [`PrivateRedis::start`], speaking only TLS on its port (no plaintext
    /// port; clients need no certificate of their own): the server's
    /// certificate, its key and the CA that signed it, as PEM files.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> PrivateRedis {
        Self::start_with(Some([cert.to_owned(), key.to_owned(), ca.to_owned()]))
    }

    fn start_with(tls: Option<[PathBuf; 3]>) -> PrivateRedis {
        let dir = tempfile::Builder::new()
            .prefix("confab-redis-")
            .tempdir()
            .expect("create a temporary directory");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = crate::free_port();
            let mut child = spawn(&dir, port, tls.as_ref());
            match wait_ready(&mut child, port, tls.as_ref()) {
                Ok(()) => {
                    return PrivateRedis {
                        port,
                        child,
                        tls,
                        dir,
                    };
                }
                Err(NotReady::Exited(_))
                    if attempt < PORT_ATTEMPTS && process::port_was_taken(&log_path(&dir)) =>
                {
                    continue;
                }
                Err(why) => fail(&mut child, &dir, port, why),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://` when it speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        process::is_running(&mut self.child)
    }

    /// SIGKILLs the server and waits for it to be gone: its port refuses
    /// connections and its data is lost. Does nothing if it is not running.
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    /// Starts the server again, empty, on the same port (killing it first if
    /// it is still running) and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// As [`PrivateRedis::start`]; also if the port was taken meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.dir, self.port, self.tls.as_ref());
        if let Err(why) = wait_ready(&mut self.child, self.port, self.tls.as_ref()) {
            fail(&mut self.child, &self.dir, self.port, why);
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        process::kill(&mut self.child);
    }
}

fn log_path(dir: &TempDir) -> PathBuf {
    dir.path().join("redis.log")
}

fn spawn(dir: &TempDir, port: u16, tls: Option<&[PathBuf; 3]>) -> Child {
    let mut cmd = Command::new(crate::process::binary(REDIS_SERVER));
    match tls {
        None => {
            cmd.arg("--port").arg(port.to_string());
        }
        Some([cert, key, ca]) => {
            cmd.args(["--port", "0", "--tls-port"])
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]);
        }
    }
    cmd.args(["--bind", "127.0.0.1"])
        // No persistence: `--save ""` turns RDB snapshots off.
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .args(["--daemonize", "no"]);
    process::spawn_logged(&mut cmd, &log_path(dir))
}

fn wait_ready(child: &mut Child, port: u16, tls: Option<&[PathBuf; 3]>) -> Result<(), NotReady> {
    match tls {
        None => process::wait_ready(child, READY_TIMEOUT, || ping(port)),
        Some([_, _, ca]) => process::wait_ready(child, READY_TIMEOUT, || tls_ping(port, ca)),
    }
}

/// Whether the TLS server on `port` answers `PING`, asked by `redis-cli --tls`.
fn tls_ping(port: u16, ca: &Path) -> bool {
    Command::new("redis-cli")
        .args(["--tls", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("--cacert")
        .arg(ca)
        .arg("PING")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "PONG")
}

/// Whether the server on `port` answers `PING` with `+PONG` (an inline
/// command, so no client library is needed).
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

fn fail(child: &mut Child, dir: &TempDir, port: u16, why: NotReady) -> ! {
    process::kill(child);
    let what = match why {
        NotReady::Exited(status) => format!("exited ({status})"),
        NotReady::TimedOut => format!("did not answer PING within {READY_TIMEOUT:?}"),
    };
    panic!(
        "private redis-server on 127.0.0.1:{port} {what}; tail of {}:\n{}",
        log_path(dir).display(),
        process::log_tail(&log_path(dir), 30)
    );
}
