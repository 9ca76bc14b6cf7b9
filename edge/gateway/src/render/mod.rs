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
use crate::openai::Usage;
use crate::run::{Next, Reader, Run, RunEvent};

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
    match run.shape {
        Shape::Text { echo } => return render_text(run, model, ev, include_usage, echo),
        Shape::Responses => return render_responses(run, model, ev),
        Shape::Chat => {}
    }
    let chunk = |index: u32, delta: Value, logprobs: Value, finish: Value| {
        let choice = json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish});
        envelope(run, model, "chat.completion.chunk", Some(choice), include_usage.then_some(Value::Null))
    };
    match ev {
        RunEvent::Head { fleet, prompt, choices, .. } => {
            let mut out: Vec<Value> = (0..(*choices).max(1))
                .map(|i| chunk(i, json!({"role": "assistant", "content": ""}), Value::Null, Value::Null))
                .collect();
            out[0]["chorus"] = head_extension(fleet, prompt.as_deref());
            out
        }
        RunEvent::Delta { text, logprobs, choice } => {
            let lp = if logprobs.is_empty() { Value::Null } else { json!({ "content": logprobs }) };
            vec![chunk(*choice, json!({ "content": text }), lp, Value::Null)]
        }
        RunEvent::ToolCall { index, id, name, choice } => {
            let call =
                json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
            vec![chunk(*choice, json!({ "tool_calls": [call] }), Value::Null, Value::Null)]
        }
        RunEvent::ToolArgs { index, text, choice } => {
            let call = json!({"index": index, "function": {"arguments": text}});
            vec![chunk(*choice, json!({ "tool_calls": [call] }), Value::Null, Value::Null)]
        }
        RunEvent::Finish { finish_reason, usage, conversation_id, turn_version, store_error, choices } => {
            let reasons: Vec<&String> = if choices.is_empty() { vec![finish_reason] } else { choices.iter().collect() };
            let mut out: Vec<Value> =
                reasons.iter().enumerate().map(|(i, r)| chunk(i as u32, json!({}), Value::Null, json!(r))).collect();
            if let Some(last) = out.last_mut() {
                last["chorus"] = json!({"conversation_id": conversation_id, "turn_version": turn_version, "store_error": store_error});
            }
            if include_usage {
                out.push(envelope(run, model, "chat.completion.chunk", None, Some(json!(usage))));
            }
            out
        }
        RunEvent::Error(e) => vec![e.body()],
    }
}

/// One stream message: `object` with `choice` (none for the closing usage message), and
/// `usage` when the caller asked for it (null until the end).
fn envelope(run: &Run, model: &str, object: &str, choice: Option<Value>, usage: Option<Value>) -> Value {
    let mut c = json!({
        "id": run.id, "object": object, "created": run.created, "model": model, "system_fingerprint": null,
        "choices": choice.map_or_else(|| json!([]), |c| json!([c])),
    });
    if let Some(u) = usage {
        c["usage"] = u;
    }
    c
}

/// A `/v1/completions` stream's messages: `text_completion` objects.
fn render_text(run: &Run, model: &str, ev: &RunEvent, include_usage: bool, echo: bool) -> Vec<Value> {
    let chunk = |index: u32, text: &str, logprobs: Value, finish: Value| {
        let choice = json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish});
        envelope(run, model, "text_completion", Some(choice), include_usage.then_some(Value::Null))
    };
    match ev {
        RunEvent::Head { prompt, choices, .. } => match prompt.as_deref() {
            Some(p) if echo => (0..(*choices).max(1)).map(|i| chunk(i, p, Value::Null, Value::Null)).collect(),
            _ => Vec::new(),
        },
        RunEvent::Delta { text, logprobs, choice } => vec![chunk(*choice, text, text_logprobs(logprobs), Value::Null)],
        // Tools are not offered to completions; nothing else becomes a call.
        RunEvent::ToolCall { .. } | RunEvent::ToolArgs { .. } => Vec::new(),
        RunEvent::Finish { finish_reason, usage, choices, .. } => {
            let reasons: Vec<&String> = if choices.is_empty() { vec![finish_reason] } else { choices.iter().collect() };
            let mut out: Vec<Value> =
                reasons.iter().enumerate().map(|(i, r)| chunk(i as u32, "", Value::Null, json!(r))).collect();
            if include_usage {
                out.push(envelope(run, model, "text_completion", None, Some(json!(usage))));
            }
            out
        }
        RunEvent::Error(e) => vec![e.body()],
    }
}

/// The Responses API's `response` object: one assistant message holding `text`.
pub(crate) fn response_object(
    run: &Run,
    model: &str,
    status: &str,
    text: Option<&str>,
    usage: Option<&Usage>,
) -> Value {
    let item_id = format!("msg_{}", run.id.trim_start_matches("resp_"));
    let output = match text {
        Some(t) => json!([{
            "type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": t, "annotations": []}],
        }]),
        None => json!([]),
    };
    json!({
        "id": run.id, "object": "response", "created_at": run.created, "status": status, "model": model,
        "output": output, "error": null, "incomplete_details": null, "instructions": null, "metadata": {},
        "parallel_tool_calls": false, "tool_choice": "none", "tools": [], "temperature": null, "top_p": null,
        "text": {"format": {"type": "text"}},
        "usage": usage.map(|u| json!({
            "input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens, "total_tokens": u.total_tokens,
            "input_tokens_details": {"cached_tokens": u.prompt_tokens_details.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": 0},
        })),
    })
}

/// The answer's text so far, from the run's buffer (for the Responses API's `done` events,
/// which repeat it whole). `None` when the buffer no longer holds its start.
fn text_so_far(run: &Run) -> Option<String> {
    let mut text = String::new();
    for i in 0.. {
        match run.get(i) {
            Next::Event(RunEvent::Delta { text: t, .. }) => text.push_str(&t),
            Next::Event(RunEvent::Finish { .. } | RunEvent::Error(_)) | Next::End | Next::Pending => break,
            Next::Event(_) => {}
            Next::Gone => return None,
        }
    }
    Some(text)
}

/// A `/v1/responses` stream's events.
fn render_responses(run: &Run, model: &str, ev: &RunEvent) -> Vec<Value> {
    let item_id = format!("msg_{}", run.id.trim_start_matches("resp_"));
    match ev {
        RunEvent::Head { .. } => vec![
            json!({"type": "response.created", "response": response_object(run, model, "in_progress", None, None)}),
            json!({"type": "response.in_progress", "response": response_object(run, model, "in_progress", None, None)}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": {
                "type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
        ],
        RunEvent::Delta { text, .. } if text.is_empty() => Vec::new(),
        RunEvent::Delta { text, .. } => vec![json!({
            "type": "response.output_text.delta", "item_id": item_id, "output_index": 0, "content_index": 0, "delta": text,
        })],
        RunEvent::ToolCall { .. } | RunEvent::ToolArgs { .. } => Vec::new(),
        RunEvent::Finish { finish_reason, usage, .. } => {
            let text = text_so_far(run).unwrap_or_default();
            let status = if finish_reason == "length" { "incomplete" } else { "completed" };
            let mut done = response_object(run, model, status, Some(&text), Some(usage));
            if status == "incomplete" {
                done["incomplete_details"] = json!({"reason": "max_output_tokens"});
            }
            let part = json!({"type": "output_text", "text": text, "annotations": []});
            vec![
                json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0, "content_index": 0, "text": text}),
                json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
                json!({"type": "response.output_item.done", "output_index": 0, "item": done["output"][0].clone()}),
                json!({"type": if status == "completed" { "response.completed" } else { "response.incomplete" }, "response": done}),
            ]
        }
        RunEvent::Error(e) => {
            let mut v = e.body();
            v["type"] = json!("error");
            vec![v]
        }
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
