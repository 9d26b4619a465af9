//! The `vigil` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use vigil_policy_runtime::scenarios::{self, CheckReport};
use vigil_policy_runtime::{Sandbox, Supervisor};

use crate::config::VigilConfig;
use crate::startup::{policy_source, run_until_signal, Vigil};

/// Vigil: a WebSocket session host whose liveness policy runs as a sandboxed
/// WebAssembly plugin.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host.
    Serve(Box<ServeArgs>),
    /// Work with policy plugins.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `vigil serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (see `vigil.example.toml`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The client credential: required on /ws (Bearer header or
    /// `?access_token=`); never opens the control routes. Also read from
    /// VIGIL_ACCESS_TOKEN.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VIGIL_ACCESS_TOKEN",
        hide_env_values = true
    )]
    pub access_token: Option<String>,
    /// A key for the control routes (/publish, /sessions, /metrics), as
    /// `Authorization: Bearer`; repeat for several. Also read from
    /// VIGIL_API_KEY (one key).
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "VIGIL_API_KEY",
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Listen on a non-loopback address without an API key (the control
    /// routes then answer loopback clients only).
    #[arg(long)]
    pub allow_public_without_api_key: bool,
    /// Verify client JWTs (HS256) with this secret; also read from
    /// VIGIL_JWT_SECRET.
    #[arg(
        long,
        value_name = "SECRET",
        env = "VIGIL_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Serve wss:// with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Cluster mode: the Redis every node shares (`redis://127.0.0.1:6379`).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Cluster mode: this node's name [default: generated].
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
    /// Address of the admin API (policy swap, rollback, shadow) [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for the admin API, which is only served when one is set;
    /// also read from VIGIL_ADMIN_TOKEN.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VIGIL_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Which plugin, configured how.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Reload the --policy file when it changes (validated like an admin swap).
    #[arg(long, requires = "policy")]
    pub watch: bool,
    /// The OneBot v11 profile.
    #[command(flatten)]
    pub onebot: OneBotArgs,
}

/// `[onebot]` from the command line; each flag overrides the file.
#[derive(Debug, Args)]
pub struct OneBotArgs {
    /// Serve the OneBot v11 forward-WebSocket endpoints (`/`, `/event`,
    /// `/api`) as this bot account id.
    #[arg(long, value_name = "ID")]
    pub onebot_self_id: Option<i64>,
    /// Nickname `get_login_info` reports [default: vigil].
    #[arg(long, value_name = "NAME")]
    pub onebot_nickname: Option<String>,
    /// Heartbeat meta event interval, ms, under 30 000 [default: 5000].
    #[arg(long, value_name = "MS")]
    pub onebot_heartbeat_ms: Option<u64>,
    /// Token the OneBot endpoints require [default: --access-token]; also
    /// read from VIGIL_ONEBOT_ACCESS_TOKEN.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VIGIL_ONEBOT_ACCESS_TOKEN",
        hide_env_values = true
    )]
    pub onebot_access_token: Option<String>,
    /// Send WebSocket Pings to OneBot clients [default: true].
    #[arg(long, value_name = "BOOL")]
    pub onebot_ws_ping: Option<bool>,
    /// OneBot HTTP API on loopback that unknown actions are forwarded to.
    #[arg(long, value_name = "URL")]
    pub onebot_action_upstream: Option<String>,
}

impl OneBotArgs {
    /// Writes the flags given over `config`; a self id enables the profile.
    fn apply(self, config: &mut crate::config::OneBotConfig) {
        if let Some(self_id) = self.onebot_self_id {
            config.enabled = true;
            config.self_id = Some(self_id);
        }
        if let Some(nickname) = self.onebot_nickname {
            config.nickname = nickname;
        }
        if let Some(interval) = self.onebot_heartbeat_ms {
            config.heartbeat_interval_ms = interval;
        }
        if let Some(token) = self.onebot_access_token {
            config.access_token = Some(token);
        }
        if let Some(ws_ping) = self.onebot_ws_ping {
            config.ws_ping = ws_ping;
        }
        if let Some(upstream) = self.onebot_action_upstream {
            config.action_upstream = Some(upstream);
        }
    }
}

/// Which plugin, configured how.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Policy plugin component (.wasm) [default: the built-in default policy].
    #[arg(long, value_name = "FILE.wasm")]
    pub policy: Option<PathBuf>,
    /// JSON file handed to the plugin's `configure`.
    #[arg(long, value_name = "FILE.json")]
    pub policy_config: Option<PathBuf>,
}

/// `vigil policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a plugin, run the built-in scenarios through it and print its
    /// verdicts; exits non-zero if it fails to load or breaks the contract.
    Check(CheckArgs),
    /// Run a scenario file (what the policy must do, case by case) against
    /// a plugin; one line per case, the differences of each failure, and a
    /// non-zero exit when any case fails.
    Test(TestArgs),
    /// Run a candidate over a trace recorded by the admin API (`POST
    /// /admin/policy/recording`) and report where it would have decided
    /// differently from the policy that ran: shadow mode, offline.
    Replay(ReplayArgs),
}

/// `vigil policy replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace (`GET /admin/policy/recording/trace`, gzip JSON lines).
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// The candidate plugin.
    #[arg(value_name = "CANDIDATE.wasm")]
    pub candidate: PathBuf,
    /// JSON file handed to the candidate's `configure` [default: the
    /// configuration the recorded policy ran with].
    #[arg(long, value_name = "FILE.json")]
    pub policy_config: Option<PathBuf>,
    /// Configuration file whose [policy] limits (and config) apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Health differences above this count as disagreements.
    #[arg(long, default_value_t = 0)]
    pub health_threshold: u8,
    /// Disagreements shown as samples.
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// Replay a trace that is cut short (a host killed while recording)
    /// as far as it is intact, instead of refusing it.
    #[arg(long)]
    pub partial: bool,
    /// `text` (default) or `json`.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    pub format: ReplayFormat,
}

/// How `vigil policy replay` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// Counts and samples, for people.
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// `vigil policy test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The plugin under test.
    #[arg(value_name = "FILE.wasm")]
    pub plugin: PathBuf,
    /// The scenario file (TOML: `[[scenario]]` and `[[selection]]` tables).
    #[arg(value_name = "SCENARIOS.toml")]
    pub scenarios: PathBuf,
    /// JSON file handed to the plugin's `configure`.
    #[arg(long, value_name = "FILE.json")]
    pub policy_config: Option<PathBuf>,
    /// Configuration file whose [policy] limits and config apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `text` (default) or `junit` (JUnit XML on stdout, for CI).
    #[arg(long, value_enum, default_value_t = TestFormat::Text)]
    pub format: TestFormat,
}

/// How `vigil policy test` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// One line per case.
    Text,
    /// JUnit XML.
    Junit,
}

/// `vigil policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plugin to check [default: the built-in default policy].
    #[arg(value_name = "FILE.wasm")]
    pub plugin: Option<PathBuf>,
    /// JSON file handed to the plugin's `configure`.
    #[arg(long, value_name = "FILE.json")]
    pub policy_config: Option<PathBuf>,
    /// Configuration file whose [policy] limits and config apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Sessions in the capacity-pressure batch.
    #[arg(long, default_value_t = 20)]
    pub capacity_sessions: usize,
}

impl Cli {
    /// Runs the chosen command.
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Serve(args) => serve(*args),
            Command::Policy(PolicyCommand::Check(args)) => check(args),
            Command::Policy(PolicyCommand::Test(args)) => test(args),
            Command::Policy(PolicyCommand::Replay(args)) => replay(args),
        }
    }
}

/// The whole program: logging to stderr (filtered by `RUST_LOG`, default
/// `info`), the command line, and errors printed with their causes.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<VigilConfig> {
    match path {
        Some(path) => VigilConfig::from_file(path),
        None => Ok(VigilConfig::default()),
    }
}

/// Applies `--policy` and `--policy-config` over the file's settings.
fn apply_policy_args(
    config: &mut VigilConfig,
    policy: Option<PathBuf>,
    policy_config: Option<PathBuf>,
) {
    if let Some(path) = policy {
        config.policy.path = Some(path);
    }
    if let Some(file) = policy_config {
        config.policy.config = None;
        config.policy.config_file = Some(file);
    }
}

/// The plugin the `policy` commands work on: the config file's, with the
/// command line's plugin and plugin config over it, loaded as the host
/// loads it.
fn load_plugin(
    config_file: Option<&PathBuf>,
    plugin: Option<PathBuf>,
    policy_config: Option<PathBuf>,
) -> Result<Sandbox> {
    let mut config = load_config(config_file)?;
    apply_policy_args(&mut config, plugin, policy_config);
    let engine = config.policy.engine()?;
    let source = policy_source(&config)?;
    let plugin_config = config.policy.plugin_config_json()?;
    Ok(Sandbox::load(
        &engine,
        &source,
        &plugin_config,
        config.policy.limits.clone(),
    )?)
}

fn check(args: CheckArgs) -> Result<()> {
    let mut sandbox = load_plugin(args.config.as_ref(), args.plugin, args.policy_config)?;
    let report: CheckReport = scenarios::run_full_check(&mut sandbox, args.capacity_sessions)?;
    println!("{report}");
    Ok(())
}

fn test(args: TestArgs) -> Result<()> {
    use vigil_policy_runtime::scenario_file::{junit, run_file, ScenarioFile, TextReport};
    let text = std::fs::read_to_string(&args.scenarios)
        .with_context(|| format!("cannot read {}", args.scenarios.display()))?;
    let file = ScenarioFile::parse(&text)
        .with_context(|| format!("scenario file {}", args.scenarios.display()))?;
    let mut sandbox = load_plugin(args.config.as_ref(), Some(args.plugin), args.policy_config)?;
    let results = run_file(&mut sandbox, &file);
    match args.format {
        TestFormat::Text => println!("{}", TextReport(&results)),
        TestFormat::Junit => print!("{}", junit(sandbox.name(), &results)),
    }
    let failed = results.iter().filter(|result| !result.passed()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} scenarios failed", results.len());
    }
    Ok(())
}

fn replay(args: ReplayArgs) -> Result<()> {
    use vigil_policy_runtime::replay::{replay, ReplayOptions};
    use vigil_policy_runtime::trace::TraceReader;
    let trace = TraceReader::open(&args.trace)
        .with_context(|| format!("trace {}", args.trace.display()))?
        .allow_truncated(args.partial);
    let mut config = load_config(args.config.as_ref())?;
    apply_policy_args(&mut config, Some(args.candidate), args.policy_config);
    // A config given (in the file or by flag) wins over the recorded one.
    let plugin_config = if config.policy.config.is_some() || config.policy.config_file.is_some() {
        config.policy.plugin_config_json()?
    } else {
        trace.header().policy.config_json.clone()
    };
    let engine = config.policy.engine()?;
    let source = policy_source(&config)?;
    let sandbox = Sandbox::load(
        &engine,
        &source,
        &plugin_config,
        config.policy.limits.clone(),
    )?;
    let candidate = Supervisor::new(sandbox, config.policy.faults.clone());
    let options = ReplayOptions {
        health_threshold: args.health_threshold,
        samples: args.samples,
    };
    let report = replay(trace, candidate, options)
        .with_context(|| format!("trace {}", args.trace.display()))?;
    match args.format {
        ReplayFormat::Text => print!("{report}"),
        ReplayFormat::Json => println!("{}", report.to_json()),
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let mut config = load_config(args.config.as_ref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(token) = args.access_token {
        config.server.access_token = Some(token);
    }
    if !args.api_keys.is_empty() {
        config.api.keys = args.api_keys;
    }
    if args.allow_public_without_api_key {
        config.api.allow_public_without_key = true;
    }
    if let Some(secret) = args.jwt_secret {
        config.auth.jwt_secret = Some(secret);
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.server.tls = Some(crate::config::TlsConfig { cert, key });
    }
    if let Some(url) = args.redis_url {
        config.cluster.redis_url = Some(url);
    }
    if let Some(node) = args.node_id {
        config.cluster.node_id = Some(node);
    }
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(token) = args.admin_token {
        config.admin.token = Some(token);
    }
    if args.watch {
        config.policy.watch = true;
    }
    apply_policy_args(&mut config, args.policy.policy, args.policy.policy_config);
    args.onebot.apply(&mut config.onebot);
    // Checked before the runtime starts, so a bad config never binds a port.
    config.validate()?;
    let listen = config.server.listen;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_until_signal(Vigil::builder(config), listen))
}
