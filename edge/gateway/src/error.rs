//! Every error the API answers with, and the one place that turns them into HTTP: an
//! OpenAI-style body `{"error": {"message", "type", "param", "code"}}`, the status, and
//! `Retry-After` when waiting helps.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_proto::{ErrorCode, ErrorReply};
use serde::{Deserialize, Serialize};

/// An API error. `code` is stable (metrics label, clients branch on it).
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum ApiError {
    /// The request is malformed or a field is out of range; `param` names the field.
    #[error("{message}")]
    Invalid { param: Option<String>, message: String },
    /// The body is larger than the edge accepts.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// `model` names no model this edge serves.
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    /// A route or a resource that does not exist (for this caller).
    #[error("{0}")]
    NotFound(String),
    /// A filter refused the request (authentication, rate limit, safety, …).
    #[error("{message}")]
    Denied { status: u16, code: String, message: String, retry_after_ms: Option<u64> },
    /// The same `Idempotency-Key` is still being answered on another edge.
    #[error("a request with this Idempotency-Key is still in progress")]
    InProgress,
    /// The same `Idempotency-Key` came with a different body.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// A resume point that is not (or no longer) buffered.
    #[error("{0}")]
    ResumeGone(String),
    /// The core answered with an error.
    #[error("{message}")]
    Upstream { code: ErrorCode, message: String, retry_after_ms: Option<u32> },
    /// No core could take the request.
    #[error("{0}")]
    Unavailable(String),
    /// The edge's own state store failed.
    #[error("edge state store: {0}")]
    State(String),
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid { param: Some(param.into()), message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        let code = match self {
            ApiError::Invalid { .. } => 400,
            ApiError::TooLarge { .. } => 413,
            ApiError::UnknownModel(_) | ApiError::NotFound(_) => 404,
            ApiError::Denied { status, .. } => *status,
            ApiError::InProgress => 409,
            ApiError::KeyReused => 422,
            ApiError::ResumeGone(_) => 410,
            ApiError::Upstream { code, .. } => code.http_status(),
            ApiError::Unavailable(_) | ApiError::State(_) => 503,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The stable code (OpenAI `error.code`, and the metrics label).
    pub fn code(&self) -> String {
        match self {
            ApiError::Invalid { .. } => "invalid_request".into(),
            ApiError::TooLarge { .. } => "request_too_large".into(),
            ApiError::UnknownModel(_) => "model_not_found".into(),
            ApiError::NotFound(_) => "not_found".into(),
            ApiError::Denied { code, .. } => code.clone(),
            ApiError::InProgress => "idempotency_key_in_progress".into(),
            ApiError::KeyReused => "idempotency_key_reused".into(),
            ApiError::ResumeGone(_) => "resume_unavailable".into(),
            ApiError::Upstream { code, .. } => code.to_string(),
            ApiError::Unavailable(_) => "no_upstream".into(),
            ApiError::State(_) => "state_unavailable".into(),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { param, .. } => param.as_deref(),
            ApiError::UnknownModel(_) => Some("model"),
            ApiError::KeyReused | ApiError::InProgress => Some("Idempotency-Key"),
            ApiError::ResumeGone(_) => Some("Last-Event-ID"),
            _ => None,
        }
    }

    /// OpenAI's error `type`, from the status.
    fn kind(&self) -> &'static str {
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "invalid_request_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// Whether the caller brought this error on themselves (a bad request, a refusal, a key
    /// misused, an unknown conversation) rather than the edge or a core failing them. A request
    /// that fails before its first token for a reason that is not the caller's is not charged
    /// to their limits (the filters hear `Outcome::Unavailable`).
    pub fn is_callers_fault(&self) -> bool {
        match self {
            ApiError::Invalid { .. }
            | ApiError::TooLarge { .. }
            | ApiError::UnknownModel(_)
            | ApiError::NotFound(_)
            | ApiError::Denied { .. }
            | ApiError::KeyReused
            | ApiError::ResumeGone(_) => true,
            ApiError::Upstream { code, .. } => upstream_callers_fault(*code),
            ApiError::InProgress | ApiError::Unavailable(_) | ApiError::State(_) => false,
        }
    }

    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::Denied { retry_after_ms, .. } => *retry_after_ms,
            ApiError::Upstream { retry_after_ms, .. } => retry_after_ms.map(u64::from),
            ApiError::InProgress => Some(1000),
            ApiError::Unavailable(_) => Some(1000),
            _ => None,
        }
    }

    /// The body, as a JSON value (SSE and WebSocket error events carry the same object).
    pub fn body(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: String,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: String,
        }
        serde_json::json!({ "error": Inner { message: self.to_string(), kind: self.kind(), param: self.param(), code: self.code() } })
    }
}

/// Whether a core's error code blames the request rather than the core or its fleet.
fn upstream_callers_fault(code: ErrorCode) -> bool {
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::PromptTooLong
        | ErrorCode::NotFound
        | ErrorCode::Conflict
        | ErrorCode::Cancelled => true,
        // The deadline is the edge's (`upstream.deadline_ms`), not one the caller chose.
        ErrorCode::OverCapacity
        | ErrorCode::QueueTimeout
        | ErrorCode::Draining
        | ErrorCode::ShuttingDown
        | ErrorCode::DeadlineExceeded
        | ErrorCode::Protocol
        | ErrorCode::StoreUnavailable
        | ErrorCode::EngineFailed
        | ErrorCode::Internal => false,
        // A code this build does not know is not assumed to be the core's failure.
        ErrorCode::Other(_) => true,
    }
}

impl From<ErrorReply> for ApiError {
    fn from(e: ErrorReply) -> Self {
        match (e.code, e.param) {
            // The core found a field at fault (a schema that does not compile, a token id
            // outside the model's vocabulary): the same 400 the edge's own checks give.
            (ErrorCode::InvalidRequest, Some(param)) => ApiError::Invalid { param: Some(param), message: e.message },
            _ => ApiError::Upstream { code: e.code, message: e.message, retry_after_ms: e.retry_after_ms },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        if let Some(ms) = self.retry_after_ms() {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
                resp.headers_mut().insert("retry-after-ms", v);
            }
        }
        resp
    }
}

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("filters: {0}")]
    Filters(String),
    #[error("state store: {0}")]
    State(String),
    #[error("binding {addr}: {why}")]
    Bind { addr: std::net::SocketAddr, why: String },
}
