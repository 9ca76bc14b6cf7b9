//! Messages → chat template → token ids. Deterministic (the same messages always give the same
//! bytes, so a conversation's next turn starts with this turn's prompt and hits the prefix
//! cache), and bounded: a history over the limit loses its oldest turns first while the
//! leading system prompt and the last user message stay.

use chorus_engine::chat_template::ChatMessage;
use chorus_engine::engine::Engine;
use chorus_proto::{Message, Role};

/// A built prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// Messages left out to fit the limit (whole turns, oldest first).
    pub trimmed: usize,
}

/// Why no prompt could be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    #[error(
        "messages: the prompt is {tokens} tokens with only the system prompt and the last turn kept; the limit is {limit}"
    )]
    TooLong { tokens: usize, limit: usize },
    #[error("messages: {0}")]
    Template(String),
    #[error("prompt: the prompt is {tokens} tokens; the limit is {limit}")]
    RawTooLong { tokens: usize, limit: usize },
    #[error("prompt: {0}")]
    Tokenize(String),
}

/// The prompt for the next turn of a stored conversation. When `context` (the previous turn's
/// prompt and answer ids, from the same model) decodes to the start of the rendered history,
/// the prompt is exactly those ids followed by the tokens of the rest: the model sees the bytes
/// it saw before, and the whole previous turn is a prefix-cache hit even where re-tokenizing
/// the answer would have split it differently. Otherwise (another model, a template that
/// rewrites history, a stop string cut the answer, over the limit) it is [`build`].
/// A completion's raw prompt: text tokenized as text (the model's BOS first when its
/// tokenizer adds one), or ids as given (the engine checks them against its vocabulary).
pub fn raw(engine: &Engine, prompt: chorus_proto::RawPrompt, limit: usize) -> Result<Prompt, PromptError> {
    let ids = match prompt {
        chorus_proto::RawPrompt::Text(t) => {
            engine.tokenizer.encode(&t, false).map_err(|e| PromptError::Tokenize(e.to_string()))?
        }
        chorus_proto::RawPrompt::Ids(ids) => ids,
    };
    if ids.len() > limit {
        return Err(PromptError::RawTooLong { tokens: ids.len(), limit });
    }
    Ok(Prompt { ids, trimmed: 0 })
}

pub fn build_after(
    engine: &Engine,
    model: &str,
    context: Option<&crate::store::Context>,
    messages: &[Message],
    limit: usize,
) -> Result<Prompt, PromptError> {
    if let Some(ctx) = context.filter(|c| c.model == model && !c.ids.is_empty())
        && let Some(ids) = splice(engine, &ctx.ids, messages).filter(|ids| ids.len() <= limit)
    {
        return Ok(Prompt { ids, trimmed: 0 });
    }
    build(engine, messages, limit)
}

fn splice(engine: &Engine, context: &[u32], messages: &[Message]) -> Option<Vec<u32>> {
    let template = engine.template.as_ref()?;
    let chat: Vec<ChatMessage> = messages
        .iter()
        .map(|m| ChatMessage { role: m.role.as_str().to_string(), content: m.content.clone() })
        .collect();
    let rendered = template.render_spans(&chat, true).ok()?;
    // A BOS the tokenizer adds by itself is not in the rendered text.
    let lead = engine.tokenizer.encode("", true).ok()?;
    let body = context.strip_prefix(lead.as_slice()).unwrap_or(context);
    let before = engine.tokenizer.decode(body, false).ok()?;
    let rest = rendered.text.strip_prefix(before.as_str())?;
    // The new messages' contents, relative to `rest`: still text, never control tokens.
    let at = before.len();
    let content: Vec<_> =
        rendered.content.iter().filter(|s| s.end > at).map(|s| s.start.max(at) - at..s.end - at).collect();
    let tail = engine.tokenizer.encode_chat(rest, &content).ok()?;
    let mut ids = context.to_vec();
    ids.extend_from_slice(tail.strip_prefix(lead.as_slice()).unwrap_or(&tail));
    Some(ids)
}

fn render(engine: &Engine, msgs: &[&Message]) -> Result<Vec<u32>, PromptError> {
    let chat: Vec<ChatMessage> =
        msgs.iter().map(|m| ChatMessage { role: m.role.as_str().to_string(), content: m.content.clone() }).collect();
    engine.chat_prompt(&chat).map_err(|e| PromptError::Template(e.to_string()))
}

/// Builds the prompt for `messages` in at most `limit` tokens.
pub fn build(engine: &Engine, messages: &[Message], limit: usize) -> Result<Prompt, PromptError> {
    let start = usize::from(messages.first().is_some_and(|m| m.role == Role::System));
    // Where each droppable turn begins: the first message after the system prompt, then every
    // user message. Dropping `k` turns keeps `messages[..start]` and `messages[cuts[k]..]`.
    let mut cuts = vec![start];
    cuts.extend((start + 1..messages.len()).filter(|&i| messages[i].role == Role::User));
    let keep = |k: usize| -> Vec<&Message> { messages[..start].iter().chain(&messages[cuts[k]..]).collect() };

    let full = render(engine, &keep(0))?;
    if full.len() <= limit {
        return Ok(Prompt { ids: full, trimmed: 0 });
    }
    // Fewer messages never render longer, so the fewest turns to drop is a binary search.
    let last = cuts.len() - 1;
    let shortest = render(engine, &keep(last))?;
    if shortest.len() > limit {
        return Err(PromptError::TooLong { tokens: shortest.len(), limit });
    }
    let (mut lo, mut hi, mut best) = (1, last, shortest);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let ids = render(engine, &keep(mid))?;
        if ids.len() <= limit {
            hi = mid;
            best = ids;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Prompt { ids: best, trimmed: cuts[hi] - start })
}
