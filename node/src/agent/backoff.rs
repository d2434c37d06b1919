//! Exponential back-off between restarts of a command pod (CrashLoopBackOff):
//! the first restart waits `base`, each quick one after it twice as long, up
//! to `max`. A run that lasted at least `max` was healthy for a while: the
//! next restart starts again at `base`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Kubernetes' figures: 10 s doubling to 5 min.
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait before the next start, given the previous wait (`None` for
    /// the first restart) and how long the run that just ended lasted.
    pub fn next(&self, previous: Option<Duration>, ran: Duration) -> Duration {
        match previous {
            Some(previous) if ran < self.max => (previous * 2).min(self.max),
            _ => self.base.min(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let quick = Duration::from_millis(100);
        let first = b.next(None, quick);
        assert_eq!(first, Duration::from_secs(1));
        let second = b.next(Some(first), quick);
        assert_eq!(second, Duration::from_secs(2));
        let third = b.next(Some(second), quick);
        assert_eq!(third, Duration::from_secs(4));
        assert_eq!(b.next(Some(third), quick), Duration::from_secs(5));
        assert_eq!(
            b.next(Some(Duration::from_secs(5)), quick),
            Duration::from_secs(5)
        );
        assert_eq!(
            b.next(Some(Duration::from_secs(5)), Duration::from_secs(6)),
            Duration::from_secs(1)
        );
    }
}
