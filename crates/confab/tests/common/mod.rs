//! A real node process and a real WebSocket client, for the integration tests.
#![allow(dead_code, unreachable_pub)]

use confab_proto::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "integration-test-secret-0123456789";

/// How long any single wait may take before the test fails as hung.
pub const WAIT: Duration = Duration::from_secs(20);

pub use confab_testkit::free_port;
#[allow(unused_imports)] // used by the tests that start `confab up`, not by every test
pub use confab_testkit::free_ports;

/// A `confab node` process.
pub struct Node {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Node {
    pub async fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, &[]).await
    }

    /// Starts a node with extra `CONFAB_*` environment settings.
    pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Node {
        Self::start_member(data_dir, env, &[]).await
    }

    /// Starts a node with extra environment settings and extra flags
    /// (`--node-id`, `--cluster-port`, `--seeds`...).
    pub async fn start_member(data_dir: &Path, env: &[(&str, &str)], flags: &[&str]) -> Node {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
        command.arg("node").args(["--http-port", &port.to_string()]);
        if !flags.contains(&"--cluster-port") {
            command.args(["--cluster-port", &free_port().to_string()]);
        }
        let child = command
            .args(flags)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--jwt-secret", SECRET])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("confab node starts");
        let mut node = Node {
            child,
            port,
            data_dir: data_dir.to_owned(),
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("node exited during start-up: {status}");
            }
            if http_get(self.port, "/readyz").await.map(|r| r.0) == Some(200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one field of the node's `/proc/<pid>/status`.
    pub fn proc_status(&self, field: &str) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        let status = tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "node stopped with {status}");
    }

    /// SIGSTOP: the process freezes (a long GC pause, a frozen VM), its
    /// sockets stay open.
    pub fn pause(&self) {
        kill(self.pid(), Signal::SIGSTOP).unwrap();
    }

    /// SIGCONT: it goes on from where it was.
    pub fn resume(&self) {
        kill(self.pid(), Signal::SIGCONT).unwrap();
    }

    /// SIGKILL: no snapshot, no goodbye.
    pub async fn kill(mut self) {
        kill(self.pid(), Signal::SIGKILL).unwrap();
        tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .unwrap()
            .unwrap();
    }

    /// Waits for the process to exit by itself (a drained node does).
    pub async fn wait_exit(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the node never exited"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `confab up --nodes N` as the tests run it: HTTP on `http` and the ports
/// after it, free cluster ports, its data in `data`, warnings logged, nothing
/// on stdin. A test adds its secret, environment and where the output goes.
pub fn confab_up(nodes: u16, http: u16, data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
    command
        .args(["up", "--nodes", &nodes.to_string()])
        .args(["--http-port", &http.to_string()])
        .args(["--cluster-port", &free_ports(nodes).to_string()])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// A child process that does not outlive its test: `confab up`, which stops
/// its nodes when it stops. Dropped without [`ChildGuard::stop`] (the test
/// failed or returned early) it gets SIGTERM, and SIGKILL if it has not
/// exited within [`WAIT`], so that no cluster is left holding ports and
/// cores for the tests after it.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// Sends `signal` and waits (blocking) for the exit: its status.
    pub fn stop_with(mut self, signal: Signal) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("stopped once");
        kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
        child.wait().unwrap()
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("not stopped yet")
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("not stopped yet")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = kill(
                Pid::from_raw(i32::try_from(child.id()).unwrap()),
                Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + WAIT;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// `GET path`: the status and the body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token with these claims, signed with `secret`.
pub fn token_with(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// [`token`] as the load clients take it.
pub fn tokens() -> confab_testkit::load::Tokens {
    std::sync::Arc::new(token)
}

pub fn token(uid: &str) -> String {
    token_with(
        SECRET,
        serde_json::json!({"sub": uid, "scope": "chat", "exp": now_s() + 3600}),
    )
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol v1 client.
pub struct Client {
    socket: Socket,
    pub hello: ServerFrame,
}

/// What a connection ended with.
#[derive(Debug, PartialEq)]
pub enum End {
    Closed(Option<u16>),
    Dropped,
}

impl Client {
    /// Connects with the token in the `Authorization` header.
    pub async fn connect(url: &str, token: &str) -> Result<Client, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        let mut client = Client {
            socket,
            hello: ServerFrame::Pong,
        };
        client.hello = client.recv().await;
        assert!(
            matches!(client.hello, ServerFrame::Hello { .. }),
            "first frame is hello: {:?}",
            client.hello
        );
        Ok(client)
    }

    pub async fn as_uid(node: &Node, uid: &str) -> Client {
        Client::connect(&node.ws_url(), &token(uid)).await.unwrap()
    }

    pub fn last_seq(&self) -> u64 {
        match &self.hello {
            ServerFrame::Hello { last_seq, .. } => *last_seq,
            other => panic!("not a hello: {other:?}"),
        }
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_raw(Message::text(serde_json::to_string(frame).unwrap()))
            .await;
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.unwrap();
    }

    /// Sends these frames in one write: the node reads them together.
    pub async fn send_all(&mut self, frames: &[ClientFrame]) {
        for frame in frames {
            self.socket
                .feed(Message::text(serde_json::to_string(frame).unwrap()))
                .await
                .unwrap();
        }
        self.socket.flush().await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_raw(Message::text(text)).await;
    }

    /// The next server frame; panics if the connection ends or nothing comes.
    pub async fn recv(&mut self) -> ServerFrame {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame within the wait")
                .expect("connection open")
                .expect("frame reads");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("{text} is not a server frame: {e}"));
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// Reads until the connection ends; returns its close code.
    pub async fn end(&mut self) -> End {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the connection ends within the wait")
            {
                Some(Ok(Message::Close(frame))) => {
                    return End::Closed(frame.map(|f: CloseFrame| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return End::Dropped,
            }
        }
    }

    pub async fn say(&mut self, id: &str, text: &str) -> (u64, ServerFrame) {
        self.send(&ClientFrame::Say {
            id: id.into(),
            text: text.into(),
        })
        .await;
        let ack = self.recv().await;
        let ServerFrame::Ack { id: acked, seq } = ack else {
            panic!("expected an ack for {id}, got {ack:?}");
        };
        assert_eq!(acked, id);
        let reply = self.recv().await;
        assert!(
            matches!(&reply, ServerFrame::Reply { id: r, .. } if r == id),
            "{reply:?}"
        );
        (seq, reply)
    }

    /// Pings and expects the pong: the connection is still open and in order.
    pub async fn assert_alive(&mut self) {
        self.send(&ClientFrame::Ping).await;
        assert_eq!(self.recv().await, ServerFrame::Pong);
    }
}

/// A token with scope `admin`, for the admin API and confabctl.
pub fn admin_token() -> String {
    token_with(
        SECRET,
        serde_json::json!({"sub": "ops", "scope": "admin", "exp": now_s() + 3600}),
    )
}

/// The `confabctl` binary, built beside `confab` by a workspace build.
pub fn confabctl_path() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_confab")).with_file_name("confabctl");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p confabctl), or run the whole suite (.ci/run)",
        path.display()
    );
    path
}

/// Runs `confabctl --node URL --token ADMIN ARGS...`: exit code, stdout, stderr.
pub async fn confabctl(node: &Node, args: &[&str]) -> (i32, String, String) {
    confabctl_at(node.port, args).await
}

/// Runs `confabctl` against the node on HTTP port `port`.
pub async fn confabctl_at(port: u16, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(confabctl_path())
        .args(["--node", &format!("http://127.0.0.1:{port}")])
        .args(["--token", &admin_token()])
        .args(args)
        .output()
        .await
        .expect("confabctl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Copies the shipped flows (config/flows) into `dir`.
pub fn copy_shipped_flows(dir: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/flows");
    copy_dir(&shipped, dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Polls `check` until it holds; the deadline only guards against a hang.
pub async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn reply_seq(frame: &ServerFrame) -> u64 {
    match frame {
        ServerFrame::Reply { seq, .. } => *seq,
        other => panic!("not a reply: {other:?}"),
    }
}

/// The members `node` sees up and linked.
pub async fn linked_members(node: &Node) -> Vec<String> {
    let (code, stdout, _) = confabctl(node, &["--json", "nodes"]).await;
    if code != 0 {
        return Vec::new();
    }
    let view: confab_proto::admin::NodesView = serde_json::from_str(&stdout).unwrap();
    view.nodes
        .into_iter()
        .filter(|n| n.status == "up" && n.connected)
        .map(|n| n.id)
        .collect()
}

/// Starts `n` nodes on one data dir, `node-1` seeding the others, each with the
/// environment `env(id)` gives, and waits until each sees all of them up and
/// linked. Returns the nodes and the seed address.
pub async fn cluster_with(
    dir: &Path,
    n: usize,
    env: impl Fn(&str) -> Vec<(String, String)>,
) -> (Vec<Node>, String) {
    let seed_port = free_port();
    let seed = format!("127.0.0.1:{seed_port}");
    let mut nodes = Vec::new();
    for i in 1..=n {
        let id = format!("node-{i}");
        let env = env(&id);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let port = seed_port.to_string();
        let flags: Vec<&str> = if i == 1 {
            vec!["--node-id", &id, "--cluster-port", &port]
        } else {
            vec!["--node-id", &id, "--seeds", &seed]
        };
        nodes.push(Node::start_member(dir, &env, &flags).await);
    }
    for node in &nodes {
        eventually(|| async { linked_members(node).await.len() == n }).await;
    }
    (nodes, seed)
}

/// Waits for `attempt` to give a value; panics if none comes within the wait.
pub async fn eventually_value<T, F: std::future::Future<Output = Option<T>>>(
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no value within the wait"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.0 request with an optional bearer token and JSON body: the status
/// and the body.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    if let Some(body) = body {
        // The server may answer (413) before reading it all.
        let _ = stream.write_all(body.as_bytes()).await;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}
