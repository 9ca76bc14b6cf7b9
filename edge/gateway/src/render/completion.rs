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

/// Waits for the whole answer and returns it as one `chat.completion`.
pub async fn whole(metrics: &EdgeMetrics, s: &Started, started: Instant) -> Result<Response, ApiError> {
    let mut content = String::new();
    let mut logprobs = Vec::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut i = 0;
    let mut first_token = true;
    let finish = loop {
        match s.run.next(i).await {
            Next::Event(RunEvent::Delta { text, logprobs: lp }) => {
                if first_token {
                    first_token = false;
                    metrics.ttft(s.run.tier.as_str(), started.elapsed());
                }
                content.push_str(&text);
                logprobs.extend(lp);
            }
            Next::Event(RunEvent::ToolCall { id, name, .. }) => {
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": ""}}));
            }
            Next::Event(RunEvent::ToolArgs { index, text }) => {
                if let Some(args) =
                    calls.get_mut(index as usize).and_then(|c| c["function"]["arguments"].as_str().map(str::to_owned))
                {
                    calls[index as usize]["function"]["arguments"] = json!(args + &text);
                }
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
    if s.run.shape == Shape::Responses {
        let status = if finish_reason == "length" { "incomplete" } else { "completed" };
        let mut body = super::response_object(&s.run, &model, status, Some(&content), Some(&usage));
        if status == "incomplete" {
            body["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        let mut resp = axum::Json(body).into_response();
        if let Some(h) = &head {
            head_headers(resp.headers_mut(), h, &s.run, &s.request_id);
        }
        return Ok(resp);
    }
    if let Shape::Text { echo } = s.run.shape {
        let prompt = match &head {
            Some(RunEvent::Head { prompt: Some(p), .. }) if echo => p.clone(),
            _ => String::new(),
        };
        let body = json!({
            "id": s.run.id, "object": "text_completion", "created": s.run.created, "model": model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0, "text": prompt + &content, "logprobs": super::text_logprobs(&logprobs),
                "finish_reason": finish_reason,
            }],
            "usage": usage,
        });
        let mut resp = axum::Json(body).into_response();
        if let Some(h) = &head {
            head_headers(resp.headers_mut(), h, &s.run, &s.request_id);
        }
        return Ok(resp);
    }
    let body = json!({
        "id": s.run.id, "object": "chat.completion", "created": s.run.created, "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": message(content, calls),
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
