//! `vigil-load`: opens, holds, publishes to and kills WebSocket sessions on
//! one server, and prints what it measured as one JSON line. Talks to
//! loopback only, and every run stops by itself.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use vigil_load::modes::{churn, fanout, idle, kills};
use vigil_load::target::{Kind, Target};

/// Load and failure generator for Vigil and its benchmark peers.
#[derive(Debug, Parser)]
#[command(name = "vigil-load")]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

/// The server: where sessions connect and where its API answers.
#[derive(Debug, clap::Args)]
struct Server {
    /// WebSocket address, e.g. 127.0.0.1:8080 (sessions open `/ws`).
    #[arg(long)]
    host: SocketAddr,
    /// Address of `/sessions` and `/publish` [default: --host].
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Its API dialect.
    #[arg(long, value_enum, default_value_t = Kind::Vigil)]
    kind: Kind,
}

impl Server {
    fn target(&self) -> Result<Target> {
        Target::new(self.host, self.control, self.kind)
    }
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open sessions, hold them (idle or sending), then close them.
    Idle {
        #[command(flatten)]
        server: Server,
        /// Sessions to open (at most 19 000 per process: file limit).
        #[arg(long, default_value_t = 1_000)]
        sessions: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// New sessions per second at most (0: as fast as --concurrency allows).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// How long to hold them once open, seconds (at most 3 600).
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
        /// First source address block: 127.0.0.N (2 000 sessions each).
        #[arg(long, default_value_t = 2)]
        source_block: u32,
        /// Never read: the server's pings go unanswered.
        #[arg(long)]
        ignore_pings: bool,
        /// Messages each session sends per second (0: idle).
        #[arg(long, default_value_t = 0.0)]
        sends_per_sec: f64,
        /// Each session claims the identity PREFIX-N.
        #[arg(long, value_name = "PREFIX")]
        identity_prefix: Option<String>,
    },
    /// Broadcast to N sessions: a back-to-back round (delivery rate) and a
    /// paced round (latency), published from a thread of their own.
    Fanout {
        #[command(flatten)]
        server: Server,
        /// Receiving sessions (at most 19 000).
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Messages published.
        #[arg(long, default_value_t = 20)]
        messages: usize,
        /// Size of each message, bytes.
        #[arg(long, default_value_t = 1_024)]
        bytes: usize,
        /// Pause between the latency round's publishes, ms: longer than one
        /// fan-out, including the readers' share of it, for each to be
        /// measured on its own.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// Open every other session on this address instead: another node
        /// of the same cluster, so two nodes share the sessions.
        #[arg(long, value_name = "ADDR")]
        also_host: Option<SocketAddr>,
        /// The server's process id, when it runs on this machine: report its
        /// CPU time per delivery over the back-to-back round.
        #[arg(long, value_name = "PID")]
        server_pid: Option<u32>,
    },
    /// Time SIGKILL-to-removal over N client processes, one at a time.
    KillLatency {
        #[command(flatten)]
        server: Server,
        /// Kills to time (at most 10 000).
        #[arg(long, default_value_t = 200)]
        trials: usize,
    },
    /// Time SIGSTOP-to-removal of N frozen client processes.
    StopLatency {
        #[command(flatten)]
        server: Server,
        /// Clients to freeze (at most 1 000).
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Freezes are spread evenly over this many ms.
        #[arg(long, default_value_t = 5_000)]
        spread_ms: u64,
        /// Give up on a client this long after the last freeze, ms.
        #[arg(long, default_value_t = 30_000)]
        limit_ms: u64,
    },
    /// Connect-and-end cycles: clean close, kill (RST), abort mid-handshake.
    Churn {
        #[command(flatten)]
        server: Server,
        /// Cycles (at most 1 000 000).
        #[arg(long, default_value_t = 100_000)]
        cycles: usize,
        /// Cycles in flight at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
    },
    /// One session, printing `connected LOCAL_ADDR`; used by the latency modes.
    Client {
        #[command(flatten)]
        server: Server,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let report = match Cli::parse().command {
        Mode::Idle {
            server,
            sessions,
            concurrency,
            rate,
            hold_secs,
            source_block,
            ignore_pings,
            sends_per_sec,
            identity_prefix,
        } => {
            let behaviour = idle::Behaviour {
                read: !ignore_pings,
                sends_per_sec,
            };
            let hold = Duration::from_secs(hold_secs.min(3_600));
            if !(rate == 0.0 || (rate.is_finite() && (0.01..=1e6).contains(&rate))) {
                anyhow::bail!(
                    "--rate must be 0 (no pacing) or between 0.01 and 1 000 000 sessions/s"
                );
            }
            if !(sends_per_sec == 0.0 || (0.001..=1e4).contains(&sends_per_sec)) {
                anyhow::bail!("--sends-per-sec must be 0 (idle) or between 0.001 and 10 000");
            }
            let opening = idle::Opening {
                concurrency,
                per_second: rate,
                first_block: source_block.clamp(2, 250),
                identity_prefix,
            };
            idle::run(
                &server.target()?,
                sessions.min(19_000),
                opening,
                behaviour,
                hold,
            )
            .await?;
            return Ok(()); // idle prints its report before holding
        }
        Mode::Fanout {
            server,
            sessions,
            messages,
            bytes,
            interval_ms,
            also_host,
            server_pid,
        } => {
            if also_host.is_some_and(|host| !host.ip().is_loopback()) {
                anyhow::bail!("--also-host must be a loopback address");
            }
            fanout::run(
                &server.target()?,
                also_host,
                server_pid,
                sessions.min(19_000),
                messages.min(10_000),
                bytes.max(32),
                Duration::from_millis(interval_ms.clamp(1, 60_000)),
                Duration::from_secs(120),
            )
            .await?
        }
        Mode::KillLatency { server, trials } => {
            kills::kill_latency(&server.target()?, trials.min(10_000)).await?
        }
        Mode::StopLatency {
            server,
            trials,
            spread_ms,
            limit_ms,
        } => {
            kills::stop_latency(
                &server.target()?,
                trials.min(1_000),
                Duration::from_millis(spread_ms),
                Duration::from_millis(limit_ms.min(600_000)),
            )
            .await?
        }
        Mode::Churn {
            server,
            cycles,
            concurrency,
        } => {
            churn::run(
                &server.target()?,
                cycles.min(1_000_000),
                concurrency.min(1_000),
            )
            .await?
        }
        Mode::Client { server } => return kills::client(&server.target()?).await,
    };
    println!("{report}");
    Ok(())
}
