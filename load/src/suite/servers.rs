//! The three servers compared, started the same way: Vigil (this binary
//! running Vigil's own `serve`), the Node `ws` peer and the Python
//! `websockets` peer from `bench/peers/`, each on free loopback ports with
//! the same ping interval P and pong timeout T.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::target::{Kind, Target};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Vigil with its default policy.
    Vigil,
    /// Node `ws` with the heartbeat pattern from its README.
    Node,
    /// Python `websockets` with `ping_interval`/`ping_timeout`.
    Python,
}

impl Flavor {
    /// All three, in report order.
    pub const ALL: [Flavor; 3] = [Flavor::Vigil, Flavor::Node, Flavor::Python];

    /// Name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Vigil => "Vigil",
            Flavor::Node => "Node ws",
            Flavor::Python => "Python websockets",
        }
    }
}

/// Where things are: the repository, the installed peers, this binary.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The repository root (BENCHMARKS.md, bench/peers/).
    pub repo: PathBuf,
    /// `bench/peers/setup.sh`'s directory (`npm/`, `venv/`).
    pub peers: PathBuf,
    /// `vigil-load`.
    pub load: PathBuf,
}

/// A running server.
pub struct Running {
    /// Which.
    pub flavor: Flavor,
    /// How to reach it.
    pub target: Target,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Vigil's config for the bench: every tier pings every `p_ms` and waits
/// `t_ms`; the policy never evicts for silence (the peers do not either).
fn vigil_config(port: u16, p_ms: u64, t_ms: u64) -> String {
    let tier = format!("ping_interval_ms = {p_ms}\npong_timeout_ms = {t_ms}\n");
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[tiers.fast]\n{tier}\n[tiers.regular]\n{tier}\n[tiers.keep_alive]\n{tier}\n[policy]\nconfig = {{ idle_evict_ms = 0 }}\n"
    )
}

impl Running {
    /// Starts `flavor` with ping interval `p_ms` and pong timeout `t_ms`,
    /// and waits until it answers `/sessions`.
    pub async fn start(flavor: Flavor, paths: &Paths, p_ms: u64, t_ms: u64) -> Result<Running> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let port = free_port()?;
        let mut control_port = port;
        let mut command = match flavor {
            Flavor::Vigil => {
                let config = dir.path().join("vigil.toml");
                std::fs::write(&config, vigil_config(port, p_ms, t_ms))?;
                let mut command = Command::new(std::env::current_exe()?);
                command.args(["host", "serve", "--config"]).arg(&config);
                command.env("RUST_LOG", "warn");
                command
            }
            Flavor::Node => {
                let mut command = Command::new("node");
                command
                    .arg(paths.repo.join("bench/peers/node-ws-server.js"))
                    .env("PEERS_NPM_PREFIX", paths.peers.join("npm"));
                command
            }
            Flavor::Python => {
                control_port = free_port()?;
                let mut command = Command::new(paths.peers.join("venv/bin/python"));
                command.arg(paths.repo.join("bench/peers/python-websockets-server.py"));
                command
            }
        };
        let child = command
            .env("PORT", port.to_string())
            .env("CONTROL_PORT", control_port.to_string())
            .env("PING_INTERVAL_MS", p_ms.to_string())
            .env("PONG_TIMEOUT_MS", t_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", flavor.name()))?;
        let kind = if flavor == Flavor::Vigil {
            Kind::Vigil
        } else {
            Kind::Peer
        };
        let target = Target::new(
            ([127, 0, 0, 1], port).into(),
            Some(([127, 0, 0, 1], control_port).into()),
            kind,
        )?;
        let running = Running {
            flavor,
            target,
            child,
            _dir: dir,
        };
        for _ in 0..300 {
            if running.target.count().await.is_ok() {
                return Ok(running);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} did not start within 30 s", flavor.name())
    }

    /// The server's process id.
    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("the server has exited")
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// Runs `bench/peers/setup.sh` (installs once, pinned); the peers' directory.
pub fn install_peers(repo: &Path) -> Result<PathBuf> {
    let script = repo.join("bench/peers/setup.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}
