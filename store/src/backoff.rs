//! Exponential backoff with jitter, shared by the uploaders.

use std::time::Duration;

/// The delay before retry number `attempt` (0-based): `base × 2^attempt`, capped at
/// `cap`, then drawn uniformly from its upper half ("equal jitter"), so retries
/// from many tasks spread out but never come back sooner than half the schedule.
pub fn delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    let half = exp / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = delay(attempt, base, cap);
            let exp = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempt}: {d:?} outside {exp:?}"
            );
        }
        assert!(delay(30, base, cap) >= Duration::from_millis(2500));
    }
}
