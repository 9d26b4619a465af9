//! Hold N sessions, idle or active, answering the server's pings or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::sessions::{open, source_for};
use crate::stats::Percentiles;
use crate::target::Target;

/// How the held sessions behave.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Read the socket (and so answer pings). False: a client that never
    /// reads, whose pings go unanswered.
    pub read: bool,
    /// Text messages each session sends per second; 0 for idle.
    pub sends_per_sec: f64,
}

/// How fast sessions are opened, and as whom.
#[derive(Debug, Clone)]
pub struct Opening {
    /// Handshakes in flight at once, at most.
    pub concurrency: usize,
    /// New sessions per second, at most; 0 for as fast as `concurrency` allows.
    pub per_second: f64,
    /// First source address block (127.0.0.N).
    pub first_block: u32,
    /// Each session claims the identity `<prefix>-<n>` (`?client_id=`);
    /// `None` for anonymous sessions.
    pub identity_prefix: Option<String>,
}

/// Opens `sessions` as `opening` says, reports as soon as all are open,
/// holds them for `hold`, then closes them.
pub async fn run(
    target: &Target,
    sessions: usize,
    opening: Opening,
    behaviour: Behaviour,
    hold: Duration,
) -> Result<Value> {
    let Opening {
        concurrency,
        per_second,
        first_block,
        identity_prefix,
    } = opening;
    let started = Instant::now();
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let stop = Arc::new(Notify::new());
    let url = target.ws_url();
    let mut pace = (per_second > 0.0).then(|| {
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pace
    });
    for n in 0..sessions {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        let done = done_tx.clone();
        let stop = Arc::clone(&stop);
        let host = target.ws;
        let url = match &identity_prefix {
            Some(prefix) => format!("{url}?client_id={prefix}-{n}"),
            None => url.clone(),
        };
        tokio::spawn(async move {
            let connect_started = Instant::now();
            let socket = open(host, &url, source_for(n, first_block)).await;
            drop(permit);
            let mut socket = match socket {
                Ok(socket) => socket,
                Err(error) => {
                    let _ = done.send(Err(error.to_string()));
                    return;
                }
            };
            let _ = done.send(Ok(connect_started.elapsed()));
            let stopped = stop.notified();
            tokio::pin!(stopped);
            if !behaviour.read {
                stopped.await;
                return;
            }
            let period = if behaviour.sends_per_sec > 0.0 {
                Duration::from_secs_f64(1.0 / behaviour.sends_per_sec)
            } else {
                Duration::from_secs(3_600)
            };
            let mut sender = tokio::time::interval(period);
            sender.tick().await;
            loop {
                tokio::select! {
                    () = &mut stopped => break,
                    frame = socket.next() => if !matches!(frame, Some(Ok(_))) { break },
                    _ = sender.tick(), if behaviour.sends_per_sec > 0.0 => {
                        if socket.send(Message::Text("load".into())).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = socket.close(None).await;
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
    let report = json!({
        "mode": "idle",
        "opened": connect_times.len(),
        "failed": failures.len(),
        "first_failure": failures.first(),
        "open_seconds": started.elapsed().as_secs_f64(),
        "connect_ms": Percentiles::of(&mut connect_times),
        "holding_seconds": hold.as_secs_f64(),
    });
    // Reported before the hold, so a driver knows the sessions are open.
    println!("{report}");
    tokio::time::sleep(hold).await;
    stop.notify_waiters();
    Ok(report)
}
