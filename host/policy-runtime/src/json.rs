//! The contract's types as JSON, for reports and APIs: shadow
//! disagreements, the session API's TCP facts, `policy check` output. One
//! rendering each, so every report names a field the same way.

use serde_json::{json, Value};
use vigil_policy_sdk::{Action, SessionFacts, TcpFacts, Verdict};

/// The kernel's view of a session's socket as JSON.
pub fn tcp_json(t: &TcpFacts) -> Value {
    json!({
        "rtt_us": t.rtt_us,
        "rttvar_us": t.rttvar_us,
        "total_retransmits": t.total_retransmits,
        "unacked": t.unacked,
        "last_data_recv_ms": t.last_data_recv_ms,
    })
}

/// Session facts as JSON, for reports.
pub fn facts_json(f: &SessionFacts) -> Value {
    json!({
        "id": f.id,
        "client_class": &*f.client_class,
        "age_ms": f.age_ms,
        "idle_ms": f.idle_ms,
        "app_idle_ms": f.app_idle_ms,
        "since_pong_ms": f.since_pong_ms,
        "outstanding_pings": f.outstanding_pings,
        "oldest_ping_ms": f.oldest_ping_ms,
        "pong_overdue": f.pong_overdue,
        "last_rtt_ms": f.last_rtt_ms,
        "send_errors": f.send_errors,
        "transport_errors": f.transport_errors,
        "queued_bytes": f.queued_bytes,
        "queued_frames": f.queued_frames,
        "backlog_ms": f.backlog_ms,
        "dropped_frames": f.dropped_frames,
        "tier": f.tier.as_str(),
        "tcp": f.tcp.as_ref().map(tcp_json),
    })
}

/// A verdict as JSON, for reports.
pub fn verdict_json(v: &Verdict) -> Value {
    let action = match &v.action {
        Action::Keep => json!("keep"),
        Action::Ping => json!("ping"),
        Action::Evict(e) => json!({"evict": {"reason": e.reason, "close_code": e.close_code}}),
    };
    json!({
        "health": v.health,
        "tier": v.tier.as_str(),
        "action": action,
        "reassess_in_ms": v.reassess_in_ms,
    })
}
