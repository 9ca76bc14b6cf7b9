//! Tokenizers built from the `tokenizer.*` metadata of a GGUF file: byte-level BPE
//! (`tokenizer.ggml.model = "gpt2"`) and SentencePiece (`"llama"`, see `spm`).
//!
//! This module owns the conversion between text and token ids, reproducing llama.cpp's ids: for
//! BPE the `tokenizer.ggml.pre` name selects the same pre-tokenizer regexes llama.cpp uses and
//! merges keep llama.cpp's first-rank-wins rule; for SentencePiece the merges follow the token
//! scores with byte fallback; for both, control / user-defined tokens are matched in the text
//! the way `llama_tokenize` does with `parse_special`. It also owns detokenization, including a streaming decoder that never emits
//! half a UTF-8 sequence. It never reads files, never applies chat templates, never normalizes
//! text (llama.cpp does not for BPE vocabularies) and never panics on untrusted vocabularies,
//! ids or text: every failure is a [`TokenizerError`] naming the GGUF field or limit involved.

use std::collections::HashSet;
use std::fmt;

use crate::spm::{EncodeError, SpmVocab};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// Largest vocabulary (and merge list) accepted from a GGUF file.
pub const MAX_VOCAB_SIZE: usize = 1_000_000;
/// Default bound on the text given to [`Tokenizer::encode`].
pub const DEFAULT_MAX_INPUT_BYTES: usize = 1 << 20;

/// GPT-2 pre-tokenizer regex as written in HF `tokenizers` (and, modulo the trailing `\s+`
/// fallback that llama.cpp's custom implementation applies implicitly, in llama.cpp).
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// llama.cpp's case-insensitive rewrite of the Llama 3 regex (`(?i:...)` expanded).
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Same as Llama 3 but digits are split one by one.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Errors from building or using a [`Tokenizer`]; each names the GGUF field or limit at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer.ggml.model = {0:?} is not supported (\"gpt2\" byte-level BPE and \"llama\" SentencePiece are)")]
    UnsupportedModel(String),
    /// A SentencePiece vocabulary field is invalid (the field is named).
    #[error("{field}: {reason}")]
    Vocab { field: &'static str, reason: String },
    #[error("tokenizer.ggml.pre = {0:?} is not a supported pre-tokenizer")]
    UnsupportedPreTokenizer(String),
    #[error("tokenizer.ggml.tokens is empty")]
    EmptyVocab,
    #[error("{field} has {len} entries, more than the limit of {limit}")]
    TooManyEntries { field: &'static str, len: usize, limit: usize },
    #[error("tokenizer.ggml.token_type has {len} entries but tokenizer.ggml.tokens has {expected}")]
    TokenTypeLength { len: usize, expected: usize },
    #[error("tokenizer.ggml.token_type[{index}] = {value} is not a known token type (0..=6)")]
    InvalidTokenType { index: usize, value: i32 },
    #[error("tokenizer.ggml.tokens[{index}] = {text:?} duplicates tokenizer.ggml.tokens[{first}]")]
    DuplicateToken { index: usize, first: usize, text: String },
    #[error("tokenizer.ggml.tokens[{index}] is an empty control/user-defined token")]
    EmptySpecialToken { index: usize },
    #[error("{field} = {id} is out of range for a vocabulary of {vocab_size} tokens")]
    SpecialIdOutOfRange { field: &'static str, id: u32, vocab_size: usize },
    #[error("tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing")]
    MissingBosId,
    #[error("tokenizer.ggml.merges[{index}] = {merge:?}: {reason}")]
    InvalidMerge { index: usize, merge: String, reason: &'static str },
    #[error("input text is {len} bytes, more than the limit of {limit} bytes (max_input_bytes)")]
    InputTooLong { len: usize, limit: usize },
    #[error("token id {id} is out of range for a vocabulary of {vocab_size} tokens")]
    TokenIdOutOfRange { id: u32, vocab_size: usize },
    /// The `tokenizers` crate rejected something validation should already have caught.
    #[error("tokenizers backend ({0}): {1}")]
    Backend(&'static str, String),
}

/// Tokenizer description as stored in GGUF `tokenizer.ggml.*` keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`
    pub model: String,
    /// `tokenizer.ggml.pre`; `None` behaves like llama.cpp's "default".
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`; empty means every token is normal.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, each `"left right"`, best rank first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece vocabularies; empty for BPE).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.bos_token_id`
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`
    pub add_bos: bool,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece: prefix each text run with a space).
    pub add_space_prefix: bool,
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// 1 (and 0, "undefined", which llama.cpp also treats as plain vocabulary).
    Normal,
    /// 2: matched in text and skipped in output like a control token.
    Unknown,
    /// 3: e.g. `<|im_start|>`; only parsed from text when `parse_special` is true.
    Control,
    /// 4: parsed from text even without `parse_special`, always rendered (llama.cpp semantics).
    UserDefined,
    /// 5
    Unused,
    /// 6: `<0xAB>`-style raw byte tokens.
    Byte,
}

impl TokenKind {
    /// Control, unknown or user-defined: matched as whole units in text (llama.cpp's
    /// `cache_special_tokens`).
    pub fn is_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown | Self::UserDefined)
    }

    /// Control or unknown: matched in text only with `parse_special`, and omitted from output
    /// when rendering without special tokens.
    pub fn needs_parse_special(self) -> bool {
        matches!(self, Self::Control | Self::Unknown)
    }

    pub(crate) fn from_gguf(value: i32) -> Option<Self> {
        Some(match value {
            0 | 1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// Which llama.cpp pre-tokenizer family a `tokenizer.ggml.pre` name selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreKind {
    Default,
    Gpt2,
    Llama3,
    Smollm,
    Qwen2,
}

impl PreKind {
    /// Names follow llama.cpp's `llama_vocab::impl::load`; only families implemented here.
    fn from_name(name: Option<&str>) -> Result<Self, TokenizerError> {
        Ok(match name {
            None | Some("default") => Self::Default,
            Some("gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais") => Self::Gpt2,
            Some("llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "pixtral") => Self::Llama3,
            Some("smollm" | "starcoder" | "refact" | "command-r" | "codeshell") => Self::Smollm,
            Some("qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez") => Self::Qwen2,
            Some(other) => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_owned())),
        })
    }

    fn build(self) -> Result<PreTokenizerWrapper, TokenizerError> {
        // llama.cpp applies its regexes in sequence, each splitting the pieces of the previous
        // one with both matches and gaps kept: that is `Split` with `Isolated`.
        let split = |re: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
            Split::new(SplitPattern::Regex(re.to_owned()), SplitDelimiterBehavior::Isolated, false)
                .map(PreTokenizerWrapper::Split)
                .map_err(|e| backend("pre-tokenizer regex", e))
        };
        let bytes_only = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false));
        let gpt2 = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true));
        let steps = match self {
            Self::Gpt2 => vec![gpt2],
            Self::Smollm => vec![split(r"\p{N}")?, gpt2],
            Self::Llama3 => vec![split(LLAMA3_REGEX)?, bytes_only],
            Self::Qwen2 => vec![split(QWEN2_REGEX)?, bytes_only],
            Self::Default => vec![
                split(r"[\p{P}\$\+<=>\^~\|]+")?,
                split(GPT2_REGEX)?,
                split(r"\p{N}+")?,
                split(r"[0-9][0-9][0-9]")?,
                bytes_only,
            ],
        };
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
    }
}

fn backend(context: &'static str, e: impl fmt::Display) -> TokenizerError {
    TokenizerError::Backend(context, e.to_string())
}

/// Raw bytes a token stands for. Characters outside the byte-level alphabet are kept as their
/// own UTF-8 so that odd vocabularies degrade instead of failing.
fn token_raw_bytes(text: &str, kind: TokenKind, table: &[Option<u8>; 324]) -> Vec<u8> {
    if matches!(kind, TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined) {
        return text.as_bytes().to_vec();
    }
    let hex = text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>'));
    if kind == TokenKind::Byte
        && let Some(b) = hex.filter(|h| h.len() == 2).and_then(|h| u8::from_str_radix(h, 16).ok())
    {
        return vec![b];
    }
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match usize::try_from(u32::from(c)).ok().and_then(|i| table.get(i).copied().flatten()) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
        }
    }
    out
}

/// The vocabulary's encoder.
enum Backend {
    Bpe {
        /// Matches control, unknown and user-defined tokens in the text (`parse_special = true`).
        with_special: Box<tokenizers::Tokenizer>,
        /// Matches only user-defined tokens, as llama.cpp does with `parse_special = false`. A
        /// second instance because `tokenizers` makes this a per-tokenizer setting, not a
        /// per-call one.
        plain: Box<tokenizers::Tokenizer>,
    },
    Spm(Box<SpmVocab>),
}

impl Backend {
    /// Ids of `text` without BOS.
    fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Self::Bpe { with_special, plain } => {
                let tk = if parse_special { with_special } else { plain };
                Ok(tk.encode_fast(text, false).map_err(|e| backend("encode", e))?.get_ids().to_vec())
            }
            Self::Spm(v) => v.encode_no_bos(text, parse_special).map_err(|e| match e {
                EncodeError::InputTooLong { len, max } => TokenizerError::InputTooLong { len, limit: max },
            }),
        }
    }
}

/// Text <-> token ids for one GGUF vocabulary. Cheap to share: `Send + Sync`, `&self` methods.
pub struct Tokenizer {
    backend: Backend,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    /// All tokens' raw bytes back to back; token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    max_input_bytes: usize,
    pre: PreKind,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The vocabulary is far too large to print.
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("pre", &self.pre)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("add_bos", &self.add_bos)
            .field("max_input_bytes", &self.max_input_bytes)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Validates `spec` and builds the tokenizer. Linear in vocabulary plus merges.
    pub fn from_spec(spec: TokenizerSpec) -> Result<Self, TokenizerError> {
        match spec.model.as_str() {
            "gpt2" => Self::bpe(spec),
            "llama" => Self::spm(spec),
            _ => Err(TokenizerError::UnsupportedModel(spec.model)),
        }
    }

    /// A SentencePiece vocabulary: `spm` encodes; token bytes come from its rendering.
    fn spm(mut spec: TokenizerSpec) -> Result<Self, TokenizerError> {
        let n = spec.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        check_count("tokenizer.ggml.tokens", n)?;
        let kinds = token_kinds(&spec.token_types, n)?;
        let types = if spec.token_types.is_empty() { vec![1; n] } else { spec.token_types.clone() };
        let vocab = SpmVocab::new(
            spec.tokens.clone(),
            std::mem::take(&mut spec.scores),
            types,
            spec.bos_id,
            spec.eos_id,
            spec.unk_id,
            spec.add_bos,
            spec.add_space_prefix,
        )
        .map_err(|e| TokenizerError::Vocab { field: e.gguf_field(), reason: e.to_string() })?;
        // `n <= MAX_VOCAB_SIZE`, so every id fits.
        let pieces: Vec<Vec<u8>> = (0..n)
            .map(|id| u32::try_from(id).ok().and_then(|id| vocab.token_bytes(id)).unwrap_or_default().to_vec())
            .collect();
        Ok(Self::assemble(Backend::Spm(Box::new(vocab)), spec, kinds, pieces, PreKind::Default))
    }

    fn bpe(spec: TokenizerSpec) -> Result<Self, TokenizerError> {
        let pre = PreKind::from_name(spec.pre.as_deref())?;
        let n = spec.tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        check_count("tokenizer.ggml.tokens", n)?;
        check_count("tokenizer.ggml.merges", spec.merges.len())?;
        let kinds = token_kinds(&spec.token_types, n)?;
        for (field, id) in [("tokenizer.ggml.bos_token_id", spec.bos_id), ("tokenizer.ggml.eos_token_id", spec.eos_id)]
        {
            if let Some(id) = id
                && usize::try_from(id).map_or(true, |i| i >= n)
            {
                return Err(TokenizerError::SpecialIdOutOfRange { field, id, vocab_size: n });
            }
        }
        if spec.add_bos && spec.bos_id.is_none() {
            return Err(TokenizerError::MissingBosId);
        }

        let mut vocab = Vocab::with_capacity(n);
        let mut specials = Vec::new();
        let mut user_defined = Vec::new();
        for (index, (text, &kind)) in spec.tokens.iter().zip(&kinds).enumerate() {
            // `n <= MAX_VOCAB_SIZE`, so the index always fits.
            let id = u32::try_from(index).map_err(|e| backend("token id", e))?;
            if let Some(&first) = vocab.get(text.as_str()) {
                // llama.cpp refuses such vocabularies too (its text->id map must be a bijection).
                return Err(TokenizerError::DuplicateToken { index, first: first as usize, text: text.clone() });
            }
            vocab.insert(text.clone(), id);
            let added = || AddedToken::from(text.clone(), true).normalized(false);
            match kind {
                TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined if text.is_empty() => {
                    return Err(TokenizerError::EmptySpecialToken { index });
                }
                TokenKind::Control | TokenKind::Unknown => specials.push(added()),
                TokenKind::UserDefined => user_defined.push(added().special(false)),
                _ => {}
            }
        }

        let merges = parse_merges(&spec.merges, &vocab)?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre == PreKind::Llama3)
            .build()
            .map_err(|e| backend("BPE model", e))?;
        let mut with_special = tokenizers::Tokenizer::new(bpe);
        with_special.with_pre_tokenizer(Some(pre.build()?));
        with_special.with_decoder(Some(ByteLevelDecoder::default()));
        // One call each: every call rebuilds the added-token matcher over all tokens.
        with_special.add_special_tokens(&specials);
        with_special.add_tokens(&user_defined);
        let mut plain = with_special.clone();
        plain.set_encode_special_tokens(true);

        let table = byte_table();
        let pieces: Vec<Vec<u8>> =
            spec.tokens.iter().zip(&kinds).map(|(text, &kind)| token_raw_bytes(text, kind, &table)).collect();
        let backend = Backend::Bpe { with_special: Box::new(with_special), plain: Box::new(plain) };
        Ok(Self::assemble(backend, spec, kinds, pieces, pre))
    }

    /// The tokenizer over `backend`, with every token's bytes laid end to end.
    fn assemble(
        backend: Backend,
        spec: TokenizerSpec,
        kinds: Vec<TokenKind>,
        pieces: Vec<Vec<u8>>,
        pre: PreKind,
    ) -> Self {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(pieces.len() + 1);
        offsets.push(0);
        for piece in pieces {
            bytes.extend_from_slice(&piece);
            offsets.push(bytes.len());
        }
        Self {
            backend,
            tokens: spec.tokens,
            kinds,
            bytes,
            offsets,
            bos_id: spec.bos_id,
            eos_id: spec.eos_id,
            add_bos: spec.add_bos,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            pre,
        }
    }

    /// Replaces the bound on input text length ([`DEFAULT_MAX_INPUT_BYTES`] by default).
    pub fn with_max_input_bytes(mut self, limit: usize) -> Self {
        self.max_input_bytes = limit;
        if let Backend::Spm(v) = self.backend {
            self.backend = Backend::Spm(Box::new(v.with_max_input_bytes(limit)));
        }
        self
    }

    /// Token ids for `text`, with BOS prepended only when the vocabulary asks for it.
    /// `parse_special` turns control-token text such as `<|im_start|>` into its id; without it
    /// such text is tokenized like any other (user-defined tokens are matched either way).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        if text.len() > self.max_input_bytes {
            return Err(TokenizerError::InputTooLong { len: text.len(), limit: self.max_input_bytes });
        }
        let mut ids = Vec::new();
        if self.add_bos
            && let Some(bos) = self.bos_id
        {
            ids.push(bos);
        }
        ids.extend(self.backend.encode(text, parse_special)?);
        Ok(ids)
    }

    /// Token ids for a rendered chat prompt: control-token text is parsed only in the template's
    /// own text, never inside `content` spans (sorted, disjoint byte ranges of `text`), so a
    /// message cannot forge a turn. BOS is prepended once, as [`encode`](Self::encode) does.
    pub fn encode_chat(&self, text: &str, content: &[std::ops::Range<usize>]) -> Result<Vec<u32>, TokenizerError> {
        if text.len() > self.max_input_bytes {
            return Err(TokenizerError::InputTooLong { len: text.len(), limit: self.max_input_bytes });
        }
        let mut ids = self.encode("", false)?;
        let mut piece = |s: &str, parse_special: bool| -> Result<(), TokenizerError> {
            ids.extend(self.backend.encode(s, parse_special)?);
            Ok(())
        };
        let mut at = 0;
        for span in content {
            let (start, end) = (span.start.clamp(at, text.len()), span.end.clamp(at, text.len()));
            let (Some(before), Some(inside)) = (text.get(at..start), text.get(start..end)) else {
                return Err(backend("encode", "a content span is not on a character boundary"));
            };
            piece(before, true)?;
            piece(inside, false)?;
            at = end;
        }
        piece(text.get(at..).unwrap_or_default(), true)?;
        Ok(ids)
    }

    /// Text for `ids`. Invalid UTF-8 becomes U+FFFD, exactly as [`StreamDecoder`] would emit it.
    /// `skip_special` drops control and unknown tokens (llama.cpp's `special = false`);
    /// user-defined tokens are ordinary text and always rendered.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let mut buf = Vec::new();
        for &id in ids {
            let bytes =
                self.token_bytes(id).ok_or(TokenizerError::TokenIdOutOfRange { id, vocab_size: self.vocab_size() })?;
            if !(skip_special && self.hidden_when_skipping(id)) {
                buf.extend_from_slice(bytes);
            }
        }
        Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// Raw bytes of one token: the byte-level alphabet undone for vocabulary tokens, the literal
    /// text for control / user-defined tokens. May be an incomplete UTF-8 sequence.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = usize::try_from(id).ok()?;
        let start = *self.offsets.get(i)?;
        let end = *self.offsets.get(i.checked_add(1)?)?;
        self.bytes.get(start..end)
    }

    /// The vocabulary string exactly as stored in the GGUF (byte-level alphabet, e.g. `Ġthe`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(usize::try_from(id).ok()?).map(String::as_str)
    }

    /// The llama.cpp type of one token.
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(usize::try_from(id).ok()?).copied()
    }

    /// The bytes no token spells: the vocabulary lacks their byte-level character, so text
    /// holding them loses them when it is encoded, as it does in llama.cpp.
    pub fn unencodable_bytes(&self) -> Vec<u8> {
        if let Backend::Spm(v) = &self.backend {
            // SentencePiece falls back to `<0xXX>` tokens; only bytes without one are lost.
            return (0..=255u8).filter(|&b| v.byte_token(b).is_none()).collect();
        }
        let mut missing: Vec<u8> = byte_table()
            .iter()
            .enumerate()
            .filter_map(|(slot, b)| Some((char::from_u32(slot as u32)?, (*b)?)))
            .filter(|(c, _)| self.token_id(c.encode_utf8(&mut [0; 4])).is_none())
            .map(|(_, b)| b)
            .collect();
        missing.sort_unstable();
        missing
    }

    /// Control, unknown or user-defined: the tokens matched as whole units in text.
    pub fn is_special(&self, id: u32) -> bool {
        self.token_kind(id).is_some_and(TokenKind::is_special)
    }

    /// Tokens llama.cpp omits from output when rendering without special tokens.
    fn hidden_when_skipping(&self, id: u32) -> bool {
        self.token_kind(id).is_some_and(TokenKind::needs_parse_special)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Whether [`encode`](Self::encode) prepends BOS (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos_id.is_some()
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Id of the token whose stored vocabulary string is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.backend {
            Backend::Bpe { with_special, .. } => with_special.token_to_id(text),
            Backend::Spm(v) => v.token_id(text),
        }
    }
}

fn check_count(field: &'static str, len: usize) -> Result<(), TokenizerError> {
    if len > MAX_VOCAB_SIZE {
        return Err(TokenizerError::TooManyEntries { field, len, limit: MAX_VOCAB_SIZE });
    }
    Ok(())
}

fn token_kinds(types: &[i32], n: usize) -> Result<Vec<TokenKind>, TokenizerError> {
    if types.is_empty() {
        return Ok(vec![TokenKind::Normal; n]);
    }
    if types.len() != n {
        return Err(TokenizerError::TokenTypeLength { len: types.len(), expected: n });
    }
    types
        .iter()
        .enumerate()
        .map(|(index, &value)| TokenKind::from_gguf(value).ok_or(TokenizerError::InvalidTokenType { index, value }))
        .collect()
}

fn parse_merges(merges: &[String], vocab: &Vocab) -> Result<Merges, TokenizerError> {
    let mut out = Vec::with_capacity(merges.len());
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    for (index, merge) in merges.iter().enumerate() {
        let invalid = |reason| TokenizerError::InvalidMerge { index, merge: merge.clone(), reason };
        let mut parts = merge.split(' ');
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid("expected exactly two pieces separated by one space"));
        };
        if left.is_empty() || right.is_empty() {
            return Err(invalid("empty piece"));
        }
        if !vocab.contains_key(left) {
            return Err(invalid("left piece is not in tokenizer.ggml.tokens"));
        }
        if !vocab.contains_key(right) {
            return Err(invalid("right piece is not in tokenizer.ggml.tokens"));
        }
        if !vocab.contains_key([left, right].concat().as_str()) {
            return Err(invalid("merged piece is not in tokenizer.ggml.tokens"));
        }
        // llama.cpp keeps the first rank of a repeated pair; `tokenizers` would keep the last.
        if seen.insert((left, right)) {
            out.push((left.to_owned(), right.to_owned()));
        }
    }
    Ok(out)
}

/// Inverse of GPT-2's `bytes_to_unicode`, indexed by code point (the alphabet ends at U+0143):
/// printable Latin-1 bytes stand for themselves, the other 68 bytes were shifted to U+0100..
/// in ascending byte order.
fn byte_table() -> [Option<u8>; 324] {
    let mut table = [None; 324];
    let mut shifted = 256;
    for b in 0..=255u8 {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        let slot = if printable { usize::from(b) } else { shifted };
        shifted += usize::from(!printable);
        if let Some(entry) = table.get_mut(slot) {
            *entry = Some(b);
        }
    }
    table
}

/// Incremental detokenizer for streaming: never emits a partial UTF-8 sequence.
///
/// The concatenation of everything returned by [`push`](Self::push) and
/// [`finish`](Self::finish) equals [`Tokenizer::decode`] of the same ids.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    skip_special: bool,
    /// Bytes of an incomplete UTF-8 sequence (at most 3) waiting for the next token.
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new(skip_special: bool) -> Self {
        Self { skip_special, pending: Vec::new() }
    }

    /// Text that became complete with token `id` (may be empty). An id outside the vocabulary
    /// flushes pending bytes and yields U+FFFD rather than silently vanishing.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        let Some(bytes) = tok.token_bytes(id) else {
            let mut out = self.finish();
            out.push(char::REPLACEMENT_CHARACTER);
            return out;
        };
        if self.skip_special && tok.hidden_when_skipping(id) {
            return String::new();
        }
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Same maximal-subpart rule as `from_utf8_lossy`, so decode agrees.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Flushes the stream: an unfinished UTF-8 sequence becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's `bytes_to_unicode`, written independently of the decoder under test.
    fn byte_to_char(b: u8) -> char {
        let printable = |x: u8| (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
        if printable(b) {
            return char::from(b);
        }
        let n = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + n).expect("valid char")
    }

    const SPECIALS: [(&str, i32); 4] = [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool>", 4)];

    /// Specials, the full byte alphabet, `<0x41>` as a byte-type token, then one token per merge.
    fn spec_with(pre: &str, merges: &[&str]) -> TokenizerSpec {
        let mut tokens: Vec<String> = SPECIALS.iter().map(|(t, _)| (*t).to_owned()).collect();
        let mut token_types: Vec<i32> = SPECIALS.iter().map(|(_, k)| *k).collect();
        tokens.extend((0..=255u8).map(|b| byte_to_char(b).to_string()));
        token_types.extend(std::iter::repeat_n(1, 256));
        tokens.push("<0x41>".to_owned());
        token_types.push(6);
        for m in merges {
            let merged = m.replace(' ', "");
            if !tokens.contains(&merged) {
                tokens.push(merged);
                token_types.push(1);
            }
        }
        TokenizerSpec {
            model: "gpt2".to_owned(),
            pre: Some(pre.to_owned()),
            tokens,
            token_types,
            merges: merges.iter().map(|m| (*m).to_owned()).collect(),
            bos_id: Some(1),
            eos_id: Some(2),
            add_bos: false,
            ..Default::default()
        }
    }

    fn toy() -> Tokenizer {
        let merges =
            ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "Ã ©", "1 2", "12 3"];
        Tokenizer::from_spec(spec_with("smollm", &merges)).expect("toy spec builds")
    }

    /// Ids of vocabulary strings, so expectations read as token pieces.
    fn ids(tok: &Tokenizer, pieces: &[&str]) -> Vec<u32> {
        let id = |p: &&str| tok.token_id(p).unwrap_or_else(|| panic!("{p:?} not in vocab"));
        pieces.iter().map(id).collect()
    }

    fn enc(tok: &Tokenizer, text: &str, parse_special: bool) -> Vec<u32> {
        tok.encode(text, parse_special).expect("encode")
    }

    fn byte_ids(tok: &Tokenizer, text: &str) -> Vec<u32> {
        let chars: Vec<String> = text.bytes().map(|b| byte_to_char(b).to_string()).collect();
        ids(tok, &chars.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn merges_apply_in_rank_order() {
        let tok = toy();
        assert_eq!(enc(&tok, "hello world!", true), ids(&tok, &["hello", "Ġworld", "!"]));
        assert_eq!(enc(&tok, "café", false), ids(&tok, &["c", "a", "f", "Ã©"]));
        // A repeated pair keeps its first rank, as in llama.cpp (`tokenizers` keeps the last).
        let tok = Tokenizer::from_spec(spec_with("gpt2", &["a b", "b c", "a b"])).expect("build");
        assert_eq!(enc(&tok, "abc", false), ids(&tok, &["ab", "c"]));
    }

    #[test]
    fn pre_tokenizer_follows_tokenizer_ggml_pre() {
        let merges = ["1 2", "12 3", "Ġ 123", "4 5"];
        let digits = &["Ġ", "1", "2", "3", "4", "5"][..];
        for (pre, want) in [
            ("gpt2", &["Ġ123", "45"][..]),
            ("default", &["Ġ", "123", "45"]),
            ("llama-bpe", &["Ġ", "123", "45"]),
            ("smollm", digits),
            ("qwen2", digits),
        ] {
            let tok = Tokenizer::from_spec(spec_with(pre, &merges)).expect(pre);
            let want: Vec<&str> = want.to_vec();
            assert_eq!(enc(&tok, " 12345", false), ids(&tok, &want), "{pre}");
        }
    }

    #[test]
    fn parse_special_controls_control_tokens_only() {
        let tok = toy();
        let text = "<|im_start|>hello<tool>";
        assert_eq!(enc(&tok, text, true), vec![1, ids(&tok, &["hello"])[0], 3]);
        let mut want = byte_ids(&tok, "<|im_start|>");
        want.extend(ids(&tok, &["hello", "<tool>"]));
        // User-defined tokens are matched even without parse_special (llama.cpp does too).
        assert_eq!(enc(&tok, text, false), want);
        assert_eq!(tok.decode(&want, false).expect("decode"), text);
        assert!(tok.is_special(1) && tok.is_special(3) && !tok.is_special(10));
        assert_eq!(tok.token_kind(3), Some(TokenKind::UserDefined));
    }

    #[test]
    fn bos_is_added_only_when_asked() {
        assert_eq!(enc(&toy(), "", true), Vec::<u32>::new());
        let mut spec = spec_with("smollm", &[]);
        spec.add_bos = true;
        let tok = Tokenizer::from_spec(spec).expect("build");
        assert_eq!(enc(&tok, "", true), vec![1]);
        assert_eq!(enc(&tok, "h", false), vec![1, ids(&tok, &["h"])[0]]);
        assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    }

    #[test]
    fn token_bytes_undo_the_byte_level_alphabet() {
        let tok = toy();
        let bytes = |piece: &str| tok.token_bytes(ids(&tok, &[piece])[0]);
        assert_eq!(bytes("Ġ"), Some(&b" "[..]));
        assert_eq!(bytes("Ċ"), Some(&b"\n"[..]));
        assert_eq!(bytes("Ġworld"), Some(&b" world"[..]));
        assert_eq!(bytes("Ã©"), Some("é".as_bytes()));
        assert_eq!(bytes("<|im_start|>"), Some(&b"<|im_start|>"[..]));
        assert_eq!(bytes("<0x41>"), Some(&b"A"[..]));
        for b in 0..=255u8 {
            assert_eq!(bytes(&byte_to_char(b).to_string()), Some(&[b][..]), "byte {b}");
        }
        assert_eq!(tok.token_text(ids(&tok, &["Ġw"])[0]), Some("Ġw"));
        let size = u32::try_from(tok.vocab_size()).expect("fits");
        assert_eq!((tok.token_bytes(size), tok.token_text(u32::MAX)), (None, None));
        assert!(!tok.is_special(u32::MAX));
    }

    #[test]
    fn decode_roundtrips_and_agrees_with_tokenizers_decoder() {
        let tok = toy();
        #[rustfmt::skip]
        let texts = ["hello world", "café naïve\r\n\t  x", "🌍 你好 ١٢٣ 123", " <|im_end|> ", "\0",
            "\u{FFFF}\u{10FFFF}", "'s'S'll", "   \n\n  \t", "a\u{0301}"];
        for text in texts {
            let ids = enc(&tok, text, false);
            assert_eq!(tok.decode(&ids, false).expect("decode"), text);
            let Backend::Bpe { plain, .. } = &tok.backend else { panic!("a BPE vocabulary") };
            assert_eq!(plain.decode(&ids, false).expect("hf decode"), text);
        }
        let ids = [1, ids(&tok, &["hello"])[0], 3, 2];
        let full = "<|im_start|>hello<tool><|im_end|>";
        assert_eq!(tok.decode(&ids, false).expect("decode"), full);
        assert_eq!(tok.decode(&ids, true).expect("decode"), "hello<tool>");
        let err = TokenizerError::TokenIdOutOfRange { id: u32::MAX, vocab_size: tok.vocab_size() };
        assert_eq!(tok.decode(&[1, u32::MAX], false), Err(err));
    }

    #[test]
    fn stream_decoder_holds_partial_utf8_and_matches_decode() {
        let tok = toy();
        let globe = byte_ids(&tok, "🌍");
        let mut s = StreamDecoder::new(false);
        let outs: Vec<String> = globe.iter().map(|&i| s.push(&tok, i)).collect();
        assert_eq!(outs.concat() + "|" + &outs[3] + "|" + &s.finish(), "🌍|🌍|");
        // An unfinished sequence is flushed as one replacement character.
        let outs = [s.push(&tok, globe[0]), s.push(&tok, globe[1]), s.finish()];
        assert_eq!(outs.concat(), "\u{FFFD}");
        // A hidden control token leaves pending bytes alone; a bad continuation is replaced.
        let mut s = StreamDecoder::new(true);
        let h = ids(&tok, &["h"])[0];
        let outs = [s.push(&tok, globe[0]), s.push(&tok, 2), s.push(&tok, h), s.push(&tok, u32::MAX)];
        assert_eq!(outs, ["", "", "\u{FFFD}h", "\u{FFFD}"]);

        // Pseudo-random id streams: concatenated pushes equal decode, for both skip modes.
        let vocab = u32::try_from(tok.vocab_size()).expect("fits");
        let mut state = 0x2545_f491_u32;
        for skip in [false, true] {
            for _ in 0..200 {
                let mut next = || {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) % vocab
                };
                let ids: Vec<u32> = (0..24).map(|_| next()).collect();
                let mut s = StreamDecoder::new(skip);
                let mut streamed: String = ids.iter().map(|&i| s.push(&tok, i)).collect();
                streamed.push_str(&s.finish());
                assert_eq!(streamed, tok.decode(&ids, skip).expect("decode"), "{ids:?}");
            }
        }
    }

    #[test]
    fn input_length_is_bounded() {
        let tok = toy().with_max_input_bytes(8);
        assert!(tok.encode("12345678", true).is_ok());
        let err = tok.encode("123456789", true).expect_err("too long");
        assert_eq!(err, TokenizerError::InputTooLong { len: 9, limit: 8 });
        assert!(err.to_string().contains("max_input_bytes"), "{err}");
    }

    #[test]
    fn spec_validation_names_the_field() {
        type Edit = fn(&mut TokenizerSpec);
        #[rustfmt::skip]
        let cases: [(Edit, &str); 12] = [
            (|s| s.model = "llama".into(), "tokenizer.ggml.scores"),
            (|s| (s.model, s.scores) = ("llama".into(), vec![f32::NAN; 300]), "tokenizer.ggml.scores"),
            (|s| s.model = "bert".into(), "tokenizer.ggml.model = \"bert\""),
            (|s| s.pre = Some("tekken".into()), "tokenizer.ggml.pre = \"tekken\""),
            (|s| s.tokens.clear(), "tokenizer.ggml.tokens is empty"),
            (|s| s.token_types.truncate(3), "tokenizer.ggml.token_type has 3 entries"),
            (|s| s.token_types[7] = 9, "tokenizer.ggml.token_type[7] = 9"),
            (|s| s.bos_id = Some(100_000), "tokenizer.ggml.bos_token_id = 100000"),
            (|s| s.eos_id = Some(u32::MAX), "tokenizer.ggml.eos_token_id = 4294967295"),
            (|s| (s.add_bos, s.bos_id) = (true, None), "bos_token_id is missing"),
            (|s| s.tokens[5] = "<tool>".into(), "tokens[5] = \"<tool>\" duplicates"),
            (|s| s.tokens[0] = String::new(), "tokenizer.ggml.tokens[0] is an empty"),
        ];
        for (edit, want) in cases {
            let mut spec = spec_with("smollm", &["h e"]);
            edit(&mut spec);
            let err = Tokenizer::from_spec(spec).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        const TWO: &str = "expected exactly two pieces separated by one space";
        #[rustfmt::skip]
        let merges = [
            ("a b c", TWO), ("ab", TWO), ("a  b", TWO), (" a", "empty piece"),
            ("zz b", "left piece is not in tokenizer.ggml.tokens"),
            ("a zz", "right piece is not in tokenizer.ggml.tokens"),
            ("x y", "merged piece is not in tokenizer.ggml.tokens"),
        ];
        for (merge, reason) in merges {
            let mut spec = spec_with("smollm", &["h e"]);
            spec.merges.push(merge.into());
            let err = Tokenizer::from_spec(spec).expect_err(merge).to_string();
            assert_eq!(err, format!("tokenizer.ggml.merges[1] = {merge:?}: {reason}"));
        }
    }

    #[test]
    fn empty_token_types_mean_all_normal() {
        let mut spec = spec_with("gpt2", &[]);
        spec.token_types.clear();
        let tok = Tokenizer::from_spec(spec).expect("build");
        assert!(!tok.is_special(1));
        // Control text is plain text when nothing is marked special.
        assert!(tok.encode("<|im_start|>", true).expect("encode").len() > 1);
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
        assert_send_sync::<StreamDecoder>();
    }
}
