//! The default policy's JSON configuration: every threshold, with documented
//! defaults, and per-client-class overrides.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use vigil_policy_sdk::Tier;

/// Thresholds for one client class. Every field has a default; a JSON config
/// names only what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Sessions younger than this are watched in the `fast` tier. Default 10 000 ms.
    pub new_session_ms: u64,
    /// Health below this puts a session in the `fast` tier. Default 60.
    pub fast_below_health: u8,
    /// Health below this sends a probe (ping) at once when none is in flight.
    /// Default 40.
    pub probe_below_health: u8,
    /// Application silence after which a session that still answers pings
    /// moves to `keep-alive`. Default 120 000 ms (2 min).
    pub keep_alive_after_ms: u64,
    /// Application silence after which a `keep-alive` session is evicted as
    /// idle; 0 never evicts for silence. Default 600 000 ms (10 min).
    pub idle_evict_ms: u64,
    /// Inbound silence of any kind — the client's own pings and actions
    /// included — after which a session is evicted; 0 never. For endpoints
    /// the host does not ping (OneBot with `ws_ping = false`) this is how a
    /// client that pings the server, as NoneBot2's websockets driver does
    /// every 20 s, is found frozen. Default 0.
    pub silent_evict_ms: u64,
    /// Evict when the pong is overdue and at least this many pings are
    /// unanswered. Default 1: the first overdue pong evicts.
    pub overdue_pings_to_evict: u32,
    /// Failed writes that evict a session; 0 never evicts for them. Default 3.
    /// Vigil itself ends a session at its first failed write, before any
    /// policy call, so with Vigil this rule never fires (its `send-errors`
    /// are 0 for live sessions, see the WIT); it is for hosts whose
    /// transports report write failures that leave the session open.
    pub send_failures_to_evict: u32,
    /// Messages dropped at the queue's hard limit that evict a session; 0
    /// keeps slow consumers that overflow. Default 1.
    pub dropped_frames_to_evict: u32,
    /// How long the outbound queue may stay above the soft mark before the
    /// session is evicted as a slow consumer. Default 10 000 ms.
    pub backlog_evict_ms: u64,
    /// A round trip slower than this costs health (and so, usually, the
    /// `fast` tier). Default 1 000 ms.
    pub slow_rtt_ms: u32,
    /// Re-assess `fast` sessions at least this often. Default 1 000 ms.
    pub reassess_fast_ms: u32,
    /// Re-assess `regular` sessions at least this often, while they are not
    /// steady (see `reassess_steady_ms`). Default 5 000 ms.
    pub reassess_regular_ms: u32,
    /// Re-assess `keep-alive` sessions at least this often. Default 30 000 ms.
    pub reassess_keep_alive_ms: u32,
    /// The longest a steady session waits for its next assessment: a
    /// `regular` session kept with no ping in flight, no backlog and no
    /// silence penalty, whose verdict can change only with the clock (the
    /// policy comes back exactly when a threshold falls due) or with what
    /// the host reports anyway (each heartbeat's answer, an overdue pong,
    /// backpressure). Used instead of `reassess_regular_ms` for such
    /// sessions; 0 turns this off (every session on its tier's interval).
    /// Default 60 000 ms.
    pub reassess_steady_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            new_session_ms: 10_000,
            fast_below_health: 60,
            probe_below_health: 40,
            keep_alive_after_ms: 120_000,
            idle_evict_ms: 600_000,
            silent_evict_ms: 0,
            overdue_pings_to_evict: 1,
            send_failures_to_evict: 3,
            dropped_frames_to_evict: 1,
            backlog_evict_ms: 10_000,
            slow_rtt_ms: 1_000,
            reassess_fast_ms: 1_000,
            reassess_regular_ms: 5_000,
            reassess_keep_alive_ms: 30_000,
            reassess_steady_ms: 60_000,
        }
    }
}

impl Settings {
    /// The longest the host should wait before assessing a session in `tier`.
    pub fn reassess_ms(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Fast => self.reassess_fast_ms,
            Tier::Regular => self.reassess_regular_ms,
            Tier::KeepAlive => self.reassess_keep_alive_ms,
        }
    }

    fn validate(&self, scope: &str) -> Result<(), ConfigError> {
        let invalid = |setting: &str, why: &str| ConfigError::Invalid {
            scope: scope.to_owned(),
            setting: setting.to_owned(),
            why: why.to_owned(),
        };
        if self.fast_below_health > 100 {
            return Err(invalid("fast_below_health", "health is 0..=100"));
        }
        if self.probe_below_health > 100 {
            return Err(invalid("probe_below_health", "health is 0..=100"));
        }
        if self.overdue_pings_to_evict == 0 {
            return Err(invalid(
                "overdue_pings_to_evict",
                "must be at least 1 (an overdue pong implies one unanswered ping)",
            ));
        }
        if self.backlog_evict_ms == 0 {
            return Err(invalid(
                "backlog_evict_ms",
                "must be above 0, or every brief burst would evict",
            ));
        }
        for (setting, value) in [
            ("reassess_fast_ms", self.reassess_fast_ms),
            ("reassess_regular_ms", self.reassess_regular_ms),
            ("reassess_keep_alive_ms", self.reassess_keep_alive_ms),
        ] {
            if value == 0 {
                return Err(invalid(setting, "must be above 0"));
            }
        }
        if self.idle_evict_ms != 0 && self.idle_evict_ms < self.keep_alive_after_ms {
            return Err(invalid(
                "idle_evict_ms",
                "must be 0 (never) or at least keep_alive_after_ms, since only keep-alive sessions are evicted as idle",
            ));
        }
        Ok(())
    }
}

/// Built-in class presets: named bundles of settings a class takes with
/// `"preset": "<name>"`, under its own overrides. A class named like a preset
/// takes it without asking (so `onebot` sessions get the `onebot` preset
/// unless their class entry says `"preset": null`).
pub const PRESETS: &[(&str, &str)] = &[(
    "onebot",
    // Bots are quiet for hours between messages: never evict them for
    // application silence, only watch them in keep-alive after 5 min. Their
    // deliveries matter, so the first failed write, the first dropped
    // message, or 5 s of backlog evicts (the framework reconnects).
    r#"{
        "keep_alive_after_ms": 300000,
        "idle_evict_ms": 0,
        "send_failures_to_evict": 1,
        "dropped_frames_to_evict": 1,
        "backlog_evict_ms": 5000
    }"#,
)];

fn preset(name: &str) -> Option<Map<String, Value>> {
    let (_, json) = PRESETS.iter().find(|(preset, _)| *preset == name)?;
    match serde_json::from_str(json) {
        Ok(Value::Object(settings)) => Some(settings),
        _ => None,
    }
}

/// Overrides for one client class, as written in the config: any subset of
/// [`Settings`]' fields, applied on top of the top-level values.
pub type ClassOverrides = Map<String, Value>;

/// The whole configuration: top-level [`Settings`] plus per-class overrides,
/// resolved once at `configure` time so assessment does no merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    base: Settings,
    classes: BTreeMap<String, Settings>,
}

impl Default for Config {
    /// Every default, with the built-in presets' classes.
    fn default() -> Self {
        Config::from_json("{}").unwrap_or_else(|_| Config {
            base: Settings::default(),
            classes: BTreeMap::new(),
        })
    }
}

/// Why a configuration was refused; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, not an object, an unknown setting, or a value of the wrong type.
    #[error("invalid default-policy config{}: {source}", scope_suffix(.scope))]
    Parse {
        /// `""` for the top level, else the class name.
        scope: String,
        /// What serde said, with the path of the offending setting.
        source: serde_path_to_error::Error<serde_json::Error>,
    },
    /// The config must be a JSON object.
    #[error("invalid default-policy config: expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A value parsed but makes no sense.
    #[error("invalid default-policy config{}: `{setting}` {why}", scope_suffix(.scope))]
    Invalid {
        /// `""` for the top level, else the class name.
        scope: String,
        /// The offending setting.
        setting: String,
        /// Why it is refused.
        why: String,
    },
}

fn scope_suffix(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!(" (class `{scope}`)")
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserializes settings, keeping the path of a setting that fails.
fn settings_from(value: Value) -> Result<Settings, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

impl Config {
    /// Parses and validates a JSON config. An empty string means defaults.
    ///
    /// ```json
    /// { "idle_evict_ms": 0, "classes": { "onebot": { "send_failures_to_evict": 1 } } }
    /// ```
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let parse = |scope: &str, source| ConfigError::Parse {
            scope: scope.to_owned(),
            source,
        };
        let value: Value =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json))
                .map_err(|e| parse("", e))?;
        let Value::Object(mut top) = value else {
            return Err(ConfigError::NotAnObject(json_type(&value)));
        };
        let classes = match top.remove("classes") {
            None => Map::new(),
            Some(Value::Object(classes)) => classes,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    scope: String::new(),
                    setting: "classes".to_owned(),
                    why: format!(
                        "must be an object of class names, got {}",
                        json_type(&other)
                    ),
                })
            }
        };
        let base: Settings = settings_from(Value::Object(top.clone())).map_err(|e| parse("", e))?;
        base.validate("")?;

        // Preset-named classes take their preset even when not mentioned.
        let mut classes = classes;
        for (name, _) in PRESETS {
            classes
                .entry((*name).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        let mut resolved = BTreeMap::new();
        for (class, overrides) in classes {
            let Value::Object(mut overrides) = overrides else {
                return Err(ConfigError::Invalid {
                    scope: class,
                    setting: "classes".to_owned(),
                    why: format!("entry must be an object, got {}", json_type(&overrides)),
                });
            };
            let preset_name = match overrides.remove("preset") {
                None => preset(&class).is_some().then(|| class.clone()),
                Some(Value::Null) => None,
                Some(Value::String(name)) => Some(name),
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        scope: class,
                        setting: "preset".to_owned(),
                        why: format!("must be a preset name or null, got {}", json_type(&other)),
                    })
                }
            };
            let mut merged = top.clone();
            if let Some(name) = preset_name {
                let Some(settings) = preset(&name) else {
                    let known: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
                    return Err(ConfigError::Invalid {
                        scope: class,
                        setting: "preset".to_owned(),
                        why: format!("names no preset: `{name}` (known: {})", known.join(", ")),
                    });
                };
                merged.extend(settings);
            }
            merged.extend(overrides);
            let settings: Settings =
                settings_from(Value::Object(merged)).map_err(|e| parse(&class, e))?;
            settings.validate(&class)?;
            resolved.insert(class, settings);
        }
        Ok(Config {
            base,
            classes: resolved,
        })
    }

    /// The settings every class without an entry of its own uses.
    pub fn base(&self) -> &Settings {
        &self.base
    }

    /// The settings for sessions of `client_class`.
    pub fn for_class(&self, client_class: &str) -> &Settings {
        self.classes.get(client_class).unwrap_or(&self.base)
    }
}
