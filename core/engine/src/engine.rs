//! A loaded model ready to serve: weights, tokenizer, chat template, kernels and threads, plus
//! a single-sequence [`Session`] for drivers that run one conversation at a time (the CLI, tests,
//! benchmarks). Multi-sequence serving drives [`Model::forward`] through the scheduler instead.

use std::path::Path;
use std::sync::Arc;

use crate::chat_template::{ChatMessage, ChatTemplate, TemplateError};
use crate::constraint::{ConstraintError, Constraints};
use crate::device::{DeviceError, DeviceSpec};
use crate::gguf::{Gguf, GgufError};
use crate::kernels::Isa;
use crate::kv::{BlockAllocator, KvCache, KvSizeError};
use crate::model::{Model, ModelError, Scratch};
use crate::sampler::{Sampled, Sampler, SamplingError, SamplingParams, StopMatcher};
use crate::step::{Arch, LogitsFor, SeqStep, StepError};
use crate::threadpool::{ComputePriority, ThreadPool};
use crate::tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerSpec};

/// The turn format of Gemma 3 checkpoints whose GGUF carries no chat template.
pub const GEMMA3_TEMPLATE: &str = include_str!("templates/gemma3.jinja");

/// Tokens per KV block.
pub const BLOCK_SIZE: usize = 16;

/// How to run a model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Compute threads (the caller's thread included).
    pub threads: usize,
    /// Kernel instruction set; `None` picks the best this CPU has.
    pub isa: Option<Isa>,
    /// Where the forward pass of served sequences runs.
    pub device: DeviceSpec,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            isa: None,
            device: DeviceSpec::Cpu,
        }
    }
}

/// The device an [`Engine`]'s served steps run on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The CPU kernels.
    Cpu,
    /// A GPU, with the weights uploaded.
    #[cfg(feature = "cuda")]
    Cuda(std::sync::Arc<crate::cuda::CudaModel>),
}

/// Why an engine could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is unreadable or malformed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The weights are unusable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The vocabulary is unusable.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template does not compile.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// An instruction set this CPU lacks was asked for.
    #[error("instruction set {asked} is not available on this CPU (best: {best})")]
    Isa {
        /// Asked for.
        asked: &'static str,
        /// Available.
        best: &'static str,
    },
    /// A special-token id outside the model's vocabulary.
    #[error("{key} = {id} is outside the model's vocabulary of {vocab}")]
    SpecialToken {
        /// The metadata key.
        key: String,
        /// The id.
        id: u64,
        /// Vocabulary size.
        vocab: usize,
    },
    /// `threads` out of range.
    #[error("threads must be in 1..=256, got {0}")]
    Threads(usize),
    /// The device asked for cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Why a generation failed. Nothing of a failed generation is reported as output.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Bad sampling parameters.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// The prompt could not be tokenized or rendered.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The model has no chat template.
    #[error("the model has no tokenizer.chat_template; pass a raw prompt instead")]
    NoTemplate,
    /// The step was rejected.
    #[error(transparent)]
    Step(#[from] StepError),
    /// An empty prompt.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Prompt plus output does not fit the session.
    #[error("prompt of {prompt} tokens leaves no room in the context of {ctx} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        ctx: usize,
    },
    /// The KV cache could not be allocated.
    #[error(transparent)]
    Kv(#[from] KvSizeError),
    /// The grammar could not be compiled.
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    /// The grammar engine failed mid-generation.
    #[error("constrained decoding failed: {0}")]
    Grammar(String),
}

/// A model with everything needed to turn text into text.
#[derive(Debug)]
pub struct Engine {
    /// The weights and forward pass.
    pub model: Model,
    /// The GGUF's own tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// Grammar compiler and cache for constrained sequences (built on first use).
    pub constraints: Constraints,
    /// The GGUF's own chat template, if it has one.
    pub template: Option<ChatTemplate>,
    /// Compute threads, shared with every engine loaded onto the same pool.
    pub pool: Arc<ThreadPool>,
    /// Kernel instruction set in use.
    pub isa: Isa,
    /// Tokens that end a turn.
    pub stop_ids: Vec<u32>,
    /// Where served steps run ([`crate::exec::Executor`]). [`Session`] always runs on the CPU.
    pub backend: Backend,
    /// Why `auto` fell back to the CPU, if it did.
    pub device_note: Option<String>,
}

impl Engine {
    /// Loads a GGUF model with a compute pool of its own (`opts.threads`).
    pub fn load(path: &Path, opts: &EngineOptions) -> Result<Self, LoadError> {
        Self::load_on(path, opts, Self::compute_pool(opts.threads, ComputePriority::Normal)?)
    }

    /// A compute pool of `threads` (1..=256) for [`Engine::load_on`].
    pub fn compute_pool(threads: usize, priority: ComputePriority) -> Result<Arc<ThreadPool>, LoadError> {
        if threads == 0 || threads > 256 {
            return Err(LoadError::Threads(threads));
        }
        Ok(Arc::new(ThreadPool::with_priority(threads, priority)))
    }

    /// Loads a GGUF model that computes on `pool`, which other engines (other fleets' models)
    /// may share: their loops then take turns by step ([`ThreadPool::step`]) rather than
    /// running more threads than there are cores. `opts.threads` is ignored.
    pub fn load_on(path: &Path, opts: &EngineOptions, pool: Arc<ThreadPool>) -> Result<Self, LoadError> {
        let best = Isa::detect();
        let isa = match opts.isa {
            Some(i) if i > best => {
                return Err(LoadError::Isa { asked: i.name(), best: best.name() });
            }
            Some(i) => i,
            None => best,
        };
        let gguf = Gguf::open(path)?;
        let h = gguf.header();
        let model = Model::load(&gguf)?;
        let vocab = model.cfg.vocab;
        // Special-token ids must name rows of the model's vocabulary.
        let u32_of = |k: &str| -> Result<Option<u32>, LoadError> {
            match h.opt_u64(k)? {
                None => Ok(None),
                Some(v) if (v as usize) < vocab => Ok(Some(v as u32)),
                Some(v) => Err(LoadError::SpecialToken { key: k.to_string(), id: v, vocab }),
            }
        };
        let spec = TokenizerSpec {
            model: h.str("tokenizer.ggml.model")?.to_string(),
            pre: h.opt_str("tokenizer.ggml.pre")?.map(str::to_string),
            tokens: h.string_array("tokenizer.ggml.tokens")?,
            token_types: if h.get("tokenizer.ggml.token_type").is_some() {
                h.i32_array("tokenizer.ggml.token_type")?
            } else {
                Vec::new()
            },
            merges: if h.get("tokenizer.ggml.merges").is_some() {
                h.string_array("tokenizer.ggml.merges")?
            } else {
                Vec::new()
            },
            scores: if h.get("tokenizer.ggml.scores").is_some() {
                h.f32_array("tokenizer.ggml.scores")?
            } else {
                Vec::new()
            },
            bos_id: u32_of("tokenizer.ggml.bos_token_id")?,
            eos_id: u32_of("tokenizer.ggml.eos_token_id")?,
            unk_id: u32_of("tokenizer.ggml.unknown_token_id")?,
            add_bos: h.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            // llama.cpp's default for SentencePiece vocabularies is to add the prefix space.
            add_space_prefix: h.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true),
        };
        let tokenizer = Tokenizer::from_spec(spec)?;
        let text_of = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or("").to_string();
        // A file without a template gets its family's turn format when we know it (Gemma GGUFs
        // converted from base checkpoints carry none).
        let source = match h.opt_str("tokenizer.chat_template")? {
            Some(src) => Some(src),
            None if model.cfg.arch == Arch::Gemma3 => Some(GEMMA3_TEMPLATE),
            None => None,
        };
        let template = match source {
            Some(src) => Some(ChatTemplate::new(src, &text_of(tokenizer.bos_id()), &text_of(tokenizer.eos_id()))?),
            None => None,
        };
        // End of turn: the EOS token, plus the chat-format end marker if the vocabulary has one.
        let mut stop_ids: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        for marker in ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"] {
            if let Some(id) = tokenizer.token_id(marker).filter(|id| !stop_ids.contains(id)) {
                stop_ids.push(id);
            }
        }
        let (backend, device_note) = open_backend(&model, opts.device)?;
        let tokenizer = Arc::new(tokenizer);
        Ok(Self {
            model,
            constraints: Constraints::new(tokenizer.clone(), &stop_ids),
            tokenizer,
            template,
            pool,
            isa,
            stop_ids,
            backend,
            device_note,
        })
    }

    /// Where served steps run, in words.
    pub fn device_name(&self) -> String {
        match &self.backend {
            Backend::Cpu => format!("cpu ({}, {} threads)", self.isa.name(), self.pool.n_threads()),
            #[cfg(feature = "cuda")]
            Backend::Cuda(m) => format!("cuda ({})", m.device_name()),
        }
    }

    /// Renders messages with the chat template and tokenizes the result: control tokens come
    /// only from the template, and every message's content is tokenized as text.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, GenerateError> {
        let t = self.template.as_ref().ok_or(GenerateError::NoTemplate)?;
        let mut r = t.render_spans(messages, true)?;
        // Templates that write `bos_token` themselves would double it when the vocabulary adds
        // BOS on encoding; llama.cpp drops the rendered one, and so do we.
        if let Some(bos) = self.tokenizer.bos_id().filter(|_| self.tokenizer.adds_bos())
            && let Some(text) = self.tokenizer.token_text(bos)
            && !text.is_empty()
            && r.text.starts_with(text)
            && r.content.first().is_none_or(|c| c.start >= text.len())
        {
            r.text.drain(..text.len());
            for c in &mut r.content {
                *c = c.start - text.len()..c.end - text.len();
            }
        }
        Ok(self.tokenizer.encode_chat(&r.text, &r.content)?)
    }

    /// A single-sequence session with room for `ctx` tokens (capped at the model's context).
    pub fn session(&self, ctx: usize) -> Result<Session<'_>, GenerateError> {
        let ctx = ctx.clamp(1, self.model.cfg.ctx_len);
        let blocks = ctx.div_ceil(BLOCK_SIZE);
        let c = &self.model.cfg;
        Ok(Session {
            engine: self,
            kv: KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, BLOCK_SIZE, blocks)?,
            alloc: BlockAllocator::new(blocks, BLOCK_SIZE),
            ctx,
            scratch: Scratch::default(),
        })
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens`, or the context filled up.
    Length,
}

impl FinishReason {
    /// The OpenAI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Prompt token ids.
    pub prompt_ids: Vec<u32>,
    /// Generated ids, including a final end-of-turn token when generation stopped on one.
    pub token_ids: Vec<u32>,
    /// Generated text (special tokens and stop strings not included).
    pub text: String,
    /// One entry per generated token.
    pub logprobs: Vec<Sampled>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// One sequence's KV cache and buffers.
#[derive(Debug)]
pub struct Session<'e> {
    engine: &'e Engine,
    kv: KvCache,
    alloc: BlockAllocator,
    ctx: usize,
    scratch: Scratch,
}

impl Session<'_> {
    /// Generates a continuation of `prompt`; `on_text` receives text as it becomes final.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, GenerateError> {
        let mut sampler = Sampler::new(params)?;
        if let Some(g) = &params.grammar {
            sampler = sampler.with_constraint(Box::new(self.engine.constraints.compile(g)?));
        }
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if prompt.len() >= self.ctx {
            return Err(GenerateError::PromptTooLong { prompt: prompt.len(), ctx: self.ctx });
        }
        let mut table = Vec::new();
        // The session owns every block, so this cannot fail for a prompt shorter than ctx.
        let ok = self.alloc.ensure(&mut table, self.ctx);
        debug_assert!(ok);
        let result = self.run(prompt, &table, &mut sampler, params, on_text);
        self.alloc.release(&mut table);
        result
    }

    fn run(
        &mut self,
        prompt: &[u32],
        table: &[u32],
        sampler: &mut Sampler,
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, GenerateError> {
        let e = self.engine;
        let mut logits = Vec::new();
        let mut decoder = StreamDecoder::new(true);
        let mut stops = StopMatcher::new(&params.stop);
        let mut out = Generation {
            prompt_ids: prompt.to_vec(),
            token_ids: Vec::new(),
            text: String::new(),
            logprobs: Vec::new(),
            finish_reason: FinishReason::Length,
        };
        // Penalties look at a recent window of prompt and output, as llama.cpp does (64 tokens).
        let mut history: Vec<u32> = prompt.to_vec();
        let mut step_tokens: Vec<u32> = prompt.to_vec();
        let mut pos = 0;
        let mut emit = |s: &str, out: &mut Generation| {
            if !s.is_empty() {
                out.text.push_str(s);
                on_text(s);
            }
        };
        while out.token_ids.len() < params.max_tokens as usize {
            if pos + step_tokens.len() > self.ctx {
                break;
            }
            let step = SeqStep { tokens: &step_tokens, pos, blocks: table, logits: LogitsFor::Last };
            e.model.forward(&e.pool, e.isa, &mut self.kv, &[step], &mut self.scratch, &mut logits)?;
            pos += step_tokens.len();
            let window = &history[history.len().saturating_sub(64)..];
            let s = sampler.sample(&logits, window);
            if let Some(why) = sampler.grammar_error() {
                return Err(GenerateError::Grammar(why.to_string()));
            }
            let id = s.id;
            out.token_ids.push(id);
            out.logprobs.push(s);
            history.push(id);
            if e.stop_ids.contains(&id) && !params.ignore_eos {
                out.finish_reason = FinishReason::Stop;
                break;
            }
            let piece = decoder.push(&e.tokenizer, id);
            let so = stops.push(&piece);
            emit(&so.emit, &mut out);
            if sampler.grammar_done() {
                out.finish_reason = FinishReason::Stop;
                break;
            }
            if so.stopped {
                out.finish_reason = FinishReason::Stop;
                return Ok(out);
            }
            step_tokens.clear();
            step_tokens.push(id);
        }
        let tail = decoder.finish();
        let so = stops.push(&tail);
        emit(&so.emit, &mut out);
        if so.stopped {
            out.finish_reason = FinishReason::Stop;
        } else {
            let rest = stops.finish();
            emit(&rest, &mut out);
        }
        Ok(out)
    }
}

/// Opens the device asked for: `cpu` always works, `cuda:N` works or is an error, and `auto`
/// tries GPU 0 and otherwise runs on the CPU with the reason kept.
fn open_backend(model: &Model, spec: DeviceSpec) -> Result<(Backend, Option<String>), DeviceError> {
    match spec {
        DeviceSpec::Cpu => Ok((Backend::Cpu, None)),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(DeviceError::NotBuilt { device: spec }),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Auto => {
            let _ = model;
            Ok((Backend::Cpu, Some("built without the cuda feature".into())))
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => Ok((Backend::Cuda(std::sync::Arc::new(crate::cuda::CudaModel::load(model, n)?)), None)),
        #[cfg(feature = "cuda")]
        DeviceSpec::Auto => match crate::cuda::CudaModel::load(model, 0) {
            Ok(m) => Ok((Backend::Cuda(std::sync::Arc::new(m)), None)),
            Err(e) => Ok((Backend::Cpu, Some(e.to_string()))),
        },
    }
}
