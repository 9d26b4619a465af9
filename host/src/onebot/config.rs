//! `[onebot]`: the profile's settings, validated here (and only here).

use serde::Deserialize;

/// `[onebot]`: serve OneBot v11 forward-WebSocket endpoints (`/`, `/event`,
/// `/api`) on the public listener, so bot frameworks (NoneBot2, Koishi)
/// connect to Vigil as they would to a OneBot implementation, and get
/// Vigil's liveness behaviour. Off unless `enabled` (or `--onebot-self-id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OneBotConfig {
    /// Serve the OneBot endpoints. Default false.
    pub enabled: bool,
    /// The bot account's id, sent as `self_id` in every event and by
    /// `get_login_info`. Required when enabled.
    pub self_id: Option<i64>,
    /// The bot's nickname, for `get_login_info`. Default `vigil`.
    pub nickname: String,
    /// Interval of heartbeat meta events, ms. Default 5 000; must stay under
    /// 30 000, since NoneBot's aiohttp driver drops a connection that hears
    /// nothing for 30 s.
    pub heartbeat_interval_ms: u64,
    /// Token the OneBot endpoints require (`Authorization: Bearer` or
    /// `?access_token=`). Default: `server.access_token`.
    pub access_token: Option<String>,
    /// Send WebSocket Pings to OneBot clients. Default true. Some client
    /// drivers mishandle server Pings; with false, liveness rests on inbound
    /// activity, `TCP_INFO`, keepalive, write failures and backlog.
    pub ws_ping: bool,
    /// A OneBot HTTP API (loopback only, `http://127.0.0.1:5700`) that
    /// actions Vigil does not answer itself are forwarded to, as
    /// `POST {upstream}/{action}`. Without one they get `failed`/1404.
    pub action_upstream: Option<String>,
    /// How long a forwarded action may take before it is answered `failed`,
    /// ms, at most 60 000. Default 5 000.
    pub action_timeout_ms: u64,
    /// The OneBot implementations Vigil stands in front of, one per bot
    /// account (`[[onebot.upstreams]]`). Each account's frameworks connect
    /// to `/{self_id}/` (`/event`, `/api`); the plain `/` is `self_id`'s.
    pub upstreams: Vec<UpstreamConfig>,
}

/// How a OneBot implementation reaches Vigil, or Vigil it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamMode {
    /// It connects to Vigil (`/onebot/v11/ws`, or `…/ws/event` and
    /// `…/ws/api` split), sending `X-Self-ID` and its token.
    ReverseWs,
    /// Vigil connects to its forward-WebSocket server (`url`), and
    /// reconnects with backoff.
    ForwardWs,
    /// It posts events to Vigil (`POST /onebot/v11/http`, signed with
    /// `secret`), and Vigil posts actions to its HTTP API (`url`).
    Http,
}

/// `[[onebot.upstreams]]`: one OneBot implementation and its account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The bot account it holds.
    pub self_id: i64,
    /// How it is reached.
    pub mode: UpstreamMode,
    /// `forward-ws`: its server (`ws://127.0.0.1:3001`); `http`: its HTTP
    /// API (`http://127.0.0.1:5700`). Loopback only.
    pub url: Option<String>,
    /// `reverse-ws`: the token it must present (`Authorization: Bearer` or
    /// `Token`); `forward-ws`, `http`: the token Vigil presents to it.
    pub access_token: Option<String>,
    /// `http`: the secret its event reports are signed with
    /// (`X-Signature: sha1=<hmac>`). Required in that mode.
    pub secret: Option<String>,
    /// The token this account's frameworks present on `/{self_id}/…`, so
    /// one account's frameworks cannot read another's events. Default:
    /// `[onebot] access_token`.
    pub framework_token: Option<String>,
}

impl Default for OneBotConfig {
    fn default() -> Self {
        OneBotConfig {
            enabled: false,
            self_id: None,
            nickname: "vigil".to_owned(),
            heartbeat_interval_ms: 5_000,
            access_token: None,
            ws_ping: true,
            action_upstream: None,
            action_timeout_ms: 5_000,
            upstreams: Vec::new(),
        }
    }
}

impl OneBotConfig {
    /// Checks what the types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if self.self_id.is_none() {
            anyhow::bail!("[onebot] self_id is required when the OneBot profile is enabled (the bot account's id, sent in every event)");
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= 30_000 {
            anyhow::bail!("[onebot] heartbeat_interval_ms must be between 1 and 29 999 (under 30 s): clients drop a connection that hears nothing for 30 s");
        }
        if self.action_timeout_ms == 0 || self.action_timeout_ms > 60_000 {
            anyhow::bail!("[onebot] action_timeout_ms must be between 1 and 60 000 (clients give up on an action after 60 s)");
        }
        if let Some(upstream) = &self.action_upstream {
            super::upstream::parse_loopback_url(upstream)
                .map_err(|why| anyhow::anyhow!("[onebot] action_upstream `{upstream}`: {why}"))?;
        }
        let mut accounts = std::collections::HashSet::new();
        for upstream in &self.upstreams {
            upstream.validate()?;
            if !accounts.insert(upstream.self_id) {
                anyhow::bail!(
                    "[[onebot.upstreams]]: account {} has two upstreams; one implementation holds an account",
                    upstream.self_id
                );
            }
            if Some(upstream.self_id) == self.self_id && self.action_upstream.is_some() {
                anyhow::bail!(
                    "[onebot] action_upstream and an upstream for account {} both answer its actions; keep one",
                    upstream.self_id
                );
            }
        }
        Ok(())
    }
}

impl UpstreamConfig {
    /// What each mode needs, and nothing it would ignore.
    fn validate(&self) -> anyhow::Result<()> {
        let account = self.self_id;
        if account <= 0 {
            anyhow::bail!("[[onebot.upstreams]] self_id {account}: must be a positive account id");
        }
        let url = self.url.as_deref();
        match self.mode {
            UpstreamMode::ReverseWs => {
                if url.is_some() {
                    anyhow::bail!("[[onebot.upstreams]] {account}: reverse-ws takes no url (the implementation connects to /onebot/v11/ws)");
                }
                if self.access_token.as_deref().is_none_or(str::is_empty) {
                    anyhow::bail!("[[onebot.upstreams]] {account}: reverse-ws needs an access_token, the one the implementation presents");
                }
            }
            UpstreamMode::ForwardWs => {
                let Some(url) = url else {
                    anyhow::bail!("[[onebot.upstreams]] {account}: forward-ws needs the url of the implementation's WebSocket server");
                };
                super::link::parse_loopback_ws_url(url).map_err(|why| {
                    anyhow::anyhow!("[[onebot.upstreams]] {account}: url `{url}`: {why}")
                })?;
            }
            UpstreamMode::Http => {
                let Some(url) = url else {
                    anyhow::bail!("[[onebot.upstreams]] {account}: http needs the url of the implementation's HTTP API");
                };
                super::upstream::parse_loopback_url(url).map_err(|why| {
                    anyhow::anyhow!("[[onebot.upstreams]] {account}: url `{url}`: {why}")
                })?;
                if self.secret.as_deref().is_none_or(str::is_empty) {
                    anyhow::bail!("[[onebot.upstreams]] {account}: http needs a secret: unsigned event reports would be taken from anyone");
                }
            }
        }
        if self.mode != UpstreamMode::Http && self.secret.is_some() {
            anyhow::bail!("[[onebot.upstreams]] {account}: secret is for http mode only");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(upstreams: Vec<UpstreamConfig>) -> OneBotConfig {
        OneBotConfig {
            enabled: true,
            self_id: Some(1),
            upstreams,
            ..OneBotConfig::default()
        }
    }

    fn upstream(
        mode: UpstreamMode,
        url: Option<&str>,
        token: Option<&str>,
        secret: Option<&str>,
    ) -> UpstreamConfig {
        UpstreamConfig {
            self_id: 2,
            mode,
            url: url.map(str::to_owned),
            access_token: token.map(str::to_owned),
            secret: secret.map(str::to_owned),
            framework_token: None,
        }
    }

    #[test]
    fn each_upstream_mode_gets_what_it_needs_or_a_clear_error() {
        use UpstreamMode::{ForwardWs, Http, ReverseWs};
        for (config, expected) in [
            (upstream(ReverseWs, None, Some("t"), None), None),
            (
                upstream(ReverseWs, None, None, None),
                Some("needs an access_token"),
            ),
            (
                upstream(ReverseWs, Some("ws://127.0.0.1:1"), Some("t"), None),
                Some("takes no url"),
            ),
            (
                upstream(ForwardWs, Some("ws://127.0.0.1:3001"), None, None),
                None,
            ),
            (upstream(ForwardWs, None, None, None), Some("needs the url")),
            (
                upstream(ForwardWs, Some("ws://10.0.0.1:3001"), None, None),
                Some("loopback"),
            ),
            (
                upstream(ForwardWs, Some("http://127.0.0.1:3001"), None, None),
                Some("ws://"),
            ),
            (
                upstream(Http, Some("http://127.0.0.1:5700"), None, Some("s")),
                None,
            ),
            (
                upstream(Http, Some("http://127.0.0.1:5700"), None, None),
                Some("needs a secret"),
            ),
            (
                upstream(ForwardWs, Some("ws://127.0.0.1:1"), None, Some("s")),
                Some("http mode only"),
            ),
        ] {
            let outcome = with(vec![config.clone()]).validate();
            match expected {
                None => assert!(outcome.is_ok(), "{config:?}: {outcome:?}"),
                Some(why) => {
                    let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(error.contains(why), "{config:?}: {error}");
                }
            }
        }
        let twice = with(vec![
            upstream(UpstreamMode::ReverseWs, None, Some("t"), None),
            upstream(UpstreamMode::ReverseWs, None, Some("t"), None),
        ]);
        let error = twice
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("two upstreams"), "{error}");
    }
}
