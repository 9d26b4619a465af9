//! The host's Prometheus metrics, parsed for assertions.

use std::collections::BTreeMap;

/// One reading of the host's metrics: every sample by its series
/// (`name{label="value",...}` exactly as exported).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// Parses Prometheus text exposition (comment lines are skipped).
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse::<f64>().ok()?))
            })
            .collect();
        Metrics { samples }
    }

    /// One series' value: `get("vigil_sessions_active")`, or with its
    /// labels as exported.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The sum of every series of `family` whose labels include
    /// `label="value"` (every series of the family when `label` is empty):
    /// `sum("vigil_evictions_total", "reason", "pong-timeout")`
    /// counts pong timeouts in every tier.
    pub fn sum(&self, family: &str, label: &str, value: &str) -> f64 {
        let wanted = format!("{label}=\"{value}\"");
        self.samples
            .iter()
            .filter(|(series, _)| {
                let Some(rest) = series.strip_prefix(family) else {
                    return false;
                };
                let labels_ok = label.is_empty() || rest.contains(&wanted);
                (rest.is_empty() || rest.starts_with('{')) && labels_ok
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Every series, for a failing test's message.
    pub fn series(&self) -> impl Iterator<Item = (&str, f64)> {
        self.samples
            .iter()
            .map(|(series, value)| (series.as_str(), *value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_read_and_summed_by_label() {
        let metrics = Metrics::parse(
            "# HELP x y\nvigil_sessions_active 3\nvigil_evictions_total{reason=\"idle\",tier=\"fast\"} 2\nvigil_evictions_total{reason=\"idle\",tier=\"regular\"} 1\nvigil_evictions_total{reason=\"backlog\",tier=\"fast\"} 5\n",
        );
        assert_eq!(metrics.get("vigil_sessions_active"), Some(3.0));
        assert_eq!(metrics.sum("vigil_evictions_total", "reason", "idle"), 3.0);
        assert_eq!(metrics.sum("vigil_evictions_total", "", ""), 8.0);
        assert_eq!(metrics.sum("vigil_sessions", "", ""), 0.0);
    }
}
