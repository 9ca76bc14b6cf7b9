//! The generic tool-call syntax, shared by the core (which offers tools in the prompt and
//! constrains the answer) and the edge (which turns the answer back into OpenAI `tool_calls`).
//!
//! Models whose chat template has no tool syntax get the tools listed in the system message
//! ([`instructions`]) and answer a call as
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! (the Hermes / Qwen convention, which instruction-tuned models have seen most), several calls
//! one after another. An earlier call in the history is rendered the same way
//! ([`render_calls`]) and a tool's result is a message with role `tool`. [`grammar`] is the Lark
//! grammar that makes a required call always parse against its tool's schema; [`CallParser`]
//! reads an answer, streamed or whole, back into content and calls.

use serde_json::Value;

use crate::{Constraint, Tool, ToolChoice};

pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

/// OpenAI's rule for function names: 1 to 64 of `A-Za-z0-9_-`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `tools` are offered to the model at all.
pub fn offered(tools: &[Tool], choice: &ToolChoice) -> bool {
    !tools.is_empty() && *choice != ToolChoice::None
}

/// The system-message text offering `tools` (empty when they are not offered).
pub fn instructions(tools: &[Tool], choice: &ToolChoice, parallel: bool) -> String {
    if !offered(tools, choice) {
        return String::new();
    }
    let mut s = String::from(
        "You can call these functions. Each is described by a JSON object with its name, what it does and the JSON schema of its arguments:\n",
    );
    for t in tools {
        let params: Value = serde_json::from_str(&t.parameters).unwrap_or(Value::Null);
        let entry = serde_json::json!({"name": t.name, "description": t.description, "parameters": params});
        s.push_str(&entry.to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "To call a function, answer with {CALL_OPEN}\n{{\"name\": <function name>, \"arguments\": <arguments object>}}\n{CALL_CLOSE}"
    ));
    s.push_str(if parallel { " (one block per call)." } else { " (one call at most)." });
    match choice {
        ToolChoice::Required => s.push_str(" You must call a function."),
        ToolChoice::Function(name) => s.push_str(&format!(" You must call {name}.")),
        _ => s.push_str(" A function's result comes back in a message from the tool; otherwise answer normally."),
    }
    s
}

/// An assistant message's text for the calls it made: `(name, arguments JSON)` each.
pub fn render_calls(calls: &[(String, String)]) -> String {
    let mut s = String::new();
    for (name, arguments) in calls {
        let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.clone()));
        let call = serde_json::json!({"name": name, "arguments": args});
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&format!("{CALL_OPEN}\n{call}\n{CALL_CLOSE}"));
    }
    s
}

/// One call's JSON schema: `{"name": <const>, "arguments": <the tool's schema>}`, name first.
fn call_schema(t: &Tool) -> Value {
    let params: Value = serde_json::from_str(&t.parameters).unwrap_or_else(|_| serde_json::json!({"type": "object"}));
    serde_json::json!({
        "type": "object",
        "properties": {"name": {"const": t.name}, "arguments": params},
        "required": ["name", "arguments"],
        "additionalProperties": false,
    })
}

/// llguidance's JSON layout options: one line, `", "` and `": "` (as the engine writes JSON
/// for a response format), so a small model cannot spend its budget on whitespace.
fn compact(mut schema: Value) -> Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "coerce_one_of": true})
        });
    }
    schema
}

/// The grammar of an answer when tools are offered (`None` when they are not: the content
/// constraint, if any, applies alone). `required` or a named function: only calls; `auto`:
/// calls, or content that does not start with a call (matching `content` when given).
pub fn grammar(tools: &[Tool], choice: &ToolChoice, parallel: bool, content: Option<&Constraint>) -> Option<String> {
    let offered: Vec<&Tool> = match choice {
        ToolChoice::None => return None,
        ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
        ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
    };
    if offered.is_empty() {
        return None;
    }
    let any: Vec<Value> = offered.iter().map(|t| call_schema(t)).collect();
    let schema = compact(if any.len() == 1 { any[0].clone() } else { serde_json::json!({ "anyOf": any }) });
    let mut g = String::new();
    let calls = if parallel { "call (\"\\n\" call)*" } else { "call" };
    let text = match (choice, content) {
        (ToolChoice::Auto, None) => Some("TEXT\nTEXT: /[^<](?s:.*)/".to_string()),
        (ToolChoice::Auto, Some(c)) => Some(content_rule(c)),
        _ => None,
    };
    match &text {
        Some(_) => g.push_str(&format!("start: calls | content\ncalls: {calls}\n")),
        None => g.push_str(&format!("start: {calls}\n")),
    }
    g.push_str(&format!(
        "call: {open:?} \"\\n\" args \"\\n\" {close:?}\nargs: %json {schema}\n",
        open = CALL_OPEN,
        close = CALL_CLOSE
    ));
    if let Some(t) = text {
        g.push_str(&format!("content: {t}\n"));
    }
    Some(g)
}

/// The Lark right-hand side for a content constraint inside the tools grammar.
fn content_rule(c: &Constraint) -> String {
    match c {
        Constraint::JsonObject => format!("%json {}", compact(serde_json::json!({"type": "object"}))),
        Constraint::JsonSchema(s) => match serde_json::from_str::<Value>(s) {
            Ok(v) => format!("%json {}", compact(v)),
            Err(_) => format!("%json {s}"),
        },
        Constraint::Regex(r) => format!("/{}/", r.replace('/', "\\/")),
        // A whole grammar cannot be embedded; the answer is its text or calls.
        Constraint::Grammar(_) => "TEXT\nTEXT: /[^<](?s:.*)/".into(),
    }
}

/// One call read back from an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as JSON text, exactly as the model wrote them.
    pub arguments: String,
}

/// What [`CallParser`] found, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Answer text that is not a call.
    Content(String),
    /// Call `index` (from 0) begins; its name is known.
    CallStart { index: usize, name: String },
    /// More of call `index`'s arguments JSON.
    Arguments { index: usize, text: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing decided: the answer may still start with a call.
    Undecided,
    /// Plain content to the end.
    Content,
    /// Between calls: whitespace, then a call or the end.
    Between,
    /// Inside a call's JSON object.
    Call,
    /// After a call's object, before its close tag.
    Closing,
}

/// Reads an answer's text as it streams: content passes through; calls (only at the start of
/// the answer, one after another) come out as a start with the name, then argument chunks.
/// Text that breaks the syntax after a call began is given back as content at [`Self::finish`].
#[derive(Debug)]
pub struct CallParser {
    mode: Mode,
    buf: String,
    /// The current call's JSON text so far.
    object: String,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Byte offset in `object` where the arguments value starts, once the name is known.
    args_from: Option<usize>,
    /// Argument bytes already emitted.
    args_sent: usize,
    calls: usize,
    started: bool,
    /// Everything since the first call began, to give back if the syntax breaks.
    raw: String,
    broken: bool,
}

impl Default for CallParser {
    fn default() -> Self {
        Self::new()
    }
}

impl CallParser {
    pub fn new() -> Self {
        Self {
            mode: Mode::Undecided,
            buf: String::new(),
            object: String::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            args_from: None,
            args_sent: 0,
            calls: 0,
            started: false,
            raw: String::new(),
            broken: false,
        }
    }

    /// Calls completed so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.mode == Mode::Content {
            if !text.is_empty() {
                out.push(Piece::Content(text.to_string()));
            }
            return out;
        }
        if self.mode != Mode::Undecided {
            self.raw.push_str(text);
        }
        self.buf.push_str(text);
        self.run(&mut out);
        out
    }

    /// The end of the answer: whatever is held back comes out.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let rest = match self.mode {
            Mode::Undecided | Mode::Content | Mode::Between => std::mem::take(&mut self.buf),
            Mode::Call | Mode::Closing => {
                // A call that never finished: its text is all the caller can have.
                self.broken = true;
                std::mem::take(&mut self.object) + &std::mem::take(&mut self.buf)
            }
        };
        if !rest.trim().is_empty() || (self.mode == Mode::Undecided && !rest.is_empty()) {
            out.push(Piece::Content(rest));
        }
        self.mode = Mode::Content;
        out
    }

    fn run(&mut self, out: &mut Vec<Piece>) {
        loop {
            match self.mode {
                Mode::Undecided => {
                    let t = self.buf.trim_start();
                    if t.starts_with(CALL_OPEN) {
                        let skip = self.buf.len() - t.len() + CALL_OPEN.len();
                        self.raw = self.buf.clone();
                        self.buf.drain(..skip);
                        self.mode = Mode::Call;
                        self.begin_call();
                    } else if CALL_OPEN.starts_with(t) {
                        return; // maybe a call: wait
                    } else {
                        self.mode = Mode::Content;
                        out.push(Piece::Content(std::mem::take(&mut self.buf)));
                        return;
                    }
                }
                Mode::Content => return,
                Mode::Between => {
                    let t = self.buf.trim_start();
                    if t.starts_with(CALL_OPEN) {
                        let skip = self.buf.len() - t.len() + CALL_OPEN.len();
                        self.buf.drain(..skip);
                        self.mode = Mode::Call;
                        self.begin_call();
                    } else if CALL_OPEN.starts_with(t) {
                        return;
                    } else {
                        // Text after the calls: not part of the syntax; dropped from calls,
                        // kept as content.
                        self.mode = Mode::Content;
                        let rest = std::mem::take(&mut self.buf);
                        if !rest.trim().is_empty() {
                            out.push(Piece::Content(rest));
                        }
                        return;
                    }
                }
                Mode::Call => {
                    if !self.scan(out) {
                        return;
                    }
                }
                Mode::Closing => {
                    let t = self.buf.trim_start();
                    if t.starts_with(CALL_CLOSE) {
                        let skip = self.buf.len() - t.len() + CALL_CLOSE.len();
                        self.buf.drain(..skip);
                        self.mode = Mode::Between;
                    } else if CALL_CLOSE.starts_with(t) {
                        return;
                    } else {
                        self.break_syntax(out);
                        return;
                    }
                }
            }
        }
    }

    fn begin_call(&mut self) {
        self.object.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.args_from = None;
        self.args_sent = 0;
        self.started = false;
    }

    /// Moves characters from `buf` into the call's object; `true` when the object closed.
    fn scan(&mut self, out: &mut Vec<Piece>) -> bool {
        let buf = std::mem::take(&mut self.buf);
        let mut closed_at = None;
        for (i, c) in buf.char_indices() {
            if self.depth == 0 && self.object.is_empty() {
                if c.is_whitespace() {
                    continue;
                }
                if c != '{' {
                    self.buf = buf[i..].to_string();
                    self.break_syntax(out);
                    return false;
                }
            }
            self.object.push(c);
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        closed_at = Some(i + c.len_utf8());
                        break;
                    }
                }
                ':' if self.depth == 1 && self.args_from.is_none() => {
                    // `"arguments":` with the name already written: the name is known.
                    if self.object.trim_end_matches(':').trim_end().ends_with("\"arguments\"")
                        && let Some(name) = self.name_so_far()
                    {
                        self.args_from = Some(self.object.len());
                        self.started = true;
                        out.push(Piece::CallStart { index: self.calls, name });
                    }
                }
                _ => {}
            }
        }
        if let Some(end) = closed_at {
            self.buf = buf[end..].to_string();
            self.end_call(out);
            self.mode = Mode::Closing;
            return true;
        }
        self.stream_args(out, false);
        false
    }

    /// The `name` value if the object so far is `{"name": "…", "arguments":`.
    fn name_so_far(&self) -> Option<String> {
        let probe = format!("{}0}}", self.object);
        let v: Value = serde_json::from_str(&probe).ok()?;
        v.get("name")?.as_str().map(str::to_string)
    }

    /// Emits the arguments text written since the last chunk (when `closing`, all of it but
    /// the call object's own closing brace).
    fn stream_args(&mut self, out: &mut Vec<Piece>, closing: bool) {
        let Some(from) = self.args_from else { return };
        let end = if closing { self.object.len().saturating_sub(1) } else { self.object.len() };
        let start = from + self.args_sent;
        if end > start {
            let chunk = &self.object[start..end];
            let text = if self.args_sent == 0 { chunk.trim_start() } else { chunk };
            let text = if closing { text.trim_end() } else { text };
            if !text.is_empty() {
                out.push(Piece::Arguments { index: self.calls, text: text.to_string() });
            }
            self.args_sent = end - from;
        }
    }

    fn end_call(&mut self, out: &mut Vec<Piece>) {
        let parsed: Option<(String, String)> = serde_json::from_str::<Value>(&self.object).ok().and_then(|v| {
            let name = v.get("name")?.as_str()?.to_string();
            let args = v.get("arguments")?;
            Some((name, if args.is_string() { args.as_str()?.to_string() } else { args.to_string() }))
        });
        match parsed {
            Some(_) if self.started => self.stream_args(out, true),
            Some((name, args)) => {
                out.push(Piece::CallStart { index: self.calls, name });
                out.push(Piece::Arguments { index: self.calls, text: args });
            }
            None => {
                self.break_syntax(out);
                return;
            }
        }
        self.calls += 1;
        self.object.clear();
    }

    /// The syntax broke after a call began: the rest of the answer is content.
    fn break_syntax(&mut self, out: &mut Vec<Piece>) {
        self.broken = true;
        self.mode = Mode::Content;
        let rest = std::mem::take(&mut self.object) + &std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            out.push(Piece::Content(rest));
        }
    }
}

/// A whole answer read at once: its content and its calls. An answer whose call syntax breaks
/// is all content, with no calls.
pub fn parse(text: &str) -> (String, Vec<ToolCall>) {
    let mut p = CallParser::new();
    let mut pieces = p.push(text);
    pieces.extend(p.finish());
    let mut content = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Content(t) => content.push_str(&t),
            Piece::CallStart { name, .. } => calls.push(ToolCall { name, arguments: String::new() }),
            Piece::Arguments { text, .. } => {
                if let Some(c) = calls.last_mut() {
                    c.arguments.push_str(&text);
                }
            }
        }
    }
    if p.broken {
        return (text.to_string(), Vec::new());
    }
    (content, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        Tool {
            name: name.into(),
            description: "d".into(),
            parameters: r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#.into(),
        }
    }

    fn reassemble(pieces: &[Piece]) -> (String, Vec<ToolCall>) {
        let mut content = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        for p in pieces {
            match p {
                Piece::Content(t) => content.push_str(t),
                Piece::CallStart { index, name } => {
                    assert_eq!(*index, calls.len());
                    calls.push(ToolCall { name: name.clone(), arguments: String::new() });
                }
                Piece::Arguments { index, text } => calls[*index].arguments.push_str(text),
            }
        }
        (content, calls)
    }

    #[test]
    fn calls_parse_whole_and_streamed_in_any_split() {
        let text = render_calls(&[
            ("get_weather".into(), r#"{"city": "Paris", "when": {"day": "mon"}}"#.into()),
            ("get_time".into(), r#"{"tz": "a}b\"{"}"#.into()),
        ]);
        let (content, calls) = parse(&text);
        assert_eq!(content, "");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "get_weather");
        let args: Value = serde_json::from_str(&calls[0].arguments).unwrap();
        assert_eq!(args["when"]["day"], "mon");
        assert_eq!(serde_json::from_str::<Value>(&calls[1].arguments).unwrap()["tz"], "a}b\"{");
        for step in [1, 2, 3, 7, 13] {
            let mut p = CallParser::new();
            let mut pieces = Vec::new();
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(step) {
                pieces.extend(p.push(&chunk.iter().collect::<String>()));
            }
            pieces.extend(p.finish());
            assert_eq!(reassemble(&pieces), (content.clone(), calls.clone()), "split every {step}");
            // Arguments stream before the call ends.
            assert!(pieces.iter().filter(|p| matches!(p, Piece::Arguments { index: 0, .. })).count() >= 1);
        }
    }

    #[test]
    fn plain_answers_and_broken_calls_are_content() {
        assert_eq!(parse("Hello <tool_call> there"), ("Hello <tool_call> there".into(), vec![]));
        assert_eq!(parse("<tool"), ("<tool".into(), vec![]));
        let broken = "<tool_call>\n{\"name\": \"x\", \"arguments\": {\"a\": 1}";
        assert_eq!(parse(broken), (broken.into(), vec![]));
        let garbage = "<tool_call>\nnot json";
        assert_eq!(parse(garbage), (garbage.into(), vec![]));
        // Arguments before the name still parse once the object is complete.
        let (c, calls) = parse("<tool_call>\n{\"arguments\": {\"a\": 1}, \"name\": \"f\"}\n</tool_call>");
        assert_eq!((c.as_str(), calls[0].name.as_str(), calls[0].arguments.as_str()), ("", "f", "{\"a\":1}"));
    }

    #[test]
    fn grammars_and_instructions() {
        let tools = [tool("get_weather"), tool("get_time")];
        assert!(grammar(&tools, &ToolChoice::None, true, None).is_none());
        let g = grammar(&tools, &ToolChoice::Function("get_time".into()), false, None).unwrap();
        assert!(g.starts_with("start: call\n") && g.contains("get_time") && !g.contains("get_weather"), "{g}");
        let g = grammar(&tools, &ToolChoice::Auto, true, None).unwrap();
        assert!(g.contains("start: calls | content") && g.contains("anyOf"), "{g}");
        let s = instructions(&tools, &ToolChoice::Required, true);
        assert!(s.contains("get_weather") && s.contains("must call"));
        assert!(instructions(&tools, &ToolChoice::None, true).is_empty());
        assert!(valid_name("get_weather-2") && !valid_name("") && !valid_name("a b") && !valid_name(&"x".repeat(65)));
    }
}
