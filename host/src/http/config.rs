//! The HTTP layer's settings: `[api]` (the control plane's keys) and
//! `[auth]` (how clients prove who they are).

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// `[api]`: the control routes (`/publish`, `/sessions*`, `/metrics`).
///
/// They take keys of their own, never a client's credential. Keys rather
/// than a listener of their own: a backend reaches them wherever it reaches
/// the host (through the same load balancer or proxy), and several keys let
/// an operator rotate one without a gap. The admin API, which can replace
/// the policy, keeps its own token and listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Keys any of which opens the control routes, as
    /// `Authorization: Bearer <key>` (never in a URL). Without any, the
    /// control routes answer loopback clients only. Default none.
    pub keys: Vec<String>,
    /// Serve the public listener on a non-loopback address with no API key
    /// (the control routes then still answer loopback clients only). Off by
    /// default: exposing the host without one must be a choice.
    pub allow_public_without_key: bool,
}

impl ApiConfig {
    /// Checks the keys.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.keys.iter().any(|key| key.len() < 16) {
            bail!("[api] keys must be at least 16 characters each (they guard publishing, listing and evicting)");
        }
        Ok(())
    }
}

/// `[auth]`: authenticated client identities.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Verify client JWTs signed HS256 with this shared secret.
    pub jwt_secret: Option<String>,
    /// Verify client JWTs signed RS256 or ES256 (P-256) with this public key
    /// (PEM); the key's type picks the algorithm.
    pub jwt_public_key: Option<PathBuf>,
    /// When set, a token's `iss` must be this.
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must include this.
    pub jwt_audience: Option<String>,
    /// A claim whose string value becomes the session's client class (for
    /// example `"class"`); without it, or without the claim in a token, the
    /// class is `[sessions] default_class`.
    pub class_claim: Option<String>,
    /// Close a session with 4401 (`token-expired`) when its token's `exp`
    /// passes. Default true.
    pub close_on_expiry: bool,
    /// Accept an identity a client merely claims (`?client_id=` or
    /// `X-Client-Id`). Default: true without JWT, false with it. An
    /// unproven identity never supersedes a proven one.
    pub allow_anonymous_identity: Option<bool>,
    /// Clock skew allowed when checking `exp`, seconds. Default 0.
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_public_key: None,
            jwt_issuer: None,
            jwt_audience: None,
            class_claim: None,
            close_on_expiry: true,
            allow_anonymous_identity: None,
            leeway_secs: 0,
        }
    }
}

impl AuthConfig {
    /// Whether clients may present JWTs.
    pub fn jwt_configured(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    /// Whether a merely claimed identity is accepted.
    pub fn anonymous_identity(&self) -> bool {
        self.allow_anonymous_identity
            .unwrap_or(!self.jwt_configured())
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            bail!("[auth] sets both jwt_secret and jwt_public_key; use one");
        }
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|secret| secret.len() < 32)
        {
            bail!("[auth] jwt_secret must be at least 32 bytes (HS256 with a short secret can be brute-forced)");
        }
        Ok(())
    }
}
