//! Cluster mode with real Redis and real Vigil processes: publish across
//! nodes exactly once, cluster-wide listing, node loss, identities across
//! nodes (a race included), and Redis killed, restarted empty and frozen.
//! Each test starts its own `redis-server` on a free loopback port in a
//! temporary directory (`scripts/ensure-redis.sh` installs it when missing).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{start_server, Server};
use crate::support::{free_port, http, wait_until, WsClient};

/// A `redis-server` of the test's own.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

fn redis_binary() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-redis.sh");
    let output = match Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(error) => panic!("cannot run {script}: {error}"),
    };
    if !output.status.success() {
        panic!(
            "the cluster tests need redis-server: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

impl Redis {
    fn start() -> Redis {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir,
            binary: redis_binary(),
        };
        redis.spawn();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server, empty: no persistence.
    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(error) => panic!("cannot start redis-server: {error}"),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill9();
    }
}

/// A node: `vigil serve` in cluster mode.
fn node(redis: &Redis, name: &str) -> (Server, SocketAddr) {
    let server = start_server(&["--redis-url", &redis.url(), "--node-id", name]);
    let address = match server.address.parse() {
        Ok(address) => address,
        Err(error) => panic!("bad address {}: {error}", server.address),
    };
    (server, address)
}

async fn health(address: SocketAddr) -> Value {
    http(address, "GET", "/healthz", None, None).await.json
}

/// Waits until `address` sees `nodes` live nodes with its broker up.
async fn cluster_formed(address: SocketAddr, nodes: usize) -> bool {
    wait_until(Duration::from_secs(15), || async {
        let health = health(address).await;
        health["status"] == "ok"
            && health["cluster"]["nodes"].as_array().map(Vec::len) == Some(nodes)
    })
    .await
    .is_some()
}

/// `POST /publish` with `body`.
async fn publish(address: SocketAddr, body: &str) -> crate::support::HttpResponse {
    http(address, "POST", "/publish", Some(body), None).await
}

async fn listing(address: SocketAddr) -> Value {
    http(address, "GET", "/sessions", None, None).await.json
}

async fn identities_listed(address: SocketAddr, identity: &str) -> usize {
    listing(address).await["sessions"]
        .as_array()
        .map(|sessions| {
            sessions
                .iter()
                .filter(|session| session["identity"] == identity)
                .count()
        })
        .unwrap_or(usize::MAX)
}

async fn sessions_listed(address: SocketAddr) -> u64 {
    listing(address).await["count"].as_u64().unwrap_or(u64::MAX)
}

/// Expects `client` to get `text`, and nothing more within a moment.
fn receives_once(client: &mut WsClient, text: &str) {
    let expected = format!("message {text}");
    assert_eq!(
        client
            .wait_for_line("message", Duration::from_secs(5))
            .as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(
        client.wait_for_line("message", Duration::from_millis(500)),
        None,
        "a second copy of {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_node_reaches_every_matching_session_on_every_node_once() {
    let redis = Redis::start();
    let (_a, a) = node(&redis, "a");
    let (_b, b) = node(&redis, "b");
    assert!(
        cluster_formed(a, 2).await && cluster_formed(b, 2).await,
        "{}",
        health(a).await
    );
    let mut alice = WsClient::connect(a, "?client_id=alice", &[]);
    let mut bob = WsClient::connect(b, "?client_id=bob", &[]);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            sessions_listed(a).await == 2
        })
        .await
        .is_some(),
        "{}",
        listing(a).await
    );

    let to_all = publish(a, r#"{"to": "all", "data": "to everyone"}"#).await;
    assert_eq!(to_all.status, 200, "{}", to_all.text);
    assert_eq!(to_all.json["delivered"], 2, "{}", to_all.text);
    assert_eq!(to_all.json["nodes"], 2, "{}", to_all.text);
    assert_eq!(
        to_all.json["unreachable"],
        serde_json::json!([]),
        "{}",
        to_all.text
    );
    receives_once(&mut alice, "to everyone");
    receives_once(&mut bob, "to everyone");

    let to_bob = publish(a, r#"{"to": {"identity": "bob"}, "data": "for bob"}"#).await;
    assert_eq!(to_bob.json["delivered"], 1, "{}", to_bob.text);
    receives_once(&mut bob, "for bob");
    assert_eq!(
        alice.wait_for_line("message", Duration::from_millis(300)),
        None
    );

    // By cluster id, from the listing (each session names its node).
    let sessions = listing(a).await;
    let bob_id = sessions["sessions"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["identity"] == "bob"))
        .map(|s| s["id"].clone());
    let Some(bob_id) = bob_id else {
        panic!("bob is not listed: {sessions}")
    };
    assert!(
        bob_id.as_str().is_some_and(|id| id.starts_with("b:")),
        "{bob_id}"
    );
    let body = serde_json::json!({"to": [bob_id], "data": "by id"}).to_string();
    let by_id = publish(a, &body).await;
    assert_eq!(by_id.json["delivered"], 1, "{}", by_id.text);
    receives_once(&mut bob, "by id");

    // One session, and its eviction, from the other node.
    let id = bob_id.as_str().unwrap_or_default();
    let got = http(a, "GET", &format!("/sessions/{id}"), None, None).await;
    assert_eq!(got.json["node"], "b", "{}", got.text);
    let evicted = http(a, "DELETE", &format!("/sessions/{id}"), None, None).await;
    assert_eq!(evicted.status, 200, "{}", evicted.text);
    assert!(bob
        .wait_for_line("closed", Duration::from_secs(5))
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_the_cluster_within_10_s_and_its_identity_is_reclaimable() {
    let redis = Redis::start();
    let (_a, a) = node(&redis, "a");
    let (mut b_server, b) = node(&redis, "b");
    assert!(cluster_formed(a, 2).await);
    let _carol = WsClient::connect(b, "?client_id=carol", &[]);
    assert!(wait_until(Duration::from_secs(5), || async {
        sessions_listed(a).await == 1
    })
    .await
    .is_some());

    let _ = b_server.child.kill();
    let _ = b_server.child.wait();
    let killed = Instant::now();
    let gone = wait_until(Duration::from_secs(10), || async {
        let listed = listing(a).await;
        listed["count"] == 0 && listed["unreachable"] == serde_json::json!([])
    })
    .await;
    assert!(
        gone.is_some(),
        "the dead node's sessions are still listed: {}",
        listing(a).await
    );
    eprintln!("a killed node left the cluster in {:?}", killed.elapsed());
    // carol reconnects to the survivor: hers again.
    let _carol_again = WsClient::connect(a, "?client_id=carol", &[]);
    assert!(wait_until(Duration::from_secs(5), || async {
        identities_listed(a, "carol").await == 1
    })
    .await
    .is_some());
    let to_carol = publish(a, r#"{"to": {"identity": "carol"}, "data": "back"}"#).await;
    assert_eq!(to_carol.json["delivered"], 1, "{}", to_carol.text);
}

/// Opens a session for `identity` on `address`; the socket, once upgraded.
async fn open(
    address: SocketAddr,
    identity: &str,
) -> Option<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    tokio_tungstenite::connect_async(format!("ws://{address}/ws?client_id={identity}"))
        .await
        .ok()
        .map(|(socket, _)| socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_moving_to_another_node_supersedes_its_old_session_even_in_a_race() {
    let redis = Redis::start();
    let (_a, a) = node(&redis, "a");
    let (_b, b) = node(&redis, "b");
    assert!(cluster_formed(a, 2).await && cluster_formed(b, 2).await);

    let mut first = WsClient::connect(a, "?client_id=dave", &[]);
    assert!(wait_until(Duration::from_secs(5), || async {
        identities_listed(a, "dave").await == 1
    })
    .await
    .is_some());
    let _second = WsClient::connect(b, "?client_id=dave", &[]);
    assert_eq!(
        first
            .wait_for_line("closed", Duration::from_secs(5))
            .as_deref(),
        Some("closed 1000 superseded")
    );

    // Fifty races: the same identity connects to both nodes at once.
    for round in 0..50 {
        let identity = format!("racer-{round}");
        let (on_a, on_b) = tokio::join!(open(a, &identity), open(b, &identity));
        let mut sockets: Vec<_> = [on_a, on_b].into_iter().flatten().collect();
        let settled = wait_until(Duration::from_secs(5), || async {
            identities_listed(a, &identity).await == 1
        })
        .await;
        assert!(settled.is_some(), "round {round}: {}", listing(a).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            identities_listed(b, &identity).await,
            1,
            "round {round}: no late eviction of the winner"
        );
        // Exactly one socket stays open.
        let mut open_sockets = 0;
        for socket in &mut sockets {
            let next = tokio::time::timeout(Duration::from_millis(50), socket.next()).await;
            if !matches!(
                next,
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_)))
            ) {
                open_sockets += 1;
            }
        }
        assert_eq!(open_sockets, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_local_sessions_are_served_and_publish_says_what_it_missed_then_all_recovers(
) {
    let mut redis = Redis::start();
    let (_a, a) = node(&redis, "a");
    let (_b, b) = node(&redis, "b");
    assert!(cluster_formed(a, 2).await && cluster_formed(b, 2).await);
    let mut on_a = WsClient::connect(a, "?client_id=erin", &[]);
    let mut on_b = WsClient::connect(b, "?client_id=frank", &[]);
    assert!(wait_until(Duration::from_secs(5), || async {
        sessions_listed(a).await == 2
    })
    .await
    .is_some());

    redis.kill9();
    let degraded = wait_until(Duration::from_secs(6), || async {
        health(a).await["status"] == "degraded"
    })
    .await;
    assert!(degraded.is_some(), "{}", health(a).await);
    let published = publish(a, r#"{"to": "all", "data": "local only"}"#).await;
    assert_eq!(published.status, 502, "{}", published.text);
    assert_eq!(published.json["delivered"], 1, "{}", published.text);
    assert!(published.json["error"].is_string(), "{}", published.text);
    assert!(
        published.json["unreachable"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|n| n == "b")),
        "{}",
        published.text
    );
    receives_once(&mut on_a, "local only");
    // Liveness is local: a killed client is still removed at once.
    let mut doomed = WsClient::connect(a, "", &[]);
    doomed.kill9();
    let local_count = || async {
        http(a, "GET", "/metrics", None, None)
            .await
            .text
            .lines()
            .any(|line| line == "vigil_sessions_active 1")
    };
    assert!(wait_until(Duration::from_secs(3), local_count)
        .await
        .is_some());

    // Redis back, empty: within the bound, cross-node publish and the
    // listing are whole again.
    let restarted = Instant::now();
    redis.spawn();
    let whole = wait_until(Duration::from_secs(10), || async {
        let listed = listing(a).await;
        health(a).await["status"] == "ok"
            && listed["count"] == 2
            && listed["unreachable"] == serde_json::json!([])
    })
    .await;
    assert!(
        whole.is_some(),
        "{} / {}",
        health(a).await,
        listing(a).await
    );
    eprintln!(
        "the cluster was whole {:?} after Redis restarted empty",
        restarted.elapsed()
    );
    let to_frank = publish(a, r#"{"to": {"identity": "frank"}, "data": "after"}"#).await;
    assert_eq!(to_frank.status, 200, "{}", to_frank.text);
    assert_eq!(to_frank.json["delivered"], 1, "{}", to_frank.text);
    receives_once(&mut on_b, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_noticed_by_the_probe_and_sigcont_recovers() {
    let redis = Redis::start();
    let (_a, a) = node(&redis, "a");
    assert!(cluster_formed(a, 1).await);
    redis.signal("STOP");
    let noticed = wait_until(Duration::from_secs(8), || async {
        health(a).await["status"] == "degraded"
    })
    .await;
    redis.signal("CONT");
    assert!(
        noticed.is_some(),
        "a frozen Redis went unnoticed: {}",
        health(a).await
    );
    let recovered = wait_until(Duration::from_secs(10), || async {
        health(a).await["status"] == "ok"
    })
    .await;
    assert!(recovered.is_some(), "{}", health(a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_declared_dead_and_rejoins_without_double_counting() {
    let redis = Redis::start();
    let (_a, a) = node(&redis, "a");
    let (b_server, b) = node(&redis, "b");
    assert!(cluster_formed(a, 2).await && cluster_formed(b, 2).await);
    let _gina = WsClient::connect(b, "?client_id=gina", &[]);
    let _hal = WsClient::connect(a, "?client_id=hal", &[]);
    assert!(wait_until(Duration::from_secs(5), || async {
        sessions_listed(a).await == 2
    })
    .await
    .is_some());

    let pid = b_server.child.id().to_string();
    let signal = |name: &str| {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(&pid)
            .status();
    };
    signal("STOP");
    let dead = wait_until(Duration::from_secs(10), || async {
        health(a).await["cluster"]["nodes"] == serde_json::json!(["a"])
    })
    .await;
    signal("CONT");
    assert!(
        dead.is_some(),
        "a frozen node was not declared dead: {}",
        health(a).await
    );
    // Back: it heartbeats again and its session is listed once.
    assert!(cluster_formed(a, 2).await, "{}", health(a).await);
    let rejoined = wait_until(Duration::from_secs(10), || async {
        let listed = listing(a).await;
        listed["count"] == 2 && identities_listed(a, "gina").await == 1
    })
    .await;
    assert!(rejoined.is_some(), "{}", listing(a).await);
    let to_gina = publish(a, r#"{"to": {"identity": "gina"}, "data": "welcome back"}"#).await;
    assert_eq!(to_gina.json["delivered"], 1, "{}", to_gina.text);
}

/// A node whose configuration file is `toml`; the directory holding it
/// lives as long as the node is needed.
fn node_with_config(
    redis: &Redis,
    name: &str,
    toml: &str,
    extra: &[&str],
) -> (Server, SocketAddr, tempfile::TempDir) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let path = dir.path().join("vigil.toml");
    if let Err(error) = std::fs::write(&path, toml) {
        panic!("cannot write {}: {error}", path.display());
    }
    let Some(path) = path.to_str() else {
        panic!("a temporary path that is not UTF-8")
    };
    let url = redis.url();
    let mut args = vec!["--config", path, "--redis-url", &url, "--node-id", name];
    args.extend(extra);
    let server = start_server(&args);
    let address = match server.address.parse() {
        Ok(address) => address,
        Err(error) => panic!("bad address {}: {error}", server.address),
    };
    (server, address, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onebot_events_published_on_one_node_reach_bots_on_every_node_and_heartbeats_stay_local() {
    use crate::onebot::{connect, SELF_ID, TOKEN};
    let redis = Redis::start();
    let self_id = SELF_ID.to_string();
    let onebot = [
        "--onebot-self-id",
        self_id.as_str(),
        "--onebot-heartbeat-ms",
        "200",
        "--onebot-access-token",
        TOKEN,
    ];
    let (_a, a, _dir_a) = node_with_config(&redis, "a", "", &onebot);
    let (_b, b, _dir_b) = node_with_config(&redis, "b", "", &onebot);
    assert!(cluster_formed(a, 2).await && cluster_formed(b, 2).await);
    let connected = Instant::now();
    let mut bots = [connect(a, "/").await, connect(b, "/").await];
    for bot in &mut bots {
        let first = bot.next_json(Duration::from_secs(2)).await;
        assert_eq!(
            first.as_ref().map(|event| &event["meta_event_type"]),
            Some(&Value::from("lifecycle")),
            "{first:?}"
        );
    }
    assert!(wait_until(Duration::from_secs(5), || async {
        sessions_listed(a).await == 2
    })
    .await
    .is_some());

    let event = r#"{"to": {"class": "onebot"}, "data": {"post_type": "notice", "notice_type": "cluster", "n": 1}}"#;
    let published = publish(a, event).await;
    assert_eq!(published.status, 200, "{}", published.text);
    assert_eq!(published.json["delivered"], 2, "{}", published.text);
    assert_eq!(published.json["nodes"], 2, "{}", published.text);
    // Everything each bot was sent since it connected (the socket kept what
    // was not read yet), read from both at once.
    let [bot_a, bot_b] = &mut bots;
    let (events_a, events_b) = tokio::join!(
        bot_a.events_within(Duration::from_millis(1_000)),
        bot_b.events_within(Duration::from_millis(1_000))
    );
    let seconds = connected.elapsed().as_secs_f64();
    for (events, node) in [(events_a, "a"), (events_b, "b")] {
        let notices: Vec<&Value> = events
            .iter()
            .filter(|event| event["post_type"] == "notice")
            .collect();
        assert_eq!(notices.len(), 1, "on node {node}, exactly once: {events:?}");
        assert_eq!(notices[0]["notice_type"], "cluster");
        assert_eq!(
            notices[0]["self_id"], SELF_ID,
            "completed as OneBot requires"
        );
        assert!(notices[0]["time"].is_i64(), "{}", notices[0]);
        // Heartbeats come from the bot's own node only: five a second at
        // 200 ms, not ten.
        let beats = events
            .iter()
            .filter(|event| event["meta_event_type"] == "heartbeat")
            .count();
        let per_second = beats as f64 / seconds;
        assert!(
            (2.5..=7.0).contains(&per_second),
            "on node {node}: {beats} heartbeats in {seconds:.1} s at a 200 ms interval"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_proven_on_one_node_cannot_be_taken_by_an_unproven_claim_on_another() {
    use crate::security::{token_for, ws_connect, CLIENT_TOKEN, JWT_SECRET};
    let redis = Redis::start();
    let config = format!(
        "[server]\naccess_token = \"{CLIENT_TOKEN}\"\n[auth]\njwt_secret = \"{JWT_SECRET}\"\nallow_anonymous_identity = true\n"
    );
    let (_a, a, _dir_a) = node_with_config(&redis, "a", &config, &[]);
    let (_b, b, _dir_b) = node_with_config(&redis, "b", &config, &[]);
    assert!(cluster_formed(a, 2).await && cluster_formed(b, 2).await);

    let victim = ws_connect(a, "", Some(&token_for("alice"))).await;
    let Ok(mut victim) = victim else {
        panic!(
            "the proven client was refused: {victim:?}",
            victim = victim.err()
        )
    };
    assert!(wait_until(Duration::from_secs(5), || async {
        identities_listed(b, "alice").await == 1
    })
    .await
    .is_some());
    for round in 0..5 {
        let claimed = ws_connect(b, "?client_id=alice", Some(CLIENT_TOKEN)).await;
        assert_eq!(
            claimed.err(),
            Some(409),
            "round {round}: an unproven claim on b"
        );
    }
    let still_open = tokio::time::timeout(Duration::from_millis(300), victim.next()).await;
    assert!(
        still_open.is_err(),
        "the proven session was touched: {still_open:?}"
    );
    assert_eq!(identities_listed(a, "alice").await, 1);

    // A proven reconnect on the other node still supersedes it.
    let moved = ws_connect(b, "", Some(&token_for("alice"))).await;
    assert!(moved.is_ok(), "a proven reconnect on b: {:?}", moved.err());
    let closed = tokio::time::timeout(Duration::from_secs(5), victim.next()).await;
    assert!(
        matches!(closed, Ok(Some(Ok(Message::Close(Some(ref frame))))) if frame.reason == "superseded"),
        "{closed:?}"
    );

    // Races: a proven and an unproven claim at once, on two nodes. The
    // proven one is the session left, whichever lands first.
    for round in 0..20 {
        let identity = format!("contested-{round}");
        let token = token_for(&identity);
        let query = format!("?client_id={identity}");
        let (proven, claimed) = tokio::join!(
            ws_connect(a, "", Some(&token)),
            ws_connect(b, &query, Some(CLIENT_TOKEN))
        );
        let Ok(mut proven) = proven else {
            panic!(
                "round {round}: the proven claim was refused: {:?}",
                proven.err()
            )
        };
        let mut claimed = claimed.ok();
        let settled = wait_until(Duration::from_secs(5), || async {
            identities_listed(b, &identity).await == 1 && identities_listed(a, &identity).await == 1
        })
        .await;
        assert!(settled.is_some(), "round {round}: {}", listing(a).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let proven_next = tokio::time::timeout(Duration::from_millis(50), proven.next()).await;
        assert!(
            proven_next.is_err(),
            "round {round}: the proven session closed: {proven_next:?}"
        );
        if let Some(claimed) = &mut claimed {
            let next = tokio::time::timeout(Duration::from_secs(2), claimed.next()).await;
            assert!(
                matches!(
                    next,
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_)))
                ),
                "round {round}: the unproven session stayed open: {next:?}"
            );
        }
        let holder = listing(a).await["sessions"].as_array().and_then(|all| {
            all.iter()
                .find(|s| s["identity"] == identity.as_str())
                .cloned()
        });
        assert_eq!(
            holder.as_ref().map(|s| s["node"].clone()),
            Some(Value::from("a")),
            "round {round}: {holder:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_growth_alarm_sees_the_whole_cluster() {
    let redis = Redis::start();
    // Sessions piling up on b alone: a, holding none, raises the cluster
    // alarm from b's heartbeat, and its own alarm stays off.
    let config = "[monitor]\nwindow_ms = 2000\ngrowth_threshold = 5\n";
    let (_a, a, _dir_a) = node_with_config(&redis, "a", config, &[]);
    let (_b, b, _dir_b) = node_with_config(&redis, "b", config, &[]);
    assert!(cluster_formed(a, 2).await && cluster_formed(b, 2).await);
    let metrics = |address| async move { http(address, "GET", "/metrics", None, None).await.text };
    let before = metrics(a).await;
    assert_eq!(
        crate::support::metric(&before, "vigil_cluster_suspect_session_growth"),
        0.0
    );
    let mut idle = Vec::new();
    let mut raised = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if let Ok((socket, _)) = tokio_tungstenite::connect_async(format!("ws://{b}/ws")).await {
            idle.push(socket);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let text = metrics(a).await;
        if crate::support::metric(&text, "vigil_cluster_suspect_session_growth") == 1.0 {
            raised = Some(text);
            break;
        }
    }
    let Some(text) = raised else {
        panic!(
            "no cluster alarm on a after {} idle sessions on b:\n{}",
            idle.len(),
            metrics(a).await
        )
    };
    assert_eq!(
        crate::support::metric(&text, "vigil_suspect_session_growth"),
        0.0
    );
    assert!(crate::support::metric(&text, "vigil_cluster_sessions") >= 5.0);
    assert_eq!(crate::support::metric(&text, "vigil_sessions_active"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_of_one_node_breaks_the_cluster_down_by_node() {
    let redis = Redis::start();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin_listen = admin.to_string();
    let node_a = start_server(&[
        "--redis-url",
        &redis.url(),
        "--node-id",
        "a",
        "--admin-listen",
        &admin_listen,
        "--admin-token",
        crate::support::ADMIN_TOKEN,
    ]);
    let a: SocketAddr = match node_a.address.parse() {
        Ok(address) => address,
        Err(error) => panic!("bad address {}: {error}", node_a.address),
    };
    let (_b, b) = node(&redis, "b");
    assert!(cluster_formed(a, 2).await, "{}", health(a).await);
    let _on_a: Vec<WsClient> = (0..2)
        .map(|n| WsClient::connect(a, &format!("?client_id=a-{n}"), &[]))
        .collect();
    let _on_b = WsClient::connect(b, "?client_id=b-0", &[]);
    let wanted = serde_json::json!([{"node": "a", "sessions": 2}, {"node": "b", "sessions": 1}]);
    let frame = crate::dashboard::frame_where(admin, Duration::from_secs(15), |frame| {
        frame["nodes"] == wanted
    })
    .await;
    assert!(
        frame.is_some(),
        "node a's dashboard never showed {wanted}; last health: {}",
        health(a).await
    );
}
