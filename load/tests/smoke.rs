//! The load tool's quick mode, so it cannot rot: a few hundred idle sessions
//! and a few timed kills against a real host, in seconds.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use vigil::config::VigilConfig;

/// A host started the way `vigil serve` starts one, with the default policy.
async fn start_host() -> vigil::RunningServer {
    let mut config = VigilConfig::default();
    config.sessions.tick_ms = 50;
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("cannot bind: {error}"),
    };
    match vigil::Vigil::builder(config).start(listener).await {
        Ok(server) => server,
        Err(error) => panic!("cannot start the host: {error:#}"),
    }
}

/// Runs `vigil-load` with `args` and parses the JSON line it prints.
async fn load(args: Vec<String>) -> Value {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vigil-load"))
            .args(&args)
            .output()
    })
    .await;
    let output = match output {
        Ok(Ok(output)) => output,
        other => panic!("cannot run vigil-load: {other:?}"),
    };
    assert!(
        output.status.success(),
        "vigil-load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
    {
        Some(report) => report,
        None => panic!("no JSON report in: {stdout}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_mode_opens_sessions_and_times_kills() {
    let server = start_host().await;
    let host = server.address.to_string();

    let idle = load(vec![
        "idle".into(),
        "--host".into(),
        host.clone(),
        "--sessions".into(),
        "300".into(),
        "--hold-secs".into(),
        "1".into(),
    ])
    .await;
    assert_eq!(idle["opened"], 300, "{idle}");
    assert_eq!(idle["failed"], 0, "{idle}");

    // Wait for the idle sessions to go, so kill-latency starts from zero.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.host.session_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kills = load(vec![
        "kill-latency".into(),
        "--host".into(),
        host,
        "--trials".into(),
        "5".into(),
    ])
    .await;
    assert_eq!(kills["detected"], 5, "{kills}");
    assert!(
        kills["latency_ms"]["max"]
            .as_f64()
            .is_some_and(|ms| ms < 1_000.0),
        "{kills}"
    );

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-load"))
        .args(["idle", "--host", "10.0.0.1:80", "--sessions", "1"])
        .output();
    assert!(
        matches!(refused, Ok(ref o) if !o.status.success()),
        "a non-loopback host must be refused"
    );
    let _ = server.shutdown().await;
}
