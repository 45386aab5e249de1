//! Clients that keep talking while the cluster changes under them, and the
//! checks a user relies on afterwards: every turn answered, none lost, none
//! applied twice.
//!
//! Each user sends turn after turn (`m-1`, `m-2`...). A turn that gets an
//! error is sent again with the same id; a connection that closes or drops is
//! reopened on the next node of the list and the turn sent again, as the
//! protocol tells clients to do; so is a connection that answered
//! `unavailable` three times in a row. Each turn's time runs from its first send to
//! its reply.

use confab_proto::{ClientFrame, ErrorCode, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What every turn of this harness says (a greeting: no action, 3 events).
const TEXT: &str = "你好";
/// Events one such turn records: received, understood, reply.
pub const EVENTS_PER_TURN: u64 = 3;
/// A turn not answered within this is a failure (the test's hang guard).
const TURN_GIVE_UP: Duration = Duration::from_secs(30);
/// How long to wait for any one frame before taking the connection as dead.
const FRAME_WAIT: Duration = Duration::from_secs(10);
/// Pause before sending again after an error or a reconnect.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// `unavailable` answers in a row on one connection before the client tries
/// another node (the node may be cut off from the cluster), as the protocol
/// advises.
const UNAVAILABLE_BEFORE_MOVING: u32 = 3;

/// One answered turn.
#[derive(Debug, Clone)]
pub struct TurnLog {
    /// The message id.
    pub id: String,
    /// Its ack's seq (the first ack seen for it).
    pub ack: Option<u64>,
    /// When that ack came, from the first send.
    pub acked_after: Option<Duration>,
    /// Its reply's seq.
    pub reply: u64,
    /// From the first send to the reply.
    pub latency: Duration,
    /// Sent again (after an error or a reconnect) this many times.
    pub resent: u32,
    /// Why it was sent again, and how long into the turn: an error's code and
    /// message, or the connection that ended (with its close code), in order.
    pub setbacks: Vec<(Duration, String)>,
    /// When the reply came.
    pub at: Instant,
}

/// What one user saw.
#[derive(Debug, Clone, Default)]
pub struct UserLog {
    /// Who.
    pub uid: String,
    /// Every answered turn, in order.
    pub turns: Vec<TurnLog>,
    /// Close codes of the connections the server ended (`None`: dropped).
    pub closes: Vec<Option<u16>>,
    /// The owners named by the hellos, in order.
    pub owners: Vec<String>,
    /// Every hello, in order.
    pub hellos: Vec<Hello>,
    /// The turn this user gave up on (no reply within 30 s), with what it met;
    /// the user stopped talking there.
    pub gave_up: Option<(String, Vec<(Duration, String)>)>,
}

/// One hello a user saw.
#[derive(Debug, Clone)]
pub struct Hello {
    /// When the connection it opened was asked for.
    pub asked: Instant,
    /// The node that answered.
    pub via: String,
    /// The owner it named.
    pub node: String,
    /// The seq it reported.
    pub last_seq: u64,
    /// The highest seq acked or replied to this user before it was asked: a
    /// hello that reports less hid an acked turn.
    pub acked: u64,
}

/// Makes a chat token for a uid.
pub type Tokens = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Users talking to the cluster in the background.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<UserLog>>,
    /// The nodes clients connect to, tried in turn.
    pub urls: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// `users` start talking, each pausing `pause` between turns.
    pub fn start(urls: Vec<String>, users: &[String], pause: Duration, tokens: Tokens) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let urls = Arc::new(Mutex::new(urls));
        let tasks = users
            .iter()
            .enumerate()
            .map(|(i, uid)| {
                tokio::spawn(talk(
                    uid.clone(),
                    i,
                    Arc::clone(&urls),
                    Arc::clone(&stop),
                    pause,
                    Arc::clone(&tokens),
                ))
            })
            .collect();
        Load { stop, tasks, urls }
    }

    /// Stops after each user's turn in flight is answered.
    pub async fn finish(self) -> Vec<UserLog> {
        let logs = self.finish_all().await;
        for log in &logs {
            if let Some((id, setbacks)) = &log.gave_up {
                panic!(
                    "{} {id}: no reply within {TURN_GIVE_UP:?}; on the way (last 5): {:?}; {} turns answered before it; hellos (last 3): {:?}",
                    log.uid,
                    setbacks.iter().rev().take(5).collect::<Vec<_>>(),
                    log.turns.len(),
                    log.hellos.iter().rev().take(3).collect::<Vec<_>>(),
                );
            }
        }
        logs
    }

    /// Stops as [`Load::finish`] does, but returns every log, those of users
    /// that gave up on a turn too (`UserLog::gave_up`), for a checker to judge.
    pub async fn finish_all(self) -> Vec<UserLog> {
        self.stop.store(true, Ordering::Release);
        let mut logs = Vec::new();
        for task in self.tasks {
            logs.push(task.await.expect("a talker panicked"));
        }
        logs
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, uid: &str, token: &str, acked: u64, log: &mut UserLog) -> Option<Socket> {
    let asked = Instant::now();
    let mut request = url.into_client_request().ok()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().ok()?);
    let (mut socket, _) =
        tokio::time::timeout(FRAME_WAIT, tokio_tungstenite::connect_async(request))
            .await
            .ok()?
            .ok()?;
    match next_frame(&mut socket).await {
        Frame::Server(ServerFrame::Hello { node, last_seq, .. }) => {
            log.owners.push(node.clone());
            log.hellos.push(Hello {
                asked,
                via: url.to_owned(),
                node,
                last_seq,
                acked,
            });
            Some(socket)
        }
        // The session could not be activated (its owner is unreachable while
        // the ring changes): the server closes; the client tries again.
        Frame::Server(ServerFrame::Error { .. }) => None,
        Frame::Server(other) => panic!("{uid}: the first frame is not a hello: {other:?}"),
        Frame::Closed(code) => {
            log.closes.push(code);
            None
        }
    }
}

enum Frame {
    Server(ServerFrame),
    Closed(Option<u16>),
}

async fn next_frame(socket: &mut Socket) -> Frame {
    loop {
        match tokio::time::timeout(FRAME_WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return Frame::Server(
                    serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("{text} is not a server frame: {e}")),
                );
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Frame::Closed(frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return Frame::Closed(None),
        }
    }
}

async fn talk(
    uid: String,
    first_node: usize,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    pause: Duration,
    tokens: Tokens,
) -> UserLog {
    let token = tokens(&uid);
    let mut log = UserLog {
        uid: uid.clone(),
        ..UserLog::default()
    };
    let mut next_node = first_node;
    let mut socket: Option<Socket> = None;
    let mut k = 0;
    // The highest seq acked or replied to this user so far.
    let mut acked_seq = 0;
    let mut unavailable_in_a_row = 0;
    while !stop.load(Ordering::Acquire) {
        k += 1;
        let id = format!("m-{k}");
        let started = Instant::now();
        let mut ack = None;
        let mut sends = 0u32;
        let mut setbacks = Vec::new();
        let mut acked_after = None;
        let reply = 'turn: loop {
            if started.elapsed() >= TURN_GIVE_UP {
                log.gave_up = Some((id, setbacks));
                return log;
            }
            let Some(live) = socket.as_mut() else {
                let url = {
                    let urls = urls.lock().unwrap();
                    urls[next_node % urls.len()].clone()
                };
                next_node += 1;
                socket = open(&url, &uid, &token, acked_seq, &mut log).await;
                if socket.is_none() {
                    setbacks.push((started.elapsed(), format!("no session via {url}")));
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                continue;
            };
            sends += 1;
            let say = ClientFrame::Say {
                id: id.clone(),
                text: TEXT.into(),
            };
            let sent = live
                .send(Message::text(serde_json::to_string(&say).unwrap()))
                .await;
            if sent.is_err() {
                setbacks.push((started.elapsed(), "send failed".to_owned()));
                log.closes.push(None);
                socket = None;
                continue;
            }
            loop {
                match next_frame(live).await {
                    Frame::Server(ServerFrame::Ack { id: acked, seq }) if acked == id => {
                        ack.get_or_insert(seq);
                        acked_seq = acked_seq.max(seq);
                        acked_after.get_or_insert(started.elapsed());
                    }
                    Frame::Server(ServerFrame::Reply {
                        id: replied, seq, ..
                    }) if replied == id => {
                        unavailable_in_a_row = 0;
                        acked_seq = acked_seq.max(seq);
                        break 'turn seq;
                    }
                    Frame::Server(ServerFrame::Error {
                        id: Some(failed),
                        code,
                        message,
                    }) if failed == id => {
                        setbacks.push((started.elapsed(), format!("{code:?}: {message}")));
                        if code == ErrorCode::Unavailable {
                            unavailable_in_a_row += 1;
                            if unavailable_in_a_row >= UNAVAILABLE_BEFORE_MOVING {
                                unavailable_in_a_row = 0;
                                socket = None;
                            }
                        } else {
                            unavailable_in_a_row = 0;
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue 'turn;
                    }
                    Frame::Server(other) => panic!("{uid} {id}: unexpected {other:?}"),
                    Frame::Closed(code) => {
                        setbacks.push((started.elapsed(), format!("closed ({code:?})")));
                        log.closes.push(code);
                        socket = None;
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue 'turn;
                    }
                }
            }
        };
        log.turns.push(TurnLog {
            id,
            ack,
            acked_after,
            reply,
            latency: started.elapsed(),
            resent: sends.saturating_sub(1),
            setbacks,
            at: Instant::now(),
        });
        tokio::time::sleep(pause).await;
    }
    log
}

/// What every user relies on, checked: each turn was answered once, at the
/// seqs that follow the turns before it (nothing lost, nothing applied twice),
/// and the session, resumed on `url`, holds exactly those turns. Returns each
/// user's owner as that resume names it, and the breaches found (the first
/// wrong seq of each user, and each resume that disagrees).
pub async fn check(
    logs: &[UserLog],
    url: &str,
    tokens: &Tokens,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut owners = BTreeMap::new();
    let mut breaches = Vec::new();
    for log in logs {
        if log.turns.is_empty() {
            breaches.push(format!("{} never got a turn in", log.uid));
        }
        for (i, turn) in log.turns.iter().enumerate() {
            let i = i as u64;
            let expected_reply = (i + 1) * EVENTS_PER_TURN;
            if turn.reply != expected_reply {
                breaches.push(format!(
                    "{} {}: reply seq {} (expected {expected_reply}): a turn was lost or applied twice",
                    log.uid, turn.id, turn.reply
                ));
                break; // every later seq is off too: one breach per user
            }
            if let Some(ack) = turn.ack
                && ack != i * EVENTS_PER_TURN + 1
            {
                breaches.push(format!("{} {}: ack seq {ack}", log.uid, turn.id));
            }
        }
        let mut owner_and_seq = None;
        if let Ok(mut request) = url.into_client_request() {
            if let Ok(value) = format!("Bearer {}", tokens(&log.uid)).parse() {
                request.headers_mut().insert("authorization", value);
            }
            if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(request).await
                && let Frame::Server(ServerFrame::Hello { last_seq, node, .. }) =
                    next_frame(&mut socket).await
            {
                owner_and_seq = Some((node, last_seq));
            }
        }
        match owner_and_seq {
            None => breaches.push(format!("{}: no hello on resume", log.uid)),
            Some((node, last_seq)) => {
                let answered = log.turns.len() as u64 * EVENTS_PER_TURN;
                // The turn a user gave up on may have been recorded unseen.
                let unseen = if log.gave_up.is_some() {
                    EVENTS_PER_TURN
                } else {
                    0
                };
                if last_seq != answered && last_seq != answered + unseen {
                    breaches.push(format!(
                        "{}: the resumed session is at seq {last_seq}, the answered turns end at {answered}",
                        log.uid
                    ));
                }
                owners.insert(log.uid.clone(), node);
            }
        }
    }
    (owners, breaches)
}

/// Every hello that reported a `last_seq` below a seq already acked or
/// replied to its user: a read that hid an acked turn.
pub fn stale_hellos(logs: &[UserLog]) -> Vec<String> {
    logs.iter()
        .flat_map(|log| {
            log.hellos
                .iter()
                .filter(|hello| hello.last_seq < hello.acked)
                .map(move |hello| {
                    format!(
                        "{}: hello via {} (owner {}) said last_seq {} after seq {} was acked",
                        log.uid, hello.via, hello.node, hello.last_seq, hello.acked
                    )
                })
        })
        .collect()
}

/// [`check`], panicking on the first breach.
pub async fn assert_no_loss_no_duplicate(
    logs: &[UserLog],
    url: &str,
    tokens: &Tokens,
) -> BTreeMap<String, String> {
    let (owners, breaches) = check(logs, url, tokens).await;
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
    owners
}

/// The slowest turn of all users.
pub fn slowest(logs: &[UserLog]) -> Duration {
    logs.iter()
        .flat_map(|l| l.turns.iter().map(|t| t.latency))
        .max()
        .unwrap_or_default()
}

/// One line for the test's output: turns, resends, reconnects, slowest.
pub fn summary(logs: &[UserLog]) -> String {
    let turns: usize = logs.iter().map(|l| l.turns.len()).sum();
    let resent: u32 = logs
        .iter()
        .flat_map(|l| l.turns.iter().map(|t| t.resent))
        .sum();
    let closes: usize = logs.iter().map(|l| l.closes.len()).sum();
    format!(
        "{} users, {turns} turns, {resent} sent again, {closes} connections ended by the server, slowest {:?}",
        logs.len(),
        slowest(logs)
    )
}
