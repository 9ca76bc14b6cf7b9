//! A non-streamed answer: every event of the run gathered into one `chat.completion` body.

use std::time::Instant;

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Started, head_extension, head_headers, model_of};
use crate::error::ApiError;
use crate::metrics::EdgeMetrics;
use crate::openai::Shape;
use crate::run::{Next, RunEvent};

/// The assistant message: its text, and its tool calls when it made any (OpenAI leaves the
/// content null then, unless the model also wrote text).
fn message(content: String, calls: Vec<Value>) -> Value {
    if calls.is_empty() {
        return json!({"role": "assistant", "content": content, "refusal": null});
    }
    let content = if content.is_empty() { Value::Null } else { json!(content) };
    json!({"role": "assistant", "content": content, "refusal": null, "tool_calls": calls})
}

/// One answer's text, logprobs and calls.
#[derive(Default)]
struct Gathered {
    content: String,
    logprobs: Vec<crate::openai::TokenLogprob>,
    calls: Vec<Value>,
}

/// Waits for the whole answer and returns it as one `chat.completion`.
pub async fn whole(metrics: &EdgeMetrics, s: &Started, started: Instant) -> Result<Response, ApiError> {
    // One per answer (`n`), in choice order.
    let mut answers: Vec<Gathered> = vec![Gathered::default()];
    let mut i = 0;
    let mut first_token = true;
    let finish = loop {
        match s.run.next(i).await {
            Next::Event(RunEvent::Head { choices, .. }) => {
                answers.resize_with(choices.clamp(1, u32::from(chorus_proto::MAX_N)) as usize, Gathered::default);
            }
            Next::Event(RunEvent::Delta { text, logprobs: lp, choice }) => {
                if first_token {
                    first_token = false;
                    metrics.ttft(s.run.tier.as_str(), started.elapsed());
                }
                if let Some(a) = answers.get_mut(choice as usize) {
                    a.content.push_str(&text);
                    a.logprobs.extend(lp);
                }
            }
            Next::Event(RunEvent::ToolCall { id, name, choice, .. }) => {
                if let Some(a) = answers.get_mut(choice as usize) {
                    a.calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": ""}}));
                }
            }
            Next::Event(RunEvent::ToolArgs { index, text, choice }) => {
                if let Some(call) = answers.get_mut(choice as usize).and_then(|a| a.calls.get_mut(index as usize)) {
                    let args = call["function"]["arguments"].as_str().unwrap_or("").to_owned();
                    call["function"]["arguments"] = json!(args + &text);
                }
            }
            Next::Event(RunEvent::Error(e)) => return Err(e),
            Next::Event(f @ RunEvent::Finish { .. }) => break f,
            Next::Pending => continue,
            Next::End | Next::Gone => return Err(ApiError::Unavailable("the answer was lost".into())),
        }
        i += 1;
    };
    let head = s.run.head();
    let model = model_of(&head);
    let RunEvent::Finish { finish_reason, usage, conversation_id, turn_version, store_error, choices } = finish else {
        unreachable!("loop breaks on Finish")
    };
    let reason = |i: usize| choices.get(i).cloned().unwrap_or_else(|| finish_reason.clone());
    let mut chorus = match &head {
        Some(RunEvent::Head { fleet, prompt, .. }) => head_extension(fleet, prompt.as_deref()),
        _ => json!({}),
    };
    chorus["conversation_id"] = json!(conversation_id);
    chorus["turn_version"] = json!(turn_version);
    chorus["store_error"] = json!(store_error);
    if s.run.shape == Shape::Responses {
        let status = if finish_reason == "length" { "incomplete" } else { "completed" };
        let mut body = super::response_object(&s.run, &model, status, Some(&answers[0].content), Some(&usage));
        if status == "incomplete" {
            body["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        return Ok(respond(body, head.as_ref(), s));
    }
    if let Shape::Text { echo } = s.run.shape {
        let prompt = match &head {
            Some(RunEvent::Head { prompt: Some(p), .. }) if echo => p.clone(),
            _ => String::new(),
        };
        let body = json!({
            "id": s.run.id, "object": "text_completion", "created": s.run.created, "model": model,
            "system_fingerprint": null,
            "choices": answers.iter().enumerate().map(|(i, a)| json!({
                "index": i, "text": prompt.clone() + &a.content, "logprobs": super::text_logprobs(&a.logprobs),
                "finish_reason": reason(i),
            })).collect::<Vec<_>>(),
            "usage": usage,
        });
        return Ok(respond(body, head.as_ref(), s));
    }
    let body = json!({
        "id": s.run.id, "object": "chat.completion", "created": s.run.created, "model": model,
        "system_fingerprint": null,
        "choices": answers.into_iter().enumerate().map(|(i, a)| json!({
            "index": i,
            "logprobs": if a.logprobs.is_empty() { Value::Null } else { json!({"content": a.logprobs}) },
            "message": message(a.content, a.calls),
            "finish_reason": reason(i),
        })).collect::<Vec<_>>(),
        "usage": usage,
        "chorus": chorus,
    });
    Ok(respond(body, head.as_ref(), s))
}

/// The body as the response, with the head's `x-chorus-*` headers.
fn respond(body: Value, head: Option<&RunEvent>, s: &Started) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Some(h) = head {
        head_headers(resp.headers_mut(), h, &s.run, &s.request_id);
    }
    resp
}
