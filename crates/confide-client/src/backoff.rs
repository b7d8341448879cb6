//! Reconnection delays: exponential backoff with jitter, as a pure calculation.
//!
//! The connection actor asks for the delay before each attempt; this module only does
//! arithmetic (the random jitter is a parameter), so its bounds are unit-tested. It must
//! not sleep or touch the clock.

use std::time::Duration;

/// Exponential backoff settings: the delay doubles from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The base delay before the first retry.
    pub initial: Duration,
    /// The base delay never grows beyond this.
    pub max: Duration,
}

impl Default for Backoff {
    /// 200 ms doubling to 30 s.
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry) without jitter:
    /// `initial * 2^(attempt-1)`, capped at `max`.
    #[must_use]
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let factor = 1u32 << doublings;
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |delay| delay.min(self.max))
    }

    /// The delay before retry number `attempt` with "equal jitter": half the base delay
    /// plus `jitter` (clamped to 0..=1) times the other half. Spreading retries this way
    /// keeps many clients that lost the same server from returning all at once, while
    /// the delay stays between half the base and the base.
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.base_delay(attempt);
        let half = base / 2;
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        half + (base - half).mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_doubles_then_caps() {
        let backoff = Backoff::default();
        assert_eq!(backoff.base_delay(1), Duration::from_millis(200));
        assert_eq!(backoff.base_delay(2), Duration::from_millis(400));
        assert_eq!(backoff.base_delay(3), Duration::from_millis(800));
        assert_eq!(backoff.base_delay(8), Duration::from_millis(25_600));
        assert_eq!(backoff.base_delay(9), Duration::from_secs(30));
        assert_eq!(backoff.base_delay(1000), Duration::from_secs(30));
        assert_eq!(backoff.base_delay(u32::MAX), Duration::from_secs(30));
        // Attempt 0 is treated as the first attempt.
        assert_eq!(backoff.base_delay(0), Duration::from_millis(200));
    }

    #[test]
    fn jitter_stays_within_half_and_full_base() {
        let backoff = Backoff::default();
        for attempt in 0..64 {
            let base = backoff.base_delay(attempt);
            for jitter in [0.0, 0.25, 0.5, 0.999, 1.0, -3.0, 7.0, f64::NAN] {
                let delay = backoff.delay(attempt, jitter);
                assert!(delay >= base / 2, "{attempt} {jitter}");
                assert!(delay <= base, "{attempt} {jitter}");
                assert!(delay <= backoff.max);
            }
        }
        assert_eq!(backoff.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff.delay(1, 1.0), Duration::from_millis(200));
    }

    #[test]
    fn huge_initial_delay_does_not_overflow() {
        let backoff = Backoff {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(60),
        };
        assert_eq!(backoff.base_delay(40), Duration::from_secs(60));
    }
}
