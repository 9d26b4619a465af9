//! A census of the live sessions: how many in each tier and each client
//! class, and how their health is spread. One pass over the registry, one
//! short lock per session; what a dashboard shows instead of 20 000 rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use vigil_policy_runtime::Tier;

use crate::core::registry::Registry;

/// Health buckets of width 10: 0–9, 10–19, …, 90–100.
pub const HEALTH_BUCKETS: usize = 10;

/// Client classes named in a census; the rest are summed as `other`.
pub const NAMED_CLASSES: usize = 12;

/// The sessions of one moment, aggregated.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Census {
    /// Sessions counted.
    pub sessions: usize,
    /// Sessions per tier, every tier named (0 when empty).
    pub tiers: BTreeMap<&'static str, usize>,
    /// Sessions per client class, the largest [`NAMED_CLASSES`] by name,
    /// the rest under `other`.
    pub classes: BTreeMap<String, usize>,
    /// Sessions per health bucket of width 10; the last holds 90–100.
    pub health: [usize; HEALTH_BUCKETS],
}

impl Census {
    /// Counts every session in `registry`.
    pub(crate) fn of(registry: &Registry) -> Census {
        let mut census = Census {
            tiers: [Tier::Fast, Tier::Regular, Tier::KeepAlive]
                .into_iter()
                .map(|tier| (tier.as_str(), 0))
                .collect(),
            ..Census::default()
        };
        let mut classes: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        registry.for_each(|session| {
            let (tier, health) = {
                let state = session.lock();
                (state.tier(), state.health())
            };
            census.sessions += 1;
            *census.tiers.entry(tier.as_str()).or_default() += 1;
            census.health[health_bucket(health)] += 1;
            *classes.entry(Arc::clone(&session.class)).or_default() += 1;
        });
        census.classes = top_classes(classes);
        census
    }
}

fn health_bucket(health: u8) -> usize {
    usize::from(health / 10).min(HEALTH_BUCKETS - 1)
}

/// The largest classes by name, the rest summed as `other`.
fn top_classes(classes: BTreeMap<Arc<str>, usize>) -> BTreeMap<String, usize> {
    let mut by_size: Vec<(Arc<str>, usize)> = classes.into_iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    for (rank, (class, count)) in by_size.into_iter().enumerate() {
        let name = if rank < NAMED_CLASSES {
            class.to_string()
        } else {
            "other".to_owned()
        };
        *named.entry(name).or_default() += count;
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_falls_in_buckets_of_ten_with_a_hundred_in_the_last() {
        assert_eq!(health_bucket(0), 0);
        assert_eq!(health_bucket(9), 0);
        assert_eq!(health_bucket(10), 1);
        assert_eq!(health_bucket(89), 8);
        assert_eq!(health_bucket(90), 9);
        assert_eq!(health_bucket(100), 9);
        assert_eq!(health_bucket(255), 9);
    }

    #[test]
    fn classes_beyond_the_largest_are_summed_as_other() {
        let classes: BTreeMap<Arc<str>, usize> = (0..NAMED_CLASSES + 5)
            .map(|n| (Arc::from(format!("class-{n:02}")), n + 1))
            .collect();
        let total: usize = classes.values().sum();
        let named = top_classes(classes);
        assert_eq!(named.len(), NAMED_CLASSES + 1);
        assert_eq!(named.values().sum::<usize>(), total);
        // The five smallest (1..=5 sessions) went to `other`.
        assert_eq!(named.get("other"), Some(&15));
        assert!(!named.contains_key("class-00"));
    }
}
