//! [`CudaModel`]: a loaded model's weights dequantized to f16 and uploaded to one GPU, with the
//! kernels compiled for it. Built once per device and shared read-only by every engine loop.

// Uploads and context set-up go through cudarc calls that are unsafe by nature; each use states
// why it is sound.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice};
use half::f16;

use super::{Kernels, call, probe};
use crate::device::DeviceError;
use crate::model::{Linear, Model};
use crate::step::LlamaConfig;

/// Largest head the attention kernel handles (two accumulators per thread of 128).
const MAX_HEAD_DIM: usize = 256;

#[derive(Debug)]
pub(super) struct GpuLayer {
    pub(super) attn_norm: CudaSlice<f32>,
    pub(super) wqkv: CudaSlice<f16>,
    pub(super) wo: CudaSlice<f16>,
    pub(super) ffn_norm: CudaSlice<f32>,
    pub(super) w_gate_up: CudaSlice<f16>,
    pub(super) w_down: CudaSlice<f16>,
}

/// The model's weights on one GPU, and the compiled kernels. Shared (read-only) by every engine
/// loop that runs this model on this device; each loop has its own [`CudaExec`](super::CudaExec).
#[derive(Debug)]
pub struct CudaModel {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) cfg: LlamaConfig,
    pub(super) k: Kernels,
    pub(super) embed: CudaSlice<f32>,
    pub(super) output: CudaSlice<f16>,
    pub(super) output_norm: CudaSlice<f32>,
    pub(super) layers: Vec<GpuLayer>,
    /// RoPE inverse frequencies (the angles are computed per step in f64, as on the CPU).
    pub(super) inv_freq: Vec<f64>,
    pub(super) name: String,
    pub(super) weight_bytes: usize,
}

impl CudaModel {
    /// Opens `cuda:ordinal`, compiles the kernels and uploads `model`'s weights.
    pub fn load(model: &Model, ordinal: usize) -> Result<Self, DeviceError> {
        let c = &model.cfg;
        if c.arch != crate::step::Arch::Llama {
            return Err(DeviceError::Unsupported {
                what: format!("the {} architecture (the CUDA forward pass is Llama's)", c.arch.name()),
            });
        }
        if c.head_dim > MAX_HEAD_DIM || !c.head_dim.is_multiple_of(32) {
            return Err(DeviceError::Unsupported {
                what: format!("a head size of {} (need a multiple of 32 up to {MAX_HEAD_DIM})", c.head_dim),
            });
        }
        let ctx = probe(ordinal)?;
        // One stream per engine loop and read-only shared weights: cudarc's per-slice event
        // tracking would only add work.
        // SAFETY: nothing created under this context is used on two streams without a
        // synchronize in between (weights are uploaded, then the load stream is synchronized).
        unsafe { ctx.disable_event_tracking() };
        let name = call("device name", ctx.name())?;
        let k = Kernels::load(&ctx)?;
        let stream = ctx.default_stream();
        let mut bytes = 0usize;
        let mut up_f16 = |op: &str, rows: &dyn Fn(usize, &mut [f32]), n: usize, k: usize| {
            let mut host = vec![f16::ZERO; n * k];
            let mut row = vec![0f32; k];
            for r in 0..n {
                rows(r, &mut row);
                for (d, s) in host[r * k..][..k].iter_mut().zip(&row) {
                    *d = f16::from_f32(*s);
                }
            }
            bytes += host.len() * 2;
            call(op, stream.clone_htod(&host))
        };
        let mut layers = Vec::with_capacity(model.layers.len());
        let up_f32 = |op: &str, v: &[f32]| call(op, stream.clone_htod(v));
        for (i, l) in model.layers.iter().enumerate() {
            layers.push(GpuLayer {
                attn_norm: up_f32("upload attn_norm", &l.attn_norm)?,
                wqkv: up_f16(&format!("upload blk.{i}.qkv"), &linear(&l.wqkv), l.wqkv.n, c.dim)?,
                wo: up_f16(&format!("upload blk.{i}.attn_output"), &linear(&l.wo), l.wo.n, c.dim)?,
                ffn_norm: up_f32("upload ffn_norm", &l.ffn_norm)?,
                w_gate_up: up_f16(&format!("upload blk.{i}.gate_up"), &linear(&l.w_gate_up), l.w_gate_up.n, c.dim)?,
                w_down: up_f16(&format!("upload blk.{i}.ffn_down"), &linear(&l.w_down), l.w_down.n, c.ffn_dim)?,
            });
        }
        let embed_row = |r: usize, out: &mut [f32]| model.embed.dequantize_row(r, out);
        let output = match &model.output {
            Some(o) => up_f16("upload output", &linear(o), o.n, c.dim)?,
            None => up_f16("upload output (tied embedding)", &embed_row, c.vocab, c.dim)?,
        };
        let mut table = vec![0f32; c.vocab * c.dim];
        for (r, row) in table.chunks_exact_mut(c.dim).enumerate() {
            model.embed.dequantize_row(r, row);
        }
        let embed = up_f32("upload token_embd", &table)?;
        drop(table);
        let output_norm = up_f32("upload output_norm", &model.output_norm)?;
        bytes += c.vocab * c.dim * 4;
        call("synchronize after upload", stream.synchronize())?;
        Ok(Self {
            ctx,
            cfg: c.clone(),
            k,
            embed,
            output,
            output_norm,
            layers,
            inv_freq: model.inv_freq.clone(),
            name,
            weight_bytes: bytes,
        })
    }

    /// The device's name, as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// Bytes of weights (and tables) uploaded.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Free and total device memory.
    pub fn mem_info(&self) -> Result<(usize, usize), DeviceError> {
        call("memory info", self.ctx.mem_get_info())
    }
}

impl Drop for CudaModel {
    fn drop(&mut self) {
        // cudarc frees device memory without making the context current; the last reference
        // may go on a thread that never ran a step. Work still queued must finish first.
        let _ = self.ctx.bind_to_thread();
        let _ = self.ctx.synchronize();
    }
}

/// Row `r` of a (possibly multi-part) linear layer, dequantized.
fn linear(l: &Linear) -> impl Fn(usize, &mut [f32]) + '_ {
    move |mut r: usize, out: &mut [f32]| {
        for p in &l.parts {
            if r < p.n {
                p.dequantize_row(r, &mut out[..p.k]);
                return;
            }
            r -= p.n;
        }
    }
}
