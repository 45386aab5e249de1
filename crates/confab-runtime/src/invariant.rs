//! The simulator's invariants, asserted in the production shell where a node
//! can see them on its own: a violation panics in debug builds (every test
//! run), and in release builds counts `confab_invariant_violations_total
//! {invariant}` and logs an error, never passing silently.

/// A session's events apply to its memory without a gap (seq rises by one).
pub(crate) const LOG_APPLIES: &str = "log-applies";
/// A turn is served only on a loaded session.
pub(crate) const SERVED_LOADED: &str = "served-loaded";
/// A session claims only where the ring in force names its node.
pub(crate) const CLAIM_ON_RING: &str = "claim-on-ring";
/// Every turn queued to a session is answered once.
pub(crate) const TURNS_CONSERVED: &str = "turns-conserved";

/// Reports a violated invariant.
pub(crate) fn violated(invariant: &'static str, detail: &str) {
    metrics::counter!("confab_invariant_violations_total", "invariant" => invariant).increment(1);
    tracing::error!(invariant, detail, "invariant violated");
    debug_assert!(false, "invariant {invariant} violated: {detail}");
}
