//! Dead-client detection, timed: client processes killed with SIGKILL one by
//! one, or frozen with SIGSTOP (all at once, at staggered moments), and the
//! time until the server no longer lists them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::stats::Percentiles;
use crate::target::Target;

/// A `vigil-load client` child process and the address it connected from.
struct ClientProcess {
    child: Child,
    local: String,
}

async fn start_client(target: &Target) -> Result<ClientProcess> {
    let me = std::env::current_exe().context("locating vigil-load")?;
    let mut child = Command::new(me)
        .args(["client", "--host", &target.ws.to_string()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting a client process")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    let Ok(Ok(Some(line))) = line else {
        bail!("a client did not connect");
    };
    let Some(local) = line.strip_prefix("connected ") else {
        bail!("a client said {line:?}, not `connected ADDR`");
    };
    Ok(ClientProcess {
        local: local.to_owned(),
        child,
    })
}

fn signal(child: &Child, name: &str) -> Result<()> {
    let pid = child.id().context("the client has exited")?;
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// SIGKILL `trials` clients one after another; time each until the
/// server's count drops back.
pub async fn kill_latency(target: &Target, trials: usize) -> Result<Value> {
    let baseline = target.count().await?;
    let mut latencies = Vec::with_capacity(trials);
    let mut missed = 0usize;
    for _ in 0..trials {
        let mut client = start_client(target).await?;
        // Listed first, so the clock starts from a known state.
        if !target
            .wait_for_count(baseline + 1, Duration::from_secs(5))
            .await
        {
            bail!("the server never listed the client");
        }
        let killed = Instant::now();
        client.child.start_kill()?;
        let mut gone = None;
        // Polled at the same pace for every server, so the poll itself
        // neither floods one nor favours another.
        while killed.elapsed() < Duration::from_secs(5) {
            if target.count().await? == baseline {
                gone = Some(killed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = client.child.wait().await;
        match gone {
            Some(latency) => latencies.push(latency),
            None => missed += 1,
        }
    }
    Ok(json!({
        "mode": "kill-latency",
        "trials": trials,
        "detected": latencies.len(),
        "missed_within_5s": missed,
        "latency_ms": Percentiles::of(&mut latencies),
    }))
}

/// Connects `trials` clients, freezes them with SIGSTOP at moments spread
/// evenly over `spread` (so they land at every phase of the server's ping
/// schedule), and times each until the server no longer lists it.
pub async fn stop_latency(
    target: &Target,
    trials: usize,
    spread: Duration,
    limit: Duration,
) -> Result<Value> {
    let mut clients = Vec::with_capacity(trials);
    for _ in 0..trials {
        clients.push(start_client(target).await?);
    }
    let listed = Instant::now();
    loop {
        let peers = target.peers().await?;
        if clients.iter().all(|c| peers.contains(&c.local)) {
            break;
        }
        if listed.elapsed() > Duration::from_secs(10) {
            bail!("the server never listed every client");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let step = spread / trials.max(1) as u32;
    let mut stopped_at: HashMap<String, Instant> = HashMap::new();
    let mut removed: HashMap<String, Duration> = HashMap::new();
    let mut next = 0usize;
    while removed.len() < trials && started.elapsed() < spread + limit {
        while next < trials && started.elapsed() >= step * next as u32 {
            let at = Instant::now();
            signal(&clients[next].child, "STOP")?;
            stopped_at.insert(clients[next].local.clone(), at);
            next += 1;
        }
        let peers = target.peers().await?;
        let now = Instant::now();
        for (local, at) in &stopped_at {
            if !removed.contains_key(local) && !peers.contains(local) {
                removed.insert(local.clone(), now.saturating_duration_since(*at));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for client in &mut clients {
        let _ = client.child.start_kill();
        let _ = client.child.wait().await;
    }
    let mut latencies: Vec<Duration> = removed.values().copied().collect();
    Ok(json!({
        "mode": "stop-latency",
        "trials": trials,
        "detected": latencies.len(),
        "missed": trials - latencies.len(),
        "latency_ms": Percentiles::of(&mut latencies),
    }))
}

/// One session that answers pings, printing `connected LOCAL_ADDR`; ends
/// after two minutes at most.
pub async fn client(target: &Target) -> Result<()> {
    let stream = crate::sessions::connect_from(target.ws, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    let local = stream.local_addr()?;
    let (mut socket, _) = tokio_tungstenite::client_async(target.ws_url(), stream).await?;
    println!("connected {local}");
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            message = socket.next() => if !matches!(message, Some(Ok(_))) { return Ok(()) },
            () = &mut deadline => return Ok(()),
        }
    }
}
