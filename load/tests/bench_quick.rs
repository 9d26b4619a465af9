//! `vigil-bench all --quick`: the whole side-by-side suite at a few hundred
//! sessions, against the real Node and Python peers, so the benchmark tool
//! cannot rot. Its figures are not judged here (CI machines vary); what is
//! checked is that every measurement ran and the servers behaved.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_quick_suite_measures_every_server() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("no temp dir: {error}"),
    };
    let json = dir.path().join("results.json");
    let output = Command::new(env!("CARGO_BIN_EXE_vigil-bench"))
        .args(["all", "--quick", "--json"])
        .arg(&json)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("cannot run vigil-bench: {error}"),
    };
    assert!(
        output.status.success(),
        "vigil-bench --quick failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = match std::fs::read_to_string(&json)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(results) => results,
        Err(error) => panic!("no results JSON: {error}"),
    };
    let servers = ["Vigil", "Node ws", "Python websockets"];
    for table in ["memory", "cpu", "detection", "fanout"] {
        let rows = results[table].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(rows, servers.len(), "{table}: {results}");
        for (row, server) in results[table].as_array().into_iter().flatten().zip(servers) {
            assert_eq!(row["server"], server, "{table}");
        }
    }
    for row in results["memory"].as_array().into_iter().flatten() {
        assert!(
            row["held_kib"].as_u64() > row["baseline_kib"].as_u64(),
            "holding sessions costs memory: {row}"
        );
    }
    for row in results["detection"].as_array().into_iter().flatten() {
        assert_eq!(row["kill_missed"], 0, "{row}");
        assert_eq!(row["stop_missed"], 0, "{row}");
        assert_eq!(row["kill"]["n"], results["scale"]["kills"], "{row}");
    }
    for row in results["fanout"].as_array().into_iter().flatten() {
        assert_eq!(row["delivered"], row["expected"], "{row}");
    }
    assert_eq!(results["churn"]["sessions_left"], 0, "{results}");
    assert_eq!(results["churn"]["report"]["failed"], 0, "{results}");
    let tables = String::from_utf8_lossy(&output.stdout);
    assert!(tables.contains("#### 1. Idle memory"), "{tables}");
}
