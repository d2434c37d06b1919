//! The autoscaler's arithmetic, pure (Knative's model): desired pods =
//! ceil(requests in flight / concurrency), averaged over a stable window; a
//! burst over the shorter panic window that needs at least twice the pods
//! that are ready scales up at once, and nothing scales down until a whole
//! stable window has passed without one; after `idle` without requests the
//! deployment goes to `min`. Always within [min, max].

use reef_api::Autoscale;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A burst that needs this many times the ready pods is a panic.
const PANIC_THRESHOLD: f64 = 2.0;

/// One deployment's memory between passes: demand samples folded into
/// one-second buckets, so memory is bounded by the window in seconds (at most
/// an hour, see validation) and extra samples from wake-ups do not weigh more
/// than the second they fall in.
pub struct Scaler {
    /// (second since `since`, sum of samples, number of samples), oldest first.
    buckets: VecDeque<(u64, u64, u32)>,
    /// Scale-down is off until then.
    panic_until: Option<Instant>,
    /// When this scaler started: a member that just became leader counts
    /// this as the last activity, and does not scale below what runs until
    /// it has seen a whole window.
    since: Instant,
}

/// What the autoscaler sees of a deployment on one pass.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub now: Instant,
    /// Requests in flight or waiting, cluster-wide.
    pub demand: u64,
    /// When a request was last in flight or new.
    pub active_at: Option<Instant>,
    /// Pods ready now.
    pub ready: u32,
    /// The replicas decided last.
    pub current: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: u32,
    /// The numbers behind it, for the status and the event.
    pub reason: String,
}

fn pods_for(demand: f64, concurrency: u32) -> u32 {
    (demand / f64::from(concurrency.max(1)))
        .ceil()
        .min(f64::from(u32::MAX)) as u32
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

impl Scaler {
    pub fn new(now: Instant) -> Scaler {
        Scaler {
            buckets: VecDeque::new(),
            panic_until: None,
            since: now,
        }
    }

    /// The mean of the per-second means over the last `span`.
    fn average(&self, second: u64, span: Duration) -> f64 {
        let first = second.saturating_sub(span.as_secs().max(1) - 1);
        let (total, seconds) = self
            .buckets
            .iter()
            .filter(|(at, _, _)| *at >= first)
            .fold((0.0, 0u32), |(total, n), (_, sum, count)| {
                (total + *sum as f64 / f64::from((*count).max(1)), n + 1)
            });
        if seconds == 0 {
            0.0
        } else {
            total / f64::from(seconds)
        }
    }

    pub fn observe(&mut self, spec: &Autoscale, seen: Observation) -> Decision {
        let now = seen.now;
        let (min, max) = (spec.min.min(spec.max), spec.max);
        let window = spec.window.0;
        let panic_window = spec.panic_window.0.min(window);
        let second = now.saturating_duration_since(self.since).as_secs();
        match self.buckets.back_mut() {
            Some((at, sum, count)) if *at == second => {
                *sum = sum.saturating_add(seen.demand);
                *count = count.saturating_add(1);
            }
            _ => self.buckets.push_back((second, seen.demand, 1)),
        }
        let oldest = second.saturating_sub(window.as_secs().max(1));
        while self.buckets.front().is_some_and(|(at, _, _)| *at < oldest) {
            self.buckets.pop_front();
        }
        let stable = self.average(second, window);
        let burst = self.average(second, panic_window);
        let c = spec.concurrency;
        let want_stable = pods_for(stable, c);
        let want_burst = pods_for(burst, c);
        let numbers = format!(
            "{} requests now, {stable:.1} on average over {} and {burst:.1} over {}, {c} per pod",
            seen.demand,
            secs(window),
            secs(panic_window)
        );
        let bursting = f64::from(want_burst) >= PANIC_THRESHOLD * f64::from(seen.ready.max(1))
            && want_burst > seen.ready;
        if bursting {
            self.panic_until = Some(now.checked_add(window).unwrap_or(now));
        }
        let panicking = self.panic_until.is_some_and(|until| now < until);
        let learning = now.saturating_duration_since(self.since) < window;
        let last_active = seen.active_at.unwrap_or(self.since).max(self.since);
        let idle_for = now.saturating_duration_since(last_active);
        let (desired, why) = if seen.demand == 0 && idle_for >= spec.idle.0 {
            self.panic_until = None;
            (min, format!("idle: no requests for {}", secs(spec.idle.0)))
        } else if panicking {
            (
                want_burst.max(seen.current),
                format!("burst: {numbers}; no scale-down while it lasts"),
            )
        } else if learning && want_stable < seen.current {
            // Not a whole window seen yet (a new leader): no scale-down on half the story.
            (
                seen.current,
                format!("{numbers}; holding until a whole window is seen"),
            )
        } else {
            // Requests seen within `idle` keep one pod up even at `min = 0`.
            (want_stable.max(1), numbers)
        };
        let desired = desired.clamp(min, max);
        let reason = if desired == max && desired < want_burst.max(want_stable) {
            format!("{why}; held at max {max}")
        } else {
            why
        };
        Decision { desired, reason }
    }

    /// Seconds of samples held (bounded by the window).
    pub fn held(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_api::quantity::Timeout;

    fn spec(min: u32, max: u32, concurrency: u32) -> Autoscale {
        Autoscale {
            min,
            max,
            concurrency,
            idle: Timeout(Duration::from_secs(2)),
            window: Timeout(Duration::from_secs(10)),
            panic_window: Timeout(Duration::from_secs(2)),
        }
    }

    struct Run {
        scaler: Scaler,
        start: Instant,
        current: u32,
        active_at: Option<Instant>,
    }

    impl Run {
        fn new() -> Run {
            let start = Instant::now();
            Run {
                scaler: Scaler::new(start),
                start,
                current: 1,
                active_at: None,
            }
        }

        /// Observes `demand` at `t` seconds with `current` ready pods.
        fn at(&mut self, spec: &Autoscale, t: f64, demand: u64) -> u32 {
            let now = self.start + Duration::from_secs_f64(t);
            if demand > 0 {
                self.active_at = Some(now);
            }
            let decision = self.scaler.observe(
                spec,
                Observation {
                    now,
                    demand,
                    active_at: self.active_at,
                    ready: self.current,
                    current: self.current,
                },
            );
            self.current = decision.desired;
            decision.desired
        }
    }

    #[test]
    fn a_step_load_scales_to_demand_over_concurrency_at_once() {
        let spec = spec(0, 20, 10);
        let mut run = Run::new();
        assert_eq!(run.at(&spec, 0.0, 0), 1, "recently created: one pod");
        // 80 requests against 10 per pod: a burst. The panic window's average
        // climbs with it, and the pods follow on every sample, not a minute on.
        assert_eq!(run.at(&spec, 0.5, 80), 4);
        assert_eq!(run.at(&spec, 1.0, 80), 6);
        assert_eq!(run.at(&spec, 2.6, 80), 8);
        assert_eq!(run.at(&spec, 3.0, 80), 8);
    }

    #[test]
    fn no_scale_down_while_bursting_then_idle_goes_to_min() {
        let spec = spec(0, 20, 10);
        let mut run = Run::new();
        run.at(&spec, 0.0, 80);
        assert_eq!(run.current, 8);
        // Load falls to 10: still within the window after a burst.
        assert_eq!(run.at(&spec, 1.0, 10), 8);
        assert_eq!(run.at(&spec, 1.5, 0), 8);
        // No request for `idle` (2 s): to min.
        assert_eq!(run.at(&spec, 3.6, 0), 0);
    }

    #[test]
    fn stays_within_min_and_max() {
        let spec = spec(2, 5, 1);
        let mut run = Run::new();
        assert_eq!(run.at(&spec, 0.0, 1000), 5);
        assert_eq!(run.at(&spec, 30.0, 0), 2);
    }

    #[test]
    fn activation_from_zero_wants_a_pod_at_the_first_waiting_request() {
        let spec = spec(0, 4, 50);
        let mut run = Run::new();
        run.current = 0;
        assert_eq!(run.at(&spec, 0.0, 1), 1);
    }

    #[test]
    fn a_new_leader_holds_what_runs_until_idle_or_a_whole_window() {
        let spec = spec(0, 4, 50);
        let mut run = Run::new();
        run.current = 3;
        run.active_at = Some(run.start);
        assert_eq!(
            run.at(&spec, 0.1, 10),
            3,
            "demand for 1 pod, but half a story"
        );
        assert_eq!(run.at(&spec, 9.0, 10), 3);
        assert_eq!(run.at(&spec, 10.5, 10), 1, "a whole window of 10 requests");
        assert_eq!(run.at(&spec, 13.0, 0), 0, "then idle");
    }

    #[test]
    fn memory_is_bounded_by_the_window_in_seconds() {
        let spec = spec(0, 4, 50);
        let mut run = Run::new();
        for step in 0..100_000 {
            run.at(&spec, f64::from(step) * 0.01, 5);
        }
        assert!(run.scaler.held() <= 11, "{}", run.scaler.held());
    }

    #[test]
    fn steady_load_follows_the_stable_average() {
        let spec = spec(0, 20, 10);
        let mut run = Run::new();
        run.current = 3;
        for step in 0..40 {
            run.at(&spec, f64::from(step) * 0.5, 30);
        }
        assert_eq!(run.current, 3);
    }
}
