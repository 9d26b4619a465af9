//! Bearer tokens: one check, used by the public API, the admin API and the
//! profiles' endpoints. Checked before any upgrade, so a rejected client
//! never gets a socket; compared in constant time.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::http::error::AppError;

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
            Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
            Some(_) => Err(AppError::new(StatusCode::FORBIDDEN, "wrong access token")),
        }
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
