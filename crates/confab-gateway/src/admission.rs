//! The shell of [`confab_core::admission`]: one machine per node behind a
//! mutex, on the process's monotonic clock, and a slot that frees itself.
//!
//! The reader asks for a slot when a `say` arrives, before the turn is queued
//! on its connection; a refused turn is answered `overloaded` by the reader at
//! once. The slot travels with the turn and is handed back when the runtime
//! answers it: its latency (queueing on the connection, in the runtime and in
//! the committer included) is what the limit adapts to.

use confab_core::admission::{Admission, AdmissionSettings, Admitted, Refused};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the limit is decided again.
const WINDOW: Duration = Duration::from_millis(100);

/// The tail bound, as a multiple of the latency target: at most one admitted
/// turn in a hundred should take longer than this.
const TAIL_OVER_TARGET: u32 = 4;

/// The settings of the node's admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// No queue should stand longer than this (the fastest turns of every
    /// 100 ms are answered within it, and at most one in a hundred takes
    /// longer than four times it); `ZERO` turns the adaptation off (the
    /// runtime's bound on turns in flight still holds).
    pub latency_target: Duration,
    /// The limit never falls below this many turns in flight.
    pub in_flight_min: usize,
    /// Nor rises above this many (the runtime's own bound).
    pub in_flight_max: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            latency_target: Duration::ZERO,
            in_flight_min: 256,
            in_flight_max: 8192,
        }
    }
}

/// The node's admission, shared by every connection.
pub(crate) struct AdmissionGate {
    machine: Option<Mutex<Admission>>,
    origin: Instant,
}

impl AdmissionGate {
    pub(crate) fn new(limits: AdmissionLimits) -> Arc<Self> {
        let origin = Instant::now();
        let machine = (!limits.latency_target.is_zero()).then(|| {
            let settings = AdmissionSettings {
                latency_target_us: micros(limits.latency_target),
                tail_latency_us: micros(limits.latency_target.saturating_mul(TAIL_OVER_TARGET)),
                window_us: micros(WINDOW),
                limit_min: limits.in_flight_min,
                limit_max: limits.in_flight_max,
            };
            metrics::gauge!("confab_admission_limit").set(settings.limit_max as f64);
            Mutex::new(Admission::new(settings, 0))
        });
        Arc::new(Self { machine, origin })
    }

    fn now_us(&self) -> u64 {
        micros(self.origin.elapsed())
    }

    /// A slot for one turn, or why not.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Slot, Refused> {
        let Some(machine) = &self.machine else {
            return Ok(Slot { gate: None });
        };
        let now_us = self.now_us();
        let admitted = machine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(now_us)?;
        Ok(Slot {
            gate: Some((Arc::clone(self), admitted)),
        })
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One admitted turn's place. [`Slot::answered`] gives its latency back;
/// dropped unanswered (the turn never ran), it only frees its place.
pub(crate) struct Slot {
    gate: Option<(Arc<AdmissionGate>, Admitted)>,
}

impl Slot {
    /// The turn got its answer now.
    pub(crate) fn answered(mut self) {
        let Some((gate, turn)) = self.gate.take() else {
            return;
        };
        let now_us = gate.now_us();
        let Some(machine) = &gate.machine else { return };
        let mut machine = machine.lock().unwrap_or_else(PoisonError::into_inner);
        let before = machine.last_window();
        machine.answered(turn, now_us);
        let after = machine.last_window();
        drop(machine);
        if after != before {
            metrics::gauge!("confab_admission_limit").set(after.limit as f64);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((gate, turn)) = self.gate.take()
            && let Some(machine) = &gate.machine
        {
            machine
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .abandoned(turn);
        }
    }
}
