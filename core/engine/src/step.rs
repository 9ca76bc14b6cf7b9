//! The vocabulary of one forward step, shared by every backend: what a step asks for
//! ([`SeqStep`], [`LogitsFor`]), why it is refused ([`StepError`]), and the model and cache
//! geometry it is checked against ([`LlamaConfig`], [`CacheShape`]).
//!
//! A leaf on purpose: it imports nothing that computes a step, so the KV cache, the kernels,
//! attention and the CUDA backend can name these types without depending on `model`
//! (which depends on all of them). Users outside the crate reach them through `model`.

use crate::device::DeviceError;

/// Why a step was rejected. Nothing is written to the KV cache when a step is rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StepError {
    /// A token id outside the vocabulary.
    #[error("batch[{seq}].tokens[{index}] = {id} is outside the vocabulary of {vocab}")]
    BadToken {
        /// Sequence index in the batch.
        seq: usize,
        /// Position in its tokens.
        index: usize,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// Positions past the model's context length.
    #[error("batch[{seq}]: positions up to {end} exceed the context length {limit}")]
    ContextOverflow {
        /// Sequence index.
        seq: usize,
        /// One past the last position.
        end: usize,
        /// The model's context length.
        limit: usize,
    },
    /// The block table does not cover the positions.
    #[error("batch[{seq}]: block table has {have} blocks, positions up to {end} need {need}")]
    BlockTableShort {
        /// Sequence index.
        seq: usize,
        /// Blocks given.
        have: usize,
        /// Blocks needed.
        need: usize,
        /// One past the last position.
        end: usize,
    },
    /// A block id outside the cache.
    #[error("batch[{seq}].blocks contains {block}, the cache has {num_blocks} blocks")]
    BadBlock {
        /// Sequence index.
        seq: usize,
        /// The id.
        block: u32,
        /// Blocks in the cache.
        num_blocks: usize,
    },
    /// A sequence with no tokens.
    #[error("batch[{seq}].tokens is empty")]
    EmptySequence {
        /// Sequence index.
        seq: usize,
    },
    /// The KV cache was built for another model shape.
    #[error(
        "KV cache has {layers} layers of {kv_dim} (head {head_dim}); the model needs {want_layers} of {want_kv_dim} (head {want_head_dim})"
    )]
    CacheMismatch {
        /// Cache layers.
        layers: usize,
        /// Cache row width.
        kv_dim: usize,
        /// Cache head width.
        head_dim: usize,
        /// Model layers.
        want_layers: usize,
        /// Model KV width.
        want_kv_dim: usize,
        /// Model head width.
        want_head_dim: usize,
    },
    /// The device failed during the step (its sequences fail; the engine keeps running).
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// More tokens in one step than the scratch sizing allows.
    #[error("step has {tokens} tokens, above the limit of {limit}")]
    TooManyTokens {
        /// Tokens given.
        tokens: usize,
        /// The limit.
        limit: usize,
    },
}

/// Which positions of a sequence need logits this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// None (a prefill chunk that is not the last).
    None,
    /// Only the last token (the usual case).
    Last,
    /// Every token (teacher forcing, prompt logprobs).
    All,
}

/// One sequence's part of a step.
#[derive(Debug, Clone, Copy)]
pub struct SeqStep<'a> {
    /// Tokens to run, at positions `pos..pos + tokens.len()`.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`; positions before it are already in the KV cache.
    pub pos: usize,
    /// KV block ids covering positions `0..pos + tokens.len()`.
    pub blocks: &'a [u32],
    /// Which logits to return.
    pub logits: LogitsFor,
}

/// Model family (`general.architecture`): the decoder skeleton is shared, and what a family
/// adds is described by the flags of [`LlamaConfig`] rather than by a forked forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama and its relatives (SmolLM2): pre-norm, SiLU-gated FFN, interleaved RoPE pairs.
    Llama,
    /// Gemma 3: scaled embeddings, QK-norm, post-norms, GELU-gated FFN, NeoX RoPE with two
    /// bases, interleaved sliding-window and global layers, tied output.
    Gemma3,
}

impl Arch {
    /// The `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// The gate activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) · up`.
    Silu,
    /// `gelu(gate) · up` with GELU's tanh approximation (as ggml computes it).
    GeluTanh,
}

/// Hyperparameters, all read from GGUF metadata (plus the per-family constants llama.cpp
/// also hard-codes, named where they are set).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Model family.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Hidden size.
    pub dim: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Feed-forward inner size.
    pub ffn_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Trained context length.
    pub ctx_len: usize,
    /// RoPE base frequency (of the global layers when some layers are local).
    pub rope_theta: f32,
    /// Dimensions rotated by RoPE (from the start of each head).
    pub rope_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Rotate the two halves of a head (NeoX) instead of adjacent pairs.
    pub rope_neox: bool,
    /// Token embeddings are multiplied by this (Gemma: √dim).
    pub embed_scale: f32,
    /// Attention scores are `q·k · attn_scale`.
    pub attn_scale: f32,
    /// RMSNorm over each query and key head before RoPE.
    pub qk_norm: bool,
    /// RMSNorm of the attention and FFN outputs before they join the residual.
    pub post_norms: bool,
    /// FFN gate activation.
    pub activation: Activation,
    /// Sliding-window attention on some layers.
    pub sliding: Option<SlidingWindow>,
    /// `logits = cap · tanh(logits / cap)` when set.
    pub final_softcap: Option<f32>,
}

/// Local attention: layers attend only to the last `window` positions (their own included),
/// except every `pattern`-th layer, which is global.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlidingWindow {
    /// Positions a local layer sees.
    pub window: usize,
    /// Layer `l` is global when `l % pattern == pattern - 1`.
    pub pattern: usize,
    /// RoPE base of the local layers.
    pub rope_theta: f32,
}

// `LlamaConfig::from_gguf` lives in `model`: reading GGUF metadata and its `ModelError` belong
// to model loading, and would tie this leaf to the file format.
impl LlamaConfig {
    /// Width of the K (or V) projection.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Width of the Q projection (and of the attention output).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// The attention window of `layer`, if it is a local (sliding-window) layer.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.sliding.filter(|s| layer % s.pattern != s.pattern - 1).map(|s| s.window)
    }
}

/// The geometry of a paged KV cache, wherever it lives (host or device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    /// Layers stored.
    pub layers: usize,
    /// Width of one key (or value) row.
    pub kv_dim: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the cache.
    pub num_blocks: usize,
}

/// Largest number of tokens in one step (bounds scratch memory).
pub const MAX_STEP_TOKENS: usize = 8192;

/// The flattened token rows of a step that need logits, in batch order.
pub(crate) fn logit_rows(batch: &[SeqStep<'_>]) -> Vec<usize> {
    let mut rows = Vec::new();
    let mut r = 0;
    for sq in batch {
        let n = sq.tokens.len();
        match sq.logits {
            LogitsFor::None => {}
            LogitsFor::Last => rows.push(r + n - 1),
            LogitsFor::All => rows.extend(r..r + n),
        }
        r += n;
    }
    rows
}
