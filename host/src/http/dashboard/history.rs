//! The dashboard's memory of the last hour: one [`Sample`] a second of what
//! changes over time (the session count, the growth alarm, evictions by
//! reason, policy calls and their latency), in a ring of fixed size. Cheap
//! to take (counters and a gauge, no pass over the sessions), so it runs
//! whether or not anybody watches, and a page opened at 03:20 can still
//! show what happened at 03:12.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// Samples kept: one hour at one a second.
pub const HISTORY_SAMPLES: usize = 3_600;

/// One second of the host, as the charts plot it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// When, Unix ms.
    pub t: u64,
    /// Sessions open.
    pub sessions: u64,
    /// Whether the session-growth alarm was raised.
    pub suspect: bool,
    /// Removals since the previous sample, by reason (only reasons with
    /// removals; at most the named reasons and `other`).
    pub evicted: BTreeMap<String, u64>,
    /// Guest policy calls since the previous sample.
    pub calls: u64,
    /// Mean time of an `assess` batch since the previous sample, µs; none
    /// when no batch ran.
    pub call_us: Option<f64>,
    /// Policy faults since the previous sample.
    pub faults: u64,
}

/// Running totals as read from the host; two of them make a [`Sample`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Removals since start, by reason.
    pub evicted: BTreeMap<String, u64>,
    /// Guest calls since start.
    pub calls: u64,
    /// `assess` batches timed since start.
    pub batches: u64,
    /// Their summed time, seconds.
    pub batch_seconds: f64,
    /// Faults since start.
    pub faults: u64,
}

impl Totals {
    /// The sample of the second from `earlier` to these totals, at `t`.
    /// Totals that fell (they never should) count as nothing rather than
    /// wrap.
    fn sample_since(&self, earlier: &Totals, t: u64, sessions: u64, suspect: bool) -> Sample {
        let evicted = self
            .evicted
            .iter()
            .filter_map(|(reason, count)| {
                let before = earlier.evicted.get(reason).copied().unwrap_or(0);
                let grown = count.saturating_sub(before);
                (grown > 0).then(|| (reason.clone(), grown))
            })
            .collect();
        let batches = self.batches.saturating_sub(earlier.batches);
        let call_us = (batches > 0)
            .then(|| (self.batch_seconds - earlier.batch_seconds).max(0.0) / batches as f64 * 1e6);
        Sample {
            t,
            sessions,
            suspect,
            evicted,
            calls: self.calls.saturating_sub(earlier.calls),
            call_us,
            faults: self.faults.saturating_sub(earlier.faults),
        }
    }
}

/// The last [`HISTORY_SAMPLES`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    last: Option<Totals>,
}

impl History {
    /// Records the second ending at `t` from the host's `totals` now, and
    /// returns its sample. The first call has nothing to compare with and
    /// records no calls or removals.
    pub fn record(&mut self, t: u64, sessions: u64, suspect: bool, totals: Totals) -> Sample {
        let earlier = self.last.as_ref().unwrap_or(&totals);
        let sample = totals.sample_since(earlier, t, sessions, suspect);
        self.last = Some(totals);
        if self.samples.len() == HISTORY_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample.clone());
        sample
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().cloned().collect()
    }

    /// Samples kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether none is kept yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(transport: u64, calls: u64, batches: u64, seconds: f64) -> Totals {
        Totals {
            evicted: [("transport".to_owned(), transport), ("idle".to_owned(), 4)]
                .into_iter()
                .collect(),
            calls,
            batches,
            batch_seconds: seconds,
            faults: 0,
        }
    }

    #[test]
    fn a_sample_holds_what_changed_since_the_one_before() {
        let mut history = History::default();
        let first = history.record(1_000, 5, false, totals(10, 100, 10, 0.001));
        assert!(
            first.evicted.is_empty(),
            "nothing to compare the first with"
        );
        assert_eq!(first.calls, 0);
        let second = history.record(2_000, 3, true, totals(12, 130, 12, 0.0012));
        assert_eq!(second.evicted.get("transport"), Some(&2));
        assert!(
            !second.evicted.contains_key("idle"),
            "only reasons that grew"
        );
        assert_eq!(second.calls, 30);
        let call_us = second.call_us.unwrap_or_default();
        assert!((call_us - 100.0).abs() < 1e-6, "{call_us}");
        assert!(second.suspect);
        let idle = history.record(3_000, 3, false, totals(12, 130, 12, 0.0012));
        assert_eq!(idle.call_us, None, "no batch ran");
    }

    #[test]
    fn the_history_keeps_the_last_hour_and_no_more() {
        let mut history = History::default();
        for second in 0..(HISTORY_SAMPLES as u64 + 500) {
            history.record(second * 1_000, second, false, Totals::default());
        }
        assert_eq!(history.len(), HISTORY_SAMPLES);
        let samples = history.samples();
        assert_eq!(samples.first().map(|s| s.sessions), Some(500));
        assert_eq!(
            samples.last().map(|s| s.sessions),
            Some(HISTORY_SAMPLES as u64 + 499)
        );
    }
}
