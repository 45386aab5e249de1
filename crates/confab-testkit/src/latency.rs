//! Added latency on one host of a [`crate::netns::Network`], without the netem
//! qdisc (which this machine's kernel lacks): an iptables rule in the host's
//! namespace queues every packet it sends (NFQUEUE), and a thread inside that
//! namespace holds each one for the delay before letting it go, in the order
//! they came. Bounded: the kernel queue and the held packets are at most
//! [`HELD_MAX`]; past that, packets pass at once (fail open), never dropped by
//! this.

use nfq::{Queue, Verdict};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Packets held at once, and the kernel queue's length.
pub(crate) const HELD_MAX: usize = 8_192;

/// The thread that delays one host's packets; stopped (every held packet let
/// go) on drop.
#[derive(Debug)]
pub struct Latency {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Latency {
    /// Starts holding the packets queued to `queue_num` in namespace `netns`
    /// for `delay`. Returns once the queue is bound, so that the iptables rule
    /// that feeds it can be added next.
    pub(crate) fn start(netns: &str, queue_num: u16, delay: Duration) -> Result<Latency, String> {
        let path = format!("/run/netns/{netns}");
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, started) = std::sync::mpsc::channel();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("latency-{netns}"))
            .spawn(move || {
                let queue = bind(&path, queue_num);
                let failed = queue.as_ref().err().cloned();
                let _ = ready.send(failed);
                if let Ok(queue) = queue {
                    hold(queue, queue_num, delay, &stopping);
                }
            })
            .map_err(|e| format!("cannot start the latency thread: {e}"))?;
        match started.recv() {
            Ok(None) => Ok(Latency {
                stop,
                thread: Some(thread),
            }),
            Ok(Some(why)) => {
                let _ = thread.join();
                Err(why)
            }
            Err(_) => Err("the latency thread died at start".into()),
        }
    }
}

impl Drop for Latency {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Enters the namespace (this thread only) and binds the queue there.
fn bind(path: &str, queue_num: u16) -> Result<Queue, String> {
    let ns = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter the namespace {path}: {e}"))?;
    let refused = |what: &str, e: std::io::Error| {
        format!("NFQUEUE refused ({what}: {e}); the kernel needs CONFIG_NETFILTER_NETLINK_QUEUE")
    };
    let mut queue = Queue::open().map_err(|e| refused("open", e))?;
    queue.bind(queue_num).map_err(|e| refused("bind", e))?;
    // Metadata only: the verdict needs no payload.
    queue
        .set_copy_range(queue_num, 0)
        .map_err(|e| refused("copy range", e))?;
    queue
        .set_queue_max_len(queue_num, HELD_MAX as u32)
        .map_err(|e| refused("queue length", e))?;
    queue
        .set_fail_open(queue_num, true)
        .map_err(|e| refused("fail open", e))?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// Holds each packet `delay`, until `stop`; then lets every held one go.
fn hold(mut queue: Queue, queue_num: u16, delay: Duration, stop: &AtomicBool) {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let pass = |queue: &mut Queue, mut message: nfq::Message| {
        message.set_verdict(Verdict::Accept);
        let _ = queue.verdict(message);
    };
    while !stop.load(Ordering::Relaxed) {
        loop {
            match queue.recv() {
                Ok(message) if held.len() >= HELD_MAX => pass(&mut queue, message),
                Ok(message) => held.push_back((Instant::now() + delay, message)),
                Err(_) => break, // nothing more for now (WouldBlock), or a read error
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (_, message) = held.pop_front().expect("front exists");
            pass(&mut queue, message);
        }
        let next = held.front().map_or(Duration::from_millis(1), |(due, _)| {
            due.saturating_duration_since(now)
        });
        std::thread::sleep(next.min(Duration::from_millis(1)));
    }
    for (_, message) in held.drain(..) {
        pass(&mut queue, message);
    }
    let _ = queue.unbind(queue_num);
}
