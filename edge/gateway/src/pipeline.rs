//! The pipeline behind `POST /v1/chat/completions` (and each WebSocket request): bound and
//! parse the body, check the model, run the filter chain, claim the `Idempotency-Key`, then
//! start a [`Run`] that [`crate::driver`] drives upstream — or attach to a running one, or
//! replay a finished one — and answer from it through [`crate::render`]. `resume` serves a
//! reconnect with `Last-Event-ID`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use chorus_filter_host::Outcome;
use chorus_proto::{Generate, Tier};

use crate::admission::Caller;
use crate::driver::{self, Finisher};
use crate::error::ApiError;
use crate::idempotency::{self, Claim};
use crate::ids::random_hex;
use crate::openai::{Shape, ValidChat, parse_chat, parse_completion, parse_responses};
use crate::render::{self, Position, Started};
use crate::run::{Form, Next, Run, RunEvent, owner_of};
use crate::state::{EdgeState, RequestInfo};

/// Reads at most `limit` bytes of body; a larger one is refused as soon as it is known.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let mut frames = body.into_data_stream();
    // A claimed length reserves at most 64 KiB up front: a client that stalls pins no more.
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit.min(64 * 1024) as u64) as usize);
    while let Some(chunk) = frames.next().await {
        let chunk = chunk.map_err(|e| ApiError::Invalid { param: None, message: format!("reading the body: {e}") })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn idempotency_key(headers: &HeaderMap, max: usize) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let ok = v.to_str().ok().filter(|s| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()));
    match ok {
        Some(s) => Ok(Some(s.to_owned())),
        None => Err(ApiError::invalid("Idempotency-Key", format!("1 to {max} visible ASCII characters"))),
    }
}

/// `x-chorus-echo-prompt: 1` asks for the built prompt; only an edge configured to allow it
/// (`debug.echo_prompt`) says yes.
fn echo_prompt(headers: &HeaderMap, allowed: bool) -> Result<bool, ApiError> {
    match headers.get("x-chorus-echo-prompt").map(|v| v.as_bytes()) {
        None | Some(b"0") => Ok(false),
        Some(b"1") if allowed => Ok(true),
        Some(b"1") => {
            Err(ApiError::invalid("x-chorus-echo-prompt", "this edge does not echo prompts (debug.echo_prompt is off)"))
        }
        Some(_) => Err(ApiError::invalid("x-chorus-echo-prompt", "expected 0 or 1")),
    }
}

/// The OpenAI API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Responses,
}

impl Api {
    /// The route, as the filter chain sees it.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Responses => "/v1/responses",
        }
    }
}

/// The whole pipeline up to a run to read from.
pub async fn start(
    st: &Arc<EdgeState>,
    headers: &HeaderMap,
    client_ip: &str,
    body: &[u8],
    api: Api,
) -> Result<Started, ApiError> {
    let limits = &st.cfg.limits;
    let chat = match api {
        Api::Chat => parse_chat(body, limits)?,
        Api::Completions => parse_completion(body, limits)?,
        Api::Responses => parse_responses(body, limits)?,
    };
    st.check_model(&chat.model)?;
    let echo_prompt = echo_prompt(headers, st.cfg.debug.echo_prompt)?;
    let idem = idempotency_key(headers, limits.max_idempotency_key_bytes)?;
    let caller = st.admit(headers, client_ip, "POST", api.path(), Some(&chat)).await?;
    let owner = owner_of(&caller.tenant, &caller.user);
    let scope = idempotency::scope(&caller.tenant, &caller.user);
    let request_id = match &idem {
        // The same key always makes the same request id, so a core that already committed
        // the answer replays it (a retry after this edge died).
        Some(k) => format!("idem-{}", &idempotency::fingerprint(format!("{scope}\0{k}").as_bytes())[..32]),
        None => format!("req-{}", random_hex(16)),
    };
    let prefix = match api {
        Api::Chat => "chatcmpl-",
        Api::Completions => "cmpl-",
        Api::Responses => "resp_",
    };
    let run_id = format!("{prefix}{}", random_hex(12));
    let mut idem_record = None;
    let Caller { tenant, user, tier, ticket } = caller;
    // The key is claimed after the filter chain, and a repeat is not charged because the
    // filters hear it ended `Replayed` (the rate limiter gives the message and the token
    // reservation back). It cannot be looked up before the chain: records are scoped to the
    // caller the chain authenticates — a lookup before it would hand a stored answer to a
    // revoked key, which `resume` refuses too — and the chain is the operator's ordered list
    // of modules, so the edge cannot run only the part that authenticates. What that costs: a
    // repeat passes the limits like any attempt (it counts in the burst window, and a caller
    // at a limit waits for a free slot as for a new request), but it never keeps a charge.
    if let Some(key) = idem {
        let fp = idempotency::fingerprint(body);
        match st.idempotency.claim(&scope, &key, &fp, &st.cfg.edge_id, &run_id).await {
            Ok(Claim::Fresh) => idem_record = Some((scope.clone(), key, fp)),
            Ok(other) => {
                // A key reused with another body is the caller's error; any other repeat is
                // answered by (or waits on) the request that was charged.
                let outcome = if matches!(other, Claim::Mismatch) { Outcome::Failed } else { Outcome::Replayed };
                st.complete(ticket, outcome, Default::default()).await;
                return answer_claim(st, other, &owner, &chat, tier, request_id).await;
            }
            Err(e) => {
                st.complete(ticket, driver::failure(&e, false), Default::default()).await;
                return Err(e);
            }
        }
    }
    let generate = Generate {
        request_id: request_id.clone(),
        tenant,
        user,
        tier,
        conversation: chat.conversation.clone(),
        messages: chat.messages.clone(),
        sampling: chat.sampling.clone(),
        max_tokens: chat.max_tokens,
        stop: chat.stop.clone(),
        deadline_ms: Some(st.cfg.upstream.deadline_ms),
        trace: headers.get("traceparent").and_then(|v| v.to_str().ok()).filter(|v| v.len() <= 128).map(str::to_owned),
        // A completion's `echo` is its own prompt, not the debug echo of a built one.
        echo_prompt: echo_prompt || chat.shape == Shape::Text { echo: true },
        prompt: chat.raw.clone(),
        n: chat.n,
        constraint: chat.constraint.clone(),
        tools: chat.tools.clone(),
        tool_choice: chat.tool_choice.clone(),
        parallel_tool_calls: chat.parallel_tool_calls,
    };
    // The structural limits the core checks, and the frame the request must fit in.
    let refused = match generate.check(&chorus_proto::Limits::default()) {
        Err(e) => Some(ApiError::Invalid { param: None, message: e.to_string() }),
        Ok(()) => {
            let request = chorus_proto::Request::Generate(Box::new(generate.clone()));
            chorus_proto::encode_to_vec(&request, chorus_proto::DEFAULT_MAX_FRAME)
                .err()
                .map(|_| ApiError::TooLarge { limit: chorus_proto::DEFAULT_MAX_FRAME as usize })
        }
    };
    let resumable = chat.stream || idem_record.is_some();
    let grace = if resumable { Duration::from_secs(st.cfg.resume.window_secs) } else { Duration::ZERO };
    let max_buffer = st.cfg.resume.max_buffer_bytes;
    let run = Run::new(run_id, form(&chat), tier, owner, max_buffer, grace);
    // Only answers that can be resumed or attached to are kept by id.
    let held = match (refused, resumable) {
        (Some(e), _) => Err(e),
        (None, true) => st.runs.insert(run.clone()).inspect(|()| {
            if let Some(shared) = &st.shared {
                tokio::spawn(shared.clone().publish(run.clone(), owner));
            }
        }),
        (None, false) => Ok(()),
    };
    if let Err(e) = held {
        st.complete(ticket, driver::failure(&e, false), Default::default()).await;
        if let Some((scope, key, _)) = &idem_record {
            st.idempotency.release(scope, key).await;
        }
        return Err(e);
    }
    let reader = run.reader();
    let key = generate.conversation.id().map(str::to_owned).unwrap_or_else(|| request_id.clone());
    let fin = Finisher { st: st.clone(), run: run.clone(), ticket, idem: idem_record };
    tokio::spawn(driver::drive(st.clone(), run.clone(), generate, key, fin));
    Ok(Started { run, reader, stream: chat.stream, include_usage: chat.include_usage, request_id })
}

fn form(chat: &ValidChat) -> Form {
    Form { stream: chat.stream, include_usage: chat.include_usage, shape: chat.shape }
}

async fn answer_claim(
    st: &Arc<EdgeState>,
    claim: Claim,
    owner: &[u8; 32],
    chat: &ValidChat,
    tier: Tier,
    request_id: String,
) -> Result<Started, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let run = match claim {
        Claim::Fresh => unreachable!("handled by the caller"),
        Claim::Mismatch => return Err(ApiError::KeyReused),
        Claim::Running { edge, run } => {
            let local = (edge == st.cfg.edge_id).then(|| st.runs.get(&run)).flatten().filter(|r| r.owned_by(owner));
            // Running on another edge of the region: follow it through Redis when it is shared.
            let found = match (local, &st.shared) {
                (Some(r), _) => Some(r),
                (None, Some(shared)) => shared.mirror(&st.runs, &run, owner, st.cfg.resume.max_buffer_bytes).await?,
                (None, None) => None,
            };
            let Some(run) = found else { return Err(ApiError::InProgress) };
            st.metrics.idempotent_attaches.fetch_add(1, Relaxed);
            run
        }
        Claim::Finished { run, events } => {
            st.metrics.idempotent_replays.fetch_add(1, Relaxed);
            Run::replay(run, form(chat), tier, *owner, events)
        }
    };
    let reader = run.reader();
    Ok(Started { run, reader, stream: chat.stream, include_usage: chat.include_usage, request_id })
}

/// Answers from a started run: an error before the first token is the HTTP error; otherwise
/// the headers, then the SSE stream or the whole completion.
pub async fn respond(st: &Arc<EdgeState>, s: Started, from: Position, started: Instant) -> Result<Response, ApiError> {
    let first = s.run.first().await;
    if let RunEvent::Error(e) = first {
        return Err(e);
    }
    let info = RequestInfo { tier: s.run.tier, request_id: s.request_id.clone() };
    let mut resp = if s.stream {
        render::sse::stream(st.clone(), s, from, started)
    } else {
        render::completion::whole(&st.metrics, &s, started).await?
    };
    resp.extensions_mut().insert(info);
    Ok(resp)
}

/// A reconnect with `Last-Event-ID: <answer id>.<event>[.<frame>]`: the rest of that answer,
/// for the caller it belongs to (the filter chain runs again: a revoked key cannot resume).
pub async fn resume(
    st: &Arc<EdgeState>,
    headers: &HeaderMap,
    client_ip: &str,
    last: &str,
) -> Result<Response, ApiError> {
    let gone = || {
        ApiError::ResumeGone(format!(
            "no resumable answer {:?} on this edge (answers stay resumable {} s after their client goes away or they finish)",
            last.chars().take(64).collect::<String>(),
            st.cfg.resume.window_secs
        ))
    };
    let mut parts = last.splitn(3, '.');
    let (Some(id), Some(event)) = (parts.next(), parts.next()) else { return Err(gone()) };
    let event: usize = event.parse().map_err(|_| gone())?;
    let frame: usize = match parts.next() {
        Some(f) => f.parse().map_err(|_| gone())?,
        None => 0,
    };
    let mut caller = st.admit(headers, client_ip, "POST", "/v1/chat/completions", None).await?;
    st.complete(caller.ticket.take(), Outcome::Completed, Default::default()).await;
    let owner = owner_of(&caller.tenant, &caller.user);
    let run = match (st.runs.get(id), &st.shared) {
        (Some(r), _) => Some(r),
        // Not this edge's: another edge of the region may share it (an edge restarted, or the
        // load balancer sent the reconnect elsewhere).
        (None, Some(shared)) => shared.mirror(&st.runs, id, &owner, st.cfg.resume.max_buffer_bytes).await?,
        (None, None) => None,
    };
    let run = run.filter(|r| r.owned_by(&owner)).ok_or_else(gone)?;
    // Continue after the frame the client saw: the next frame of the same event, and the
    // event's later frames are rendered from the event itself.
    let from = (event, frame.checked_add(1).ok_or_else(gone)?);
    if matches!(run.get(event), Next::Gone) {
        return Err(ApiError::ResumeGone(format!("event {event} of {id} is no longer buffered")));
    }
    st.metrics.resumes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reader = run.reader();
    let s = Started { stream: true, include_usage: run.include_usage, request_id: String::new(), run, reader };
    respond(st, s, from, Instant::now()).await
}
