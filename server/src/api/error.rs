//! One error type for every route, rendered as OpenAI's `{"error": {...}}` body or as an SSE event.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::AdmitError;

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
    /// The request was well formed but the work it asks for could not be done (for example, the
    /// policy wrote no usable paraphrase); nothing was stored.
    #[error("{0}")]
    Unprocessable(String),
    #[error("request body is larger than the server's limit (--max-body-bytes)")]
    PayloadTooLarge,
    /// The admission queue is full; the caller should retry after `retry_after` seconds.
    #[error("the server is at capacity ({0} requests queued); retry later")]
    Overloaded(usize, u64),
    #[error("the model is not loaded yet")]
    NotReady,
    /// This server cannot do it right now (for example, load an adapter); nothing changed.
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(..) | ApiError::NotReady | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type` string; stable, clients switch on it.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. }
            | ApiError::PayloadTooLarge
            | ApiError::MethodNotAllowed
            | ApiError::Unprocessable(_) => "invalid_request_error",
            ApiError::Unauthorized | ApiError::InvalidApiKey => "authentication_error",
            ApiError::Forbidden(_) => "permission_error",
            ApiError::NotFound(_) => "not_found_error",
            ApiError::Conflict(_) => "conflict_error",
            ApiError::Overloaded(..) | ApiError::NotReady => "server_overloaded",
            ApiError::Unavailable(_) => "service_unavailable",
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

impl ApiError {
    /// The engine's refusal of a request, naming the request's own parameters: `prompt_param` for
    /// the prompt (`messages` or `prompt`) and `max_tokens_param` for the completion budget.
    pub fn admission(e: AdmitError, prompt_param: &str, max_tokens_param: &str) -> ApiError {
        match e {
            AdmitError::Overloaded { capacity } => ApiError::Overloaded(capacity, 1),
            AdmitError::NotLoaded { .. } => ApiError::NotFound(e.to_string()),
            AdmitError::TooManyTokens { .. } => ApiError::invalid(max_tokens_param, e.to_string()),
            AdmitError::Tokenize(_)
            | AdmitError::EmptyPrompt
            | AdmitError::PromptTooLong { .. } => ApiError::invalid(prompt_param, e.to_string()),
        }
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

/// `axum::Json`, but every rejection speaks our error shape, and text that cannot be stored (a NUL
/// character, see [`flywheel_store::text`]) is refused with a 400 naming its field before any work
/// is done.
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        if let Some(field) = flywheel_store::text::first_nul(&value) {
            return Err(ApiError::nul_in(field));
        }
        serde_path_to_error::deserialize(value)
            .map(AppJson)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::Invalid {
                    message: format!(
                        "Failed to deserialize the JSON body into the target type: {path}: {}",
                        e.inner()
                    ),
                    param: (path != ".").then_some(path),
                }
            })
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path`, but a value that does not parse is a 400 in our shape naming the segment.
pub struct AppPath<T>(pub T);

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(AppPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                // A single value (`Path<i64>`) fails without its key: find it among the raw ones.
                let raw = RawPathParams::from_request_parts(parts, state).await.ok();
                let key_of = |value: &str| {
                    raw.as_ref()?
                        .iter()
                        .find(|(_, v)| *v == value)
                        .map(|(k, _)| k.to_string())
                };
                let (param, value, expected) = match e.kind() {
                    ErrorKind::ParseErrorAtKey {
                        key,
                        value,
                        expected_type,
                    } => (Some(key.clone()), value.clone(), *expected_type),
                    ErrorKind::ParseError {
                        value,
                        expected_type,
                    }
                    | ErrorKind::ParseErrorAtIndex {
                        value,
                        expected_type,
                        ..
                    } => (key_of(value), value.clone(), *expected_type),
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        return Err(ApiError::invalid(
                            key.clone(),
                            format!("`{key}` is not valid UTF-8"),
                        ))
                    }
                    other => {
                        return Err(ApiError::Invalid {
                            message: other.to_string(),
                            param: None,
                        })
                    }
                };
                let name = param.as_deref().unwrap_or("path parameter");
                Err(ApiError::Invalid {
                    message: format!(
                        "`{name}` must be {}. Given: {value:?}",
                        type_words(expected)
                    ),
                    param,
                })
            }
            Err(other) => Err(ApiError::Internal(anyhow::anyhow!(other.body_text()))),
        }
    }
}

/// A Rust type name as a caller reads it: `i64` is "an integer".
fn type_words(rust_type: &str) -> String {
    match rust_type {
        "i64" | "i32" | "u32" | "u64" | "usize" => "an integer in range".to_string(),
        "f64" | "f32" => "a number".to_string(),
        other => format!("a valid `{}`", other.rsplit("::").next().unwrap_or(other)),
    }
}

/// `axum::extract::Query`, but a bad parameter is a 400 in our shape naming it, and a NUL character
/// in any value is refused like one in a JSON body.
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::invalid_query(None, e.to_string()))?;
        if let Some((key, _)) = pairs.iter().find(|(_, v)| v.contains('\0')) {
            return Err(ApiError::nul_in(key.clone()));
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(AppQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let param = (path != ".").then_some(path);
                ApiError::invalid_query(param, e.inner().to_string())
            })
    }
}

impl ApiError {
    fn nul_in(field: String) -> ApiError {
        ApiError::Invalid {
            message: format!(
                "`{field}` contains a NUL character (\\u0000), which text fields cannot hold"
            ),
            param: Some(field),
        }
    }

    fn invalid_query(param: Option<String>, cause: String) -> ApiError {
        let message = match &param {
            Some(p) => format!("invalid query parameter `{p}`: {cause}"),
            None => format!("invalid query string: {cause}"),
        };
        ApiError::Invalid { message, param }
    }
}
