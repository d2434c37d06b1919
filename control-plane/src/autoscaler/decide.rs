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

/// One deployment's memory between passes.
pub struct Scaler {
    /// Demand samples (requests in flight or waiting), oldest first.
    samples: VecDeque<(Instant, u64)>,
    /// Scale-down is off until then.
    panic_until: Option<Instant>,
    /// Counted as the last activity when the board has seen none: a member
    /// that just became leader does not scale anything down at once.
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

fn average(samples: &VecDeque<(Instant, u64)>, since: Instant) -> f64 {
    let recent: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at >= since)
        .map(|(_, d)| *d)
        .collect();
    if recent.is_empty() {
        return 0.0;
    }
    recent.iter().sum::<u64>() as f64 / recent.len() as f64
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
            samples: VecDeque::new(),
            panic_until: None,
            since: now,
        }
    }

    pub fn observe(&mut self, spec: &Autoscale, seen: Observation) -> Decision {
        let now = seen.now;
        let window = spec.window.0;
        let panic_window = spec.panic_window.0.min(window);
        self.samples.push_back((now, seen.demand));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > window)
        {
            self.samples.pop_front();
        }
        let stable = average(&self.samples, now.checked_sub(window).unwrap_or(now));
        let burst = average(&self.samples, now.checked_sub(panic_window).unwrap_or(now));
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
            self.panic_until = Some(now + window);
        }
        let panicking = self.panic_until.is_some_and(|until| now < until);
        let last_active = seen.active_at.unwrap_or(self.since).max(self.since);
        let idle_for = now.saturating_duration_since(last_active);
        let (desired, why) = if seen.demand == 0 && idle_for >= spec.idle.0 {
            self.panic_until = None;
            (
                spec.min,
                format!("idle: no requests for {}", secs(spec.idle.0)),
            )
        } else if panicking {
            (
                want_burst.max(seen.current),
                format!("burst: {numbers}; no scale-down while it lasts"),
            )
        } else {
            // Requests seen within `idle` keep one pod up even at `min = 0`.
            (want_stable.max(1), numbers)
        };
        let desired = desired.clamp(spec.min, spec.max);
        let reason = if desired == spec.max && desired < want_burst.max(want_stable) {
            format!("{why}; held at max {}", spec.max)
        } else {
            why
        };
        Decision { desired, reason }
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
    fn a_new_leader_waits_a_full_idle_before_scaling_down() {
        let spec = spec(0, 4, 50);
        let mut run = Run::new();
        run.current = 3;
        assert_eq!(run.at(&spec, 0.1, 0), 1);
        assert_eq!(run.at(&spec, 2.5, 0), 0);
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
