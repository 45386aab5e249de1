//! The per-user turn limit: a token bucket per uid (GCRA, from `governor`),
//! `limits.turns_per_s` refilled per second with room for `limits.burst`.
//!
//! It is kept by the node that holds the user's socket, before the turn is
//! queued: a refused turn gets `rate_limited` and nothing is recorded. A user
//! connected to several nodes at once gets each node's allowance.

use confab_core::Uid;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// How often buckets that refilled completely are forgotten, so that the table
/// holds only users who talked in the last moments.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(10);

/// The limit's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLimits {
    /// Turns per second a user's bucket refills.
    pub turns_per_s: NonZeroU32,
    /// Turns a full bucket holds: how many may come at once.
    pub burst: NonZeroU32,
}

impl Default for TurnLimits {
    fn default() -> Self {
        Self {
            turns_per_s: NonZeroU32::new(20).expect("20 is not zero"),
            burst: NonZeroU32::new(40).expect("40 is not zero"),
        }
    }
}

/// A turn refused by the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "more than {turns_per_s} turns per second (burst {burst}) from this user: the next is allowed in {wait_ms} ms"
)]
pub struct RateLimited {
    turns_per_s: u32,
    burst: u32,
    wait_ms: u128,
}

/// One token bucket per uid.
pub struct TurnLimiter {
    limits: TurnLimits,
    buckets: DefaultKeyedRateLimiter<Uid>,
    clock: DefaultClock,
}

impl TurnLimiter {
    /// A limiter with these settings; forgets idle buckets in the background
    /// while it lives (call from within a tokio runtime).
    pub fn start(limits: TurnLimits) -> Arc<Self> {
        let limiter = Arc::new(Self::new(limits));
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FORGET_IDLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.forget_idle();
            }
        });
        limiter
    }

    fn new(limits: TurnLimits) -> Self {
        Self::with_quota(
            limits,
            Quota::per_second(limits.turns_per_s).allow_burst(limits.burst),
        )
    }

    fn with_quota(limits: TurnLimits, quota: Quota) -> Self {
        Self {
            limits,
            buckets: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one turn from the uid's bucket, or says when the next is allowed.
    pub fn check(&self, uid: &Uid) -> Result<(), RateLimited> {
        self.buckets
            .check_key(uid)
            .map_err(|not_until| RateLimited {
                turns_per_s: self.limits.turns_per_s.get(),
                burst: self.limits.burst.get(),
                wait_ms: not_until.wait_time_from(self.clock.now()).as_millis(),
            })
    }

    /// Drops the buckets that are full again (their users were quiet).
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(turns_per_s: u32, burst: u32) -> TurnLimits {
        TurnLimits {
            turns_per_s: NonZeroU32::new(turns_per_s).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn the_burst_passes_and_the_next_turn_is_refused() {
        // One turn per hour refills: nothing comes back during the test.
        let burst = NonZeroU32::new(5).unwrap();
        let quota = Quota::with_period(Duration::from_secs(3600))
            .unwrap()
            .allow_burst(burst);
        let limiter = TurnLimiter::with_quota(limits(1, 5), quota);
        let alice = Uid::new("alice").unwrap();
        for turn in 0..5 {
            assert_eq!(limiter.check(&alice), Ok(()), "turn {turn} of the burst");
        }
        let refused = limiter.check(&alice).unwrap_err();
        assert!(refused.to_string().contains("burst 5"), "{refused}");
        // Another user has a bucket of their own.
        assert_eq!(limiter.check(&Uid::new("bob").unwrap()), Ok(()));
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn quiet_users_are_forgotten() {
        let limiter = TurnLimiter::new(limits(1000, 1));
        limiter.check(&Uid::new("alice").unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        limiter.forget_idle();
        assert!(limiter.is_empty());
    }
}
