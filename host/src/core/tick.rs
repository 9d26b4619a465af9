//! The shared tick: one task drives every session's pings, pong deadlines
//! and re-assessment, so no session carries a timer of its own. Each tick it
//! hands the policy the events since the last tick and, in one `assess`
//! call, the sessions that are due or had something significant happen, then
//! carries out the verdicts. Which sessions are due it learns from the
//! registry's schedule ([`crate::core::schedule`]), without touching the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vigil_policy_runtime::{
    Action, Event, EventKind, FrameKind, SessionColumns, Verdict, VerdictSource,
};

use crate::core::close_codes;
use crate::core::hub::Hub;
use crate::core::monitor::GrowthMonitor;
use crate::core::prefetch;
use crate::core::session::state::{ping_payload, SessionState, PING_PAYLOAD_BYTES};
use crate::core::session::Session;
use crate::core::write_gate::DirectWrite;

/// The longest the tick sleeps when nothing is due: events still reach the
/// policy, and the growth alarm still looks, at least this often.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true. Between ticks it sleeps until the
/// earliest due time in the schedule (at least `tick_ms`, at most
/// [`IDLE_WAKE`]), woken early when an earlier one is written.
pub(crate) async fn run(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let tick = Duration::from_millis(hub.config.sessions.tick_ms);
    let mut monitor = GrowthMonitor::new(&hub);
    let schedule = hub.registry.schedule();
    // Kept from tick to tick, so a steady load's scan does not grow it
    // from empty every time.
    let mut due = Vec::new();
    loop {
        let started = Instant::now();
        schedule.awake();
        forward_events(&hub);
        let next_due = tick_once(&hub, started, &mut due).await;
        hub.enforce_inbound_budget();
        monitor.check(&hub);
        // Held inbound bytes are re-checked every tick, as before.
        let longest = if hub.inbound.held() > 0 {
            tick
        } else {
            IDLE_WAKE
        };
        let planned = next_due
            .unwrap_or(started + longest)
            .clamp(started + tick, started + longest);
        let wake_at = hub.registry.sleep_until(planned).max(started + tick);
        let earliest = tokio::time::Instant::from_std(started + tick);
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)) => {}
            _ = async {
                schedule.woken().await;
                // Never more often than once a tick: a burst of writes is
                // one tick's work.
                tokio::time::sleep_until(earliest).await;
            } => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Waits for the next tick of `interval`; false once `stop` has turned true
/// (or its sender is gone): the loop condition of the host's periodic tasks,
/// the shared tick and any profile's own.
pub async fn next_tick(
    interval: &mut tokio::time::Interval,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = interval.tick() => {}
        _ = stop.changed() => return false,
    }
    !*stop.borrow()
}

fn forward_events(hub: &Hub) {
    let mut events = hub.take_events();
    events.push(Event {
        at_ms: hub.now_ms(Instant::now()),
        kind: EventKind::Tick,
    });
    if hub.policy.send_events(events).is_err() {
        tracing::error!("the policy thread has stopped; events are lost");
    }
}

/// One tick: schedule pings, notice overdue pongs, assess what is due, act.
/// Returns the earliest due time after `now` the scan saw. `due` is room
/// for the due sessions, empty on entry and left empty.
pub(crate) async fn tick_once(
    hub: &Hub,
    now: Instant,
    due: &mut Vec<Arc<Session>>,
) -> Option<Instant> {
    let tiers = hub.config.tiers;
    let tick = Duration::from_millis(hub.config.sessions.tick_ms);
    let next_due = hub.registry.collect_due(now, due);
    // Sized for every due session at once: growing the batch's columns
    // from empty cost a reallocation of each of them at every doubling,
    // hundreds a tick at P = 5 s (BENCHMARKS.md, issue 16, ninth part).
    let mut batch = SessionColumns::with_capacity(due.len());
    // The batch's sessions in its order: verdicts usually come back in it,
    // and then need no second registry lookup.
    let mut assessed: Vec<Arc<Session>> = Vec::with_capacity(due.len());
    for (position, session) in due.iter().enumerate() {
        if let Some(later) = due.get(position + prefetch::AHEAD) {
            later.prefetch();
        }
        // Nearer, from a session asked for two visits ago: the socket's
        // meter, which a direct ping writes through.
        if let Some(meter) = due
            .get(position + prefetch::AHEAD / 2)
            .and_then(|nearer| nearer.meter.as_ref())
        {
            prefetch::prefetch_shared(meter, 2);
        }
        let visit = hub.registry.update(session, |state| {
            let timing = tiers.timing(state.tier());
            let visit = state.visit(now, timing, tick);
            if visit.wake {
                // A tail of the ping is the task's to write.
                if ping_directly(hub, session, state, now) != DirectWrite::Written {
                    session.wake();
                }
            }
            if visit.assess {
                batch.push(&state.facts(
                    session.id,
                    &session.class,
                    session.connected_at,
                    now,
                    timing.pong_timeout(),
                ));
            }
            visit
        });
        if visit.expired {
            hub.evict(session.id, "token-expired", close_codes::TOKEN_EXPIRED);
        }
        if visit.assess {
            assessed.push(Arc::clone(session));
        }
    }
    due.clear();
    if batch.is_empty() {
        return next_due;
    }
    let sessions = batch.len();
    let outcome = match hub.policy.assess(hub.now_ms(now), batch).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(%error, "cannot assess sessions");
            return next_due;
        }
    };
    hub.metrics.assessed(outcome.elapsed);
    hub.metrics.policy_batch_sessions.observe(sessions as f64);
    if matches!(outcome.source, VerdictSource::Fallback(_)) {
        hub.metrics.policy_faults.inc();
    }
    for (position, verdict) in outcome.verdicts.rows().enumerate() {
        let session = match assessed.get(position) {
            Some(session) if session.id == verdict.session => Arc::clone(session),
            // Out of the batch's order: by id (the contract checked it is
            // one of the batch's); gone since the batch was built, nothing.
            // (A session in `assessed` removed meanwhile is as harmless: its
            // state is read by no one again, and eviction goes by id.)
            _ => match hub.registry.get(verdict.session) {
                Some(session) => session,
                None => continue,
            },
        };
        apply(hub, &session, verdict, now, tick);
    }
    next_due
}

/// Sends the heartbeat ping the tick's visit just requested, from here,
/// when it can go between the task's frames ([`crate::core::write_gate`]),
/// reading the socket's `TCP_INFO` first when the policy is due fresh
/// facts: then the session's task is not woken for it. `NotNow` leaves the
/// request for the task; `Tail` leaves it the rest of the frame.
fn ping_directly(
    hub: &Hub,
    session: &Session,
    state: &mut SessionState,
    now: Instant,
) -> DirectWrite {
    let Some(meter) = session.meter.as_deref() else {
        return DirectWrite::NotNow;
    };
    if !session.endpoint.pinged || !state.ping_pending() {
        return DirectWrite::NotNow;
    }
    let max_age = hub.config.sessions.tcp_info_max_age();
    let read_tcp = session.socket_is_the_clients() && state.tcp_due_before_ping(now, max_age);
    let sequence = hub.next_ping_sequence();
    let frame = ping_frame(sequence);
    let outcome = meter.gate.try_write(&frame, |fd| {
        if read_tcp {
            state.set_tcp(crate::core::tcp::tcp_info(fd), now);
        }
    });
    if outcome != DirectWrite::NotNow {
        state.take_probe(true, now, || sequence);
        hub.ping_sent(session.id, now);
        hub.metrics.pings_sent_by_tick.inc();
        if hub.config.sessions.frame_events {
            hub.event_at(
                EventKind::FrameSent {
                    session: session.id,
                    kind: FrameKind::Ping,
                    size_bytes: PING_PAYLOAD_BYTES as u32,
                },
                now,
            );
        }
    }
    outcome
}

/// The whole WebSocket frame of a server's ping (final, opcode 9, unmasked).
fn ping_frame(sequence: u64) -> [u8; 2 + PING_PAYLOAD_BYTES] {
    let mut frame = [0u8; 2 + PING_PAYLOAD_BYTES];
    frame[0] = 0x89;
    frame[1] = PING_PAYLOAD_BYTES as u8;
    frame[2..].copy_from_slice(&ping_payload(sequence));
    frame
}

/// Carries out one verdict on its session.
fn apply(hub: &Hub, session: &Session, verdict: Verdict, now: Instant, tick: Duration) {
    hub.registry.update(session, |state| {
        state.apply(&verdict, now, tick, &hub.config.tiers, session.connected_at);
    });
    match verdict.action {
        Action::Keep => {}
        Action::Ping => session.wake(),
        Action::Evict(eviction) => {
            hub.evict(session.id, &eviction.reason, eviction.close_code);
        }
    }
}
