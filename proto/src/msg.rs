//! The messages. Field order is part of the wire format (bincode is positional): add fields
//! only with a protocol version bump.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Service tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Free,
    Team,
    Plus,
    Enterprise,
}

impl Tier {
    /// Every tier, lowest priority first.
    pub const ALL: [Tier; 4] = [Tier::Free, Tier::Team, Tier::Plus, Tier::Enterprise];

    /// The lowercase name used in config, metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Team => "team",
            Tier::Plus => "plus",
            Tier::Enterprise => "enterprise",
        }
    }

    /// Position in [`Tier::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown tier {s:?}; expected one of free, team, plus, enterprise"))
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering the assistant's call (see [`crate::tools`]).
    Tool,
}

impl Role {
    /// The chat-template name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// How tokens are picked. The core checks the ranges and answers
/// [`ErrorCode::InvalidRequest`] naming the field. `None` takes the serving fleet's model
/// default ([`SamplingDefaults`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 is greedy.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// 0 disables.
    pub top_k: Option<u32>,
    /// 0 disables.
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1 disables.
    pub repetition_penalty: f32,
    pub seed: Option<u64>,
    /// `Some(n)`: each token carries its logprob and the `n` most likely alternatives.
    pub logprobs: Option<u8>,
    /// Generate to `max_tokens` even past end-of-turn (benchmarks).
    pub ignore_eos: bool,
    /// OpenAI `logit_bias`: (token id, bias in -100..=100) pairs.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            logprobs: None,
            ignore_eos: false,
            logit_bias: Vec::new(),
        }
    }
}

/// Structural limits on a [`Generate`], checked by [`Generate::check`] on both sides. The
/// frame limit bounds the total; these name the field that is too big.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_id_bytes: usize,
    pub max_messages: usize,
    pub max_message_bytes: usize,
    pub max_stops: usize,
    pub max_stop_bytes: usize,
    pub max_comment_bytes: usize,
    /// The most tokens one answer may ask for (`max_tokens`). Equal to the engine's own
    /// ceiling (a test in the core keeps them in step), so the edge's bound is the protocol's.
    pub max_tokens: u32,
    /// The most `logit_bias` entries (OpenAI's limit).
    pub max_logit_bias: usize,
    /// The most tools one request may offer.
    pub max_tools: usize,
    /// The largest grammar source ([`Constraint`]) and the largest tool definition (name,
    /// description and parameter schema together), in bytes.
    pub max_schema_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_id_bytes: 256,
            max_messages: 512,
            max_message_bytes: 256 * 1024,
            max_stops: 8,
            max_stop_bytes: 256,
            max_comment_bytes: 4096,
            max_tokens: 65_536,
            max_logit_bias: 300,
            max_tools: 64,
            max_schema_bytes: 64 * 1024,
        }
    }
}

/// Start generating. The first frame on a request stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generate {
    /// The edge's id for the request (logs, idempotency).
    pub request_id: String,
    pub tenant: String,
    pub user: String,
    pub tier: Tier,
    /// Whether and how the conversation store takes part.
    pub conversation: ConversationRef,
    /// The conversation so far, oldest first; the last message is the user's. With
    /// [`ConversationRef::Continue`], only this turn's new messages: the core puts the stored
    /// history before them.
    pub messages: Vec<Message>,
    pub sampling: Sampling,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// Milliseconds the edge will wait for the whole answer, counted from when the core reads
    /// this frame; past it the core ends the request with [`ErrorCode::DeadlineExceeded`].
    pub deadline_ms: Option<u32>,
    /// W3C `traceparent` of the edge's span.
    pub trace: Option<String>,
    /// Put the prompt text the core built in [`Accepted::prompt`] (evaluation: does the
    /// conversation store deliver context). The edge sets it only where its configuration allows.
    pub echo_prompt: bool,
    /// What the answer's text must match (OpenAI `response_format`); `None` is free text.
    pub constraint: Option<Constraint>,
    /// Functions the model may call, rendered into the prompt by the core.
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    /// Whether one answer may hold several calls.
    pub parallel_tool_calls: bool,
    /// A raw prompt (OpenAI `/v1/completions`): used as it is, no chat template, no store;
    /// `messages` is then empty.
    pub prompt: Option<RawPrompt>,
    /// Answers to sample from one prefill (OpenAI `n`), `1..=MAX_N`; more than one only for
    /// a request that is not stored.
    pub n: u8,
}

/// The most answers one request may ask for.
pub const MAX_N: u8 = 16;

/// A stateless request with no owner yet, one empty-handed answer of 256 tokens at the model's
/// sampling defaults: callers set what they need and take the rest (`..Generate::default()`).
impl Default for Generate {
    fn default() -> Self {
        Self {
            request_id: String::new(),
            tenant: String::new(),
            user: String::new(),
            tier: Tier::Free,
            conversation: ConversationRef::Stateless,
            messages: Vec::new(),
            sampling: Sampling::default(),
            max_tokens: 256,
            stop: Vec::new(),
            deadline_ms: None,
            trace: None,
            echo_prompt: false,
            constraint: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::None,
            parallel_tool_calls: false,
            prompt: None,
            n: 1,
        }
    }
}

impl Generate {
    /// Whether the answer may hold tool calls.
    pub fn offers_tools(&self) -> bool {
        crate::tools::offered(&self.tools, &self.tool_choice)
    }
}

/// A completion's prompt: text (tokenized as text: special-token markers in it are not
/// control tokens) or token ids (checked against the model's vocabulary by the core).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RawPrompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A grammar the answer is constrained to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// A JSON schema, as JSON text.
    JsonSchema(String),
    /// A regular expression.
    Regex(String),
    /// A Lark grammar (llguidance's dialect).
    Grammar(String),
}

impl Constraint {
    fn source(&self) -> &str {
        match self {
            Constraint::JsonObject => "",
            Constraint::JsonSchema(s) | Constraint::Regex(s) | Constraint::Grammar(s) => s,
        }
    }
}

/// A function the model may call (OpenAI `tools[].function`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    pub description: String,
    /// The arguments' JSON schema, as JSON text (`{"type": "object"}` when the caller gave none).
    pub parameters: String,
}

/// OpenAI `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolChoice {
    /// The model answers in text or calls tools.
    Auto,
    /// The model answers in text; the tools are not offered.
    None,
    /// The model calls at least one tool.
    Required,
    /// The model calls this tool.
    Function(String),
}

/// What a [`Generate`] does with the conversation store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationRef {
    /// Answer from `messages` alone; nothing is stored.
    Stateless,
    /// Start a stored conversation with `messages`; the core picks its id and names it in
    /// [`Accepted::conversation_id`].
    New,
    /// Continue the stored conversation with this id (the caller's own; any other id is
    /// [`ErrorCode::NotFound`]).
    Continue(String),
}

/// The region a conversation lives in, from its id: cores name conversations
/// `conv_<region>_<32 hex>` (the region that created it, its *home*). Edges route a continuing
/// request there first, and a core elsewhere that does not hold it answers single-turn (its
/// home is unreachable) instead of "not found". Ids of another form have no home.
pub fn conversation_home(id: &str) -> Option<&str> {
    let (region, hex) = id.strip_prefix("conv_")?.rsplit_once('_')?;
    let region_ok = (1..=63).contains(&region.len())
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (region_ok && hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(region)
}

/// The prefix of a conversation id homed in `region` (see [`conversation_home`]).
pub fn conversation_prefix(region: &str) -> String {
    format!("conv_{region}_")
}

impl ConversationRef {
    /// The conversation's id when it continues one.
    pub fn id(&self) -> Option<&str> {
        match self {
            ConversationRef::Continue(id) => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod home_tests {
    use super::*;

    #[test]
    fn conversation_ids_name_their_home_region() {
        let hex = "0123456789abcdef0123456789abcdef";
        assert_eq!(conversation_home(&format!("{}{hex}", conversation_prefix("eu-west"))), Some("eu-west"));
        assert_eq!(conversation_home(&format!("conv_{hex}")), None, "ids from before homes");
        assert_eq!(conversation_home(&format!("conv_EU_{hex}")), None);
        assert_eq!(conversation_home("conv_eu-west_abc"), None);
        assert_eq!(conversation_home(&format!("fb_eu-west_{hex}")), None);
    }
}

/// A field of a [`Generate`] that breaks a structural limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The field, e.g. `messages[3].content`.
    pub field: String,
    pub problem: String,
}

impl Generate {
    /// Checks lengths and counts (not sampling ranges, which the model's sampler owns).
    pub fn check(&self, l: &Limits) -> Result<(), FieldError> {
        let err = |field: &str, problem: String| Err(FieldError { field: field.to_string(), problem });
        check_owner(&self.request_id, &self.tenant, &self.user, l)?;
        if let Some(c) = self.conversation.id() {
            check_id("conversation", c, l)?;
        }
        if self.n == 0 || self.n > MAX_N {
            return err("n", format!("{}; must be 1..={MAX_N}", self.n));
        }
        if self.n > 1 && self.conversation != ConversationRef::Stateless {
            return err("n", "several answers cannot be stored in one conversation".into());
        }
        if let Some(p) = &self.prompt {
            let (len, limit, unit) = match p {
                RawPrompt::Text(t) => (t.len(), l.max_message_bytes, "bytes"),
                RawPrompt::Ids(ids) => (ids.len(), l.max_tokens as usize, "tokens"),
            };
            if len == 0 || len > limit {
                return err("prompt", format!("{len} {unit}; must be 1..={limit}"));
            }
            if !self.messages.is_empty() || self.conversation != ConversationRef::Stateless || !self.tools.is_empty() {
                return err("prompt", "a raw prompt takes no messages, conversation or tools".into());
            }
        } else if self.messages.is_empty() {
            return err("messages", "must hold at least one message".into());
        }
        if self.messages.len() > l.max_messages {
            return err("messages", format!("{} messages; the limit is {}", self.messages.len(), l.max_messages));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.content.len() > l.max_message_bytes {
                return err(
                    &format!("messages[{i}].content"),
                    format!("{} bytes; the limit is {}", m.content.len(), l.max_message_bytes),
                );
            }
        }
        if self.prompt.is_none() && !matches!(self.messages.last().map(|m| m.role), Some(Role::User | Role::Tool)) {
            return err("messages", "the last message must be the user's or a tool's".into());
        }
        if self.sampling.logit_bias.len() > l.max_logit_bias {
            let n = self.sampling.logit_bias.len();
            return err("logit_bias", format!("{n} entries; the limit is {}", l.max_logit_bias));
        }
        if let Some(c) = &self.constraint
            && c.source().len() > l.max_schema_bytes
        {
            return err("response_format", format!("{} bytes; the limit is {}", c.source().len(), l.max_schema_bytes));
        }
        if self.tools.len() > l.max_tools {
            return err("tools", format!("{} tools; the limit is {}", self.tools.len(), l.max_tools));
        }
        for (i, t) in self.tools.iter().enumerate() {
            if !crate::tools::valid_name(&t.name) {
                return err(&format!("tools[{i}].function.name"), "must be 1..=64 of A-Z, a-z, 0-9, _ and -".into());
            }
            let bytes = t.name.len() + t.description.len() + t.parameters.len();
            if bytes > l.max_schema_bytes {
                return err(&format!("tools[{i}]"), format!("{bytes} bytes; the limit is {}", l.max_schema_bytes));
            }
        }
        match &self.tool_choice {
            ToolChoice::Function(name) if !self.tools.iter().any(|t| &t.name == name) => {
                return err(
                    "tool_choice",
                    format!("names {:?}, which is not in tools", name.chars().take(64).collect::<String>()),
                );
            }
            ToolChoice::Required | ToolChoice::Function(_) if self.tools.is_empty() => {
                return err("tool_choice", "a tool call is required but no tools are given".into());
            }
            _ => {}
        }
        if self.max_tokens == 0 || self.max_tokens > l.max_tokens {
            return err("max_tokens", format!("{}; must be 1..={}", self.max_tokens, l.max_tokens));
        }
        if self.stop.len() > l.max_stops {
            return err("stop", format!("{} strings; the limit is {}", self.stop.len(), l.max_stops));
        }
        for (i, s) in self.stop.iter().enumerate() {
            if s.is_empty() || s.len() > l.max_stop_bytes {
                return err(&format!("stop[{i}]"), format!("{} bytes; must be 1..={}", s.len(), l.max_stop_bytes));
            }
        }
        Ok(())
    }
}

/// Ids are 1..=`max_id_bytes` bytes without control characters (they end up in keys, logs and
/// database text columns, which refuse NUL).
fn check_id(field: &str, v: &str, l: &Limits) -> Result<(), FieldError> {
    let problem = if v.is_empty() || v.len() > l.max_id_bytes {
        format!("{} bytes; must be 1..={}", v.len(), l.max_id_bytes)
    } else if let Some(c) = v.chars().find(|c| c.is_control()) {
        format!("contains the control character {c:?}")
    } else {
        return Ok(());
    };
    Err(FieldError { field: field.to_string(), problem })
}

/// Every request names who it is for: an empty or oversized id is refused by name.
fn check_owner(request_id: &str, tenant: &str, user: &str, l: &Limits) -> Result<(), FieldError> {
    check_id("request_id", request_id, l)?;
    check_id("tenant", tenant, l)?;
    check_id("user", user, l)
}

/// Edge → core on a request stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Generate(Box<Generate>),
    /// Stop generating; the core answers with [`ErrorCode::Cancelled`]. Resetting the stream
    /// does the same without the answer.
    Cancel,
    /// Read or change what the conversation store holds for one user.
    Store(Box<StoreRequest>),
}

/// A conversation-store operation for one user of one tenant. A conversation of another
/// tenant or user is indistinguishable from a missing one ([`ErrorCode::NotFound`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreRequest {
    pub request_id: String,
    pub tenant: String,
    pub user: String,
    pub op: StoreOp,
}

/// What a [`StoreRequest`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreOp {
    /// The user's conversations, most recently updated first, at most `limit`.
    List { limit: u32 },
    /// One conversation, every turn.
    Get { conversation_id: String },
    /// Deletes one conversation (both tiers, its idempotency records).
    Delete { conversation_id: String },
    /// Deletes everything held for the user: conversations, feedback, idempotency records.
    Erase,
    /// Everything held for the user as one JSON document, sent in chunks.
    Export,
    /// A rating of one answer (turn `version` of the conversation), for reward-model training.
    Feedback { conversation_id: String, version: u64, rating: Rating, comment: Option<String> },
}

impl StoreRequest {
    /// Checks lengths.
    pub fn check(&self, l: &Limits) -> Result<(), FieldError> {
        check_owner(&self.request_id, &self.tenant, &self.user, l)?;
        match &self.op {
            StoreOp::Get { conversation_id } | StoreOp::Delete { conversation_id } => {
                check_id("conversation_id", conversation_id, l)
            }
            StoreOp::Feedback { conversation_id, comment, .. } => {
                check_id("conversation_id", conversation_id, l)?;
                match comment {
                    Some(c) if c.len() > l.max_comment_bytes => Err(FieldError {
                        field: "comment".into(),
                        problem: format!("{} bytes; the limit is {}", c.len(), l.max_comment_bytes),
                    }),
                    _ => Ok(()),
                }
            }
            StoreOp::List { .. } | StoreOp::Erase | StoreOp::Export => Ok(()),
        }
    }
}

/// Thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Up,
    Down,
}

/// One conversation in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub id: String,
    pub tier: Tier,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Turns committed.
    pub version: u64,
}

/// One committed turn: the messages it added and the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// 1 for the first turn; the conversation's version after it.
    pub version: u64,
    /// The request that produced it.
    pub request_id: String,
    pub created_ms: u64,
    /// The messages this turn added (the first turn's include any system prompt).
    pub input: Vec<Message>,
    /// The assistant's answer, exactly as streamed.
    pub answer: String,
    pub finish_reason: FinishReason,
    pub model: String,
    pub usage: Usage,
}

/// A whole conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationView {
    pub summary: ConversationSummary,
    pub turns: Vec<Turn>,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    pub conversations: u64,
    pub feedback: u64,
    pub idempotency_records: u64,
}

/// Core → edge answer to a [`StoreRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreReply {
    List(Vec<ConversationSummary>),
    Conversation(ConversationView),
    Deleted,
    Erased(Erased),
    /// A piece of the export document (UTF-8 JSON); the piece with `last` ends the stream.
    Export {
        data: String,
        last: bool,
    },
    FeedbackRecorded {
        feedback_id: String,
    },
}

/// The core took the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The model that will answer (the fleet's model id).
    pub model: String,
    /// The fleet that will answer (`mini`, `flagship`).
    pub fleet: String,
    /// The request was routed to a smaller fleet than its tier's because its own was busy.
    pub degraded: bool,
    /// Requests of its tier queued ahead of it in its fleet when it was accepted.
    pub queue_position: u32,
    /// Tokens of the prompt the core built.
    pub prompt_tokens: u32,
    /// Oldest messages left out to fit the tier's input cap (the system prompt is kept).
    pub trimmed_messages: u32,
    /// The stored conversation this turn belongs to.
    pub conversation_id: Option<String>,
    /// Messages of the prompt that came from the store.
    pub history_messages: u32,
    /// How the conversation store served this request.
    pub store: StoreStatus,
    /// The prompt the core built (history, then this turn, through the chat template), when
    /// [`Generate::echo_prompt`] asked for it.
    pub prompt: Option<String>,
}

/// How the conversation store served a request. Anything but `NotUsed` and `Ok` is a degraded
/// answer (`x-chorus-degraded: store` at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreStatus {
    /// A stateless request.
    NotUsed,
    Ok,
    /// The hot tier is unreachable: the history came from the durable tier (slower, complete).
    HotUnavailable,
    /// The store is unreachable: a single-turn answer from the request's messages alone, and
    /// the turn will not be stored.
    Unavailable,
}

impl StoreStatus {
    /// Whether the edge flags the answer as degraded.
    pub fn degraded(self) -> bool {
        matches!(self, StoreStatus::HotUnavailable | StoreStatus::Unavailable)
    }
}

/// What became of a turn in the conversation store; [`Done`] is sent only after this is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stored {
    /// Nothing was to be stored (a stateless request).
    NotRequested,
    /// The turn is durable; `version` names it (for feedback).
    Committed { conversation_id: String, version: u64 },
    /// The turn was not stored: the answer above is not part of the conversation.
    Failed { code: ErrorCode, message: String },
}

/// A token's log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logprob {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// Text that became final with this token; may be empty (a partial UTF-8 character or a
    /// possible stop string held back, an end-of-turn token).
    pub text: String,
    pub ids: Vec<u32>,
    /// When asked for: the chosen token's logprob and the most likely alternatives.
    pub logprobs: Option<(Logprob, Vec<Logprob>)>,
    /// UNIX time in microseconds at which the engine emitted the token (server timing; only
    /// as comparable across hosts as their clocks are).
    pub emitted_us: u64,
    /// Which of the request's `n` answers it belongs to (0 when `n` is 1).
    pub choice: u8,
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of turn or a stop string.
    Stop,
    /// `max_tokens` or the context filled.
    Length,
    /// The post-generation safety gate stopped it.
    ContentFilter,
}

impl FinishReason {
    /// The OpenAI name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// Token counts (OpenAI `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: u32,
}

/// The answer finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// With [`FinishReason::ContentFilter`]: the category that matched.
    pub filter_category: Option<String>,
    pub stored: Stored,
    /// With `n` > 1: how each answer ended, in choice order (`finish_reason` is choice 0's;
    /// `usage` counts the prompt once and every answer's tokens). Empty when `n` is 1.
    pub choices: Vec<ChoiceEnd>,
}

/// How one of several answers ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceEnd {
    pub finish_reason: FinishReason,
    pub filter_category: Option<String>,
    pub completion_tokens: u32,
}

/// The request failed; nothing more follows on the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    /// When retrying later can succeed.
    pub retry_after_ms: Option<u32>,
    /// The request field at fault, for [`ErrorCode::InvalidRequest`] (OpenAI's `error.param`).
    pub param: Option<String>,
}

/// Core → edge on a request stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Accepted(Accepted),
    Token(Token),
    Done(Done),
    Error(ErrorReply),
    Store(StoreReply),
}

impl Reply {
    /// `Done`, `Error` and store answers (but an export piece before the last) end the stream.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Accepted(_) | Reply::Token(_) | Reply::Store(StoreReply::Export { last: false, .. }))
    }
}

/// Stable error codes. On the wire a code is its number, so a code this build does not know
/// still decodes (as [`ErrorCode::Other`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum ErrorCode {
    /// A field is missing, malformed or out of range; the message names it.
    InvalidRequest,
    /// The prompt does not fit the tier's input cap even after trimming history.
    PromptTooLong,
    /// The fleet is full; retry after `retry_after_ms`.
    OverCapacity,
    /// Waited in the queue past the tier's deadline.
    QueueTimeout,
    /// The core is draining and takes no new work.
    Draining,
    /// The core shut down before the answer finished.
    ShuttingDown,
    /// The request's own deadline passed.
    DeadlineExceeded,
    /// The request was cancelled.
    Cancelled,
    /// A frame broke the protocol (malformed, oversized, out of order).
    Protocol,
    /// No such conversation for this user (another tenant's or user's reads the same).
    NotFound,
    /// Another turn was appended to the conversation first; this one was not stored.
    Conflict,
    /// The conversation store could not be reached or could not commit.
    StoreUnavailable,
    /// The engine failed while running the request.
    EngineFailed,
    /// A bug in the core.
    Internal,
    /// A code this build does not know.
    Other(u16),
}

impl ErrorCode {
    const TABLE: [(ErrorCode, u16, &'static str); 14] = [
        (ErrorCode::InvalidRequest, 1, "invalid_request"),
        (ErrorCode::PromptTooLong, 2, "prompt_too_long"),
        (ErrorCode::OverCapacity, 10, "over_capacity"),
        (ErrorCode::QueueTimeout, 11, "queue_timeout"),
        (ErrorCode::Draining, 12, "draining"),
        (ErrorCode::ShuttingDown, 13, "shutting_down"),
        (ErrorCode::DeadlineExceeded, 14, "deadline_exceeded"),
        (ErrorCode::Cancelled, 15, "cancelled"),
        (ErrorCode::Protocol, 20, "protocol_error"),
        (ErrorCode::NotFound, 40, "not_found"),
        (ErrorCode::Conflict, 41, "conflict"),
        (ErrorCode::StoreUnavailable, 42, "store_unavailable"),
        (ErrorCode::EngineFailed, 30, "engine_failed"),
        (ErrorCode::Internal, 31, "internal"),
    ];

    /// The wire number.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::Other(n) => n,
            c => Self::TABLE.iter().find(|e| e.0 == c).map_or(0, |e| e.1),
        }
    }

    /// The stable snake_case name (OpenAI error `code`).
    pub fn as_str(self) -> &'static str {
        Self::TABLE.iter().find(|e| e.0 == self).map_or("unknown", |e| e.2)
    }

    /// The HTTP status an edge answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::PromptTooLong | ErrorCode::Protocol => 400,
            ErrorCode::OverCapacity => 429,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::QueueTimeout | ErrorCode::Draining | ErrorCode::ShuttingDown | ErrorCode::StoreUnavailable => {
                503
            }
            ErrorCode::DeadlineExceeded => 504,
            ErrorCode::Cancelled => 499,
            ErrorCode::EngineFailed | ErrorCode::Internal | ErrorCode::Other(_) => 500,
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(n: u16) -> Self {
        Self::TABLE.iter().find(|e| e.1 == n).map_or(ErrorCode::Other(n), |e| e.0)
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        c.code()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Other(n) => write!(f, "error_{n}"),
            c => f.write_str(c.as_str()),
        }
    }
}

/// Edge → core, first frame on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    /// The edge's name, for the core's logs.
    pub edge_id: String,
}

/// A fleet the core serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetInfo {
    pub fleet: String,
    pub model: String,
    /// The model's context length, tokens.
    pub context_length: u32,
    /// What a request that leaves them unset samples with.
    pub defaults: SamplingDefaults,
}

/// A model's generation defaults (its card's recommendation, or the fleet's config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables.
    pub top_k: u32,
}

impl Default for SamplingDefaults {
    /// OpenAI's defaults: plain sampling at temperature 1.
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, top_k: 0 }
    }
}

/// One fleet's load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetLoad {
    pub fleet: String,
    /// Requests waiting to start, per tier ([`Tier::index`]).
    pub waiting: [u32; 4],
    pub running: u32,
    pub kv_blocks_used: u32,
    pub kv_blocks_total: u32,
}

/// The core's health and load, sent every few hundred milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Increases by one per report.
    pub seq: u64,
    /// `/readyz`: the engines are making progress and the core is not draining.
    pub ready: bool,
    pub draining: bool,
    pub fleets: Vec<FleetLoad>,
}

/// Core → edge on the control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Control {
    Welcome { version: u16, core_id: String, region: String, fleets: Vec<FleetInfo> },
    Load(LoadReport),
}
