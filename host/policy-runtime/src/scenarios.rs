//! The built-in scenarios behind `vigil policy check` and the start-up health
//! check: one session in each situation a liveness policy must handle, and a
//! capacity-pressure batch. A plugin author runs them to see what their policy
//! does; the host runs them to refuse a plugin that cannot answer them.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_policy_sdk::{Action, SessionFacts, SessionId, TcpFacts, Tier, Verdict};

use super::columns::SessionColumns;
use super::contract::{self, ContractViolation};
use super::sandbox::{CallFault, Sandbox};

/// The `now-ms` the scenarios are assessed at (host uptime of ~17 minutes).
pub const SCENARIO_NOW_MS: u64 = 1_000_000;

/// One named situation.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name, shown in the table.
    pub name: &'static str,
    /// What the session is going through.
    pub situation: &'static str,
    /// The facts the policy sees.
    pub facts: SessionFacts,
}

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;

/// A session that has been connected for a while and is doing fine; each
/// scenario changes what makes it different.
pub(crate) fn established(id: SessionId) -> SessionFacts {
    SessionFacts {
        age_ms: 20 * MINUTE,
        idle_ms: 2 * SECOND,
        app_idle_ms: 5 * SECOND,
        since_pong_ms: Some(10 * SECOND),
        last_rtt_ms: Some(3),
        tier: Tier::Regular,
        tcp: Some(TcpFacts {
            rtt_us: 3_000,
            rttvar_us: 500,
            total_retransmits: 0,
            unacked: 0,
            last_data_recv_ms: 2_000,
        }),
        ..SessionFacts::new(id, "default")
    }
}

/// The scenario table.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "healthy",
            situation: "established, chatty, answers pings in 3 ms",
            facts: established(1),
        },
        Scenario {
            name: "new",
            situation: "connected half a second ago",
            facts: SessionFacts {
                age_ms: 500,
                idle_ms: 500,
                app_idle_ms: 500,
                since_pong_ms: None,
                last_rtt_ms: None,
                tier: Tier::Fast,
                ..established(2)
            },
        },
        Scenario {
            name: "missed-pong",
            situation: "two pings unanswered, the oldest not yet overdue",
            facts: SessionFacts {
                idle_ms: 25 * SECOND,
                since_pong_ms: Some(55 * SECOND),
                outstanding_pings: 2,
                oldest_ping_ms: Some(25 * SECOND),
                ..established(3)
            },
        },
        Scenario {
            name: "overdue-pong",
            situation: "ping unanswered past the tier's pong timeout (frozen client)",
            facts: SessionFacts {
                idle_ms: 65 * SECOND,
                app_idle_ms: 65 * SECOND,
                since_pong_ms: Some(65 * SECOND),
                outstanding_pings: 1,
                oldest_ping_ms: Some(35 * SECOND),
                pong_overdue: true,
                ..established(4)
            },
        },
        Scenario {
            name: "send-failures",
            situation: "three writes to the session failed",
            facts: SessionFacts {
                send_errors: 3,
                ..established(5)
            },
        },
        Scenario {
            name: "brief-backlog",
            situation: "outbound queue above the soft mark for 2 s",
            facts: SessionFacts {
                queued_bytes: 700 * 1024,
                queued_frames: 700,
                backlog_ms: 2 * SECOND,
                ..established(6)
            },
        },
        Scenario {
            name: "sustained-backlog",
            situation: "outbound queue above the soft mark for 12 s (slow consumer)",
            facts: SessionFacts {
                queued_bytes: 900 * 1024,
                queued_frames: 900,
                backlog_ms: 12 * SECOND,
                ..established(7)
            },
        },
        Scenario {
            name: "quiet",
            situation: "answers pings, no application frame for 5 min",
            facts: SessionFacts {
                app_idle_ms: 5 * MINUTE,
                idle_ms: 20 * SECOND,
                tier: Tier::KeepAlive,
                ..established(8)
            },
        },
        Scenario {
            name: "long-app-idle",
            situation: "answers pings, no application frame for 11 min",
            facts: SessionFacts {
                app_idle_ms: 11 * MINUTE,
                idle_ms: 20 * SECOND,
                tier: Tier::KeepAlive,
                ..established(9)
            },
        },
        Scenario {
            name: "slow-transport",
            situation: "1.5 s round trips and TCP retransmits",
            facts: SessionFacts {
                last_rtt_ms: Some(1_500),
                tcp: Some(TcpFacts {
                    rtt_us: 1_500_000,
                    rttvar_us: 400_000,
                    total_retransmits: 6,
                    unacked: 80,
                    last_data_recv_ms: 1_500,
                }),
                ..established(10)
            },
        },
    ]
}

/// `sessions` sessions of varied health for a capacity-pressure call: every
/// fifth has send failures, every seventh an overdue pong, the rest are fine.
pub fn capacity_batch(sessions: usize) -> Vec<SessionFacts> {
    (0..sessions as u64)
        .map(|i| {
            let mut facts = established(1_000 + i);
            facts.age_ms = (i + 1) * MINUTE;
            if i % 5 == 4 {
                facts.send_errors = 2;
            }
            if i % 7 == 6 {
                facts.outstanding_pings = 1;
                facts.oldest_ping_ms = Some(40 * SECOND);
                facts.pong_overdue = true;
            }
            facts
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator; the seed must not be 0.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `count` sessions whose facts cover every branch of a liveness policy:
/// new and old, chatty and silent, overdue pongs, send and transport errors,
/// backlogs, dropped frames, slow RTTs, with and without TCP facts, in three
/// client classes.
pub fn generated_facts(count: usize, seed: u64) -> Vec<SessionFacts> {
    let classes: [Arc<str>; 3] = [Arc::from("default"), Arc::from("onebot"), Arc::from("bots")];
    const TIERS: [Tier; 3] = [Tier::Fast, Tier::Regular, Tier::KeepAlive];
    let mut rng = Rng::new(seed);
    (0..count as u64)
        .map(|i| {
            let age_ms = rng.below(3_600_000);
            let app_idle_ms = rng.below(age_ms + 1).max(rng.below(900_000).min(age_ms));
            let idle_ms = rng.below(app_idle_ms + 1);
            let outstanding_pings = if rng.chance(20) {
                rng.below(3) as u32 + 1
            } else {
                0
            };
            let oldest_ping_ms = (outstanding_pings > 0).then(|| rng.below(70_000));
            let pong_overdue = oldest_ping_ms.is_some_and(|age| age > 30_000);
            let backlog_ms = if rng.chance(15) { rng.below(20_000) } else { 0 };
            SessionFacts {
                id: 1 + i * 7,
                client_class: Arc::clone(&classes[rng.below(3) as usize]),
                age_ms,
                idle_ms,
                app_idle_ms,
                since_pong_ms: rng.chance(80).then(|| rng.below(90_000)),
                outstanding_pings,
                oldest_ping_ms,
                pong_overdue,
                last_rtt_ms: rng.chance(85).then(|| rng.below(2_500) as u32),
                send_errors: if rng.chance(10) {
                    rng.below(5) as u32
                } else {
                    0
                },
                transport_errors: if rng.chance(5) {
                    rng.below(4) as u32
                } else {
                    0
                },
                queued_bytes: if backlog_ms > 0 {
                    rng.below(1 << 20)
                } else {
                    rng.below(4_096)
                },
                queued_frames: rng.below(1_000) as u32,
                backlog_ms,
                dropped_frames: if rng.chance(5) {
                    rng.below(3) as u32
                } else {
                    0
                },
                tier: TIERS[rng.below(3) as usize],
                tcp: rng.chance(70).then(|| TcpFacts {
                    rtt_us: rng.below(2_000_000) as u32,
                    rttvar_us: rng.below(500_000) as u32,
                    total_retransmits: if rng.chance(20) {
                        rng.below(15) as u32
                    } else {
                        0
                    },
                    unacked: rng.below(120) as u32,
                    last_data_recv_ms: rng.below(60_000) as u32,
                }),
            }
        })
        .collect()
}

/// One generated batch of the contract check.
#[derive(Debug, Clone)]
pub struct BatchCheck {
    /// Sessions in the batch.
    pub sessions: usize,
    /// Time of the `assess` calls, together.
    pub elapsed: Duration,
    /// Guest calls the batch was split into (the batch cap).
    pub calls: u64,
}

/// Batch sizes the contract check runs, empty to the largest a tick sends.
pub const CONTRACT_BATCH_SIZES: [usize; 5] = [0, 1, 100, 1_000, 10_000];

/// What `policy check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// Generated batches that passed, with their timing.
    pub batches: Vec<BatchCheck>,
    /// The per-call deadline the plugin runs under.
    pub deadline: Duration,
    /// The plugin's name.
    pub plugin: String,
    /// Each scenario with its verdict, in table order.
    pub rows: Vec<(Scenario, Verdict)>,
    /// Time of the `assess` call for the whole table.
    pub assess_time: Duration,
    /// The capacity batch offered, and how many had to go.
    pub capacity_offered: usize,
    /// How many the host asked to drop.
    pub capacity_excess: u32,
    /// Whom the plugin chose.
    pub capacity_chosen: Vec<SessionId>,
    /// Time of the `select-evictions` call.
    pub select_time: Duration,
    /// The batch cap after the checks: sessions per call, whether the
    /// operator set it, and the measured cost per session.
    pub batch_cap: (usize, bool, Option<Duration>),
}

/// Why `policy check` failed after the plugin loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A call trapped, overran or ran out of memory.
    #[error("policy plugin faulted during {call}: {fault}")]
    Fault {
        /// Which call.
        call: &'static str,
        /// How.
        fault: CallFault,
    },
    /// An answer broke the contract.
    #[error("policy plugin broke the contract during {call}: {violation}")]
    Contract {
        /// Which call.
        call: &'static str,
        /// How.
        violation: ContractViolation,
    },
}

/// Runs the scenario table and a capacity-pressure call through `sandbox`,
/// checking every answer against the contract.
pub fn run_check(
    sandbox: &mut Sandbox,
    capacity_sessions: usize,
) -> Result<CheckReport, CheckError> {
    let table = scenarios();
    let facts: SessionColumns = table.iter().map(|s| &s.facts).collect();
    let started = Instant::now();
    let verdicts = sandbox
        .assess(SCENARIO_NOW_MS, &facts)
        .map_err(|fault| CheckError::Fault {
            call: "assess",
            fault,
        })?;
    let assess_time = started.elapsed();
    contract::check_verdicts(facts.ids(), &verdicts).map_err(|violation| CheckError::Contract {
        call: "assess",
        violation,
    })?;
    let verdicts = verdicts.to_rows();
    let rows = table
        .into_iter()
        .map(|scenario| {
            let verdict = verdicts
                .iter()
                .find(|v| v.session == scenario.facts.id)
                .cloned();
            (scenario, verdict)
        })
        .filter_map(|(scenario, verdict)| verdict.map(|v| (scenario, v)))
        .collect();

    let batch = SessionColumns::from(&capacity_batch(capacity_sessions)[..]);
    let excess = (capacity_sessions / 10).max(1) as u32;
    let started = Instant::now();
    let chosen = sandbox
        .select_evictions(SCENARIO_NOW_MS, &batch, excess)
        .map_err(|fault| CheckError::Fault {
            call: "select-evictions",
            fault,
        })?;
    let select_time = started.elapsed();
    contract::check_evictions(batch.ids(), excess, &chosen).map_err(|violation| {
        CheckError::Contract {
            call: "select-evictions",
            violation,
        }
    })?;

    Ok(CheckReport {
        batches: Vec::new(),
        deadline: sandbox.limits().call_deadline,
        plugin: sandbox.name().to_string(),
        rows,
        assess_time,
        capacity_offered: batch.len(),
        capacity_excess: excess,
        capacity_chosen: chosen,
        select_time,
        batch_cap: batch_cap_of(sandbox),
    })
}

/// [`run_check`] plus the contract on generated batches (`vigil policy
/// check`; start-up runs only the scenarios).
pub fn run_full_check(
    sandbox: &mut Sandbox,
    capacity_sessions: usize,
) -> Result<CheckReport, CheckError> {
    let mut report = run_check(sandbox, capacity_sessions)?;
    report.batches = run_contract_batches(sandbox)?;
    report.batch_cap = batch_cap_of(sandbox);
    Ok(report)
}

/// The contract on generated batches: every size from empty to 10 000
/// answered in full within the deadline, and events (duplicates, unknown
/// sessions, every kind) taken without a fault.
fn run_contract_batches(sandbox: &mut Sandbox) -> Result<Vec<BatchCheck>, CheckError> {
    let events = sample_events();
    sandbox
        .on_events(&events)
        .map_err(|fault| CheckError::Fault {
            call: "on-events",
            fault,
        })?;
    let mut checks = Vec::new();
    for (round, size) in CONTRACT_BATCH_SIZES.into_iter().enumerate() {
        let batch = SessionColumns::from(&generated_facts(size, 0xC0FFEE + round as u64)[..]);
        let calls_before = sandbox.assess_calls();
        let started = Instant::now();
        let verdicts =
            sandbox
                .assess(SCENARIO_NOW_MS, &batch)
                .map_err(|fault| CheckError::Fault {
                    call: "assess",
                    fault,
                })?;
        let elapsed = started.elapsed();
        contract::check_verdicts(batch.ids(), &verdicts).map_err(|violation| {
            CheckError::Contract {
                call: "assess",
                violation,
            }
        })?;
        checks.push(BatchCheck {
            sessions: size,
            elapsed,
            calls: sandbox.assess_calls() - calls_before,
        });
    }
    Ok(checks)
}

fn batch_cap_of(sandbox: &Sandbox) -> (usize, bool, Option<Duration>) {
    let cap = sandbox.batch_cap();
    (
        cap.sessions_per_call(),
        cap.is_fixed(),
        cap.cost_per_session(),
    )
}

/// One event of every kind, each twice, some about sessions the plugin
/// never saw: a plugin must take all of it in stride.
fn sample_events() -> Vec<vigil_policy_sdk::Event> {
    use vigil_policy_sdk::{Event, EventKind, FrameKind};
    let kinds = [
        EventKind::Connected {
            session: 1,
            client_class: "default".to_owned(),
        },
        EventKind::FrameReceived {
            session: 1,
            kind: FrameKind::Text,
            size_bytes: 42,
        },
        EventKind::FrameSent {
            session: 1,
            kind: FrameKind::Binary,
            size_bytes: 7,
        },
        EventKind::PingSent { session: 1 },
        EventKind::PongReceived {
            session: 1,
            rtt_ms: 3,
        },
        EventKind::SendFailed {
            session: 2,
            detail: "broken pipe".to_owned(),
        },
        EventKind::Backpressure {
            session: 2,
            queued_bytes: 300_000,
        },
        EventKind::TransportError {
            session: 99_999,
            detail: "reset".to_owned(),
        },
        EventKind::CloseReceived {
            session: 3,
            code: 1000,
        },
        EventKind::Removed {
            session: 3,
            reason: "closed".to_owned(),
        },
        EventKind::Removed {
            session: 424_242,
            reason: "never seen".to_owned(),
        },
        EventKind::Tick,
    ];
    kinds
        .iter()
        .flat_map(|kind| [kind.clone(), kind.clone()])
        .enumerate()
        .map(|(at, kind)| Event {
            at_ms: at as u64,
            kind,
        })
        .collect()
}

fn action_cell(action: &Action) -> String {
    match action {
        Action::Keep => "keep".to_owned(),
        Action::Ping => "ping".to_owned(),
        Action::Evict(eviction) => format!("evict {} ({})", eviction.reason, eviction.close_code),
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "policy {}: verdicts for the built-in scenarios",
            self.plugin
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<18} {:>6}  {:<10} {:<28} {:>9}  situation",
            "scenario", "health", "tier", "action", "reassess"
        )?;
        for (scenario, verdict) in &self.rows {
            let mut reassess = String::new();
            let _ = write!(reassess, "{} ms", verdict.reassess_in_ms);
            writeln!(
                f,
                "{:<18} {:>6}  {:<10} {:<28} {:>9}  {}",
                scenario.name,
                verdict.health,
                verdict.tier.as_str(),
                action_cell(&verdict.action),
                reassess,
                scenario.situation
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "capacity pressure: {} sessions, {} over the limit -> evict {:?}",
            self.capacity_offered, self.capacity_excess, self.capacity_chosen
        )?;
        writeln!(
            f,
            "timing: assess {} sessions in {:?}, select-evictions over {} in {:?}",
            self.rows.len(),
            self.assess_time,
            self.capacity_offered,
            self.select_time
        )?;
        if self.batches.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(
            f,
            "contract on generated batches (deadline {:?} per call; events of every kind, duplicated: ok)",
            self.deadline
        )?;
        writeln!(
            f,
            "{:>9} {:>12} {:>12} {:>6} {:>14}",
            "sessions", "assess", "per session", "calls", "deadline/call"
        )?;
        for batch in &self.batches {
            let per_session = batch
                .elapsed
                .checked_div(batch.sessions.max(1) as u32)
                .unwrap_or_default();
            let per_call = batch.elapsed.as_secs_f64() / batch.calls.max(1) as f64;
            let used = per_call / self.deadline.as_secs_f64().max(1e-9) * 100.0;
            writeln!(
                f,
                "{:>9} {:>12?} {:>12?} {:>6} {:>13.1}%",
                batch.sessions, batch.elapsed, per_session, batch.calls, used
            )?;
        }
        let (cap, fixed, cost) = self.batch_cap;
        match (cost, fixed) {
            (_, true) => writeln!(
                f,
                "batching: assess calls carry at most {cap} sessions ([policy.limits] max_batch_sessions)"
            )?,
            (Some(cost), false) => {
                let fits = (self.deadline.as_secs_f64() / cost.as_secs_f64().max(1e-12)) as u64;
                if cap >= 100_000 {
                    writeln!(
                        f,
                        "batching: {cost:?} per session, so one call fits about {fits} sessions in the deadline; batches are not split"
                    )?;
                } else {
                    writeln!(
                        f,
                        "batching: {cost:?} per session, so one call fits about {fits} sessions in the {:?} deadline; the host splits this plugin's batches into calls of at most {cap} (automatic; set [policy.limits] max_batch_sessions to choose)",
                        self.deadline
                    )?;
                }
            }
            (None, false) => {}
        }
        Ok(())
    }
}
