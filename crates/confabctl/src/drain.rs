//! `nodes drain ID`: start a node's drain, then follow it with a progress bar
//! (on stderr, only on a terminal) until the node has left the cluster; and
//! `nodes remove ID`, a member declared down taken out of the table.

use std::time::Duration;

use confab_proto::admin::DrainView;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::AdminClient;
use crate::{Outcome, emit, pretty};

/// How often the drain's progress is read.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Failed progress reads in a row before giving up.
const POLL_FAILURES_MAX: u32 = 10;
/// Failed reads in a row from the drained node itself, after its last session
/// moved, that mean it has left and stopped (it answers for 2 s after it left).
const SILENCE_MEANS_LEFT: u32 = 3;

pub(crate) async fn run(
    client: &AdminClient,
    id: &str,
    wait: Duration,
    json: bool,
) -> anyhow::Result<Outcome> {
    // Draining the node we talk to: it stops answering once it has left.
    let answering = client.status().await?.body.node;
    let mut progress = client.drain(id).await?.body;
    let bar = ProgressBar::new(progress.sessions_at_start.max(1));
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} sessions moved ({elapsed})")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(format!("draining {id}"));
    let deadline = tokio::time::Instant::now() + wait;
    let mut failures = 0;
    while progress.state != "left" {
        bar.set_length(progress.sessions_at_start.max(1));
        bar.set_position(
            progress
                .sessions_at_start
                .saturating_sub(progress.sessions_left),
        );
        if tokio::time::Instant::now() >= deadline {
            bar.abandon();
            eprintln!(
                "error: {id} has not left after {} s ({} sessions left); the drain goes on: follow it with `confabctl nodes`",
                wait.as_secs(),
                progress.sessions_left
            );
            return Ok(Outcome::Failed);
        }
        tokio::time::sleep(POLL_EVERY).await;
        match client.drain_progress(id).await {
            Ok(reply) => {
                failures = 0;
                progress = reply.body;
            }
            // The drained node stops shortly after it left: when it was the
            // one answering, lasting silence after its last session moved
            // means gone.
            Err(_)
                if answering == id
                    && progress.sessions_left == 0
                    && failures + 1 >= SILENCE_MEANS_LEFT =>
            {
                progress.state = "left".into();
            }
            Err(e) => {
                failures += 1;
                if failures >= POLL_FAILURES_MAX {
                    bar.abandon();
                    return Err(e.context(format!("lost track of {id}'s drain")));
                }
            }
        }
    }
    // The store says it left; the node answering may still list it until its
    // next read of the member table (about a second). Wait for that, so that
    // `confabctl nodes` right after the drain agrees with it.
    if answering != id {
        loop {
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "warning: {id} has left, but {answering} still lists it: it will drop it at its next read of the member table"
                );
                break;
            }
            match client.nodes().await {
                Ok(reply) if reply.body.nodes.iter().all(|n| n.id != id) => break,
                Ok(_) | Err(_) => tokio::time::sleep(POLL_EVERY).await,
            }
        }
    }
    bar.finish_and_clear();
    let done = DrainView {
        sessions_left: 0,
        ..progress
    };
    if json {
        emit(&pretty(&serde_json::to_value(&done)?))?;
    } else {
        emit(&format!(
            "{id} drained: {} sessions moved to the other members; it has left the cluster",
            done.sessions_at_start
        ))?;
    }
    Ok(Outcome::Done)
}

/// How long `nodes remove` waits for the member table to drop the node.
const REMOVE_WAIT: Duration = Duration::from_secs(30);

/// `nodes remove ID`: asks for the removal, then waits until the node asked
/// no longer lists it.
pub(crate) async fn remove(client: &AdminClient, id: &str, json: bool) -> anyhow::Result<Outcome> {
    let asked = client.remove_node(id).await?.body;
    let deadline = tokio::time::Instant::now() + REMOVE_WAIT;
    let mut failures = 0;
    loop {
        // A read that fails now and then is tried again: the removal is asked.
        match client.nodes().await {
            Ok(reply) if reply.body.nodes.iter().all(|n| n.id != id) => break,
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= POLL_FAILURES_MAX {
                    return Err(e.context(format!("lost track of {id}'s removal")));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "error: {id} is still in the member table after {} s (is this node cut off from the majority?)",
                REMOVE_WAIT.as_secs()
            );
            return Ok(Outcome::Failed);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let done = confab_proto::admin::RemovalView {
        state: "removed".into(),
        ..asked
    };
    if json {
        emit(&pretty(&serde_json::to_value(&done)?))?;
    } else {
        emit(&format!(
            "{id} removed from the member table: no longer listed or dialled (if it comes back, it joins again)"
        ))?;
    }
    Ok(Outcome::Done)
}
