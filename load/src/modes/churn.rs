//! Churn: many short sessions, ended every way a client can end one — a
//! clean close handshake, a killed process (the kernel's FIN, no close
//! frame), a reset connection (RST, no close frame), and a client that
//! gives up halfway through the upgrade request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::sessions::{connect_from, source_for};
use crate::target::Target;

#[derive(Default)]
struct Tally {
    closed: AtomicU64,
    killed: AtomicU64,
    reset: AtomicU64,
    aborted: AtomicU64,
    failed: AtomicU64,
}

async fn cycle(target: &Target, n: usize, tally: &Tally) -> Result<()> {
    let stream = connect_from(target.ws, source_for(n % 40_000, 2)).await?;
    match n % 4 {
        0 => {
            let (mut socket, _) = tokio_tungstenite::client_async(target.ws_url(), stream).await?;
            socket.close(None).await?;
            // The server's close frame, then its end of the connection.
            let drained = async {
                while let Some(Ok(_)) = futures_util::StreamExt::next(&mut socket).await {}
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drained).await;
            tally.closed.fetch_add(1, Ordering::Relaxed);
        }
        1 => {
            let (socket, _) = tokio_tungstenite::client_async(target.ws_url(), stream).await?;
            // As a killed process leaves it: the kernel closes the socket
            // (FIN), with no close frame.
            drop(socket);
            tally.killed.fetch_add(1, Ordering::Relaxed);
        }
        2 => {
            let (socket, _) = tokio_tungstenite::client_async(target.ws_url(), stream).await?;
            // A reset connection: RST, no close frame.
            let stream = socket.into_inner();
            stream.set_zero_linger()?;
            drop(stream);
            tally.reset.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            let mut stream = stream;
            stream
                .write_all(b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
                .await?;
            stream.set_zero_linger()?;
            drop(stream);
            tally.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Runs `cycles` connect-and-end cycles, `concurrency` at a time.
pub async fn run(target: &Target, cycles: usize, concurrency: usize) -> Result<Value> {
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let semaphore = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut first_error: Option<String> = None;
    let (errors_tx, mut errors_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for n in 0..cycles {
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        let (target, tally, errors) = (target.clone(), Arc::clone(&tally), errors_tx.clone());
        tokio::spawn(async move {
            if let Err(error) = cycle(&target, n, &tally).await {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                let _ = errors.send(error.to_string());
            }
            drop(permit);
        });
    }
    let _ = semaphore.acquire_many(concurrency.max(1) as u32).await?;
    drop(errors_tx);
    if let Some(error) = errors_rx.recv().await {
        first_error = Some(error);
    }
    Ok(json!({
        "mode": "churn",
        "cycles": cycles,
        "closed": tally.closed.load(Ordering::Relaxed),
        "killed": tally.killed.load(Ordering::Relaxed),
        "reset": tally.reset.load(Ordering::Relaxed),
        "aborted_mid_handshake": tally.aborted.load(Ordering::Relaxed),
        "failed": tally.failed.load(Ordering::Relaxed),
        "first_failure": first_error,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}
