//! The checker: rules over everything the clients saw and what the store
//! holds, after the faults healed. Each violation names the session, the
//! operations involved and the rule.

use confab_testkit::load::{EVENTS_PER_TURN, UserLog};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// One broken rule.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Violation {
    /// The rule.
    pub(crate) rule: &'static str,
    /// What broke, naming the session and the operations.
    pub(crate) text: String,
}

/// The rules a run keeps.
pub(crate) const RULES: &[(&str, &str)] = &[
    (
        "acked-once",
        "every acked turn is present exactly once and has its reply; the resumed session holds exactly the answered turns",
    ),
    (
        "no-stale-read",
        "no hello, and no `session show` read by the readers through every node, reports a seq below one already acked or replied to that session's user",
    ),
    (
        "log-whole",
        "in the store, each session's seqs rise by one from 1 with no gap, and its epochs never go back",
    ),
    (
        "fenced-writes",
        "in the store, no event was written at an epoch below the one its session's fence held when it was written",
    ),
    (
        "one-writer",
        "in the store, each session's events at any one epoch were written by one node, and at the epoch its fence holds by the node whose claim raised the fence",
    ),
    (
        "answers-in-time",
        "during a partition, one-way cut, packet loss, kill or store fault, every send of a turn gets an answer (an ack, a reply, an error or a close) within detection time plus 2 s: a node that cannot serve says so instead of holding the turn",
    ),
    (
        "serves-again",
        "every session serves again within detection time plus 2 s of the last fault's heal",
    ),
    (
        "ring-steady",
        "from a fault's start to the next fault's, the ring changes at most twice per node a cut, pause or kill hits (four times per node that loses packets; never for a clock step or a store fault), plus what the fault before may still cause, plus twice per join or drain: a cut-off node is declared down once and comes back once, it does not flap",
    ),
    (
        "ring-settles",
        "after the heal every node routes by one ring of every member, and it does not change again",
    ),
];

/// Rule `acked-once` and `no-stale-read`, from the clients' histories and the
/// resume each got at the end (`breaches`: what `load::check` found).
pub(crate) fn client_rules(logs: &[UserLog], breaches: Vec<String>) -> Vec<Violation> {
    let mut found: Vec<Violation> = breaches
        .into_iter()
        .map(|text| Violation {
            rule: "acked-once",
            text,
        })
        .collect();
    found.extend(logs.iter().filter_map(|log| {
        let (id, setbacks_met) = log.gave_up.as_ref()?;
        Some(Violation {
            rule: "answers-in-time",
            text: format!(
                "{} {id}: no reply within 30 s, the client gave up; on the way (last 5): {}",
                log.uid,
                setbacks(&setbacks_met[setbacks_met.len().saturating_sub(5)..])
            ),
        })
    }));
    found.extend(
        confab_testkit::load::stale_hellos(logs)
            .into_iter()
            .map(|text| Violation {
                rule: "no-stale-read",
                text,
            }),
    );
    found
}

/// One `GET /admin/v1/sessions/{uid}` a reader made.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    /// When it was asked.
    pub(crate) asked: Instant,
    /// Through which node.
    pub(crate) via: String,
    pub(crate) uid: String,
    /// The seq it reported.
    pub(crate) seq: u64,
}

/// Rule `no-stale-read` for the readers: each read's seq is at least every
/// seq acked or replied to that user before the read was asked.
pub(crate) fn read_rules(logs: &[UserLog], reads: &[Read]) -> Vec<Violation> {
    let mut seen: std::collections::BTreeMap<&str, Vec<(Instant, u64)>> = Default::default();
    for log in logs {
        let answers = seen.entry(log.uid.as_str()).or_default();
        for turn in &log.turns {
            let sent = turn.at.checked_sub(turn.latency).unwrap_or(turn.at);
            if let (Some(ack), Some(after)) = (turn.ack, turn.acked_after) {
                answers.push((sent + after, ack));
            }
            answers.push((turn.at, turn.reply));
        }
    }
    let mut found = Vec::new();
    for read in reads {
        let acked = seen.get(read.uid.as_str()).map_or(0, |answers| {
            answers
                .iter()
                .filter(|(at, _)| *at < read.asked)
                .map(|(_, seq)| *seq)
                .max()
                .unwrap_or(0)
        });
        if read.seq < acked {
            found.push(Violation {
                rule: "no-stale-read",
                text: format!(
                    "{}: session show via {} said seq {} after seq {acked} was acked",
                    read.uid, read.via, read.seq
                ),
            });
        }
    }
    found
}

/// Rule `serves-again`: each user's first reply at or after `heal` came
/// within `bound` of it.
pub(crate) fn serves_again(logs: &[UserLog], heal: Instant, bound: Duration) -> Vec<Violation> {
    let mut found = Vec::new();
    for log in logs {
        let first = log.turns.iter().find(|t| t.at >= heal);
        match first {
            Some(turn) if turn.at.duration_since(heal) <= bound => {}
            Some(turn) => found.push(Violation {
                rule: "serves-again",
                text: format!(
                    "{} {}: first reply {} ms after the heal (bound {} ms); on the way: {}",
                    log.uid,
                    turn.id,
                    turn.at.duration_since(heal).as_millis(),
                    bound.as_millis(),
                    setbacks(&turn.setbacks)
                ),
            }),
            None => found.push(Violation {
                rule: "serves-again",
                text: format!("{}: no reply after the heal", log.uid),
            }),
        }
    }
    found
}

/// Rule `answers-in-time`: within each of `windows` (start and end), no turn
/// went longer than `bound` between one of its sends and the answer to it:
/// its first send, each setback (after which it was sent again) and its
/// reply are never more than `bound` apart (a resend follows a setback within
/// the client's retry pause).
pub(crate) fn answers_in_time(
    logs: &[UserLog],
    windows: &[(Instant, Instant, String)],
    bound: Duration,
) -> Vec<Violation> {
    let mut found = Vec::new();
    for log in logs {
        for turn in &log.turns {
            let sent = turn.at.checked_sub(turn.latency).unwrap_or(turn.at);
            let mut marks: Vec<Instant> = vec![sent];
            marks.extend(turn.setbacks.iter().map(|(after, _)| sent + *after));
            marks.push(turn.at);
            for pair in marks.windows(2) {
                let (from, to) = (pair[0], pair[1]);
                let waited = to.saturating_duration_since(from);
                if waited <= bound {
                    continue;
                }
                if let Some((_, _, label)) = windows
                    .iter()
                    .find(|(start, end, _)| from >= *start && from <= *end)
                {
                    found.push(Violation {
                        rule: "answers-in-time",
                        text: format!(
                            "{} {}: waited {} ms for an answer during {label} (bound {} ms); on the way: {}",
                            log.uid,
                            turn.id,
                            waited.as_millis(),
                            bound.as_millis(),
                            setbacks(&turn.setbacks)
                        ),
                    });
                    break;
                }
            }
        }
    }
    found
}

fn setbacks(list: &[(Duration, String)]) -> String {
    if list.is_empty() {
        return "nothing".into();
    }
    list.iter()
        .map(|(after, why)| format!("{} ms {why}", after.as_millis()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where the store's own rows are read.
pub(crate) enum Rows {
    /// MariaDB, by URL: events in 64 tables by `CRC32(uid) % 64`.
    Mysql(String),
    /// The embedded store's file: one `events` table.
    Sqlite(std::path::PathBuf),
}

/// One event as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRow {
    pub(crate) seq: u64,
    /// The writer's epoch.
    pub(crate) epoch: u64,
    /// The epoch the session's fence held when the row was written (0: written
    /// before the store kept it).
    pub(crate) fence: u64,
    /// The node that wrote it ('': unknown).
    pub(crate) node: String,
}

/// A session's fence record: the epoch it holds and the node whose claim
/// raised it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FenceRow {
    pub(crate) epoch: u64,
    pub(crate) node: String,
}

impl Rows {
    /// A session's events, in seq order, and its fence record (none while it
    /// was never claimed past the first epoch).
    async fn session(&self, uid: &str) -> anyhow::Result<(Vec<EventRow>, Option<FenceRow>)> {
        use sqlx::Connection;
        match self {
            Rows::Mysql(url) => {
                let mut conn = sqlx::MySqlConnection::connect(url).await?;
                let table = format!("events_{:02}", crc32fast::hash(uid.as_bytes()) % 64);
                // The table name comes from a CRC, never from input.
                let rows: Vec<(u64, u64, u64, Vec<u8>)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT seq, epoch, fence, node FROM {table} WHERE uid = ? ORDER BY seq"
                    )))
                    .bind(uid.as_bytes())
                    .fetch_all(&mut conn)
                    .await?;
                let fence: Option<(u64, Vec<u8>)> =
                    sqlx::query_as("SELECT epoch, node FROM session_epochs WHERE uid = ?")
                        .bind(uid.as_bytes())
                        .fetch_optional(&mut conn)
                        .await?;
                let events = rows
                    .into_iter()
                    .map(|(seq, epoch, fence, node)| EventRow {
                        seq,
                        epoch,
                        fence,
                        node: String::from_utf8_lossy(&node).into_owned(),
                    })
                    .collect();
                let fence = fence.map(|(epoch, node)| FenceRow {
                    epoch,
                    node: String::from_utf8_lossy(&node).into_owned(),
                });
                Ok((events, fence))
            }
            Rows::Sqlite(path) => {
                let url = format!("sqlite://{}?mode=ro", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await?;
                let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
                    "SELECT seq, epoch, fence, node FROM events WHERE uid = ? ORDER BY seq",
                )
                .bind(uid)
                .fetch_all(&mut conn)
                .await?;
                let fence: Option<(i64, String)> =
                    sqlx::query_as("SELECT epoch, node FROM session_epochs WHERE uid = ?")
                        .bind(uid)
                        .fetch_optional(&mut conn)
                        .await?;
                let events = rows
                    .into_iter()
                    .map(|(seq, epoch, fence, node)| {
                        Ok(EventRow {
                            seq: u64::try_from(seq)?,
                            epoch: u64::try_from(epoch)?,
                            fence: u64::try_from(fence)?,
                            node,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                let fence = fence
                    .map(|(epoch, node)| {
                        anyhow::Ok(FenceRow {
                            epoch: u64::try_from(epoch)?,
                            node,
                        })
                    })
                    .transpose()?;
                Ok((events, fence))
            }
        }
    }
}

/// Rules `log-whole`, `fenced-writes` and `one-writer`, read from the store's
/// own rows. For each session: seqs from 1 with no gap or repeat, and epochs
/// that never go back; every answered turn in the log; no row written at an
/// epoch below the fence it met; one writing node per epoch, and at the fence's
/// epoch it is the node whose claim raised the fence.
pub(crate) async fn log_rules(store: &Rows, logs: &[UserLog]) -> anyhow::Result<Vec<Violation>> {
    let mut found = Vec::new();
    for log in logs {
        let (rows, fence) = store.session(&log.uid).await?;
        found.extend(log_whole(
            &log.uid,
            &rows,
            log.turns.len() as u64 * EVENTS_PER_TURN,
        ));
        found.extend(fenced_writes(&log.uid, &rows));
        found.extend(one_writer(&log.uid, &rows, fence.as_ref()));
    }
    Ok(found)
}

fn log_whole(uid: &str, rows: &[EventRow], answered: u64) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut last_epoch = 0u64;
    for (i, row) in rows.iter().enumerate() {
        let (seq, epoch) = (row.seq, row.epoch);
        if seq != i as u64 + 1 {
            found.push(Violation {
                rule: "log-whole",
                text: format!("{uid}: the log holds seq {seq} at position {}", i + 1),
            });
            break;
        }
        if epoch < last_epoch {
            found.push(Violation {
                rule: "log-whole",
                text: format!(
                    "{uid}: seq {seq} was written at epoch {epoch} after epoch {last_epoch}: a fenced owner wrote"
                ),
            });
            break;
        }
        last_epoch = epoch;
    }
    if (rows.len() as u64) < answered {
        found.push(Violation {
            rule: "log-whole",
            text: format!(
                "{uid}: {} events in the store, {answered} answered",
                rows.len()
            ),
        });
    }
    found
}

/// The first row of a session written at an epoch below the fence it met.
fn fenced_writes(uid: &str, rows: &[EventRow]) -> Option<Violation> {
    let row = rows.iter().find(|r| r.fence > 0 && r.epoch < r.fence)?;
    Some(Violation {
        rule: "fenced-writes",
        text: format!(
            "{uid}: seq {} was written by {} at epoch {} while the fence held epoch {}",
            row.seq,
            named(&row.node),
            row.epoch,
            row.fence
        ),
    })
}

/// Two nodes writing one session at one epoch, or a write at the fence's epoch
/// by another node than the claimant.
fn one_writer(uid: &str, rows: &[EventRow], fence: Option<&FenceRow>) -> Vec<Violation> {
    let mut writers: std::collections::BTreeMap<u64, (&str, u64)> = Default::default();
    let mut found = Vec::new();
    for row in rows.iter().filter(|r| !r.node.is_empty()) {
        let (first, first_seq) = *writers.entry(row.epoch).or_insert((&row.node, row.seq));
        if first != row.node {
            found.push(Violation {
                rule: "one-writer",
                text: format!(
                    "{uid}: at epoch {} seq {first_seq} was written by {first} and seq {} by {}",
                    row.epoch, row.seq, row.node
                ),
            });
            break;
        }
    }
    if let Some(fence) = fence.filter(|f| !f.node.is_empty())
        && let Some(&(writer, seq)) = writers.get(&fence.epoch)
        && writer != fence.node
    {
        found.push(Violation {
            rule: "one-writer",
            text: format!(
                "{uid}: {} claimed epoch {}, but seq {seq} at that epoch was written by {writer}",
                fence.node, fence.epoch
            ),
        });
    }
    found
}

fn named(node: &str) -> &str {
    if node.is_empty() {
        "an unknown node"
    } else {
        node
    }
}

/// One node's answer to `GET /admin/v1/ring` at one time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RingSeen {
    /// From the start of the run (ms).
    pub(crate) at_ms: u64,
    /// Which node answered.
    pub(crate) node: usize,
    pub(crate) epoch: u64,
    pub(crate) members: Vec<String>,
}

/// Rule `ring-settles`: every answer from `settled_ms` on names the same
/// epoch; `settled` is whether the ring settled at all.
pub(crate) fn ring_rules(seen: &[RingSeen], settled_ms: Option<u64>) -> Vec<Violation> {
    let Some(settled_ms) = settled_ms else {
        return vec![Violation {
            rule: "ring-settles",
            text: "the nodes never agreed on one ring of every member after the heal".into(),
        }];
    };
    let after: Vec<&RingSeen> = seen.iter().filter(|s| s.at_ms >= settled_ms).collect();
    let Some(first) = after.first() else {
        return Vec::new();
    };
    after
        .iter()
        .find(|s| s.epoch != first.epoch)
        .map(|changed| Violation {
            rule: "ring-settles",
            text: format!(
                "the ring changed after it settled: n{} routes by epoch {} at {} ms (settled at epoch {})",
                changed.node + 1,
                changed.epoch,
                changed.at_ms,
                first.epoch
            ),
        })
        .into_iter()
        .collect()
}

/// One fault's window and how many ring changes it may make. It runs from
/// the fault's start to the next fault's start (or 10 s after the last
/// fault's heal), so a fault's late consequences (a node that rejoins once
/// the cut heals) fall in the next window, which is allowed them too.
pub(crate) struct Window {
    pub(crate) label: String,
    pub(crate) from_ms: u64,
    pub(crate) until_ms: u64,
    /// Ring changes this fault, the one before it, and the joins and drains
    /// that fall in the window may make, in all.
    pub(crate) allowed: usize,
}

/// Rule `ring-steady`: the epochs first seen within each window number at
/// most what it allows.
pub(crate) fn steady_rules(seen: &[RingSeen], windows: &[Window]) -> Vec<Violation> {
    let mut first_seen: Vec<(u64, u64)> = Vec::new();
    let mut sorted: Vec<&RingSeen> = seen.iter().collect();
    sorted.sort_by_key(|s| s.at_ms);
    for ring in sorted {
        if first_seen.iter().all(|(epoch, _)| *epoch != ring.epoch) {
            first_seen.push((ring.epoch, ring.at_ms));
        }
    }
    let mut found = Vec::new();
    for window in windows {
        let epochs: Vec<u64> = first_seen
            .iter()
            .filter(|(_, at)| *at > window.from_ms && *at <= window.until_ms)
            .map(|(epoch, _)| *epoch)
            .collect();
        let allowed = window.allowed;
        if epochs.len() > allowed {
            found.push(Violation {
                rule: "ring-steady",
                text: format!(
                    "{}: the ring changed {} times (epochs {:?}) from its start to the next fault's, at most {allowed} expected",
                    window.label,
                    epochs.len(),
                    epochs
                ),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_testkit::load::{Hello, TurnLog};

    fn turn(at: Instant, id: &str, reply: u64) -> TurnLog {
        TurnLog {
            id: id.into(),
            ack: Some(reply - 2),
            acked_after: Some(Duration::from_millis(5)),
            reply,
            latency: Duration::from_millis(10),
            resent: 0,
            setbacks: Vec::new(),
            at,
        }
    }

    fn row(seq: u64, epoch: u64, fence: u64, node: &str) -> EventRow {
        EventRow {
            seq,
            epoch,
            fence,
            node: node.into(),
        }
    }

    #[test]
    fn a_write_below_the_fence_it_met_is_caught() {
        let clean = [row(1, 1, 1, "n1"), row(2, 2, 1, "n1"), row(3, 3, 3, "n2")];
        assert!(fenced_writes("u1", &clean).is_none());
        // Rows written before the store kept fences say nothing.
        assert!(fenced_writes("u1", &[row(1, 1, 0, "")]).is_none());
        let stale = [row(1, 2, 2, "n1"), row(2, 2, 3, "n1"), row(3, 3, 3, "n2")];
        let found = fenced_writes("u1", &stale).expect("caught");
        assert_eq!(found.rule, "fenced-writes");
        assert!(
            found
                .text
                .contains("seq 2 was written by n1 at epoch 2 while the fence held epoch 3"),
            "{found:?}"
        );
    }

    #[test]
    fn two_writers_at_one_epoch_or_a_writer_that_did_not_claim_are_caught() {
        let fence = |epoch, node: &str| FenceRow {
            epoch,
            node: node.into(),
        };
        let clean = [row(1, 1, 1, "n1"), row(2, 2, 2, "n2"), row(3, 2, 2, "n2")];
        assert!(one_writer("u1", &clean, Some(&fence(2, "n2"))).is_empty());
        assert!(one_writer("u1", &clean, None).is_empty());
        // Unknown writers (rows from before the store kept them) are left out.
        assert!(one_writer("u1", &[row(1, 2, 0, ""), row(2, 2, 2, "n2")], None).is_empty());

        let split = [row(1, 2, 2, "n1"), row(2, 2, 2, "n2")];
        let found = one_writer("u1", &split, None);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .text
                .contains("at epoch 2 seq 1 was written by n1 and seq 2 by n2"),
            "{found:?}"
        );
        let found = one_writer("u1", &clean, Some(&fence(2, "n3")));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .text
                .contains("n3 claimed epoch 2, but seq 2 at that epoch was written by n2"),
            "{found:?}"
        );
    }

    #[test]
    fn a_hello_below_an_acked_seq_is_a_stale_read() {
        let now = Instant::now();
        let mut log = UserLog {
            uid: "u1".into(),
            turns: vec![turn(now, "m-1", 3)],
            ..UserLog::default()
        };
        let hello = |last_seq, acked| Hello {
            asked: now,
            via: "ws://n2".into(),
            node: "n2".into(),
            last_seq,
            acked,
        };
        log.hellos = vec![hello(3, 3), hello(6, 3)];
        assert!(client_rules(std::slice::from_ref(&log), Vec::new()).is_empty());
        log.hellos.push(hello(3, 6));
        let found = client_rules(&[log], vec!["u2 m-4: reply seq 15".into()]);
        let rules: Vec<&str> = found.iter().map(|v| v.rule).collect();
        assert_eq!(rules, ["acked-once", "no-stale-read"]);
        assert!(
            found[1].text.contains("last_seq 3 after seq 6"),
            "{found:?}"
        );
    }

    #[test]
    fn a_read_below_an_acked_seq_is_a_stale_read() {
        let start = Instant::now();
        let log = UserLog {
            uid: "u1".into(),
            turns: vec![turn(start + Duration::from_secs(1), "m-1", 3)],
            ..UserLog::default()
        };
        let read = |after_ms: u64, seq| Read {
            asked: start + Duration::from_millis(after_ms),
            via: "n1".into(),
            uid: "u1".into(),
            seq,
        };
        // Before the reply: 0 is fine; after it, 3 is needed.
        let reads = [read(500, 0), read(1_500, 3), read(2_000, 0)];
        let found = read_rules(std::slice::from_ref(&log), &reads);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].text.contains("said seq 0 after seq 3"));
    }

    #[test]
    fn a_session_that_serves_late_or_never_after_the_heal_is_named() {
        let heal = Instant::now();
        let bound = Duration::from_secs(4);
        let on_time = UserLog {
            uid: "fast".into(),
            turns: vec![turn(heal + Duration::from_secs(1), "m-1", 3)],
            ..UserLog::default()
        };
        let late = UserLog {
            uid: "late".into(),
            turns: vec![turn(heal + Duration::from_secs(9), "m-1", 3)],
            ..UserLog::default()
        };
        let never = UserLog {
            uid: "never".into(),
            ..UserLog::default()
        };
        let found = serves_again(&[on_time, late, never], heal, bound);
        let texts: Vec<&str> = found.iter().map(|v| v.text.as_str()).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].starts_with("late m-1: first reply 9000 ms"));
        assert_eq!(texts[1], "never: no reply after the heal");
    }

    #[test]
    fn a_ring_that_changes_after_it_settled_or_never_settles_is_a_violation() {
        let seen = |at_ms, node, epoch| RingSeen {
            at_ms,
            node,
            epoch,
            members: vec!["n1".into()],
        };
        let steady = [seen(100, 0, 5), seen(200, 0, 6), seen(300, 1, 6)];
        assert!(ring_rules(&steady, Some(200)).is_empty());
        let flapping = [seen(200, 0, 6), seen(300, 1, 7)];
        let found = ring_rules(&flapping, Some(200));
        assert_eq!(found.len(), 1);
        assert!(found[0].text.contains("n2 routes by epoch 7"), "{found:?}");
        assert_eq!(ring_rules(&steady, None).len(), 1);
    }

    #[test]
    fn a_turn_held_past_the_bound_within_a_fault_is_named() {
        let start = Instant::now();
        let bound = Duration::from_millis(4_500);
        let mut held = turn(start + Duration::from_secs(12), "m-7", 21);
        held.latency = Duration::from_secs(11);
        held.setbacks = vec![(Duration::from_secs(10), "closed (None)".into())];
        let mut quick = turn(start + Duration::from_secs(5), "m-3", 9);
        quick.latency = Duration::from_secs(4);
        quick.setbacks = vec![
            (Duration::from_secs(2), "Unavailable: cut off".into()),
            (Duration::from_millis(3_900), "Unavailable: cut off".into()),
        ];
        let logs = [UserLog {
            uid: "u1".into(),
            turns: vec![quick, held],
            ..UserLog::default()
        }];
        let during = |from: u64, to: u64| {
            vec![(
                start + Duration::from_secs(from),
                start + Duration::from_secs(to),
                "partition n3 | rest (silent)".to_owned(),
            )]
        };
        let found = answers_in_time(&logs, &during(0, 6), bound);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].text.starts_with("u1 m-7: waited 10000 ms"));
        assert!(
            answers_in_time(&logs, &during(2, 6), bound).is_empty(),
            "sent before the fault: not judged"
        );
    }

    #[test]
    fn a_ring_that_flaps_during_a_fault_is_a_violation() {
        let seen = |at_ms, epoch| RingSeen {
            at_ms,
            node: 0,
            epoch,
            members: Vec::new(),
        };
        let window = |allowed| Window {
            label: "partition n3 | rest (silent)".into(),
            from_ms: 1_000,
            until_ms: 15_000,
            allowed,
        };
        // Down once, back once: steady.
        let steady = [
            seen(500, 3),
            seen(3_000, 4),
            seen(9_000, 5),
            seen(20_000, 6),
        ];
        assert!(steady_rules(&steady, &[window(2)]).is_empty());
        let flapping = [seen(500, 3), seen(2_000, 4), seen(2_500, 5), seen(3_000, 6)];
        let found = steady_rules(&flapping, &[window(2)]);
        assert_eq!(found.len(), 1);
        assert!(found[0].text.contains("changed 3 times"), "{found:?}");
        assert!(steady_rules(&flapping, &[window(4)]).is_empty());
    }
}
