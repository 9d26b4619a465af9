//! A WebSocket client the tests run as a real child process, so they can
//! `SIGKILL` it, `SIGSTOP` it, or have it stop reading.
//!
//! `ws-client URL [--no-read] [--send-every-ms N] [--ping-every-ms N]`
//!
//! Prints `connected` once the handshake is done, `message <text>` for every
//! text message, `ping` for every Ping from the server (answered as
//! tungstenite does), and `closed <code> <reason>` when the server closes.
//! `--ping-every-ms` makes it ping the server itself, as some bot
//! frameworks' drivers do.

use std::io::Write;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(url) = args.first() else {
        eprintln!("usage: ws-client URL [--no-read] [--send-every-ms N] [--ping-every-ms N]");
        std::process::exit(2);
    };
    let no_read = args.iter().any(|a| a == "--no-read");
    let every = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let send_every = every("--send-every-ms");
    let ping_every = every("--ping-every-ms");

    let (socket, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("connect failed: {error}");
            std::process::exit(1);
        }
    };
    say("connected");
    let (mut sink, mut stream) = socket.split();

    if no_read {
        // A consumer that has stopped reading: never touches the socket again.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }

    let mut ticker = tokio::time::interval(Duration::from_millis(send_every.unwrap_or(3_600_000)));
    ticker.tick().await;
    let mut pinger = tokio::time::interval(Duration::from_millis(ping_every.unwrap_or(3_600_000)));
    pinger.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => say(&format!("message {text}")),
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    say(&format!("closed {code} {reason}"));
                    let _ = sink.close().await;
                    return;
                }
                Some(Ok(Message::Ping(_))) => say("ping"),
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    say(&format!("error {error}"));
                    return;
                }
                None => {
                    say("closed 1006 eof");
                    return;
                }
            },
            _ = ticker.tick(), if send_every.is_some() => {
                if sink.send(Message::Text("hello".into())).await.is_err() {
                    return;
                }
            }
            _ = pinger.tick(), if ping_every.is_some() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
