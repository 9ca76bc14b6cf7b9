//! `POST /v1/chat/completions` and the pipeline behind it (shared with the WebSocket): bound
//! and parse the body, run the filter chain, claim the `Idempotency-Key`, start (or attach to,
//! or replay) a [`Run`], drive it against the upstream cores with retries before the first
//! token, and render its events as OpenAI JSON, SSE or WebSocket messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chorus_filter_host::{CompletionTicket, Outcome};
use chorus_proto::{ErrorCode, Generate, Reply, Stored};
use serde_json::{Value, json};
use tracing::warn;

use crate::error::ApiError;
use crate::openai::{TokenLogprob, ValidChat, parse_chat};
use crate::run::{Next, Reader, Run, RunEvent, owner_of};
use crate::state::{self, Claim};
use crate::{Caller, EdgeState, RequestInfo, random_hex};

/// A run to answer from, and how the caller wants it.
#[derive(Debug)]
pub struct Started {
    pub run: Arc<Run>,
    pub reader: Reader,
    pub stream: bool,
    pub include_usage: bool,
    pub tier: String,
    pub request_id: String,
}

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

/// The whole pipeline up to a run to read from.
pub async fn start(
    st: &Arc<EdgeState>,
    headers: &HeaderMap,
    client_ip: &str,
    body: &[u8],
) -> Result<Started, ApiError> {
    let limits = &st.cfg.limits;
    let chat = parse_chat(body, limits)?;
    st.check_model(&chat.model)?;
    let echo_prompt = echo_prompt(headers, st.cfg.debug.echo_prompt)?;
    let idem = idempotency_key(headers, limits.max_idempotency_key_bytes)?;
    let caller = st.admit(headers, client_ip, "POST", "/v1/chat/completions", Some(&chat)).await?;
    let owner = owner_of(&caller.tenant, &caller.user);
    let scope = state::scope(&caller.tenant, &caller.user);
    let request_id = match &idem {
        // The same key always makes the same request id, so a core that already committed
        // the answer replays it (a retry after this edge died).
        Some(k) => format!("idem-{}", &state::fingerprint(format!("{scope}\0{k}").as_bytes())[..32]),
        None => format!("req-{}", random_hex(16)),
    };
    let run_id = format!("chatcmpl-{}", random_hex(12));
    let mut idem_record = None;
    let Caller { tenant, user, tier, tier_name, ticket } = caller;
    if let Some(key) = idem {
        let fp = state::fingerprint(body);
        match st.state.claim(&scope, &key, &fp, &st.cfg.edge_id, &run_id).await {
            Ok(Claim::Fresh) => idem_record = Some((scope.clone(), key, fp)),
            Ok(other) => {
                // Not generating: give back what the filters reserved.
                st.complete(ticket, Outcome::Cancelled, Default::default());
                return answer_claim(st, other, &owner, &chat, tier_name, request_id);
            }
            Err(e) => {
                st.complete(ticket, Outcome::Failed, Default::default());
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
        echo_prompt,
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
    let run = Run::new(run_id, chat.stream, chat.include_usage, tier_name.clone(), owner, max_buffer, grace);
    // Only answers that can be resumed or attached to are kept by id.
    let held = match (refused, resumable) {
        (Some(e), _) => Err(e),
        (None, true) => st.runs.insert(run.clone()),
        (None, false) => Ok(()),
    };
    if let Err(e) = held {
        st.complete(ticket, Outcome::Failed, Default::default());
        if let Some((scope, key, _)) = &idem_record {
            st.state.release(scope, key).await;
        }
        return Err(e);
    }
    let reader = run.reader();
    let key = generate.conversation.id().map(str::to_owned).unwrap_or_else(|| request_id.clone());
    let fin = Finisher { st: st.clone(), run: run.clone(), ticket, idem: idem_record };
    tokio::spawn(drive(st.clone(), run.clone(), generate, key, fin));
    Ok(Started { run, reader, stream: chat.stream, include_usage: chat.include_usage, tier: tier_name, request_id })
}

fn answer_claim(
    st: &Arc<EdgeState>,
    claim: Claim,
    owner: &[u8; 32],
    chat: &ValidChat,
    tier: String,
    request_id: String,
) -> Result<Started, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let run = match claim {
        Claim::Fresh => unreachable!("handled by the caller"),
        Claim::Mismatch => return Err(ApiError::KeyReused),
        Claim::Running { edge, run } => {
            let local = (edge == st.cfg.edge_id).then(|| st.runs.get(&run)).flatten().filter(|r| r.owned_by(owner));
            let Some(run) = local else { return Err(ApiError::InProgress) };
            st.metrics.idempotent_attaches.fetch_add(1, Relaxed);
            run
        }
        Claim::Finished { run, events } => {
            st.metrics.idempotent_replays.fetch_add(1, Relaxed);
            Run::replay(run, chat.stream, chat.include_usage, tier.clone(), *owner, events)
        }
    };
    let reader = run.reader();
    Ok(Started { run, reader, stream: chat.stream, include_usage: chat.include_usage, tier, request_id })
}

/// What to do when a run ends: reconcile the filters' reservations, record or release the
/// idempotency key.
struct Finisher {
    st: Arc<EdgeState>,
    run: Arc<Run>,
    ticket: Option<CompletionTicket>,
    idem: Option<(String, String, String)>,
}

impl Finisher {
    /// `transcript`: every event of a completed answer (the driver's own copy, whatever the
    /// bounded buffer dropped), recorded for idempotent replay.
    async fn end(self, outcome: Outcome, usage: chorus_proto::Usage, transcript: Vec<RunEvent>) {
        let filter_usage = chorus_filter_host::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
        };
        self.st.complete(self.ticket, outcome, filter_usage);
        if outcome == Outcome::Completed {
            self.st.metrics.usage(&self.run.tier, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens);
        }
        if let Some((scope, key, fp)) = self.idem {
            match outcome {
                Outcome::Completed => {
                    self.st.state.finish(&scope, &key, &fp, &self.st.cfg.edge_id, &self.run.id, transcript).await
                }
                _ => self.st.state.release(&scope, &key).await,
            }
        }
    }
}

/// Codes another core may answer differently, before any token was sent.
fn retryable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Draining | ErrorCode::ShuttingDown | ErrorCode::OverCapacity | ErrorCode::Internal)
}

/// Ends the run with an error if its driver stops without doing so (a panic): readers never
/// wait on an answer nobody drives.
struct EndGuard(Arc<Run>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.0.is_done() {
            self.0.push(RunEvent::Error(ApiError::Unavailable("the edge lost this answer; retry".into())));
        }
    }
}

async fn drive(st: Arc<EdgeState>, run: Arc<Run>, g: Generate, key: String, fin: Finisher) {
    use std::sync::atomic::Ordering::Relaxed;
    let _guard = EndGuard(run.clone());
    let open_timeout = Duration::from_millis(st.cfg.upstream.connect_timeout_ms);
    // The core enforces the deadline; the edge stops waiting a little later in case it cannot.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(st.cfg.upstream.deadline_ms) + 5_000);
    let candidates = st.pool.candidates(&key);
    let mut last = ApiError::Unavailable("no core is reachable; retry shortly".into());
    let mut head_sent = false;
    let mut transcript = Vec::new();
    let push = |run: &Run, transcript: &mut Vec<RunEvent>, e: RunEvent| {
        transcript.push(e.clone());
        run.push(e);
    };
    let cancelled = |st: &EdgeState| {
        st.metrics.cancelled.fetch_add(1, Relaxed);
        RunEvent::Error(ApiError::Upstream {
            code: ErrorCode::Cancelled,
            message: "the client went away".into(),
            retry_after_ms: None,
        })
    };
    for (attempt, (slot, client)) in candidates.into_iter().take(st.cfg.upstream.max_attempts).enumerate() {
        if attempt > 0 {
            st.metrics.upstream_retries.fetch_add(1, Relaxed);
        }
        let sent = Instant::now();
        let opened = tokio::select! {
            r = tokio::time::timeout(open_timeout, client.generate(g.clone())) => r,
            _ = run.cancelled() => {
                run.push(cancelled(&st));
                fin.end(Outcome::Cancelled, Default::default(), vec![]).await;
                return;
            }
        };
        let mut stream = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(core = %slot.site.name, error = %e, request_id = %g.request_id, "upstream open failed; trying the next core");
                last = ApiError::Unavailable(format!("core {} is unreachable", slot.site.name));
                continue;
            }
            Err(_) => {
                warn!(core = %slot.site.name, request_id = %g.request_id, "upstream open timed out; trying the next core");
                last = ApiError::Unavailable(format!("core {} did not take the request in time", slot.site.name));
                continue;
            }
        };
        let mut accepted = None;
        loop {
            let reply = tokio::select! {
                r = stream.next() => r,
                _ = run.cancelled() => {
                    stream.reset();
                    run.push(cancelled(&st));
                    fin.end(Outcome::Cancelled, Default::default(), vec![]).await;
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    stream.reset();
                    run.push(RunEvent::Error(ApiError::Upstream {
                        code: ErrorCode::DeadlineExceeded,
                        message: format!("no answer within {} ms", st.cfg.upstream.deadline_ms),
                        retry_after_ms: None,
                    }));
                    fin.end(Outcome::Failed, Default::default(), vec![]).await;
                    return;
                }
            };
            match reply {
                Ok(Some(Reply::Accepted(a))) => accepted = Some(a),
                Ok(Some(Reply::Token(t))) => {
                    if !head_sent {
                        head_sent = true;
                        st.metrics.upstream_ttft.observe(sent.elapsed());
                        push(&run, &mut transcript, head(accepted.as_ref()));
                    }
                    let logprobs =
                        t.logprobs.as_ref().map(|(c, top)| vec![TokenLogprob::from_proto(c, top)]).unwrap_or_default();
                    if !t.text.is_empty() || !logprobs.is_empty() {
                        push(&run, &mut transcript, RunEvent::Delta { text: t.text, logprobs });
                    }
                }
                Ok(Some(Reply::Done(d))) => {
                    if !head_sent {
                        push(&run, &mut transcript, head(accepted.as_ref()));
                    }
                    let (conversation_id, turn_version, store_error) = match d.stored {
                        Stored::NotRequested => (None, None, None),
                        Stored::Committed { conversation_id, version } => (Some(conversation_id), Some(version), None),
                        Stored::Failed { code, message } => (None, None, Some(format!("{code}: {message}"))),
                    };
                    push(
                        &run,
                        &mut transcript,
                        RunEvent::Finish {
                            finish_reason: d.finish_reason.as_str().into(),
                            usage: d.usage.into(),
                            conversation_id,
                            turn_version,
                            store_error,
                        },
                    );
                    fin.end(Outcome::Completed, d.usage, transcript).await;
                    return;
                }
                Ok(Some(Reply::Error(e))) => {
                    if !head_sent && retryable(e.code) {
                        last = e.into();
                        break;
                    }
                    run.push(RunEvent::Error(e.into()));
                    fin.end(Outcome::Failed, Default::default(), vec![]).await;
                    return;
                }
                Ok(Some(Reply::Store(_))) | Ok(None) | Err(_) => {
                    if !head_sent {
                        warn!(core = %slot.site.name, request_id = %g.request_id, "upstream stream ended before the first token; trying the next core");
                        last = ApiError::Unavailable(format!("core {} failed before answering", slot.site.name));
                        break;
                    }
                    warn!(core = %slot.site.name, request_id = %g.request_id, "upstream failed mid-answer");
                    run.push(RunEvent::Error(ApiError::Upstream {
                        code: ErrorCode::EngineFailed,
                        message: "the core serving this answer failed mid-answer; retry the request (with the same Idempotency-Key, nothing is billed twice)".into(),
                        retry_after_ms: Some(1000),
                    }));
                    fin.end(Outcome::Failed, Default::default(), vec![]).await;
                    return;
                }
            }
        }
    }
    run.push(RunEvent::Error(last));
    fin.end(Outcome::Failed, Default::default(), vec![]).await;
}

fn head(a: Option<&chorus_proto::Accepted>) -> RunEvent {
    RunEvent::Head {
        model: a.map(|a| a.model.clone()).unwrap_or_default(),
        fleet: a.map(|a| a.fleet.clone()).unwrap_or_default(),
        prompt: a.and_then(|a| a.prompt.clone()),
        degraded_model: a.is_some_and(|a| a.degraded),
        degraded_store: a.is_some_and(|a| a.store.degraded()),
        conversation_id: a.and_then(|a| a.conversation_id.clone()),
    }
}

/// Response headers from the head event.
pub fn head_headers(headers: &mut HeaderMap, head: &RunEvent, run: &Run, request_id: &str) {
    let mut set = |name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(name, v);
        }
    };
    set("x-chorus-request-id", request_id);
    set("x-chorus-tier", &run.tier);
    if let RunEvent::Head { model, fleet, degraded_model, degraded_store, conversation_id, .. } = head {
        set("x-chorus-model", model);
        if !fleet.is_empty() {
            set("x-chorus-fleet", fleet);
        }
        if let Some(c) = conversation_id {
            set("x-chorus-conversation-id", c);
        }
        let degraded: Vec<&str> =
            [(*degraded_model, "model"), (*degraded_store, "store")].iter().filter(|d| d.0).map(|d| d.1).collect();
        if !degraded.is_empty() {
            set("x-chorus-degraded", &degraded.join(","));
        }
    }
}

/// The JSON messages one event becomes on a stream (SSE `data:` or WebSocket text).
pub fn render(run: &Run, model: &str, ev: &RunEvent, include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, logprobs: Value, finish: Value| {
        let mut c = json!({
            "id": run.id, "object": "chat.completion.chunk", "created": run.created, "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    match ev {
        RunEvent::Head { fleet, prompt, .. } => {
            let mut first = chunk(json!({"role": "assistant", "content": ""}), Value::Null, Value::Null);
            first["chorus"] = head_extension(fleet, prompt.as_deref());
            vec![first]
        }
        RunEvent::Delta { text, logprobs } => {
            let lp = if logprobs.is_empty() { Value::Null } else { json!({ "content": logprobs }) };
            vec![chunk(json!({ "content": text }), lp, Value::Null)]
        }
        RunEvent::Finish { finish_reason, usage, conversation_id, turn_version, store_error } => {
            let mut last = chunk(json!({}), Value::Null, json!(finish_reason));
            last["chorus"] =
                json!({"conversation_id": conversation_id, "turn_version": turn_version, "store_error": store_error});
            let mut out = vec![last];
            if include_usage {
                out.push(json!({
                    "id": run.id, "object": "chat.completion.chunk", "created": run.created, "model": model,
                    "system_fingerprint": null, "choices": [], "usage": usage,
                }));
            }
            out
        }
        RunEvent::Error(e) => vec![e.body()],
    }
}

/// Chorus's own fields about who answered: the fleet, and the built prompt when echoed.
fn head_extension(fleet: &str, prompt: Option<&str>) -> Value {
    let mut v = json!({ "fleet": fleet });
    if let Some(p) = prompt {
        v["prompt"] = json!(p);
    }
    v
}

fn model_of(head: &Option<RunEvent>) -> String {
    match head {
        Some(RunEvent::Head { model, .. }) => model.clone(),
        _ => String::new(),
    }
}

/// Answers from a started run: an error before the first token is the HTTP error; otherwise
/// the headers, then the SSE stream or the whole completion.
/// Where a stream starts: an event index and how many of that event's frames to skip.
pub type Position = (usize, usize);

pub async fn respond(st: &Arc<EdgeState>, s: Started, from: Position, started: Instant) -> Result<Response, ApiError> {
    let first = s.run.first().await;
    if let RunEvent::Error(e) = first {
        return Err(e);
    }
    let info = RequestInfo { tier: s.tier.clone(), request_id: s.request_id.clone() };
    let mut resp = if s.stream { sse(st.clone(), s, from, started) } else { whole(st, &s, started).await? };
    resp.extensions_mut().insert(info);
    Ok(resp)
}

async fn whole(st: &Arc<EdgeState>, s: &Started, started: Instant) -> Result<Response, ApiError> {
    let mut content = String::new();
    let mut logprobs = Vec::new();
    let mut i = 0;
    let mut first_token = true;
    let finish = loop {
        match s.run.next(i).await {
            Next::Event(RunEvent::Delta { text, logprobs: lp }) => {
                if first_token {
                    first_token = false;
                    st.metrics.ttft(&s.tier, started.elapsed());
                }
                content.push_str(&text);
                logprobs.extend(lp);
            }
            Next::Event(RunEvent::Error(e)) => return Err(e),
            Next::Event(f @ RunEvent::Finish { .. }) => break f,
            Next::Event(RunEvent::Head { .. }) => {}
            Next::Pending => continue,
            Next::End | Next::Gone => return Err(ApiError::Unavailable("the answer was lost".into())),
        }
        i += 1;
    };
    let head = s.run.head();
    let model = model_of(&head);
    let RunEvent::Finish { finish_reason, usage, conversation_id, turn_version, store_error } = finish else {
        unreachable!("loop breaks on Finish")
    };
    let mut chorus = match &head {
        Some(RunEvent::Head { fleet, prompt, .. }) => head_extension(fleet, prompt.as_deref()),
        _ => json!({}),
    };
    chorus["conversation_id"] = json!(conversation_id);
    chorus["turn_version"] = json!(turn_version);
    chorus["store_error"] = json!(store_error);
    let body = json!({
        "id": s.run.id, "object": "chat.completion", "created": s.run.created, "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": if logprobs.is_empty() { Value::Null } else { json!({"content": logprobs}) },
            "finish_reason": finish_reason,
        }],
        "usage": usage,
        "chorus": chorus,
    });
    let mut resp = axum::Json(body).into_response();
    if let Some(h) = &head {
        head_headers(resp.headers_mut(), h, &s.run, &s.request_id);
    }
    Ok(resp)
}

/// How often an idle stream sends an SSE comment (keeps proxies from timing it out).
const KEEPALIVE: Duration = Duration::from_secs(15);

fn sse(st: Arc<EdgeState>, s: Started, from: Position, started: Instant) -> Response {
    let head = s.run.head();
    let model = model_of(&head);
    let mut headers = HeaderMap::new();
    if let Some(h) = &head {
        head_headers(&mut headers, h, &s.run, &s.request_id);
    }
    struct St {
        st: Arc<EdgeState>,
        s: Started,
        model: String,
        i: usize,
        skip: usize,
        ended: bool,
        first_token: bool,
        started: Instant,
    }
    let state = St { st, s, model, i: from.0, skip: from.1, ended: false, first_token: from == (0, 0), started };
    let stream = futures_util::stream::unfold(state, |mut x| async move {
        if x.ended {
            return None;
        }
        let next = match tokio::time::timeout(KEEPALIVE, x.s.run.next(x.i)).await {
            Ok(n) => n,
            Err(_) => return Some((Ok::<_, std::convert::Infallible>(Bytes::from_static(b": keep-alive\n\n")), x)),
        };
        let ev = match next {
            Next::Event(ev) => ev,
            Next::End => return None,
            Next::Pending => return Some((Ok(Bytes::new()), x)),
            Next::Gone => RunEvent::Error(ApiError::ResumeGone("this reader fell behind the buffer".into())),
        };
        if x.first_token && matches!(ev, RunEvent::Delta { .. }) {
            x.first_token = false;
            x.st.metrics.ttft(&x.s.tier, x.started.elapsed());
        }
        // Each frame has its own id (`<answer>.<event>` or `<answer>.<event>.<frame>`), so a
        // resume after any frame continues with the next one.
        let mut frames: Vec<String> =
            render(&x.s.run, &x.model, &ev, x.s.include_usage).iter().map(|v| v.to_string()).collect();
        match ev {
            RunEvent::Finish { .. } => {
                frames.push("[DONE]".into());
                x.ended = true;
            }
            RunEvent::Error(_) => x.ended = true,
            _ => {}
        }
        let mut out = String::new();
        for (k, data) in frames.iter().enumerate().skip(x.skip) {
            let id = if k == 0 { format!("{}.{}", x.s.run.id, x.i) } else { format!("{}.{}.{k}", x.s.run.id, x.i) };
            out.push_str(&format!("id: {id}\ndata: {data}\n\n"));
        }
        x.skip = 0;
        x.i += 1;
        Some((Ok(Bytes::from(out)), x))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.extend(headers);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
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
    st.complete(caller.ticket.take(), Outcome::Completed, Default::default());
    let owner = owner_of(&caller.tenant, &caller.user);
    let run = st.runs.get(id).filter(|r| r.owned_by(&owner)).ok_or_else(gone)?;
    // Continue after the frame the client saw: the next frame of the same event, and the
    // event's later frames are rendered from the event itself.
    let from = (event, frame.checked_add(1).ok_or_else(gone)?);
    if matches!(run.get(event), Next::Gone) {
        return Err(ApiError::ResumeGone(format!("event {event} of {id} is no longer buffered")));
    }
    st.metrics.resumes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reader = run.reader();
    let s = Started {
        tier: run.tier.clone(),
        stream: true,
        include_usage: run.include_usage,
        request_id: String::new(),
        run,
        reader,
    };
    respond(st, s, from, Instant::now()).await
}
