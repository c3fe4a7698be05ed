//! Rate-limited error logs: a failure that repeats per object (a full spool, a
//! refusing server) is logged once per interval with how many were not logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One log site's limiter.
#[derive(Debug)]
pub struct LogLimit {
    start: Instant,
    every: Duration,
    /// Milliseconds since `start` of the last line logged, plus one (0: none yet).
    last: AtomicU64,
    /// Occurrences not logged since the last line.
    suppressed: AtomicU64,
}

impl LogLimit {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            start: Instant::now(),
            every,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were
    /// not logged since the last line; `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Only the thread that wins the exchange logs; the others count.
        match self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_skipped() {
        let limit = LogLimit::new(Duration::from_millis(200));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.allow(), Some(2));
    }
}
