//! Record and replay: the admin API records the active policy's calls
//! while 200 real sessions come and go (some frozen, some killed), and
//! `vigil policy replay` runs candidates over the trace. The policy that
//! recorded it disagrees with itself nowhere; the strict policy disagrees
//! where it should; broken trace files get errors that say what is wrong.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use vigil_tests::{test_plugins, DEFAULT_POLICY, DEFAULT_POLICY_PATH};

use crate::cli::{run, text, vigil};
use crate::support::{
    admin_address, admin_config, http, sessions_become, shut_down, start_host, upload,
    HttpResponse, WsClient, ADMIN_TOKEN,
};

/// One admin request, with the admin token.
async fn admin_call(admin: SocketAddr, method: &str, path: &str) -> HttpResponse {
    http(admin, method, path, None, Some(ADMIN_TOKEN)).await
}

/// Runs `vigil policy replay TRACE PLUGIN --format json` and parses it.
fn replay_json(trace: &std::path::Path, plugin: &str) -> Value {
    let output = run(vigil()
        .args(["policy", "replay"])
        .arg(trace)
        .arg(plugin)
        .args(["--format", "json", "--samples", "1000"]));
    assert!(
        output.status.success(),
        "replay through {plugin} failed: {}",
        text(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout) {
        Ok(report) => report,
        Err(error) => panic!("replay printed no JSON ({error}): {}", text(&output.stdout)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_of_200_sessions_replays_with_no_disagreement_and_strict_differs_where_expected() {
    let server = start_host(admin_config(), DEFAULT_POLICY, "{}").await;
    let address = server.address;
    let admin = admin_address(&server);

    // Bad caps are refused; then the recording starts before any client.
    let refused = admin_call(admin, "POST", "/admin/policy/recording?max_seconds=0").await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    let started = admin_call(
        admin,
        "POST",
        "/admin/policy/recording?max_seconds=120&max_bytes=67108864",
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text);
    assert_eq!(started.json["state"], "recording");
    let again = admin_call(admin, "POST", "/admin/policy/recording").await;
    assert_eq!(again.status, 409, "one recording at a time: {}", again.text);
    let early = admin_call(admin, "GET", "/admin/policy/recording/trace").await;
    assert_eq!(
        early.status, 409,
        "no trace while recording: {}",
        early.text
    );

    // 190 sessions that read (and so answer pings), 5 frozen processes
    // and 5 killed ones.
    let mut readers = Vec::new();
    for _ in 0..190 {
        let (socket, _) = match tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await
        {
            Ok(connected) => connected,
            Err(error) => panic!("cannot connect: {error}"),
        };
        readers.push(tokio::spawn(async move {
            let mut socket = socket;
            while let Some(Ok(_)) = socket.next().await {}
        }));
    }
    let mut frozen: Vec<WsClient> = (0..5)
        .map(|_| WsClient::connect(address, "", &[]))
        .collect();
    let mut killed: Vec<WsClient> = (0..5)
        .map(|_| WsClient::connect(address, "", &[]))
        .collect();
    assert!(sessions_become(address, 200, Duration::from_secs(10)).await);
    for _ in 0..5 {
        let body = r#"{"to": "all", "data": "news"}"#;
        assert_eq!(
            http(address, "POST", "/publish", Some(body), None)
                .await
                .status,
            200
        );
    }
    for client in &frozen {
        client.signal("STOP");
    }
    for client in &mut killed {
        client.kill9();
    }
    // The killed go at once, the frozen at their pong timeout.
    assert!(
        sessions_become(address, 190, Duration::from_secs(10)).await,
        "the frozen and killed sessions were not all removed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stopped = admin_call(admin, "DELETE", "/admin/policy/recording").await;
    assert_eq!(stopped.json["state"], "finished", "{}", stopped.text);
    assert_eq!(stopped.json["end_reason"], "stopped");
    assert!(
        stopped.json["records"].as_u64().unwrap_or(0) > 10,
        "{}",
        stopped.text
    );
    let download = admin_call(admin, "GET", "/admin/policy/recording/trace").await;
    assert_eq!(download.status, 200);
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let trace = dir.path().join("night.jsonl.gz");
    if let Err(error) = std::fs::write(&trace, &download.body) {
        panic!("{error}");
    }

    // A second recording ends by itself when the policy changes.
    let second = admin_call(admin, "POST", "/admin/policy/recording").await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(
        upload(admin, "/admin/policy", test_plugins::NOOP, "{}")
            .await
            .status,
        200
    );
    let ended = crate::support::wait_until(Duration::from_secs(3), || async {
        let status = admin_call(admin, "GET", "/admin/policy/recording").await;
        status.json["end_reason"] == "policy-changed"
    })
    .await;
    assert!(ended.is_some(), "a swap did not end the recording");
    for client in &frozen {
        client.signal("CONT");
    }
    frozen.clear();
    for reader in readers {
        reader.abort();
    }
    shut_down(server).await;

    // The same policy: deterministic, so no disagreement at all.
    let same = replay_json(&trace, DEFAULT_POLICY_PATH);
    assert_eq!(same["disagreements"], 0, "{same:#}");
    assert!(
        same["sessions_compared"].as_u64().unwrap_or(0) >= 200,
        "{same:#}"
    );
    assert!(
        same["calls"]["on-events"].as_u64().unwrap_or(0) > 0,
        "{same:#}"
    );
    assert!(same["calls_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(same["trace_end"], "stopped");
    eprintln!(
        "replayed {} calls at {:.0} calls/s",
        same["calls"], same["calls_per_second"]
    );

    // Strict: a missed pong is `missed-pong` where the default says
    // `pong-timeout` (same close code), health falls faster, and it asks
    // to be called back on its own schedule.
    let strict = replay_json(&trace, test_plugins::STRICT_PATH);
    let by_kind = &strict["by_kind"];
    assert!(
        by_kind["reason"].as_u64().unwrap_or(0) >= 5,
        "each frozen session's eviction differs in its reason: {strict:#}"
    );
    assert!(by_kind.get("close-code").is_none(), "{strict:#}");
    assert!(by_kind["reassess"].as_u64().unwrap_or(0) > 0, "{strict:#}");
    let samples = strict["samples"].as_array().cloned().unwrap_or_default();
    assert!(!samples.is_empty(), "{strict:#}");
    let reason_sample = samples.iter().find(|sample| {
        sample["differences"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "reason"))
    });
    match reason_sample {
        Some(sample) => {
            assert_eq!(
                sample["recorded"]["action"]["evict"]["reason"],
                "pong-timeout"
            );
            assert_eq!(
                sample["candidate"]["action"]["evict"]["reason"],
                "missed-pong"
            );
            assert_eq!(sample["facts"]["pong_overdue"], true, "{sample:#}");
        }
        None => panic!("no sample shows the reason difference: {strict:#}"),
    }

    // The text report names the counts.
    let output = run(vigil()
        .args(["policy", "replay"])
        .arg(&trace)
        .arg(test_plugins::STRICT_PATH));
    let report = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(report.contains("calls/s"), "{report}");
    assert!(report.contains("reason "), "{report}");
}

#[test]
fn broken_trace_files_get_errors_that_say_what_is_wrong() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        if let Err(error) = std::fs::write(&path, bytes) {
            panic!("{error}");
        }
        path
    };
    let replay = |path: &std::path::Path, extra: &[&str]| {
        run(vigil()
            .args(["policy", "replay"])
            .arg(path)
            .arg(DEFAULT_POLICY_PATH)
            .args(extra))
    };
    let gzip = |text: &str| {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = encoder.write_all(text.as_bytes());
        encoder.finish().unwrap_or_default()
    };
    let header = r#"{"vigil_trace":1,"vigil_version":"0.1.0","started_unix_ms":1,"policy":{"name":"p","sha256":"00","config_json":"{}"},"sessions_at_start":0,"host_config":{},"max_duration_ms":1000,"max_bytes":4096}"#;
    let assess = r#"{"call":"assess","now_ms":5,"sessions":[],"verdicts":[],"source":"plugin"}"#;
    let end = r#"{"call":"end","reason":"stopped","records":1}"#;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "plain.json",
            header.as_bytes().to_vec(),
            "not gzip-compressed",
        ),
        ("empty.gz", gzip(""), "not a Vigil trace"),
        ("other.gz", gzip("{\"hello\": 1}\n"), "not a Vigil trace"),
        (
            "future.gz",
            gzip("{\"vigil_trace\": 7}\n"),
            "version 7 is not supported",
        ),
        (
            "bad-line.gz",
            gzip(&format!(
                "{header}\n{{\"call\":\"assess\",\"now_ms\":\"soon\"}}\n{end}\n"
            )),
            "line 2 of the trace is not a valid record",
        ),
        (
            "no-end.gz",
            gzip(&format!("{header}\n{assess}\n")),
            "truncated after 1 records",
        ),
    ];
    for (name, bytes, expected) in cases {
        let output = replay(&write(name, &bytes), &[]);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{name} was accepted");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    // Cut in the middle of its compressed data: an error, unless the
    // operator asks for what is intact.
    let whole = gzip(&format!("{header}\n{assess}\n{assess}\n{end}\n"));
    let cut = write("cut.gz", &whole[..whole.len() - 20]);
    let output = replay(&cut, &[]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("truncated"),
        "{}",
        text(&output.stderr)
    );
    let output = replay(&cut, &["--partial"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("truncated"),
        "{}",
        text(&output.stdout)
    );
    let missing = replay(&dir.path().join("missing.gz"), &[]);
    assert!(text(&missing.stderr).contains("cannot read the trace"));
}
