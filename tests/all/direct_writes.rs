//! Frames written straight to the socket by whoever decides them, between
//! the frames the session's task writes (`core::write_gate`, `core::flush`):
//! heartbeat pings by the tick, published messages by the publish. A client
//! receiving a stream of published messages, large and small, still reads
//! whole frames in order, and answers pings the tick wrote; a client that
//! stops reading gets every message whole once it reads again, though the
//! send buffer filled mid-frame; and the socket's TCP facts are read by the
//! tick with the pings it writes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use vigil::core::config::{TierTiming, TiersConfig};
use vigil_tests::DEFAULT_POLICY;

use crate::support::{
    fast_config, http, metric, metric_or_zero, metrics_text, sessions_become, shut_down,
    start_host, wait_until, WsClient,
};

/// A client of its own type: it reads when the test says.
type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A host on `config` whose queues hold everything these tests publish,
/// and its one client, connected and listed.
async fn host_with_one_client(
    mut config: vigil::config::VigilConfig,
) -> (vigil::RunningServer, Client) {
    config.sessions.queue_max_bytes = 64 << 20;
    config.sessions.queue_soft_bytes = 32 << 20;
    let server = start_host(config, DEFAULT_POLICY, r#"{"new_session_ms": 0}"#).await;
    let address = server.address;
    let (socket, _) = match tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await {
        Ok(connected) => connected,
        Err(error) => panic!("cannot connect: {error}"),
    };
    assert!(sessions_become(address, 1, Duration::from_secs(5)).await);
    (server, socket)
}

/// Publishes `data` to all, which is the one client.
async fn publish_to_the_client(address: std::net::SocketAddr, data: &str) {
    let body = serde_json::json!({"to": "all", "data": data}).to_string();
    let answer = http(address, "POST", "/publish", Some(&body), None).await;
    assert_eq!(answer.json["delivered"], 1, "{}", answer.text);
}

/// The published message number `n`: its number, then padding of a size
/// that cycles from a few bytes to more than a socket buffer takes at once.
fn message(n: usize) -> String {
    const SIZES: [usize; 6] = [3, 200, 2_000, 40_000, 90, 400_000];
    format!("{n}:{}", "x".repeat(SIZES[n % SIZES.len()]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_written_directly_never_split_the_frames_the_task_writes() {
    let mut config = fast_config();
    // A heartbeat every tick, so pings keep landing between and during
    // the published frames.
    config.tiers = TiersConfig::uniform(TierTiming {
        ping_interval_ms: 10,
        pong_timeout_ms: 2_000,
    });
    config.sessions.tick_ms = 10;
    let (server, socket) = host_with_one_client(config).await;
    let address = server.address;

    // The client reads everything as it comes; tungstenite answers each
    // ping as it reads it.
    let reader = tokio::spawn(async move {
        let mut socket = socket;
        let mut texts = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let done = text.as_str() == "done";
                    texts.push(text.to_string());
                    if done {
                        return Ok(texts);
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => return Err(format!("after {} messages: {other:?}", texts.len())),
            }
        }
    });

    let started = Instant::now();
    let mut published = 0;
    while started.elapsed() < Duration::from_secs(3) {
        publish_to_the_client(address, &message(published)).await;
        published += 1;
    }
    let done = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": "all", "data": "done"}"#),
        None,
    )
    .await;
    assert_eq!(done.json["delivered"], 1, "{}", done.text);

    let texts = match reader.await {
        Ok(Ok(texts)) => texts,
        Ok(Err(why)) => panic!("the client's stream broke: {why}"),
        Err(error) => panic!("the reader panicked: {error}"),
    };
    assert_eq!(texts.len(), published + 1, "messages were lost");
    for (n, text) in texts.iter().take(published).enumerate() {
        assert!(*text == message(n), "message {n} arrived altered");
    }
    let metrics = metrics_text(address).await;
    let by_tick = metric(&metrics, "vigil_pings_sent_by_tick_total");
    let pongs = metric(&metrics, "vigil_pongs_received_total");
    assert!(
        by_tick >= 20.0,
        "the tick wrote {by_tick} pings itself in 3 s of pings every 10 ms"
    );
    assert!(pongs >= by_tick / 2.0, "{pongs} pongs for {by_tick} pings");
    // Messages up to 64 KiB go directly when nothing is ahead of them; the
    // 400 kB ones always through the task.
    let direct = metric(&metrics, "vigil_messages_written_directly_total");
    assert!(
        direct >= (published / 3) as f64 && direct < published as f64,
        "{direct} of {published} messages written directly"
    );
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_every_message_whole_when_it_reads_again() {
    let mut config = fast_config();
    // No heartbeat while the client reads nothing: it could not answer.
    config.tiers = TiersConfig::uniform(TierTiming {
        ping_interval_ms: 60_000,
        pong_timeout_ms: 60_000,
    });
    let (server, mut socket) = host_with_one_client(config).await;
    let address = server.address;

    // 8 MB while the client reads nothing: the kernel's buffers fill, a
    // direct write meets a full send buffer mid-frame, and the rest queues.
    let message = |n: usize| format!("{n}:{}", "y".repeat(30_000 + n % 7));
    let total = 270;
    for n in 0..total {
        publish_to_the_client(address, &message(n)).await;
    }
    let metrics = metrics_text(address).await;
    let direct = metric(&metrics, "vigil_messages_written_directly_total");
    assert!(
        direct >= 1.0 && direct < total as f64,
        "{direct} of {total} written directly: the buffers never filled"
    );

    for n in 0..total {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                assert!(*text == message(n), "message {n} arrived altered");
            }
            other => panic!("message {n}: {other:?}"),
        }
    }
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tick_reads_the_sockets_tcp_facts_with_the_pings_it_writes() {
    let mut config = fast_config();
    // Fresh kernel facts with every probe: the tick reads them each time.
    config.sessions.tcp_info_max_age_ms = 0;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let _client = WsClient::connect(address, "", &[]);
    assert!(sessions_become(address, 1, Duration::from_secs(5)).await);
    // Pings every second: three of them, and their pongs.
    let answered = wait_until(Duration::from_secs(6), || async {
        metric_or_zero(&metrics_text(address).await, "vigil_pongs_received_total") >= 3.0
    })
    .await;
    assert!(answered.is_some(), "three pings were not answered");
    let metrics = metrics_text(address).await;
    let sent = metric(&metrics, "vigil_pings_sent_total");
    let by_tick = metric(&metrics, "vigil_pings_sent_by_tick_total");
    assert_eq!(
        by_tick, sent,
        "pings that needed a TCP_INFO reading went through the session's task"
    );
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    assert!(
        sessions["sessions"][0]["tcp"]["rtt_us"].is_u64(),
        "no TCP facts for the session: {sessions}"
    );
    shut_down(server).await;
}
