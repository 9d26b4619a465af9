//! Shared by the test modules. Running a real Vigil host inside a test, with real WebSocket clients as
//! child processes, and a small HTTP client for its API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vigil::config::VigilConfig;
use vigil::policy::PluginSource;
use vigil::RunningServer;

/// Test timings: ping every second, pong timeout one second, 50 ms tick,
/// short close grace and drain (the test kit's, which authors use too).
pub fn fast_config() -> VigilConfig {
    vigil_testkit::test_config()
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()) {
        Ok(address) => address.port(),
        Err(error) => panic!("no free port: {error}"),
    }
}

/// The admin token tests use.
pub const ADMIN_TOKEN: &str = "admin-t0k";

/// [`fast_config`] with the admin API on a free port.
pub fn admin_config() -> VigilConfig {
    let mut config = fast_config();
    config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.token = Some(ADMIN_TOKEN.to_owned());
    config
}

/// The admin address of a server started with [`admin_config`].
pub fn admin_address(server: &RunningServer) -> SocketAddr {
    match server.admin_address {
        Some(address) => address,
        None => panic!("the admin API is not served"),
    }
}

/// `PUT` a plugin to an admin route, with its config JSON.
pub async fn upload(admin: SocketAddr, route: &str, plugin: &[u8], config: &str) -> HttpResponse {
    upload_with(admin, route, plugin, &[("config", config)]).await
}

/// `PUT` a plugin to an admin route with these query parameters
/// (`config`, `limits`, `name`), each URL-encoded.
pub async fn upload_with(
    admin: SocketAddr,
    route: &str,
    plugin: &[u8],
    parameters: &[(&str, &str)],
) -> HttpResponse {
    let encode = |value: &str| -> String {
        value
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let query: Vec<String> = parameters
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    http_bytes_within(
        admin,
        "PUT",
        &format!("{route}?{}", query.join("&")),
        plugin,
        Some(ADMIN_TOKEN),
        UPLOAD_WITHIN,
    )
    .await
}

/// How long an upload may take to be answered. A swap compiles the
/// plugin first, and a SpiderMonkey or CPython component that no earlier
/// test left in the compile cache takes about a minute to compile in a
/// debug build on a 2-core machine.
const UPLOAD_WITHIN: Duration = Duration::from_secs(180);

/// Starts a host on a free loopback port with the given policy plugin, the
/// way `vigil serve` does: config validation, the start-up check, the
/// configured fault limits (one engine shared by the tests, for its cache).
pub async fn start_host(config: VigilConfig, plugin: &[u8], plugin_config: &str) -> RunningServer {
    let listener = match TcpListener::bind(config.server.listen).await {
        Ok(listener) => listener,
        Err(error) => panic!("cannot bind: {error}"),
    };
    let source = PluginSource::from_bytes("plugin-under-test", "test", plugin.to_vec());
    let started = vigil::Vigil::builder(config)
        .engine(vigil_tests::engine().clone())
        .plugin(source, plugin_config)
        .start(listener)
        .await;
    match started {
        Ok(server) => server,
        Err(error) => panic!("cannot start the host: {error:#}"),
    }
}

/// An HTTP/1.1 response: status and JSON body (`Null` if not JSON).
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The body, parsed.
    pub json: Value,
    /// The body as text.
    pub text: String,
    /// The body's bytes (a binary download).
    pub body: Vec<u8>,
}

/// One request with `Connection: close`; `token` goes in a Bearer header.
pub async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> HttpResponse {
    http_bytes(address, method, path, body.unwrap_or("").as_bytes(), token).await
}

/// [`http`] with a binary body.
pub async fn http_bytes(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> HttpResponse {
    http_bytes_within(address, method, path, body, token, ANSWER_WITHIN).await
}

/// How long any other request may take to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// [`http_bytes`], answered within `within`.
async fn http_bytes_within(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
    within: Duration,
) -> HttpResponse {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    raw_http_within(address, &request, within).await
}

/// Sends a whole raw HTTP/1.1 request (ending the connection after its
/// answer) and reads the response to its end, within 10 s.
pub async fn raw_http(address: SocketAddr, request: &[u8]) -> HttpResponse {
    raw_http_within(address, request, ANSWER_WITHIN).await
}

async fn raw_http_within(address: SocketAddr, request: &[u8], within: Duration) -> HttpResponse {
    let mut stream = match TcpStream::connect(address).await {
        Ok(stream) => stream,
        Err(error) => panic!("cannot connect to {address}: {error}"),
    };
    if let Err(error) = stream.write_all(request).await {
        panic!("cannot send request: {error}");
    }
    let mut raw = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!("cannot read response: {error}"),
        Err(_) => panic!("no response within {within:?}"),
    }
    HttpResponse::parse(&raw)
}

impl HttpResponse {
    /// A raw HTTP/1.1 response read to its end: status line, headers, body.
    pub fn parse(raw: &[u8]) -> HttpResponse {
        let body = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .map(|end| raw[end + 4..].to_vec())
            .unwrap_or_default();
        let raw = String::from_utf8_lossy(raw);
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let text = raw
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        HttpResponse {
            status,
            json,
            text,
            body,
        }
    }
}

/// Live sessions as `GET /sessions` counts them.
pub async fn session_count(address: SocketAddr) -> u64 {
    http(address, "GET", "/sessions?limit=0", None, None)
        .await
        .json["count"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; returns
/// how long it took, or `None`.
pub async fn wait_until<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Reads `output` line by line on a thread of its own, so a child process
/// never blocks on a full pipe and the test can wait with a timeout.
pub fn read_lines(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Asserts that every client was closed with `expected` (`closed CODE REASON`).
pub fn assert_all_closed_with(clients: &mut [WsClient], expected: &str) {
    for client in clients {
        assert_eq!(
            client
                .wait_for_line("closed", Duration::from_secs(1))
                .as_deref(),
            Some(expected)
        );
    }
}

/// Whether the host comes to hold exactly `expected` sessions within `limit`.
pub async fn sessions_become(address: SocketAddr, expected: u64, limit: Duration) -> bool {
    wait_until(limit, || async { session_count(address).await == expected })
        .await
        .is_some()
}

/// A `ws-client` child process.
pub struct WsClient {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl WsClient {
    /// Starts a client on `/ws` and waits until it is connected.
    pub fn connect(address: SocketAddr, query: &str, args: &[&str]) -> WsClient {
        Self::connect_url(&format!("ws://{address}/ws{query}"), args)
    }

    /// Starts a client on any URL and waits until it is connected.
    pub fn connect_url(url: &str, args: &[&str]) -> WsClient {
        let mut child = match Command::new(env!("CARGO_BIN_EXE_ws-client"))
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!("cannot start ws-client: {error}"),
        };
        let Some(stdout) = child.stdout.take() else {
            panic!("no stdout pipe");
        };
        let lines = read_lines(stdout);
        let mut client = WsClient { child, lines };
        if client
            .wait_for_line("connected", Duration::from_secs(10))
            .is_none()
        {
            panic!("ws-client did not connect to {url}");
        }
        client
    }

    /// The next line starting with `prefix`, within `limit`.
    pub fn wait_for_line(&mut self, prefix: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "kill -{name} failed"
        );
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one Prometheus sample line (`name{labels} value`), if the
/// text has it.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|line| {
            line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' ')
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The value of one Prometheus sample line (`name{labels} value`). A
/// missing series fails the test: a renamed metric must not pass as 0.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    match sample(text, name_and_labels) {
        Some(value) => value,
        None => panic!("no series `{name_and_labels}` in the metrics:\n{text}"),
    }
}

/// A labelled series that may not have been created yet (no eviction of
/// that reason so far): 0 when absent, but its family must be exported, so
/// a renamed metric still fails.
pub fn metric_or_zero(text: &str, name_and_labels: &str) -> f64 {
    let name = name_and_labels.split('{').next().unwrap_or(name_and_labels);
    let family = name.strip_suffix("_total").unwrap_or(name);
    assert!(
        text.lines()
            .any(|line| line.starts_with(&format!("# TYPE {family} "))),
        "no metric family `{family}` in the metrics:\n{text}"
    );
    sample(text, name_and_labels).unwrap_or(0.0)
}

/// The host's `/metrics` text.
pub async fn metrics_text(address: SocketAddr) -> String {
    http(address, "GET", "/metrics", None, None).await.text
}

/// Sessions removed for `reason`, whatever tier they were in.
pub fn evictions(metrics: &str, reason: &str) -> f64 {
    ["fast", "regular", "keep-alive"]
        .iter()
        .map(|tier| {
            metric_or_zero(
                metrics,
                &format!(r#"vigil_evictions_total{{reason="{reason}",tier="{tier}"}}"#),
            )
        })
        .sum()
}

/// Shuts the host down gracefully and fails the test if that went wrong;
/// returns (clean closes, sessions at shutdown).
pub async fn shut_down(server: RunningServer) -> (u64, usize) {
    match server.shutdown().await {
        Ok(closed) => closed,
        Err(error) => panic!("the host did not shut down cleanly: {error:#}"),
    }
}

/// Sends a raw request and returns the response's status code (0 when the
/// connection closed without one).
pub async fn raw_status(address: SocketAddr, request: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(address).await else {
        panic!("cannot connect to {address}");
    };
    let _ = stream.write_all(request.as_bytes()).await;
    let mut buffer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
    let n = match read {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => 0,
        Err(_) => panic!("no response to a raw request within 5 s"),
    };
    HttpResponse::parse(&buffer[..n]).status
}

/// The first lines of a WebSocket upgrade request for `path`, without the
/// blank line that ends it.
pub fn upgrade_head(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
}
