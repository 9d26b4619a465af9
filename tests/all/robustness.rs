//! Bad input, slow consumers, churn and capacity: each ends or refuses the
//! offending session the right way while the host keeps serving the others.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    fast_config, http, metric, session_count, sessions_become, start_host, wait_until, WsClient,
};
use vigil_tests::{test_plugins, DEFAULT_POLICY};

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A WebSocket spoken by hand, to send what no well-behaved client would.
struct RawSocket(TcpStream);

impl RawSocket {
    async fn connect(address: SocketAddr) -> RawSocket {
        let Ok(mut stream) = TcpStream::connect(address).await else {
            panic!("cannot connect");
        };
        let _ = stream.write_all(UPGRADE.as_bytes()).await;
        // Read the 101 response up to the blank line, byte by byte so no
        // frame bytes are swallowed.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte)).await {
                Ok(Ok(_)) => head.push(byte[0]),
                _ => panic!("no upgrade response"),
            }
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawSocket(stream)
    }

    /// Sends one masked frame with this first byte (FIN, opcode).
    async fn send_frame(&mut self, first_byte: u8, payload: &[u8]) {
        let mut frame = vec![first_byte];
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        match payload.len() {
            len if len < 126 => frame.push(0x80 | len as u8),
            len if len < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.0.write_all(&frame).await;
    }

    /// Reads frames until the server's close frame; its code, or `None` if
    /// the connection ended without one.
    async fn close_code(&mut self) -> Option<u16> {
        let read = async {
            loop {
                let mut header = [0u8; 2];
                self.0.read_exact(&mut header).await.ok()?;
                let opcode = header[0] & 0x0f;
                let mut len = u64::from(header[1] & 0x7f);
                if len == 126 {
                    let mut ext = [0u8; 2];
                    self.0.read_exact(&mut ext).await.ok()?;
                    len = u64::from(u16::from_be_bytes(ext));
                } else if len == 127 {
                    let mut ext = [0u8; 8];
                    self.0.read_exact(&mut ext).await.ok()?;
                    len = u64::from_be_bytes(ext);
                }
                let mut payload = vec![0u8; len as usize];
                self.0.read_exact(&mut payload).await.ok()?;
                if opcode == 8 {
                    return payload
                        .get(..2)
                        .map(|code| u16::from_be_bytes([code[0], code[1]]));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_only_the_offending_session_with_the_right_code() {
    let mut config = fast_config();
    config.server.max_message_bytes = 1024;
    config.sessions.max_inbound_frames_per_sec = 50;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut bystander = WsClient::connect(address, "?client_id=bystander", &[]);

    let cases: [(&str, u8, Vec<u8>, u16); 3] = [
        ("oversized message", 0x81, vec![b'a'; 2_000], 1009),
        ("invalid UTF-8 text", 0x81, vec![0xff, 0xfe, 0xfd], 1007),
        ("unknown opcode", 0x83, b"?".to_vec(), 1002),
    ];
    for (what, first_byte, payload, expected) in cases {
        let mut socket = RawSocket::connect(address).await;
        socket.send_frame(first_byte, &payload).await;
        assert_eq!(socket.close_code().await, Some(expected), "{what}");
    }

    let mut flooder = RawSocket::connect(address).await;
    for _ in 0..500 {
        flooder.send_frame(0x89, b"flood").await;
    }
    assert_eq!(flooder.close_code().await, Some(1008), "ping flood");

    // An upgrade request that is not one.
    let plain = http(address, "GET", "/ws", None, None).await;
    assert!(
        (400..500).contains(&plain.status),
        "plain GET /ws answered {}",
        plain.status
    );

    // The bystander never noticed.
    let report = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": {"identity": "bystander"}, "data": "still here"}"#),
        None,
    )
    .await;
    assert_eq!(report.json["delivered"], 1);
    assert_eq!(
        bystander
            .wait_for_line("message", Duration::from_secs(2))
            .as_deref(),
        Some("message still here")
    );
    assert!(
        sessions_become(address, 1, Duration::from_secs(2)).await,
        "offending sessions were kept"
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="protocol",tier="fast"}"#
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="rate-limit",tier="fast"}"#
        ),
        1.0,
        "{metrics}"
    );
    crate::support::shut_down(server).await;
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_evicted_and_its_queue_stays_bounded() {
    let mut config = fast_config();
    config.sessions.queue_max_bytes = 256 << 10;
    config.sessions.queue_soft_bytes = 64 << 10;
    // Long pong timeouts: this test is about the backlog, not the heartbeat.
    for timing in [
        &mut config.tiers.fast,
        &mut config.tiers.regular,
        &mut config.tiers.keep_alive,
    ] {
        timing.pong_timeout_ms = 30_000;
    }
    let hard_limit = config.sessions.queue_max_bytes as u64;
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let _reader = WsClient::connect(address, "?client_id=slow", &["--no-read"]);
    let rss_before = rss_bytes();

    let chunk = "x".repeat(60_000);
    let body = format!(r#"{{"to": {{"identity": "slow"}}, "data": "{chunk}"}}"#);
    let mut dropped = 0;
    let mut max_queued = 0;
    let started = Instant::now();
    // 60 KB at a time until the queue overflows (the kernel's socket buffers
    // take several MB first); bounded in count and time.
    for _ in 0..2_000 {
        let report = http(address, "POST", "/publish", Some(&body), None)
            .await
            .json;
        dropped += report["dropped"].as_u64().unwrap_or(0);
        if let Some(queued) = http(address, "GET", "/sessions", None, None).await.json["sessions"]
            [0]["queued_bytes"]
            .as_u64()
        {
            max_queued = max_queued.max(queued);
        }
        if dropped > 0 || report["delivered"] == 0 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    assert!(dropped > 0, "the queue never reached its limit");
    assert!(
        max_queued <= hard_limit,
        "queue grew to {max_queued} bytes, limit {hard_limit}"
    );
    assert!(
        sessions_become(address, 0, Duration::from_secs(2)).await,
        "the slow consumer was kept"
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert!(
        metric(&metrics, "vigil_messages_dropped_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="backlog-overflow",tier="fast"}"#
        ),
        1.0,
        "{metrics}"
    );
    // Its task gave up on the unwritable socket after the close grace.
    let host = server.host.clone();
    let ended = wait_until(Duration::from_secs(2), || {
        let host = host.clone();
        async move { host.live_tasks() == 0 }
    })
    .await;
    assert!(
        ended.is_some(),
        "the evicted session's task is still writing"
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "memory grew by {grown} bytes for one slow consumer"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_above_the_soft_mark_that_lasts_is_evicted_by_the_policy() {
    let mut config = fast_config();
    config.sessions.queue_soft_bytes = 64 << 10;
    config.sessions.queue_max_bytes = 64 << 20; // never reached here
    for timing in [
        &mut config.tiers.fast,
        &mut config.tiers.regular,
        &mut config.tiers.keep_alive,
    ] {
        timing.pong_timeout_ms = 30_000;
    }
    let policy = r#"{"backlog_evict_ms": 800}"#;
    let server = start_host(config, DEFAULT_POLICY, policy).await;
    let address = server.address;
    let _reader = WsClient::connect(address, "?client_id=lagging", &["--no-read"]);
    let body = format!(
        r#"{{"to": {{"identity": "lagging"}}, "data": "{}"}}"#,
        "y".repeat(60_000)
    );
    let started = Instant::now();
    // Fill the socket buffers, then the queue past its soft mark.
    loop {
        let report = http(address, "POST", "/publish", Some(&body), None)
            .await
            .json;
        assert_eq!(
            report["dropped"], 0,
            "the hard limit is not part of this test"
        );
        let queued = http(address, "GET", "/sessions", None, None).await.json["sessions"][0]
            ["queued_bytes"]
            .as_u64()
            .unwrap_or(0);
        if queued > 64 << 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the queue never passed the soft mark"
        );
    }
    // Keep the backlog fed until the policy acts: faster than the kernel can
    // take bytes off the queue while it grows the socket buffers (several
    // MB on loopback), so the queue never dips under the soft mark; the hard
    // limit (64 MiB) is far away.
    let feed = format!(
        r#"{{"to": {{"identity": "lagging"}}, "data": "{}"}}"#,
        "y".repeat(400_000)
    );
    let above_soft_mark = Instant::now();
    let mut evicted = false;
    while above_soft_mark.elapsed() < Duration::from_secs(5) {
        if session_count(address).await == 0 {
            evicted = true;
            break;
        }
        let _ = http(address, "POST", "/publish", Some(&feed), None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(evicted, "a lasting backlog was kept");
    // backlog_evict_ms is 800; the tick is 50 ms: an eviction this late can
    // only come from the backlog lasting, not from crossing the mark.
    assert!(
        above_soft_mark.elapsed() >= Duration::from_millis(500),
        "evicted before the backlog lasted"
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_evictions_total{reason="backlog",tier="fast"}"#
        ),
        1.0,
        "{metrics}"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_clean_closes_kills_and_aborted_handshakes_leaves_nothing_behind() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let url = format!("ws://{address}/ws");
    let cycles = 3_000usize;
    let mut workers = Vec::new();
    for worker in 0..20usize {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            for cycle in (worker..cycles).step_by(20) {
                match cycle % 4 {
                    // A clean close.
                    0 => {
                        if let Ok((mut socket, _)) =
                            tokio_tungstenite::connect_async(url.as_str()).await
                        {
                            let _ = socket.close(None).await;
                            while let Some(Ok(_)) = socket.next().await {}
                        }
                    }
                    // Gone without a close frame (what the server sees of kill -9).
                    1 => {
                        let _ = tokio_tungstenite::connect_async(url.as_str()).await;
                    }
                    // Reset: SO_LINGER 0 turns the close into an RST.
                    2 => {
                        if let Ok((socket, _)) =
                            tokio_tungstenite::connect_async(url.as_str()).await
                        {
                            if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_ref()
                            {
                                let _ = socket2_linger_zero(tcp);
                            }
                        }
                    }
                    // Aborted mid-handshake.
                    _ => {
                        if let Ok(mut tcp) = TcpStream::connect(address).await {
                            let _ = tcp
                                .write_all(b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgr")
                                .await;
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    // And some real processes killed with SIGKILL.
    for _ in 0..10 {
        WsClient::connect(address, "", &[]).kill9();
    }
    assert!(
        sessions_become(address, 0, Duration::from_secs(5)).await,
        "sessions left after churn: {}",
        session_count(address).await
    );
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    let opened = metric(&metrics, "vigil_sessions_opened_total");
    let removed: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("vigil_evictions_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let expected_sessions = (cycles / 4 * 3 + 10) as f64;
    assert_eq!(opened, expected_sessions, "{metrics}");
    assert_eq!(
        opened, removed,
        "opened and removed sessions do not balance:\n{metrics}"
    );
    crate::support::shut_down(server).await;
}

#[allow(deprecated)] // set_linger is the documented way to ask for an RST
fn socket2_linger_zero(tcp: &TcpStream) -> std::io::Result<()> {
    tcp.set_linger(Some(Duration::ZERO))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_session_limit_the_policy_chooses_whom_to_drop() {
    let mut config = fast_config();
    config.sessions.max_sessions = Some(2);
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut silent = WsClient::connect(address, "?client_id=silent", &[]);
    let _chatty = WsClient::connect(address, "?client_id=chatty", &["--send-every-ms", "100"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _newcomer = WsClient::connect(address, "?client_id=newcomer", &[]);
    assert_eq!(
        silent
            .wait_for_line("closed", Duration::from_secs(2))
            .as_deref(),
        Some("closed 1013 capacity"),
        "the silent session should make room"
    );
    // The newcomer's handshake is done; the host admits it a moment later.
    assert!(sessions_become(address, 2, Duration::from_secs(5)).await);
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    let identities: Vec<&str> = sessions["sessions"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["identity"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(identities, ["chatty", "newcomer"], "{sessions}");
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_session_limit_a_failing_policy_means_503() {
    let mut config = fast_config();
    config.sessions.max_sessions = Some(1);
    // It passes the start-up check (whose sessions are of class `default`)
    // and panics on the host's own sessions.
    config.sessions.default_class = "poison".to_owned();
    let server = start_host(
        config,
        test_plugins::MISBEHAVING,
        r#"{"fault": "panic", "in": "select-evictions", "trigger_class": "poison"}"#,
    )
    .await;
    let address = server.address;
    let _first = WsClient::connect(address, "", &[]);
    let refused = tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(session_count(address).await, 1);
    let metrics = http(address, "GET", "/metrics", None, None).await.text;
    assert_eq!(
        metric(&metrics, "vigil_capacity_refusals_total"),
        1.0,
        "{metrics}"
    );
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_every_session_with_1001() {
    let server = start_host(fast_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let mut clients: Vec<WsClient> = (0..3)
        .map(|_| WsClient::connect(address, "", &[]))
        .collect();
    // A client is connected once its handshake is done; the host admits the
    // session a moment later.
    assert!(sessions_become(address, 3, Duration::from_secs(5)).await);
    let started = Instant::now();
    let closed = server.shutdown().await;
    // Clients that answer the close frame at once; the drain timeout (2 s)
    // is only the bound.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(matches!(closed, Ok((3, 3))), "{closed:?}");
    crate::support::assert_all_closed_with(&mut clients, "closed 1001 shutdown");
}
