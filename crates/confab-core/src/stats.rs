//! A node's running aggregate of the turns its sessions answer, kept up to date
//! as each turn commits, never computed by walking the sessions: turns in the
//! last minute, turns since the node started, the intents answered and the
//! slots filled. `confabctl stats` asks every node for its aggregate and adds
//! them up (`GET /admin/v1/stats`).
//!
//! What counts, read from the events of a confirmed commit ([`Counted::of`]):
//! each `ReplyProduced` is one answered turn and one count for its intent;
//! each `NluResult` is one fill of every slot it names (a slot the turn filled
//! or changed). A duplicate message id commits nothing, so it counts nothing.
//!
//! Time comes in as `now_ms`, from one monotonic millisecond clock per
//! aggregate. Memory is bounded whatever the traffic: 60 one-second buckets,
//! and at most `names_max` distinct names per map, each cut to
//! [`NAME_BYTES_MAX`] bytes; a name seen after the map is full is counted in
//! its `other` bucket (the first `names_max` names seen keep their own line).

use crate::session::{Event, RecordedEvent};
use std::collections::BTreeMap;

#[cfg(test)]
mod tests;

/// The seconds the minute window spans.
pub const WINDOW_SECONDS: usize = 60;

/// The longest intent or slot name kept, in bytes; a longer one is counted
/// under its first bytes (cut at a character boundary).
pub const NAME_BYTES_MAX: usize = 128;

/// Answered turns per second over the last minute: a ring of 60 one-second
/// counts. Each bucket is tagged with the second it counts, so a bucket left
/// from an earlier lap is known stale and never needs clearing on a timer.
#[derive(Debug, Clone)]
pub struct MinuteWindow {
    /// Turns counted in each bucket's second.
    counts: [u64; WINDOW_SECONDS],
    /// The second (`now_ms / 1000`) each bucket's count belongs to.
    seconds: [u64; WINDOW_SECONDS],
}

impl Default for MinuteWindow {
    fn default() -> Self {
        Self {
            counts: [0; WINDOW_SECONDS],
            seconds: [0; WINDOW_SECONDS],
        }
    }
}

impl MinuteWindow {
    /// Counts `n` turns at `now_ms`.
    pub fn record(&mut self, now_ms: u64, n: u64) {
        let second = now_ms / 1000;
        let i = bucket(second);
        if self.seconds[i] != second {
            self.seconds[i] = second;
            self.counts[i] = 0;
        }
        self.counts[i] = self.counts[i].saturating_add(n);
    }

    /// Turns counted in the minute up to `now_ms`: the current second (so far)
    /// and the 59 before it. A bucket from a later second than `now_ms`'s is
    /// not counted.
    pub fn last_minute(&self, now_ms: u64) -> u64 {
        let second = now_ms / 1000;
        let oldest = second.saturating_sub(WINDOW_SECONDS as u64 - 1);
        self.seconds
            .iter()
            .zip(&self.counts)
            .filter(|(s, _)| (oldest..=second).contains(*s))
            .map(|(_, n)| n)
            .fold(0, |sum, n| sum.saturating_add(*n))
    }
}

fn bucket(second: u64) -> usize {
    // The remainder is below 60: it fits any usize.
    (second % WINDOW_SECONDS as u64) as usize
}

/// Counts by name, bounded: at most `names_max` names keep a count of their
/// own; the counts of names seen after that go to `other`.
#[derive(Debug, Clone)]
pub struct NameCounts {
    /// The names with a count of their own, sorted.
    counts: BTreeMap<String, u64>,
    /// What names past the cap added up to.
    other: u64,
    /// How many names may have a count of their own.
    names_max: usize,
}

impl NameCounts {
    /// Empty, keeping at most `names_max` names.
    pub fn new(names_max: usize) -> Self {
        Self {
            counts: BTreeMap::new(),
            other: 0,
            names_max,
        }
    }

    /// Adds `n` to `name` (cut to [`NAME_BYTES_MAX`] bytes), or to `other`
    /// when `name` is new and the map is full.
    pub fn add(&mut self, name: &str, n: u64) {
        let name = cut(name);
        if let Some(count) = self.counts.get_mut(name) {
            *count = count.saturating_add(n);
        } else if self.counts.len() < self.names_max {
            self.counts.insert(name.to_owned(), n);
        } else {
            self.other = self.other.saturating_add(n);
        }
        debug_assert!(self.counts.len() <= self.names_max, "the cap holds");
    }

    /// The names with a count of their own, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(name, n)| (name.as_str(), *n))
    }

    /// What the names past the cap added up to.
    pub fn other(&self) -> u64 {
        self.other
    }

    /// Every count, named or not.
    pub fn total(&self) -> u64 {
        self.counts
            .values()
            .fold(self.other, |sum, n| sum.saturating_add(*n))
    }

    /// The cap on names.
    pub fn names_max(&self) -> usize {
        self.names_max
    }
}

/// `name` cut to at most [`NAME_BYTES_MAX`] bytes, at a character boundary.
fn cut(name: &str) -> &str {
    if name.len() <= NAME_BYTES_MAX {
        return name;
    }
    let mut end = NAME_BYTES_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// What one confirmed commit adds to the aggregate, taken from its events
/// before they go to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    /// The intent of each answered turn (one per `ReplyProduced`).
    pub intents: Vec<String>,
    /// Each slot name filled (one per slot of each `NluResult`).
    pub slot_fills: Vec<String>,
}

impl Counted {
    /// What `events` count for.
    pub fn of(events: &[RecordedEvent]) -> Self {
        let mut counted = Self::default();
        for recorded in events {
            match &recorded.event {
                Event::ReplyProduced { intent, .. } => counted.intents.push(intent.clone()),
                Event::NluResult { slots_filled, .. } => {
                    counted.slot_fills.extend(slots_filled.keys().cloned());
                }
                _ => {}
            }
        }
        counted
    }

    /// Whether it counts for nothing.
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty() && self.slot_fills.is_empty()
    }
}

/// A node's aggregate of the turns its sessions answered since it started.
#[derive(Debug, Clone)]
pub struct TurnStats {
    /// Answered turns per second, over the last minute.
    minute: MinuteWindow,
    /// Answered turns since the start.
    turns_total: u64,
    /// Answered turns by intent.
    intents: NameCounts,
    /// Slot fills by slot name.
    slot_fills: NameCounts,
}

impl TurnStats {
    /// Empty, keeping at most `names_max` intent names and as many slot names.
    pub fn new(names_max: usize) -> Self {
        Self {
            minute: MinuteWindow::default(),
            turns_total: 0,
            intents: NameCounts::new(names_max),
            slot_fills: NameCounts::new(names_max),
        }
    }

    /// Adds what a commit confirmed at `now_ms` counts for.
    pub fn add(&mut self, now_ms: u64, counted: &Counted) {
        let turns = counted.intents.len() as u64;
        if turns > 0 {
            self.minute.record(now_ms, turns);
            self.turns_total = self.turns_total.saturating_add(turns);
        }
        for intent in &counted.intents {
            self.intents.add(intent, 1);
        }
        for slot in &counted.slot_fills {
            self.slot_fills.add(slot, 1);
        }
        debug_assert_eq!(
            self.intents.total(),
            self.turns_total,
            "every answered turn has one intent"
        );
    }

    /// Answered turns in the minute up to `now_ms`.
    pub fn turns_last_minute(&self, now_ms: u64) -> u64 {
        self.minute.last_minute(now_ms)
    }

    /// Answered turns since the start.
    pub fn turns_total(&self) -> u64 {
        self.turns_total
    }

    /// Answered turns by intent.
    pub fn intents(&self) -> &NameCounts {
        &self.intents
    }

    /// Slot fills by slot name.
    pub fn slot_fills(&self) -> &NameCounts {
        &self.slot_fills
    }
}
