//! Bearer tokens: one check, used by the public API, the admin API and the
//! profiles' endpoints. Checked before any upgrade, so a rejected client
//! never gets a socket; compared in constant time.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::core::tcp::ConnInfo;
use crate::http::config::{ApiConfig, AuthConfig};
use crate::http::error::AppError;
use crate::http::jwt::{JwtError, JwtVerifier};
use crate::http::peer::TrustedProxies;

/// Which token a group of routes requires, and where it may be presented.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    expected: Option<Arc<str>>,
    from_query: bool,
}

impl TokenCheck {
    /// Requires `expected` when set (open when `None`), as
    /// `Authorization: Bearer` or `?access_token=` (clients that cannot set
    /// headers, such as browsers' WebSocket API, need the query form).
    pub fn header_or_query(expected: Option<&str>) -> Self {
        TokenCheck {
            expected: expected.map(Arc::from),
            from_query: true,
        }
    }

    /// Requires `expected`, from the header only: a token in a URL ends up
    /// in logs.
    pub fn header_only(expected: &str) -> Self {
        TokenCheck {
            expected: Some(Arc::from(expected)),
            from_query: false,
        }
    }

    /// 401 without a token, 403 with a wrong one; `Ok` when it matches or
    /// none is required.
    pub fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Result<(), AppError> {
        let Some(expected) = self.expected.as_deref() else {
            return Ok(());
        };
        let query = if self.from_query { query } else { None };
        match presented_token(headers, query) {
            None => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "missing access token",
            )),
            Some(token) if same_secret(&token, expected) => Ok(()),
            Some(_) => Err(AppError::new(StatusCode::FORBIDDEN, "wrong access token")),
        }
    }
}

/// Constant-time equality of a presented and an expected secret.
fn same_secret(presented: &str, expected: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// The control routes' guard (`/publish`, `/sessions*`, `/metrics`): one of
/// the `[api]` keys in the header, or, with no key configured, a loopback
/// client. A client's credential never opens them.
#[derive(Debug, Clone)]
pub struct ControlAccess {
    keys: Arc<[String]>,
    proxies: TrustedProxies,
}

impl ControlAccess {
    /// From `[api]`, with the proxies whose `X-Forwarded-For` is believed
    /// (a loopback proxy must not make every client look local).
    pub fn new(config: &ApiConfig, proxies: TrustedProxies) -> Self {
        ControlAccess {
            keys: config.keys.iter().cloned().collect(),
            proxies,
        }
    }

    fn check(&self, request: &Request) -> Result<(), AppError> {
        if self.keys.is_empty() {
            let peer = request
                .extensions()
                .get::<ConnectInfo<ConnInfo>>()
                .map(|ConnectInfo(conn)| self.proxies.client(conn.peer, request.headers()).0);
            return match peer {
                Some(peer) if peer.ip().is_loopback() => Ok(()),
                _ => Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "the control routes answer loopback clients only while no [api] key is set",
                )),
            };
        }
        match presented_token(request.headers(), None) {
            None => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "missing API key (Authorization: Bearer <key>)",
            )),
            Some(token) if self.keys.iter().any(|key| same_secret(&token, key)) => Ok(()),
            Some(_) => Err(AppError::new(StatusCode::FORBIDDEN, "wrong API key")),
        }
    }
}

/// The middleware of the control routes.
pub async fn require_control(
    State(access): State<ControlAccess>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    access.check(&request)?;
    Ok(next.run(request).await)
}

/// Who a client on `/ws` is, as far as it proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The identity: a token's `sub`, or a claimed `client_id` when allowed.
    pub identity: Option<String>,
    /// Whether a verified token says so.
    pub proven: bool,
    /// The class a token's class claim gives.
    pub class: Option<String>,
    /// When the session must end: the token's `exp`, if it is honoured.
    pub expires_at: Option<SystemTime>,
}

/// How clients on `/ws` authenticate: the static client token, a JWT, or
/// nothing (when neither is configured).
#[derive(Debug, Clone)]
pub struct ClientAuth {
    token: Option<Arc<str>>,
    jwt: Option<JwtVerifier>,
    anonymous_identity: bool,
    close_on_expiry: bool,
}

impl ClientAuth {
    /// From `[server] access_token` and `[auth]`.
    pub fn new(access_token: Option<&str>, config: &AuthConfig) -> anyhow::Result<Self> {
        Ok(ClientAuth {
            token: access_token.map(Arc::from),
            jwt: JwtVerifier::from_config(config)?,
            anonymous_identity: config.anonymous_identity(),
            close_on_expiry: config.close_on_expiry,
        })
    }

    /// Checks a `/ws` request before the upgrade: 401 for a missing,
    /// expired, malformed or wrongly signed credential, 403 for a wrong
    /// token or an identity the client may not claim.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        claimed: Option<String>,
    ) -> Result<ClientIdentity, AppError> {
        let presented = presented_token(headers, query);
        let verified = match (&presented, &self.jwt) {
            (Some(token), Some(jwt)) if !self.is_static_token(token) => {
                Some(jwt.verify(token).map_err(|error| match error {
                    JwtError::Expired | JwtError::BadSignature | JwtError::Malformed(_) => {
                        AppError::new(StatusCode::UNAUTHORIZED, error.to_string())
                    }
                })?)
            }
            _ => None,
        };
        if let Some(claims) = verified {
            if claimed
                .as_ref()
                .is_some_and(|claimed| *claimed != claims.subject)
            {
                return Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "client_id differs from the token's sub: the token says who you are",
                ));
            }
            return Ok(ClientIdentity {
                identity: Some(claims.subject),
                proven: true,
                class: claims.class,
                expires_at: self.close_on_expiry.then_some(claims.expires_at),
            });
        }
        match (&self.token, &presented) {
            (Some(_), None) => {
                return Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing access token",
                ))
            }
            (Some(expected), Some(token)) if !same_secret(token, expected) => {
                return Err(AppError::new(StatusCode::FORBIDDEN, "wrong access token"))
            }
            (None, None) if self.jwt.is_some() => {
                return Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing token (a JWT as Authorization: Bearer or ?access_token=)",
                ))
            }
            _ => {}
        }
        if claimed.is_some() && !self.anonymous_identity {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "a claimed client_id is not accepted here ([auth] allow_anonymous_identity is off): present a token whose sub is the identity",
            ));
        }
        Ok(ClientIdentity {
            identity: claimed,
            proven: false,
            class: None,
            expires_at: None,
        })
    }

    fn is_static_token(&self, presented: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|expected| same_secret(presented, expected))
    }
}

/// The token from `Authorization: Bearer` or, when given, `?access_token=`.
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = value.strip_prefix("Bearer ") {
            return Some(token.trim().to_owned());
        }
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(key, _)| key == "access_token")
        .map(|(_, value)| value)
}

/// The middleware: `route_layer(middleware::from_fn_with_state(check, require_token))`.
pub async fn require_token(
    State(check): State<TokenCheck>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    check.check(request.headers(), request.uri().query())?;
    Ok(next.run(request).await)
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = format!("Bearer {token}").parse() {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    #[test]
    fn missing_is_401_wrong_is_403_and_the_query_form_only_where_allowed() {
        let open = TokenCheck::header_or_query(None);
        assert!(open.check(&HeaderMap::new(), None).is_ok());
        let client = TokenCheck::header_or_query(Some("t0k"));
        assert!(client.check(&bearer("t0k"), None).is_ok());
        assert!(client
            .check(&HeaderMap::new(), Some("access_token=t0k"))
            .is_ok());
        let status = |result: Result<(), AppError>| {
            axum::response::IntoResponse::into_response(result.expect_err("rejected")).status()
        };
        assert_eq!(status(client.check(&HeaderMap::new(), None)), 401);
        assert_eq!(status(client.check(&bearer("nope"), None)), 403);
        let admin = TokenCheck::header_only("t0k");
        assert_eq!(
            status(admin.check(&HeaderMap::new(), Some("access_token=t0k"))),
            401,
            "the admin token is never read from a URL"
        );
    }
}
