//! Prometheus metrics, in one registry per server (so several servers in one
//! test process never mix their counts), served as text on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use vigil_policy_runtime::{FaultKind, PolicyHandle};

/// Labels of `vigil_evictions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    /// Why: `transport`, `closed`, `superseded`, `admin`, `capacity`,
    /// `shutdown`, `send-failed`, `protocol`, `rate-limit`, or the policy's reason.
    pub reason: String,
    /// The session's tier when it went.
    pub tier: String,
}

/// Labels of `vigil_connections_refused_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `handshake-timeout`, `handshake-cap`, `per-ip-connections`,
    /// `per-ip-rate`, `tls`.
    pub reason: String,
}

/// Labels of `vigil_policy_swaps_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwapLabels {
    /// `ok` or `rejected`.
    pub result: String,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// Sessions open now.
    pub sessions_active: Gauge,
    /// Sessions ever accepted.
    pub sessions_opened: Counter,
    /// Sessions removed, by reason and tier.
    pub evictions: Family<EvictionLabels, Counter>,
    /// Failed writes.
    pub send_failures: Counter,
    /// Messages dropped at a full queue.
    pub messages_dropped: Counter,
    /// Messages accepted for delivery.
    pub messages_queued: Counter,
    /// Guest policy calls.
    pub policy_calls: Counter,
    /// Batches answered by the fallback because the plugin faulted.
    pub policy_faults: Counter,
    /// Events dropped because the policy fell behind (the buffer between
    /// ticks was full).
    pub policy_events_dropped: Counter,
    /// Time per `assess` batch, seconds.
    pub policy_call_seconds: Histogram,
    /// Sessions per `assess` batch.
    pub policy_batch_sessions: Histogram,
    /// Pings sent.
    pub pings_sent: Counter,
    /// Of those, heartbeats the tick wrote to the socket itself, without
    /// waking the session's task (`core::write_gate`).
    pub pings_sent_by_tick: Counter,
    /// Data messages their sender wrote to the socket itself.
    pub messages_written_directly: Counter,
    /// Pongs received in answer.
    pub pongs_received: Counter,
    /// Ping/pong round trips, seconds.
    pub rtt_seconds: Histogram,
    /// 1 while sessions keep growing without inbound activity.
    pub suspect_session_growth: Gauge,
    /// Connections refused because the session limit was reached.
    pub capacity_refusals: Counter,
    /// Connections refused or closed before they became sessions, by reason.
    pub connections_refused: Family<RefusalLabels, Counter>,
    /// Connections in their handshake now.
    pub handshakes_active: Gauge,
    /// Inbound bytes held in unfinished messages, all sessions together.
    pub inbound_held_bytes: Gauge,
    /// Policy swaps (admin API, file watch, rollback, promote), by result.
    pub swaps: Family<SwapLabels, Counter>,
    /// Time from a swap request to the new policy serving, seconds.
    pub swap_seconds: Histogram,
    /// The summed time of every `assess` batch, ns (what
    /// `policy_call_seconds` sums, readable here).
    assess_nanos: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(|_| {})
    }
}

impl Metrics {
    /// Registers every metric of the host, then lets `register_more` (the
    /// profiles' metrics) add its own to the same registry, so one
    /// `/metrics` serves all of them.
    pub fn new(register_more: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            sessions_active: Gauge::default(),
            sessions_opened: Counter::default(),
            evictions: Family::default(),
            send_failures: Counter::default(),
            messages_dropped: Counter::default(),
            messages_queued: Counter::default(),
            policy_calls: Counter::default(),
            policy_faults: Counter::default(),
            policy_events_dropped: Counter::default(),
            policy_call_seconds: Histogram::new([
                1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
            ]),
            policy_batch_sessions: Histogram::new([1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]),
            pings_sent: Counter::default(),
            pings_sent_by_tick: Counter::default(),
            messages_written_directly: Counter::default(),
            pongs_received: Counter::default(),
            rtt_seconds: Histogram::new([1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0]),
            suspect_session_growth: Gauge::default(),
            capacity_refusals: Counter::default(),
            connections_refused: Family::default(),
            handshakes_active: Gauge::default(),
            inbound_held_bytes: Gauge::default(),
            swaps: Family::default(),
            swap_seconds: Histogram::new([
                1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.5, 1.0, 5.0,
            ]),
            assess_nanos: AtomicU64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "vigil_sessions_active",
            "Sessions open now",
            metrics.sessions_active.clone(),
        );
        registry.register(
            "vigil_sessions_opened",
            "Sessions accepted",
            metrics.sessions_opened.clone(),
        );
        registry.register(
            "vigil_evictions",
            "Sessions removed, by reason and tier",
            metrics.evictions.clone(),
        );
        registry.register(
            "vigil_send_failures",
            "Failed writes to sessions",
            metrics.send_failures.clone(),
        );
        registry.register(
            "vigil_messages_dropped",
            "Messages dropped at a full outbound queue",
            metrics.messages_dropped.clone(),
        );
        registry.register(
            "vigil_messages_queued",
            "Messages accepted for delivery",
            metrics.messages_queued.clone(),
        );
        registry.register(
            "vigil_policy_calls",
            "Policy assess batches",
            metrics.policy_calls.clone(),
        );
        registry.register(
            "vigil_policy_faults",
            "Policy batches answered by the fallback after a plugin fault",
            metrics.policy_faults.clone(),
        );
        registry.register(
            "vigil_policy_events_dropped",
            "Events the policy never saw: the buffer between ticks was full",
            metrics.policy_events_dropped.clone(),
        );
        registry.register(
            "vigil_policy_call_seconds",
            "Time per policy assess batch",
            metrics.policy_call_seconds.clone(),
        );
        registry.register(
            "vigil_policy_batch_sessions",
            "Sessions per policy assess batch",
            metrics.policy_batch_sessions.clone(),
        );
        registry.register(
            "vigil_pings_sent",
            "WebSocket pings sent",
            metrics.pings_sent.clone(),
        );
        registry.register(
            "vigil_pings_sent_by_tick",
            "Heartbeat pings the shared tick wrote to the socket itself, without waking the session's task",
            metrics.pings_sent_by_tick.clone(),
        );
        registry.register(
            "vigil_messages_written_directly",
            "Data messages their sender (a publish, a profile's reply) wrote to the socket itself, with nothing queued ahead, without waking the session's task",
            metrics.messages_written_directly.clone(),
        );
        registry.register(
            "vigil_pongs_received",
            "WebSocket pongs received for the host's pings",
            metrics.pongs_received.clone(),
        );
        registry.register(
            "vigil_rtt_seconds",
            "Ping/pong round-trip times",
            metrics.rtt_seconds.clone(),
        );
        registry.register(
            "vigil_suspect_session_growth",
            "1 while sessions keep growing without inbound application traffic",
            metrics.suspect_session_growth.clone(),
        );
        registry.register(
            "vigil_capacity_refusals",
            "Connections refused at the session limit",
            metrics.capacity_refusals.clone(),
        );
        registry.register(
            "vigil_connections_refused",
            "Connections refused or closed before they became sessions, by reason",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "vigil_handshakes_active",
            "Connections in their handshake now",
            metrics.handshakes_active.clone(),
        );
        registry.register(
            "vigil_inbound_held_bytes",
            "Inbound bytes held in unfinished messages, all sessions together",
            metrics.inbound_held_bytes.clone(),
        );
        registry.register(
            "vigil_policy_swaps",
            "Policy swaps (admin API, file watch, rollback, promote), by result",
            metrics.swaps.clone(),
        );
        registry.register(
            "vigil_policy_swap_seconds",
            "Time from a swap request to the new policy serving",
            metrics.swap_seconds.clone(),
        );
        register_more(&mut registry);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts an `assess` batch that took `elapsed`.
    pub fn assessed(&self, elapsed: Duration) {
        self.policy_calls.inc();
        self.policy_call_seconds.observe(elapsed.as_secs_f64());
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.assess_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `assess` batches so far and their summed time.
    pub fn assess_totals(&self) -> (u64, Duration) {
        (
            self.policy_calls.get(),
            Duration::from_nanos(self.assess_nanos.load(Ordering::Relaxed)),
        )
    }

    /// Counts a removed session.
    pub fn evicted(&self, reason: &str, tier: &str) {
        self.evictions
            .get_or_create(&EvictionLabels {
                reason: reason.to_owned(),
                tier: tier.to_owned(),
            })
            .inc();
    }

    /// Counts a connection refused or closed before it became a session.
    pub fn refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&RefusalLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a swap attempt.
    pub fn swap(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.swaps
            .get_or_create(&SwapLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition, with the policy's own counters.
    pub fn render(&self, policy: &PolicyHandle) -> String {
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        // The plugin's fault counters by kind live on the policy thread's
        // shared stats; append them in the same format.
        let stats = policy.stats();
        // The registry's text ends with `# EOF`; it goes back at the end.
        text.truncate(text.trim_end_matches("# EOF\n").len());
        text.push_str("# HELP vigil_policy_plugin_faults Plugin faults by kind.\n# TYPE vigil_policy_plugin_faults counter\n");
        for kind in FaultKind::ALL {
            text.push_str(&format!(
                "vigil_policy_plugin_faults_total{{kind=\"{}\"}} {}\n",
                kind.as_str(),
                stats.faults(kind)
            ));
        }
        text.push_str("# HELP vigil_policy_shadow_disagreements Sessions a shadow policy judged differently from the active one.\n# TYPE vigil_policy_shadow_disagreements counter\n");
        text.push_str(&format!(
            "vigil_policy_shadow_disagreements_total {}\n",
            policy.shadow_disagreements()
        ));
        let info = policy.info();
        text.push_str(
            "# HELP vigil_policy_info The active policy plugin.\n# TYPE vigil_policy_info gauge\n",
        );
        text.push_str(&format!(
            "vigil_policy_info{{name=\"{}\",sha256=\"{}\",state=\"{}\"}} 1\n",
            info.name.replace('"', "'"),
            info.sha256,
            stats.state().as_str()
        ));
        text.push_str("# EOF\n");
        text
    }
}
