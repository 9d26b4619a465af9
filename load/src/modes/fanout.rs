//! Broadcast fan-out: N reading sessions and two rounds of M messages
//! published through the server's broadcast API. Throughput comes from the
//! first round, published back to back (deliveries per second from the
//! first publish to the last delivery); latency from the second, published
//! at a fixed interval (open loop), meant to be longer than one fan-out so
//! that one message's fan-out does not queue behind the last (where the
//! readers here fall behind, as at 10 000 sessions on two shared cores,
//! the latencies include their backlog). Publisher and receivers
//! share one process and clock, but not one runtime: the publisher runs on
//! a thread of its own ([`publish_apart`]).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::sessions::{open, source_for};
use crate::stats::Percentiles;
use crate::target::Target;

/// A message of `bytes` bytes: the send time (ns since `epoch`) and its
/// sequence number first.
fn message(epoch: Instant, sequence: usize, bytes: usize) -> String {
    let mut text = format!("{} {sequence} ", epoch.elapsed().as_nanos());
    if text.len() < bytes {
        text.push_str(&"x".repeat(bytes - text.len()));
    }
    text
}

/// Publishes the messages numbered `sequences` to `target`, `pause` apart,
/// from a thread and runtime of their own, as a separate publishing service
/// would; returns when the first publish went out and the sessions the
/// server reported, summed.
///
/// On the receivers' runtime, each publish's answer waited behind the
/// tasks of every session that had a message to read, so a back-to-back
/// round went at the pace the load tool's own CPU allowed, and that pace
/// swung from run to run.
async fn publish_apart(
    target: &Target,
    epoch: Instant,
    sequences: Range<usize>,
    bytes: usize,
    pause: Duration,
) -> Result<(Instant, u64)> {
    let (ws, control, kind) = (target.ws, target.control, target.kind);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let publish = async {
                let target = Target::new(ws, Some(control), kind)?;
                let first = Instant::now();
                let mut accepted = 0u64;
                for sequence in sequences {
                    accepted += target.publish(message(epoch, sequence, bytes)).await?;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                Ok((first, accepted))
            };
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the publisher's runtime")
                .and_then(|runtime| runtime.block_on(publish));
            let _ = done_tx.send(outcome);
        })
        .context("starting the publisher's thread")?;
    done_rx.await.context("the publisher's thread ended")?
}

/// First-round deliveries, counted as they happen.
#[derive(Default)]
struct Throughput {
    delivered: AtomicU64,
    /// Latest delivery, ns since the epoch.
    last_ns: AtomicU64,
}

/// Opens `sessions` (every other one on `also`, when given: a second node
/// of the same cluster), publishes `messages` back to back, then
/// `messages` more `interval` apart, waiting up to `limit` for each round.
/// With `server_pid` (a server on this machine), also the server's CPU time
/// over the first round, per delivery: the rate alone hides a server that
/// got faster by taking cores from the load generator.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    target: &Target,
    also: Option<std::net::SocketAddr>,
    server_pid: Option<u32>,
    sessions: usize,
    messages: usize,
    bytes: usize,
    interval: Duration,
    limit: Duration,
) -> Result<Value> {
    let epoch = Instant::now();
    let semaphore = Arc::new(Semaphore::new(200));
    let throughput = Arc::new(Throughput::default());
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Duration>>();
    for n in 0..sessions {
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        let host = match also {
            Some(other) if n % 2 == 1 => other,
            _ => target.ws,
        };
        let url = format!("ws://{host}/ws");
        let (opened, done) = (opened_tx.clone(), done_tx.clone());
        let throughput = Arc::clone(&throughput);
        tokio::spawn(async move {
            let socket = open(host, &url, source_for(n, 2)).await;
            drop(permit);
            let mut socket = match socket {
                Ok(socket) => socket,
                Err(error) => {
                    let _ = opened.send(Err(error.to_string()));
                    return;
                }
            };
            let _ = opened.send(Ok(()));
            let mut latencies = Vec::with_capacity(messages);
            let mut seen = 0usize;
            let deadline = tokio::time::sleep(2 * limit + Duration::from_secs(30));
            tokio::pin!(deadline);
            while seen < 2 * messages {
                let frame = tokio::select! {
                    frame = socket.next() => frame,
                    () = &mut deadline => break,
                };
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let now = Instant::now();
                        let mut fields = text.split(' ');
                        let sent = fields.next().and_then(|v| v.parse::<u64>().ok());
                        let sequence = fields.next().and_then(|v| v.parse::<usize>().ok());
                        let (Some(sent), Some(sequence)) = (sent, sequence) else {
                            continue;
                        };
                        seen += 1;
                        if sequence < messages {
                            throughput.delivered.fetch_add(1, Ordering::Relaxed);
                            let at = now.saturating_duration_since(epoch).as_nanos() as u64;
                            throughput.last_ns.fetch_max(at, Ordering::Relaxed);
                        } else {
                            let sent_at = epoch + Duration::from_nanos(sent);
                            latencies.push(now.saturating_duration_since(sent_at));
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            let _ = done.send(latencies);
            let _ = socket.close(None).await;
        });
    }
    drop(opened_tx);
    drop(done_tx);
    let mut failures = Vec::new();
    for _ in 0..sessions {
        if let Some(Err(error)) = opened_rx.recv().await {
            failures.push(error);
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} sessions failed to open: {}",
            failures.len(),
            failures[0]
        );
    }
    if !target
        .wait_for_count(sessions as u64, Duration::from_secs(30))
        .await
    {
        bail!("the server never listed all {sessions} sessions");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Round one: back to back, for throughput.
    let expected = (sessions * messages) as u64;
    let cpu_before = server_pid
        .map(crate::suite::procfs::cpu_ticks)
        .transpose()?;
    let (first_publish, mut accepted) =
        publish_apart(target, epoch, 0..messages, bytes, Duration::ZERO).await?;
    let round_started = tokio::time::Instant::now();
    while throughput.delivered.load(Ordering::Relaxed) < expected && round_started.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu_after = server_pid
        .map(crate::suite::procfs::cpu_ticks)
        .transpose()?;
    let delivered = throughput.delivered.load(Ordering::Relaxed);
    let server_cpu_seconds = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(
            after.saturating_sub(before) as f64 / crate::suite::procfs::ticks_per_second() as f64,
        ),
        _ => None,
    };
    let last = epoch + Duration::from_nanos(throughput.last_ns.load(Ordering::Relaxed));
    let span = last.saturating_duration_since(first_publish);

    // Round two: paced, for latency.
    accepted += publish_apart(target, epoch, messages..2 * messages, bytes, interval)
        .await?
        .1;
    let mut latencies = Vec::with_capacity(sessions * messages);
    let collect = async {
        while let Some(received) = done_rx.recv().await {
            latencies.extend(received);
        }
    };
    let _ = tokio::time::timeout(limit, collect).await;
    Ok(json!({
        "mode": "fanout",
        "sessions": sessions,
        "split_over_two_hosts": also.is_some(),
        "messages": messages,
        "bytes": bytes,
        "accepted": accepted,
        "expected": expected,
        "delivered": delivered,
        "delivery_seconds": span.as_secs_f64(),
        "deliveries_per_sec": if span.is_zero() { 0.0 } else { delivered as f64 / span.as_secs_f64() },
        "server_cpu_seconds": server_cpu_seconds,
        "server_cpu_us_per_delivery": server_cpu_seconds
            .filter(|_| delivered > 0)
            .map(|seconds| seconds * 1e6 / delivered as f64),
        "latency_interval_ms": interval.as_secs_f64() * 1e3,
        "latency_delivered": latencies.len(),
        "latency_ms": Percentiles::of(&mut latencies),
    }))
}
