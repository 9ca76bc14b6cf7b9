//! Constrained decoding: a grammar (JSON schema, any JSON object, a regex or a Lark grammar)
//! compiled once per request into a token matcher, whose mask the engine loop applies to a
//! constrained row's logits before sampling. The grammar engine is `llguidance`.
//!
//! [`Constraints`] belongs to one tokenizer: it builds the token trie on first use (so an engine
//! that never sees a constrained request never pays for it) and keeps a bounded cache of
//! compiled grammars keyed by the SHA-256 of their canonical source, so a repeated schema
//! costs one clone. Compiling runs on the caller's thread ([`crate::serve::EngineHandle::validate`]),
//! never on the engine loop; the loop only computes masks and advances matchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{self, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::tokenizer::Tokenizer;

/// Largest grammar source accepted (a JSON schema's canonical text, a regex, a Lark grammar).
pub const MAX_GRAMMAR_BYTES: usize = 64 * 1024;
/// Compiled grammars kept per engine.
const CACHE_ENTRIES: usize = 64;

/// What a sequence's output must match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grammar {
    /// Any JSON object (OpenAI `response_format: json_object`).
    JsonObject,
    /// A JSON schema, as JSON text (OpenAI `json_schema`).
    JsonSchema(String),
    /// A regular expression the whole output matches.
    Regex(String),
    /// A Lark grammar (llguidance's dialect, which embeds `%json {…}` schemas).
    Lark(String),
}

impl Grammar {
    /// The request field a problem with this grammar is reported against.
    pub fn field(&self) -> &'static str {
        match self {
            Self::JsonObject => "response_format",
            Self::JsonSchema(_) => "response_format.json_schema.schema",
            Self::Regex(_) => "response_format.regex",
            Self::Lark(_) => "response_format.grammar",
        }
    }

    fn source_len(&self) -> usize {
        match self {
            Self::JsonObject => 0,
            Self::JsonSchema(s) | Self::Regex(s) | Self::Lark(s) => s.len(),
        }
    }
}

/// Why a grammar was refused. Nothing was queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    #[error("{field} is {len} bytes; at most {max} are accepted", max = MAX_GRAMMAR_BYTES)]
    TooLarge { field: &'static str, len: usize },
    #[error("{field} is not valid JSON: {message}")]
    NotJson { field: &'static str, message: String },
    #[error("{field} must be a JSON object (a JSON schema)")]
    NotObject { field: &'static str },
    #[error("{field} cannot be compiled: {message}")]
    Compile { field: &'static str, message: String },
    #[error("constrained decoding is unavailable for this model: {0}")]
    Unavailable(String),
}

impl ConstraintError {
    /// The request field at fault (OpenAI's `error.param`).
    pub fn field(&self) -> &'static str {
        match self {
            Self::TooLarge { field, .. }
            | Self::NotJson { field, .. }
            | Self::NotObject { field }
            | Self::Compile { field, .. } => field,
            Self::Unavailable(_) => "response_format",
        }
    }
}

/// Compile-time figures, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    pub compiled: u64,
    pub cache_hits: u64,
}

/// The tokenizer as llguidance sees it: the trie of every token's bytes (special tokens behind
/// its `0xFF` marker so no grammar can spell them as text) and our own tokenization.
struct TokenizerView {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for TokenizerView {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<toktrie::TokenId> {
        match std::str::from_utf8(s).ok().and_then(|t| self.tokenizer.encode(t, false).ok()) {
            Some(mut ids) => {
                if self.tokenizer.adds_bos() && ids.first().copied() == self.tokenizer.bos_id() {
                    ids.remove(0);
                }
                ids
            }
            // Not text (a partial character): the trie's greedy split is a valid tokenization.
            None => self.trie.greedy_tokenize(s),
        }
    }
}

/// One engine's grammar compiler and cache.
pub struct Constraints {
    tokenizer: Arc<Tokenizer>,
    stop_ids: Vec<u32>,
    factory: OnceLock<Result<ParserFactory, String>>,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Constraints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraints").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], (Matcher, u64)>,
    clock: u64,
    stats: CompileStats,
}

impl Constraints {
    /// `stop_ids` are the tokens that end a turn: a grammar that is complete allows them.
    pub fn new(tokenizer: Arc<Tokenizer>, stop_ids: &[u32]) -> Self {
        Self { tokenizer, stop_ids: stop_ids.to_vec(), factory: OnceLock::new(), cache: Mutex::default() }
    }

    pub fn stats(&self) -> CompileStats {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).stats
    }

    fn factory(&self) -> Result<&ParserFactory, ConstraintError> {
        self.factory
            .get_or_init(|| build_factory(&self.tokenizer, &self.stop_ids))
            .as_ref()
            .map_err(|e| ConstraintError::Unavailable(e.clone()))
    }

    /// A fresh matcher for `grammar`: compiled, or cloned from the cache.
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        let field = grammar.field();
        let (key_src, top) = to_llguidance(grammar)?;
        let key: [u8; 32] = Sha256::digest(key_src.as_bytes()).into();
        {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.clock += 1;
            let now = c.clock;
            if let Some((m, used)) = c.entries.get_mut(&key) {
                *used = now;
                let matcher = m.deep_clone();
                c.stats.cache_hits += 1;
                return Ok(Constraint::new(matcher));
            }
        }
        let matcher = self.build(field, top)?;
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.stats.compiled += 1;
        if c.entries.len() >= CACHE_ENTRIES
            && let Some(old) = c.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k)
        {
            c.entries.remove(&old);
        }
        let now = c.clock;
        c.entries.insert(key, (matcher.deep_clone(), now));
        Ok(Constraint::new(matcher))
    }
}

impl Constraints {
    /// Compiles `grammar` without looking in or filling the cache (benchmarks: the cold cost).
    pub fn compile_uncached(&self, grammar: &Grammar) -> Result<Constraint, ConstraintError> {
        let (_, top) = to_llguidance(grammar)?;
        Ok(Constraint::new(self.build(grammar.field(), top)?))
    }

    fn build(&self, field: &'static str, top: TopLevelGrammar) -> Result<Matcher, ConstraintError> {
        let factory = self.factory()?;
        let matcher = Matcher::new(factory.create_parser(top));
        match matcher.get_error() {
            Some(e) => Err(ConstraintError::Compile { field, message: first_line(&e) }),
            None => Ok(matcher),
        }
    }
}

/// Error messages from the grammar engine can carry the whole grammar; the first line names
/// the problem.
fn first_line(e: &str) -> String {
    let line = e.lines().next().unwrap_or(e);
    line.chars().take(300).collect()
}

fn build_factory(tokenizer: &Arc<Tokenizer>, stop_ids: &[u32]) -> Result<ParserFactory, String> {
    let vocab = tokenizer.vocab_size();
    let words: Vec<Vec<u8>> = (0..vocab as u32)
        .map(|id| {
            let bytes = tokenizer.token_bytes(id).unwrap_or_default();
            if tokenizer.is_special(id) || bytes.is_empty() {
                // Special and empty tokens are reachable only as themselves, never as text.
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(tokenizer.token_text(id).unwrap_or("").as_bytes());
                w
            } else {
                bytes.to_vec()
            }
        })
        .collect();
    let eos = stop_ids.first().copied().or(tokenizer.eos_id()).ok_or("the model has no end-of-turn token")?;
    let info = TokRxInfo::new(vocab as u32, eos);
    let mut trie = TokTrie::from(&info, &words);
    if !stop_ids.is_empty() {
        trie = trie.with_eos_tokens(stop_ids);
    }
    let view = TokenizerView { trie, tokenizer: tokenizer.clone() };
    let env: TokEnv = Arc::new(view);
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
    factory.quiet();
    *factory.limits_mut() = ParserLimits { verbose_errors: false, ..ParserLimits::default() };
    Ok(factory)
}

/// JSON as the model should write it: one line, a space after `:` and `,` (what tokenizers
/// and training data favour), no other whitespace (a small model given free whitespace can
/// spend its whole budget on newlines).
fn json_options() -> Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
        "coerce_one_of": true,
    })
}

/// The llguidance grammar and the canonical text that keys the cache; a source over
/// [`MAX_GRAMMAR_BYTES`] is refused before it is parsed.
fn to_llguidance(grammar: &Grammar) -> Result<(String, TopLevelGrammar), ConstraintError> {
    let field = grammar.field();
    if grammar.source_len() > MAX_GRAMMAR_BYTES {
        return Err(ConstraintError::TooLarge { field, len: grammar.source_len() });
    }
    Ok(match grammar {
        Grammar::JsonObject => {
            let schema = serde_json::json!({ "type": "object", "x-guidance": json_options() });
            ("json_object".to_string(), TopLevelGrammar::from_json_schema(schema))
        }
        Grammar::JsonSchema(text) => {
            let mut schema: Value =
                serde_json::from_str(text).map_err(|e| ConstraintError::NotJson { field, message: e.to_string() })?;
            let Some(obj) = schema.as_object_mut() else {
                return Err(ConstraintError::NotObject { field });
            };
            obj.entry("x-guidance").or_insert_with(json_options);
            // serde_json keeps keys sorted, so equal schemas have equal text.
            let canonical = format!("json_schema:{schema}");
            (canonical, TopLevelGrammar::from_json_schema(schema))
        }
        Grammar::Regex(rx) => (format!("regex:{rx}"), TopLevelGrammar::from_regex(rx)),
        Grammar::Lark(src) => (format!("lark:{src}"), TopLevelGrammar::from_lark(src.clone())),
    })
}

/// One sequence's matcher: which tokens may come next, and the tokens taken so far.
pub struct Constraint {
    matcher: Matcher,
    /// The mask for the next token, computed ahead.
    next: Option<SimpleVob>,
    /// Time spent computing masks and advancing, for metrics.
    pub busy: Duration,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("stopped", &self.matcher.is_stopped()).finish_non_exhaustive()
    }
}

impl Constraint {
    fn new(matcher: Matcher) -> Self {
        Self { matcher, next: None, busy: Duration::ZERO }
    }

    /// Computes the mask for the next token now (the engine loop calls this right after a
    /// token is accepted, so the work is done before the next step's logits are needed).
    pub fn prepare(&mut self) -> Result<(), String> {
        if self.next.is_none() {
            let t = Instant::now();
            let mask = self.matcher.compute_mask_or_eos().map_err(|e| first_line(&e.to_string()));
            self.busy += t.elapsed();
            self.next = Some(mask?);
        }
        Ok(())
    }

    /// Sets every token the grammar does not allow next to `-inf` in `logits` (one row over
    /// the model's vocabulary; rows past the tokenizer's vocabulary are never allowed).
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.prepare()?;
        let t = Instant::now();
        let mask = self.next.as_ref().ok_or("no mask")?;
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (b, x) in chunk.iter_mut().enumerate() {
                if bits & (1 << b) == 0 {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        self.busy += t.elapsed();
        Ok(())
    }

    /// Takes `token` (which the mask allowed); `Ok(true)` when the grammar is complete and
    /// nothing more may follow.
    pub fn advance(&mut self, token: u32) -> Result<bool, String> {
        let t = Instant::now();
        self.next = None;
        let r = if self.matcher.is_stopped() {
            Ok(())
        } else {
            self.matcher.consume_token(token).map_err(|e| first_line(&e.to_string()))
        };
        self.busy += t.elapsed();
        r?;
        Ok(self.matcher.is_stopped())
    }

    /// Whether the grammar may end here (a turn-ending token is allowed).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}
