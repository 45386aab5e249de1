//! Group commit: the events of all sessions go to the durable tier in one
//! transaction per batch.
//!
//! - Batches are gathered per lane ([`confab_store::EventStore::commit_lane`]):
//!   one per database server when the shards are spread over several. Each
//!   lane has its own queue and its own commits in flight, so a turn is acked
//!   once its own server has committed, and a slow or dead server holds up
//!   only its own sessions. A lane's queue that is full answers `overloaded`
//!   at once rather than block the other lanes.
//! - A batch closes when it holds `batch_events_max` events or when its first
//!   request has waited `batch_delay_max`, whichever comes first.
//! - Up to `concurrency` batches commit at once, each on its own connection
//!   (one on a store with one writer), and a batch gathers once it holds a
//!   place among them. When all of them are committing, requests queue, and
//!   the next batch takes every queued request (up to the size limit) once a
//!   commit ends: the busier the store, the larger the batches.
//!   A session has at most one turn committing, so its events still land in
//!   order.
//! - Each request learns its own outcome. A batch refused for one session (a
//!   conflict, or a fence) is retried request by request, so that one stale
//!   session cannot fail the others.
//! - A batch that fails because the store is unavailable is retried up to
//!   `retries` times, with exponential backoff and jitter, and never past
//!   `give_up_after` from its oldest request.
//! - A request that has waited `wait_max` before its first attempt is answered
//!   `overloaded` without being tried: the store is too slow for the offered load,
//!   and the client backs off instead of timing out.

use confab_core::session::RecordedEvent;
use confab_store::{Store, StoreError, backoff_with_jitter};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// Why a commit did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The store refused or failed it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// It waited too long for the store to be tried: nothing was written.
    #[error(
        "the durable tier is slower than the offered load: waited {waited_ms} ms in the commit queue"
    )]
    Overloaded {
        /// How long it waited.
        waited_ms: u64,
    },
}

/// How the committer batches and retries.
#[derive(Debug, Clone)]
pub struct CommitSettings {
    /// Events per transaction, at most.
    pub batch_events_max: usize,
    /// How long the first request of a batch waits for others.
    pub batch_delay_max: Duration,
    /// Requests waiting for a batch, at most; senders wait when it is full.
    /// Each lane queues at most as many again, and answers `overloaded` past it.
    pub queue_max: usize,
    /// Batches committing at once, per lane.
    pub concurrency: usize,
    /// Retries of a batch the store could not take.
    pub retries: u32,
    /// How long a request may wait before its first attempt.
    pub wait_max: Duration,
    /// How long after its enqueueing a request is given up on, attempts and
    /// retries included: below the caller's own timeout, so that the caller
    /// hears `unavailable` rather than nothing.
    pub give_up_after: Duration,
}

/// The first wait between retries; it doubles each time, up to `RETRY_MAX_DELAY`.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(25);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);

struct CommitRequest {
    events: Vec<RecordedEvent>,
    enqueued: Instant,
    done: oneshot::Sender<Result<(), CommitError>>,
}

/// The handle sessions send their events to.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Starts the committer task.
    /// At most as many batches of a lane commit at once as the store has
    /// writers ([`confab_store::EventStore::commit_writers`]).
    pub fn start(store: Arc<dyn Store>, mut settings: CommitSettings) -> Self {
        settings.concurrency = settings.concurrency.min(store.commit_writers());
        let (requests, rx) = mpsc::channel(settings.queue_max.max(1));
        tokio::spawn(run(store, rx, settings));
        Self { requests }
    }

    /// Whether the committer task is still taking requests.
    pub fn is_running(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Commits these events (with other sessions' events) and returns once the
    /// transaction holding them has committed or failed.
    pub async fn commit(&self, events: Vec<RecordedEvent>) -> Result<(), CommitError> {
        let stopped = || StoreError::Unavailable("the committer has stopped".into());
        let (done, outcome) = oneshot::channel();
        let request = CommitRequest {
            events,
            enqueued: Instant::now(),
            done,
        };
        self.requests.send(request).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Most lanes a committer keeps: one per server of the shard map, which has
/// at most one server per shard.
const LANES_MAX: usize = 64;

/// Hands each request to its lane, starting lanes as they are first needed.
async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<CommitRequest>,
    settings: CommitSettings,
) {
    let mut lanes: std::collections::BTreeMap<usize, mpsc::Sender<CommitRequest>> =
        std::collections::BTreeMap::new();
    while let Some(request) = rx.recv().await {
        let lane = request
            .events
            .first()
            .map_or(0, |e| store.commit_lane(&e.uid))
            .min(LANES_MAX - 1);
        let queue = lanes.entry(lane).or_insert_with(|| {
            let (queue, requests) = mpsc::channel(settings.queue_max.max(1));
            tokio::spawn(run_lane(Arc::clone(&store), requests, settings.clone()));
            queue
        });
        if let Err(full) = queue.try_send(request) {
            let request = match full {
                mpsc::error::TrySendError::Full(request)
                | mpsc::error::TrySendError::Closed(request) => request,
            };
            let waited_ms =
                u64::try_from(request.enqueued.elapsed().as_millis()).unwrap_or(u64::MAX);
            metrics::counter!("confab_commit_lane_full_total").increment(1);
            let _ = request
                .done
                .send(Err(CommitError::Overloaded { waited_ms }));
        }
    }
}

/// One lane: gathers batches and commits up to `concurrency` of them at once.
async fn run_lane(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<CommitRequest>,
    settings: CommitSettings,
) {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let batch_events_max = settings.batch_events_max.max(1);
    while let Some(first) = rx.recv().await {
        // A slot before the batch closes: while every slot is committing, the
        // requests queue, and the batch that takes the next free slot holds
        // them all (its first request's delay has passed by then, so it takes
        // what is queued and closes). A batch closed before its slot would wait
        // for it half-empty while the queue grew behind it.
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let deadline = first.enqueued + settings.batch_delay_max;
        let mut count = first.events.len();
        let mut batch = vec![first];
        while count < batch_events_max {
            let next = match rx.try_recv() {
                Ok(next) => next,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(next)) => next,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            count += next.events.len();
            batch.push(next);
        }
        let store = Arc::clone(&store);
        let settings = settings.clone();
        tokio::spawn(async move {
            commit_batch(&*store, batch, &settings).await;
            drop(slot);
        });
    }
}

async fn commit_batch(store: &dyn Store, batch: Vec<CommitRequest>, settings: &CommitSettings) {
    // Too late to try: the store is slower than the load.
    let now = Instant::now();
    let (batch, late): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|r| now.duration_since(r.enqueued) <= settings.wait_max);
    for request in late {
        let waited_ms =
            u64::try_from(now.duration_since(request.enqueued).as_millis()).unwrap_or(u64::MAX);
        let _ = request
            .done
            .send(Err(CommitError::Overloaded { waited_ms }));
    }
    if batch.is_empty() {
        return;
    }
    // The requests' events move into one batch (no copy); each request keeps
    // how many were its own, for the fallback below.
    let mut batch = batch;
    let mut events = Vec::with_capacity(batch.iter().map(|r| r.events.len()).sum());
    let counts: Vec<usize> = batch
        .iter_mut()
        .map(|r| {
            let count = r.events.len();
            events.append(&mut r.events);
            count
        })
        .collect();
    metrics::histogram!("confab_commit_batch_events").record(events.len() as f64);
    let started = Instant::now();
    let oldest = batch.iter().map(|r| r.enqueued).min().unwrap_or(started);
    let give_up_at = oldest + settings.give_up_after;
    let appended = append_with_retries(store, &events, settings.retries, give_up_at).await;
    metrics::histogram!("confab_commit_seconds").record(started.elapsed().as_secs_f64());
    match appended {
        Ok(()) => {
            for request in batch {
                let _ = request.done.send(Ok(()));
            }
        }
        Err(StoreError::Conflict { .. } | StoreError::Fenced { .. }) if batch.len() > 1 => {
            // One session is stale; find which, and commit the others.
            let mut from = 0;
            for (request, count) in batch.into_iter().zip(counts) {
                let own = &events[from..from + count];
                from += count;
                let outcome = append_with_retries(store, own, settings.retries, give_up_at).await;
                let _ = request.done.send(outcome.map_err(CommitError::from));
            }
        }
        Err(e) => {
            for request in batch {
                let _ = request.done.send(Err(e.clone().into()));
            }
        }
    }
}

/// Appends, retrying while the store is unavailable, until `give_up_at`.
async fn append_with_retries(
    store: &dyn Store,
    events: &[RecordedEvent],
    retries: u32,
    give_up_at: Instant,
) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        let outcome = match tokio::time::timeout_at(give_up_at, store.append(events)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable(
                "no answer from the durable tier in time; the outcome is unknown".into(),
            )),
        };
        match outcome {
            Err(StoreError::Unavailable(why)) if attempt < retries => {
                attempt += 1;
                let wait = backoff_with_jitter(attempt, RETRY_BASE_DELAY, RETRY_MAX_DELAY);
                if Instant::now() + wait >= give_up_at {
                    return Err(StoreError::Unavailable(why));
                }
                metrics::counter!("confab_commit_retries_total").increment(1);
                tracing::debug!(attempt, error = %why, "commit failed; retrying");
                tokio::time::sleep(wait).await;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_core::session::Event;
    use confab_core::{Epoch, MessageId, Seq, Uid};
    use confab_store::sqlite::{SqliteOptions, SqliteStore};

    fn event(uid: &str, seq: u64) -> RecordedEvent {
        RecordedEvent {
            uid: Uid::new(uid).unwrap(),
            seq: Seq(seq),
            at_ms: 1_000 + seq,
            epoch: Epoch(1),
            event: Event::TurnReceived {
                message_id: MessageId::new(format!("m-{seq}")).unwrap(),
                text: format!("text {seq}"),
            },
        }
    }

    /// However the requests are batched, a session whose events conflict with
    /// the log fails alone, and every other request's events land exactly once.
    #[tokio::test]
    async fn a_conflicting_session_fails_alone_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path(), &SqliteOptions::default())
                .await
                .unwrap(),
        );
        store.append(&[event("a", 1)]).await.unwrap();
        let committer = Committer::start(
            Arc::clone(&store),
            CommitSettings {
                batch_events_max: 100,
                batch_delay_max: Duration::from_millis(50),
                queue_max: 16,
                concurrency: 1,
                retries: 0,
                wait_max: Duration::from_secs(30),
                give_up_after: Duration::from_secs(30),
            },
        );
        let (before, stale, after) = tokio::join!(
            committer.commit(vec![event("b", 1), event("b", 2)]),
            committer.commit(vec![event("a", 1)]),
            committer.commit(vec![event("c", 1), event("c", 2), event("c", 3)]),
        );
        before.unwrap();
        after.unwrap();
        assert!(
            matches!(stale, Err(CommitError::Store(StoreError::Conflict { .. }))),
            "{stale:?}"
        );
        for (uid, seqs) in [("a", vec![1]), ("b", vec![1, 2]), ("c", vec![1, 2, 3])] {
            let logged: Vec<u64> = store
                .events_after(&Uid::new(uid).unwrap(), Seq(0), 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq.0)
                .collect();
            assert_eq!(logged, seqs, "{uid}'s log");
        }
    }
}
