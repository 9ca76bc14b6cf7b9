//! The Llama-architecture forward pass over a batch of sequences with a paged KV cache.
//!
//! One [`Model::forward`] call runs a step: the tokens of every sequence in the batch (prefill
//! chunks and single decode tokens alike) are flattened into one activation matrix so each
//! weight matrix is read once per step, attention walks each sequence's block table, and logits
//! are produced only for the positions that asked for them. Hyperparameters come from GGUF
//! metadata; nothing about SmolLM2 is hard-coded.

use crate::attention;
use crate::gguf::{Gguf, GgufError, GgufHeader};
use crate::kernels::{self, Isa, par_rows};
use crate::kv::KvCache;
use crate::quant::{self, PackedKind, PackedMatrix, QK, QK_K, QuantError, QuantizedActs};
use crate::row_writers::RowsMut;
use crate::step::logit_rows;
use crate::threadpool::ThreadPool;

// The step types live in the leaf `step`, so that the modules this one builds on (kernels,
// attention, the KV cache) need not import it; these re-exports are their public paths.
pub use crate::step::{
    Activation, Arch, CacheShape, LlamaConfig, LogitsFor, MAX_STEP_TOKENS, SeqStep, SlidingWindow, StepError,
};

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is not a readable GGUF.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A weight has an unsupported type or the wrong shape.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The architecture is not one we run.
    #[error("general.architecture is {0:?}; supported: \"llama\", \"gemma3\"")]
    Architecture(String),
    /// A hyperparameter is missing or out of range.
    #[error("{key} is {value}: {reason}")]
    Hyperparameter {
        /// The metadata key.
        key: String,
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A required tensor is absent.
    #[error("tensor {0} is missing")]
    MissingTensor(String),
}

// Defined here rather than beside the struct in `step`: reading GGUF metadata, and failing with a
// `ModelError`, is part of loading a model.
impl LlamaConfig {
    /// Reads the hyperparameters of a `llama` or `gemma3` GGUF.
    pub fn from_gguf(h: &GgufHeader) -> Result<Self, ModelError> {
        let arch_name = h.str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            other => return Err(ModelError::Architecture(other.into())),
        };
        let arch_name = arch.name();
        let get = |k: &str, lo: u64, hi: u64| -> Result<usize, ModelError> {
            let key = format!("{arch_name}.{k}");
            let v = h.u64(&key)?;
            if v < lo || v > hi {
                return Err(ModelError::Hyperparameter {
                    key,
                    value: v.to_string(),
                    reason: "out of the supported range",
                });
            }
            Ok(v as usize)
        };
        let opt = |k: &str, lo: u64, hi: u64| -> Result<Option<usize>, ModelError> {
            match h.opt_u64(&format!("{arch_name}.{k}"))? {
                None => Ok(None),
                Some(_) => get(k, lo, hi).map(Some),
            }
        };
        let opt_f32 = |k: &str| -> Result<Option<f32>, ModelError> {
            let key = format!("{arch_name}.{k}");
            match h.get(&key) {
                None => Ok(None),
                Some(_) => Ok(Some(h.f32(&key)?)),
            }
        };
        let n_layers = get("block_count", 1, 1024)?;
        let dim = get("embedding_length", 32, 65536)?;
        let n_heads = get("attention.head_count", 1, 1024)?;
        let n_kv_heads = opt("attention.head_count_kv", 1, 1024)?.unwrap_or(n_heads);
        let ffn_dim = get("feed_forward_length", 32, 1 << 20)?;
        let ctx_len = get("context_length", 1, 1 << 22)?;
        let tokens = h.array("tokenizer.ggml.tokens").map(|a| a.len()).unwrap_or(0);
        let vocab = match h.opt_u64(&format!("{arch_name}.vocab_size"))? {
            Some(v) => v as usize,
            None => tokens,
        };
        let bad = |key: &str, value: String, reason| ModelError::Hyperparameter {
            key: format!("{arch_name}.{key}"),
            value,
            reason,
        };
        if n_heads % n_kv_heads != 0 {
            return Err(bad("attention.head_count_kv", n_kv_heads.to_string(), "does not divide attention.head_count"));
        }
        // Gemma's heads are wider than dim / heads; the file says so with key_length.
        let head_dim = match opt("attention.key_length", 16, 1024)? {
            Some(k) => k,
            None if dim % n_heads != 0 => {
                return Err(bad("embedding_length", dim.to_string(), "not a multiple of attention.head_count"));
            }
            None => dim / n_heads,
        };
        if let Some(v) = opt("attention.value_length", 1, 1024)?
            && v != head_dim
        {
            return Err(bad("attention.value_length", v.to_string(), "must equal attention.key_length"));
        }
        if head_dim % 16 != 0 || dim % 32 != 0 || ffn_dim % 32 != 0 {
            return Err(bad(
                "embedding_length",
                dim.to_string(),
                "head size must be a multiple of 16 and widths of 32",
            ));
        }
        let rope_dim = match h.opt_u64(&format!("{arch_name}.rope.dimension_count"))? {
            None => head_dim,
            Some(d) if d as usize <= head_dim && d % 2 == 0 => d as usize,
            Some(d) => {
                return Err(bad("rope.dimension_count", d.to_string(), "must be even and at most the head size"));
            }
        };
        let rope_theta = opt_f32("rope.freq_base")?.unwrap_or(10000.0);
        let rms_eps = h.f32(&format!("{arch_name}.attention.layer_norm_rms_epsilon"))?;
        // RoPE scaling (linear, YaRN, Llama 3 frequency factors) changes positions' angles; until it
        // is implemented such models are refused rather than run with wrong logits.
        if let Some(kind) = h.opt_str(&format!("{arch_name}.rope.scaling.type"))?.filter(|k| *k != "none") {
            return Err(bad("rope.scaling.type", kind.to_string(), "RoPE scaling is not supported yet"));
        }
        if let Some(f) = opt_f32("rope.scaling.factor")?.filter(|f| *f != 1.0) {
            return Err(bad("rope.scaling.factor", f.to_string(), "RoPE scaling is not supported yet"));
        }
        if !(rope_theta.is_finite() && rope_theta > 1.0) {
            return Err(bad("rope.freq_base", rope_theta.to_string(), "must be a finite number above 1"));
        }
        if !(rms_eps.is_finite() && rms_eps > 0.0 && rms_eps < 1.0) {
            return Err(bad("attention.layer_norm_rms_epsilon", rms_eps.to_string(), "must be in (0, 1)"));
        }
        if vocab == 0 || vocab > 1 << 22 {
            return Err(bad("vocab_size", vocab.to_string(), "must be in 1..=4194304"));
        }
        let final_softcap = opt_f32("final_logit_softcapping")?;
        if let Some(c) = final_softcap
            && !(c.is_finite() && c > 0.0)
        {
            return Err(bad("final_logit_softcapping", c.to_string(), "must be a finite positive number"));
        }
        if let Some(c) = opt_f32("attn_logit_softcapping")? {
            return Err(bad("attn_logit_softcapping", c.to_string(), "attention soft-capping is not supported yet"));
        }
        let mut cfg = Self {
            arch,
            n_layers,
            dim,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab,
            ctx_len,
            rope_theta,
            rope_dim,
            rms_eps,
            rope_neox: false,
            embed_scale: 1.0,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            qk_norm: false,
            post_norms: false,
            activation: Activation::Silu,
            sliding: None,
            final_softcap,
        };
        if arch == Arch::Gemma3 {
            cfg.rope_neox = true;
            cfg.embed_scale = (dim as f32).sqrt();
            cfg.qk_norm = true;
            cfg.post_norms = true;
            cfg.activation = Activation::GeluTanh;
            // The window comes from the file; the 5-local-to-1-global pattern and the local
            // layers' RoPE base are Gemma 3's constants (llama.cpp hard-codes them too).
            if let Some(window) = opt("attention.sliding_window", 1, 1 << 22)? {
                let pattern = opt("attention.sliding_window_pattern", 1, 1024)?.unwrap_or(6);
                cfg.sliding = Some(SlidingWindow { window, pattern, rope_theta: 10000.0 });
            }
        }
        Ok(cfg)
    }
}

/// A linear layer: one packed matrix, or several written side by side when the fused parts
/// have different storage types.
#[derive(Debug)]
pub(crate) struct Linear {
    pub(crate) parts: Vec<PackedMatrix>,
    pub(crate) n: usize,
}

impl Linear {
    fn load(g: &Gguf, names: &[String], k: usize, ns: &[usize]) -> Result<Self, ModelError> {
        let infos = names
            .iter()
            .map(|n| g.header().tensor(n).ok_or_else(|| ModelError::MissingTensor(n.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        for (info, &n) in infos.iter().zip(ns) {
            if info.dims != [k as u64, n as u64] {
                return Err(QuantError::Shape {
                    tensor: info.name.clone(),
                    expected: vec![k as u64, n as u64],
                    found: info.dims.clone(),
                }
                .into());
            }
        }
        let total: usize = ns.iter().sum();
        // Fusing the parts lets one kernel launch (one barrier) cover q/k/v or gate/up.
        if infos.iter().all(|i| i.ty == infos[0].ty) {
            let bytes: Vec<u8> = infos.iter().flat_map(|i| g.data(i).iter().copied()).collect();
            let m = PackedMatrix::from_rows(infos[0].ty, &bytes, k, total)
                .ok_or_else(|| QuantError::Unsupported { tensor: infos[0].name.clone(), ty: infos[0].ty })?;
            return Ok(Self { parts: vec![m], n: total });
        }
        let parts = infos
            .iter()
            .zip(ns)
            .map(|(i, &n)| PackedMatrix::from_tensor(i, g.data(i), k, n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { parts, n: total })
    }

    /// `y = W·x`, each part into its columns of `y` (rows of `self.n`).
    fn forward(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        xf: &[f32],
        xq: &QuantizedActs,
        xq_k: &mut QuantizedActs,
        y: &mut [f32],
    ) {
        let mut col = 0;
        for p in &self.parts {
            matmul(pool, isa, p, xf, xq, xq_k, &mut y[col..], self.n);
            col += p.n;
        }
    }
}

/// `y = W·x` with the activations quantized the way `w`'s kernel wants them: `xq` holds `xf`
/// per 32 elements; K-quant weights (see [`PackedMatrix::act_block`]) get `xf` quantized per
/// 256 into `xq_k` first.
#[allow(clippy::too_many_arguments)]
fn matmul(
    pool: &ThreadPool,
    isa: Isa,
    w: &PackedMatrix,
    xf: &[f32],
    xq: &QuantizedActs,
    xq_k: &mut QuantizedActs,
    y: &mut [f32],
    ldy: usize,
) {
    let acts = if w.act_block == QK_K && w.kind != PackedKind::F32 {
        quantize_rows_by(pool, xf, xq_k, xq.t, w.k, &quant::quantize_row_k);
        &*xq_k
    } else {
        xq
    };
    kernels::matmul(pool, isa, w, xf, acts, y, ldy);
}

#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) wqkv: Linear,
    pub(crate) wo: Linear,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) w_gate_up: Linear,
    pub(crate) w_down: Linear,
    /// Per-head query and key norms (`qk_norm`).
    pub(crate) qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Norms of the attention and FFN outputs (`post_norms`).
    pub(crate) post_norm: Option<(Vec<f32>, Vec<f32>)>,
}

/// A loaded model: weights packed for the CPU kernels.
#[derive(Debug)]
pub struct Model {
    /// Hyperparameters.
    pub cfg: LlamaConfig,
    pub(crate) embed: PackedMatrix,
    pub(crate) output: Option<Linear>,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) inv_freq: Vec<f64>,
    /// RoPE inverse frequencies of the sliding-window layers, when their base differs.
    pub(crate) inv_freq_local: Option<Vec<f64>>,
}

fn norm_weights(g: &Gguf, name: &str, dim: usize) -> Result<Vec<f32>, ModelError> {
    let info = g.header().tensor(name).ok_or_else(|| ModelError::MissingTensor(name.into()))?;
    let m = PackedMatrix::from_tensor(info, g.data(info), dim, 1).or_else(|_| {
        // Norm weights are 1-D; accept `[dim]` as well as `[dim, 1]`.
        if info.dims == [dim as u64] {
            PackedMatrix::from_rows(info.ty, g.data(info), dim, 1)
                .ok_or(QuantError::Unsupported { tensor: name.into(), ty: info.ty })
        } else {
            Err(QuantError::Shape { tensor: name.into(), expected: vec![dim as u64], found: info.dims.clone() })
        }
    })?;
    let mut out = vec![0f32; dim];
    m.dequantize_row(0, &mut out);
    Ok(out)
}

/// Reusable per-step buffers, so a decode step allocates nothing of size `dim` or more.
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    ffn: Vec<f32>,
    act: Vec<f32>,
    xq: QuantizedActs,
    /// Per-256 activations for K-quant weights.
    xq_k: QuantizedActs,
    rope: Vec<(f32, f32)>,
    rope_local: Vec<(f32, f32)>,
}

impl Model {
    /// Loads and packs every weight of a `llama` or `gemma3` GGUF.
    pub fn load(g: &Gguf) -> Result<Self, ModelError> {
        let cfg = LlamaConfig::from_gguf(g.header())?;
        let (dim, kv, ffn, qd) = (cfg.dim, cfg.kv_dim(), cfg.ffn_dim, cfg.q_dim());
        if g.header().tensor("rope_freqs.weight").is_some() {
            return Err(ModelError::Hyperparameter {
                key: "rope_freqs.weight".into(),
                value: "present".into(),
                reason: "RoPE frequency factors are not supported yet",
            });
        }
        let embed_info = g
            .header()
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let embed = PackedMatrix::from_tensor(embed_info, g.data(embed_info), dim, cfg.vocab)?;
        let output = match g.header().tensor("output.weight") {
            Some(_) => Some(Linear::load(g, &["output.weight".into()], dim, &[cfg.vocab])?),
            None => None,
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let t = |s: &str| format!("blk.{l}.{s}.weight");
            let pair = |a: &str, b: &str, n: usize| -> Result<_, ModelError> {
                Ok((norm_weights(g, &t(a), n)?, norm_weights(g, &t(b), n)?))
            };
            layers.push(Layer {
                attn_norm: norm_weights(g, &t("attn_norm"), dim)?,
                wqkv: Linear::load(g, &[t("attn_q"), t("attn_k"), t("attn_v")], dim, &[qd, kv, kv])?,
                wo: Linear::load(g, &[t("attn_output")], qd, &[dim])?,
                ffn_norm: norm_weights(g, &t("ffn_norm"), dim)?,
                w_gate_up: Linear::load(g, &[t("ffn_gate"), t("ffn_up")], dim, &[ffn, ffn])?,
                w_down: Linear::load(g, &[t("ffn_down")], ffn, &[dim])?,
                qk_norm: cfg.qk_norm.then(|| pair("attn_q_norm", "attn_k_norm", cfg.head_dim)).transpose()?,
                post_norm: cfg.post_norms.then(|| pair("post_attention_norm", "post_ffw_norm", dim)).transpose()?,
            });
        }
        let output_norm = norm_weights(g, "output_norm.weight", dim)?;
        let freqs = |theta: f32| -> Vec<f64> {
            (0..cfg.rope_dim / 2).map(|i| f64::from(theta).powf(-2.0 * i as f64 / cfg.rope_dim as f64)).collect()
        };
        let inv_freq = freqs(cfg.rope_theta);
        let inv_freq_local = cfg.sliding.filter(|s| s.rope_theta != cfg.rope_theta).map(|s| freqs(s.rope_theta));
        Ok(Self { cfg, embed, output, output_norm, layers, inv_freq, inv_freq_local })
    }

    /// Checks a step against the model and cache without touching either.
    pub fn validate(&self, kv: &KvCache, batch: &[SeqStep<'_>]) -> Result<usize, StepError> {
        self.validate_shape(kv.shape(), batch)
    }

    /// Checks a step against the model and a cache of the given geometry; the number of tokens.
    pub fn validate_shape(&self, kv: CacheShape, batch: &[SeqStep<'_>]) -> Result<usize, StepError> {
        let c = &self.cfg;
        if kv.layers < c.n_layers || kv.kv_dim != c.kv_dim() || kv.head_dim != c.head_dim {
            return Err(StepError::CacheMismatch {
                layers: kv.layers,
                kv_dim: kv.kv_dim,
                head_dim: kv.head_dim,
                want_layers: c.n_layers,
                want_kv_dim: c.kv_dim(),
                want_head_dim: c.head_dim,
            });
        }
        let mut total = 0;
        for (seq, s) in batch.iter().enumerate() {
            if s.tokens.is_empty() {
                return Err(StepError::EmptySequence { seq });
            }
            if let Some((index, &id)) = s.tokens.iter().enumerate().find(|(_, id)| **id as usize >= self.cfg.vocab) {
                return Err(StepError::BadToken { seq, index, id, vocab: self.cfg.vocab });
            }
            let end = s.pos.saturating_add(s.tokens.len());
            if end > self.cfg.ctx_len {
                return Err(StepError::ContextOverflow { seq, end, limit: self.cfg.ctx_len });
            }
            let need = end.div_ceil(kv.block_size);
            if s.blocks.len() < need {
                return Err(StepError::BlockTableShort { seq, have: s.blocks.len(), need, end });
            }
            if let Some(&block) = s.blocks[..need].iter().find(|b| **b as usize >= kv.num_blocks) {
                return Err(StepError::BadBlock { seq, block, num_blocks: kv.num_blocks });
            }
            total += s.tokens.len();
        }
        if total > MAX_STEP_TOKENS {
            return Err(StepError::TooManyTokens { tokens: total, limit: MAX_STEP_TOKENS });
        }
        Ok(total)
    }

    /// Runs one step. `logits` receives one row of `vocab` floats per requested position, in
    /// batch order (per sequence: the last token, or all tokens, as asked).
    pub fn forward(
        &self,
        pool: &ThreadPool,
        isa: Isa,
        kv: &mut KvCache,
        batch: &[SeqStep<'_>],
        scratch: &mut Scratch,
        logits: &mut Vec<f32>,
    ) -> Result<(), StepError> {
        isa.assert_supported();
        let t = self.validate(kv, batch)?;
        logits.clear();
        if t == 0 {
            return Ok(());
        }
        let c = &self.cfg;
        let (dim, kvd, hd, qd) = (c.dim, c.kv_dim(), c.head_dim, c.q_dim());
        let qkv_w = qd + 2 * kvd;
        let s = scratch;
        s.x.resize(t * dim, 0.0);
        s.xn.resize(t * dim, 0.0);
        s.qkv.resize(t * qkv_w, 0.0);
        s.attn.resize(t * qd, 0.0);
        s.proj.resize(t * dim, 0.0);
        s.ffn.resize(t * 2 * c.ffn_dim, 0.0);
        s.act.resize(t * c.ffn_dim, 0.0);

        // Token positions and their sequences, flattened.
        let mut positions = Vec::with_capacity(t);
        let mut row = 0;
        for sq in batch {
            for (i, &tok) in sq.tokens.iter().enumerate() {
                let x = &mut s.x[row * dim..][..dim];
                self.embed.dequantize_row(tok as usize, x);
                if c.embed_scale != 1.0 {
                    x.iter_mut().for_each(|v| *v *= c.embed_scale);
                }
                positions.push(sq.pos + i);
                row += 1;
            }
        }
        let angles = |table: &mut Vec<(f32, f32)>, inv_freq: &[f64]| {
            table.clear();
            for &p in &positions {
                table.extend(inv_freq.iter().map(|f| {
                    let th = p as f64 * f;
                    (th.cos() as f32, th.sin() as f32)
                }));
            }
        };
        angles(&mut s.rope, &self.inv_freq);
        if let Some(local) = &self.inv_freq_local {
            angles(&mut s.rope_local, local);
        }

        let f = c.ffn_dim;
        let half = c.rope_dim / 2;
        for (li, layer) in self.layers.iter().enumerate() {
            // Residual from the previous layer's FFN, then norm and quantize, row-parallel.
            let pending = li > 0;
            residual_norm_quantize(
                pool,
                isa,
                &mut s.x,
                pending.then_some(&s.proj[..]),
                &layer.attn_norm,
                c.rms_eps,
                &mut s.xn,
                &mut s.xq,
                t,
            );
            layer.wqkv.forward(pool, isa, &s.xn, &s.xq, &mut s.xq_k, &mut s.qkv);
            {
                let window = c.window(li);
                let rope = if window.is_some() && self.inv_freq_local.is_some() { &s.rope_local } else { &s.rope };
                let rows = RowsMut::new(&mut s.qkv, qkv_w);
                let qk_norm = layer.qk_norm.as_ref();
                par_rows(pool, t, &|r| {
                    // SAFETY: one row per call.
                    #[allow(unsafe_code)]
                    let row = unsafe { rows.get(r) };
                    let cs = &rope[r * half..][..half];
                    for (h, head) in row[..qd + kvd].chunks_exact_mut(hd).enumerate() {
                        if let Some((qn, kn)) = qk_norm {
                            rms_norm_in_place(head, if h < c.n_heads { qn } else { kn }, c.rms_eps);
                        }
                        rope_head(&mut head[..c.rope_dim], cs, c.rope_neox);
                    }
                });
            }
            // Write this step's keys and values before attending, so a chunk sees itself.
            let mut r = 0;
            for sq in batch {
                for i in 0..sq.tokens.len() {
                    let row = &s.qkv[r * qkv_w..][..qkv_w];
                    kv.write(li, sq.blocks, sq.pos + i, &row[qd..qd + kvd], &row[qd + kvd..]);
                    r += 1;
                }
            }
            attention::LayerAttention {
                cfg: &self.cfg,
                pool,
                isa,
                kv,
                layer: li,
                window: c.window(li),
                batch,
                qkv: &s.qkv,
            }
            .run(&mut s.attn);
            quantize_rows(pool, isa, &s.attn, &mut s.xq, t, qd);
            layer.wo.forward(pool, isa, &s.attn, &s.xq, &mut s.xq_k, &mut s.proj);
            if let Some((post_attn, _)) = &layer.post_norm {
                norm_rows(pool, &mut s.proj, post_attn, c.rms_eps, t);
            }
            residual_norm_quantize(
                pool,
                isa,
                &mut s.x,
                Some(&s.proj),
                &layer.ffn_norm,
                c.rms_eps,
                &mut s.xn,
                &mut s.xq,
                t,
            );
            layer.w_gate_up.forward(pool, isa, &s.xn, &s.xq, &mut s.xq_k, &mut s.ffn);
            {
                s.xq.set_shape(t, f);
                let nb = f / QK;
                let (q, d, sm) = s.xq.parts_mut();
                let (act, qr, dr, sr) =
                    (RowsMut::new(&mut s.act, f), RowsMut::new(q, f), RowsMut::new(d, nb), RowsMut::new(sm, nb));
                let ffn = &s.ffn;
                let activation = c.activation;
                par_rows(pool, t, &|r| {
                    // SAFETY: one row per call.
                    #[allow(unsafe_code)]
                    let (a, q, d, sm) = unsafe { (act.get(r), qr.get(r), dr.get(r), sr.get(r)) };
                    let gu = &ffn[r * 2 * f..][..2 * f];
                    for ((o, &g), &u) in a.iter_mut().zip(&gu[..f]).zip(&gu[f..]) {
                        *o = match activation {
                            Activation::Silu => g / (1.0 + (-g).exp()) * u,
                            Activation::GeluTanh => gelu_tanh(g) * u,
                        };
                    }
                    kernels::quantize_row(isa, a, q, d, sm);
                });
            }
            layer.w_down.forward(pool, isa, &s.act, &s.xq, &mut s.xq_k, &mut s.proj);
            if let Some((_, post_ffn)) = &layer.post_norm {
                norm_rows(pool, &mut s.proj, post_ffn, c.rms_eps, t);
            }
        }
        for (x, p) in s.x.iter_mut().zip(&s.proj) {
            *x += p;
        }

        // Logits only for the rows that asked.
        let rows = logit_rows(batch);
        if rows.is_empty() {
            return Ok(());
        }
        let mut sel = Vec::with_capacity(rows.len() * dim);
        for &r in &rows {
            sel.extend_from_slice(&s.x[r * dim..][..dim]);
        }
        let mut normed = vec![0f32; sel.len()];
        rms_norm(&sel, &self.output_norm, c.rms_eps, &mut normed);
        quantize_rows(pool, isa, &normed, &mut s.xq, rows.len(), dim);
        logits.resize(rows.len() * c.vocab, 0.0);
        match &self.output {
            Some(o) => o.forward(pool, isa, &normed, &s.xq, &mut s.xq_k, logits),
            None => matmul(pool, isa, &self.embed, &normed, &s.xq, &mut s.xq_k, logits, c.vocab),
        }
        if let Some(cap) = c.final_softcap {
            logits.iter_mut().for_each(|z| *z = cap * (*z / cap).tanh());
        }
        Ok(())
    }
}

/// `x += residual` (if any), then `xn = rms_norm(x)` and its quantized form, row by row in parallel.
#[allow(clippy::too_many_arguments)]
fn residual_norm_quantize(
    pool: &ThreadPool,
    isa: Isa,
    x: &mut [f32],
    residual: Option<&[f32]>,
    w: &[f32],
    eps: f32,
    xn: &mut [f32],
    xq: &mut QuantizedActs,
    t: usize,
) {
    let dim = w.len();
    let nb = dim / QK;
    xq.set_shape(t, dim);
    let (q, d, s) = xq.parts_mut();
    let (xr, nr, qr, dr, sr) =
        (RowsMut::new(x, dim), RowsMut::new(xn, dim), RowsMut::new(q, dim), RowsMut::new(d, nb), RowsMut::new(s, nb));
    par_rows(pool, t, &|r| {
        // SAFETY: one row per call.
        #[allow(unsafe_code)]
        let (x, n, q, d, s) = unsafe { (xr.get(r), nr.get(r), qr.get(r), dr.get(r), sr.get(r)) };
        if let Some(res) = residual {
            for (a, b) in x.iter_mut().zip(&res[r * dim..][..dim]) {
                *a += b;
            }
        }
        rms_norm(x, w, eps, n);
        kernels::quantize_row(isa, n, q, d, s);
    });
}

/// Quantizes `t` rows of `x` in parallel.
fn quantize_rows(pool: &ThreadPool, isa: Isa, x: &[f32], xq: &mut QuantizedActs, t: usize, k: usize) {
    quantize_rows_by(pool, x, xq, t, k, &move |x, q, d, s| kernels::quantize_row(isa, x, q, d, s));
}

/// One row's quantization: `(x, q, d, s)` with `d` and `s` per 32-element block.
type RowQuantizer<'a> = dyn Fn(&[f32], &mut [i8], &mut [f32], &mut [f32]) + Sync + 'a;

/// Quantizes `t` rows of `x` with `quantize`, rows in parallel.
fn quantize_rows_by(
    pool: &ThreadPool,
    x: &[f32],
    xq: &mut QuantizedActs,
    t: usize,
    k: usize,
    quantize: &RowQuantizer<'_>,
) {
    let nb = k / QK;
    xq.set_shape(t, k);
    let (q, d, s) = xq.parts_mut();
    let (qr, dr, sr) = (RowsMut::new(q, k), RowsMut::new(d, nb), RowsMut::new(s, nb));
    par_rows(pool, t, &|r| {
        // SAFETY: one row per call.
        #[allow(unsafe_code)]
        let (q, d, s) = unsafe { (qr.get(r), dr.get(r), sr.get(r)) };
        quantize(&x[r * k..][..k], q, d, s);
    });
}

/// Rotates one head's first `rope_dim` elements: adjacent pairs (Llama, as its GGUF permutes
/// q and k for) or the two halves (NeoX, Gemma).
#[inline]
fn rope_head(head: &mut [f32], cs: &[(f32, f32)], neox: bool) {
    let rot = |a: f32, b: f32, (cos, sin): (f32, f32)| (a * cos - b * sin, a * sin + b * cos);
    if neox {
        let (lo, hi) = head.split_at_mut(cs.len());
        for ((a, b), &c) in lo.iter_mut().zip(hi.iter_mut()).zip(cs) {
            (*a, *b) = rot(*a, *b, c);
        }
    } else {
        for (pair, &c) in head.chunks_exact_mut(2).zip(cs) {
            (pair[0], pair[1]) = rot(pair[0], pair[1], c);
        }
    }
}

/// GELU with the tanh approximation, as ggml's `gelu` computes it.
#[inline]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// RMSNorm of every row of `x` in place, rows in parallel.
fn norm_rows(pool: &ThreadPool, x: &mut [f32], w: &[f32], eps: f32, t: usize) {
    let rows = RowsMut::new(x, w.len());
    par_rows(pool, t, &|r| {
        // SAFETY: one row per call.
        #[allow(unsafe_code)]
        let row = unsafe { rows.get(r) };
        rms_norm_in_place(row, w, eps);
    });
}

fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let ss = (x.iter().map(|&v| f64::from(v * v)).sum::<f64>() / x.len() as f64) as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * inv * g;
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        // Sum of squares in f64, as ggml does: the norm feeds every later rounding.
        let ss = (xr.iter().map(|&v| f64::from(v * v)).sum::<f64>() / dim as f64) as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;
    use crate::gguf::tests::Builder;
    use crate::kv::BlockAllocator;
    use crate::quant::tests::{Lcg, random_blocks};

    struct Shape {
        dim: usize,
        heads: usize,
        kv_heads: usize,
        ffn: usize,
        vocab: usize,
        ctx: usize,
    }

    fn f16_bytes(n: usize, rng: &mut Lcg) -> Vec<u8> {
        (0..n).flat_map(|_| half::f16::from_f32(rng.f() * 0.2).to_le_bytes()).collect()
    }

    /// A small random Llama GGUF exercising every weight type and the unfused q/k/v path.
    fn synthetic(s: &Shape, drop: Option<&str>) -> std::path::PathBuf {
        let mut rng = Lcg(0x5eed);
        let kv = s.dim / s.heads * s.kv_heads;
        let mut b = Builder::default();
        b.kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 2)
            .kv_u32("llama.embedding_length", s.dim as u32)
            .kv_u32("llama.feed_forward_length", s.ffn as u32)
            .kv_u32("llama.attention.head_count", s.heads as u32)
            .kv_u32("llama.attention.head_count_kv", s.kv_heads as u32)
            .kv_u32("llama.context_length", s.ctx as u32)
            .kv_u32("llama.vocab_size", s.vocab as u32)
            .kv_f32("llama.rope.freq_base", 10000.0)
            .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
        let ones: Vec<u8> = (0..s.dim).flat_map(|_| 1f32.to_le_bytes()).collect();
        let mut t = |name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>| {
            if drop != Some(name) {
                let id = match ty {
                    GgmlType::F32 => 0,
                    GgmlType::F16 => 1,
                    GgmlType::Q4_0 => 2,
                    GgmlType::Q4_1 => 3,
                    GgmlType::Q8_0 => 8,
                    _ => 30,
                };
                b.tensor(name, dims, id, data);
            }
        };
        let (d, f, v) = (s.dim as u64, s.ffn as u64, s.vocab as u64);
        t("token_embd.weight", &[d, v], GgmlType::Q8_0, random_blocks(GgmlType::Q8_0, s.dim, s.vocab, &mut rng));
        t("output.weight", &[d, v], GgmlType::F16, f16_bytes(s.dim * s.vocab, &mut rng));
        t("output_norm.weight", &[d], GgmlType::F32, ones.clone());
        for l in 0..2 {
            let n = |x: &str| format!("blk.{l}.{x}.weight");
            t(&n("attn_norm"), &[d], GgmlType::F32, ones.clone());
            t(&n("ffn_norm"), &[d], GgmlType::F32, ones.clone());
            t(&n("attn_q"), &[d, d], GgmlType::Q4_0, random_blocks(GgmlType::Q4_0, s.dim, s.dim, &mut rng));
            t(&n("attn_k"), &[d, kv as u64], GgmlType::Q4_1, random_blocks(GgmlType::Q4_1, s.dim, kv, &mut rng));
            t(&n("attn_v"), &[d, kv as u64], GgmlType::Q4_1, random_blocks(GgmlType::Q4_1, s.dim, kv, &mut rng));
            t(&n("attn_output"), &[d, d], GgmlType::Q4_1, random_blocks(GgmlType::Q4_1, s.dim, s.dim, &mut rng));
            t(&n("ffn_gate"), &[d, f], GgmlType::Q8_0, random_blocks(GgmlType::Q8_0, s.dim, s.ffn, &mut rng));
            t(&n("ffn_up"), &[d, f], GgmlType::Q8_0, random_blocks(GgmlType::Q8_0, s.dim, s.ffn, &mut rng));
            let bf: Vec<u8> =
                (0..s.ffn * s.dim).flat_map(|_| half::bf16::from_f32(rng.f() * 0.1).to_le_bytes()).collect();
            t(&n("ffn_down"), &[f, d], GgmlType::BF16, bf);
        }
        let dir = std::env::temp_dir().join(format!("chorus-synth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Tests run in parallel threads of one process and load the same shapes: each write gets
        // its own file, so no test reads a file another is still truncating and rewriting.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("m{}-{}-{}-{n}.gguf", s.dim, s.heads, drop.unwrap_or("full").replace('.', "_")));
        std::fs::write(&path, b.build()).unwrap();
        path
    }

    fn load(s: &Shape) -> Model {
        Model::load(&Gguf::open(&synthetic(s, None)).unwrap()).unwrap()
    }

    /// Fused attention (head 64) and the portable path (head 32).
    const SHAPES: [Shape; 2] = [
        Shape { dim: 128, heads: 2, kv_heads: 1, ffn: 96, vocab: 64, ctx: 1100 },
        Shape { dim: 64, heads: 2, kv_heads: 2, ffn: 64, vocab: 40, ctx: 1100 },
    ];

    struct Run<'m> {
        m: &'m Model,
        pool: ThreadPool,
        kv: KvCache,
        alloc: BlockAllocator,
        scratch: Scratch,
    }

    impl<'m> Run<'m> {
        fn new(m: &'m Model) -> Self {
            let c = &m.cfg;
            Self {
                m,
                pool: ThreadPool::new(2),
                kv: KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, 16, 256).unwrap(),
                alloc: BlockAllocator::new(256, 16),
                scratch: Scratch::default(),
            }
        }
        fn table(&mut self, n: usize) -> Vec<u32> {
            let mut t = Vec::new();
            assert!(self.alloc.ensure(&mut t, n));
            t
        }
        fn step(&mut self, isa: Isa, steps: &[SeqStep<'_>]) -> Result<Vec<f32>, StepError> {
            let mut out = Vec::new();
            self.m.forward(&self.pool, isa, &mut self.kv, steps, &mut self.scratch, &mut out)?;
            Ok(out)
        }
    }

    fn toks(n: usize, seed: u32, vocab: usize) -> Vec<u32> {
        (0..n as u32).map(|i| (i * 31 + seed * 7) % vocab as u32).collect()
    }

    #[test]
    fn long_prompts_are_batch_and_chunk_invariant() {
        // 600 positions span two attention segments: decode alone spreads them over threads,
        // decode beside a 40-token prefill does not; both must give the same bits.
        for s in &SHAPES {
            let m = load(s);
            let isa = Isa::detect();
            let p = toks(600, 1, s.vocab);
            let mut a = Run::new(&m);
            let ta = a.table(601);
            a.step(isa, &[SeqStep { tokens: &p, pos: 0, blocks: &ta, logits: LogitsFor::None }]).unwrap();
            let alone =
                a.step(isa, &[SeqStep { tokens: &[3], pos: 600, blocks: &ta, logits: LogitsFor::Last }]).unwrap();
            assert!(alone.iter().all(|v| v.is_finite()));

            let mut b = Run::new(&m);
            let tb = b.table(601);
            for (i, c) in p.chunks(128).enumerate() {
                b.step(isa, &[SeqStep { tokens: c, pos: i * 128, blocks: &tb, logits: LogitsFor::None }]).unwrap();
            }
            let other = toks(40, 9, s.vocab);
            let to = b.table(40);
            let both = b
                .step(
                    isa,
                    &[
                        SeqStep { tokens: &other, pos: 0, blocks: &to, logits: LogitsFor::All },
                        SeqStep { tokens: &[3], pos: 600, blocks: &tb, logits: LogitsFor::Last },
                    ],
                )
                .unwrap();
            assert_eq!(both.len(), 41 * s.vocab);
            assert_eq!(&both[40 * s.vocab..], &alone[..], "dim {}", s.dim);
        }
    }

    #[test]
    fn scalar_and_simd_agree_on_a_small_model() {
        for s in &SHAPES {
            let m = load(s);
            let p = toks(70, 2, s.vocab);
            let mut out = Vec::new();
            for isa in Isa::available() {
                let mut r = Run::new(&m);
                let t = r.table(70);
                out.push(r.step(isa, &[SeqStep { tokens: &p, pos: 0, blocks: &t, logits: LogitsFor::Last }]).unwrap());
            }
            let scale = out[0].iter().fold(0f32, |a, v| a.max(v.abs()));
            for o in &out[1..] {
                let diff = o.iter().zip(&out[0]).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(diff <= 0.05 * scale, "dim {}: max diff {diff} of {scale}", s.dim);
            }
        }
    }

    #[test]
    fn bad_steps_are_typed_errors() {
        let s = &SHAPES[0];
        let m = load(s);
        let mut r = Run::new(&m);
        let t = r.table(32);
        let isa = Isa::detect();
        fn one<'a>(tokens: &'a [u32], pos: usize, blocks: &'a [u32]) -> Vec<SeqStep<'a>> {
            vec![SeqStep { tokens, pos, blocks, logits: LogitsFor::Last }]
        }
        assert!(matches!(r.step(isa, &one(&[64], 0, &t)), Err(StepError::BadToken { id: 64, vocab: 64, .. })));
        assert!(matches!(r.step(isa, &one(&[], 0, &t)), Err(StepError::EmptySequence { seq: 0 })));
        assert!(matches!(r.step(isa, &one(&[1], 1100, &t)), Err(StepError::ContextOverflow { limit: 1100, .. })));
        assert!(matches!(r.step(isa, &one(&[1], 40, &t)), Err(StepError::BlockTableShort { need: 3, have: 2, .. })));
        assert!(matches!(r.step(isa, &one(&[1], 0, &[999])), Err(StepError::BadBlock { block: 999, .. })));
        let mut wrong = KvCache::new(2, 2, 64, 16, 4).unwrap();
        let mut out = Vec::new();
        let err = m.forward(&r.pool, isa, &mut wrong, &one(&[1], 0, &[0]), &mut r.scratch, &mut out).unwrap_err();
        assert!(matches!(err, StepError::CacheMismatch { .. }), "{err}");
        let e = r.step(isa, &one(&[64], 0, &t)).unwrap_err().to_string();
        assert!(e.contains("tokens[0]") && e.contains("64"), "{e}");
    }

    #[test]
    fn unknown_architectures_are_refused_by_name() {
        let mut b = Builder::default();
        b.kv_str("general.architecture", "mamba");
        let path = std::env::temp_dir().join(format!("chorus-arch-{}.gguf", std::process::id()));
        std::fs::write(&path, b.build()).unwrap();
        let e = Model::load(&Gguf::open(&path).unwrap()).unwrap_err();
        assert!(matches!(&e, ModelError::Architecture(a) if a == "mamba"), "{e}");
        assert!(e.to_string().contains("gemma3"), "the message lists what is supported: {e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn missing_tensors_are_named() {
        let s = &SHAPES[1];
        let g = Gguf::open(&synthetic(s, Some("blk.1.ffn_up.weight"))).unwrap();
        let e = Model::load(&g).unwrap_err().to_string();
        assert!(e.contains("blk.1.ffn_up.weight") && e.contains("missing"), "{e}");
    }
}
