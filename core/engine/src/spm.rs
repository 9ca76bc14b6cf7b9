//! SentencePiece tokenizer for GGUF vocabularies of type `llama` (SPM),
//! reproducing the token ids of llama.cpp's `llama_tokenize_impl`.
//!
//! The pipeline mirrors llama.cpp step by step, because a serving engine must
//! feed a model exactly the ids it was evaluated with; "equivalent" SPM
//! implementations (sentencepiece itself, HF tokenizers) differ from llama.cpp
//! in corner cases such as user-defined tokens and byte fallback.
//!
//! 1. **Special-token partition** ([`SpecialMatcher`]): tokens of type
//!    control, unknown and user-defined are cut out of the text as whole
//!    tokens before any merging. llama.cpp does this by looping over the
//!    special tokens (longest first) and splitting every still-raw fragment
//!    at each occurrence, which costs one scan of the text per special token
//!    (~6400 for Gemma). We find the occurrences with Aho-Corasick instead
//!    and accept them in the same priority order; see
//!    [`SpecialMatcher::select`] for why the result is identical.
//! 2. **Whitespace escaping**: every `' '` of a raw fragment becomes `"▁"`
//!    (U+2581), optionally after prepending a space (`add_space_prefix`).
//! 3. **SPM merge** ([`SpmVocab::encode_raw_fragment`]): start from the
//!    fragment's characters and repeatedly merge the adjacent pair whose
//!    concatenation is the best-scoring vocabulary token.
//! 4. **Resegment**: every final symbol is a token, or falls back to one
//!    `<0xXX>` token per byte.
//!
//! Decoding is the per-token rendering of llama.cpp's `token_to_piece`; the
//! bytes of every token are rendered once at build time so that a streaming
//! decoder can assemble UTF-8 incrementally without allocating.
//!
//! All work is bounded: input length is capped ([`SpmVocab::max_input_bytes`]),
//! every buffer allocated by an encode call is O(input length), and nothing
//! on the encode or decode path can panic on any input.

use std::collections::BinaryHeap;
use std::fmt;

use aho_corasick::{AhoCorasick, BuildError, MatchKind};

use crate::tokenizer::TokenKind;

/// Default value of [`SpmVocab::max_input_bytes`]: 1 MiB of UTF-8, some
/// 200k tokens of English, more than a long-context prompt needs. An encode
/// call needs transient memory of a few dozen bytes per input byte in the
/// worst case (symbols, merge heap, special-token candidates), so this also
/// caps what one hostile request can allocate at tens of MiB.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 1 << 20;

/// Upper bound accepted by [`SpmVocab::with_max_input_bytes`]. Byte offsets
/// are stored as `u32` to halve the size of the per-call buffers; escaping
/// `' '` as the three-byte `"▁"` triples a fragment at most, so 2^30 input
/// bytes keep every offset below 2^32.
pub const MAX_INPUT_BYTES_CEILING: usize = 1 << 30;

/// SentencePiece's visible replacement for the space character.
const SPACE_ESCAPE: &str = "\u{2581}";

/// Eight bytes appended to every escaped fragment so that look-ups can load
/// a whole word at any symbol start (see `TokenIndex::get_in`).
const LOOKUP_PADDING: &str = "\0\0\0\0\0\0\0\0";

/// "No symbol" marker for the linked list of the SPM merge.
const NONE: u32 = u32::MAX;

// ---------------------------------------------------------------------------
// Token types and errors
// ---------------------------------------------------------------------------

/// Why a vocabulary could not be built. Each variant names, through
/// [`SpmError::gguf_field`], the GGUF metadata key that holds the bad value,
/// so a model-loading error can point at the offending file entry.
#[derive(Debug)]
pub enum SpmError {
    /// `tokenizer.ggml.tokens` is empty.
    EmptyVocabulary,
    /// More tokens than llama.cpp's `int32_t` token ids can address.
    TooManyTokens { count: usize },
    /// A per-token array does not have one entry per token.
    LengthMismatch { field: &'static str, expected: usize, found: usize },
    /// A score is NaN or infinite; the merge order would be meaningless.
    NonFiniteScore { id: u32, score: f32 },
    /// A token type code outside 0..=6.
    InvalidTokenType { id: u32, code: i32 },
    /// A control, unknown or user-defined token with empty text: it would
    /// "occur" at every position of every text.
    EmptySpecialToken { id: u32 },
    /// Two tokens share one text, so text → id would be ambiguous.
    DuplicateToken { first: u32, second: u32, text: String },
    /// A byte-type token whose text is not `<0xXX>`.
    MalformedByteToken { id: u32, text: String },
    /// A special token id (`field`) is not below the vocabulary size.
    IdOutOfRange { field: &'static str, id: u32, n_tokens: usize },
    /// `tokenizer.ggml.add_bos_token` is set but no BOS id was given.
    MissingBos,
    /// The special-token automaton could not be built.
    SpecialMatcher(BuildError),
}

impl SpmError {
    /// The GGUF metadata key holding the value at fault.
    pub fn gguf_field(&self) -> &'static str {
        match self {
            Self::EmptyVocabulary
            | Self::TooManyTokens { .. }
            | Self::DuplicateToken { .. }
            | Self::MalformedByteToken { .. } => "tokenizer.ggml.tokens",
            Self::LengthMismatch { field, .. } | Self::IdOutOfRange { field, .. } => field,
            Self::NonFiniteScore { .. } => "tokenizer.ggml.scores",
            Self::InvalidTokenType { .. } | Self::EmptySpecialToken { .. } | Self::SpecialMatcher(_) => {
                "tokenizer.ggml.token_type"
            }
            Self::MissingBos => "tokenizer.ggml.bos_token_id",
        }
    }
}

impl fmt::Display for SpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.gguf_field();
        match self {
            Self::EmptyVocabulary => write!(f, "{field}: vocabulary is empty"),
            Self::TooManyTokens { count } => {
                write!(f, "{field}: {count} tokens exceed the int32 token id range")
            }
            Self::LengthMismatch { expected, found, .. } => {
                write!(f, "{field}: has {found} entries, expected one per token ({expected})")
            }
            Self::NonFiniteScore { id, score } => {
                write!(f, "{field}: token {id} has non-finite score {score}")
            }
            Self::InvalidTokenType { id, code } => {
                write!(f, "{field}: token {id} has unknown type code {code}")
            }
            Self::EmptySpecialToken { id } => {
                write!(f, "{field}: special token {id} has empty text")
            }
            Self::DuplicateToken { first, second, text } => {
                write!(f, "{field}: tokens {first} and {second} share the text {text:?}")
            }
            Self::MalformedByteToken { id, text } => {
                write!(f, "{field}: byte token {id} has text {text:?}, expected <0xXX>")
            }
            Self::IdOutOfRange { id, n_tokens, .. } => {
                write!(f, "{field}: id {id} is out of range for {n_tokens} tokens")
            }
            Self::MissingBos => write!(f, "{field}: missing although tokenizer.ggml.add_bos_token is true"),
            Self::SpecialMatcher(err) => {
                write!(f, "{field}: cannot index special tokens: {err}")
            }
        }
    }
}

impl std::error::Error for SpmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::SpecialMatcher(err) => Some(err),
            _ => None,
        }
    }
}

/// Why a text could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The text is longer than [`SpmVocab::max_input_bytes`].
    InputTooLong { len: usize, max: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InputTooLong { len, max } => {
                write!(f, "input of {len} bytes exceeds the tokenizer limit of {max} bytes")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

// ---------------------------------------------------------------------------
// Text → id index
// ---------------------------------------------------------------------------

/// Exact-text index of all token texts, built once.
///
/// The SPM merge probes it for every candidate pair — about three probes per
/// input character — so it dominates encode time, and with 262144 tokens it
/// is far larger than the L1/L2 caches. A `HashMap<Box<str>, u32>` costs up
/// to three dependent cache misses per hit (control bytes, bucket, boxed
/// key). Here each slot holds the first eight bytes of its token inline, so
/// a probe for a text of up to eight bytes — most merge candidates — is
/// settled by one 16-byte slot; longer texts compare their tail in the
/// contiguous arena.
///
/// Open addressing with linear probing at load factor <= 1/2. HashDoS is not
/// a concern: the keys are fixed by the model file; attacker-chosen text is
/// only looked up, never inserted, so it cannot lengthen any probe sequence
/// beyond the clusters the vocabulary itself produces.
struct TokenIndex {
    /// All token texts, concatenated in id order.
    arena: String,
    /// Token `i` is `arena[starts[i]..starts[i + 1]]`.
    starts: Vec<usize>,
    slots: Vec<Slot>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    /// Byte length of the longest token: longer strings are rejected
    /// without hashing.
    max_len: usize,
}

/// One hash-table slot; `meta == 0` marks it empty.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// The first eight bytes of the token, zero-padded (see [`head_of`]).
    head: u64,
    /// `(tag << 48) | (len << 32) | (id + 1)`: 16 more hash bits, the text
    /// length (saturated at `u16::MAX`) and the id.
    meta: u64,
}

impl Slot {
    const LEN_SATURATED: u64 = 0xffff;

    #[inline]
    fn meta_key(hash: u64, len: usize) -> u64 {
        ((hash >> 48) << 48) | ((len as u64).min(Self::LEN_SATURATED) << 32)
    }

    #[inline]
    fn id(self) -> u32 {
        (self.meta as u32).wrapping_sub(1)
    }
}

impl TokenIndex {
    /// Indexes `tokens` (ids are positions); fails on duplicate texts.
    fn build(tokens: Vec<String>) -> Result<Self, SpmError> {
        let total: usize = tokens.iter().map(String::len).sum();
        let mut arena = String::with_capacity(total);
        let mut starts = Vec::with_capacity(tokens.len() + 1);
        for token in &tokens {
            starts.push(arena.len());
            arena.push_str(token);
        }
        starts.push(arena.len());
        drop(tokens);

        let n_slots = (tokens_len(&starts) * 2).next_power_of_two().max(2);
        let mut index = Self { arena, starts, slots: Vec::new(), mask: n_slots - 1, max_len: 0 };
        let mut slots = vec![Slot::default(); n_slots];
        let mut max_len = 0;
        for id in 0..index.len() as u32 {
            let text = index.text(id).unwrap_or_default();
            max_len = max_len.max(text.len());
            let head = head_of(text.as_bytes());
            let hash = hash_with_head(head, text.as_bytes());
            let meta_key = Slot::meta_key(hash, text.len());
            let mut slot = hash as usize & index.mask;
            // Terminates: fewer tokens than slots, so an empty slot exists.
            while let Some(entry) = slots.get_mut(slot) {
                if entry.meta == 0 {
                    *entry = Slot { head, meta: meta_key | u64::from(id + 1) };
                    break;
                }
                if index.matches(*entry, head, meta_key, text) {
                    return Err(SpmError::DuplicateToken { first: entry.id(), second: id, text: text.to_string() });
                }
                slot = (slot + 1) & index.mask;
            }
        }
        index.slots = slots;
        index.max_len = max_len;
        Ok(index)
    }

    fn len(&self) -> usize {
        tokens_len(&self.starts)
    }

    /// The text of token `id`.
    #[inline]
    fn text(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        let (&start, &end) = (self.starts.get(i)?, self.starts.get(i + 1)?);
        self.arena.get(start..end)
    }

    /// Whether occupied `slot` holds `text`, whose head and meta key are
    /// given. Texts of up to eight bytes are decided by the slot alone.
    #[inline]
    fn matches(&self, slot: Slot, head: u64, meta_key: u64, text: &str) -> bool {
        slot.head == head
            && slot.meta & !0xffff_ffff == meta_key
            && (text.len() <= 8 || self.text(slot.id()) == Some(text))
    }

    /// The id of the token whose text is exactly `text`.
    #[inline]
    fn get(&self, text: &str) -> Option<u32> {
        self.get_with_head(text, head_of(text.as_bytes()))
    }

    /// Like [`Self::get`] for `text = padded[start..start + len]`, where the
    /// caller guarantees (by padding) that eight bytes are readable from
    /// `start`: the slot head is then one unaligned load and a mask instead
    /// of a length-dependent byte loop, whose mispredicted branches cost as
    /// much as the rest of the probe.
    #[inline]
    fn get_in(&self, padded: &str, start: usize, len: usize) -> Option<u32> {
        let text = padded.get(start..start + len)?;
        let head = match padded.as_bytes().get(start..).and_then(<[u8]>::first_chunk::<8>) {
            Some(word) if len < 8 => u64::from_le_bytes(*word) & ((1u64 << (8 * len)) - 1),
            Some(word) => u64::from_le_bytes(*word),
            None => head_of(text.as_bytes()),
        };
        self.get_with_head(text, head)
    }

    /// Shared probe loop; `head` must equal `head_of(text.as_bytes())`.
    #[inline]
    fn get_with_head(&self, text: &str, head: u64) -> Option<u32> {
        if text.len() > self.max_len {
            return None;
        }
        let hash = hash_with_head(head, text.as_bytes());
        let meta_key = Slot::meta_key(hash, text.len());
        let mut slot = hash as usize & self.mask;
        // Terminates: the table is at most half full, so an empty slot exists.
        loop {
            let entry = *self.slots.get(slot)?;
            if entry.meta == 0 {
                return None;
            }
            if self.matches(entry, head, meta_key, text) {
                return Some(entry.id());
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

/// Number of tokens described by an offsets table of `n + 1` entries.
fn tokens_len(starts: &[usize]) -> usize {
    starts.len().saturating_sub(1)
}

/// Loads up to eight bytes as a little-endian word, zero-padded.
#[inline]
fn head_of(bytes: &[u8]) -> u64 {
    if let Some(word) = bytes.first_chunk::<8>() {
        return u64::from_le_bytes(*word);
    }
    // Shorter than a word: assemble bytewise (a variable-length copy would
    // call `memcpy`, which costs more than the whole hash).
    bytes.iter().rev().fold(0, |word, &b| (word << 8) | u64::from(b))
}

/// Hash of `bytes`, whose slot head is `head`: FxHash-style
/// multiplicative rounds over 8-byte words, seeded with the length, then an
/// avalanche so that both the low bits (slot) and the high bits (tag) are
/// well mixed for the short, similar keys of a vocabulary.
#[inline]
fn hash_with_head(head: u64, bytes: &[u8]) -> u64 {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut hash = (bytes.len() as u64 ^ head).wrapping_mul(SEED);
    let mut rest = bytes.get(8..).unwrap_or_default();
    while !rest.is_empty() {
        hash = (hash.rotate_left(5) ^ head_of(rest)).wrapping_mul(SEED);
        rest = rest.get(8..).unwrap_or_default();
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

/// An SPM vocabulary ready for encoding and decoding.
///
/// Immutable after construction, so one instance can be shared between
/// threads (`SpmVocab` is `Send + Sync`); every encode call keeps its
/// scratch state on its own stack.
pub struct SpmVocab {
    /// Token texts and the text → id look-up.
    index: TokenIndex,
    /// Scores with `-0.0` normalised to `0.0`, see [`Bigram`].
    scores: Vec<f32>,
    #[cfg(test)]
    types: Vec<TokenKind>,
    /// Byte-fallback token of every byte value (see [`Self::byte_token`]).
    byte_tokens: [Option<u32>; 256],
    /// Rendered bytes of all tokens, concatenated; token `i` owns
    /// `pieces[piece_starts[i]..piece_starts[i + 1]]`.
    pieces: Vec<u8>,
    piece_starts: Vec<usize>,
    specials: SpecialMatcher,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    max_input_bytes: usize,
}

impl fmt::Debug for SpmVocab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpmVocab")
            .field("n_tokens", &self.index.len())
            .field("n_specials", &self.specials.ids.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("unk", &self.unk)
            .field("add_bos", &self.add_bos)
            .field("add_space_prefix", &self.add_space_prefix)
            .field("max_input_bytes", &self.max_input_bytes)
            .finish_non_exhaustive()
    }
}

impl SpmVocab {
    /// Builds a vocabulary from the GGUF arrays `tokenizer.ggml.tokens`,
    /// `tokenizer.ggml.scores` and `tokenizer.ggml.token_type`, the special
    /// ids `tokenizer.ggml.{bos,eos,unknown}_token_id`, and the flags
    /// `tokenizer.ggml.add_bos_token` / `tokenizer.ggml.add_space_prefix`.
    ///
    /// Validation is stricter than llama.cpp's loader where llama.cpp would
    /// silently misbehave: duplicate texts (llama.cpp keeps the last id for
    /// look-ups), empty special tokens (its partition loop would never
    /// advance) and unknown type codes are rejected.
    ///
    /// Not handled here (model-loading policy, applied by the caller before
    /// this call if wanted): llama.cpp's per-model attribute overrides
    /// (`lstrip`/`rstrip` for some Phi-3 and Jina tokens), its promotion of
    /// end-of-generation tokens to control type, and `add_eos_token`.
    #[allow(clippy::too_many_arguments)] // mirrors the GGUF metadata one to one
    pub fn new(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        bos: Option<u32>,
        eos: Option<u32>,
        unk: Option<u32>,
        add_bos: bool,
        add_space_prefix: bool,
    ) -> Result<Self, SpmError> {
        let n = tokens.len();
        if n == 0 {
            return Err(SpmError::EmptyVocabulary);
        }
        if n > i32::MAX as usize {
            return Err(SpmError::TooManyTokens { count: n });
        }
        for (field, found) in [("tokenizer.ggml.scores", scores.len()), ("tokenizer.ggml.token_type", types.len())] {
            if found != n {
                return Err(SpmError::LengthMismatch { field, expected: n, found });
            }
        }
        for (field, id) in [
            ("tokenizer.ggml.bos_token_id", bos),
            ("tokenizer.ggml.eos_token_id", eos),
            ("tokenizer.ggml.unknown_token_id", unk),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(SpmError::IdOutOfRange { field, id, n_tokens: n });
            }
        }
        if add_bos && bos.is_none() {
            return Err(SpmError::MissingBos);
        }

        // `n` fits in i32 (checked above), so the u32 ids from `0u32..` are exact.
        let mut norm_scores = Vec::with_capacity(n);
        for (id, &score) in (0u32..).zip(&scores) {
            if !score.is_finite() {
                return Err(SpmError::NonFiniteScore { id, score });
            }
            // `-0.0 + 0.0 == +0.0`: the heap's integer key would order -0.0
            // below 0.0, while C++ compares them equal (Gemma has a -0.0).
            norm_scores.push(score + 0.0);
        }

        let mut token_types = Vec::with_capacity(n);
        for ((id, &code), text) in (0u32..).zip(&types).zip(&tokens) {
            let ty = TokenKind::from_gguf(code).ok_or(SpmError::InvalidTokenType { id, code })?;
            if ty.is_special() && text.is_empty() {
                return Err(SpmError::EmptySpecialToken { id });
            }
            token_types.push(ty);
        }

        let index = TokenIndex::build(tokens)?;
        let byte_tokens = build_byte_tokens(&index, unk);
        let (pieces, piece_starts) = render_pieces(&index, &token_types)?;
        let specials = SpecialMatcher::new(&index, &token_types)?;

        Ok(Self {
            index,
            scores: norm_scores,
            #[cfg(test)]
            types: token_types,
            byte_tokens,
            pieces,
            piece_starts,
            specials,
            bos,
            eos,
            unk,
            add_bos,
            add_space_prefix,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
        })
    }

    /// Sets the longest input (in UTF-8 bytes) that encode calls accept,
    /// clamped to [`MAX_INPUT_BYTES_CEILING`].
    pub fn with_max_input_bytes(mut self, max: usize) -> Self {
        self.max_input_bytes = max.min(MAX_INPUT_BYTES_CEILING);
        self
    }

    #[cfg(test)]
    /// Number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> usize {
        self.index.len()
    }

    #[cfg(test)]
    /// The vocabulary text of a token (`"▁"`, `<0xXX>` etc. verbatim).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.index.text(id)
    }

    #[cfg(test)]
    /// The score of a token (`-0.0` reads as `0.0`).
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// Exact text → id look-up (any token type).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.index.get(text)
    }

    /// The token that encodes one raw byte when no vocabulary piece covers
    /// it, resolved like llama.cpp's `byte_to_token`: the token `<0xXX>`
    /// (upper-case hex); failing that, for ASCII, the one-character token;
    /// failing that the unknown token. `None` means the encoder drops the
    /// byte — llama.cpp throws `std::out_of_range` there instead, which a
    /// server must not do on user input.
    pub fn byte_token(&self, byte: u8) -> Option<u32> {
        self.byte_tokens[usize::from(byte)]
    }

    // -----------------------------------------------------------------------
    // Encoding
    // -----------------------------------------------------------------------

    #[cfg(test)]
    /// Tokenizes `text`, prepending BOS when the model asks for it
    /// (`add_bos`), like `llama_tokenize(..., add_special = true, ...)`.
    ///
    /// With `parse_special`, control and unknown token texts in `text`
    /// (e.g. `<start_of_turn>`) become their single ids; without it they are
    /// tokenized as ordinary text. User-defined tokens are matched either way.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(text, true, parse_special, &mut out)?;
        Ok(out)
    }

    /// Tokenizes `text` without BOS, like `llama_tokenize(..., add_special =
    /// false, ...)`; suitable for text appended to an existing sequence.
    pub fn encode_no_bos(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(text, false, parse_special, &mut out)?;
        Ok(out)
    }

    /// Appends the tokens of `text` to `out`. `add_special` is llama.cpp's
    /// flag of the same name: BOS is prepended when it and the model's
    /// `add_bos` are both set. On error `out` is left unchanged.
    pub fn encode_into(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        out: &mut Vec<u32>,
    ) -> Result<(), EncodeError> {
        if text.len() > self.max_input_bytes {
            return Err(EncodeError::InputTooLong { len: text.len(), max: self.max_input_bytes });
        }
        // Most pieces cover several bytes; this avoids regrowth for typical text.
        out.reserve(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }

        let mut scratch = MergeScratch::default();
        // llama.cpp: "prefix with space if first token" — the start of the
        // text counts as following a special token; BOS does not change it.
        let mut is_prev_special = true;
        for fragment in self.specials.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    is_prev_special = true;
                }
                Fragment::Raw { start, end } => {
                    // Fragment bounds are match boundaries of whole UTF-8
                    // token texts, hence char boundaries; `get` keeps this
                    // panic-free regardless.
                    if let Some(raw) = text.get(start..end) {
                        let prefix = self.add_space_prefix && is_prev_special;
                        self.encode_raw_fragment(raw, prefix, &mut scratch, out);
                    }
                    is_prev_special = false;
                }
            }
        }
        Ok(())
    }

    /// Runs the SPM merge over one raw fragment and appends its tokens
    /// (llama.cpp's `llm_tokenizer_spm_session::tokenize`).
    fn encode_raw_fragment(&self, raw: &str, prefix_space: bool, scratch: &mut MergeScratch, out: &mut Vec<u32>) {
        let MergeScratch { text, symbols, heap } = scratch;

        text.clear();
        text.reserve(raw.len() + SPACE_ESCAPE.len() + LOOKUP_PADDING.len());
        if prefix_space {
            text.push_str(SPACE_ESCAPE);
        }
        for (i, part) in raw.split(' ').enumerate() {
            if i > 0 {
                text.push_str(SPACE_ESCAPE);
            }
            text.push_str(part);
        }
        let len = text.len();
        // Padding for the 8-byte loads of `TokenIndex::get_in`; no symbol
        // covers it, so it can never become part of a token.
        text.push_str(LOOKUP_PADDING);
        let (text, unpadded) = (text.as_str(), text.get(..len).unwrap_or_default());

        // One symbol per character, doubly linked so merges are O(1).
        // Offsets fit in u32: text.len() <= 3 * MAX_INPUT_BYTES_CEILING + 11.
        symbols.clear();
        symbols.reserve(len);
        for (offset, ch) in unpadded.char_indices() {
            let index = symbols.len() as u32;
            symbols.push(Symbol {
                start: offset as u32,
                len: ch.len_utf8() as u32,
                prev: index.wrapping_sub(1), // 0 - 1 == NONE
                next: index + 1,
            });
        }
        let Some(last) = symbols.last_mut() else {
            return;
        };
        last.next = NONE;

        // Seed with every adjacent pair, then always merge the best pair.
        // Stale entries (a side already merged away or grown) are skipped when
        // popped rather than removed, as in llama.cpp; each merge pushes at
        // most two entries, so the heap never exceeds 3 entries per symbol.
        heap.clear();
        heap.reserve(symbols.len());
        for right in 1..symbols.len() as u32 {
            self.try_add_bigram(text, symbols, heap, right - 1, right);
        }
        while let Some(bigram) = heap.pop() {
            let left_index = bigram.left();
            let (Some(&left), Some(&right)) = (symbols.get(left_index as usize), symbols.get(bigram.right as usize))
            else {
                continue;
            };
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.size {
                continue;
            }
            if let Some(sym) = symbols.get_mut(left_index as usize) {
                sym.len += right.len;
                sym.next = right.next;
            }
            if let Some(sym) = symbols.get_mut(bigram.right as usize) {
                sym.len = 0;
            }
            if let Some(sym) = symbols.get_mut(right.next as usize) {
                sym.prev = left_index;
            }
            self.try_add_bigram(text, symbols, heap, left.prev, left_index);
            self.try_add_bigram(text, symbols, heap, left_index, right.next);
        }

        // Resegment. llama.cpp also records a `rev_merge` map (pair text →
        // halves) and splits a final symbol that is not a token back into its
        // halves. That branch is unreachable: a pair is only queued when its
        // text is a token, a symbol only grows by popping such a pair whose
        // size still matches, and a symbol's start never moves — so every
        // merged symbol's text *is* a token. Only never-merged single
        // characters can miss the vocabulary. The map is therefore omitted;
        // the ids are identical.
        let mut index = 0u32;
        while let Some(sym) = symbols.get(index as usize) {
            let (start, len) = (sym.start as usize, sym.len as usize);
            match self.index.get_in(text, start, len) {
                Some(id) => out.push(id),
                None => {
                    let bytes = text.as_bytes().get(start..start + len).unwrap_or_default();
                    out.extend(bytes.iter().filter_map(|&b| self.byte_token(b)));
                }
            }
            index = sym.next;
        }
    }

    /// Queues the merge of `left` and `right` if their concatenation is a
    /// token (llama.cpp's `try_add_bigram`; any token type qualifies).
    /// `text` is the padded escaped fragment.
    #[inline]
    fn try_add_bigram(&self, text: &str, symbols: &[Symbol], heap: &mut BinaryHeap<Bigram>, left: u32, right: u32) {
        let (Some(l), Some(r)) = (symbols.get(left as usize), symbols.get(right as usize)) else {
            return; // NONE at either end of the list
        };
        let size = l.len + r.len;
        if let Some(id) = self.index.get_in(text, l.start as usize, size as usize) {
            let score = self.scores.get(id as usize).copied().unwrap_or(f32::MIN);
            heap.push(Bigram::new(score, left, right, size));
        }
    }

    // -----------------------------------------------------------------------
    // Decoding
    // -----------------------------------------------------------------------

    /// The bytes a token renders to when special tokens are shown, computed
    /// once at build time (llama.cpp's `token_to_piece(..., special = true)`):
    /// normal tokens with `"▁"` → `' '`, byte tokens as their single byte,
    /// control/unknown/user-defined tokens as their literal text, unused and
    /// undefined tokens as nothing. A byte token alone may be an incomplete
    /// UTF-8 sequence; streaming decoders must buffer across tokens.
    /// `None` for ids outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let start = *self.piece_starts.get(i)?;
        let end = *self.piece_starts.get(i + 1)?;
        self.pieces.get(start..end)
    }

    #[cfg(test)]
    /// Like [`Self::token_bytes`], but control and unknown tokens render as
    /// nothing when `skip_special` is set (llama.cpp's `special = false`).
    pub fn token_piece(&self, id: u32, skip_special: bool) -> Option<&[u8]> {
        let bytes = self.token_bytes(id)?;
        let hidden = skip_special && self.types.get(id as usize)?.needs_parse_special();
        Some(if hidden { &[] } else { bytes })
    }

    #[cfg(test)]
    /// Concatenated bytes of `ids` (see [`Self::decode`]).
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ids.len().saturating_mul(4));
        for (i, &id) in ids.iter().enumerate() {
            let Some(mut piece) = self.token_piece(id, skip_special) else {
                continue;
            };
            // llama_detokenize strips one leading space from the first token
            // when the encoder adds a space prefix (the prefix was not part
            // of the user's text). Like llama.cpp this looks at the first
            // token only, even when it renders empty (e.g. a skipped BOS).
            if i == 0 && self.add_space_prefix {
                piece = piece.strip_prefix(b" ").unwrap_or(piece);
            }
            bytes.extend_from_slice(piece);
        }
        bytes
    }

    #[cfg(test)]
    /// Decodes `ids` to text, replacing invalid UTF-8 (e.g. a byte sequence
    /// cut mid-character) with U+FFFD. Ids outside the vocabulary are
    /// ignored. `skip_special` hides control and unknown tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        match String::from_utf8(self.decode_bytes(ids, skip_special)) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }
    }
}

/// Resolves the byte-fallback token of every byte value (see
/// [`SpmVocab::byte_token`]).
fn build_byte_tokens(index: &TokenIndex, unk: Option<u32>) -> [Option<u32>; 256] {
    let mut table = [None; 256];
    for (byte, slot) in (0u8..=255).zip(table.iter_mut()) {
        let hex_token = index.get(&format!("<0x{byte:02X}>"));
        // A lone byte >= 0x80 is not valid UTF-8, so it cannot be a token text.
        let char_token = || {
            let ascii = [byte];
            std::str::from_utf8(&ascii).ok().and_then(|c| index.get(c))
        };
        *slot = hex_token.or_else(char_token).or(unk);
    }
    table
}

/// Parses the byte value of a `<0xXX>` token text (hex digits of either
/// case, as llama.cpp's `strtol`-based `token_to_byte` accepts).
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Renders every token once for decoding (see [`SpmVocab::token_bytes`]).
fn render_pieces(index: &TokenIndex, types: &[TokenKind]) -> Result<(Vec<u8>, Vec<usize>), SpmError> {
    let mut pieces = Vec::with_capacity(index.arena.len());
    let mut starts = Vec::with_capacity(types.len() + 1);
    for (id, ty) in (0u32..).zip(types) {
        starts.push(pieces.len());
        let text = index.text(id).unwrap_or_default();
        match ty {
            TokenKind::Normal => {
                for (i, part) in text.split(SPACE_ESCAPE).enumerate() {
                    if i > 0 {
                        pieces.push(b' ');
                    }
                    pieces.extend_from_slice(part.as_bytes());
                }
            }
            TokenKind::Byte => {
                let byte = parse_byte_token(text)
                    .ok_or_else(|| SpmError::MalformedByteToken { id, text: text.to_string() })?;
                pieces.push(byte);
            }
            TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined => {
                pieces.extend_from_slice(text.as_bytes());
            }
            // llama.cpp's token_to_piece renders these as nothing, even with
            // special = true ("we accept all unsupported token types,
            // suppressing them like CONTROL tokens").
            TokenKind::Unused => {}
        }
    }
    starts.push(pieces.len());
    Ok((pieces, starts))
}

// ---------------------------------------------------------------------------
// SPM merge state
// ---------------------------------------------------------------------------

/// A run of the escaped fragment: `text[start..start + len]`; `len == 0`
/// once merged into its left neighbour.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge of two adjacent symbols into a token of `size` bytes.
///
/// Ordered like llama.cpp's `llm_bigram_spm::comparator`: highest score
/// first, ties to the leftmost pair. Both criteria are packed into `key` so
/// that heap sifting compares one integer: the high half is the score mapped
/// to an order-preserving `u32`, the low half is `!left`. Scores are finite
/// with `-0.0` normalised, so this order agrees with C++'s `<` on floats.
///
/// Entries with equal keys have the same score and left symbol; at most one
/// of them can still be valid when popped (the size check rejects the
/// others), so tie-breaking on the remaining fields cannot change the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    key: u64,
    right: u32,
    size: u32,
}

impl Bigram {
    #[inline]
    fn new(score: f32, left: u32, right: u32, size: u32) -> Self {
        let bits = score.to_bits();
        // Negative floats order reversed by their bits; flipping all bits of
        // negatives and the sign bit of positives yields an increasing map.
        let ordered = if bits >> 31 == 1 { !bits } else { bits | 1 << 31 };
        Self { key: u64::from(ordered) << 32 | u64::from(!left), right, size }
    }

    #[inline]
    fn left(self) -> u32 {
        !(self.key as u32)
    }
}

/// Buffers reused across the fragments of one encode call.
#[derive(Default)]
struct MergeScratch {
    /// The escaped fragment.
    text: String,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Bigram>,
}

// ---------------------------------------------------------------------------
// Special-token partition
// ---------------------------------------------------------------------------

/// A piece of the input after the special-token partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fragment {
    /// `text[start..end]`, still to be merged.
    Raw { start: usize, end: usize },
    /// A special token matched in the text.
    Token(u32),
}

/// A special-token occurrence chosen by the partition.
#[derive(Clone, Copy, Debug)]
struct Accepted {
    start: usize,
    end: usize,
    id: u32,
}

/// The special tokens of one text length, for the rescanning fallback of
/// [`SpecialMatcher::select`].
struct LengthClass {
    len: usize,
    /// Rank of this class's first pattern; local pattern `i` is rank
    /// `first_rank + i`.
    first_rank: usize,
    automaton: AhoCorasick,
}

/// Finds control, unknown and user-defined token texts in the input.
///
/// Patterns are stored in *priority order* — text length descending, then id
/// ascending — so an automaton pattern index is also its priority rank.
/// llama.cpp sorts its special tokens by length with the unstable
/// `std::sort`, leaving the order of equal-length tokens unspecified; lower
/// id first is the natural reading and only matters for two equal-length
/// specials that overlap in the text (Gemma has none among its HTML tags,
/// whitespace runs and `<unusedN>` tokens).
struct SpecialMatcher {
    /// All specials, pattern index = rank; `None` when there are none.
    all: Option<AhoCorasick>,
    /// The same specials split by length, longest first.
    classes: Vec<LengthClass>,
    /// Token id of each rank.
    ids: Vec<u32>,
    /// Byte length of each rank's text.
    lens: Vec<u32>,
    /// Whether each rank is only matched with `parse_special`.
    needs_parse_special: Vec<bool>,
}

impl SpecialMatcher {
    fn new(index: &TokenIndex, types: &[TokenKind]) -> Result<Self, SpmError> {
        let text = |id: u32| index.text(id).unwrap_or_default();
        let mut ranked: Vec<u32> = (0u32..).zip(types).filter(|(_, ty)| ty.is_special()).map(|(id, _)| id).collect();
        ranked.sort_unstable_by_key(|&id| (std::cmp::Reverse(text(id).len()), id));

        let build = |ids: &[u32]| {
            // Standard semantics: the only kind that supports overlapping search.
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(ids.iter().map(|&id| text(id).as_bytes()))
                .map_err(SpmError::SpecialMatcher)
        };

        // `chunk_by` yields the runs of equal length, longest first.
        let mut classes = Vec::new();
        let mut first_rank = 0;
        for class in ranked.chunk_by(|&a, &b| text(a).len() == text(b).len()) {
            let len = class.first().map_or(0, |&id| text(id).len());
            let automaton = build(class)?;
            classes.push(LengthClass { len, first_rank, automaton });
            first_rank += class.len();
        }

        Ok(Self {
            all: if ranked.is_empty() { None } else { Some(build(&ranked)?) },
            classes,
            lens: ranked.iter().map(|&id| text(id).len() as u32).collect(),
            needs_parse_special: ranked
                .iter()
                .map(|&id| types.get(id as usize).is_some_and(|ty| ty.needs_parse_special()))
                .collect(),
            ids: ranked,
        })
    }

    /// Splits `text` into raw fragments and special tokens, in text order.
    /// Raw fragments are never empty.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments; // llama.cpp adds no fragment for empty text
        }
        let mut pos = 0;
        for m in self.select(text.as_bytes(), parse_special) {
            if m.start > pos {
                fragments.push(Fragment::Raw { start: pos, end: m.start });
            }
            fragments.push(Fragment::Token(m.id));
            pos = m.end;
        }
        if pos < text.len() {
            fragments.push(Fragment::Raw { start: pos, end: text.len() });
        }
        fragments
    }

    /// Occurrences of `automaton`'s patterns in `haystack`, as packed
    /// `(rank, start)` keys (see [`pack`]) with `start` offset by `base` and
    /// pattern indexes offset by `first_rank`; control and unknown tokens
    /// are dropped unless `parse_special`. Yields nothing if the automaton
    /// refuses the search, which cannot happen for an unanchored Standard one.
    fn occurrences<'a>(
        &'a self,
        automaton: &'a AhoCorasick,
        haystack: &'a [u8],
        base: usize,
        first_rank: usize,
        parse_special: bool,
    ) -> impl Iterator<Item = u64> + 'a {
        automaton
            .try_find_overlapping_iter(haystack)
            .ok()
            .into_iter()
            .flatten()
            .map(move |m| (first_rank + m.pattern().as_usize(), base + m.start()))
            .filter(move |&(rank, _)| parse_special || !self.needs_parse_special.get(rank).copied().unwrap_or(true))
            .map(|(rank, start)| pack(rank, start))
    }

    /// Chooses the special-token occurrences that llama.cpp's
    /// `tokenizer_st_partition` would cut out, sorted by position.
    ///
    /// llama.cpp takes the specials in priority order and, for each, splits
    /// every raw fragment at its leftmost non-overlapping occurrences. An
    /// occurrence lies inside a raw fragment exactly when it overlaps no
    /// previously accepted token, so the same result comes from taking *all*
    /// occurrences sorted by (rank, start) and accepting each one that does
    /// not overlap an accepted one (see [`Self::accept`]).
    ///
    /// Overlapping occurrences can number up to (distinct special lengths) ×
    /// text length — e.g. Gemma's 31 newline tokens in a long run of
    /// newlines — so they are only buffered up to [`buffer_budget`]. Past it,
    /// [`Self::select_by_class`] finds the same result with memory linear in
    /// the text and time linear in text × length classes.
    fn select(&self, text: &[u8], parse_special: bool) -> Vec<Accepted> {
        let mut accepted = Vec::new();
        let Some(all) = &self.all else {
            return accepted;
        };
        let budget = buffer_budget(text.len());
        let mut keys = Vec::new();
        let mut overflowed = false;
        for key in self.occurrences(all, text, 0, 0, parse_special) {
            if keys.len() == budget {
                overflowed = true;
                break;
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return accepted;
        }

        let mut covered = vec![false; text.len()];
        if overflowed {
            drop(keys);
            self.select_by_class(text, parse_special, &mut covered, &mut accepted);
        } else {
            keys.sort_unstable();
            self.accept(&keys, &mut covered, &mut accepted);
        }
        accepted.sort_unstable_by_key(|m| m.start);
        accepted
    }

    /// Fallback of [`Self::select`] for texts with too many overlapping
    /// occurrences: one length class at a time, longest first, scan only the
    /// still-uncovered gaps with that class's automaton. Within one class at
    /// most one occurrence starts at each position, so the candidates of a
    /// class never exceed the text length; and as long classes cover the
    /// text, the gaps left for the next class shrink.
    fn select_by_class(&self, text: &[u8], parse_special: bool, covered: &mut [bool], accepted: &mut Vec<Accepted>) {
        let mut gaps = vec![(0, text.len())];
        let mut next_gaps = Vec::new();
        let mut keys = Vec::new();
        for class in &self.classes {
            keys.clear();
            for &(start, end) in &gaps {
                let Some(haystack) = text.get(start..end).filter(|h| h.len() >= class.len) else {
                    continue;
                };
                keys.extend(self.occurrences(&class.automaton, haystack, start, class.first_rank, parse_special));
            }
            keys.sort_unstable();
            let before = accepted.len();
            self.accept(&keys, covered, accepted);
            if accepted.len() == before {
                continue;
            }
            // Split the gaps around the bytes this class covered.
            next_gaps.clear();
            for &(start, end) in &gaps {
                let mut run_start = None;
                for (pos, &is_covered) in (start..).zip(covered.get(start..end).unwrap_or(&[])) {
                    match (is_covered, run_start) {
                        (false, None) => run_start = Some(pos),
                        (true, Some(s)) => {
                            next_gaps.push((s, pos));
                            run_start = None;
                        }
                        _ => {}
                    }
                }
                if let Some(s) = run_start {
                    next_gaps.push((s, end));
                }
            }
            std::mem::swap(&mut gaps, &mut next_gaps);
        }
    }

    /// Accepts, in the order of `keys` (sorted `(rank, start)`), every
    /// occurrence that does not overlap a covered byte, and covers it.
    ///
    /// The overlap test is O(1): every token accepted before is at least as
    /// long as the candidate (ranks are length-descending), so if it
    /// overlapped the candidate it would cover the candidate's first or last
    /// byte. Covering costs the token's length, at most the text length in
    /// total.
    fn accept(&self, keys: &[u64], covered: &mut [bool], accepted: &mut Vec<Accepted>) {
        for &key in keys {
            let (rank, start) = unpack(key);
            let (Some(&id), Some(&len)) = (self.ids.get(rank), self.lens.get(rank)) else {
                continue;
            };
            let end = start + len as usize;
            let Some(span) = covered.get_mut(start..end) else {
                continue;
            };
            if span.first() == Some(&true) || span.last() == Some(&true) {
                continue;
            }
            span.fill(true);
            accepted.push(Accepted { start, end, id });
        }
    }
}

/// How many overlapping occurrences [`SpecialMatcher::select`] buffers
/// before falling back to per-class scans: two per input byte (16 bytes of
/// keys per input byte), plus slack for short texts. Ordinary text, even
/// deeply indented code, stays far below one per byte.
fn buffer_budget(text_len: usize) -> usize {
    text_len.saturating_mul(2).saturating_add(256)
}

/// Packs `(rank, start)` so that integer order is (rank, start) order.
/// Both fit in 32 bits: ranks are token ids (< 2^31) and inputs are at most
/// [`MAX_INPUT_BYTES_CEILING`] bytes.
#[inline]
fn pack(rank: usize, start: usize) -> u64 {
    ((rank as u64) << 32) | (start as u64 & 0xffff_ffff)
}

#[inline]
fn unpack(key: u64) -> (usize, usize) {
    ((key >> 32) as usize, (key & 0xffff_ffff) as usize)
}

// ---------------------------------------------------------------------------
// Unit tests on hand-made vocabularies
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: i32 = 1;
    const UNKNOWN: i32 = 2;
    const CONTROL: i32 = 3;
    const USER: i32 = 4;
    const BYTE: i32 = 6;

    /// Builds a vocabulary from `(text, score, type)`; the 256 byte tokens
    /// are appended when `with_bytes`.
    fn vocab(entries: &[(&str, f32, i32)], with_bytes: bool, add_space_prefix: bool) -> SpmVocab {
        let mut tokens: Vec<String> = entries.iter().map(|e| e.0.to_string()).collect();
        let mut scores: Vec<f32> = entries.iter().map(|e| e.1).collect();
        let mut types: Vec<i32> = entries.iter().map(|e| e.2).collect();
        if with_bytes {
            for b in 0..=255u8 {
                tokens.push(format!("<0x{b:02X}>"));
                scores.push(0.0);
                types.push(BYTE);
            }
        }
        SpmVocab::new(tokens, scores, types, Some(0), None, None, true, add_space_prefix)
            .expect("valid test vocabulary")
    }

    fn ids(v: &SpmVocab, text: &str, parse_special: bool) -> Vec<u32> {
        v.encode_no_bos(text, parse_special).expect("short input")
    }

    fn base() -> Vec<(&'static str, f32, i32)> {
        vec![("<s>", 0.0, CONTROL), ("a", -1.0, NORMAL), ("b", -1.0, NORMAL)]
    }

    #[test]
    fn vocab_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SpmVocab>();
    }

    #[test]
    fn score_ties_merge_leftmost_pair_first() {
        let mut e = base();
        e.extend([("ab", -5.0, NORMAL), ("ba", -5.0, NORMAL)]);
        let v = vocab(&e, true, false);
        // "ab" and "ba" tie: the left pair wins, leaving "a".
        assert_eq!(ids(&v, "aba", false), vec![3, 1]);
        assert_eq!(ids(&v, "abab", false), vec![3, 3]);
    }

    #[test]
    fn higher_score_beats_position() {
        let mut e = base();
        e.extend([("ab", -5.0, NORMAL), ("ba", -4.0, NORMAL)]);
        let v = vocab(&e, true, false);
        assert_eq!(ids(&v, "aba", false), vec![1, 4]);
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        // C++ compares -0.0 == 0.0, so the tie goes to the leftmost pair;
        // a bitwise total order would rank 0.0 above -0.0 instead.
        let mut e = base();
        e.extend([("ab", -0.0, NORMAL), ("ba", 0.0, NORMAL)]);
        let v = vocab(&e, true, false);
        assert_eq!(ids(&v, "aba", false), vec![3, 1]);
    }

    #[test]
    fn merges_continue_from_merged_symbols() {
        let mut e = base();
        e.extend([("ab", -3.0, NORMAL), ("abb", -1.0, NORMAL), ("bb", -9.0, NORMAL)]);
        let v = vocab(&e, true, false);
        // ab (best pair) first, then ab+b, not b+b.
        assert_eq!(ids(&v, "abb", false), vec![4]);
    }

    #[test]
    fn spaces_are_escaped_and_prefix_is_optional() {
        let mut e = base();
        e.extend([("\u{2581}a", -0.5, NORMAL), ("\u{2581}", -2.0, NORMAL)]);
        let v = vocab(&e, true, false);
        assert_eq!(ids(&v, "a a", false), vec![1, 3]);
        let v = vocab(&e, true, true);
        assert_eq!(ids(&v, "a a", false), vec![3, 3]);
        // The prefix is added after a special token, not after raw text.
        assert_eq!(ids(&v, "a<s>a", true), vec![3, 0, 3]);
        // Empty text yields no fragment, hence no prefix either.
        assert_eq!(ids(&v, "", true), Vec::<u32>::new());
        assert_eq!(v.decode(&[3, 0, 3], false), "a<s> a");
    }

    #[test]
    fn longer_special_wins_over_earlier_shorter_overlap() {
        let mut e = base();
        e.extend([("XY", 0.0, USER), ("YZW", 0.0, USER)]);
        let v = vocab(&e, true, false);
        // Leftmost-first matching would take "XY"; llama.cpp takes the longer
        // "YZW" first and "X" stays raw.
        let x = v.byte_token(b'X').unwrap();
        assert_eq!(ids(&v, "XYZW", false), vec![x, 4]);
    }

    #[test]
    fn equal_length_overlap_goes_to_lower_id() {
        let mut e = base();
        e.extend([("YZ", 0.0, USER), ("XY", 0.0, USER)]);
        let v = vocab(&e, true, false);
        let x = v.byte_token(b'X').unwrap();
        assert_eq!(ids(&v, "XYZ", false), vec![x, 3]);
    }

    #[test]
    fn self_overlapping_special_is_matched_left_to_right() {
        let mut e = base();
        e.extend([("\n\n", 0.0, USER), ("\n", 0.0, USER)]);
        let v = vocab(&e, true, false);
        assert_eq!(ids(&v, "\n\n\n", false), vec![3, 4]);
        assert_eq!(ids(&v, "\n\n\n\n\n", false), vec![3, 3, 4]);
    }

    #[test]
    fn control_and_unknown_only_with_parse_special() {
        let mut e = base();
        e.extend([("<u>", 0.0, UNKNOWN), ("<t>", 0.0, USER)]);
        let v = vocab(&e, true, false);
        assert_eq!(ids(&v, "a<s>b<u><t>", true), vec![1, 0, 2, 3, 4]);
        let lt = v.byte_token(b'<').unwrap();
        let gt = v.byte_token(b'>').unwrap();
        let s = v.byte_token(b's').unwrap();
        let u = v.byte_token(b'u').unwrap();
        assert_eq!(ids(&v, "a<s>b<u><t>", false), vec![1, lt, s, gt, 2, lt, u, gt, 4]);
    }

    #[test]
    fn long_special_runs_fall_back_to_per_class_scans() {
        // Far more overlapping occurrences than the buffering budget.
        let run: Vec<(String, f32, i32)> = (1..=8).map(|k| ("\n".repeat(k), 0.0, USER)).collect();
        let mut e = base();
        e.extend(run.iter().map(|(t, s, ty)| (t.as_str(), *s, *ty)));
        let v = vocab(&e, true, false);
        let text = "\n".repeat(8 * 1000 + 3);
        let got = ids(&v, &text, false);
        let mut want = vec![10u32; 1000]; // "\n" * 8 is id 10
        want.push(5); // "\n" * 3
        assert_eq!(got, want);
    }

    #[test]
    fn byte_fallback_and_missing_bytes() {
        let v = vocab(&base(), true, false);
        let got = ids(&v, "é", false);
        assert_eq!(got, vec![v.byte_token(0xC3).unwrap(), v.byte_token(0xA9).unwrap()]);
        assert_eq!(v.decode(&got, true), "é");
        // Without byte tokens and without <unk>, uncovered bytes are dropped.
        let v = vocab(&base(), false, false);
        assert_eq!(ids(&v, "aéb", false), vec![1, 2]);
    }

    #[test]
    fn decode_renders_by_type() {
        let mut e = base();
        e.extend([("\u{2581}b\u{2581}", 0.0, NORMAL), ("<t>", 0.0, USER), ("<x>", 0.0, 5)]);
        let v = vocab(&e, true, false);
        assert_eq!(v.token_bytes(3), Some(&b" b "[..]));
        assert_eq!(v.token_bytes(5), Some(&b""[..]));
        assert_eq!(v.token_bytes(6 + 0x41), Some(&b"A"[..]));
        assert_eq!(v.token_bytes(10_000), None);
        assert_eq!(v.decode(&[0, 1, 3, 4, 5, 10_000], false), "<s>a b <t>");
        assert_eq!(v.decode(&[0, 1, 3, 4, 5], true), "a b <t>");
        // A lone continuation byte decodes lossily.
        assert_eq!(v.decode(&[6 + 0xA9], true), "\u{FFFD}");
    }

    #[test]
    fn input_limit_is_enforced() {
        let v = vocab(&base(), true, false).with_max_input_bytes(4);
        assert!(v.encode("abab", false).is_ok());
        assert_eq!(v.encode("ababa", false), Err(EncodeError::InputTooLong { len: 5, max: 4 }));
    }

    #[test]
    fn build_errors_name_the_gguf_field() {
        struct Case {
            tokens: &'static [&'static str],
            scores: &'static [f32],
            types: &'static [i32],
            bos: Option<u32>,
            eos: Option<u32>,
            unk: Option<u32>,
            add_bos: bool,
            field: &'static str,
        }
        const fn case(
            tokens: &'static [&'static str],
            scores: &'static [f32],
            types: &'static [i32],
            field: &'static str,
        ) -> Case {
            Case { tokens, scores, types, bos: None, eos: None, unk: None, add_bos: false, field }
        }
        let cases = [
            case(&[], &[], &[], "tokenizer.ggml.tokens"),
            case(&["a"], &[], &[1], "tokenizer.ggml.scores"),
            case(&["a"], &[0.0], &[], "tokenizer.ggml.token_type"),
            case(&["a"], &[f32::NAN], &[1], "tokenizer.ggml.scores"),
            case(&["a"], &[f32::INFINITY], &[1], "tokenizer.ggml.scores"),
            case(&["a"], &[0.0], &[9], "tokenizer.ggml.token_type"),
            case(&[""], &[0.0], &[USER], "tokenizer.ggml.token_type"),
            case(&["a", "a"], &[0.0, 0.0], &[1, 1], "tokenizer.ggml.tokens"),
            case(&["<0xZZ>"], &[0.0], &[BYTE], "tokenizer.ggml.tokens"),
            Case { bos: Some(1), add_bos: true, ..case(&["a"], &[0.0], &[1], "tokenizer.ggml.bos_token_id") },
            Case { add_bos: true, ..case(&["a"], &[0.0], &[1], "tokenizer.ggml.bos_token_id") },
            Case { eos: Some(7), ..case(&["a"], &[0.0], &[1], "tokenizer.ggml.eos_token_id") },
            Case { unk: Some(7), ..case(&["a"], &[0.0], &[1], "tokenizer.ggml.unknown_token_id") },
        ];
        for c in cases {
            let result = SpmVocab::new(
                c.tokens.iter().map(|t| t.to_string()).collect(),
                c.scores.to_vec(),
                c.types.to_vec(),
                c.bos,
                c.eos,
                c.unk,
                c.add_bos,
                false,
            );
            match result {
                Ok(_) => panic!("expected an error for field {}", c.field),
                Err(err) => {
                    assert_eq!(err.gguf_field(), c.field, "{err}");
                    assert!(err.to_string().starts_with(c.field), "{err}");
                }
            }
        }
        // Empty *normal* tokens are harmless (never looked up) and accepted.
        assert!(SpmVocab::new(vec![String::new()], vec![0.0], vec![1], None, None, None, false, false).is_ok());
    }

    #[test]
    fn unknown_token_replaces_missing_bytes() {
        let v = SpmVocab::new(
            vec!["<unk>".into(), "a".into()],
            vec![0.0, 0.0],
            vec![UNKNOWN, NORMAL],
            None,
            None,
            Some(0),
            false,
            false,
        )
        .unwrap();
        assert_eq!(ids(&v, "aé", false), vec![1, 0, 0]);
    }

    /// llama.cpp's `tokenizer_st_partition`, transcribed literally: for each
    /// special in priority order, split every raw fragment at its leftmost
    /// non-overlapping occurrences.
    fn reference_partition(v: &SpmVocab, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut specials: Vec<u32> = (0..v.n_tokens() as u32).filter(|&id| v.types[id as usize].is_special()).collect();
        specials.sort_by_key(|&id| (std::cmp::Reverse(v.token_text(id).unwrap().len()), id));
        let bytes = text.as_bytes();
        let mut fragments = Vec::new();
        if !text.is_empty() {
            fragments.push(Fragment::Raw { start: 0, end: text.len() });
        }
        for id in specials {
            if !parse_special && v.types[id as usize].needs_parse_special() {
                continue;
            }
            let pattern = v.token_text(id).unwrap().as_bytes();
            let mut next = Vec::new();
            for fragment in fragments {
                let Fragment::Raw { start, end } = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut pos = start;
                while let Some(offset) = bytes[pos..end].windows(pattern.len()).position(|w| w == pattern) {
                    if offset > 0 {
                        next.push(Fragment::Raw { start: pos, end: pos + offset });
                    }
                    next.push(Fragment::Token(id));
                    pos += offset + pattern.len();
                }
                if pos < end {
                    next.push(Fragment::Raw { start: pos, end });
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Deterministic xorshift64* generator for randomized tests.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }

        fn string(&mut self, alphabet: &[char], len: usize) -> String {
            (0..len).map(|_| alphabet[self.below(alphabet.len())]).collect()
        }
    }

    #[test]
    fn partition_matches_llama_cpp_reference_on_random_inputs() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let alphabet = ['a', 'b', '\n', 'é'];
        let mut overflowed = 0;
        for round in 0..300 {
            // Random distinct specials of random types over a tiny alphabet,
            // so that occurrences overlap densely.
            let mut entries: Vec<(String, f32, i32)> = vec![("<s>".into(), 0.0, CONTROL)];
            for _ in 0..rng.below(12) + 1 {
                let len = rng.below(5) + 1;
                let text = rng.string(&alphabet, len);
                if entries.iter().all(|e| e.0 != text) {
                    let ty = [CONTROL, USER, UNKNOWN, NORMAL][rng.below(4)];
                    entries.push((text, 0.0, ty));
                }
            }
            let dense = round % 10 == 0;
            if dense {
                // Runs of one letter with specials for each run length
                // exceed the buffering budget (cf. Gemma's newline runs).
                for k in 1..=6 {
                    let text = "a".repeat(k);
                    if entries.iter().all(|e| e.0 != text) {
                        entries.push((text, 0.0, [CONTROL, USER][rng.below(2)]));
                    }
                }
            }
            let refs: Vec<(&str, f32, i32)> = entries.iter().map(|(t, s, ty)| (t.as_str(), *s, *ty)).collect();
            let v = vocab(&refs, true, false);
            let text = if dense {
                rng.string(&['a', 'a', 'a', 'a', 'a', 'a', 'b', '\n'], 3000)
            } else {
                let len = rng.below(60);
                rng.string(&alphabet, len)
            };
            for parse_special in [false, true] {
                let want = reference_partition(&v, &text, parse_special);
                assert_eq!(
                    v.specials.partition(&text, parse_special),
                    want,
                    "specials {entries:?}, text {text:?}, parse_special {parse_special}"
                );
                let all = v.specials.all.as_ref().unwrap();
                let occurrences = v.specials.occurrences(all, text.as_bytes(), 0, 0, parse_special);
                overflowed += usize::from(occurrences.count() > buffer_budget(text.len()));
            }
        }
        assert!(overflowed > 5, "the per-class fallback was exercised only {overflowed} times");
    }

    #[test]
    fn padded_lookup_agrees_with_plain_lookup() {
        let mut e = base();
        e.extend([("abababab", 0.0, NORMAL), ("abababa", 0.0, NORMAL), ("ababababa", 0.0, NORMAL)]);
        let v = vocab(&e, false, false);
        let padded = format!("ababababa{LOOKUP_PADDING}");
        for len in 1..=9 {
            assert_eq!(v.index.get_in(&padded, 0, len), v.index.get(&padded[..len]), "{len}");
            // Without room for an 8-byte load the slow path must agree too.
            let tight = &padded[..9];
            assert_eq!(v.index.get_in(tight, 9 - len, len), v.index.get(&tight[9 - len..]));
        }
        assert_eq!(v.index.get("abababab"), Some(3));
        assert_eq!(v.index.get("ababab"), None);
    }

    /// The SPM merge without a heap: repeatedly merge the adjacent pair with
    /// the best score, ties to the leftmost. Equivalent to llama.cpp's lazy
    /// heap, where exactly the current adjacent token pairs are valid.
    fn reference_merge(v: &SpmVocab, text: &str) -> Vec<u32> {
        let escaped = text.replace(' ', SPACE_ESCAPE);
        let mut symbols: Vec<String> = escaped.chars().map(String::from).collect();
        loop {
            let mut best: Option<(f32, usize)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                let pair = format!("{}{}", symbols[i], symbols[i + 1]);
                if let Some(id) = v.token_id(&pair) {
                    let score = v.token_score(id).unwrap();
                    if best.is_none_or(|(s, _)| score > s) {
                        best = Some((score, i));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        symbols
            .iter()
            .flat_map(|s| match v.token_id(s) {
                Some(id) => vec![id],
                None => s.bytes().filter_map(|b| v.byte_token(b)).collect(),
            })
            .collect()
    }

    #[test]
    fn merge_matches_reference_on_random_vocabularies() {
        let mut rng = Rng(0xfeed_beef_1234_5678);
        let alphabet = ['a', 'b', 'c', ' ', 'é'];
        for _ in 0..300 {
            // Random pieces with scores from a small set, so ties are common.
            let mut entries: Vec<(String, f32, i32)> = vec![("<s>".into(), 0.0, CONTROL)];
            for c in ['a', 'b', 'c'] {
                entries.push((c.to_string(), -10.0, NORMAL));
            }
            for _ in 0..rng.below(40) {
                let len = rng.below(4) + 2;
                let piece = rng.string(&alphabet, len).replace(' ', SPACE_ESCAPE);
                if entries.iter().all(|e| e.0 != piece) {
                    entries.push((piece, -(rng.below(4) as f32), NORMAL));
                }
            }
            let refs: Vec<(&str, f32, i32)> = entries.iter().map(|(t, s, ty)| (t.as_str(), *s, *ty)).collect();
            let v = vocab(&refs, true, false);
            let len = rng.below(40);
            let text = rng.string(&alphabet, len);
            assert_eq!(ids(&v, &text, false), reference_merge(&v, &text), "{entries:?} {text:?}");
        }
    }
}
