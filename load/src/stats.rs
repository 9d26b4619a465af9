//! Percentiles as the reports give them.

use std::time::Duration;

use serde::Serialize;

/// p50/p90/p99/p99.9/max of a set of durations, in ms; `None` when there were
/// none (so "nothing measured" can never read as 0 ms).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, Default)]
pub struct Percentiles {
    /// How many values.
    pub n: usize,
    /// Median, ms.
    pub p50: Option<f64>,
    /// 90th percentile, ms.
    pub p90: Option<f64>,
    /// 99th percentile, ms.
    pub p99: Option<f64>,
    /// 99.9th percentile, ms (the largest below 1 000 values).
    pub p999: Option<f64>,
    /// Largest, ms.
    pub max: Option<f64>,
}

/// The `p` quantile (0..=1) of `sorted` (nearest rank), in ms.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let index = ((sorted.len() as f64 * p).ceil() as usize)
        .saturating_sub(1)
        .min(last);
    Some(sorted[index].as_secs_f64() * 1e3)
}

impl Percentiles {
    /// Sorts `values` and summarises them.
    pub fn of(values: &mut [Duration]) -> Self {
        values.sort_unstable();
        Percentiles {
            n: values.len(),
            p50: percentile_ms(values, 0.5),
            p90: percentile_ms(values, 0.9),
            p99: percentile_ms(values, 0.99),
            p999: percentile_ms(values, 0.999),
            max: percentile_ms(values, 1.0),
        }
    }
}
