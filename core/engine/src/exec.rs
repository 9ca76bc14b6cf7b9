//! [`Executor`]: one driver's KV cache and step buffers on the engine's device, and the one
//! forward-step call that the engine loop and the benchmarks make whatever the device.
//!
//! On the CPU a step returns a logits row per sampled position. On a GPU it returns the greedy
//! choice (and its log-probability) of every sampled position, computed on the device, plus
//! logits rows only for the positions whose sampling needs them on the host.

use crate::device::DeviceError;
use crate::engine::{Backend, Engine};
use crate::kv::{KvCache, KvSizeError};
use crate::model::Scratch;
use crate::step::{CacheShape, SeqStep, StepError};

/// Why an executor could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The host KV cache is too large.
    #[error(transparent)]
    Kv(#[from] KvSizeError),
    /// The device could not hold or start it.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// One sampled position's result.
#[derive(Debug, Clone, Copy)]
pub struct RowOut<'a> {
    /// The greedy choice and its log-softmax, when the device computed it.
    pub greedy: Option<(u32, f32)>,
    /// The raw logits row, when it is on the host.
    pub logits: Option<&'a [f32]>,
}

#[derive(Debug)]
struct CpuExec {
    kv: KvCache,
    scratch: Scratch,
    logits: Vec<f32>,
}

#[derive(Debug)]
enum Inner {
    Cpu(Box<CpuExec>),
    #[cfg(feature = "cuda")]
    Cuda(Box<crate::cuda::CudaExec>),
}

/// A KV cache and step buffers on the engine's device.
#[derive(Debug)]
pub struct Executor {
    inner: Inner,
    shape: CacheShape,
    vocab: usize,
    rows: usize,
}

/// How large an executor's KV cache may be.
#[derive(Debug, Clone, Copy)]
pub struct KvPlan {
    /// Tokens per block.
    pub block_size: usize,
    /// At most this many blocks (on a GPU, fewer if free memory holds fewer).
    pub max_blocks: usize,
    /// Largest step, in tokens (sizes device step buffers).
    pub max_step_tokens: usize,
    /// Share of free device memory the KV cache and step buffers may take.
    pub gpu_memory_fraction: f64,
}

impl Executor {
    /// A cache on `engine`'s device.
    pub fn new(engine: &Engine, plan: KvPlan) -> Result<Self, ExecError> {
        let c = &engine.model.cfg;
        let (inner, num_blocks) = match &engine.backend {
            Backend::Cpu => {
                let kv = KvCache::new(c.n_layers, c.n_kv_heads, c.head_dim, plan.block_size, plan.max_blocks)?;
                (Inner::Cpu(Box::new(CpuExec { kv, scratch: Scratch::default(), logits: Vec::new() })), plan.max_blocks)
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda(m) => {
                let e = crate::cuda::CudaExec::new(
                    m.clone(),
                    plan.block_size,
                    plan.max_blocks,
                    plan.max_step_tokens,
                    plan.gpu_memory_fraction,
                )?;
                let n = e.num_blocks();
                (Inner::Cuda(Box::new(e)), n)
            }
        };
        let shape = CacheShape {
            layers: c.n_layers,
            kv_dim: c.kv_dim(),
            head_dim: c.head_dim,
            block_size: plan.block_size,
            num_blocks,
        };
        Ok(Self { inner, shape, vocab: c.vocab, rows: 0 })
    }

    /// Blocks in the cache (on a GPU, possibly fewer than asked for).
    pub fn num_blocks(&self) -> usize {
        self.shape.num_blocks
    }

    /// The cache's geometry.
    pub fn shape(&self) -> CacheShape {
        self.shape
    }

    /// Runs one step. `host_logits(i)` says whether sampled row `i` (in batch order) needs its
    /// raw logits on the host; on the CPU every row has them. Returns the number of sampled rows.
    pub fn forward(
        &mut self,
        engine: &Engine,
        batch: &[SeqStep<'_>],
        host_logits: &dyn Fn(usize) -> bool,
    ) -> Result<usize, StepError> {
        self.rows = 0;
        match &mut self.inner {
            Inner::Cpu(c) => {
                engine.model.forward(&engine.pool, engine.isa, &mut c.kv, batch, &mut c.scratch, &mut c.logits)?;
                let _ = host_logits;
                self.rows = c.logits.len() / self.vocab;
            }
            #[cfg(feature = "cuda")]
            Inner::Cuda(e) => {
                engine.model.validate_shape(self.shape, batch)?;
                e.forward(batch, host_logits)?;
                self.rows = e.greedy.len();
            }
        }
        Ok(self.rows)
    }

    /// Sampled row `i` of the last step.
    pub fn row(&self, i: usize) -> RowOut<'_> {
        debug_assert!(i < self.rows);
        match &self.inner {
            Inner::Cpu(c) => RowOut { greedy: None, logits: c.logits.get(i * self.vocab..(i + 1) * self.vocab) },
            #[cfg(feature = "cuda")]
            Inner::Cuda(e) => RowOut {
                greedy: e.greedy.get(i).copied(),
                logits: e
                    .host_row
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|r| e.host_logits.get(r * self.vocab..(r + 1) * self.vocab)),
            },
        }
    }

    /// Where it runs, for logs and benchmark reports.
    pub fn describe(&self, engine: &Engine) -> String {
        match &self.inner {
            Inner::Cpu(_) => format!("cpu ({}, {} threads)", engine.isa.name(), engine.pool.n_threads()),
            #[cfg(feature = "cuda")]
            Inner::Cuda(e) => format!("cuda ({}, {} KV blocks)", e.device_name(), e.num_blocks()),
        }
    }
}
