//! Forwarding actions Vigil does not answer itself to a real OneBot backend
//! over its HTTP API (`POST {upstream}/{action}`, params as the JSON body),
//! and relaying the answer. Whatever goes wrong — refused, timed out, not a
//! OneBot answer — the client still gets an answer, never silence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::protocol::{retcode, ActionResponse};

/// Forwarded actions one session may have waiting for the upstream; more
/// are answered `failed` at once, so no client can pile up requests (each
/// holds a task and a connection) faster than the backend answers.
pub const MAX_IN_FLIGHT_PER_SESSION: u32 = 32;

/// Forwarded actions waiting for the upstream, all sessions together.
pub const MAX_IN_FLIGHT: u32 = 1_024;

/// Checks that `text` is an `http://` URL on a loopback address: actions
/// carry the bot's traffic, and Vigil only talks to a backend on this
/// machine.
pub fn parse_loopback_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    if url.scheme() != "http" {
        return Err(format!("must be http://, not {}://", url.scheme()));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if !loopback {
        return Err("must be on a loopback address (127.0.0.0/8, ::1 or localhost)".to_owned());
    }
    Ok(url)
}

/// A OneBot HTTP API to forward actions to.
#[derive(Debug, Clone)]
pub struct Upstream {
    base: Url,
    client: reqwest::Client,
    access_token: Option<String>,
    answer_limit: usize,
    in_flight: InFlightLimits,
}

/// The bounds on actions waiting for an upstream: per session and in all.
#[derive(Debug, Clone, Default)]
pub struct InFlightLimits {
    counts: Arc<Mutex<InFlightCounts>>,
}

impl InFlightLimits {
    /// A place for one more waiting action of `session`, or `None` when it
    /// or everyone has too many waiting.
    pub fn admit(&self, session: u64) -> Option<InFlight> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counts.by_session.get(&session).copied().unwrap_or(0);
        if counts.total >= MAX_IN_FLIGHT || mine >= MAX_IN_FLIGHT_PER_SESSION {
            return None;
        }
        counts.total += 1;
        counts.by_session.insert(session, mine + 1);
        Some(InFlight {
            counts: Arc::clone(&self.counts),
            session,
        })
    }
}

/// Forwarded actions waiting, in all and by session.
#[derive(Debug, Default)]
struct InFlightCounts {
    total: u32,
    by_session: HashMap<u64, u32>,
}

/// One forwarded action's place among those waiting; given back on drop.
#[derive(Debug)]
pub struct InFlight {
    counts: Arc<Mutex<InFlightCounts>>,
    session: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_session.get_mut(&self.session) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.by_session.remove(&self.session);
            }
        }
    }
}

/// A OneBot answer (over HTTP or a WebSocket), as far as Vigil reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct UpstreamAnswer {
    pub(crate) retcode: i64,
    #[serde(default)]
    pub(crate) data: Option<Box<RawValue>>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) wording: Option<String>,
}

impl UpstreamAnswer {
    /// The framework's response: this answer under the framework's `echo`.
    pub(crate) fn into_response(self, echo: Option<Box<RawValue>>) -> ActionResponse {
        let message = self.message.or(self.wording);
        let data = self.data.unwrap_or_else(|| RawValue::NULL.to_owned());
        ActionResponse::with_raw_data(self.retcode, data, message, echo)
    }
}

impl Upstream {
    /// An upstream at `base` (checked by [`parse_loopback_url`]), each call
    /// bounded by `timeout`, answers by `answer_limit` bytes.
    pub fn new(base: &str, timeout: Duration, answer_limit: usize) -> anyhow::Result<Self> {
        let base = parse_loopback_url(base).map_err(|why| anyhow::anyhow!("{base}: {why}"))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(32)
            .no_proxy()
            .build()
            .map_err(|error| anyhow::anyhow!("cannot build the upstream HTTP client: {error}"))?;
        Ok(Upstream {
            base,
            client,
            access_token: None,
            answer_limit,
            in_flight: InFlightLimits::default(),
        })
    }

    /// Sends `token` as `Authorization: Bearer` with every action, as
    /// OneBot HTTP APIs with an access token require.
    pub fn with_access_token(mut self, token: Option<String>) -> Self {
        self.access_token = token.filter(|token| !token.is_empty());
        self
    }

    /// A place for one more forwarded action of `session`, or `None` when
    /// it or everyone has too many waiting.
    pub fn admit(&self, session: u64) -> Option<InFlight> {
        self.in_flight.admit(session)
    }

    fn action_url(&self, action: &str) -> Result<Url, String> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| format!("{} cannot take a path", self.base))?
            .pop_if_empty()
            .push(action);
        Ok(url)
    }

    /// Asks the upstream; always returns an answer for the client.
    pub async fn call(
        &self,
        action: &str,
        params: &Map<String, Value>,
        echo: Option<Box<RawValue>>,
    ) -> ActionResponse {
        match self.try_call(action, params).await {
            Ok(answer) => answer.into_response(echo),
            Err(why) => {
                // Debug, not warn: a client decides how often this happens.
                tracing::debug!(action, upstream = %self.base, %why, "action upstream failed");
                ActionResponse::failed(
                    retcode::BAD_REQUEST,
                    format!("action upstream {}: {why}", self.base),
                    echo,
                )
            }
        }
    }

    /// Asks the upstream and returns its OneBot answer, or why there is
    /// none.
    pub(crate) async fn try_call(
        &self,
        action: &str,
        params: &Map<String, Value>,
    ) -> Result<UpstreamAnswer, String> {
        let url = self.action_url(action)?;
        let mut request = self.client.post(url).json(params);
        if let Some(token) = &self.access_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| describe(&error))?;
        let status = response.status();
        let too_large = || {
            format!(
                "answer larger than the session's queue limit of {} bytes",
                self.answer_limit
            )
        };
        if response
            .content_length()
            .is_some_and(|length| length > self.answer_limit as u64)
        {
            return Err(too_large());
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| describe(&error))? {
            if body.len() + chunk.len() > self.answer_limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<UpstreamAnswer>(&body) {
            Ok(answer) => Ok(answer),
            // OneBot HTTP APIs answer an unknown action with a bare 404.
            Err(_) if status == reqwest::StatusCode::NOT_FOUND => Ok(UpstreamAnswer {
                retcode: retcode::UNSUPPORTED,
                data: None,
                message: Some(format!("unsupported action `{action}` (upstream: 404)")),
                wording: None,
            }),
            Err(error) => Err(format!(
                "answered HTTP {status} without a OneBot response ({error})"
            )),
        }
    }
}

/// The cause a client can act on: unreachable, timed out, or what it was.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        let mut cause: &dyn std::error::Error = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("unreachable ({cause})")
    } else {
        error.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_upstreams_are_accepted() {
        for good in [
            "http://127.0.0.1:5700",
            "http://127.8.0.1:5700/onebot/",
            "http://[::1]:5700",
            "http://localhost:5700",
        ] {
            assert!(parse_loopback_url(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("https://127.0.0.1:5700", "http://"),
            ("http://10.0.0.1:5700", "loopback"),
            ("http://example.com", "loopback"),
            ("127.0.0.1:5700", "not a URL"),
            ("nonsense", "URL"),
        ] {
            let error = parse_loopback_url(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn each_session_gets_a_bounded_share_of_the_upstream() {
        let upstream =
            Upstream::new("http://127.0.0.1:5700", Duration::from_secs(1), 1 << 20).expect("valid");
        let mine: Vec<InFlight> = (0..MAX_IN_FLIGHT_PER_SESSION)
            .map(|_| upstream.admit(1).expect("room"))
            .collect();
        assert!(upstream.admit(1).is_none(), "a session's share is bounded");
        assert!(upstream.admit(2).is_some(), "other sessions are unaffected");
        drop(mine);
        assert!(upstream.admit(1).is_some(), "places are given back");
    }

    #[test]
    fn actions_are_posted_under_the_base_path() {
        let upstream = Upstream::new(
            "http://127.0.0.1:5700/onebot/",
            Duration::from_secs(1),
            1 << 20,
        )
        .expect("valid");
        assert_eq!(
            upstream.action_url("send_msg").expect("url").as_str(),
            "http://127.0.0.1:5700/onebot/send_msg"
        );
        let bare =
            Upstream::new("http://127.0.0.1:5700", Duration::from_secs(1), 1 << 20).expect("valid");
        assert_eq!(
            bare.action_url("send_msg").expect("url").as_str(),
            "http://127.0.0.1:5700/send_msg"
        );
    }
}
