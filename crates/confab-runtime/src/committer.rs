//! Group commit: the events of all sessions go to the durable tier in one
//! transaction per batch.
//!
//! A batch closes when it holds `batch_events_max` events or when its first
//! request has waited `batch_delay_max`, whichever comes first; while one batch
//! commits, the next one gathers. Each request learns its own outcome: a batch
//! refused for a conflict is retried request by request, so that one stale
//! session cannot fail the others.

use confab_core::session::RecordedEvent;
use confab_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

struct CommitRequest {
    events: Vec<RecordedEvent>,
    enqueued: Instant,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle sessions send their events to.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Starts the committer task. `queue_max` bounds the requests waiting for a
    /// batch; senders wait when it is full.
    pub fn start(
        store: Arc<dyn Store>,
        batch_events_max: usize,
        batch_delay_max: Duration,
        queue_max: usize,
    ) -> Self {
        let (requests, rx) = mpsc::channel(queue_max.max(1));
        tokio::spawn(run(store, rx, batch_events_max.max(1), batch_delay_max));
        Self { requests }
    }

    /// Whether the committer task is still taking requests.
    pub fn is_running(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Commits these events (with other sessions' events) and returns once the
    /// transaction holding them has committed or failed.
    pub async fn commit(&self, events: Vec<RecordedEvent>) -> Result<(), StoreError> {
        let (done, outcome) = oneshot::channel();
        let request = CommitRequest {
            events,
            enqueued: Instant::now(),
            done,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Unavailable("the committer has stopped".into()))?
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<CommitRequest>,
    batch_events_max: usize,
    batch_delay_max: Duration,
) {
    let mut batch: Vec<CommitRequest> = Vec::new();
    let mut events: Vec<RecordedEvent> = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = first.enqueued + batch_delay_max;
        let mut count = first.events.len();
        batch.push(first);
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
        events.clear();
        for request in &batch {
            events.extend(request.events.iter().cloned());
        }
        metrics::histogram!("confab_commit_batch_events").record(events.len() as f64);
        let started = Instant::now();
        let appended = store.append(&events).await;
        metrics::histogram!("confab_commit_seconds").record(started.elapsed().as_secs_f64());
        match appended {
            Ok(()) => {
                for request in batch.drain(..) {
                    let _ = request.done.send(Ok(()));
                }
            }
            Err(StoreError::Conflict { .. }) if batch.len() > 1 => {
                // One session is stale; find which, and commit the others.
                for request in batch.drain(..) {
                    let outcome = store.append(&request.events).await;
                    let _ = request.done.send(outcome);
                }
            }
            Err(e) => {
                for request in batch.drain(..) {
                    let _ = request.done.send(Err(e.clone()));
                }
            }
        }
    }
}
