//! The measurements, each against freshly started servers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::procfs;
use super::servers::{Flavor, Paths, Running};
use crate::sessions::{PER_PROCESS, PER_SOURCE};
use crate::stats::Percentiles;
use crate::target::{Kind, Target};

/// How big a run: the full suite, or the quick one CI runs.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// Session counts of the memory table.
    pub memory_sizes: Vec<usize>,
    /// P = T of the memory runs, ms: RSS is read after 2P + 1 s, once
    /// every session has been pinged and has answered.
    pub memory_p_ms: u64,
    /// Ping intervals the CPU figure is taken at, ms.
    pub cpu_intervals_ms: Vec<u64>,
    /// Length of the CPU window, s.
    pub cpu_window_secs: u64,
    /// P and T of the detection tests, ms.
    pub detect_p_ms: u64,
    /// SIGKILL trials.
    pub kills: usize,
    /// SIGSTOP trials.
    pub stops: usize,
    /// Fan-out sessions and messages.
    pub fanout_sessions: usize,
    /// Messages per fan-out run.
    pub fanout_messages: usize,
    /// Churn cycles.
    pub churn_cycles: usize,
}

impl Scale {
    /// The figures.
    pub fn full() -> Self {
        Scale {
            memory_sizes: vec![1_000, 5_000, 10_000, 19_000],
            memory_p_ms: 5_000,
            cpu_intervals_ms: vec![30_000, 5_000],
            cpu_window_secs: 120,
            detect_p_ms: 5_000,
            kills: 200,
            stops: 20,
            fanout_sessions: 10_000,
            fanout_messages: 20,
            churn_cycles: 100_000,
        }
    }

    /// A few hundred sessions, seconds: keeps the tool from rotting.
    pub fn quick() -> Self {
        Scale {
            memory_sizes: vec![200],
            memory_p_ms: 1_000,
            cpu_intervals_ms: vec![1_000],
            cpu_window_secs: 2,
            detect_p_ms: 1_000,
            kills: 5,
            stops: 3,
            fanout_sessions: 200,
            fanout_messages: 5,
            churn_cycles: 300,
        }
    }
}

/// Runs `vigil-load` to completion; its JSON report.
async fn load(paths: &Paths, target: &Target, mode: &str, args: &[String]) -> Result<Value> {
    let output = Command::new(&paths.load)
        .arg(mode)
        .args(target_args(target))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running vigil-load")?;
    if !output.status.success() {
        bail!(
            "vigil-load {mode} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .context("vigil-load printed no report")
}

fn target_args(target: &Target) -> Vec<String> {
    let kind = match target.kind {
        Kind::Vigil => "vigil",
        Kind::Peer => "peer",
    };
    vec![
        "--host".into(),
        target.ws.to_string(),
        "--control".into(),
        target.control.to_string(),
        "--kind".into(),
        kind.into(),
    ]
}

/// Idle sessions held by `vigil-load` processes (≤ `PER_PROCESS` each, so
/// no process nears the file limit), until dropped.
struct IdleLoad {
    children: Vec<Child>,
}

impl IdleLoad {
    async fn open(paths: &Paths, target: &Target, sessions: usize) -> Result<IdleLoad> {
        let mut children = Vec::new();
        let mut left = sessions;
        let mut block = 2u32;
        while left > 0 {
            let here = left.min(PER_PROCESS);
            let mut child = Command::new(&paths.load)
                .arg("idle")
                .args(target_args(target))
                .args(["--sessions", &here.to_string(), "--hold-secs", "1800"])
                .args(["--source-block", &block.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting vigil-load idle")?;
            let stdout = child.stdout.take().context("no stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            let line = tokio::time::timeout(Duration::from_secs(180), lines.next_line()).await;
            let Ok(Ok(Some(line))) = line else {
                bail!("vigil-load idle did not report");
            };
            let report: Value = serde_json::from_str(&line).context("idle report")?;
            if report["failed"].as_u64() != Some(0) {
                bail!("sessions failed to open: {report}");
            }
            children.push(child);
            left -= here;
            block += PER_PROCESS.div_ceil(PER_SOURCE) as u32;
        }
        if !target
            .wait_for_count(sessions as u64, Duration::from_secs(60))
            .await
        {
            bail!("the server never held all {sessions} sessions");
        }
        Ok(IdleLoad { children })
    }

    async fn close(mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// One row of the memory table.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryRow {
    /// Which server.
    pub server: &'static str,
    /// Sessions held.
    pub sessions: usize,
    /// RSS before any session, KiB.
    pub baseline_kib: u64,
    /// RSS holding them, KiB.
    pub held_kib: u64,
    /// (held - baseline) / sessions, bytes.
    pub bytes_per_session: f64,
}

/// One row of the CPU table.
#[derive(Debug, Clone, Serialize)]
pub struct CpuRow {
    /// Which server.
    pub server: &'static str,
    /// Sessions held.
    pub sessions: usize,
    /// Ping interval, ms.
    pub ping_interval_ms: u64,
    /// Window, s.
    pub window_secs: u64,
    /// CPU over the window, % of one core.
    pub cpu_percent: f64,
    /// Vigil only: policy calls per second, mean batch, p99 call latency.
    pub policy: Option<PolicyCost>,
}

/// Policy cost from Vigil's `/metrics`, over a window.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyCost {
    /// `assess` calls per second.
    pub calls_per_sec: f64,
    /// Sessions per call.
    pub mean_batch: f64,
    /// Upper bound of the bucket holding the 99th percentile call, ms.
    pub call_p99_ms: f64,
}

/// The counters behind [`PolicyCost`], read at one moment.
struct PolicySample {
    calls: f64,
    batch_sum: f64,
    batch_count: f64,
    buckets: Vec<(f64, f64)>,
}

async fn policy_sample(target: &Target) -> Result<PolicySample> {
    let url = format!("http://{}/metrics", target.control);
    let text = reqwest::get(&url).await?.text().await?;
    let value = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let buckets = text
        .lines()
        .filter_map(|line| line.strip_prefix("vigil_policy_call_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    Ok(PolicySample {
        calls: value("vigil_policy_calls_total"),
        batch_sum: value("vigil_policy_batch_sessions_sum"),
        batch_count: value("vigil_policy_batch_sessions_count"),
        buckets,
    })
}

fn policy_cost(before: &PolicySample, after: &PolicySample, window: Duration) -> PolicyCost {
    let calls = after.calls - before.calls;
    let batches = after.batch_count - before.batch_count;
    let total: f64 = after.buckets.last().map(|b| b.1).unwrap_or(0.0)
        - before.buckets.last().map(|b| b.1).unwrap_or(0.0);
    let p99 = after
        .buckets
        .iter()
        .zip(&before.buckets)
        .find(|((_, a), (_, b))| total > 0.0 && (a - b) >= 0.99 * total)
        .map(|((le, _), _)| le * 1e3)
        .unwrap_or(f64::NAN);
    PolicyCost {
        calls_per_sec: calls / window.as_secs_f64(),
        mean_batch: if batches > 0.0 {
            (after.batch_sum - before.batch_sum) / batches
        } else {
            0.0
        },
        call_p99_ms: p99,
    }
}

/// Idle RSS per session at each size, and CPU at the largest, per server.
pub async fn memory_and_cpu(paths: &Paths, scale: &Scale) -> Result<(Vec<MemoryRow>, Vec<CpuRow>)> {
    let mut memory = Vec::new();
    let mut cpu = Vec::new();
    let largest = scale.memory_sizes.iter().copied().max().unwrap_or(0);
    for flavor in Flavor::ALL {
        // Memory at every size, P = T = memory_p_ms; CPU too at the largest
        // when that P is one the CPU table wants.
        for &sessions in &scale.memory_sizes {
            let p_ms = scale.memory_p_ms;
            let server = Running::start(flavor, paths, p_ms, p_ms).await?;
            let pid = server.pid()?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let baseline_kib = procfs::rss_kib(pid)?;
            let held = IdleLoad::open(paths, &server.target, sessions).await?;
            tokio::time::sleep(Duration::from_millis(2 * p_ms + 1_000)).await;
            let held_kib = procfs::rss_kib(pid)?;
            memory.push(MemoryRow {
                server: flavor.name(),
                sessions,
                baseline_kib,
                held_kib,
                bytes_per_session: (held_kib.saturating_sub(baseline_kib) * 1024) as f64
                    / sessions as f64,
            });
            eprintln!(
                "memory: {} {sessions} sessions: {held_kib} KiB (baseline {baseline_kib})",
                flavor.name()
            );
            if sessions == largest && scale.cpu_intervals_ms.contains(&p_ms) {
                cpu.push(cpu_window(&server, flavor, sessions, p_ms, scale).await?);
            }
            held.close().await;
            server.stop().await;
        }
        for &p_ms in &scale.cpu_intervals_ms {
            if p_ms == scale.memory_p_ms {
                continue;
            }
            let server = Running::start(flavor, paths, p_ms, p_ms).await?;
            let held = IdleLoad::open(paths, &server.target, largest).await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            cpu.push(cpu_window(&server, flavor, largest, p_ms, scale).await?);
            held.close().await;
            server.stop().await;
        }
    }
    cpu.sort_by_key(|row| std::cmp::Reverse(row.ping_interval_ms));
    Ok((memory, cpu))
}

/// The server's CPU over the window while it holds `sessions` idle ones,
/// and for Vigil the policy's cost over the same window.
async fn cpu_window(
    server: &Running,
    flavor: Flavor,
    sessions: usize,
    p_ms: u64,
    scale: &Scale,
) -> Result<CpuRow> {
    let pid = server.pid()?;
    let tck = procfs::ticks_per_second() as f64;
    let window = Duration::from_secs(scale.cpu_window_secs);
    let metrics_before = match flavor {
        Flavor::Vigil => Some(policy_sample(&server.target).await?),
        _ => None,
    };
    let ticks_before = procfs::cpu_ticks(pid)?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let ticks = procfs::cpu_ticks(pid)?.saturating_sub(ticks_before);
    let wall = started.elapsed();
    let policy = match metrics_before {
        Some(before) => {
            let after = policy_sample(&server.target).await?;
            Some(policy_cost(&before, &after, wall))
        }
        None => None,
    };
    let left = server.target.count().await?;
    if left != sessions as u64 {
        bail!(
            "{} dropped idle sessions: {left} of {sessions} left",
            flavor.name()
        );
    }
    let row = CpuRow {
        server: flavor.name(),
        sessions,
        ping_interval_ms: p_ms,
        window_secs: scale.cpu_window_secs,
        cpu_percent: ticks as f64 / tck / wall.as_secs_f64() * 100.0,
        policy,
    };
    eprintln!(
        "cpu: {} P={p_ms} ms: {:.2} %",
        flavor.name(),
        row.cpu_percent
    );
    Ok(row)
}

/// One row of the detection table.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionRow {
    /// Which server.
    pub server: &'static str,
    /// P = T, ms.
    pub p_ms: u64,
    /// SIGKILL to removal.
    pub kill: Percentiles,
    /// Kills not seen within 5 s.
    pub kill_missed: u64,
    /// SIGSTOP to removal.
    pub stop: Percentiles,
    /// Frozen clients never removed within the limit.
    pub stop_missed: u64,
}

/// kill -9 and SIGSTOP detection latency, per server.
pub async fn detection(paths: &Paths, scale: &Scale) -> Result<Vec<DetectionRow>> {
    let mut rows = Vec::new();
    let p = scale.detect_p_ms;
    for flavor in Flavor::ALL {
        let server = Running::start(flavor, paths, p, p).await?;
        let kills = load(
            paths,
            &server.target,
            "kill-latency",
            &["--trials".into(), scale.kills.to_string()],
        )
        .await?;
        let stops = load(
            paths,
            &server.target,
            "stop-latency",
            &[
                "--trials".into(),
                scale.stops.to_string(),
                "--spread-ms".into(),
                p.to_string(),
                "--limit-ms".into(),
                (4 * p + 5_000).to_string(),
            ],
        )
        .await?;
        let percentiles = |report: &Value| -> Percentiles {
            serde_json::from_value(report["latency_ms"].clone()).unwrap_or_default()
        };
        rows.push(DetectionRow {
            server: flavor.name(),
            p_ms: p,
            kill: percentiles(&kills),
            kill_missed: kills["missed_within_5s"].as_u64().unwrap_or(0),
            stop: percentiles(&stops),
            stop_missed: stops["missed"].as_u64().unwrap_or(0),
        });
        eprintln!("detection: {} done", flavor.name());
        server.stop().await;
    }
    Ok(rows)
}

/// One row of the fan-out table.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRow {
    /// Which server.
    pub server: &'static str,
    /// Sessions.
    pub sessions: usize,
    /// Deliveries expected and made.
    pub expected: u64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Deliveries per second, first publish to last delivery.
    pub deliveries_per_sec: f64,
    /// The server's CPU time (user + system) over the same round, per
    /// delivery, µs.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Publish-to-receive latency.
    pub latency: Percentiles,
}

/// 1 KiB broadcasts to many sessions, per server.
pub async fn fanout(paths: &Paths, scale: &Scale) -> Result<Vec<FanoutRow>> {
    let mut rows = Vec::new();
    for flavor in Flavor::ALL {
        let server = Running::start(flavor, paths, 30_000, 30_000).await?;
        let report = load(
            paths,
            &server.target,
            "fanout",
            &[
                "--server-pid".into(),
                server.pid()?.to_string(),
                "--sessions".into(),
                scale.fanout_sessions.to_string(),
                "--messages".into(),
                scale.fanout_messages.to_string(),
                "--bytes".into(),
                "1024".into(),
            ],
        )
        .await?;
        rows.push(FanoutRow {
            server: flavor.name(),
            sessions: scale.fanout_sessions,
            expected: report["expected"].as_u64().unwrap_or(0),
            delivered: report["delivered"].as_u64().unwrap_or(0),
            deliveries_per_sec: report["deliveries_per_sec"].as_f64().unwrap_or(0.0),
            server_cpu_us_per_delivery: report["server_cpu_us_per_delivery"].as_f64(),
            latency: serde_json::from_value(report["latency_ms"].clone()).unwrap_or_default(),
        });
        eprintln!("fanout: {} done", flavor.name());
        server.stop().await;
    }
    Ok(rows)
}

/// What churn left behind.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnResult {
    /// The load tool's tally.
    pub report: Value,
    /// Sessions the server still held afterwards.
    pub sessions_left: u64,
    /// RSS after a warm-up round, KiB.
    pub rss_before_kib: u64,
    /// RSS after the churn, KiB.
    pub rss_after_kib: u64,
}

/// Connect/kill cycles against Vigil.
pub async fn churn(paths: &Paths, scale: &Scale) -> Result<ChurnResult> {
    let server = Running::start(Flavor::Vigil, paths, 5_000, 5_000).await?;
    let pid = server.pid()?;
    let cycles = |n: usize| vec!["--cycles".into(), n.to_string()];
    // Warm-up: the allocator's and runtime's steady state, not start-up.
    load(
        paths,
        &server.target,
        "churn",
        &cycles((scale.churn_cycles / 10).max(100)),
    )
    .await?;
    server
        .target
        .wait_for_count(0, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before_kib = procfs::rss_kib(pid)?;
    let report = load(paths, &server.target, "churn", &cycles(scale.churn_cycles)).await?;
    server
        .target
        .wait_for_count(0, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let result = ChurnResult {
        sessions_left: server.target.count().await?,
        rss_before_kib,
        rss_after_kib: procfs::rss_kib(pid)?,
        report,
    };
    server.stop().await;
    Ok(result)
}
