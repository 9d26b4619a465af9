//! Native `wss://` with a certificate generated at test time, and a
//! certificate reload that keeps the sessions already open.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use vigil::config::TlsConfig;
use vigil_tests::DEFAULT_POLICY;

use crate::support::{fast_config, shut_down, start_host, wait_until};

/// A self-signed certificate for `localhost`: its DER, and PEM files.
fn write_certificate(dir: &Path) -> CertificateDer<'static> {
    let generated = match rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]) {
        Ok(generated) => generated,
        Err(error) => panic!("cannot generate a certificate: {error}"),
    };
    // Written beside, then renamed over: what a renewal tool does.
    for (name, text) in [
        ("cert.pem", generated.cert.pem()),
        ("key.pem", generated.key_pair.serialize_pem()),
    ] {
        let staging = dir.join(format!("{name}.new"));
        if let Err(error) = std::fs::write(&staging, text) {
            panic!("cannot write {name}: {error}");
        }
        if let Err(error) = std::fs::rename(&staging, dir.join(name)) {
            panic!("cannot replace {name}: {error}");
        }
    }
    generated.cert.der().clone()
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A TLS connection to `address` trusting only `trusted`, as `localhost`.
async fn connect_tls(
    address: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
) -> Result<TlsStream<TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// One HTTPS request with `Connection: close`: the status and the body.
async fn https(
    address: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = match connect_tls(address, trusted).await {
        Ok(tls) => tls,
        Err(why) => panic!("cannot connect over TLS: {why}"),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(error) = tls.write_all(request.as_bytes()).await {
        panic!("cannot send over TLS: {error}");
    }
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
    let response = crate::support::HttpResponse::parse(&raw);
    (response.status, response.text)
}

/// Connects over `wss://` trusting only `trusted`; the session and the
/// certificate the server presented.
async fn connect_wss(
    address: std::net::SocketAddr,
    trusted: &CertificateDer<'static>,
) -> Result<(Wss, CertificateDer<'static>), String> {
    let tls = connect_tls(address, trusted).await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first().cloned())
        .ok_or("no certificate presented")?;
    let (socket, _) = tokio_tungstenite::client_async("wss://localhost/ws", tls)
        .await
        .map_err(|e| format!("WebSocket: {e}"))?;
    Ok((socket, presented))
}

async fn next_text(socket: &mut Wss) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                return Some(text.to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// A host serving TLS with a fresh self-signed certificate: the directory
/// holding its files, the certificate, and the running host.
async fn start_tls_host() -> (
    tempfile::TempDir,
    CertificateDer<'static>,
    vigil::RunningServer,
) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let certificate = write_certificate(dir.path());
    let mut config = fast_config();
    config.server.tls = Some(TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    });
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    (dir, certificate, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_works_and_a_certificate_reload_keeps_open_sessions() {
    let (dir, first, server) = start_tls_host().await;
    let address = server.address;

    let (mut old_session, presented) = match connect_wss(address, &first).await {
        Ok(connected) => connected,
        Err(why) => panic!("wss:// failed: {why}"),
    };
    assert_eq!(presented, first);
    let admitted = wait_until(Duration::from_secs(5), || {
        let first = first.clone();
        async move {
            https(address, &first, "GET", "/sessions", "")
                .await
                .1
                .contains(r#""count":1"#)
        }
    })
    .await;
    assert!(admitted.is_some(), "the wss:// session was not listed");
    // Plain HTTP on the TLS port gets no answer, only a closed connection.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!("ws://{address}/ws")),
    )
    .await;
    assert!(
        matches!(plain, Ok(Err(_))),
        "plain ws:// on the TLS port: {plain:?}"
    );

    // Renew: new key, new certificate, same files.
    let second = write_certificate(dir.path());
    assert_ne!(first, second);
    let reloaded = wait_until(Duration::from_secs(10), || {
        let second = second.clone();
        async move {
            matches!(connect_wss(address, &second).await, Ok((_, presented)) if presented == second)
        }
    })
    .await;
    assert!(
        reloaded.is_some(),
        "new connections never got the renewed certificate"
    );
    // The session from before the reload is still served.
    let (status, answer) = https(
        address,
        &second,
        "POST",
        "/publish",
        r#"{"to": "all", "data": "after the reload"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        next_text(&mut old_session).await.as_deref(),
        Some("after the reload")
    );
    shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_after_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    write_certificate(dir.path());
    let mut config = fast_config();
    config.server.handshake_timeout_ms = 1_000;
    config.server.tls = Some(TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    });
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let mut stalled = match TcpStream::connect(server.address).await {
        Ok(stream) => stream,
        Err(error) => panic!("{error}"),
    };
    // The first bytes of a TLS record, then nothing.
    let _ = stalled.write_all(&[0x16, 0x03, 0x01]).await;
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buffer)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let metrics = server.host.metrics_text();
    assert!(
        metrics.contains(r#"vigil_connections_refused_total{reason="handshake-timeout"} 1"#),
        "{metrics}"
    );
    shut_down(server).await;
}

#[tokio::test]
async fn a_bad_certificate_file_stops_start_up_with_a_clear_error() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    if std::fs::write(&cert, "not a certificate").is_err()
        || std::fs::write(&key, "nor a key").is_err()
    {
        panic!("cannot write the files");
    }
    let mut config = fast_config();
    config.server.tls = Some(TlsConfig { cert, key });
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("{error}"),
    };
    let started = vigil::Vigil::builder(config)
        .engine(vigil_tests::engine().clone())
        .start(listener)
        .await;
    let error = match started {
        Ok(_) => panic!("a host started with a bad certificate"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("cert.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_heartbeats_go_through_the_session_task_and_are_answered() {
    // Under TLS the socket carries records, not frames: the tick must never
    // write a ping to it itself (`core::write_gate`).
    let (_dir, trusted, server) = start_tls_host().await;
    let address = server.address;
    let (mut session, _) = match connect_wss(address, &trusted).await {
        Ok(connected) => connected,
        Err(why) => panic!("wss:// failed: {why}"),
    };
    // Pings every second: read for three and a half, answering them.
    let reading = tokio::time::timeout(Duration::from_millis(3_500), async {
        while let Some(message) = session.next().await {
            if let Err(error) = message {
                return Err(error.to_string());
            }
        }
        Err::<(), String>("the server closed the session".to_owned())
    })
    .await;
    assert!(reading.is_err(), "the session broke: {reading:?}");
    let (status, metrics) = https(address, &trusted, "GET", "/metrics", "").await;
    assert_eq!(status, 200, "{metrics}");
    let pongs = crate::support::metric(&metrics, "vigil_pongs_received_total");
    let by_tick = crate::support::metric(&metrics, "vigil_pings_sent_by_tick_total");
    assert!(pongs >= 2.0, "{pongs} pongs in 3.5 s of pings every second");
    assert_eq!(by_tick, 0.0, "the tick wrote pings into a TLS stream");
    shut_down(server).await;
}
