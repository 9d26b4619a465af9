//! The most recent removals, kept for operators: which session went, from
//! where, why, from which tier and with which close code. Metrics count
//! removals by reason; this keeps the last few of them whole, so a
//! dashboard can answer "why were 300 sessions evicted at 03:12?" without
//! a log search. Bounded: a fixed number of removals, and a fixed number
//! of distinct reasons counted by name (a policy names its own reasons).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use vigil_policy_runtime::SessionId;

/// Removals kept whole, newest last.
pub const KEPT_REMOVALS: usize = 200;

/// Distinct reasons counted by name; later new ones count as
/// [`OTHER_REASONS`].
pub const NAMED_REASONS: usize = 24;

/// The bucket of reasons beyond [`NAMED_REASONS`].
pub const OTHER_REASONS: &str = "other";

/// One session's removal.
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    /// Its place in the order of removals since start, from 1.
    pub seq: u64,
    /// When, Unix ms.
    pub at: u64,
    /// The session's id.
    pub session: SessionId,
    /// Its identity, if it had one.
    pub identity: Option<String>,
    /// Its client class.
    pub class: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Why it went (`transport`, `closed`, the policy's reason, …).
    pub reason: String,
    /// Its tier when it went.
    pub tier: &'static str,
    /// The close code the host sent; `None` when the session ended by
    /// itself (the client closed, the transport failed).
    pub code: Option<u16>,
}

#[derive(Default)]
struct Kept {
    removals: VecDeque<Removal>,
    by_reason: BTreeMap<String, u64>,
    total: u64,
}

/// The last [`KEPT_REMOVALS`] removals and the count of every removal by
/// reason. Written on a session's removal path (one short lock), read by
/// the dashboard.
#[derive(Default)]
pub struct RecentRemovals {
    kept: Mutex<Kept>,
}

impl RecentRemovals {
    /// Keeps `removal` (its `seq` is assigned here), dropping the oldest
    /// beyond the bound.
    pub(crate) fn record(&self, mut removal: Removal) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.total += 1;
        removal.seq = kept.total;
        let named =
            kept.by_reason.len() < NAMED_REASONS || kept.by_reason.contains_key(&removal.reason);
        let bucket = if named {
            removal.reason.clone()
        } else {
            OTHER_REASONS.to_owned()
        };
        *kept.by_reason.entry(bucket).or_default() += 1;
        if kept.removals.len() == KEPT_REMOVALS {
            kept.removals.pop_front();
        }
        kept.removals.push_back(removal);
    }

    /// Removals after `seq`, oldest first, at most `limit` (the newest of
    /// them when there are more).
    pub fn after(&self, seq: u64, limit: usize) -> Vec<Removal> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let newer = kept.removals.iter().filter(|removal| removal.seq > seq);
        let count = newer.clone().count();
        newer.skip(count.saturating_sub(limit)).cloned().collect()
    }

    /// Removals since start, every reason together.
    pub fn total(&self) -> u64 {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// Removals since start by reason (at most [`NAMED_REASONS`] names and
    /// [`OTHER_REASONS`]).
    pub fn by_reason(&self) -> BTreeMap<String, u64> {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_reason
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(reason: &str) -> Removal {
        Removal {
            seq: 0,
            at: 0,
            session: 7,
            identity: None,
            class: Arc::from("default"),
            peer: SocketAddr::from(([127, 0, 0, 1], 9)),
            reason: reason.to_owned(),
            tier: "fast",
            code: None,
        }
    }

    #[test]
    fn only_the_newest_removals_are_kept_and_every_one_is_counted() {
        let recent = RecentRemovals::default();
        for _ in 0..KEPT_REMOVALS + 50 {
            recent.record(removal("transport"));
        }
        assert_eq!(recent.total(), (KEPT_REMOVALS + 50) as u64);
        let all = recent.after(0, usize::MAX);
        assert_eq!(all.len(), KEPT_REMOVALS);
        assert_eq!(all.first().map(|r| r.seq), Some(51));
        let last_three = recent.after(0, 3);
        let seqs: Vec<u64> = last_three.iter().map(|r| r.seq).collect();
        let total = recent.total();
        assert_eq!(seqs, vec![total - 2, total - 1, total]);
        assert!(recent.after(total, 10).is_empty());
    }

    #[test]
    fn reasons_beyond_the_named_ones_are_counted_as_other() {
        let recent = RecentRemovals::default();
        for n in 0..NAMED_REASONS + 10 {
            recent.record(removal(&format!("reason-{n}")));
        }
        recent.record(removal("reason-0"));
        let by_reason = recent.by_reason();
        assert_eq!(by_reason.len(), NAMED_REASONS + 1);
        assert_eq!(by_reason.get("reason-0"), Some(&2));
        assert_eq!(by_reason.get(OTHER_REASONS), Some(&10));
        assert_eq!(by_reason.values().sum::<u64>(), recent.total());
    }
}
