//! The shared tick: one task drives every session's pings, pong deadlines
//! and re-assessment, so no session carries a timer of its own. Each tick it
//! hands the policy the events since the last tick and, in one `assess`
//! call, the sessions that are due or had something significant happen, then
//! carries out the verdicts. Which sessions are due it learns from the
//! registry's schedule ([`crate::schedule`]), without touching the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use vigil_policy_sdk::{Action, Event, EventKind, SessionFacts, Verdict};

use crate::hub::Hub;
use crate::policy::VerdictSource;

/// Runs until `stop` turns true.
pub async fn run(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let tick = Duration::from_millis(hub.config.sessions.tick_ms);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut inbox = hub.take_event_inbox();
    let mut monitor = crate::monitor::GrowthMonitor::new(&hub);
    while next_tick(&mut interval, &mut stop).await {
        if let Some(inbox) = inbox.as_mut() {
            forward_events(&hub, inbox);
        }
        tick_once(&hub, Instant::now()).await;
        monitor.check(&hub);
    }
}

/// Waits for the next tick of `interval`; false once `stop` has turned true
/// (or its sender is gone): the loop condition of the host's periodic tasks.
pub(crate) async fn next_tick(
    interval: &mut tokio::time::Interval,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = interval.tick() => {}
        _ = stop.changed() => return false,
    }
    !*stop.borrow()
}

fn forward_events(hub: &Hub, inbox: &mut tokio::sync::mpsc::Receiver<Event>) {
    let mut events = Vec::new();
    while let Ok(event) = inbox.try_recv() {
        events.push(event);
    }
    events.push(Event {
        at_ms: hub.now_ms(Instant::now()),
        kind: EventKind::Tick,
    });
    if hub.policy.send_events(events).is_err() {
        tracing::error!("the policy thread has stopped; events are lost");
    }
}

/// One tick: schedule pings, notice overdue pongs, assess what is due, act.
pub async fn tick_once(hub: &Hub, now: Instant) {
    let tiers = hub.config.tiers;
    let tick = Duration::from_millis(hub.config.sessions.tick_ms);
    let mut batch: Vec<SessionFacts> = Vec::new();
    let mut due = Vec::new();
    hub.registry.collect_due(now, &mut due);
    for id in due {
        let Some(session) = hub.registry.get(id) else {
            continue; // removed since
        };
        let mut state = session.lock();
        if state.close.is_some() {
            continue;
        }
        let timing = tiers.timing(state.tier);
        let pong_timeout = Duration::from_millis(timing.pong_timeout_ms);
        if now >= state.next_ping_at {
            state.ping_requested = Some(now);
            state.next_ping_at = now + Duration::from_millis(timing.ping_interval_ms);
            session.wake();
        }
        let overdue = state.pong_overdue(now, pong_timeout);
        if overdue && !state.overdue_reported {
            state.overdue_reported = true;
            state.significant = true;
        }
        if state.significant || now >= state.reassess_at {
            state.significant = false;
            // Not due again until the verdict says; guards against a slow
            // policy call re-queuing the same session every tick.
            state.reassess_at = now + tick;
            batch.push(session.facts(&state, now, pong_timeout));
        }
        hub.registry.set_due(&session, state.next_due(pong_timeout));
    }
    if batch.is_empty() {
        return;
    }
    let sessions = batch.len();
    let outcome = match hub.policy.assess(hub.now_ms(now), batch).await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::error!(%error, "cannot assess sessions");
            return;
        }
    };
    hub.metrics.policy_calls.inc();
    hub.metrics
        .policy_call_seconds
        .observe(outcome.elapsed.as_secs_f64());
    hub.metrics.policy_batch_sessions.observe(sessions as f64);
    if matches!(outcome.source, VerdictSource::Fallback(_)) {
        hub.metrics.policy_faults.inc();
    }
    for verdict in outcome.verdicts {
        apply(hub, verdict, now, tick);
    }
}

/// Carries out one verdict.
fn apply(hub: &Hub, verdict: Verdict, now: Instant, tick: Duration) {
    let Some(session) = hub.registry.get(verdict.session) else {
        return; // gone since the batch was built
    };
    {
        let mut state = session.lock();
        if state.tier != verdict.tier {
            // The new tier's schedule starts from the last ping.
            let interval =
                Duration::from_millis(hub.config.tiers.timing(verdict.tier).ping_interval_ms);
            let from = state.last_ping_at.unwrap_or(session.connected_at);
            state.next_ping_at = (from + interval).max(now);
            state.tier = verdict.tier;
        }
        state.health = verdict.health;
        state.reassess_at =
            now + Duration::from_millis(u64::from(verdict.reassess_in_ms)).max(tick);
        if verdict.action == Action::Ping && state.pings.is_empty() {
            state.ping_requested = Some(now);
        }
        let timeout = Duration::from_millis(hub.config.tiers.timing(state.tier).pong_timeout_ms);
        hub.registry.set_due(&session, state.next_due(timeout));
    }
    match verdict.action {
        Action::Keep => {}
        Action::Ping => session.wake(),
        Action::Evict(eviction) => {
            hub.evict(session.id, &eviction.reason, eviction.close_code);
        }
    }
}
