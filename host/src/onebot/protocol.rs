//! OneBot v11 frames as bytes on the wire: parsing action requests, building
//! responses and meta events. Pure functions, so every rule of the wire
//! contract (`echo` returned byte for byte, `data` always present,
//! `status`/`retcode` agreeing) is tested without a socket.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// OneBot v11 return codes Vigil itself gives.
pub mod retcode {
    /// Success.
    pub const OK: i64 = 0;
    /// Accepted, to be carried out later (`*_async` actions).
    pub const ASYNC: i64 = 1;
    /// The request is malformed: not JSON, no `action`, bad `params` — or the
    /// action upstream could not be asked (its message says which).
    pub const BAD_REQUEST: i64 = 1400;
    /// No such action here (and no upstream to forward it to).
    pub const UNSUPPORTED: i64 = 1404;
}

/// A well-formed action request.
#[derive(Debug)]
pub struct ActionRequest {
    /// The action's name, as sent (an `_async` suffix included).
    pub action: String,
    /// Its parameters: a JSON object, `{}` when missing or null.
    pub params: Map<String, Value>,
    /// The request's `echo`, byte for byte, when it had one (even `null`).
    pub echo: Option<Box<RawValue>>,
}

/// A request that cannot be carried out, and what to answer.
#[derive(Debug)]
pub struct Malformed {
    /// Why, for the response's `message`.
    pub why: String,
    /// The request's `echo` when it could be read, so the client can still
    /// match the answer to its call.
    pub echo: Option<Box<RawValue>>,
}

/// `echo` as the client sent it: present-but-null stays `Some("null")`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct RequestFrame {
    #[serde(default)]
    action: Option<Value>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    echo: Option<Box<RawValue>>,
}

/// Parses one text (or binary) frame from a client as an action request.
pub fn parse_request(frame: &[u8]) -> Result<ActionRequest, Malformed> {
    let request: RequestFrame = serde_json::from_slice(frame).map_err(|error| Malformed {
        why: format!("not a JSON action request: {error}"),
        echo: None,
    })?;
    let echo = request.echo;
    let action = match request.action {
        Some(Value::String(action)) if !action.is_empty() => action,
        Some(other) => {
            return Err(Malformed {
                why: format!("`action` must be a non-empty string, got {other}"),
                echo,
            })
        }
        None => {
            return Err(Malformed {
                why: "missing `action`".to_owned(),
                echo,
            })
        }
    };
    let params = match request.params {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(other) => {
            return Err(Malformed {
                why: format!("`params` must be an object, got {other}"),
                echo,
            })
        }
    };
    Ok(ActionRequest {
        action,
        params,
        echo,
    })
}

/// An action response. Serialized as OneBot clients expect: `status` and
/// `retcode` agree, `data` is always present, `echo` only when the request
/// had one, and never a `post_type`.
#[derive(Debug, Serialize)]
pub struct ActionResponse {
    status: &'static str,
    retcode: i64,
    data: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wording: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    echo: Option<Box<RawValue>>,
}

/// The `status` that goes with a `retcode`.
pub fn status_of(retcode: i64) -> &'static str {
    match retcode {
        retcode::OK => "ok",
        retcode::ASYNC => "async",
        _ => "failed",
    }
}

fn raw(value: &Value) -> Box<RawValue> {
    // Serializing a `Value` cannot fail; null is the safe answer if it did.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| null())
}

fn null() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

impl ActionResponse {
    /// `ok`/0 with `data`.
    pub fn ok(data: Value, echo: Option<Box<RawValue>>) -> Self {
        Self::with_raw_data(retcode::OK, raw(&data), None, echo)
    }

    /// `async`/1: accepted, nothing to return.
    pub fn accepted(echo: Option<Box<RawValue>>) -> Self {
        Self::with_raw_data(retcode::ASYNC, null(), None, echo)
    }

    /// `failed` with `retcode`, `data: null` and a message saying why.
    pub fn failed(retcode: i64, message: impl Into<String>, echo: Option<Box<RawValue>>) -> Self {
        Self::with_raw_data(retcode, null(), Some(message.into()), echo)
    }

    /// Any answer, `data` given as JSON text (relayed from an upstream as is).
    pub fn with_raw_data(
        retcode: i64,
        data: Box<RawValue>,
        message: Option<String>,
        echo: Option<Box<RawValue>>,
    ) -> Self {
        ActionResponse {
            status: status_of(retcode),
            retcode,
            data,
            wording: message.clone(),
            message,
            echo,
        }
    }

    /// The response's `retcode`.
    pub fn retcode(&self) -> i64 {
        self.retcode
    }

    /// The frame's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| {
            // Only a broken RawValue could get here; answer rather than hang.
            format!(
                r#"{{"status":"failed","retcode":{},"data":null,"message":"cannot encode the response: {error}"}}"#,
                retcode::BAD_REQUEST
            )
        })
    }
}

/// Wall-clock Unix seconds, as OneBot events carry them.
pub fn unix_seconds() -> i64 {
    (vigil_policy_runtime::clock::unix_ms_now() / 1_000) as i64
}

/// The lifecycle `connect` meta event: the first frame on `/` and `/event`.
pub fn lifecycle_connect(self_id: i64, time: i64) -> String {
    json!({
        "time": time,
        "self_id": self_id,
        "post_type": "meta_event",
        "meta_event_type": "lifecycle",
        "sub_type": "connect",
    })
    .to_string()
}

/// The host's state as OneBot `status` reports it (`get_status`, heartbeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotStatus {
    /// Serving: false once shutdown has begun.
    pub online: bool,
    /// Serving and the policy plugin decides (not disabled for faults).
    pub good: bool,
}

impl BotStatus {
    /// `{"online": .., "good": ..}`.
    pub fn to_value(self) -> Value {
        json!({ "online": self.online, "good": self.good })
    }
}

/// A heartbeat meta event.
pub fn heartbeat(self_id: i64, time: i64, interval_ms: u64, status: BotStatus) -> String {
    json!({
        "time": time,
        "self_id": self_id,
        "post_type": "meta_event",
        "meta_event_type": "heartbeat",
        "interval": interval_ms,
        "status": status.to_value(),
    })
    .to_string()
}

/// A backend's event as it goes out: `time` and `self_id` filled in when
/// missing. Events are JSON objects with a `post_type`; anything else is
/// left as it is.
pub fn complete_event(event: &mut Value, self_id: i64, time: i64) {
    let Value::Object(fields) = event else {
        return;
    };
    if !fields.contains_key("post_type") {
        return;
    }
    fields.entry("time").or_insert_with(|| json!(time));
    fields.entry("self_id").or_insert_with(|| json!(self_id));
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_frame_is_an_action_or_a_1400_never_a_panic(
            frame in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let response = match parse_request(&frame) {
                Ok(request) => ActionResponse::ok(Value::Null, request.echo),
                Err(malformed) => ActionResponse::failed(retcode::BAD_REQUEST, malformed.why, malformed.echo),
            };
            let answer: Value = serde_json::from_str(&response.to_json()).expect("answers are JSON");
            prop_assert!(answer.get("status").is_some() && answer.get("data").is_some());
        }

        #[test]
        fn an_echo_of_any_json_comes_back_byte_for_byte(
            action in "[a-z_]{1,20}", n in any::<i64>(), text in "[ -~]{0,20}",
        ) {
            let echo = json!([n, text, {"k": null}]).to_string();
            let frame = format!(r#"{{"action":"{action}","params":{{}},"echo":{echo}}}"#);
            let request = parse_request(frame.as_bytes()).expect("valid");
            prop_assert_eq!(&request.action, &action);
            let answer = ActionResponse::ok(Value::Null, request.echo).to_json();
            let expected_tail = format!(r#""echo":{echo}}}"#);
            prop_assert!(answer.ends_with(&expected_tail));
        }
    }

    fn answer(frame: &str) -> Value {
        let response = match parse_request(frame.as_bytes()) {
            Ok(request) => ActionResponse::ok(json!({"action": request.action}), request.echo),
            Err(malformed) => {
                ActionResponse::failed(retcode::BAD_REQUEST, malformed.why, malformed.echo)
            }
        };
        serde_json::from_str(&response.to_json()).expect("responses are JSON")
    }

    #[test]
    fn echo_comes_back_with_its_json_type_and_bytes() {
        for echo in [
            r#""17""#,
            "17",
            "1.50",
            r#"{"seq":[1,"a",null]}"#,
            "null",
            "18446744073709551616",
        ] {
            let frame = format!(r#"{{"action":"x","echo":{echo}}}"#);
            let request = parse_request(frame.as_bytes()).expect("valid");
            let text = ActionResponse::ok(Value::Null, request.echo).to_json();
            assert!(
                text.ends_with(&format!(r#""echo":{echo}}}"#)),
                "{echo} came back as {text}"
            );
        }
    }

    #[test]
    fn a_request_without_echo_gets_none_and_data_is_always_present() {
        let response = answer(r#"{"action":"get_status"}"#);
        assert!(response.get("echo").is_none());
        assert_eq!(response["status"], "ok");
        assert_eq!(response["retcode"], 0);
        let failed = serde_json::to_value(ActionResponse::accepted(None)).expect("json");
        assert_eq!(failed["data"], Value::Null);
        assert_eq!(failed["status"], "async");
    }

    #[test]
    fn malformed_requests_are_1400_keeping_echo_when_readable() {
        let not_json = answer("{nope");
        assert_eq!(not_json["retcode"], 1400);
        assert_eq!(not_json["status"], "failed");
        assert!(not_json.get("echo").is_none());
        let no_action = answer(r#"{"params":{},"echo":5}"#);
        assert_eq!(no_action["retcode"], 1400);
        assert_eq!(no_action["echo"], 5);
        let bad_params = answer(r#"{"action":"x","params":[1],"echo":"e"}"#);
        assert_eq!(bad_params["retcode"], 1400);
        assert_eq!(bad_params["echo"], "e");
        assert!(bad_params["message"]
            .as_str()
            .is_some_and(|m| m.contains("params")));
        assert!(answer("[1,2]")["retcode"] == 1400);
    }

    #[test]
    fn status_always_agrees_with_retcode() {
        for (code, status) in [(0, "ok"), (1, "async"), (1404, "failed"), (100, "failed")] {
            let response = ActionResponse::with_raw_data(code, null(), None, None);
            assert_eq!(response.status, status);
        }
    }

    #[test]
    fn events_get_time_and_self_id_only_when_missing() {
        let mut event = json!({"post_type": "message", "time": 5});
        complete_event(&mut event, 42, 1000);
        assert_eq!(
            event,
            json!({"post_type": "message", "time": 5, "self_id": 42})
        );
        let mut not_an_event = json!({"hello": 1});
        complete_event(&mut not_an_event, 42, 1000);
        assert_eq!(not_an_event, json!({"hello": 1}));
    }

    #[test]
    fn meta_events_carry_the_fields_clients_read() {
        let lifecycle: Value = serde_json::from_str(&lifecycle_connect(7, 100)).expect("json");
        assert_eq!(lifecycle["meta_event_type"], "lifecycle");
        assert_eq!(lifecycle["sub_type"], "connect");
        assert_eq!(lifecycle["self_id"], 7);
        let beat: Value = serde_json::from_str(&heartbeat(
            7,
            100,
            5_000,
            BotStatus {
                online: true,
                good: false,
            },
        ))
        .expect("json");
        assert_eq!(beat["interval"], 5_000);
        assert_eq!(beat["status"], json!({"online": true, "good": false}));
    }
}
