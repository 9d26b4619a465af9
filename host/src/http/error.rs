//! [`AppError`]: the one place HTTP answers for errors are shaped — a
//! status and `{"error": "..."}` — and where the core's errors get their
//! status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::core::{AcceptError, RecordingError};

/// An API error: a status and `{"error": "..."}`.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
}

impl AppError {
    /// An error answer with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AppError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: something inside the host is gone (the policy thread); logged.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error answering a request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl From<AcceptError> for AppError {
    fn from(error: AcceptError) -> Self {
        match error {
            AcceptError::ShuttingDown | AcceptError::AtCapacity { .. } => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            }
            AcceptError::IdentityTaken(_) => AppError::new(StatusCode::CONFLICT, error.to_string()),
        }
    }
}

impl From<RecordingError> for AppError {
    fn from(error: RecordingError) -> Self {
        match error {
            RecordingError::BadCaps(_) => AppError::bad_request(error.to_string()),
            RecordingError::Busy | RecordingError::Unfinished => {
                AppError::new(StatusCode::CONFLICT, error.to_string())
            }
            RecordingError::None => AppError::not_found(error.to_string()),
            RecordingError::Io(_) | RecordingError::PolicyGone => AppError::internal(error),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}
