//! Admission: how many turns a node lets in at once, adapted to how fast it
//! answers them.
//!
//! A fixed bound on turns in flight is a bound on queue length, and a queue of a
//! given length is short when the node is fast and seconds long when it is
//! saturated. This machine bounds the *time* instead. It watches how long the
//! admitted turns take, from their arrival to their answer (every queue they
//! waited in included), and moves the limit on turns in flight so that no
//! queue stands longer than `latency_target_us`. A turn that arrives while the
//! limit is reached is refused at once, before any work, so the excess of an
//! overload is answered `overloaded` in microseconds and the turns let in keep
//! their latency. The models: CoDel's signal (RFC 8289: the *minimum* time
//! spent over an interval tells a standing queue from a burst, which drains by
//! itself) and the adaptive concurrency limits of Netflix's
//! `concurrency-limits` and Envoy (latency as the signal, the number in flight
//! as the control).
//!
//! Every `window_us` (once something was answered in it) the window's fastest
//! turn decides:
//! - slower than the target: a queue stands, as even the turns that arrived
//!   last found it. The limit falls to what was in flight at the peak, scaled
//!   by `target / fastest` (at most halved per window), so it is cut in a few
//!   windows;
//! - at most half the target, and the limit was reached in the window: it rises
//!   by a quarter (the node has room, and turns were refused);
//! - between the two, and the limit was reached: it rises by a twentieth;
//! - otherwise it stays (a limit that was never reached says nothing);
//! - a window in which nothing was answered but turns were refused raises it
//!   by a twentieth: places held by turns that never answer must not shut the
//!   node for good.
//!
//! The fastest turn says whether a queue stands in front of *every* turn. On
//! shared cores the load also shows up in the tail alone: the turns that wait
//! for a core, a commit or a busy session grow slower with what is in flight,
//! while the turns that found none stay fast. So a second signal watches the
//! tail: when more than one answered turn in a hundred took longer than
//! `tail_latency_us`, the limit falls to what was in flight at the window's
//! peak scaled by `tail / slowest` (at least a tenth off, at most halved);
//! when some did but fewer, it rises by a twentieth at most, as the slowest
//! turns of a rise are answered windows after it. This is the bound the
//! accepted turns' p99 keeps to.
//!
//! A stall (a checkpoint, a pause) that delays a few turns of a window leaves
//! the limit alone: turns in that window that found no queue were fast, and
//! one turn in a hundred may be slow.
//!
//! The limit never leaves `[limit_min, limit_max]`. Time comes in as
//! microseconds on one monotonic clock of the caller's choosing; there is no
//! randomness.

/// How the limit adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// No queue should stand longer than this: the fastest turn of a window
    /// is answered within it, in µs.
    pub latency_target_us: u64,
    /// At most one answered turn in a hundred should take longer than this
    /// (from arrival to answer), in µs; at least `latency_target_us`.
    pub tail_latency_us: u64,
    /// How often the limit is decided again, in µs.
    pub window_us: u64,
    /// The limit never falls below this (so that a stall that is not load
    /// cannot shut the node).
    pub limit_min: usize,
    /// The limit never rises above this (the node's hard bound on turns in
    /// flight).
    pub limit_max: usize,
}

/// A turn let in: hand it back to [`Admission::answered`] (with the time it was
/// answered) or [`Admission::abandoned`] (it was not run after all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an admitted turn must be answered or abandoned, or its slot is never freed"]
pub struct Admitted {
    /// When it arrived, in µs on the caller's clock.
    pub arrived_us: u64,
}

/// A turn refused: the node is at its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{in_flight} turns in flight on this node, its limit while turns queue longer than {latency_target_ms} ms: retry with backoff"
)]
pub struct Refused {
    /// Turns in flight when it arrived.
    pub in_flight: usize,
    /// The latency the limit keeps to, in ms.
    pub latency_target_ms: u64,
}

/// What the last closed window saw, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowReport {
    /// Turns answered in it.
    pub answered: u64,
    /// Turns refused in it.
    pub refused: u64,
    /// Its fastest turn's latency, in µs (0 when nothing was answered).
    pub latency_min_us: u64,
    /// Turns answered in it that took longer than `tail_latency_us`.
    pub slow: u64,
    /// The limit it left.
    pub limit: usize,
}

/// The admission machine of one node.
#[derive(Debug, Clone)]
pub struct Admission {
    settings: AdmissionSettings,
    limit: usize,
    in_flight: usize,
    window: Window,
    last: WindowReport,
}

#[derive(Debug, Clone, Default)]
struct Window {
    started_us: u64,
    latency_min_us: Option<u64>,
    latency_max_us: u64,
    answered: u64,
    slow: u64,
    refused: u64,
    in_flight_peak: usize,
}

impl Admission {
    /// A machine whose limit starts at `limit_max`: a node starts trusting
    /// itself, and the first slow window brings the limit down.
    pub fn new(settings: AdmissionSettings, now_us: u64) -> Self {
        let limit_max = settings.limit_max.max(1);
        let settings = AdmissionSettings {
            limit_max,
            limit_min: settings.limit_min.clamp(1, limit_max),
            latency_target_us: settings.latency_target_us.max(1),
            tail_latency_us: settings
                .tail_latency_us
                .max(settings.latency_target_us)
                .max(1),
            window_us: settings.window_us.max(1),
        };
        Self {
            settings,
            limit: limit_max,
            in_flight: 0,
            window: Window {
                started_us: now_us,
                ..Window::default()
            },
            last: WindowReport {
                limit: limit_max,
                ..WindowReport::default()
            },
        }
    }

    /// Lets a turn in, or refuses it because the limit is reached.
    pub fn admit(&mut self, now_us: u64) -> Result<Admitted, Refused> {
        self.close_window_if_due(now_us);
        if self.in_flight >= self.limit {
            self.window.refused += 1;
            return Err(Refused {
                in_flight: self.in_flight,
                latency_target_ms: self.settings.latency_target_us / 1000,
            });
        }
        self.in_flight += 1;
        self.window.in_flight_peak = self.window.in_flight_peak.max(self.in_flight);
        Ok(Admitted { arrived_us: now_us })
    }

    /// An admitted turn got its answer (whatever it was) at `now_us`.
    pub fn answered(&mut self, turn: Admitted, now_us: u64) {
        self.release();
        self.window.answered += 1;
        let latency_us = now_us.saturating_sub(turn.arrived_us);
        self.window.slow += u64::from(latency_us > self.settings.tail_latency_us);
        self.window.latency_max_us = self.window.latency_max_us.max(latency_us);
        self.window.latency_min_us = Some(
            self.window
                .latency_min_us
                .map_or(latency_us, |min| min.min(latency_us)),
        );
        self.close_window_if_due(now_us);
    }

    /// An admitted turn was not run (its connection's queue was full, or the
    /// connection went away): its slot is freed and it is no sample.
    pub fn abandoned(&mut self, turn: Admitted) {
        let _ = turn;
        self.release();
    }

    /// Turns in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What the last closed window saw.
    pub fn last_window(&self) -> WindowReport {
        self.last
    }

    fn release(&mut self) {
        debug_assert!(self.in_flight > 0, "a turn was answered twice");
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn close_window_if_due(&mut self, now_us: u64) {
        if now_us.saturating_sub(self.window.started_us) < self.settings.window_us {
            return;
        }
        let window = std::mem::take(&mut self.window);
        self.window.started_us = now_us;
        self.window.in_flight_peak = self.in_flight;
        let Some(fastest_us) = window.latency_min_us else {
            // Nothing was answered: no latency to judge by. Turns still in flight
            // are judged when they are answered, however late. If turns were
            // refused meanwhile, the limit creeps up, so that places held by
            // turns that never answer cannot shut the node for good.
            if window.refused > 0 {
                self.limit = (self.limit + (self.limit / 20).max(1)).min(self.settings.limit_max);
            }
            self.last = WindowReport {
                refused: window.refused,
                limit: self.limit,
                ..WindowReport::default()
            };
            return;
        };
        let target_us = self.settings.latency_target_us;
        let saturated = window.refused > 0 || window.in_flight_peak >= self.limit;
        let base = window.in_flight_peak.min(self.limit).max(1);
        // More than one turn in a hundred over the tail bound.
        let slow_tail = window.slow * 100 > window.answered;
        let limit = if fastest_us > target_us {
            // target/fastest, never below a half.
            let scaled = (base as u128 * target_us as u128 / fastest_us as u128) as usize;
            scaled.max(base / 2)
        } else if slow_tail {
            // tail/slowest, at least a tenth off and never below a half.
            let tail_us = self.settings.tail_latency_us;
            let scaled = (base as u128 * tail_us as u128 / window.latency_max_us as u128) as usize;
            scaled.clamp(base / 2, base - (base / 10).max(1))
        } else if saturated && window.slow > 0 {
            // Near the tail bound: creep, as the slowest turns of a rise are
            // answered windows later.
            self.limit + (self.limit / 20).max(1)
        } else if saturated && fastest_us <= target_us / 2 {
            self.limit + (self.limit / 4).max(1)
        } else if saturated {
            self.limit + (self.limit / 20).max(1)
        } else {
            self.limit
        };
        self.limit = limit.clamp(self.settings.limit_min, self.settings.limit_max);
        self.last = WindowReport {
            answered: window.answered,
            refused: window.refused,
            latency_min_us: fastest_us,
            slow: window.slow,
            limit: self.limit,
        };
    }
}

#[cfg(test)]
mod tests;
