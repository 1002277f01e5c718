//! One error type for every route, rendered as OpenAI's `{"error": {...}}` body or as an SSE event.

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong, from the caller's point of view. Each variant knows its status and `type`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is missing, malformed or out of range; `param` names it.
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<String>,
    },
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("invalid API key: it is unknown or was revoked")]
    InvalidApiKey,
    #[error("this key lacks the `{0}` scope")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body is larger than the server's limit (--max-body-bytes)")]
    PayloadTooLarge,
    /// The admission queue is full; the caller should retry after `retry_after` seconds.
    #[error("the server is at capacity ({0} requests queued); retry later")]
    Overloaded(usize, u64),
    #[error("the model is not loaded yet")]
    NotReady,
    /// Our fault. The cause is logged; the caller only learns that something broke.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(..) | ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type` string; stable, clients switch on it.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } | ApiError::PayloadTooLarge | ApiError::MethodNotAllowed => {
                "invalid_request_error"
            }
            ApiError::Unauthorized | ApiError::InvalidApiKey => "authentication_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::Conflict(_) => "conflict_error",
            ApiError::Overloaded(..) | ApiError::NotReady => "server_overloaded",
            ApiError::Internal(_) => "server_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::Invalid { .. } => Some("invalid_value"),
            ApiError::Unauthorized => Some("missing_api_key"),
            ApiError::InvalidApiKey => Some("invalid_api_key"),
            ApiError::Forbidden(_) => Some("insufficient_scope"),
            ApiError::NotFound(_) => Some("not_found"),
            ApiError::PayloadTooLarge => Some("payload_too_large"),
            ApiError::Overloaded(..) => Some("queue_full"),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let param = match self {
            ApiError::Invalid { param, .. } => param.clone(),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                r#type: self.error_type().to_string(),
                param,
                code: self.code().map(str::to_string),
            },
        }
    }
}

/// OpenAI's error envelope.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    pub r#type: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error.cause_chain = ?cause, "request failed");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Overloaded(_, retry_after) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

impl From<flywheel_store::Error> for ApiError {
    fn from(e: flywheel_store::Error) -> Self {
        match e {
            flywheel_store::Error::NotFound(what) => {
                ApiError::NotFound(format!("{what} not found"))
            }
            flywheel_store::Error::Conflict(m) => ApiError::Conflict(m),
            flywheel_store::Error::Invalid(m) => ApiError::Invalid {
                param: leading_field(&m),
                message: m,
            },
            other => ApiError::Internal(other.into()),
        }
    }
}

/// The field a store message names first: its messages start with it in backticks
/// (`` `response_b` must differ… ``).
fn leading_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix('`')?;
    let field = &rest[..rest.find('`')?];
    (!field.is_empty() && !field.contains(' ')).then(|| field.to_string())
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            JsonRejection::JsonDataError(e) => {
                // serde's message names the path (`messages[0].role: unknown variant ...`).
                let detail = e.body_text();
                let param = detail
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .and_then(|rest| rest.split(':').next())
                    .filter(|p| !p.contains(' '))
                    .map(str::to_string);
                ApiError::Invalid {
                    message: detail,
                    param,
                }
            }
            other => ApiError::Invalid {
                message: other.body_text(),
                param: None,
            },
        }
    }
}

/// `axum::Json`, but a malformed body gets our error shape instead of axum's plain text.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct AppJson<T>(pub T);

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
