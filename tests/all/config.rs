//! `vigil.toml`: the example file stays valid, and mistakes are named.

use std::path::Path;

use vigil::config::VigilConfig;
use vigil::policy::{SandboxLimits, SupervisorConfig};

fn example_path() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../vigil.example.toml"
    ))
}

#[test]
fn the_example_config_parses_to_the_documented_defaults() {
    let config = match VigilConfig::from_file(example_path()) {
        Ok(config) => config,
        Err(error) => panic!("vigil.example.toml is invalid: {error:#}"),
    };
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.policy.limits, SandboxLimits::default());
    assert_eq!(config.policy.faults, SupervisorConfig::default());
    assert!(config.policy.path.is_none());
    let defaults = VigilConfig::default();
    assert_eq!(config.tiers, defaults.tiers);
    assert_eq!(
        config.sessions.queue_max_bytes,
        defaults.sessions.queue_max_bytes
    );
    assert_eq!(config.sessions.tick_ms, defaults.sessions.tick_ms);
    assert_eq!(
        config.server.read_buffer_bytes,
        defaults.server.read_buffer_bytes
    );
    assert!(!config.onebot.enabled, "the OneBot profile is opt-in");
    assert_eq!(
        config.onebot.heartbeat_interval_ms,
        defaults.onebot.heartbeat_interval_ms
    );
    assert_eq!(config.onebot.ws_ping, defaults.onebot.ws_ping);
}

fn parse(text: &str) -> anyhow::Result<VigilConfig> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vigil.toml");
    std::fs::write(&path, text)?;
    VigilConfig::from_file(&path)
}

#[test]
fn inline_policy_config_reaches_the_plugin_as_json() {
    let config = match parse("[policy]\nconfig = { idle_evict_ms = 0, classes = { onebot = { send_failures_to_evict = 1 } } }\n") {
        Ok(config) => config,
        Err(error) => panic!("{error:#}"),
    };
    let json = match config.policy.plugin_config_json() {
        Ok(json) => json,
        Err(error) => panic!("{error:#}"),
    };
    let value: serde_json::Value = match serde_json::from_str(&json) {
        Ok(value) => value,
        Err(error) => panic!("not JSON: {error}"),
    };
    assert_eq!(value["idle_evict_ms"], 0);
    assert_eq!(value["classes"]["onebot"]["send_failures_to_evict"], 1);
}

#[test]
fn config_mistakes_are_named() {
    for (text, expected) in [
        ("[polcy]\n", "polcy"),
        (
            "[policy.limits]\ncall_deadline_ms = 0\n",
            "deadlines must be above 0",
        ),
        ("[policy.limits]\nmemory_bytes = 4096\n", "memory_bytes"),
        (
            "[policy]\nconfig = {}\nconfig_file = \"x.json\"\n",
            "both `config` and `config_file`",
        ),
        ("[server]\nlisten = \"nowhere\"\n", "listen"),
        ("[onebot]\nenabled = true\n", "self_id is required"),
        (
            "[onebot]\nenabled = true\nself_id = 1\nheartbeat_interval_ms = 30000\n",
            "under 30 s",
        ),
        (
            "[onebot]\nenabled = true\nself_id = 1\naction_upstream = \"http://10.1.2.3:5700\"\n",
            "loopback",
        ),
        (
            "[onebot]\nenabled = true\nself_id = 1\naction_upstream = \"https://127.0.0.1\"\n",
            "http://",
        ),
        ("[onebot]\nself_id = \"bot\"\n", "self_id"),
    ] {
        match parse(text) {
            Ok(_) => panic!("{text:?} should be refused"),
            Err(error) => {
                let message = format!("{error:#}");
                assert!(message.contains(expected), "{text:?}: {message}");
            }
        }
    }
}
