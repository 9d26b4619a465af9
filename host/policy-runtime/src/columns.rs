//! A batch of sessions and the policy's answer about it, held column by
//! column, the way the contract carries them (`session-batch` and
//! `verdict-batch` in `wit/policy.wit`).
//!
//! Why the host holds them so: a plugin call lends the columns to wasmtime
//! as they are, and takes the answer's columns as wasmtime lifted them, so
//! no batch is turned from records into columns on the way in, nor from
//! columns into records on the way out (BENCHMARKS.md, issue 16). The
//! session host fills [`SessionColumns`] as it visits sessions and carries
//! out [`VerdictColumns`] row by row. Row views ([`SessionFacts`],
//! [`Verdict`]) remain for whoever needs a whole session at once: the
//! native fallback, shadow comparisons, traces, tests.

use std::sync::Arc;

use vigil_policy_sdk::{
    action_code, Action, Eviction, SessionFacts, SessionId, TcpFacts, Tier, Verdict,
};

/// Facts about a batch of sessions, one column per fact: element `i` of
/// every column is about the session `ids()[i]`. Values a fact may lack
/// are stored as the contract spells "unknown" (`u64::MAX`, `u32::MAX`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionColumns {
    pub(crate) classes: Vec<Arc<str>>,
    pub(crate) id: Vec<SessionId>,
    pub(crate) class_index: Vec<u32>,
    pub(crate) age_ms: Vec<u64>,
    pub(crate) idle_ms: Vec<u64>,
    pub(crate) app_idle_ms: Vec<u64>,
    pub(crate) since_pong_ms: Vec<u64>,
    pub(crate) outstanding_pings: Vec<u32>,
    pub(crate) oldest_ping_ms: Vec<u64>,
    pub(crate) pong_overdue: Vec<u8>,
    pub(crate) last_rtt_ms: Vec<u32>,
    pub(crate) send_errors: Vec<u32>,
    pub(crate) transport_errors: Vec<u32>,
    pub(crate) queued_bytes: Vec<u64>,
    pub(crate) queued_frames: Vec<u32>,
    pub(crate) backlog_ms: Vec<u64>,
    pub(crate) dropped_frames: Vec<u32>,
    pub(crate) tier: Vec<u8>,
    pub(crate) tcp_rtt_us: Vec<u32>,
    pub(crate) tcp_rttvar_us: Vec<u32>,
    pub(crate) tcp_total_retransmits: Vec<u32>,
    pub(crate) tcp_unacked: Vec<u32>,
    pub(crate) tcp_last_data_recv_ms: Vec<u32>,
}

/// Applies `$apply!(column)` to every per-session column of a
/// [`SessionColumns`], so adding a fact cannot miss a bulk operation.
macro_rules! each_session_column {
    ($apply:ident) => {
        $apply!(id);
        $apply!(class_index);
        $apply!(age_ms);
        $apply!(idle_ms);
        $apply!(app_idle_ms);
        $apply!(since_pong_ms);
        $apply!(outstanding_pings);
        $apply!(oldest_ping_ms);
        $apply!(pong_overdue);
        $apply!(last_rtt_ms);
        $apply!(send_errors);
        $apply!(transport_errors);
        $apply!(queued_bytes);
        $apply!(queued_frames);
        $apply!(backlog_ms);
        $apply!(dropped_frames);
        $apply!(tier);
        $apply!(tcp_rtt_us);
        $apply!(tcp_rttvar_us);
        $apply!(tcp_total_retransmits);
        $apply!(tcp_unacked);
        $apply!(tcp_last_data_recv_ms);
    };
}

impl SessionColumns {
    /// An empty batch.
    pub fn new() -> Self {
        SessionColumns::default()
    }

    /// An empty batch with room for `sessions` without reallocating.
    pub fn with_capacity(sessions: usize) -> Self {
        let mut columns = SessionColumns::default();
        macro_rules! reserve {
            ($column:ident) => {
                columns.$column.reserve_exact(sessions)
            };
        }
        each_session_column!(reserve);
        columns
    }

    /// Sessions in the batch.
    pub fn len(&self) -> usize {
        self.id.len()
    }

    /// Whether the batch has no session.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// The batch's session ids, in its order.
    pub fn ids(&self) -> &[SessionId] {
        &self.id
    }

    /// Appends one session's facts.
    pub fn push(&mut self, facts: &SessionFacts) {
        let class = self.class_index(&facts.client_class);
        let tcp = facts.tcp.unwrap_or(TcpFacts {
            rtt_us: u32::MAX,
            ..TcpFacts::default()
        });
        self.id.push(facts.id);
        self.class_index.push(class);
        self.age_ms.push(facts.age_ms);
        self.idle_ms.push(facts.idle_ms);
        self.app_idle_ms.push(facts.app_idle_ms);
        self.since_pong_ms
            .push(facts.since_pong_ms.unwrap_or(u64::MAX));
        self.outstanding_pings.push(facts.outstanding_pings);
        self.oldest_ping_ms.push(facts.oldest_ping_ms.unwrap_or(0));
        self.pong_overdue.push(u8::from(facts.pong_overdue));
        self.last_rtt_ms.push(facts.last_rtt_ms.unwrap_or(u32::MAX));
        self.send_errors.push(facts.send_errors);
        self.transport_errors.push(facts.transport_errors);
        self.queued_bytes.push(facts.queued_bytes);
        self.queued_frames.push(facts.queued_frames);
        self.backlog_ms.push(facts.backlog_ms);
        self.dropped_frames.push(facts.dropped_frames);
        self.tier.push(facts.tier.code());
        self.tcp_rtt_us.push(tcp.rtt_us);
        self.tcp_rttvar_us.push(tcp.rttvar_us);
        self.tcp_total_retransmits.push(tcp.total_retransmits);
        self.tcp_unacked.push(tcp.unacked);
        self.tcp_last_data_recv_ms.push(tcp.last_data_recv_ms);
    }

    /// Index of `class` in `classes`, adding it if new. Batches hold a
    /// handful of classes, and consecutive sessions usually share one (the
    /// host hands out one `Arc` per class), so a pointer comparison against
    /// the last one added usually settles it.
    fn class_index(&mut self, class: &Arc<str>) -> u32 {
        if let Some(last) = self.class_index.last() {
            if let Some(known) = self.classes.get(*last as usize) {
                if Arc::ptr_eq(known, class) {
                    return *last;
                }
            }
        }
        let found = self
            .classes
            .iter()
            .position(|known| Arc::ptr_eq(known, class) || **known == **class);
        let index = found.unwrap_or_else(|| {
            self.classes.push(Arc::clone(class));
            self.classes.len() - 1
        });
        index as u32
    }

    /// The facts of the session at `index` as one record; `None` past the
    /// end.
    pub fn row(&self, index: usize) -> Option<SessionFacts> {
        (index < self.len()).then(|| self.row_at(index))
    }

    /// The facts at `index`, which is below the length (every column has
    /// one value per session: only `push` and `filter` build them).
    fn row_at(&self, index: usize) -> SessionFacts {
        let known_u64 = |value: u64| (value != u64::MAX).then_some(value);
        let known_u32 = |value: u32| (value != u32::MAX).then_some(value);
        let outstanding_pings = self.outstanding_pings[index];
        SessionFacts {
            id: self.id[index],
            client_class: Arc::clone(&self.classes[self.class_index[index] as usize]),
            age_ms: self.age_ms[index],
            idle_ms: self.idle_ms[index],
            app_idle_ms: self.app_idle_ms[index],
            since_pong_ms: known_u64(self.since_pong_ms[index]),
            outstanding_pings,
            oldest_ping_ms: (outstanding_pings > 0).then_some(self.oldest_ping_ms[index]),
            pong_overdue: self.pong_overdue[index] != 0,
            last_rtt_ms: known_u32(self.last_rtt_ms[index]),
            send_errors: self.send_errors[index],
            transport_errors: self.transport_errors[index],
            queued_bytes: self.queued_bytes[index],
            queued_frames: self.queued_frames[index],
            backlog_ms: self.backlog_ms[index],
            dropped_frames: self.dropped_frames[index],
            // Only `push` writes the column, from a `Tier`.
            tier: Tier::from_code(self.tier[index]).unwrap_or(Tier::Fast),
            tcp: known_u32(self.tcp_rtt_us[index]).map(|rtt_us| TcpFacts {
                rtt_us,
                rttvar_us: self.tcp_rttvar_us[index],
                total_retransmits: self.tcp_total_retransmits[index],
                unacked: self.tcp_unacked[index],
                last_data_recv_ms: self.tcp_last_data_recv_ms[index],
            }),
        }
    }

    /// Every session's facts as one record each, in the batch's order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = SessionFacts> + '_ {
        (0..self.len()).map(|index| self.row_at(index))
    }

    /// Every session's facts as one record each, in a vector.
    pub fn to_rows(&self) -> Vec<SessionFacts> {
        self.rows().collect()
    }

    /// The sessions of `self` for which `keep` holds, in order.
    pub fn filter(&self, mut keep: impl FnMut(SessionId) -> bool) -> SessionColumns {
        let mut kept = SessionColumns {
            classes: self.classes.clone(),
            ..SessionColumns::default()
        };
        for index in 0..self.len() {
            if keep(self.id[index]) {
                macro_rules! copy {
                    ($column:ident) => {
                        kept.$column.push(self.$column[index])
                    };
                }
                each_session_column!(copy);
            }
        }
        kept
    }
}

impl<'a> FromIterator<&'a SessionFacts> for SessionColumns {
    fn from_iter<I: IntoIterator<Item = &'a SessionFacts>>(sessions: I) -> Self {
        let sessions = sessions.into_iter();
        let mut columns = SessionColumns::with_capacity(sessions.size_hint().0);
        for facts in sessions {
            columns.push(facts);
        }
        columns
    }
}

impl From<&[SessionFacts]> for SessionColumns {
    fn from(sessions: &[SessionFacts]) -> Self {
        sessions.iter().collect()
    }
}

/// The verdicts about a batch, one column per field: element `i` of every
/// column is the decision about session `sessions()[i]`. Each distinct
/// eviction reason is held once. Built only by [`VerdictColumns::push`]
/// and by reading a plugin's answer (which checks what `push` ensures):
/// every column has one value per verdict, every tier and action code is
/// one the contract defines, and every eviction's reason index points into
/// the reasons.
#[derive(Debug, Clone, Default)]
pub struct VerdictColumns {
    pub(crate) reasons: Vec<Arc<str>>,
    pub(crate) session: Vec<SessionId>,
    pub(crate) health: Vec<u8>,
    pub(crate) tier: Vec<u8>,
    pub(crate) action: Vec<u8>,
    pub(crate) reason_index: Vec<u32>,
    pub(crate) close_code: Vec<u16>,
    pub(crate) reassess_in_ms: Vec<u32>,
}

impl VerdictColumns {
    /// No verdicts.
    pub fn new() -> Self {
        VerdictColumns::default()
    }

    /// No verdicts, with room for `verdicts` without reallocating.
    pub fn with_capacity(verdicts: usize) -> Self {
        VerdictColumns {
            reasons: Vec::new(),
            session: Vec::with_capacity(verdicts),
            health: Vec::with_capacity(verdicts),
            tier: Vec::with_capacity(verdicts),
            action: Vec::with_capacity(verdicts),
            reason_index: Vec::with_capacity(verdicts),
            close_code: Vec::with_capacity(verdicts),
            reassess_in_ms: Vec::with_capacity(verdicts),
        }
    }

    /// Verdicts held.
    pub fn len(&self) -> usize {
        self.session.len()
    }

    /// Whether there is no verdict.
    pub fn is_empty(&self) -> bool {
        self.session.is_empty()
    }

    /// The session each verdict is about, in the answer's order.
    pub fn sessions(&self) -> &[SessionId] {
        &self.session
    }

    /// Appends one verdict.
    pub fn push(&mut self, verdict: &Verdict) {
        let (reason, close_code) = match &verdict.action {
            Action::Evict(eviction) => (self.reason_index(&eviction.reason), eviction.close_code),
            Action::Keep | Action::Ping => (0, 0),
        };
        self.session.push(verdict.session);
        self.health.push(verdict.health);
        self.tier.push(verdict.tier.code());
        self.action.push(verdict.action.code());
        self.reason_index.push(reason);
        self.close_code.push(close_code);
        self.reassess_in_ms.push(verdict.reassess_in_ms);
    }

    /// Appends every verdict of `other`, its reasons merged into these.
    pub fn append(&mut self, other: VerdictColumns) {
        let remap: Vec<u32> = other
            .reasons
            .iter()
            .map(|reason| self.reason_index(reason))
            .collect();
        self.session.extend_from_slice(&other.session);
        self.health.extend_from_slice(&other.health);
        self.tier.extend_from_slice(&other.tier);
        self.reason_index
            .extend(other.reason_index.iter().zip(&other.action).map(
                |(index, action)| match *action {
                    action_code::EVICT => remap[*index as usize],
                    _ => 0,
                },
            ));
        self.action.extend_from_slice(&other.action);
        self.close_code.extend_from_slice(&other.close_code);
        self.reassess_in_ms.extend_from_slice(&other.reassess_in_ms);
    }

    /// Index of `reason` in `reasons`, adding it if new: by pointer first,
    /// then by content (a policy has a handful of reasons).
    fn reason_index(&mut self, reason: &Arc<str>) -> u32 {
        let found = self
            .reasons
            .iter()
            .position(|known| Arc::ptr_eq(known, reason) || **known == **reason);
        let index = found.unwrap_or_else(|| {
            self.reasons.push(Arc::clone(reason));
            self.reasons.len() - 1
        });
        index as u32
    }

    /// The verdict at `index` as one record; `None` past the end.
    pub fn row(&self, index: usize) -> Option<Verdict> {
        (index < self.len()).then(|| self.row_at(index))
    }

    /// The verdict at `index`, which is below the length.
    fn row_at(&self, index: usize) -> Verdict {
        // The codes were checked when the columns were built (see the type's
        // documentation); a code no action has reads as `keep`.
        let action = match self.action[index] {
            action_code::PING => Action::Ping,
            action_code::EVICT => match self.reasons.get(self.reason_index[index] as usize) {
                Some(reason) => Action::Evict(Eviction {
                    reason: Arc::clone(reason),
                    close_code: self.close_code[index],
                }),
                None => Action::Keep,
            },
            _ => Action::Keep,
        };
        Verdict {
            session: self.session[index],
            health: self.health[index],
            tier: Tier::from_code(self.tier[index]).unwrap_or(Tier::Fast),
            action,
            reassess_in_ms: self.reassess_in_ms[index],
        }
    }

    /// Every verdict as one record, in the answer's order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Verdict> + '_ {
        (0..self.len()).map(|index| self.row_at(index))
    }

    /// Every verdict as one record, in a vector.
    pub fn to_rows(&self) -> Vec<Verdict> {
        self.rows().collect()
    }
}

impl<'a> FromIterator<&'a Verdict> for VerdictColumns {
    fn from_iter<I: IntoIterator<Item = &'a Verdict>>(verdicts: I) -> Self {
        let verdicts = verdicts.into_iter();
        let mut columns = VerdictColumns::with_capacity(verdicts.size_hint().0);
        for verdict in verdicts {
            columns.push(verdict);
        }
        columns
    }
}

impl From<&[Verdict]> for VerdictColumns {
    fn from(verdicts: &[Verdict]) -> Self {
        verdicts.iter().collect()
    }
}

impl PartialEq for VerdictColumns {
    /// The same verdicts in the same order, however the reasons are listed.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.rows().eq(other.rows())
    }
}

impl Eq for VerdictColumns {}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;

    /// Three sessions of two classes, one with every optional fact known
    /// and the others with none.
    fn sessions() -> Vec<SessionFacts> {
        let mut known = SessionFacts::new(7, "onebot");
        known.since_pong_ms = Some(1_200);
        known.outstanding_pings = 2;
        known.oldest_ping_ms = Some(6_000);
        known.pong_overdue = true;
        known.last_rtt_ms = Some(3);
        known.tier = Tier::KeepAlive;
        known.tcp = Some(TcpFacts {
            rtt_us: 80,
            rttvar_us: 20,
            total_retransmits: 1,
            unacked: 2,
            last_data_recv_ms: 900,
        });
        vec![
            SessionFacts::new(5, "default"),
            known,
            SessionFacts::new(9, "default"),
        ]
    }

    #[test]
    fn facts_read_back_as_they_went_in_with_each_class_held_once() {
        let facts = sessions();
        let columns = SessionColumns::from(&facts[..]);
        assert_eq!(columns.len(), 3);
        assert_eq!(columns.ids(), &[5, 7, 9]);
        assert_eq!(columns.to_rows(), facts);
        assert_eq!(columns.classes.len(), 2, "{:?}", columns.classes);
        assert_eq!(columns.row(3), None);
    }

    #[test]
    fn unknown_facts_are_stored_as_the_contract_spells_unknown() {
        let columns = SessionColumns::from(&sessions()[..]);
        assert_eq!(columns.since_pong_ms[0], u64::MAX);
        assert_eq!(columns.last_rtt_ms[0], u32::MAX);
        assert_eq!(columns.tcp_rtt_us[0], u32::MAX);
        assert_eq!(columns.pong_overdue, vec![0, 1, 0]);
        assert_eq!(columns.tier[1], Tier::KeepAlive.code());
    }

    #[test]
    fn a_filter_keeps_its_sessions_and_every_class() {
        let columns = SessionColumns::from(&sessions()[..]);
        let odd_ones = columns.filter(|id| id != 7);
        assert_eq!(odd_ones.ids(), &[5, 9]);
        assert_eq!(odd_ones.row(1), Some(sessions()[2].clone()));
    }

    fn verdict(session: SessionId, action: Action) -> Verdict {
        Verdict {
            session,
            health: 50,
            tier: Tier::Regular,
            action,
            reassess_in_ms: 1_000,
        }
    }

    #[test]
    fn verdicts_read_back_as_they_went_in_with_each_reason_held_once() {
        let idle = Action::Evict(Eviction::new("idle", 4003));
        let verdicts = vec![
            verdict(1, idle.clone()),
            verdict(2, Action::Ping),
            verdict(3, Action::Evict(Eviction::new("idle", 4004))),
            verdict(4, Action::Keep),
        ];
        let columns = VerdictColumns::from(&verdicts[..]);
        assert_eq!(columns.to_rows(), verdicts);
        assert_eq!(columns.sessions(), &[1, 2, 3, 4]);
        assert_eq!(columns.reasons.len(), 1, "{:?}", columns.reasons);
        assert_eq!(columns.row(4), None);
    }

    #[test]
    fn appended_answers_merge_their_reasons() {
        let mut first = VerdictColumns::from(
            &[
                verdict(1, Action::Evict(Eviction::new("idle", 4003))),
                verdict(2, Action::Keep),
            ][..],
        );
        let second = VerdictColumns::from(
            &[
                verdict(3, Action::Evict(Eviction::new("backlog", 4002))),
                verdict(4, Action::Evict(Eviction::new("idle", 4003))),
            ][..],
        );
        first.append(second);
        let reasons: Vec<_> = first
            .rows()
            .map(|verdict| match verdict.action {
                Action::Evict(eviction) => eviction.reason.to_string(),
                other => other.name().to_owned(),
            })
            .collect();
        assert_eq!(reasons, ["idle", "keep", "backlog", "idle"]);
        assert_eq!(first.reasons.len(), 2, "{:?}", first.reasons);
    }
}
