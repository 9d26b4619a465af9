//! Health score and tier: the composite judgement behind every verdict.

use vigil_policy_sdk::{Facts, Tier};

use crate::config::Settings;

/// Points lost, by source. Each source is capped so that no single kind of
/// trouble other than a dead heartbeat drives health to zero on its own.
mod penalty {
    pub const PONG_OVERDUE: u32 = 60;
    pub const PER_EXTRA_OUTSTANDING_PING: u32 = 10;
    pub const OUTSTANDING_PINGS_MAX: u32 = 30;
    pub const PER_SEND_ERROR: u32 = 15;
    pub const SEND_ERRORS_MAX: u32 = 45;
    pub const PER_TRANSPORT_ERROR: u32 = 10;
    pub const TRANSPORT_ERRORS_MAX: u32 = 30;
    pub const PER_DROPPED_FRAME: u32 = 5;
    pub const DROPPED_FRAMES_MAX: u32 = 20;
    pub const BACKLOG_MAX: u32 = 30;
    pub const SLOW_RTT: u32 = 20;
    pub const RTT_ABOVE_BASELINE: u32 = 10;
    pub const PER_RETRANSMIT: u32 = 2;
    pub const RETRANSMITS_MAX: u32 = 20;
    pub const UNACKED_BACKLOG: u32 = 10;
    pub const APP_SILENCE: u32 = 5;
    pub const APP_SILENCE_NEAR_IDLE_LIMIT: u32 = 15;
}

/// Unacknowledged segments above which the peer is taken to be falling behind.
const UNACKED_LIMIT: u32 = 64;

fn capped(per: u32, count: u32, max: u32) -> u32 {
    per.saturating_mul(count).min(max)
}

/// Composite health, 0–100, from transport state, application activity and
/// error history.
pub(crate) fn health<F: Facts + ?Sized>(
    settings: &Settings,
    facts: &F,
    rtt_baseline_ms: Option<u32>,
) -> u8 {
    let mut lost = 0u32;

    // Heartbeat.
    if facts.pong_overdue() {
        lost += penalty::PONG_OVERDUE;
    }
    lost += capped(
        penalty::PER_EXTRA_OUTSTANDING_PING,
        facts.outstanding_pings().saturating_sub(1),
        penalty::OUTSTANDING_PINGS_MAX,
    );

    // Error history.
    lost += capped(
        penalty::PER_SEND_ERROR,
        facts.send_errors(),
        penalty::SEND_ERRORS_MAX,
    );
    lost += capped(
        penalty::PER_TRANSPORT_ERROR,
        facts.transport_errors(),
        penalty::TRANSPORT_ERRORS_MAX,
    );
    lost += capped(
        penalty::PER_DROPPED_FRAME,
        facts.dropped_frames(),
        penalty::DROPPED_FRAMES_MAX,
    );
    if facts.backlog_ms() > 0 {
        // Grows with the backlog's duration, full at the eviction limit.
        let share = facts.backlog_ms().min(settings.backlog_evict_ms)
            * u64::from(penalty::BACKLOG_MAX)
            / settings.backlog_evict_ms;
        lost += (share as u32).max(1);
    }

    // Transport.
    let tcp = facts.tcp();
    let rtt_ms = facts
        .last_rtt_ms()
        .or_else(|| tcp.map(|tcp| tcp.rtt_us / 1_000));
    if let Some(rtt_ms) = rtt_ms {
        if rtt_ms > settings.slow_rtt_ms {
            lost += penalty::SLOW_RTT;
        } else if let Some(baseline) = rtt_baseline_ms {
            // Far above its own history: four times the baseline, with 50 ms
            // of slack so loopback-fast sessions are not flagged for jitter.
            if rtt_ms > baseline.saturating_mul(4).max(baseline.saturating_add(50)) {
                lost += penalty::RTT_ABOVE_BASELINE;
            }
        }
    }
    if let Some(tcp) = tcp {
        lost += capped(
            penalty::PER_RETRANSMIT,
            tcp.total_retransmits,
            penalty::RETRANSMITS_MAX,
        );
        if tcp.unacked > UNACKED_LIMIT {
            lost += penalty::UNACKED_BACKLOG;
        }
    }

    // Application activity.
    if near_idle_limit_ms(settings).is_some_and(|near| facts.app_idle_ms() >= near) {
        lost += penalty::APP_SILENCE_NEAR_IDLE_LIMIT;
    } else if facts.app_idle_ms() >= settings.keep_alive_after_ms {
        lost += penalty::APP_SILENCE;
    }

    100u32.saturating_sub(lost) as u8
}

/// Application silence from which a session is near its idle limit and
/// loses more health (half the limit); `None` when there is no limit. The
/// health score and the steady session's next assessment
/// ([`crate::reassess`]) both turn on it.
pub(crate) fn near_idle_limit_ms(settings: &Settings) -> Option<u64> {
    (settings.idle_evict_ms > 0).then_some(settings.idle_evict_ms / 2)
}

/// The tier a session should be watched in.
pub(crate) fn tier<F: Facts + ?Sized>(settings: &Settings, facts: &F, health: u8) -> Tier {
    if facts.age_ms() < settings.new_session_ms || health < settings.fast_below_health {
        Tier::Fast
    } else if facts.app_idle_ms() >= settings.keep_alive_after_ms {
        Tier::KeepAlive
    } else {
        Tier::Regular
    }
}
