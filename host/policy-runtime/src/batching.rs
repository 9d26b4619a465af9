//! How many sessions one guest call may carry. A Rust policy assesses
//! 10 000 sessions in a couple of milliseconds; a CPython or SpiderMonkey
//! one spends 15–50 µs a session, so a tick's batch of a few thousand would
//! overrun the call deadline and fault. Rather than fault, the sandbox
//! splits a batch into calls of at most [`BatchCap::sessions_per_call`]
//! sessions, each under its own deadline.
//!
//! The cap is either the operator's (`max_batch_sessions`) or measured:
//! every call of [`MEASURED_FROM`] sessions or more updates an average cost
//! per session, and the cap is the number of sessions that fills
//! [`DEADLINE_SHARE`] of the deadline at that cost. A call that still hits
//! the deadline halves the cap at once, and the sandbox retries it at the
//! smaller size; only an overrun at [`MIN_CAP`] is a fault.

use std::time::Duration;

/// Sessions per call before anything is measured: safe for a plugin that
/// costs up to ~150 µs a session at the default 20 ms deadline.
pub const INITIAL_CAP: usize = 128;

/// Never split below this: a call this small that overruns is a plugin
/// problem, not a batching one.
pub const MIN_CAP: usize = 16;

/// Calls smaller than this say more about the call's fixed cost than about
/// the cost per session, and are not measured.
pub const MEASURED_FROM: usize = 32;

/// The share of the deadline a measured cap aims to fill, leaving the rest
/// for the machine being busy and for a garbage collector's pause inside
/// the guest (SpiderMonkey's and CPython's run within the call).
pub const DEADLINE_SHARE: f64 = 0.25;

/// The batch cap of one plugin.
#[derive(Debug, Clone)]
pub struct BatchCap {
    deadline: Duration,
    fixed: Option<usize>,
    measured: usize,
    /// Moving average, ns per session.
    cost_ns: Option<f64>,
}

impl BatchCap {
    /// A cap for calls under `deadline`; `fixed` is the operator's setting
    /// (`None` or 0: measure).
    pub fn new(deadline: Duration, fixed: Option<usize>) -> Self {
        BatchCap {
            deadline,
            fixed: fixed.filter(|&cap| cap > 0),
            measured: INITIAL_CAP,
            cost_ns: None,
        }
    }

    /// Sessions one call may carry now.
    pub fn sessions_per_call(&self) -> usize {
        self.fixed.unwrap_or(self.measured)
    }

    /// Whether the operator set the cap.
    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// The measured cost per session, if any call was large enough.
    pub fn cost_per_session(&self) -> Option<Duration> {
        self.cost_ns.map(|ns| Duration::from_nanos(ns as u64))
    }

    /// Learns from a call of `sessions` that took `elapsed`.
    pub fn record(&mut self, sessions: usize, elapsed: Duration) {
        if sessions < MEASURED_FROM {
            return;
        }
        let sample = elapsed.as_nanos() as f64 / sessions as f64;
        let cost = match self.cost_ns {
            Some(average) => 0.7 * average + 0.3 * sample,
            None => sample,
        };
        self.cost_ns = Some(cost);
        let fits = self.deadline.as_nanos() as f64 * DEADLINE_SHARE / cost.max(1.0);
        self.measured = (fits as usize).max(MIN_CAP);
    }

    /// A call of `sessions` overran the deadline: halve the cap, so the
    /// next ones fit. Returns the new cap when it changed.
    pub fn deadline_hit(&mut self, sessions: usize) -> Option<usize> {
        if self.fixed.is_some() || sessions <= MIN_CAP {
            return None;
        }
        let halved = (sessions / 2).max(MIN_CAP);
        if halved >= self.measured {
            return None;
        }
        self.measured = halved;
        Some(halved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_millis(20);

    #[test]
    fn a_slow_plugin_gets_batches_that_fill_part_of_its_deadline() {
        let mut cap = BatchCap::new(DEADLINE, None);
        assert_eq!(cap.sessions_per_call(), INITIAL_CAP);
        // 50 µs a session: a quarter of 20 ms is 5 ms, 100 sessions.
        cap.record(128, Duration::from_micros(50 * 128));
        assert_eq!(cap.sessions_per_call(), 100);
        assert_eq!(cap.cost_per_session(), Some(Duration::from_micros(50)));
    }

    #[test]
    fn a_fast_plugin_is_not_split_in_practice() {
        let mut cap = BatchCap::new(DEADLINE, None);
        cap.record(10_000, Duration::from_micros(1_500));
        assert!(
            cap.sessions_per_call() > 30_000,
            "{}",
            cap.sessions_per_call()
        );
    }

    #[test]
    fn small_calls_are_not_measured_and_overruns_halve_the_cap() {
        let mut cap = BatchCap::new(DEADLINE, None);
        cap.record(4, Duration::from_millis(19));
        assert_eq!(cap.sessions_per_call(), INITIAL_CAP);
        assert_eq!(cap.deadline_hit(128), Some(64));
        assert_eq!(cap.deadline_hit(128), None, "already below");
        assert_eq!(cap.deadline_hit(20), Some(MIN_CAP));
        assert_eq!(cap.deadline_hit(MIN_CAP), None);
    }

    #[test]
    fn an_operator_cap_is_kept_whatever_is_measured() {
        let mut cap = BatchCap::new(DEADLINE, Some(500));
        cap.record(500, Duration::from_millis(19));
        assert_eq!(cap.sessions_per_call(), 500);
        assert_eq!(cap.deadline_hit(500), None);
        assert!(BatchCap::new(DEADLINE, Some(0)).sessions_per_call() == INITIAL_CAP);
    }
}
