//! A batch read where it lies and an answer written straight into its
//! columns: what [`crate::Policy::assess_batch`] works with.
//!
//! Why: the host hands a wasm plugin its batch as columns (one list per
//! fact) and takes the answer as columns. Turning every session into a
//! [`SessionFacts`] record on the way in, and every [`Verdict`] back into
//! columns on the way out, was about two fifths of a wasm `assess` call of
//! the default policy once the host's own copies were gone (BENCHMARKS.md,
//! issue 16). A policy whose logic reads facts through [`Facts`] can read
//! only the facts it needs, from the columns, and write each decision with
//! [`VerdictWriter::push`]. Policies written against records need none of
//! this: [`crate::Policy::assess_batch`]'s default does the copies for them.

use std::sync::Arc;

use crate::types::*;

/// One session's facts, wherever they are held: a [`SessionFacts`] record,
/// or a row of a [`FactColumns`] batch read in place. Meanings and units are
/// the fields' of [`SessionFacts`] (documented in the WIT).
#[allow(missing_docs)] // documented field by field in the WIT
pub trait Facts {
    fn id(&self) -> SessionId;
    fn client_class(&self) -> &str;
    fn age_ms(&self) -> u64;
    fn idle_ms(&self) -> u64;
    fn app_idle_ms(&self) -> u64;
    fn since_pong_ms(&self) -> Option<u64>;
    fn outstanding_pings(&self) -> u32;
    fn oldest_ping_ms(&self) -> Option<u64>;
    fn pong_overdue(&self) -> bool;
    fn last_rtt_ms(&self) -> Option<u32>;
    fn send_errors(&self) -> u32;
    fn transport_errors(&self) -> u32;
    fn queued_bytes(&self) -> u64;
    fn queued_frames(&self) -> u32;
    fn backlog_ms(&self) -> u64;
    fn dropped_frames(&self) -> u32;
    fn tier(&self) -> Tier;
    fn tcp(&self) -> Option<TcpFacts>;
}

/// A reference reads what it points to, so `&[SessionFacts]` iterates as
/// `Facts` too.
impl<T: Facts + ?Sized> Facts for &T {
    fn id(&self) -> SessionId {
        (**self).id()
    }
    fn client_class(&self) -> &str {
        (**self).client_class()
    }
    fn age_ms(&self) -> u64 {
        (**self).age_ms()
    }
    fn idle_ms(&self) -> u64 {
        (**self).idle_ms()
    }
    fn app_idle_ms(&self) -> u64 {
        (**self).app_idle_ms()
    }
    fn since_pong_ms(&self) -> Option<u64> {
        (**self).since_pong_ms()
    }
    fn outstanding_pings(&self) -> u32 {
        (**self).outstanding_pings()
    }
    fn oldest_ping_ms(&self) -> Option<u64> {
        (**self).oldest_ping_ms()
    }
    fn pong_overdue(&self) -> bool {
        (**self).pong_overdue()
    }
    fn last_rtt_ms(&self) -> Option<u32> {
        (**self).last_rtt_ms()
    }
    fn send_errors(&self) -> u32 {
        (**self).send_errors()
    }
    fn transport_errors(&self) -> u32 {
        (**self).transport_errors()
    }
    fn queued_bytes(&self) -> u64 {
        (**self).queued_bytes()
    }
    fn queued_frames(&self) -> u32 {
        (**self).queued_frames()
    }
    fn backlog_ms(&self) -> u64 {
        (**self).backlog_ms()
    }
    fn dropped_frames(&self) -> u32 {
        (**self).dropped_frames()
    }
    fn tier(&self) -> Tier {
        (**self).tier()
    }
    fn tcp(&self) -> Option<TcpFacts> {
        (**self).tcp()
    }
}

impl Facts for SessionFacts {
    fn id(&self) -> SessionId {
        self.id
    }
    fn client_class(&self) -> &str {
        &self.client_class
    }
    fn age_ms(&self) -> u64 {
        self.age_ms
    }
    fn idle_ms(&self) -> u64 {
        self.idle_ms
    }
    fn app_idle_ms(&self) -> u64 {
        self.app_idle_ms
    }
    fn since_pong_ms(&self) -> Option<u64> {
        self.since_pong_ms
    }
    fn outstanding_pings(&self) -> u32 {
        self.outstanding_pings
    }
    fn oldest_ping_ms(&self) -> Option<u64> {
        self.oldest_ping_ms
    }
    fn pong_overdue(&self) -> bool {
        self.pong_overdue
    }
    fn last_rtt_ms(&self) -> Option<u32> {
        self.last_rtt_ms
    }
    fn send_errors(&self) -> u32 {
        self.send_errors
    }
    fn transport_errors(&self) -> u32 {
        self.transport_errors
    }
    fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }
    fn queued_frames(&self) -> u32 {
        self.queued_frames
    }
    fn backlog_ms(&self) -> u64 {
        self.backlog_ms
    }
    fn dropped_frames(&self) -> u32 {
        self.dropped_frames
    }
    fn tier(&self) -> Tier {
        self.tier
    }
    fn tcp(&self) -> Option<TcpFacts> {
        self.tcp
    }
}

/// A batch's facts as the contract carries them (`session-batch`),
/// borrowed: element `i` of every column is about session `i`, and every
/// column holds [`FactColumns::len`] values. Values a fact may lack are the
/// type's maximum, as in the WIT.
#[derive(Debug, Clone, Copy)]
pub struct FactColumns<'a> {
    pub(crate) len: usize,
    pub(crate) classes: &'a [String],
    pub(crate) id: &'a [u64],
    pub(crate) class_index: &'a [u32],
    pub(crate) age_ms: &'a [u64],
    pub(crate) idle_ms: &'a [u64],
    pub(crate) app_idle_ms: &'a [u64],
    pub(crate) since_pong_ms: &'a [u64],
    pub(crate) outstanding_pings: &'a [u32],
    pub(crate) oldest_ping_ms: &'a [u64],
    pub(crate) pong_overdue: &'a [u8],
    pub(crate) last_rtt_ms: &'a [u32],
    pub(crate) send_errors: &'a [u32],
    pub(crate) transport_errors: &'a [u32],
    pub(crate) queued_bytes: &'a [u64],
    pub(crate) queued_frames: &'a [u32],
    pub(crate) backlog_ms: &'a [u64],
    pub(crate) dropped_frames: &'a [u32],
    pub(crate) tier: &'a [u8],
    pub(crate) tcp_rtt_us: &'a [u32],
    pub(crate) tcp_rttvar_us: &'a [u32],
    pub(crate) tcp_total_retransmits: &'a [u32],
    pub(crate) tcp_unacked: &'a [u32],
    pub(crate) tcp_last_data_recv_ms: &'a [u32],
}

impl<'a> FactColumns<'a> {
    /// Sessions in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch has no session.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Each session's facts, read in place, in the batch's order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = FactRow<'_>> + '_ {
        (0..self.len).map(move |index| FactRow {
            columns: self,
            index,
        })
    }

    /// Every session's facts as one record each (what
    /// [`crate::Policy::assess`] takes); each class is one shared string.
    pub fn to_rows(&self) -> Vec<SessionFacts> {
        let classes: Vec<Arc<str>> = self.classes.iter().map(|c| Arc::from(c.as_str())).collect();
        let unknown_class: Arc<str> = Arc::from("");
        self.rows()
            .map(|row| SessionFacts {
                id: row.id(),
                client_class: classes
                    .get(row.columns.class_index[row.index] as usize)
                    .unwrap_or(&unknown_class)
                    .clone(),
                age_ms: row.age_ms(),
                idle_ms: row.idle_ms(),
                app_idle_ms: row.app_idle_ms(),
                since_pong_ms: row.since_pong_ms(),
                outstanding_pings: row.outstanding_pings(),
                oldest_ping_ms: row.oldest_ping_ms(),
                pong_overdue: row.pong_overdue(),
                last_rtt_ms: row.last_rtt_ms(),
                send_errors: row.send_errors(),
                transport_errors: row.transport_errors(),
                queued_bytes: row.queued_bytes(),
                queued_frames: row.queued_frames(),
                backlog_ms: row.backlog_ms(),
                dropped_frames: row.dropped_frames(),
                tier: row.tier(),
                tcp: row.tcp(),
            })
            .collect()
    }
}

/// One session of a [`FactColumns`] batch, its facts read from the columns
/// as they are asked for.
#[derive(Debug, Clone, Copy)]
pub struct FactRow<'a> {
    columns: &'a FactColumns<'a>,
    index: usize,
}

fn known_u64(value: u64) -> Option<u64> {
    (value != u64::MAX).then_some(value)
}

fn known_u32(value: u32) -> Option<u32> {
    (value != u32::MAX).then_some(value)
}

impl Facts for FactRow<'_> {
    fn id(&self) -> SessionId {
        self.columns.id[self.index]
    }
    fn client_class(&self) -> &str {
        let index = self.columns.class_index[self.index] as usize;
        self.columns.classes.get(index).map_or("", String::as_str)
    }
    fn age_ms(&self) -> u64 {
        self.columns.age_ms[self.index]
    }
    fn idle_ms(&self) -> u64 {
        self.columns.idle_ms[self.index]
    }
    fn app_idle_ms(&self) -> u64 {
        self.columns.app_idle_ms[self.index]
    }
    fn since_pong_ms(&self) -> Option<u64> {
        known_u64(self.columns.since_pong_ms[self.index])
    }
    fn outstanding_pings(&self) -> u32 {
        self.columns.outstanding_pings[self.index]
    }
    fn oldest_ping_ms(&self) -> Option<u64> {
        (self.outstanding_pings() > 0).then(|| self.columns.oldest_ping_ms[self.index])
    }
    fn pong_overdue(&self) -> bool {
        self.columns.pong_overdue[self.index] != 0
    }
    fn last_rtt_ms(&self) -> Option<u32> {
        known_u32(self.columns.last_rtt_ms[self.index])
    }
    fn send_errors(&self) -> u32 {
        self.columns.send_errors[self.index]
    }
    fn transport_errors(&self) -> u32 {
        self.columns.transport_errors[self.index]
    }
    fn queued_bytes(&self) -> u64 {
        self.columns.queued_bytes[self.index]
    }
    fn queued_frames(&self) -> u32 {
        self.columns.queued_frames[self.index]
    }
    fn backlog_ms(&self) -> u64 {
        self.columns.backlog_ms[self.index]
    }
    fn dropped_frames(&self) -> u32 {
        self.columns.dropped_frames[self.index]
    }
    fn tier(&self) -> Tier {
        // The host sends only the codes it defines.
        Tier::from_code(self.columns.tier[self.index]).unwrap_or(Tier::Fast)
    }
    fn tcp(&self) -> Option<TcpFacts> {
        let columns = self.columns;
        let index = self.index;
        known_u32(columns.tcp_rtt_us[index]).map(|rtt_us| TcpFacts {
            rtt_us,
            rttvar_us: columns.tcp_rttvar_us[index],
            total_retransmits: columns.tcp_total_retransmits[index],
            unacked: columns.tcp_unacked[index],
            last_data_recv_ms: columns.tcp_last_data_recv_ms[index],
        })
    }
}

/// The answer to a batch, written column by column as the contract carries
/// it (`verdict-batch`), each distinct eviction reason once.
#[derive(Debug, Default)]
pub struct VerdictWriter {
    pub(crate) reasons: Vec<Arc<str>>,
    pub(crate) session: Vec<SessionId>,
    pub(crate) health: Vec<u8>,
    pub(crate) tier: Vec<u8>,
    pub(crate) action: Vec<u8>,
    pub(crate) reason_index: Vec<u32>,
    pub(crate) close_code: Vec<u16>,
    pub(crate) reassess_in_ms: Vec<u32>,
}

impl VerdictWriter {
    /// An empty answer with room for `verdicts`.
    pub fn with_capacity(verdicts: usize) -> Self {
        VerdictWriter {
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

    /// Verdicts written.
    pub fn len(&self) -> usize {
        self.session.len()
    }

    /// Whether none is written yet.
    pub fn is_empty(&self) -> bool {
        self.session.is_empty()
    }

    /// Writes the verdict about `session` (the fields of a [`Verdict`]). An
    /// eviction's reason is found among those already written by pointer
    /// first, so a policy that keeps its `Action::Evict` values pays no
    /// string comparison and no copy.
    pub fn push(
        &mut self,
        session: SessionId,
        health: u8,
        tier: Tier,
        action: &Action,
        reassess_in_ms: u32,
    ) {
        let (reason, close_code) = match action {
            Action::Keep | Action::Ping => (0, 0),
            Action::Evict(eviction) => (self.reason_index(&eviction.reason), eviction.close_code),
        };
        self.session.push(session);
        self.health.push(health);
        self.tier.push(tier.code());
        self.action.push(action.code());
        self.reason_index.push(reason);
        self.close_code.push(close_code);
        self.reassess_in_ms.push(reassess_in_ms);
    }

    /// Writes `verdict`.
    pub fn push_verdict(&mut self, verdict: &Verdict) {
        self.push(
            verdict.session,
            verdict.health,
            verdict.tier,
            &verdict.action,
            verdict.reassess_in_ms,
        );
    }

    /// Index of `reason` among the reasons written, adding it if new.
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
}

/// Owned columns to lend as a [`FactColumns`], built from records: how a
/// policy's [`crate::Policy::assess_batch`] is tested natively, against
/// its `assess` on the same sessions.
#[derive(Debug, Clone, Default)]
pub struct FactBatch {
    classes: Vec<String>,
    id: Vec<u64>,
    class_index: Vec<u32>,
    age_ms: Vec<u64>,
    idle_ms: Vec<u64>,
    app_idle_ms: Vec<u64>,
    since_pong_ms: Vec<u64>,
    outstanding_pings: Vec<u32>,
    oldest_ping_ms: Vec<u64>,
    pong_overdue: Vec<u8>,
    last_rtt_ms: Vec<u32>,
    send_errors: Vec<u32>,
    transport_errors: Vec<u32>,
    queued_bytes: Vec<u64>,
    queued_frames: Vec<u32>,
    backlog_ms: Vec<u64>,
    dropped_frames: Vec<u32>,
    tier: Vec<u8>,
    tcp_rtt_us: Vec<u32>,
    tcp_rttvar_us: Vec<u32>,
    tcp_total_retransmits: Vec<u32>,
    tcp_unacked: Vec<u32>,
    tcp_last_data_recv_ms: Vec<u32>,
}

impl FactBatch {
    /// The sessions' facts in columns, as the host would send them.
    pub fn from_rows(sessions: &[SessionFacts]) -> Self {
        let mut batch = FactBatch::default();
        for facts in sessions {
            let class = match batch
                .classes
                .iter()
                .position(|c| **c == *facts.client_class)
            {
                Some(index) => index,
                None => {
                    batch.classes.push(facts.client_class.to_string());
                    batch.classes.len() - 1
                }
            };
            let tcp = facts.tcp.unwrap_or(TcpFacts {
                rtt_us: u32::MAX,
                ..TcpFacts::default()
            });
            batch.id.push(facts.id);
            batch.class_index.push(class as u32);
            batch.age_ms.push(facts.age_ms);
            batch.idle_ms.push(facts.idle_ms);
            batch.app_idle_ms.push(facts.app_idle_ms);
            batch
                .since_pong_ms
                .push(facts.since_pong_ms.unwrap_or(u64::MAX));
            batch.outstanding_pings.push(facts.outstanding_pings);
            batch.oldest_ping_ms.push(facts.oldest_ping_ms.unwrap_or(0));
            batch.pong_overdue.push(u8::from(facts.pong_overdue));
            batch
                .last_rtt_ms
                .push(facts.last_rtt_ms.unwrap_or(u32::MAX));
            batch.send_errors.push(facts.send_errors);
            batch.transport_errors.push(facts.transport_errors);
            batch.queued_bytes.push(facts.queued_bytes);
            batch.queued_frames.push(facts.queued_frames);
            batch.backlog_ms.push(facts.backlog_ms);
            batch.dropped_frames.push(facts.dropped_frames);
            batch.tier.push(facts.tier.code());
            batch.tcp_rtt_us.push(tcp.rtt_us);
            batch.tcp_rttvar_us.push(tcp.rttvar_us);
            batch.tcp_total_retransmits.push(tcp.total_retransmits);
            batch.tcp_unacked.push(tcp.unacked);
            batch.tcp_last_data_recv_ms.push(tcp.last_data_recv_ms);
        }
        batch
    }

    /// The columns, lent.
    pub fn columns(&self) -> FactColumns<'_> {
        FactColumns {
            len: self.id.len(),
            classes: &self.classes,
            id: &self.id,
            class_index: &self.class_index,
            age_ms: &self.age_ms,
            idle_ms: &self.idle_ms,
            app_idle_ms: &self.app_idle_ms,
            since_pong_ms: &self.since_pong_ms,
            outstanding_pings: &self.outstanding_pings,
            oldest_ping_ms: &self.oldest_ping_ms,
            pong_overdue: &self.pong_overdue,
            last_rtt_ms: &self.last_rtt_ms,
            send_errors: &self.send_errors,
            transport_errors: &self.transport_errors,
            queued_bytes: &self.queued_bytes,
            queued_frames: &self.queued_frames,
            backlog_ms: &self.backlog_ms,
            dropped_frames: &self.dropped_frames,
            tier: &self.tier,
            tcp_rtt_us: &self.tcp_rtt_us,
            tcp_rttvar_us: &self.tcp_rttvar_us,
            tcp_total_retransmits: &self.tcp_total_retransmits,
            tcp_unacked: &self.tcp_unacked,
            tcp_last_data_recv_ms: &self.tcp_last_data_recv_ms,
        }
    }
}

impl VerdictWriter {
    /// The verdicts written, as records (for tests and native callers).
    pub fn to_rows(&self) -> Vec<Verdict> {
        (0..self.len())
            .map(|row| Verdict {
                session: self.session[row],
                health: self.health[row],
                tier: Tier::from_code(self.tier[row]).unwrap_or(Tier::Fast),
                action: match self.action[row] {
                    action_code::EVICT => match self.reasons.get(self.reason_index[row] as usize) {
                        Some(reason) => Action::Evict(Eviction {
                            reason: Arc::clone(reason),
                            close_code: self.close_code[row],
                        }),
                        None => Action::Keep,
                    },
                    action_code::PING => Action::Ping,
                    _ => Action::Keep,
                },
                reassess_in_ms: self.reassess_in_ms[row],
            })
            .collect()
    }
}
