//! Vigil's default session liveness policy.
//!
//! One source, two builds: compiled to a `wasm32-wasip2` component it is the
//! plugin Vigil runs by default; compiled natively it is the host's fallback
//! when a plugin faults, and the baseline the wasm build is benchmarked
//! against.
//!
//! The policy in one paragraph: a session's health (0–100) starts at 100 and
//! loses points for heartbeat trouble (unanswered or overdue pongs), error
//! history (send failures, transport errors, dropped messages, a backed-up
//! outbound queue), a slow or lossy transport (RTT above a limit or far above
//! the session's own baseline, TCP retransmits, unacknowledged segments) and
//! long application silence. New or unhealthy sessions are watched in the
//! `fast` tier, quiet ones that still answer pings in `keep-alive`, the rest
//! in `regular`. A session is evicted for an overdue pong, repeated send
//! failures, a backlog that lasts or overflows, or (in `keep-alive`, when
//! configured) application silence past the idle limit, or (when configured)
//! inbound silence of any kind. A steady `regular` session is looked at
//! again when its verdict can next change, not on a fixed interval (see
//! `reassess`). Client classes can take a built-in preset
//! (`onebot` does by default; see [`config::PRESETS`]). Under capacity
//! pressure the least healthy sessions go first.

mod config;
mod history;
mod reassess;
mod scoring;

pub use config::{ClassOverrides, Config, ConfigError, Settings, PRESETS};

use history::History;
use vigil_policy_sdk::{
    Action, Event, Eviction, FactColumns, Facts, Policy, SessionFacts, SessionId, Tier, Verdict,
    VerdictWriter,
};

/// Close codes the default policy uses, one per reason, so a client's logs
/// say why it was dropped. All are in the private-use range 4000–4999.
pub mod close_codes {
    /// No pong within the tier's pong timeout.
    pub const PONG_TIMEOUT: u16 = 4000;
    /// Too many failed writes.
    pub const SEND_FAILURES: u16 = 4001;
    /// Outbound queue above the soft mark for too long, or overflowing.
    pub const BACKLOG: u16 = 4002;
    /// No application traffic for longer than the idle limit.
    pub const IDLE: u16 = 4003;
    /// Nothing at all from the client (not even its own pings) for longer
    /// than the silence limit.
    pub const SILENT: u16 = 4004;
}

/// The evictions the default policy makes, built once: each verdict that
/// evicts shares its reason string (a reference count, not an allocation),
/// and the WIT carries each reason once per answer.
#[derive(Debug, Clone)]
struct Evictions {
    pong_timeout: Action,
    send_failures: Action,
    backlog_overflow: Action,
    backlog: Action,
    silent: Action,
    idle: Action,
}

impl Default for Evictions {
    fn default() -> Self {
        let evict = |reason: &str, close_code| Action::Evict(Eviction::new(reason, close_code));
        Evictions {
            pong_timeout: evict("pong-timeout", close_codes::PONG_TIMEOUT),
            send_failures: evict("send-failures", close_codes::SEND_FAILURES),
            backlog_overflow: evict("backlog-overflow", close_codes::BACKLOG),
            backlog: evict("backlog", close_codes::BACKLOG),
            silent: evict("silent", close_codes::SILENT),
            idle: evict("idle", close_codes::IDLE),
        }
    }
}

/// The default policy: [`Config`] plus the per-session RTT history it learns
/// from events (a hint; every decision also works from facts alone).
#[derive(Debug, Default)]
pub struct DefaultPolicy {
    config: Config,
    history: History,
    evictions: Evictions,
}

impl DefaultPolicy {
    /// A policy with the given configuration and no history.
    pub fn new(config: Config) -> Self {
        DefaultPolicy {
            config,
            history: History::default(),
            evictions: Evictions::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The verdict for one session, as [`Policy::assess`] gives it in a batch.
    pub fn verdict(&self, facts: &SessionFacts) -> Verdict {
        self.verdict_under(self.config.for_class(&facts.client_class), facts)
    }

    /// The verdict for one session under its class's `settings`.
    fn verdict_under(&self, settings: &Settings, facts: &SessionFacts) -> Verdict {
        self.decide(settings, facts).verdict(facts.id)
    }

    /// The decision about one session under its class's `settings`, its
    /// facts read wherever they are held.
    fn decide<F: Facts + ?Sized>(&self, settings: &Settings, facts: &F) -> Decision<'_> {
        let baseline = self.history.rtt_baseline_ms(facts.id());
        let health = scoring::health(settings, facts, baseline);
        let tier = scoring::tier(settings, facts, health);
        let action = decide_action(settings, facts, tier, health, &self.evictions);
        Decision {
            health,
            tier,
            reassess_in_ms: reassess::reassess_in_ms(settings, facts, tier, action),
            action,
        }
    }

    /// Decides about every session of `sessions`, in order, handing each
    /// decision to `emit`. Sessions of one class share one string, and a
    /// batch holds a handful of classes: their settings are found once per
    /// class (by the string's address), not by hashing the name for every
    /// session.
    fn decide_each<F: Facts>(
        &self,
        sessions: impl Iterator<Item = F>,
        mut emit: impl FnMut(&F, Decision<'_>),
    ) {
        let mut by_class: Vec<(*const u8, &Settings)> = Vec::new();
        for facts in sessions {
            let class = facts.client_class().as_ptr();
            let settings = match by_class.iter().find(|(known, _)| *known == class) {
                Some((_, settings)) => *settings,
                None => {
                    let settings = self.config.for_class(facts.client_class());
                    // Bounded, so a batch of many classes costs a lookup
                    // each beyond these, not a longer scan.
                    if by_class.len() < CLASSES_REMEMBERED {
                        by_class.push((class, settings));
                    }
                    settings
                }
            };
            emit(&facts, self.decide(settings, &facts));
        }
    }
}

/// One session's verdict but for its id, the action borrowed from the
/// policy's own (an eviction's reason is shared, not copied).
struct Decision<'a> {
    health: u8,
    tier: Tier,
    action: &'a Action,
    reassess_in_ms: u32,
}

impl Decision<'_> {
    /// The decision as the verdict about `session`, its action copied out
    /// (an eviction's reason stays shared).
    fn verdict(&self, session: SessionId) -> Verdict {
        Verdict {
            session,
            health: self.health,
            tier: self.tier,
            action: self.action.clone(),
            reassess_in_ms: self.reassess_in_ms,
        }
    }
}

/// The actions that carry nothing, to lend like the evictions.
const KEEP: &Action = &Action::Keep;
const PING: &Action = &Action::Ping;

/// Classes whose settings one `assess` call remembers.
const CLASSES_REMEMBERED: usize = 16;

/// The action for one session: the first rule that fires, most certain
/// evidence of death first.
fn decide_action<'e, F: Facts + ?Sized>(
    settings: &config::Settings,
    facts: &F,
    tier: Tier,
    health: u8,
    evictions: &'e Evictions,
) -> &'e Action {
    if facts.pong_overdue() && facts.outstanding_pings() >= settings.overdue_pings_to_evict {
        return &evictions.pong_timeout;
    }
    if settings.send_failures_to_evict > 0 && facts.send_errors() >= settings.send_failures_to_evict
    {
        return &evictions.send_failures;
    }
    if settings.dropped_frames_to_evict > 0
        && facts.dropped_frames() >= settings.dropped_frames_to_evict
    {
        return &evictions.backlog_overflow;
    }
    if facts.backlog_ms() >= settings.backlog_evict_ms {
        return &evictions.backlog;
    }
    if settings.silent_evict_ms > 0 && facts.idle_ms() >= settings.silent_evict_ms {
        return &evictions.silent;
    }
    if tier == Tier::KeepAlive
        && settings.idle_evict_ms > 0
        && facts.app_idle_ms() >= settings.idle_evict_ms
    {
        return &evictions.idle;
    }
    // Probe rather than wait for the schedule when something looks wrong and
    // no probe is already in flight: a backed-up queue (is the reader alive?)
    // or a poor score.
    if facts.outstanding_pings() == 0
        && (facts.backlog_ms() > 0 || health < settings.probe_below_health)
    {
        return PING;
    }
    KEEP
}

impl Policy for DefaultPolicy {
    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = Config::from_json(config).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn on_events(&mut self, events: &[Event]) {
        self.history.record(events);
    }

    fn assess(&mut self, _now_ms: u64, sessions: &[SessionFacts]) -> Vec<Verdict> {
        let mut verdicts = Vec::with_capacity(sessions.len());
        self.decide_each(sessions.iter(), |facts, decision| {
            verdicts.push(decision.verdict(facts.id))
        });
        verdicts
    }

    /// The same decisions as `assess`, each session's facts read from the
    /// batch's columns and each verdict written into the answer's: in wasm,
    /// no record is built on either side (BENCHMARKS.md, issue 16).
    fn assess_batch(
        &mut self,
        _now_ms: u64,
        sessions: FactColumns<'_>,
        verdicts: &mut VerdictWriter,
    ) {
        self.decide_each(sessions.rows(), |facts, decision| {
            verdicts.push(
                facts.id(),
                decision.health,
                decision.tier,
                decision.action,
                decision.reassess_in_ms,
            )
        });
    }

    fn select_evictions(
        &mut self,
        _now_ms: u64,
        sessions: &[SessionFacts],
        excess: u32,
    ) -> Vec<SessionId> {
        // Least healthy first; among equals the longest silent, then the
        // lowest id, so the choice is deterministic.
        vigil_policy_sdk::first_by_rank(sessions, excess, |facts| {
            let settings = self.config.for_class(&facts.client_class);
            let baseline = self.history.rtt_baseline_ms(facts.id);
            let health = scoring::health(settings, facts, baseline);
            (health, std::cmp::Reverse(facts.app_idle_ms))
        })
    }
}

vigil_policy_sdk::export_policy!(DefaultPolicy);
