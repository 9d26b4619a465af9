//! `vigil-load`: opens, holds and kills WebSocket sessions against a Vigil
//! host to measure it. Loopback only: it refuses any other address. Every
//! run is bounded in count and time and stops by itself.
//!
//! - `idle`: open N sessions (source addresses spread over 127.0.0.0/8 so
//!   ephemeral ports never run out), answer pings, hold them, report JSON.
//! - `kill-latency`: N times, start a client process, kill it with SIGKILL,
//!   and time until the host no longer lists the session.
//! - `client`: one session in this process (used by `kill-latency`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Load and failure generator for Vigil.
#[derive(Debug, Parser)]
#[command(name = "vigil-load")]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open idle sessions that answer pings, hold them, then exit.
    Idle {
        /// The host, e.g. 127.0.0.1:8080.
        #[arg(long)]
        host: SocketAddr,
        /// Sessions to open (at most 19 000 per process: file limit).
        #[arg(long, default_value_t = 1_000)]
        sessions: usize,
        /// Connections opened at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// How long to hold them once open, seconds.
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
    },
    /// Time SIGKILL-to-eviction over N client processes.
    KillLatency {
        /// The host, e.g. 127.0.0.1:8080.
        #[arg(long)]
        host: SocketAddr,
        /// Kills to time.
        #[arg(long, default_value_t = 200)]
        trials: usize,
    },
    /// One session, printing `connected`; used by kill-latency.
    Client {
        /// The host.
        #[arg(long)]
        host: SocketAddr,
    },
}

/// The `p` quantile (0..=1) of `sorted`, in ms; NaN when empty.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let index = ((sorted.len() as f64 * p) as usize).min(last);
    sorted[index].as_secs_f64() * 1e3
}

fn ensure_loopback(host: SocketAddr) -> Result<()> {
    if !host.ip().is_loopback() {
        bail!("vigil-load talks to loopback addresses only, not {host}");
    }
    Ok(())
}

/// Source address for connection `n`: 127.0.0.2 upwards, 10 000 per address.
fn source_for(n: usize) -> IpAddr {
    let block = (n / 10_000) as u32 + 2;
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + block))
}

async fn open_session(
    host: SocketAddr,
    source: IpAddr,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(host).await?;
    let (websocket, _) = tokio_tungstenite::client_async(format!("ws://{host}/ws"), stream).await?;
    Ok(websocket)
}

async fn idle(host: SocketAddr, sessions: usize, concurrency: usize, hold: Duration) -> Result<()> {
    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<Duration, String>>();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    for n in 0..sessions {
        let permit = semaphore.clone().acquire_owned().await?;
        let done = done_tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let connect_started = Instant::now();
            let socket = open_session(host, source_for(n)).await;
            drop(permit);
            match socket {
                Ok(mut socket) => {
                    let _ = done.send(Ok(connect_started.elapsed()));
                    // Reading answers the host's pings.
                    let hold = async { while let Some(Ok(_)) = socket.next().await {} };
                    tokio::select! {
                        () = hold => {},
                        () = stop.notified() => {},
                    }
                }
                Err(error) => {
                    let _ = done.send(Err(error.to_string()));
                }
            }
        });
    }
    drop(done_tx);
    let mut connect_times = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..sessions {
        match done_rx.recv().await {
            Some(Ok(took)) => connect_times.push(took),
            Some(Err(error)) => failures.push(error),
            None => break,
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    connect_times.sort();
    println!(
        "{}",
        json!({
            "mode": "idle",
            "opened": connect_times.len(),
            "failed": failures.len(),
            "first_failure": failures.first(),
            "open_seconds": open_secs,
            "connect_ms": {"p50": percentile_ms(&connect_times, 0.5), "p99": percentile_ms(&connect_times, 0.99)},
            "holding_seconds": hold.as_secs(),
        })
    );
    tokio::time::sleep(hold).await;
    stop.notify_waiters();
    Ok(())
}

/// `GET /sessions?limit=0` → count.
async fn session_count(host: SocketAddr) -> Result<u64> {
    let mut stream = TcpStream::connect(host).await?;
    stream
        .write_all(
            format!("GET /sessions?limit=0 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    let value: serde_json::Value =
        serde_json::from_str(body).context("sessions response is not JSON")?;
    value["count"]
        .as_u64()
        .context("no count in the sessions response")
}

async fn kill_latency(host: SocketAddr, trials: usize) -> Result<()> {
    let me = std::env::current_exe()?;
    let baseline = session_count(host).await?;
    let mut latencies = Vec::with_capacity(trials);
    let mut missed = 0usize;
    for _ in 0..trials {
        let mut child = tokio::process::Command::new(&me)
            .args(["client", "--host", &host.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let connected = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        if !matches!(connected, Ok(Ok(Some(ref line))) if line == "connected") {
            bail!("a client did not connect");
        }
        // Wait until the host lists it, so the clock starts from a known state.
        let listed = Instant::now();
        while session_count(host).await? != baseline + 1 {
            if listed.elapsed() > Duration::from_secs(5) {
                bail!("the host never listed the client");
            }
        }
        let killed = Instant::now();
        child.start_kill()?;
        let mut gone = None;
        while killed.elapsed() < Duration::from_secs(5) {
            if session_count(host).await? == baseline {
                gone = Some(killed.elapsed());
                break;
            }
        }
        let _ = child.wait().await;
        match gone {
            Some(latency) => latencies.push(latency),
            None => missed += 1,
        }
    }
    latencies.sort();
    println!(
        "{}",
        json!({
            "mode": "kill-latency",
            "trials": trials,
            "detected": latencies.len(),
            "missed_within_5s": missed,
            "latency_ms": {
                "p50": percentile_ms(&latencies, 0.5),
                "p90": percentile_ms(&latencies, 0.9),
                "p99": percentile_ms(&latencies, 0.99),
                "max": percentile_ms(&latencies, 1.0),
            },
        })
    );
    Ok(())
}

async fn client(host: SocketAddr) -> Result<()> {
    let mut socket = open_session(host, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    println!("connected");
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            message = socket.next() => if !matches!(message, Some(Ok(_))) { return Ok(()) },
            () = &mut deadline => return Ok(()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Mode::Idle {
            host,
            sessions,
            concurrency,
            hold_secs,
        } => {
            ensure_loopback(host)?;
            idle(
                host,
                sessions.min(19_000),
                concurrency,
                Duration::from_secs(hold_secs.min(600)),
            )
            .await
        }
        Mode::KillLatency { host, trials } => {
            ensure_loopback(host)?;
            kill_latency(host, trials.min(10_000)).await
        }
        Mode::Client { host } => {
            ensure_loopback(host)?;
            client(host).await
        }
    }
}
