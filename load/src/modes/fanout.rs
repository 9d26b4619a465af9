//! Broadcast fan-out: N reading sessions, M messages published through the
//! server's broadcast API, each delivery's latency measured in-process
//! (publisher and receivers share one clock).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::sessions::{open, source_for};
use crate::stats::Percentiles;
use crate::target::Target;

/// What one session saw.
struct Received {
    latencies: Vec<Duration>,
    last_at: Option<Instant>,
}

/// A message of `bytes` bytes: the send time (ns since `epoch`) first.
fn message(epoch: Instant, sequence: usize, bytes: usize) -> String {
    let mut text = format!("{} {sequence} ", epoch.elapsed().as_nanos());
    if text.len() < bytes {
        text.push_str(&"x".repeat(bytes - text.len()));
    }
    text
}

/// Opens `sessions`, publishes `messages` of `bytes` each, `interval` apart,
/// and waits (up to `limit`) for every delivery.
pub async fn run(
    target: &Target,
    sessions: usize,
    messages: usize,
    bytes: usize,
    interval: Duration,
    limit: Duration,
) -> Result<Value> {
    let epoch = Instant::now();
    let url = target.ws_url();
    let semaphore = Arc::new(Semaphore::new(200));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Received>();
    for n in 0..sessions {
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        let (opened, done, url, host) =
            (opened_tx.clone(), done_tx.clone(), url.clone(), target.ws);
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
            let mut received = Received {
                latencies: Vec::with_capacity(messages),
                last_at: None,
            };
            let deadline = tokio::time::sleep(limit + Duration::from_secs(30));
            tokio::pin!(deadline);
            while received.latencies.len() < messages {
                let frame = tokio::select! {
                    frame = socket.next() => frame,
                    () = &mut deadline => break,
                };
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let sent = text
                            .split(' ')
                            .next()
                            .and_then(|nanos| nanos.parse::<u64>().ok());
                        if let Some(sent) = sent {
                            let now = Instant::now();
                            let sent_at = epoch + Duration::from_nanos(sent);
                            received
                                .latencies
                                .push(now.saturating_duration_since(sent_at));
                            received.last_at = Some(now);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            let _ = done.send(received);
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

    let first_publish = Instant::now();
    let mut accepted = 0u64;
    for sequence in 0..messages {
        accepted += target.publish(message(epoch, sequence, bytes)).await?;
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
    let published_in = first_publish.elapsed();

    let mut latencies = Vec::with_capacity(sessions * messages);
    let mut last = first_publish;
    let collect = async {
        while let Some(received) = done_rx.recv().await {
            latencies.extend(received.latencies);
            if let Some(at) = received.last_at {
                last = last.max(at);
            }
        }
    };
    let _ = tokio::time::timeout(limit, collect).await;
    let delivered = latencies.len();
    let span = last.saturating_duration_since(first_publish);
    Ok(json!({
        "mode": "fanout",
        "sessions": sessions,
        "messages": messages,
        "bytes": bytes,
        "accepted": accepted,
        "expected": sessions * messages,
        "delivered": delivered,
        "publish_seconds": published_in.as_secs_f64(),
        "delivery_seconds": span.as_secs_f64(),
        "deliveries_per_sec": if span.is_zero() { 0.0 } else { delivered as f64 / span.as_secs_f64() },
        "latency_ms": Percentiles::of(&mut latencies),
    }))
}
