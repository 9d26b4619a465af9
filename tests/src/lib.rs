//! Shared helpers for Vigil's integration tests: one wasm engine, plugin
//! loading, deterministic fact generation, log capture, and spawning the real
//! `vigil` program.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use vigil::policy::{
    LoadError, PluginSource, PolicyEngine, Sandbox, SandboxLimits, Supervisor, SupervisorConfig,
};
use vigil::sdk::{SessionFacts, TcpFacts, Tier};

pub use vigil_plugin_artifacts::test_plugins;
pub use vigil_plugin_artifacts::{DEFAULT_POLICY, DEFAULT_POLICY_PATH};

/// One engine for the whole test binary, as in the host.
pub fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| match PolicyEngine::new() {
        Ok(engine) => engine,
        Err(error) => panic!("cannot start the wasm engine: {error:#}"),
    })
}

/// Loads plugin bytes with a config and the default limits.
pub fn load(name: &str, bytes: &[u8], config: &str) -> Result<Sandbox, LoadError> {
    load_with_limits(name, bytes, config, SandboxLimits::default())
}

/// Loads plugin bytes with a config and the given limits.
pub fn load_with_limits(
    name: &str,
    bytes: &[u8],
    config: &str,
    limits: SandboxLimits,
) -> Result<Sandbox, LoadError> {
    let source = PluginSource::from_bytes(name, "test", bytes.to_vec());
    Sandbox::load(engine(), &source, config, limits)
}

/// Loads a plugin that must load, under the default fault settings.
pub fn supervise(name: &str, bytes: &[u8], config: &str) -> Supervisor {
    match load(name, bytes, config) {
        Ok(sandbox) => Supervisor::new(sandbox, SupervisorConfig::default()),
        Err(error) => panic!("{name} should load: {error}"),
    }
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
    const CLASSES: [&str; 3] = ["default", "onebot", "bots"];
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
                client_class: CLASSES[rng.below(3) as usize].to_owned(),
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

/// Collects what `tracing` logs on the current thread while it is installed.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Runs `f` with this thread's log going into the capture.
    pub fn during<R>(&self, f: impl FnOnce() -> R) -> R {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
