//! Rendering a run's events for the client, in OpenAI's shapes: [`render`] turns one event into
//! the `chat.completion.chunk` messages a stream carries (SSE `data:` or WebSocket text),
//! [`head_headers`] sets the `x-chorus-*` response headers; [`completion`] assembles the whole
//! `chat.completion` body and [`sse`] the event stream.

pub mod completion;
pub mod sse;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::openai::Shape;
use crate::run::{Reader, Run, RunEvent};

/// A run to answer from, and how the caller wants it.
#[derive(Debug)]
pub struct Started {
    pub run: Arc<Run>,
    pub reader: Reader,
    pub stream: bool,
    pub include_usage: bool,
    pub request_id: String,
}

/// Where a stream starts: an event index and how many of that event's frames to skip.
pub type Position = (usize, usize);

/// Response headers from the head event.
pub fn head_headers(headers: &mut HeaderMap, head: &RunEvent, run: &Run, request_id: &str) {
    let mut set = |name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(name, v);
        }
    };
    set("x-chorus-request-id", request_id);
    set("x-chorus-tier", run.tier.as_str());
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
    if let Shape::Text { echo } = run.shape {
        return render_text(run, model, ev, include_usage, echo);
    }
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
        RunEvent::ToolCall { index, id, name } => {
            let call =
                json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
            vec![chunk(json!({ "tool_calls": [call] }), Value::Null, Value::Null)]
        }
        RunEvent::ToolArgs { index, text } => {
            let call = json!({"index": index, "function": {"arguments": text}});
            vec![chunk(json!({ "tool_calls": [call] }), Value::Null, Value::Null)]
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

/// A `/v1/completions` stream's messages: `text_completion` objects.
fn render_text(run: &Run, model: &str, ev: &RunEvent, include_usage: bool, echo: bool) -> Vec<Value> {
    let chunk = |text: &str, logprobs: Value, finish: Value| {
        let mut c = json!({
            "id": run.id, "object": "text_completion", "created": run.created, "model": model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    match ev {
        RunEvent::Head { prompt, .. } => match prompt.as_deref() {
            Some(p) if echo => vec![chunk(p, Value::Null, Value::Null)],
            _ => Vec::new(),
        },
        RunEvent::Delta { text, logprobs } => vec![chunk(text, text_logprobs(logprobs), Value::Null)],
        // Tools are not offered to completions; nothing else becomes a call.
        RunEvent::ToolCall { .. } | RunEvent::ToolArgs { .. } => Vec::new(),
        RunEvent::Finish { finish_reason, usage, .. } => {
            let mut out = vec![chunk("", Value::Null, json!(finish_reason))];
            if include_usage {
                out.push(json!({
                    "id": run.id, "object": "text_completion", "created": run.created, "model": model,
                    "system_fingerprint": null, "choices": [], "usage": usage,
                }));
            }
            out
        }
        RunEvent::Error(e) => vec![e.body()],
    }
}

/// The legacy completions `logprobs` object for some tokens (`null` when none were asked for).
pub(crate) fn text_logprobs(lp: &[crate::openai::TokenLogprob]) -> Value {
    if lp.is_empty() {
        return Value::Null;
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(lp.len());
    for l in lp {
        offsets.push(offset);
        offset += l.token.len();
    }
    json!({
        "tokens": lp.iter().map(|l| &l.token).collect::<Vec<_>>(),
        "token_logprobs": lp.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lp.iter().map(|l| {
            l.top_logprobs.iter().map(|t| (t.token.clone(), json!(t.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// Chorus's own fields about who answered: the fleet, and the built prompt when echoed.
pub(crate) fn head_extension(fleet: &str, prompt: Option<&str>) -> Value {
    let mut v = json!({ "fleet": fleet });
    if let Some(p) = prompt {
        v["prompt"] = json!(p);
    }
    v
}

pub(crate) fn model_of(head: &Option<RunEvent>) -> String {
    match head {
        Some(RunEvent::Head { model, .. }) => model.clone(),
        _ => String::new(),
    }
}
