//! A session's liveness state machine, behind methods. The tick, the hub and
//! the session's task change it only through these, each keeping the
//! state's rules; when the tick next needs the session is read from it by
//! one method, [`SessionState::next_due`], which the registry writes to the
//! schedule after every change that can bring it forward
//! ([`crate::core::registry::Registry::update`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A ping's payload is its sequence number, big-endian: this many bytes.
pub(crate) const PING_PAYLOAD_BYTES: usize = 8;

/// The payload of ping `sequence`, which its pong echoes
/// ([`SessionState::record_pong`] reads it back).
pub(crate) fn ping_payload(sequence: u64) -> [u8; PING_PAYLOAD_BYTES] {
    sequence.to_be_bytes()
}

use axum::extract::ws::Message;
use vigil_policy_runtime::{Action, SessionFacts, SessionId, TcpFacts, Tier, Verdict};

use super::pings::{Answered, PingInFlight, PingsInFlight};
use super::queue::{Enqueued, OutboundQueue};
use crate::core::config::{TierTiming, TiersConfig};

/// A host-initiated close: the code and reason go out in the close frame.
#[derive(Debug, Clone)]
pub struct CloseRequest {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason (at most 123 bytes are sent).
    pub reason: String,
}

/// What the tick's probe request turns into for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A WebSocket Ping with this sequence number.
    Ping(u64),
    /// Only a `TCP_INFO` refresh: the endpoint takes no pings.
    Silent,
}

/// What the tick's visit found.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TickVisit {
    /// A ping was requested: wake the session's task.
    pub(crate) wake: bool,
    /// The policy must assess the session in this tick's batch.
    pub(crate) assess: bool,
    /// Its credential expired: the host closes it.
    pub(crate) expired: bool,
}

/// A pong matched to its ping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pong {
    /// The round trip, the host's send delay taken off.
    pub(crate) rtt: Duration,
    /// The same, in whole ms, as the policy sees it.
    pub(crate) rtt_ms: u32,
}

/// The mutable part of a session, behind one small lock.
pub(crate) struct SessionState {
    last_inbound: Instant,
    last_app: Option<Instant>,
    last_pong: Option<Instant>,
    /// Unanswered pings, oldest first.
    pings: PingsInFlight,
    last_ping_at: Option<Instant>,
    last_rtt_ms: Option<u32>,
    send_errors: u32,
    transport_errors: u32,
    queue: OutboundQueue,
    tier: Tier,
    health: u8,
    next_ping_at: Instant,
    reassess_at: Instant,
    /// Something happened that the policy should hear about at the next tick.
    significant: bool,
    overdue_reported: bool,
    /// When the tick (or the policy) asked for a probe. A ping's clock
    /// starts here, not when the task gets to send it, so a pong deadline
    /// falls on a tick and an overdue pong is seen at that tick, not one later.
    ping_requested: Option<Instant>,
    /// The pending probe request is (or includes) the tier's heartbeat.
    heartbeat_requested: bool,
    /// A silent heartbeat probe was taken: the kernel facts read for it are
    /// its answer, news for the policy.
    silent_heartbeat_taken: bool,
    close: Option<CloseRequest>,
    tcp: Option<TcpFacts>,
    /// When `tcp` was last read from the kernel.
    tcp_read_at: Option<Instant>,
    /// When the session's credential expires, if it does.
    expires_at: Option<Instant>,
}

impl SessionState {
    /// A new session: `fast` tier, full health, first ping after
    /// `first_ping_in`, assessed at the next tick.
    pub(crate) fn new(now: Instant, first_ping_in: Duration) -> Self {
        SessionState {
            last_inbound: now,
            last_app: None,
            last_pong: None,
            pings: PingsInFlight::default(),
            last_ping_at: None,
            last_rtt_ms: None,
            send_errors: 0,
            transport_errors: 0,
            queue: OutboundQueue::default(),
            tier: Tier::Fast,
            health: 100,
            next_ping_at: now + first_ping_in,
            reassess_at: now,
            significant: false,
            overdue_reported: false,
            ping_requested: None,
            heartbeat_requested: false,
            silent_heartbeat_taken: false,
            close: None,
            tcp: None,
            tcp_read_at: None,
            expires_at: None,
        }
    }

    /// The session must end at `at` (its token's expiry).
    pub(crate) fn expire_at(&mut self, at: Instant) {
        self.expires_at = Some(at);
    }

    /// When the tick must next look at this session: its next ping, its
    /// next assessment, or its pong deadline, whichever comes first; `None`
    /// when the policy must hear of something now. May be early, never late.
    pub(crate) fn next_due(&self, pong_timeout: Duration) -> Option<Instant> {
        if self.significant {
            return None;
        }
        let mut due = self.next_ping_at.min(self.reassess_at);
        if let Some(expires_at) = self.expires_at {
            due = due.min(expires_at);
        }
        if let Some(requested) = self.ping_requested {
            due = due.min(requested + pong_timeout);
        }
        if !self.overdue_reported {
            if let Some(ping) = self.pings.front() {
                due = due.min(ping.requested + pong_timeout);
            }
        }
        Some(due)
    }

    /// The one definition of an overdue pong: the oldest unanswered ping is
    /// older than the tier's pong timeout.
    fn pong_overdue(&self, now: Instant, pong_timeout: Duration) -> bool {
        self.pings
            .front()
            .is_some_and(|ping| now.saturating_duration_since(ping.requested) >= pong_timeout)
    }

    /// The tier the policy last chose.
    pub(crate) fn tier(&self) -> Tier {
        self.tier
    }

    /// The health the policy last gave.
    pub(crate) fn health(&self) -> u8 {
        self.health
    }

    /// The tick's visit: requests a ping when one is due, notices an overdue
    /// pong (once), and says whether the policy must assess the session now.
    pub(crate) fn visit(&mut self, now: Instant, timing: TierTiming, tick: Duration) -> TickVisit {
        let mut visit = TickVisit::default();
        if self.close.is_some() {
            return visit;
        }
        if self.expires_at.is_some_and(|at| now >= at) {
            visit.expired = true;
            return visit;
        }
        if now >= self.next_ping_at {
            self.ping_requested = Some(now);
            self.heartbeat_requested = true;
            self.next_ping_at = now + timing.ping_interval();
            visit.wake = true;
        }
        if self.pong_overdue(now, timing.pong_timeout()) && !self.overdue_reported {
            self.overdue_reported = true;
            self.significant = true;
        }
        if self.significant || now >= self.reassess_at {
            self.significant = false;
            // Not due again until the verdict says; guards against a slow
            // policy call re-queuing the same session every tick.
            self.reassess_at = now + tick;
            visit.assess = true;
        }
        visit
    }

    /// Carries out the bookkeeping of a verdict: tier, health, the next
    /// assessment, and a ping when the policy asks for one and none is out.
    pub(crate) fn apply(
        &mut self,
        verdict: &Verdict,
        now: Instant,
        tick: Duration,
        tiers: &TiersConfig,
        connected_at: Instant,
    ) {
        if self.tier != verdict.tier {
            // The new tier's schedule starts from the last ping.
            let interval = tiers.timing(verdict.tier).ping_interval();
            let from = self.last_ping_at.unwrap_or(connected_at);
            self.next_ping_at = (from + interval).max(now);
            self.tier = verdict.tier;
        }
        self.health = verdict.health;
        self.reassess_at = now + Duration::from_millis(u64::from(verdict.reassess_in_ms)).max(tick);
        if verdict.action == Action::Ping && self.pings.is_empty() {
            // A heartbeat already pending stays one: the policy's probe
            // merges into it.
            self.heartbeat_requested &= self.ping_requested.is_some();
            self.ping_requested = Some(now);
        }
    }

    /// Brings the next assessment forward to `at` at the latest (after a
    /// swap); an overdue pong the old policy kept is news to the new one.
    pub(crate) fn reassess_by(&mut self, at: Instant) {
        self.reassess_at = self.reassess_at.min(at);
        self.overdue_reported = false;
    }

    /// Queues an outbound message within `soft`/`hard`; backpressure and
    /// drops are news for the policy.
    pub(crate) fn offer(
        &mut self,
        message: Message,
        size: usize,
        soft: usize,
        hard: usize,
        now: Instant,
    ) -> Enqueued {
        if self.close.is_some() {
            return Enqueued::Closing;
        }
        let outcome = self.queue.offer(message, size, soft, hard, now);
        if outcome.is_news() {
            self.significant = true;
        }
        outcome
    }

    /// The next queued message to write.
    pub(crate) fn pop_outbound(&mut self, soft: usize) -> Option<Message> {
        self.queue.pop(soft)
    }

    /// The queued messages, next first.
    pub(crate) fn queued(&self) -> impl Iterator<Item = &Message> {
        self.queue.iter()
    }

    /// Whether anything waits to be written.
    pub(crate) fn has_outbound(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Records the host's wish to close; false if one was already recorded.
    pub(crate) fn request_close(&mut self, request: CloseRequest) -> bool {
        if self.close.is_some() {
            return false;
        }
        self.close = Some(request);
        true
    }

    /// The close the host asked for, if any.
    pub(crate) fn close_request(&self) -> Option<&CloseRequest> {
        self.close.as_ref()
    }

    /// Takes a pending probe request: a ping with the next sequence number
    /// for endpoints that take pings, a silent probe for the rest.
    pub(crate) fn take_probe(
        &mut self,
        sends_pings: bool,
        now: Instant,
        next_sequence: impl FnOnce() -> u64,
    ) -> Option<Probe> {
        if self.close.is_some() {
            return None;
        }
        let requested = self.ping_requested.take()?;
        let heartbeat = std::mem::take(&mut self.heartbeat_requested);
        if !sends_pings {
            self.silent_heartbeat_taken = heartbeat;
            return Some(Probe::Silent);
        }
        let sequence = next_sequence();
        let send_delay = now.saturating_duration_since(requested);
        self.pings.push(PingInFlight {
            sequence,
            requested,
            send_delay_us: send_delay.as_micros().min(u128::from(u32::MAX)) as u32,
            heartbeat,
        });
        self.last_ping_at = Some(requested);
        Some(Probe::Ping(sequence))
    }

    /// Whether the probe just taken should read the kernel's view of the
    /// socket (`TCP_INFO`, a system call per read). It does when the facts
    /// can tell the policy something a pong cannot: always for a silent
    /// probe (it is the probe); when an earlier ping is still unanswered,
    /// data is queued, or the last reading showed retransmits or unacked
    /// segments (the session is in trouble, or may be); and otherwise once
    /// the last reading is older than `max_age` (zero: at every probe). A
    /// session answering every ping with nothing queued needs no fresh
    /// kernel facts each time: its pongs say it is alive, and their round
    /// trips are its RTT.
    pub(crate) fn tcp_due(&self, probe: Probe, now: Instant, max_age: Duration) -> bool {
        match probe {
            Probe::Silent => true,
            // The probe's own ping is the newest in flight.
            Probe::Ping(_) => self.tcp_due_with(self.pings.len() > 1, now, max_age),
        }
    }

    /// Whether a ping is requested and may be sent (no close is): the tick,
    /// which sends heartbeats itself where it can, asks before taking it
    /// with [`SessionState::take_probe`].
    pub(crate) fn ping_pending(&self) -> bool {
        self.close.is_none() && self.ping_requested.is_some()
    }

    /// [`SessionState::tcp_due`] for the ping [`SessionState::ping_pending`]
    /// found, asked before it is taken.
    pub(crate) fn tcp_due_before_ping(&self, now: Instant, max_age: Duration) -> bool {
        self.tcp_due_with(!self.pings.is_empty(), now, max_age)
    }

    /// `tcp_due` for a ping, `late` when an earlier one is still unanswered.
    fn tcp_due_with(&self, late: bool, now: Instant, max_age: Duration) -> bool {
        let Some(read_at) = self.tcp_read_at else {
            return true;
        };
        let troubled = self
            .tcp
            .is_some_and(|tcp| tcp.total_retransmits > 0 || tcp.unacked > 0);
        late || troubled || self.has_outbound() || now.saturating_duration_since(read_at) >= max_age
    }

    /// The kernel's view of the socket, read at `now`. Read for a silent
    /// heartbeat probe, it is that heartbeat's answer: news for the policy
    /// (see [`SessionState::record_pong`]).
    pub(crate) fn set_tcp(&mut self, tcp: Option<TcpFacts>, now: Instant) {
        self.tcp = tcp;
        self.tcp_read_at = Some(now);
        if std::mem::take(&mut self.silent_heartbeat_taken) {
            self.significant = true;
        }
    }

    /// Any inbound frame: the client is there; `application` for data frames.
    pub(crate) fn record_inbound(&mut self, now: Instant, application: bool) {
        self.last_inbound = now;
        if application {
            self.last_app = Some(now);
        }
    }

    /// A pong; matched to its ping (and every earlier one) when its payload
    /// is one of ours, otherwise `None` (activity, nothing to match).
    ///
    /// The answer to a heartbeat ping is news for the policy: the session is
    /// assessed at the next tick, with the round trip it just measured. So a
    /// policy may wait for its sessions' heartbeats instead of polling them
    /// between pings (the default policy does, for steady sessions), and
    /// still see each answer within a tick. The answer to a probe the policy
    /// asked for is not: the policy chose when to look again, and a
    /// policy that probes unhealthy sessions would otherwise probe them
    /// every tick.
    pub(crate) fn record_pong(&mut self, payload: &[u8], now: Instant) -> Option<Pong> {
        let bytes = <[u8; PING_PAYLOAD_BYTES]>::try_from(payload).ok()?;
        let sequence = u64::from_be_bytes(bytes);
        let Answered { ping, heartbeat } = self.pings.answer(sequence)?;
        let sent = ping.requested + Duration::from_micros(u64::from(ping.send_delay_us));
        if heartbeat {
            self.significant = true;
        }
        let rtt = now.saturating_duration_since(sent);
        let rtt_ms = rtt.as_millis().min(u128::from(u32::MAX - 1)) as u32;
        self.last_rtt_ms = Some(rtt_ms);
        self.last_pong = Some(now);
        self.overdue_reported = false;
        Some(Pong { rtt, rtt_ms })
    }

    /// A write failed (the session ends with it).
    pub(crate) fn count_send_error(&mut self) {
        self.send_errors = self.send_errors.saturating_add(1);
    }

    /// A read failed or the client broke the protocol (the session ends).
    pub(crate) fn count_transport_error(&mut self) {
        self.transport_errors = self.transport_errors.saturating_add(1);
    }

    /// The facts the policy sees, as of `now`.
    pub(crate) fn facts(
        &self,
        id: SessionId,
        class: &Arc<str>,
        connected_at: Instant,
        now: Instant,
        pong_timeout: Duration,
    ) -> SessionFacts {
        let since = |at: Instant| now.saturating_duration_since(at).as_millis() as u64;
        SessionFacts {
            id,
            client_class: Arc::clone(class),
            age_ms: since(connected_at),
            idle_ms: since(self.last_inbound),
            app_idle_ms: since(self.last_app.unwrap_or(connected_at)),
            since_pong_ms: self.last_pong.map(since),
            outstanding_pings: self.pings.len() as u32,
            oldest_ping_ms: self.pings.front().map(|ping| since(ping.requested)),
            pong_overdue: self.pong_overdue(now, pong_timeout),
            last_rtt_ms: self.last_rtt_ms,
            send_errors: self.send_errors,
            transport_errors: self.transport_errors,
            queued_bytes: self.queue.bytes() as u64,
            queued_frames: self.queue.frames() as u32,
            backlog_ms: self.queue.backlog_since().map(since).unwrap_or(0),
            dropped_frames: self.queue.dropped(),
            tier: self.tier,
            tcp: self.tcp,
        }
    }

    /// Tier, health, RTT, queue and last inbound activity, for the API.
    pub(crate) fn snapshot(&self, now: Instant) -> SessionSnapshot {
        SessionSnapshot {
            tier: self.tier,
            health: self.health,
            rtt_ms: self.last_rtt_ms,
            queued_bytes: self.queue.bytes(),
            last_seen_ms: now.saturating_duration_since(self.last_inbound).as_millis() as u64,
            tcp: self.tcp,
        }
    }
}

/// A point-in-time view of a session's state for the API.
#[derive(Debug, Clone, Copy)]
pub struct SessionSnapshot {
    /// Current tier.
    pub tier: Tier,
    /// Last health the policy gave.
    pub health: u8,
    /// Last ping/pong round trip.
    pub rtt_ms: Option<u32>,
    /// Outbound bytes waiting.
    pub queued_bytes: usize,
    /// Time since the last inbound frame, ms.
    pub last_seen_ms: u64,
    /// Kernel TCP facts as of the last probe.
    pub tcp: Option<TcpFacts>,
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;

    const TIMING: TierTiming = TierTiming {
        ping_interval_ms: 1_000,
        pong_timeout_ms: 500,
    };

    #[test]
    fn an_unanswered_ping_is_reported_overdue_once_at_its_deadline() {
        let start = Instant::now();
        let tick = Duration::from_millis(100);
        let mut state = SessionState::new(start, Duration::from_millis(1_000));
        let first = state.visit(start, TIMING, tick);
        assert!(
            first.assess && !first.wake,
            "new sessions are assessed at once"
        );
        let ping_at = start + Duration::from_millis(1_000);
        assert!(state.visit(ping_at, TIMING, tick).wake);
        assert_eq!(state.take_probe(true, ping_at, || 7), Some(Probe::Ping(7)));
        let deadline = ping_at + TIMING.pong_timeout();
        assert_eq!(state.next_due(TIMING.pong_timeout()), Some(ping_at + tick));
        let overdue = state.visit(deadline, TIMING, tick);
        assert!(overdue.assess, "the overdue pong is news");
        // Before its next scheduled assessment, the same overdue pong is no news.
        let again = state.visit(deadline + tick / 2, TIMING, tick);
        assert!(!again.assess, "reported once, not every tick");
        assert!(state
            .record_pong(&7u64.to_be_bytes(), deadline + tick)
            .is_some());
        assert!(state.pings.is_empty());
    }

    #[test]
    fn the_heartbeat_after_an_answered_one_is_matched_with_its_own_round_trip() {
        let start = Instant::now();
        let tick = Duration::from_millis(100);
        let mut state = SessionState::new(start, Duration::from_millis(1_000));
        let ping_at = start + Duration::from_millis(1_000);
        assert!(state.visit(ping_at, TIMING, tick).wake);
        assert_eq!(state.take_probe(true, ping_at, || 7), Some(Probe::Ping(7)));
        let answered = ping_at + Duration::from_millis(2);
        assert!(state.record_pong(&7u64.to_be_bytes(), answered).is_some());
        assert!(state.pings.is_empty());
        // The next heartbeat still finds its ping and matches its pong.
        let next = ping_at + TIMING.ping_interval();
        assert!(state.visit(next, TIMING, tick).wake);
        assert_eq!(state.take_probe(true, next, || 8), Some(Probe::Ping(8)));
        assert_eq!(
            state
                .record_pong(&8u64.to_be_bytes(), next + Duration::from_millis(3))
                .map(|pong| pong.rtt_ms),
            Some(3)
        );
    }

    #[test]
    fn a_backlog_makes_the_session_due_now() {
        let now = Instant::now();
        let mut state = SessionState::new(now, Duration::from_secs(5));
        state.visit(now, TIMING, Duration::from_millis(100));
        assert!(state.next_due(TIMING.pong_timeout()).is_some());
        let outcome = state.offer(Message::Text("abc".into()), 3, 1, 10, now);
        assert_eq!(outcome, Enqueued::CrossedSoftMark(3));
        assert_eq!(state.next_due(TIMING.pong_timeout()), None);
    }

    #[test]
    fn a_heartbeats_answer_is_news_for_the_policy_and_a_policy_probes_is_not() {
        let start = Instant::now();
        let tick = Duration::from_millis(100);
        let tiers = TiersConfig::default();
        let mut state = SessionState::new(start, Duration::from_millis(1_000));
        assert!(state.visit(start, TIMING, tick).assess);
        let steady = Verdict {
            session: 1,
            health: 100,
            tier: Tier::Fast,
            action: Action::Keep,
            reassess_in_ms: 60_000,
        };
        state.apply(&steady, start, tick, &tiers, start);
        assert!(state.next_due(TIMING.pong_timeout()).is_some());

        // The tier's heartbeat: its pong makes the session due at once.
        let ping_at = start + Duration::from_millis(1_000);
        assert!(state.visit(ping_at, TIMING, tick).wake);
        assert_eq!(state.take_probe(true, ping_at, || 7), Some(Probe::Ping(7)));
        assert!(
            state.next_due(TIMING.pong_timeout()).is_some(),
            "sent, not answered"
        );
        let answered = ping_at + Duration::from_millis(3);
        assert!(state.record_pong(&7u64.to_be_bytes(), answered).is_some());
        assert_eq!(
            state.next_due(TIMING.pong_timeout()),
            None,
            "the answer is news"
        );
        assert!(state.visit(answered + tick, TIMING, tick).assess);
        state.apply(&steady, answered + tick, tick, &tiers, start);

        // A probe the policy asked for: its answer waits for the verdict's time.
        let probe = Verdict {
            action: Action::Ping,
            ..steady.clone()
        };
        let asked = answered + 2 * tick;
        state.apply(&probe, asked, tick, &tiers, start);
        assert_eq!(state.take_probe(true, asked, || 8), Some(Probe::Ping(8)));
        assert!(state.record_pong(&8u64.to_be_bytes(), asked).is_some());
        assert!(
            state.next_due(TIMING.pong_timeout()).is_some(),
            "the policy chose when to look again"
        );

        // A policy's probe merged into a pending heartbeat is still the heartbeat.
        let next_beat = ping_at + TIMING.ping_interval();
        assert!(state.visit(next_beat, TIMING, tick).wake);
        state.apply(&probe, next_beat, tick, &tiers, start);
        assert_eq!(
            state.take_probe(true, next_beat, || 9),
            Some(Probe::Ping(9))
        );
        assert!(state.record_pong(&9u64.to_be_bytes(), next_beat).is_some());
        assert_eq!(state.next_due(TIMING.pong_timeout()), None);
    }

    #[test]
    fn a_silent_heartbeats_kernel_facts_are_its_answer() {
        let start = Instant::now();
        let tick = Duration::from_millis(100);
        let mut state = SessionState::new(start, Duration::from_millis(1_000));
        state.visit(start, TIMING, tick);
        let beat = start + Duration::from_millis(1_000);
        assert!(state.visit(beat, TIMING, tick).wake);
        assert!(state.next_due(TIMING.pong_timeout()).is_some());
        assert_eq!(state.take_probe(false, beat, || 1), Some(Probe::Silent));
        state.set_tcp(healthy_tcp(), beat);
        assert_eq!(state.next_due(TIMING.pong_timeout()), None, "news");
        state.visit(beat + tick, TIMING, tick);
        state.set_tcp(healthy_tcp(), beat + tick);
        assert!(
            state.next_due(TIMING.pong_timeout()).is_some(),
            "a reading with no heartbeat behind it is not"
        );
    }

    fn healthy_tcp() -> Option<TcpFacts> {
        Some(TcpFacts {
            rtt_us: 50,
            rttvar_us: 10,
            total_retransmits: 0,
            unacked: 0,
            last_data_recv_ms: 0,
        })
    }

    #[test]
    fn kernel_facts_are_read_when_they_can_tell_the_policy_something() {
        let max_age = Duration::from_secs(300);
        let start = Instant::now();
        let mut state = SessionState::new(start, Duration::from_secs(1));
        let mut at = start;
        let ping = |state: &mut SessionState, at: Instant| {
            state.ping_requested = Some(at);
            state
                .take_probe(true, at, || 1)
                .expect("a ping was requested")
        };

        let probe = ping(&mut state, at);
        assert!(state.tcp_due(probe, at, max_age), "never read yet");
        state.set_tcp(healthy_tcp(), at);
        state.record_pong(&1u64.to_be_bytes(), at);

        at += Duration::from_secs(30);
        let probe = ping(&mut state, at);
        assert!(
            !state.tcp_due(probe, at, max_age),
            "answering every ping, nothing queued: the last reading stands"
        );
        at += Duration::from_secs(30);
        let probe = ping(&mut state, at);
        assert!(
            state.tcp_due(probe, at, max_age),
            "the previous ping is unanswered: read now"
        );
        assert!(
            state.tcp_due(Probe::Silent, at, max_age),
            "a silent probe always reads"
        );
        assert!(
            state.tcp_due(probe, at, Duration::ZERO),
            "a zero age reads at every probe"
        );

        let mut quiet = SessionState::new(start, Duration::from_secs(1));
        let probe = ping(&mut quiet, start);
        quiet.set_tcp(healthy_tcp(), start);
        quiet.record_pong(&1u64.to_be_bytes(), start);
        assert!(!quiet.tcp_due(probe, start, max_age));
        assert!(
            quiet.tcp_due(probe, start + max_age, max_age),
            "older than the limit"
        );
        quiet.offer(Message::Text("abc".into()), 3, 100, 1_000, start);
        assert!(quiet.tcp_due(probe, start, max_age), "data is queued");
        let mut lossy = SessionState::new(start, Duration::from_secs(1));
        let probe = ping(&mut lossy, start);
        lossy.set_tcp(
            Some(TcpFacts {
                total_retransmits: 2,
                ..healthy_tcp().expect("facts")
            }),
            start,
        );
        lossy.record_pong(&1u64.to_be_bytes(), start);
        assert!(
            lossy.tcp_due(probe, start, max_age),
            "retransmits were seen: keep watching"
        );
    }
}
