//! OpenAI's chat-completions request, parsed and bounded into a [`ValidChat`] before any other
//! work (parse, don't validate), and the response shapes the edge writes.

use chorus_proto::{ConversationRef, Message, Role, Sampling};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ApiLimits;
use crate::error::ApiError;

/// The body as clients send it. Unknown fields are ignored (SDKs add new ones all the time);
/// known fields we cannot honour are refused by name.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u8>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// OpenAI's `store`: here, start a stored conversation.
    #[serde(default)]
    pub store: Option<bool>,
    /// Chorus: continue this stored conversation (`messages` holds only the new turn).
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Generate to the token limit even past end-of-turn (load generators; vLLM and
    /// llama.cpp's servers take the same field).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub functions: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub logit_bias: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of content parts")]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A request the edge will forward: every field present, in range and bounded.
#[derive(Debug, Clone)]
pub struct ValidChat {
    pub model: String,
    pub messages: Vec<Message>,
    pub sampling: Sampling,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    pub conversation: ConversationRef,
}

impl ValidChat {
    /// The user messages' text, newest last (what the safety filter reads).
    pub fn prompt_text(&self) -> String {
        let mut out = String::new();
        for m in self.messages.iter().filter(|m| m.role == Role::User) {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&m.content);
        }
        out
    }
}

/// Decodes `body` (already size-checked) into a [`ValidChat`]. Errors name the field.
pub fn parse_chat(body: &[u8], limits: &ApiLimits) -> Result<ValidChat, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| ApiError::Invalid {
        param: None,
        message: format!("the body is not valid UTF-8 (at byte {})", e.valid_up_to()),
    })?;
    let de = &mut serde_json::Deserializer::from_str(text);
    let req: ChatRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let param = if path == "." || path == "?" || path.is_empty() { None } else { Some(path) };
        let message = match &param {
            _ if inner.is_syntax() || inner.is_eof() => {
                format!("the body is not valid JSON (not a valid chat request): {inner}")
            }
            Some(p) => format!("{p}: {inner}"),
            None => format!("the body is not a valid chat request: {inner}"),
        };
        ApiError::Invalid { param, message }
    })?;
    validate(req, limits)
}

fn range(name: &str, v: Option<f32>, lo: f32, hi: f32, default: f32) -> Result<f32, ApiError> {
    Ok(checked(name, v, lo, hi)?.unwrap_or(default))
}

/// `v` if it is within `lo..=hi`; `None` stays unset (the serving model's default applies).
fn checked(name: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some(x)),
        Some(x) => Err(ApiError::invalid(name, format!("{name} is {x}; it must be between {lo} and {hi}"))),
    }
}

/// Message `i` of the body, as the wire carries it: a known role, text content within
/// `max_message_bytes` (text parts joined; other part types refused by index).
fn message(i: usize, m: InMessage, limits: &ApiLimits) -> Result<Message, ApiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("role {shown:?} is not supported (system, developer, user, assistant)"),
            ));
        }
    };
    let content = match m.content {
        None => return Err(ApiError::invalid(format!("messages[{i}].content"), "content is missing")),
        Some(Content::Text(t)) => t,
        Some(Content::Parts(parts)) => {
            let mut t = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(s)) => {
                        if t.len() + s.len() > limits.max_message_bytes {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content"),
                                format!("over {} bytes; that is the limit", limits.max_message_bytes),
                            ));
                        }
                        t.push_str(&s);
                    }
                    (kind, _) => {
                        let shown: String = kind.chars().take(32).collect();
                        return Err(ApiError::invalid(
                            format!("messages[{i}].content[{j}]"),
                            format!("content part {shown:?} is not supported (text only)"),
                        ));
                    }
                }
            }
            t
        }
    };
    if content.len() > limits.max_message_bytes {
        return Err(ApiError::invalid(
            format!("messages[{i}].content"),
            format!("{} bytes; the limit is {}", content.len(), limits.max_message_bytes),
        ));
    }
    Ok(Message { role, content })
}

fn validate(req: ChatRequest, limits: &ApiLimits) -> Result<ValidChat, ApiError> {
    for (name, v) in [("tools", &req.tools), ("functions", &req.functions), ("logit_bias", &req.logit_bias)] {
        if v.as_ref()
            .is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]) && v != &Value::Object(Default::default()))
        {
            return Err(ApiError::invalid(name, format!("{name} is not supported")));
        }
    }
    if let Some(f) = &req.response_format
        && f.get("type").and_then(Value::as_str).is_some_and(|t| t != "text")
    {
        return Err(ApiError::invalid("response_format", "only response_format {\"type\": \"text\"} is supported"));
    }
    if req.model.is_empty() || req.model.len() > 128 {
        return Err(ApiError::invalid("model", "model must be 1 to 128 bytes"));
    }
    match req.n {
        None | Some(1) => {}
        Some(n) => return Err(ApiError::invalid("n", format!("n is {n}; only n = 1 is supported"))),
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    if req.messages.len() > limits.max_messages {
        return Err(ApiError::invalid(
            "messages",
            format!("{} messages; the limit is {}", req.messages.len(), limits.max_messages),
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        messages.push(message(i, m, limits)?);
    }
    if messages.last().is_some_and(|m| m.role != Role::User) {
        return Err(ApiError::invalid("messages", "the last message must be the user's"));
    }
    let (max_tokens, field) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => (n, "max_completion_tokens"),
        (None, Some(n)) => (n, "max_tokens"),
        (None, None) => (limits.default_max_tokens, "max_tokens"),
    };
    if max_tokens == 0 || max_tokens > limits.max_tokens {
        return Err(ApiError::invalid(
            field,
            format!("{field} is {max_tokens}; it must be 1 to {}", limits.max_tokens),
        ));
    }
    let stop = match req.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > limits.max_stop {
        return Err(ApiError::invalid(
            "stop",
            format!("{} stop sequences; the limit is {}", stop.len(), limits.max_stop),
        ));
    }
    if let Some(s) = stop.iter().find(|s| s.is_empty() || s.len() > limits.max_stop_bytes) {
        return Err(ApiError::invalid(
            "stop",
            format!("a stop sequence is {} bytes; each must be 1 to {}", s.len(), limits.max_stop_bytes),
        ));
    }
    if let Some(u) = &req.user
        && u.len() > limits.max_user_bytes
    {
        return Err(ApiError::invalid("user", format!("{} bytes; the limit is {}", u.len(), limits.max_user_bytes)));
    }
    let logprobs = req.logprobs.unwrap_or(false);
    let top = req.top_logprobs.unwrap_or(0);
    if top > limits.max_top_logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            format!("top_logprobs is {top}; the limit is {}", limits.max_top_logprobs),
        ));
    }
    if top > 0 && !logprobs {
        return Err(ApiError::invalid("top_logprobs", "top_logprobs needs logprobs: true"));
    }
    let sampling = Sampling {
        // Unset values take the serving model's defaults (the core applies them).
        temperature: checked("temperature", req.temperature, 0.0, 2.0)?,
        // top_p = 0 (OpenAI accepts it) keeps only the most likely token.
        top_p: checked("top_p", req.top_p, 0.0, 1.0)?.map(|p| p.max(f32::MIN_POSITIVE)),
        presence_penalty: range("presence_penalty", req.presence_penalty, -2.0, 2.0, 0.0)?,
        frequency_penalty: range("frequency_penalty", req.frequency_penalty, -2.0, 2.0, 0.0)?,
        seed: req.seed.map(|s| s as u64),
        logprobs: logprobs.then_some(top),
        ignore_eos: req.ignore_eos.unwrap_or(false),
        ..Sampling::default()
    };
    let conversation = match (req.conversation_id, req.store) {
        (Some(id), _) => {
            let ok = (1..=256).contains(&id.len()) && !id.chars().any(char::is_control);
            if !ok {
                return Err(ApiError::invalid("conversation_id", "1 to 256 bytes, no control characters"));
            }
            ConversationRef::Continue(id)
        }
        (None, Some(true)) => ConversationRef::New,
        (None, _) => ConversationRef::Stateless,
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = req.stream_options.map(|o| o.include_usage).unwrap_or(false);
    Ok(ValidChat {
        model: req.model,
        messages,
        sampling,
        max_tokens,
        stop,
        stream,
        include_usage,
        logprobs,
        conversation,
    })
}

/// OpenAI `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    #[serde(default)]
    pub prompt_tokens_details: PromptDetails,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptDetails {
    pub cached_tokens: u32,
}

impl From<chorus_proto::Usage> for Usage {
    fn from(u: chorus_proto::Usage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: PromptDetails { cached_tokens: u.cached_tokens },
        }
    }
}

/// One token's logprob in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

impl TokenLogprob {
    pub fn from_proto(chosen: &chorus_proto::Logprob, top: &[chorus_proto::Logprob]) -> Self {
        TokenLogprob {
            token: chosen.text.clone(),
            logprob: chosen.logprob,
            bytes: chosen.text.as_bytes().to_vec(),
            top_logprobs: top
                .iter()
                .map(|t| TopLogprob { token: t.text.clone(), logprob: t.logprob, bytes: t.text.as_bytes().to_vec() })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ValidChat, ApiError> {
        parse_chat(body.as_bytes(), &ApiLimits::default())
    }

    fn param(e: ApiError) -> String {
        match e {
            ApiError::Invalid { param, message } => format!("{} | {message}", param.unwrap_or_default()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_request_parses() {
        let v = parse(
            r#"{"model":"chorus","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
               "max_completion_tokens":7,"temperature":0,"top_p":0.5,"stop":"\n","seed":3,"presence_penalty":0.1,
               "frequency_penalty":0.2,"logprobs":true,"top_logprobs":2,"user":"u","n":1,"stream":true,
               "stream_options":{"include_usage":true},"store":true,"metadata":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(v.messages.len(), 2);
        assert_eq!(v.messages[1].content, "hi");
        assert_eq!(v.max_tokens, 7);
        assert_eq!(v.sampling.temperature, Some(0.0));
        assert_eq!(v.sampling.logprobs, Some(2));
        assert_eq!(v.stop, vec!["\n".to_string()]);
        assert!(v.stream && v.include_usage);
        assert_eq!(v.conversation, ConversationRef::New);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(
            param(parse(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#).unwrap_err())
                .starts_with("messages[0].content")
        );
        assert!(param(parse(r#"{"model":"m","messages":"hi"}"#).unwrap_err()).starts_with("messages"));
        assert!(
            param(parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#).unwrap_err())
                .starts_with("n |")
        );
        assert!(
            param(parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":9}"#).unwrap_err())
                .starts_with("temperature")
        );
        assert!(
            param(
                parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":100000}"#).unwrap_err()
            )
            .starts_with("max_tokens")
        );
        assert!(param(parse(r#"{"model":"m","messages":[]}"#).unwrap_err()).starts_with("messages |"));
        assert!(
            param(parse(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#).unwrap_err())
                .starts_with("messages[0].role")
        );
        assert!(param(parse(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err()).contains("model"));
        assert!(
            param(parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{}]}"#).unwrap_err())
                .starts_with("tools")
        );
        let e = param(parse("{nope").unwrap_err());
        assert!(e.contains("not a valid chat request"), "{e}");
        let big = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(200_000));
        assert!(param(parse(&big).unwrap_err()).starts_with("messages[0].content"));
        match parse_chat(b"{\"model\":\"\xff\"}", &ApiLimits::default()).unwrap_err() {
            ApiError::Invalid { message, .. } => assert!(message.contains("UTF-8"), "{message}"),
            e => panic!("{e:?}"),
        }
    }

    fn within_limits(v: &ValidChat, l: &ApiLimits) {
        assert!(!v.messages.is_empty() && v.messages.len() <= l.max_messages);
        assert!(v.messages.iter().all(|m| m.content.len() <= l.max_message_bytes));
        assert!((1..=l.max_tokens).contains(&v.max_tokens));
        assert!(v.stop.len() <= l.max_stop);
    }

    proptest::proptest! {
        /// The stable-toolchain stand-in for the fuzz target (`edge/gateway/fuzz`): arbitrary
        /// bytes never panic, and whatever parses respects every limit.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let l = ApiLimits::default();
            if let Ok(v) = parse_chat(&data, &l) {
                within_limits(&v, &l);
            }
        }

        /// A valid body with one byte changed, dropped or duplicated.
        #[test]
        fn mutated_requests_never_panic(at in 0usize..400, byte in proptest::num::u8::ANY, op in 0u8..3) {
            let base = br#"{"model":"chorus","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":9,"stop":["a","b"],"temperature":0.5,"top_logprobs":2,"logprobs":true,"n":1,"stream":true,"stream_options":{"include_usage":true}}"#;
            let mut data = base.to_vec();
            let at = at % data.len();
            match op {
                0 => data[at] = byte,
                1 => { data.remove(at); }
                _ => data.insert(at, byte),
            }
            let l = ApiLimits::default();
            if let Ok(v) = parse_chat(&data, &l) {
                within_limits(&v, &l);
            }
        }
    }
}
