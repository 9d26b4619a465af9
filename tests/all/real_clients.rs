//! The real bot frameworks against Vigil's OneBot profile: NoneBot2 (with
//! `nonebot-adapter-onebot` and its websockets driver) and Koishi (with its
//! OneBot adapter), each in forward-WebSocket mode, installed by
//! `tests/onebot-clients/setup.sh` into the target directory. If they cannot
//! be installed these tests fail, saying why; they never pass without the
//! clients.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil::config::VigilConfig;
use vigil_tests::DEFAULT_POLICY;

use crate::onebot::{start_upstream, UpstreamCalls};
use crate::support::{
    fast_config, http, metric, metrics_text, read_lines, sessions_become, start_host,
};

const SELF_ID: i64 = 3_651_396_264;
const TOKEN: &str = "real-client-t0ken";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Installs the clients once per test process (reused across runs); the
/// directory holding `venv/` and `npm/`.
fn clients_dir() -> &'static Path {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let script = repo_root().join("tests/onebot-clients/setup.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(PathBuf::from(dir))
    });
    match installed {
        Ok(dir) => dir,
        Err(why) => panic!("the real OneBot clients could not be installed: {why}"),
    }
}

/// A real bot process: its `VIGIL ...` stdout lines, its log in a file.
pub(crate) struct Bot {
    child: Child,
    lines: mpsc::Receiver<String>,
    workdir: tempfile::TempDir,
}

impl Bot {
    fn start(command: Command, url: &str) -> Bot {
        Bot::start_as(command, url, SELF_ID, TOKEN)
    }

    /// Starts `command` as a bot of account `self_id` at `url`, with `token`.
    fn start_as(mut command: Command, url: &str, self_id: i64, token: &str) -> Bot {
        let workdir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("no temp dir: {error}"),
        };
        let log = match std::fs::File::create(workdir.path().join("bot.log")) {
            Ok(log) => log,
            Err(error) => panic!("cannot create the bot's log: {error}"),
        };
        let mut child = match command
            .env("VIGIL_URL", url)
            .env("VIGIL_TOKEN", token)
            .env("VIGIL_SELF_ID", self_id.to_string())
            .env("VIGIL_WORKDIR", workdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!("cannot start {command:?}: {error}"),
        };
        let Some(stdout) = child.stdout.take() else {
            panic!("no stdout pipe");
        };
        Bot {
            lines: read_lines(stdout),
            child,
            workdir,
        }
    }

    fn nonebot(url: &str) -> Bot {
        Bot::start(Bot::nonebot_command(), url)
    }

    fn koishi(url: &str) -> Bot {
        Bot::start(Bot::koishi_command(), url)
    }

    fn nonebot_command() -> Command {
        let dir = clients_dir();
        let mut command = Command::new(dir.join("venv/bin/python"));
        command.arg(repo_root().join("tests/onebot-clients/nonebot_bot.py"));
        command
    }

    fn koishi_command() -> Command {
        let dir = clients_dir();
        let mut command = Command::new("node");
        command
            .arg(repo_root().join("tests/onebot-clients/koishi_bot.js"))
            .env("VIGIL_NPM_PREFIX", dir.join("npm"));
        command
    }

    /// NoneBot2 as a bot of account `self_id` at `url`.
    pub(crate) fn nonebot_as(url: &str, self_id: i64, token: &str) -> Bot {
        Bot::start_as(Bot::nonebot_command(), url, self_id, token)
    }

    /// Koishi as a bot of account `self_id` at `url`.
    pub(crate) fn koishi_as(url: &str, self_id: i64, token: &str) -> Bot {
        Bot::start_as(Bot::koishi_command(), url, self_id, token)
    }

    /// The next `VIGIL <what>...` line within `limit`; fails the test with
    /// the bot's log otherwise.
    pub(crate) fn expect(&mut self, what: &str, limit: Duration) -> String {
        let prefix = format!("VIGIL {what}");
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(&prefix) => return line,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        panic!(
            "no `{prefix}` from the bot within {limit:?}; its log:\n{}",
            self.log_tail()
        );
    }

    /// Every `VIGIL` line that arrives within `limit`.
    fn lines_within(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    fn log_tail(&self) -> String {
        let mut log = String::new();
        if let Ok(mut file) = std::fs::File::open(self.workdir.path().join("bot.log")) {
            let _ = file.read_to_string(&mut log);
        }
        let start = log.len().saturating_sub(4_000);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(log.len());
        log[start..].to_owned()
    }

    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn config() -> VigilConfig {
    let mut config = fast_config();
    config.tiers = vigil::config::TiersConfig::default();
    config.onebot.enabled = true;
    config.onebot.self_id = Some(SELF_ID);
    config.onebot.nickname = "vigil-test-bot".to_owned();
    config.onebot.access_token = Some(TOKEN.to_owned());
    config.onebot.heartbeat_interval_ms = 500;
    config
}

async fn session_ids(address: std::net::SocketAddr) -> Vec<u64> {
    let sessions = http(address, "GET", "/sessions", None, None).await.json;
    sessions["sessions"]
        .as_array()
        .map(|list| list.iter().filter_map(|s| s["id"].as_u64()).collect())
        .unwrap_or_default()
}

fn recorded(calls: &UpstreamCalls) -> Vec<(String, Value)> {
    calls
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonebot2_connects_gets_answers_replies_and_is_evicted_when_killed() {
    let calls: UpstreamCalls = Arc::new(Mutex::new(Vec::new()));
    let upstream = start_upstream(Arc::clone(&calls)).await;
    let mut config = config();
    config.onebot.action_upstream = Some(format!("http://{upstream}"));
    let server = start_host(config, DEFAULT_POLICY, "{}").await;
    let url = format!("ws://{}/", server.address);

    // Connects with the token; NoneBot ignores everything until the
    // lifecycle event, and takes self_id from it. Its get_login_info call
    // (a digit-string echo) is answered.
    let mut bot = Bot::nonebot(&url);
    let connected = bot.expect("connected", Duration::from_secs(60));
    assert!(
        connected.contains(&format!("self_id={SELF_ID}")),
        "{connected}"
    );
    assert!(
        connected.contains(&format!(r#""user_id": {SELF_ID}"#))
            && connected.contains(r#""nickname": "vigil-test-bot""#),
        "{connected}"
    );
    let heartbeat = bot.expect("heartbeat", Duration::from_secs(5));
    assert!(heartbeat.contains("interval=500"), "{heartbeat}");
    let first_session = session_ids(server.address).await;
    assert_eq!(first_session.len(), 1, "one session for the bot");

    // A published message reaches its matcher; its reply goes out as an
    // action that Vigil forwards to the backend and answers.
    let published = http(
        server.address,
        "POST",
        "/publish",
        Some(
            r#"{"to": {"class": "onebot"}, "data": {"post_type": "message", "message_type": "private", "sub_type": "friend", "message_id": 7, "user_id": 10001, "message": [{"type": "text", "data": {"text": "vigil-ping"}}], "raw_message": "vigil-ping", "font": 0, "sender": {"user_id": 10001, "nickname": "tester"}}}"#,
        ),
        None,
    )
    .await;
    assert_eq!(published.json["delivered"], 1, "{}", published.text);
    bot.expect("replied", Duration::from_secs(10));
    let calls_made = recorded(&calls);
    assert!(
        calls_made
            .iter()
            .any(|(action, params)| action.starts_with("send_")
                && params.to_string().contains("vigil-pong")
                && params.to_string().contains("10001")),
        "the reply never reached the backend: {calls_made:?}"
    );

    // kill -9: the session is gone within a second.
    bot.kill9();
    let killed_at = Instant::now();
    assert!(
        sessions_become(server.address, 0, Duration::from_secs(1)).await,
        "NoneBot's session outlived it by a second"
    );
    let took = killed_at.elapsed();

    // Restarted, it reconnects to a clean slate: the dead session was gone
    // before the new one came, so there is exactly one, and it is new.
    let mut again = Bot::nonebot(&url);
    again.expect("connected", Duration::from_secs(60));
    let second_session = session_ids(server.address).await;
    assert_eq!(second_session.len(), 1, "{second_session:?}");
    assert_ne!(second_session, first_session);
    eprintln!("NoneBot2 session removed {took:?} after kill -9");
    crate::support::shut_down(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn koishi_connects_gets_its_startup_calls_answered_and_stays_connected() {
    let server = start_host(config(), DEFAULT_POLICY, "{}").await;
    let url = format!("ws://{}/", server.address);

    // Installed (on a fresh clone, the first time) before the clock starts.
    clients_dir();
    let started = Instant::now();
    let mut bot = Bot::koishi(&url);
    // Koishi calls get_login_info and get_guild_service_profile as soon as
    // the socket opens and waits up to 60 s for each before it gives up and
    // comes online anyway: online well before that means both were
    // answered. Node loading Koishi's modules on a busy 2-core machine has
    // taken over 20 s, so the bound is the contract's, not a speed figure.
    bot.expect("online", Duration::from_secs(58));
    let online_after = started.elapsed();
    assert!(
        online_after < Duration::from_secs(50),
        "Koishi took {online_after:?} to come online"
    );
    let metrics = metrics_text(server.address).await;
    assert!(
        metric(
            &metrics,
            r#"vigil_onebot_actions_total{action="get_login_info",status="ok"}"#
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            r#"vigil_onebot_actions_total{action="other",status="failed"}"#
        ) >= 1.0,
        "get_guild_service_profile was answered 1404: {metrics}"
    );
    let session = session_ids(server.address).await;
    assert_eq!(session.len(), 1);

    // Several heartbeats later it is still the same session.
    let lines = bot.lines_within(Duration::from_millis(3_000));
    let heartbeats = lines
        .iter()
        .filter(|l| *l == "VIGIL heartbeat good=true")
        .count();
    assert!(heartbeats >= 4, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("VIGIL socket-closed")
            || l.starts_with("VIGIL offline")
            || l.starts_with("VIGIL reconnecting")),
        "{lines:?}\n{}",
        bot.log_tail()
    );
    assert_eq!(session_ids(server.address).await, session);
    eprintln!("Koishi online {online_after:?} after start");
    crate::support::shut_down(server).await;
}
