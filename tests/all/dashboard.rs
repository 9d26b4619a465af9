//! The operator dashboard in a real browser: headless Chromium (Debian's
//! `chromium`, driven through its `chromedriver` with fantoccini) against a
//! real `vigil serve` process and real client processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vigil_tests::test_plugins;

use crate::support::{free_port, http, WsClient};

const TOKEN: &str = crate::support::ADMIN_TOKEN;

/// How long the page may take to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// A `vigil serve` process on fixed loopback ports (so a restart comes back
/// where the page looks for it), with fast tiers.
struct ServeProcess {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts one on free ports, its config in a temp dir of its own.
    fn start() -> ServeProcess {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("cannot create a temp dir: {error}"),
        };
        let (listen, admin) = (loopback(free_port()), loopback(free_port()));
        let config = dir.path().join("vigil.toml");
        let toml = "[sessions]\ntick_ms = 50\nclose_grace_ms = 300\n\
                    [tiers.fast]\nping_interval_ms = 1000\npong_timeout_ms = 1000\n\
                    [tiers.regular]\nping_interval_ms = 1000\npong_timeout_ms = 1000\n\
                    [tiers.keep_alive]\nping_interval_ms = 1000\npong_timeout_ms = 1000\n\
                    [monitor]\nwindow_ms = 5000\ngrowth_threshold = 50\n\
                    [policy.limits]\ncall_deadline_ms = 500\n";
        if let Err(error) = std::fs::write(&config, toml) {
            panic!("cannot write {}: {error}", config.display());
        }
        let mut process = ServeProcess {
            child: spawn_serve(&config, listen, admin),
            listen,
            admin,
            config,
            _dir: dir,
        };
        process.wait_ready();
        process
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("vigil serve exited early: {status}");
            }
            if std::net::TcpStream::connect(self.admin).is_ok()
                && std::net::TcpStream::connect(self.listen).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vigil serve did not start listening on {}", self.listen);
    }

    /// Stops it (SIGTERM, then SIGKILL) and starts it again on the same ports.
    fn restart(&mut self) {
        self.stop();
        self.child = spawn_serve(&self.config, self.listen, self.admin);
        self.wait_ready();
    }

    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve(config: &Path, listen: SocketAddr, admin: SocketAddr) -> Child {
    let spawned = crate::cli::vigil()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--admin-token", TOKEN])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(error) => panic!("cannot start vigil serve: {error}"),
    }
}

/// Headless Chromium behind its own chromedriver, on a free port, with a
/// profile in a temp dir.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let output = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/ensure-chromium.sh"
            ))
            .output();
        let paths = match output {
            Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
            Ok(output) => panic!(
                "the dashboard tests need Chromium: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => panic!("cannot run scripts/ensure-chromium.sh: {error}"),
        };
        let [chromium, chromedriver] = paths.as_slice() else {
            panic!("scripts/ensure-chromium.sh printed {paths:?}");
        };
        let port = free_port();
        let driver = match Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!("cannot start chromedriver: {error}"),
        };
        let profile = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("cannot create a browser profile dir: {error}"),
        };
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,2600",
                    "--no-first-run", "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(error) if Instant::now() > deadline => {
                    panic!("cannot start a Chromium session: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Opens the dashboard of the host whose admin listener is `admin`.
    async fn open(&self, admin: SocketAddr, path: &str) {
        let page = format!("http://{admin}{path}");
        if let Err(error) = self.client.goto(&page).await {
            panic!("cannot open {page}: {error}");
        }
    }

    /// Signs in with the admin token and waits for the stream.
    async fn sign_in(&self) {
        self.type_into("token", TOKEN).await;
        self.click("login-submit").await;
        self.until_text("link", "live").await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn eval(&self, script: &str) -> Value {
        match self.client.execute(script, Vec::new()).await {
            Ok(value) => value,
            Err(error) => panic!("script failed: {error}\n{script}"),
        }
    }

    /// Waits until `script` returns something `accept` takes, within
    /// [`PAGE_WAIT`]; fails naming `what` and the last value otherwise.
    async fn until(&self, what: &str, script: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PAGE_WAIT;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(value) = self.client.execute(script, Vec::new()).await {
                if accept(&value) {
                    return value;
                }
                last = value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {what}; last saw {last}");
    }

    async fn text_of(&self, id: &str) -> String {
        self.eval(&format!(
            "return document.getElementById({id:?}).textContent;"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn until_text(&self, id: &str, expected: &str) {
        let script = format!("return document.getElementById({id:?}).textContent;");
        self.until(&format!("#{id} = {expected:?}"), &script, |value| {
            value.as_str() == Some(expected)
        })
        .await;
    }

    async fn click(&self, id: &str) {
        let element = match self.client.find(Locator::Id(id)).await {
            Ok(element) => element,
            Err(error) => panic!("no #{id}: {error}"),
        };
        if let Err(error) = element.click().await {
            panic!("cannot click #{id}: {error}");
        }
    }

    async fn type_into(&self, id: &str, text: &str) {
        let element = match self.client.find(Locator::Id(id)).await {
            Ok(element) => element,
            Err(error) => panic!("no #{id}: {error}"),
        };
        if let Err(error) = element.send_keys(text).await {
            panic!("cannot type into #{id}: {error}");
        }
    }

    /// Clicks `id`, then the confirmation dialog's "Confirm".
    async fn click_confirmed(&self, id: &str) {
        self.click(id).await;
        self.until(
            "the confirmation dialog",
            "return document.getElementById('confirm').open;",
            |open| open == &json!(true),
        )
        .await;
        self.click("confirm-yes").await;
    }

    async fn screenshot(&self, path: &Path) {
        match self.client.screenshot().await {
            Ok(png) => {
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                if let Err(error) = std::fs::write(path, png) {
                    panic!("cannot write {}: {error}", path.display());
                }
            }
            Err(error) => panic!("cannot take a screenshot: {error}"),
        }
    }

    /// Ends the WebDriver session (the browser quits); dropping stops the
    /// driver.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The rows of the recent-evictions table, as `(identity, reason)`.
const REMOVAL_ROWS: &str = "return [...document.querySelectorAll('#removals tr')]\
     .map(row => [row.children[2].textContent, row.dataset.reason]);";

fn has_removal(rows: &Value, identity: &str, reasons: &[&str]) -> bool {
    rows.as_array().is_some_and(|rows| {
        rows.iter().any(|row| {
            row[0].as_str() == Some(identity)
                && row[1]
                    .as_str()
                    .is_some_and(|reason| reasons.contains(&reason))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_sessions_come_and_go_swaps_the_policy_and_the_page_survives_a_restart()
{
    let mut serve = ServeProcess::start();
    let browser = Browser::start().await;

    // Never on the public listener; its data never without the token.
    let public = http(serve.listen, "GET", "/dashboard", None, None).await;
    assert_eq!(public.status, 404, "the dashboard must not be public");
    let refused = http(serve.admin, "GET", "/admin/dashboard/stream", None, None).await;
    assert_eq!(refused.status, 401);

    // A wrong token is refused, and the page says so.
    browser.open(serve.admin, "/dashboard").await;
    browser.type_into("token", "not-the-token").await;
    browser.click("login-submit").await;
    browser
        .until(
            "the refusal",
            "return !document.getElementById('login-error').hidden \
             && document.getElementById('dashboard').hidden;",
            |shown| shown == &json!(true),
        )
        .await;
    let stored = browser
        .eval("return sessionStorage.getItem('vigil-admin-token');")
        .await;
    assert_eq!(stored, Value::Null, "a refused token is not kept");

    // The right one opens it, kept in session storage and never in the URL.
    browser.sign_in().await;
    browser.until_text("sessions-now", "0").await;
    let url = browser.eval("return location.href;").await;
    assert!(
        !url.as_str().unwrap_or_default().contains(TOKEN),
        "token in the URL: {url}"
    );

    // Sessions 0 → 4 as real clients connect.
    let mut clients: Vec<WsClient> = (1..=4)
        .map(|n| WsClient::connect(serve.listen, &format!("?client_id=bot-{n}"), &[]))
        .collect();
    browser.until_text("sessions-now", "4").await;
    browser
        .until(
            "four sessions in the fast tier",
            "return document.querySelector('#tiers [data-name=fast] .count').textContent;",
            |count| count == &json!("4"),
        )
        .await;

    // SIGKILL one: its eviction shows up with the transport reason.
    clients[2].kill9();
    browser
        .until("bot-3's eviction", REMOVAL_ROWS, |rows| {
            has_removal(rows, "bot-3", &["transport", "closed"])
        })
        .await;
    browser.until_text("sessions-now", "3").await;

    // The session table: search, details with the TCP facts, evict.
    browser.type_into("search", "bot-1").await;
    browser
        .until(
            "only bot-1 in the table",
            "return [...document.querySelectorAll('#session-rows tr')]\
             .map(row => row.children[1].textContent);",
            |identities| identities == &json!(["bot-1"]),
        )
        .await;
    browser
        .eval("document.querySelector('#session-rows tr').click(); return true;")
        .await;
    browser
        .until(
            "bot-1's facts, the TCP ones too",
            "return [...document.querySelectorAll('#details-facts th')]\
             .map(th => th.textContent);",
            |names| {
                let names = names.to_string();
                names.contains("\"identity\"") && names.contains("tcp.")
            },
        )
        .await;
    browser.click_confirmed("evict").await;
    browser
        .until("bot-1's eviction by the admin", REMOVAL_ROWS, |rows| {
            has_removal(rows, "bot-1", &["admin"])
        })
        .await;
    browser.until_text("sessions-now", "2").await;

    // Swap the policy through the page; the active SHA changes.
    let default_sha = browser.text_of("policy-active-sha").await;
    let lenient_sha = sha256_hex(test_plugins::LENIENT);
    assert_ne!(default_sha, lenient_sha);
    let file = match browser.client.find(Locator::Id("swap-file")).await {
        Ok(input) => input,
        Err(error) => panic!("no file input: {error}"),
    };
    if let Err(error) = file.send_keys(test_plugins::LENIENT_PATH).await {
        panic!("cannot choose the plugin file: {error}");
    }
    browser.click_confirmed("swap").await;
    browser.until_text("policy-active-sha", &lenient_sha).await;
    browser
        .until_text("policy-previous-sha", default_sha.as_str())
        .await;

    // Roll back through the page.
    browser.click_confirmed("rollback").await;
    browser
        .until_text("policy-active-sha", default_sha.as_str())
        .await;

    browser
        .screenshot(&vigil_tests::target_dir().join("dashboard-test.png"))
        .await;

    // The host restarts: the page reconnects by itself and shows the new
    // host (its clients gone, none yet back).
    drop(clients);
    serve.restart();
    browser.until_text("link", "live").await;
    browser.until_text("sessions-now", "0").await;
    let _client = WsClient::connect(serve.listen, "?client_id=after-restart", &[]);
    browser.until_text("sessions-now", "1").await;

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_state_stays_bounded_over_many_updates() {
    let serve = ServeProcess::start();
    let browser = Browser::start().await;
    browser.open(serve.admin, "/").await;
    browser.sign_in().await;

    // Three hours of frames, each with new removals and a new reason: far
    // past every bound.
    let sizes = browser
        .eval(
            "const v = window.vigil; let seq = 1e6;
             for (let i = 0; i < 3 * 3600; i++) {
               const removals = [];
               for (let r = 0; r < 5; r++) {
                 seq += 1;
                 removals.push({seq, at: Date.now(), session: seq, identity: null,
                   class: 'default', peer: '127.0.0.1:1', reason: 'reason-' + (i % 40),
                   tier: 'fast', code: 1000});
               }
               v.apply('frame', {sample: {t: Date.now() + i * 1000, sessions: i,
                 suspect: i % 100 === 0, evicted: {['reason-' + (i % 40)]: 5}, calls: 3,
                 call_us: 12.5, faults: 0}, removals});
             }
             return v.stateSizes();",
        )
        .await;
    let cap = browser.eval("return window.vigil.HISTORY_CAP;").await;
    let removals_cap = browser.eval("return window.vigil.REMOVALS_CAP;").await;
    assert_eq!(sizes["samples"], cap, "{sizes}");
    assert_eq!(sizes["removals"], removals_cap, "{sizes}");
    assert!(
        sizes["reasons"].as_u64().is_some_and(|n| n <= 25),
        "{sizes}"
    );
    // And the page still renders what it holds, bounded too.
    browser
        .until(
            "the removal table at its bound",
            "return document.querySelectorAll('#removals tr').length;",
            |rows| rows == &removals_cap,
        )
        .await;
    browser.close().await;
}

/// Renders `docs/dashboard.png`, the README's picture: a few hundred
/// sessions, evictions of several kinds, the growth alarm, a shadow running.
/// Not part of the suite (it takes a minute); run it with
/// `cargo test -p vigil-tests --test all -- --ignored a_populated_dashboard`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "renders docs/dashboard.png; run by hand"]
async fn a_populated_dashboard_for_the_readme() {
    use futures_util::StreamExt;

    let serve = ServeProcess::start();
    let shadow = crate::support::upload_with(
        serve.admin,
        "/admin/policy/shadow",
        test_plugins::STRICT,
        &[("name", "strict-policy.wasm")],
    )
    .await;
    assert_eq!(shadow.status, 200, "{:?}", shadow.body);
    let browser = Browser::start().await;
    browser.open(serve.admin, "/").await;
    browser.sign_in().await;

    // Waves of clients: most answer pings; some stop reading (the policy
    // evicts them for the missing pongs); some vanish (transport).
    let url = format!("ws://{}/ws", serve.listen);
    let mut reading = Vec::new();
    let mut silent = Vec::new();
    for wave in 0..6 {
        for n in 0..60 {
            let identity = format!("bot-{wave}-{n}");
            let Ok((stream, _)) =
                tokio_tungstenite::connect_async(format!("{url}?client_id={identity}")).await
            else {
                panic!("cannot connect {identity}");
            };
            if n % 12 == 0 {
                silent.push(stream);
            } else {
                reading.push(tokio::spawn(async move {
                    let mut stream = stream;
                    while let Some(Ok(_)) = stream.next().await {}
                }));
            }
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        if wave % 2 == 1 {
            for task in reading.drain(..8) {
                task.abort();
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    browser
        .until(
            "a few hundred sessions",
            "return Number(document.getElementById('sessions-now').textContent);",
            |n| n.as_u64().is_some_and(|n| n >= 200),
        )
        .await;
    browser
        .screenshot(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png"))
        .await;
    drop(silent);
    browser.close().await;
}

/// Reads the dashboard's event stream at `admin` until a frame satisfies
/// `accept`, within `limit`, and returns it; `None` if none did. Raw HTTP:
/// each event arrives whole in one chunk, so its `data:` line is intact.
pub(crate) async fn frame_where(
    admin: SocketAddr,
    limit: Duration,
    accept: impl Fn(&Value) -> bool,
) -> Option<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
    let request = format!(
        "GET /admin/dashboard/stream HTTP/1.1\r\nHost: {admin}\r\n\
         Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut pending = String::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        pending.push_str(&String::from_utf8_lossy(&buffer[..read]));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some(data) = line.trim_end().strip_prefix("data: ") else {
                continue;
            };
            if let Ok(frame) = serde_json::from_str::<Value>(data) {
                if frame.get("census").is_some() && accept(&frame) {
                    return Some(frame);
                }
            }
        }
    }
}
