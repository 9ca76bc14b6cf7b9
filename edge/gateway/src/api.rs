//! The HTTP handlers: chat completions (through [`crate::pipeline`]), models, the caller's
//! identity, conversations (list, get, delete, export, erase) and feedback, operations.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_proto::{ConversationSummary, Rating, Reply, StoreOp, StoreReply, StoreRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admission::Caller;
use crate::error::ApiError;
use crate::pipeline;
use crate::state::{ClientIp, EdgeState, RequestInfo};

fn client_ip(parts: &Parts) -> String {
    ClientIp::of(parts).0
}

/// The body within `limit` bytes and the client timeout.
async fn read_body(st: &EdgeState, parts: &Parts, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let secs = st.cfg.limits.client_timeout_secs;
    tokio::time::timeout(std::time::Duration::from_secs(secs), pipeline::read_body(&parts.headers, body, limit))
        .await
        .map_err(|_| ApiError::Invalid { param: None, message: format!("the body did not arrive within {secs} s") })?
}

pub async fn chat_completions(State(st): State<Arc<EdgeState>>, req: Request) -> Response {
    generate(st, req, pipeline::Api::Chat).await
}

/// `POST /v1/completions`: a raw prompt, answered in the `text_completion` shape.
pub async fn completions(State(st): State<Arc<EdgeState>>, req: Request) -> Response {
    generate(st, req, pipeline::Api::Completions).await
}

/// `POST /v1/responses`: the Responses API's text subset.
pub async fn responses(State(st): State<Arc<EdgeState>>, req: Request) -> Response {
    generate(st, req, pipeline::Api::Responses).await
}

async fn generate(st: Arc<EdgeState>, req: Request, api: pipeline::Api) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let result = async {
        if let Some(last) = parts.headers.get("last-event-id") {
            let last = last.to_str().map_err(|_| ApiError::invalid("Last-Event-ID", "not visible ASCII"))?.to_owned();
            return pipeline::resume(&st, &parts.headers, &client_ip(&parts), &last).await;
        }
        let body = read_body(&st, &parts, body, st.cfg.limits.max_body_bytes).await?;
        let started_run = pipeline::start(&st, &parts.headers, &client_ip(&parts), &body, api).await?;
        pipeline::respond(&st, started_run, (0, 0), started).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/models`: `chorus` (routed by tier), then each fleet and each model the connected
/// cores serve, with the model behind it, its context length and the sampling a request that
/// leaves `temperature` / `top_p` / `top_k` unset gets.
pub async fn models(State(st): State<Arc<EdgeState>>) -> Response {
    let mut data = vec![json!({"id": "chorus", "object": "model", "created": 0, "owned_by": "chorus"})];
    for f in st.pool.models() {
        for id in [&f.fleet, &f.model] {
            if !data.iter().any(|d| d["id"] == json!(id)) {
                data.push(json!({
                    "id": id,
                    "object": "model",
                    "created": 0,
                    "owned_by": "chorus",
                    "model": f.model,
                    "context_length": f.context_length,
                    "defaults": {
                        "temperature": f.defaults.temperature,
                        "top_p": f.defaults.top_p,
                        "top_k": f.defaults.top_k,
                    },
                }));
            }
        }
    }
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn caller(st: &Arc<EdgeState>, parts: &Parts) -> Result<Caller, ApiError> {
    let c = st.admit(&parts.headers, &client_ip(parts), parts.method.as_str(), parts.uri.path(), None).await?;
    Ok(c)
}

/// Runs `f` with the admitted caller, and reports the request to the filters as done.
async fn with_caller<F, Fut>(st: Arc<EdgeState>, parts: Parts, f: F) -> Response
where
    F: FnOnce(Arc<EdgeState>, Caller) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let mut c = match caller(&st, &parts).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let ticket = c.ticket.take();
    let tier = c.tier;
    let r = f(st.clone(), c).await;
    let outcome = if r.is_ok() { chorus_filter_host::Outcome::Completed } else { chorus_filter_host::Outcome::Failed };
    st.complete(ticket, outcome, Default::default()).await;
    let mut resp = r.unwrap_or_else(IntoResponse::into_response);
    resp.extensions_mut().insert(RequestInfo { tier, request_id: String::new() });
    resp
}

pub async fn me(State(st): State<Arc<EdgeState>>, parts: Parts) -> Response {
    with_caller(st, parts, |_, c| async move {
        Ok(Json(json!({"tenant": c.tenant, "user": c.user, "tier": c.tier.as_str()})).into_response())
    })
    .await
}

/// Sends one store request to the cores (by `key`'s rendezvous order), trying the next core
/// when one cannot be reached.
async fn store(st: &EdgeState, c: &Caller, op: StoreOp, key: &str) -> Result<Vec<Reply>, ApiError> {
    let mut last = ApiError::Unavailable("no core is reachable; retry shortly".into());
    for (slot, client) in st.pool.candidates(key).into_iter().take(st.cfg.upstream.max_attempts) {
        let req = StoreRequest {
            request_id: format!("store-{}", crate::ids::random_hex(8)),
            tenant: c.tenant.clone(),
            user: c.user.clone(),
            op: op.clone(),
        };
        let op_timeout = std::time::Duration::from_millis(u64::from(st.cfg.upstream.deadline_ms).min(30_000));
        let res = tokio::time::timeout(op_timeout, client.store(req))
            .await
            .unwrap_or_else(|_| Err(chorus_proto::quic::ClientError::Stream("timed out".into())));
        match res {
            Ok(replies) => {
                if let Some(Reply::Error(e)) = replies.last() {
                    return Err(e.clone().into());
                }
                return Ok(replies);
            }
            Err(e) => {
                tracing::warn!(core = %slot.site.name, error = %e, "store request failed; trying the next core");
                last = ApiError::Unavailable(format!("core {} is unreachable", slot.site.name));
            }
        }
    }
    Err(last)
}

fn one(replies: Vec<Reply>) -> Result<StoreReply, ApiError> {
    match replies.into_iter().last() {
        Some(Reply::Store(r)) => Ok(r),
        _ => Err(ApiError::Unavailable("the core answered out of protocol".into())),
    }
}

fn summary_json(s: &ConversationSummary) -> Value {
    json!({
        "id": s.id, "object": "conversation", "tier": s.tier,
        "created_at": s.created_ms / 1000, "updated_at": s.updated_ms / 1000, "turns": s.version,
    })
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn list_conversations(State(st): State<Arc<EdgeState>>, parts: Parts) -> Response {
    let q = Query::<ListQuery>::try_from_uri(&parts.uri);
    with_caller(st, parts, |st, c| async move {
        let q = q.map_err(|e| ApiError::invalid("limit", e.body_text()))?;
        let limit = q.limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::invalid("limit", format!("limit is {limit}; it must be 1 to 1000")));
        }
        let key = c.user.clone();
        match one(store(&st, &c, StoreOp::List { limit }, &key).await?)? {
            StoreReply::List(list) => {
                let data: Vec<Value> = list.iter().map(summary_json).collect();
                Ok(Json(json!({"object": "list", "data": data})).into_response())
            }
            _ => Err(ApiError::Unavailable("the core answered out of protocol".into())),
        }
    })
    .await
}

fn check_id(id: &str) -> Result<(), ApiError> {
    if (1..=256).contains(&id.len()) && !id.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::invalid("id", "a conversation id is 1 to 256 bytes with no control characters"))
    }
}

pub async fn get_conversation(State(st): State<Arc<EdgeState>>, Path(id): Path<String>, parts: Parts) -> Response {
    with_caller(st, parts, |st, c| async move {
        check_id(&id)?;
        match one(store(&st, &c, StoreOp::Get { conversation_id: id.clone() }, &id).await?)? {
            StoreReply::Conversation(v) => {
                let mut body = summary_json(&v.summary);
                body["turns"] = serde_json::to_value(&v.turns).unwrap_or(Value::Null);
                for t in body["turns"].as_array_mut().into_iter().flatten() {
                    if let Some(ms) = t["created_ms"].as_u64() {
                        t["created_at"] = json!(ms / 1000);
                    }
                }
                Ok(Json(body).into_response())
            }
            _ => Err(ApiError::Unavailable("the core answered out of protocol".into())),
        }
    })
    .await
}

pub async fn delete_conversation(State(st): State<Arc<EdgeState>>, Path(id): Path<String>, parts: Parts) -> Response {
    with_caller(st, parts, |st, c| async move {
        check_id(&id)?;
        one(store(&st, &c, StoreOp::Delete { conversation_id: id.clone() }, &id).await?)?;
        Ok(Json(json!({"id": id, "object": "conversation.deleted", "deleted": true})).into_response())
    })
    .await
}

/// `DELETE /v1/conversations`: erase everything the caller stored — conversations, feedback,
/// the cores' and this edge's idempotency records.
pub async fn erase(State(st): State<Arc<EdgeState>>, parts: Parts) -> Response {
    with_caller(st, parts, |st, c| async move {
        let key = c.user.clone();
        let core = match one(store(&st, &c, StoreOp::Erase, &key).await?)? {
            StoreReply::Erased(e) => e,
            _ => return Err(ApiError::Unavailable("the core answered out of protocol".into())),
        };
        let edge = st.idempotency.erase(&crate::idempotency::scope(&c.tenant, &c.user)).await?;
        Ok(Json(json!({
            "object": "user_data.erased",
            "conversations": core.conversations,
            "feedback": core.feedback,
            "idempotency_records": core.idempotency_records + edge,
        }))
        .into_response())
    })
    .await
}

/// `GET /v1/conversations/export`: every conversation and feedback record, as one JSON
/// document streamed through in the pieces the core sends (never held whole at the edge).
pub async fn export(State(st): State<Arc<EdgeState>>, parts: Parts) -> Response {
    with_caller(st, parts, |st, c| async move {
        let mut last = ApiError::Unavailable("no core is reachable; retry shortly".into());
        for (slot, client) in st.pool.candidates(&c.user).into_iter().take(st.cfg.upstream.max_attempts) {
            let req = StoreRequest {
                request_id: format!("export-{}", crate::ids::random_hex(8)),
                tenant: c.tenant.clone(),
                user: c.user.clone(),
                op: StoreOp::Export,
            };
            let mut stream = match client.open().await {
                Ok(s) => s,
                Err(e) => {
                    last = ApiError::Unavailable(format!("core {}: {e}", slot.site.name));
                    continue;
                }
            };
            if let Err(e) = stream.send(&chorus_proto::Request::Store(Box::new(req))).await {
                last = ApiError::Unavailable(format!("core {}: {e}", slot.site.name));
                continue;
            }
            // The first piece decides the status; the rest streams.
            let first = match stream.next().await {
                Ok(Some(Reply::Store(StoreReply::Export { data, last }))) => (data, last),
                Ok(Some(Reply::Error(e))) => return Err(e.into()),
                _ => {
                    last = ApiError::Unavailable(format!("core {} failed before answering", slot.site.name));
                    continue;
                }
            };
            let body =
                futures_util::stream::unfold((Some(first), stream, false), |(first, mut stream, done)| async move {
                    if let Some((data, last)) = first {
                        return Some((Ok::<_, std::convert::Infallible>(Bytes::from(data)), (None, stream, last)));
                    }
                    if done {
                        return None;
                    }
                    match stream.next().await {
                        Ok(Some(Reply::Store(StoreReply::Export { data, last }))) => {
                            Some((Ok(Bytes::from(data)), (None, stream, last)))
                        }
                        // A failure mid-document truncates it (the JSON will not parse), never silently.
                        _ => None,
                    }
                });
            let mut resp = Response::new(Body::from_stream(body));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"chorus-export.json\""),
            );
            return Ok(resp);
        }
        Err(last)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    conversation_id: String,
    version: u64,
    rating: Rating,
    #[serde(default)]
    comment: Option<String>,
}

pub async fn feedback(State(st): State<Arc<EdgeState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = read_body(&st, &parts, body, 64 * 1024).await;
    with_caller(st, parts, |st, c| async move {
        let body = body?;
        let de = &mut serde_json::Deserializer::from_slice(&body);
        let fb: FeedbackBody = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ApiError::Invalid { message: format!("{path}: {}", e.inner()), param: Some(path) }
        })?;
        check_id(&fb.conversation_id)?;
        let max = chorus_proto::Limits::default().max_comment_bytes;
        if fb.comment.as_ref().is_some_and(|c| c.len() > max) {
            return Err(ApiError::invalid("comment", format!("the limit is {max} bytes")));
        }
        let op = StoreOp::Feedback {
            conversation_id: fb.conversation_id.clone(),
            version: fb.version,
            rating: fb.rating,
            comment: fb.comment,
        };
        match one(store(&st, &c, op, &fb.conversation_id).await?)? {
            StoreReply::FeedbackRecorded { feedback_id } => {
                Ok((StatusCode::CREATED, Json(json!({"id": feedback_id, "object": "feedback"}))).into_response())
            }
            _ => Err(ApiError::Unavailable("the core answered out of protocol".into())),
        }
    })
    .await
}

pub async fn metrics(State(st): State<Arc<EdgeState>>) -> Response {
    let mut text = st.metrics.render(&st.pool.health(), &st.pool.loads(), st.runs.len());
    text.push_str(&st.admission.filters.metrics().render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when some core can take requests and a filter chain is installed.
pub async fn readyz(State(st): State<Arc<EdgeState>>) -> Response {
    let healthy: usize = st.pool.health().iter().map(|h| h.1).sum();
    if healthy > 0 {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no healthy core").into_response()
    }
}

pub async fn not_found(parts: Parts) -> Response {
    let path: String = parts.uri.path().chars().take(128).collect();
    ApiError::NotFound(format!("no route {} {path}", parts.method)).into_response()
}
