//! The `vigil` program as a user runs it: `policy check` and `serve`, with
//! good and bad plugins and configs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::test_plugins;

/// The `vigil` program, its compile cache under the target directory.
pub(crate) fn vigil() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-under-test"));
    command
        .env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", vigil_tests::cache_home())
        .stdin(Stdio::null());
    command
}

pub(crate) fn run(command: &mut Command) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(error) => panic!("cannot run vigil: {error}"),
    }
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_file(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    if let Err(error) = std::fs::write(&path, contents) {
        panic!("cannot write {}: {error}", path.display());
    }
    path
}

fn temp_dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("cannot create a temp dir: {error}"),
    }
}

#[test]
fn policy_check_prints_the_default_policys_verdicts() {
    // A roomy deadline: this test reads the report; a debug build on a busy
    // machine must not turn it into a timing test.
    let dir = temp_dir();
    let config = write_file(
        &dir,
        "vigil.toml",
        b"[policy.limits]\ncall_deadline_ms = 1000\n",
    );
    let output = run(vigil().args(["policy", "check", "--config"]).arg(&config));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    for expected in [
        "policy default-policy",
        "overdue-pong",
        "evict pong-timeout (4000)",
        "evict send-failures (4001)",
        "evict backlog (4002)",
        "evict idle (4003)",
        "keep-alive",
        "capacity pressure: 20 sessions, 2 over the limit",
        "contract on generated batches",
        "    10000 ",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn policy_check_fails_on_plugins_that_do_not_load_or_misbehave() {
    let dir = temp_dir();
    let garbage = write_file(&dir, "garbage.wasm", b"not wasm");
    let wrong = write_file(&dir, "wrong.wasm", test_plugins::WRONG_WORLD);
    let looping_config = write_file(&dir, "loop.json", br#"{"fault": "loop"}"#);
    let contract_config = write_file(&dir, "contract.json", br#"{"fault": "missing-verdict"}"#);

    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (vec![garbage.as_os_str()], "is not a WebAssembly file"),
        (vec![wrong.as_os_str()], "is not a Vigil policy"),
        (
            vec![
                test_plugins::MISBEHAVING_PATH.as_ref(),
                "--policy-config".as_ref(),
                looping_config.as_os_str(),
            ],
            "faulted during assess: deadline",
        ),
        (
            vec![
                test_plugins::MISBEHAVING_PATH.as_ref(),
                "--policy-config".as_ref(),
                contract_config.as_os_str(),
            ],
            "broke the contract during assess",
        ),
    ];
    for (args, expected) in cases {
        let output = run(vigil().args(["policy", "check"]).args(&args));
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn serve_refuses_to_start_with_a_bad_plugin_or_config() {
    let dir = temp_dir();
    let garbage = write_file(&dir, "garbage.wasm", b"\0asm but not really");
    let bad_policy_config = write_file(&dir, "policy.json", br#"{"fast_below_health": 101}"#);
    let bad_toml = write_file(
        &dir,
        "vigil.toml",
        b"[server]\nlisten = \"127.0.0.1:0\"\nlisten_twice = true\n",
    );
    let missing = dir.path().join("missing.wasm");

    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (
            vec!["--policy".as_ref(), garbage.as_os_str()],
            "garbage.wasm",
        ),
        (
            vec!["--policy".as_ref(), missing.as_os_str()],
            "cannot read policy plugin",
        ),
        (
            vec!["--policy-config".as_ref(), bad_policy_config.as_os_str()],
            "fast_below_health",
        ),
        (
            vec!["--config".as_ref(), bad_toml.as_os_str()],
            "listen_twice",
        ),
    ];
    for (args, expected) in cases {
        let started = Instant::now();
        let output = run(vigil()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&args));
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} should not start");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{stderr}"
        );
        assert!(
            !stderr.contains("vigil listening"),
            "{args:?} started listening"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

/// A `vigil serve` child and the address it reported.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `vigil serve` on a free loopback port with `extra_args`, and
/// waits until it says where it listens.
pub(crate) fn start_server(extra_args: &[&str]) -> Server {
    start_server_with_env(extra_args, &[])
}

/// [`start_server`] with environment variables for the child.
pub(crate) fn start_server_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = match vigil()
        .envs(env.iter().copied())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra_args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!("cannot start vigil: {error}"),
    };
    let Some(stderr) = child.stderr.take() else {
        panic!("no stderr pipe");
    };
    let received = crate::support::read_lines(stderr);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while Instant::now() < deadline {
        let Ok(line) = received.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split("address=").nth(1) {
            let address = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || while received.recv().is_ok() {});
            return Server { child, address };
        }
    }
    let _ = child.kill();
    panic!("vigil did not report its address within 30 s:\n{seen}");
}

fn http_get(address: &str, path: &str) -> String {
    http_get_with(address, path, None)
}

/// `GET path`, with `Authorization: Bearer token` when given.
fn http_get_with(address: &str, path: &str, token: Option<&str>) -> String {
    let mut stream = match TcpStream::connect(address) {
        Ok(stream) => stream,
        Err(error) => panic!("cannot connect to {address}: {error}"),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{auth}\r\n");
    if let Err(error) = stream.write_all(request.as_bytes()) {
        panic!("cannot send request: {error}");
    }
    let mut response = String::new();
    if let Err(error) = stream.read_to_string(&mut response) {
        panic!("cannot read response: {error}");
    }
    response
}

#[test]
fn serve_runs_the_default_policy_and_reports_it_healthy() {
    const API_KEY: &str = "cli-api-key-0123456789";
    let mut server = start_server(&["--access-token", "t0k", "--api-key", API_KEY]);
    let response = http_get(&server.address, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#""name":"default-policy""#),
        "{response}"
    );
    assert!(response.contains(r#""state":"active""#), "{response}");
    let refused = http_get(&server.address, "/sessions");
    assert!(
        refused.starts_with("HTTP/1.1 401"),
        "--api-key is not enforced: {refused}"
    );
    let with_client_token = http_get_with(&server.address, "/sessions", Some("t0k"));
    assert!(
        with_client_token.starts_with("HTTP/1.1 403"),
        "the client token opened a control route: {with_client_token}"
    );
    let listed = http_get_with(&server.address, "/sessions", Some(API_KEY));
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    let no_token = http_get(&server.address, "/ws");
    assert!(
        no_token.starts_with("HTTP/1.1 401"),
        "--access-token is not enforced on /ws: {no_token}"
    );

    // Two live sessions, closed with 1001 on SIGTERM.
    let address: std::net::SocketAddr = match server.address.parse() {
        Ok(address) => address,
        Err(error) => panic!("bad address {}: {error}", server.address),
    };
    let mut clients: Vec<crate::support::WsClient> = (0..2)
        .map(|_| crate::support::WsClient::connect(address, "?access_token=t0k", &[]))
        .collect();

    // SIGTERM stops it cleanly.
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(
        matches!(killed, Ok(status) if status.success()),
        "cannot signal vigil"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match server.child.try_wait() {
            Ok(Some(status)) => {
                assert!(status.success(), "vigil exited with {status} after SIGTERM");
                break;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("vigil did not exit after SIGTERM: {other:?}"),
        }
    }
    crate::support::assert_all_closed_with(&mut clients, "closed 1001 shutdown");
}
