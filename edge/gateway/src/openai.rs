//! OpenAI's chat-completions request, parsed and bounded into a [`ValidChat`] before any other
//! work (parse, don't validate), and the response shapes the edge writes.

use chorus_proto::{Constraint, ConversationRef, Message, RawPrompt, Role, Sampling, Tool, ToolChoice, tools};
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
    pub tools: Option<Vec<InTool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub functions: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Token id (as a string) → bias in -100..=100.
    #[serde(default)]
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    /// vLLM's and llama.cpp's sampling extensions.
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
}

/// `tools[i]`: only functions exist.
#[derive(Debug, Deserialize)]
pub struct InTool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: InFunction,
}

#[derive(Debug, Deserialize)]
pub struct InFunction {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// An assistant message's earlier call, as the client sends it back.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    #[serde(default)]
    pub id: Option<String>,
    pub function: InCalled,
}

#[derive(Debug, Deserialize)]
pub struct InCalled {
    pub name: String,
    /// JSON text.
    pub arguments: String,
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
    #[serde(default)]
    pub tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
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
    pub constraint: Option<Constraint>,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    /// `/v1/completions`: the raw prompt (then `messages` is empty).
    pub raw: Option<RawPrompt>,
    pub shape: Shape,
    /// Answers to sample (`n`).
    pub n: u8,
}

/// Which OpenAI API a request came through, so its answer is rendered in that API's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Shape {
    /// `chat.completion` / `chat.completion.chunk`.
    #[default]
    Chat,
    /// `text_completion`; `echo` puts the prompt before the answer.
    Text { echo: bool },
    /// The Responses API's `response` object and its stream events.
    Responses,
}

impl ValidChat {
    /// Whether the answer may hold tool calls (the edge reads them out of its text).
    pub fn offers_tools(&self) -> bool {
        tools::offered(&self.tools, &self.tool_choice)
    }
}

impl ValidChat {
    /// The user messages' text, newest last (what the safety filter reads).
    pub fn prompt_text(&self) -> String {
        let mut out = match &self.raw {
            Some(RawPrompt::Text(t)) => t.clone(),
            _ => String::new(),
        };
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
        "tool" => Role::Tool,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(ApiError::invalid(
                format!("messages[{i}].role"),
                format!("role {shown:?} is not supported (system, developer, user, assistant, tool)"),
            ));
        }
    };
    let calls = match (role, m.tool_calls) {
        (_, None) => Vec::new(),
        (Role::Assistant, Some(calls)) => calls,
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                format!("messages[{i}].tool_calls"),
                "only assistant messages carry tool_calls",
            ));
        }
    };
    if calls.len() > limits.max_tools {
        return Err(ApiError::invalid(
            format!("messages[{i}].tool_calls"),
            format!("{} calls; the limit is {}", calls.len(), limits.max_tools),
        ));
    }
    let calls: Vec<(String, String)> = calls.into_iter().map(|c| (c.function.name, c.function.arguments)).collect();
    let _ = m.tool_call_id;
    let content = match m.content {
        None if !calls.is_empty() => String::new(),
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
    // Earlier calls are part of the assistant's text, in the syntax the model answers in.
    let content = match (calls.is_empty(), content.is_empty()) {
        (true, _) => content,
        (false, true) => tools::render_calls(&calls),
        (false, false) => format!("{content}\n{}", tools::render_calls(&calls)),
    };
    if content.len() > limits.max_message_bytes {
        return Err(ApiError::invalid(
            format!("messages[{i}].content"),
            format!("{} bytes; the limit is {}", content.len(), limits.max_message_bytes),
        ));
    }
    Ok(Message { role, content })
}

/// `response_format`: text (no constraint), `json_object`, `json_schema`; and Chorus's
/// `{"type": "regex", "regex": …}` and `{"type": "grammar", "grammar": <Lark>}`.
fn response_format(f: Option<&Value>, limits: &ApiLimits) -> Result<Option<Constraint>, ApiError> {
    let Some(f) = f.filter(|f| !f.is_null()) else { return Ok(None) };
    let kind = f.get("type").and_then(Value::as_str).unwrap_or("");
    let text = |field: &str, v: Option<&Value>| -> Result<String, ApiError> {
        let s = match v {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(ApiError::invalid(field, format!("{field} must be a string"))),
        };
        if s.len() > limits.max_schema_bytes {
            return Err(ApiError::invalid(
                field,
                format!("{} bytes; the limit is {}", s.len(), limits.max_schema_bytes),
            ));
        }
        Ok(s)
    };
    Ok(Some(match kind {
        "text" => return Ok(None),
        "json_object" => Constraint::JsonObject,
        "json_schema" => {
            let field = "response_format.json_schema.schema";
            let schema = match f.get("json_schema").and_then(|j| j.get("schema")) {
                Some(v @ Value::Object(_)) => v.to_string(),
                Some(_) => return Err(ApiError::invalid(field, format!("{field} must be a JSON object"))),
                None => return Err(ApiError::invalid(field, format!("{field} is missing"))),
            };
            if schema.len() > limits.max_schema_bytes {
                let message = format!("{} bytes; the limit is {}", schema.len(), limits.max_schema_bytes);
                return Err(ApiError::invalid(field, message));
            }
            Constraint::JsonSchema(schema)
        }
        "regex" => Constraint::Regex(text("response_format.regex", f.get("regex"))?),
        "grammar" => Constraint::Grammar(text("response_format.grammar", f.get("grammar"))?),
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(ApiError::invalid(
                "response_format.type",
                format!(
                    "response_format type {shown:?} is not supported (text, json_object, json_schema, regex, grammar)"
                ),
            ));
        }
    }))
}

/// `tools` into the wire's, each bounded and named.
fn offered_tools(tools: Option<Vec<InTool>>, limits: &ApiLimits) -> Result<Vec<Tool>, ApiError> {
    let tools = tools.unwrap_or_default();
    if tools.len() > limits.max_tools {
        return Err(ApiError::invalid("tools", format!("{} tools; the limit is {}", tools.len(), limits.max_tools)));
    }
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::invalid(format!("tools[{i}].type"), "only function tools are supported"));
        }
        let f = t.function;
        if !tools::valid_name(&f.name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                "a function name is 1 to 64 of a-z, A-Z, 0-9, _ and -",
            ));
        }
        if out.iter().any(|o: &Tool| o.name == f.name) {
            return Err(ApiError::invalid(format!("tools[{i}].function.name"), format!("{} is offered twice", f.name)));
        }
        let parameters = match f.parameters {
            None | Some(Value::Null) => r#"{"type": "object"}"#.to_string(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("tools[{i}].function.parameters"),
                    "parameters must be a JSON schema object",
                ));
            }
        };
        let _ = f.strict; // Calls are always constrained to the schema.
        let tool = Tool { name: f.name, description: f.description.unwrap_or_default(), parameters };
        let bytes = tool.name.len() + tool.description.len() + tool.parameters.len();
        if bytes > limits.max_schema_bytes {
            return Err(ApiError::invalid(
                format!("tools[{i}]"),
                format!("{bytes} bytes; the limit is {}", limits.max_schema_bytes),
            ));
        }
        out.push(tool);
    }
    Ok(out)
}

/// `tool_choice`: `auto` (the default with tools), `none`, `required`, or
/// `{"type": "function", "function": {"name": …}}`.
fn tool_choice(v: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let choice = match v {
        None | Some(Value::Null) => return Ok(if tools.is_empty() { ToolChoice::None } else { ToolChoice::Auto }),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(ApiError::invalid("tool_choice", "tool_choice is auto, none, required or a function")),
        },
        Some(v) => match v.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                if !tools.iter().any(|t| t.name == name) {
                    let shown: String = name.chars().take(64).collect();
                    return Err(ApiError::invalid("tool_choice.function.name", format!("{shown:?} is not in tools")));
                }
                ToolChoice::Function(name.to_string())
            }
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": …}}",
                ));
            }
        },
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required) {
        return Err(ApiError::invalid("tool_choice", "tool_choice is required but no tools are given"));
    }
    Ok(choice)
}

/// `logit_bias`: token ids (as strings) to biases in -100..=100.
fn logit_bias(
    v: Option<std::collections::BTreeMap<String, f32>>,
    limits: &ApiLimits,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let v = v.unwrap_or_default();
    if v.len() > limits.max_logit_bias {
        return Err(ApiError::invalid(
            "logit_bias",
            format!("{} entries; the limit is {}", v.len(), limits.max_logit_bias),
        ));
    }
    v.into_iter()
        .map(|(k, b)| {
            let field = format!("logit_bias.{}", k.chars().take(16).collect::<String>());
            let id: u32 = k.parse().map_err(|_| ApiError::invalid(&field, "logit_bias keys are token ids"))?;
            if !(b.is_finite() && (-100.0..=100.0).contains(&b)) {
                return Err(ApiError::invalid(&field, format!("a bias is between -100 and 100, got {b}")));
            }
            Ok((id, b))
        })
        .collect()
}

fn validate(req: ChatRequest, limits: &ApiLimits) -> Result<ValidChat, ApiError> {
    if req.functions.as_ref().is_some_and(|v| !v.is_null() && v != &Value::Array(vec![])) {
        return Err(ApiError::invalid("functions", "functions is deprecated and not supported; use tools"));
    }
    let constraint = response_format(req.response_format.as_ref(), limits)?;
    let tools = offered_tools(req.tools, limits)?;
    let tool_choice = tool_choice(req.tool_choice.as_ref(), &tools)?;
    let parallel_tool_calls = req.parallel_tool_calls.unwrap_or(true);
    let logit_bias = logit_bias(req.logit_bias, limits)?;
    if req.model.is_empty() || req.model.len() > 128 {
        return Err(ApiError::invalid("model", "model must be 1 to 128 bytes"));
    }
    let n = req.n.unwrap_or(1);
    if n == 0 || n > limits.max_n {
        return Err(ApiError::invalid("n", format!("n is {n}; it must be 1 to {}", limits.max_n)));
    }
    if n > 1 && (req.store == Some(true) || req.conversation_id.is_some()) {
        return Err(ApiError::invalid("n", "several answers cannot be stored in a conversation; n must be 1"));
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
    if messages.last().is_some_and(|m| !matches!(m.role, Role::User | Role::Tool)) {
        return Err(ApiError::invalid("messages", "the last message must be the user's or a tool's"));
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
        top_k: req.top_k,
        min_p: range("min_p", req.min_p, 0.0, 1.0, 0.0)?,
        repetition_penalty: range("repetition_penalty", req.repetition_penalty, 0.01, 10.0, 1.0)?,
        logit_bias,
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
        constraint,
        tools,
        tool_choice,
        parallel_tool_calls,
        raw: None,
        shape: Shape::Chat,
        n: n as u8,
    })
}

/// `POST /v1/responses`, the subset an SDK's `client.responses.create(input=…, stream=…)`
/// uses for text: `input` (a string or messages), `instructions`, `max_output_tokens`,
/// sampling, `text.format` (text or a JSON schema). Anything else is refused by name.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// Decodes another API's body (`what`: "completion", "responses"); errors name the path.
fn decode<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
    what: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = if path == "." || path.is_empty() { None } else { Some(path) };
        ApiError::Invalid { param, message: format!("not a valid {what} request: {}", e.into_inner()) }
    })
}

/// The chat request another API's body was translated into, checked like one a client sent.
fn as_chat(v: Value) -> Result<ChatRequest, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Invalid { param: Some(path.clone()), message: format!("{path}: {}", e.into_inner()) }
    })
}

/// Decodes a `/v1/responses` body into the chat request it is.
pub fn parse_responses(body: &[u8], limits: &ApiLimits) -> Result<ValidChat, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: ResponsesRequest = decode(de, "responses")?;
    if req.previous_response_id.is_some() {
        return Err(ApiError::invalid("previous_response_id", "responses are not stored; send the whole input"));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid("tools", "tools are served on /v1/chat/completions"));
    }
    let mut messages = Vec::new();
    if let Some(i) = req.instructions {
        messages.push(serde_json::json!({"role": "system", "content": i}));
    }
    match req.input {
        Value::String(s) => messages.push(serde_json::json!({"role": "user", "content": s})),
        Value::Array(items) => {
            if items.len() > limits.max_messages {
                return Err(ApiError::invalid(
                    "input",
                    format!("{} items; the limit is {}", items.len(), limits.max_messages),
                ));
            }
            for (i, item) in items.into_iter().enumerate() {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                let content = match item.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => {
                        let mut t = String::new();
                        for (j, p) in parts.iter().enumerate() {
                            match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                                (Some("input_text" | "output_text" | "text"), Some(s)) => t.push_str(s),
                                _ => {
                                    return Err(ApiError::invalid(
                                        format!("input[{i}].content[{j}]"),
                                        "only input_text and output_text parts are supported",
                                    ));
                                }
                            }
                        }
                        t
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            format!("input[{i}]"),
                            "each input item is a message with content",
                        ));
                    }
                };
                messages.push(serde_json::json!({"role": role, "content": content}));
            }
        }
        _ => return Err(ApiError::invalid("input", "input is a string or an array of messages")),
    }
    let mut chat = serde_json::json!({"model": req.model, "messages": messages});
    let c = &mut chat;
    if let Some(n) = req.max_output_tokens {
        c["max_tokens"] = n.into();
    }
    if let Some(t) = req.temperature {
        c["temperature"] = t.into();
    }
    if let Some(p) = req.top_p {
        c["top_p"] = p.into();
    }
    if let Some(u) = req.user {
        c["user"] = u.into();
    }
    c["stream"] = req.stream.unwrap_or(false).into();
    c["stream_options"] = serde_json::json!({"include_usage": true});
    if let Some(format) = req.text.as_ref().and_then(|t| t.get("format")) {
        c["response_format"] = match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => serde_json::json!({"type": "json_schema", "json_schema": {
                "name": format.get("name").cloned().unwrap_or(Value::Null),
                "schema": format.get("schema").cloned().unwrap_or(Value::Null),
            }}),
            _ => format.clone(),
        };
    }
    let _ = (req.store, req.metadata);
    let mut v = validate(as_chat(chat)?, limits)?;
    v.shape = Shape::Responses;
    Ok(v)
}

/// `POST /v1/completions` as clients send it.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: InPrompt,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub echo: Option<bool>,
    /// 0..=5 alternatives per token (the legacy API's integer form).
    #[serde(default)]
    pub logprobs: Option<u8>,
    #[serde(default)]
    pub best_of: Option<u32>,
    #[serde(flatten)]
    pub common: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string, an array of one string, or an array of token ids")]
pub enum InPrompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
}

/// Decodes a `/v1/completions` body: the prompt is raw (no chat template); every other field
/// is checked as for chat completions.
pub fn parse_completion(body: &[u8], limits: &ApiLimits) -> Result<ValidChat, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: CompletionRequest = decode(de, "completion")?;
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix (fill in the middle) is not supported"));
    }
    if req.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::invalid("best_of", "only best_of = 1 is supported"));
    }
    let raw = match req.prompt {
        InPrompt::Text(t) => RawPrompt::Text(t),
        InPrompt::Texts(mut v) if v.len() == 1 => RawPrompt::Text(v.remove(0)),
        InPrompt::Texts(_) => {
            return Err(ApiError::invalid("prompt", "one prompt per request (an array of one string)"));
        }
        InPrompt::Ids(ids) => RawPrompt::Ids(ids),
    };
    match &raw {
        RawPrompt::Text(t) if t.is_empty() || t.len() > limits.max_message_bytes => {
            let message = format!("{} bytes; must be 1 to {}", t.len(), limits.max_message_bytes);
            return Err(ApiError::invalid("prompt", message));
        }
        RawPrompt::Ids(ids) if ids.is_empty() || ids.len() > limits.max_tokens as usize * 16 => {
            return Err(ApiError::invalid(
                "prompt",
                format!("{} token ids; must be 1 to {}", ids.len(), limits.max_tokens as usize * 16),
            ));
        }
        _ => {}
    }
    let top = req.logprobs.unwrap_or(0);
    if top > 5 {
        return Err(ApiError::invalid("logprobs", format!("logprobs is {top}; the limit is 5")));
    }
    // Everything else is a chat request's field: check it the same way, around a stand-in turn.
    let mut common = req.common;
    for chat_only in ["messages", "tools", "tool_choice", "top_logprobs", "store", "conversation_id"] {
        if common.contains_key(chat_only) {
            return Err(ApiError::invalid(chat_only, format!("{chat_only} is not a completions field")));
        }
    }
    common.insert("model".into(), Value::String(req.model));
    common.insert("messages".into(), serde_json::json!([{"role": "user", "content": "-"}]));
    if req.logprobs.is_some() {
        common.insert("logprobs".into(), Value::Bool(true));
        common.insert("top_logprobs".into(), Value::from(top));
    }
    let mut v = validate(as_chat(Value::Object(common))?, limits)?;
    v.messages.clear();
    v.raw = Some(raw);
    v.shape = Shape::Text { echo: req.echo.unwrap_or(false) };
    Ok(v)
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
            param(parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":99}"#).unwrap_err())
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
            param(parse(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#).unwrap_err())
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

    #[test]
    fn structured_output_and_tools_parse_and_bad_ones_name_the_field() {
        let body = |extra: &str| format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#);
        let ok = |extra: &str| parse(&body(extra)).unwrap_or_else(|e| panic!("{extra}: {e:?}"));
        let bad = |extra: &str| param(parse(&body(extra)).unwrap_err());
        assert_eq!(ok(r#","response_format":{"type":"json_object"}"#).constraint, Some(Constraint::JsonObject));
        let v = ok(
            r#","response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{"type":"object"},"strict":true}}"#,
        );
        assert!(matches!(v.constraint, Some(Constraint::JsonSchema(s)) if s.contains("object")));
        assert_eq!(ok(r#","response_format":{"type":"text"}"#).constraint, None);
        assert!(
            bad(r#","response_format":{"type":"json_schema","json_schema":{"name":"p"}}"#)
                .starts_with("response_format.json_schema.schema")
        );
        assert!(bad(r#","response_format":{"type":"yaml"}"#).starts_with("response_format.type"));
        let huge = format!(r#","response_format":{{"type":"regex","regex":"{}"}}"#, "a".repeat(70_000));
        assert!(bad(&huge).starts_with("response_format.regex"));
        let tool = r#"{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}"#;
        let v = ok(&format!(r#","tools":[{tool}]"#));
        assert_eq!((v.tools.len(), &v.tool_choice, v.offers_tools()), (1, &ToolChoice::Auto, true));
        let v = ok(&format!(
            r#","tools":[{tool}],"tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}}"#
        ));
        assert_eq!(v.tool_choice, ToolChoice::Function("get_weather".into()));
        assert!(!ok(&format!(r#","tools":[{tool}],"tool_choice":"none""#)).offers_tools());
        assert!(
            bad(&format!(r#","tools":[{tool}],"tool_choice":{{"type":"function","function":{{"name":"nope"}}}}"#))
                .starts_with("tool_choice.function.name")
        );
        assert!(bad(r#","tool_choice":"required""#).starts_with("tool_choice"));
        assert!(
            bad(r#","tools":[{"type":"function","function":{"name":"a b"}}]"#).starts_with("tools[0].function.name")
        );
        assert!(bad(r#","tools":[{"type":"retrieval","function":{"name":"a"}}]"#).starts_with("tools[0].type"));
        assert!(bad(&format!(r#","tools":[{tool},{tool}]"#)).starts_with("tools[1].function.name"));
        assert_eq!(ok(r#","logit_bias":{"42":-100,"7":3.5}"#).sampling.logit_bias, vec![(42, -100.0), (7, 3.5)]);
        assert!(bad(r#","logit_bias":{"x":1}"#).starts_with("logit_bias.x"));
        assert!(bad(r#","logit_bias":{"1":101}"#).starts_with("logit_bias.1"));
        // A tool round trip's history: the assistant's call and the tool's answer, last.
        let history = r#"{"model":"m","messages":[{"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"18 C"}]}"#;
        let v = parse(history).unwrap();
        assert_eq!(v.messages[2].role, Role::Tool);
        let (content, calls) = tools::parse(&v.messages[1].content);
        assert_eq!((content.as_str(), calls[0].name.as_str()), ("", "get_weather"));
        let misplaced = r#"{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[]}]}"#;
        assert!(param(parse(misplaced).unwrap_err()).starts_with("messages[0].tool_calls"));
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
