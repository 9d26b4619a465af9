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
        Ok(())
    }
}
