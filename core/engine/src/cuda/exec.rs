//! [`CudaExec`]: one engine loop's stream, cuBLAS handle, device KV cache and step buffers, and
//! the forward step that runs on them.

// Kernel launches, cuBLAS calls and raw device pointers are unsafe by nature; each use states
// why it is sound.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use half::f16;

use super::call;
use super::weights::CudaModel;
use crate::device::DeviceError;
use crate::step::{LlamaConfig, SeqStep, logit_rows};

/// A device buffer that grows (to the next power of two) when a step needs more.
#[derive(Debug)]
struct Buf<T> {
    slice: Option<CudaSlice<T>>,
    what: &'static str,
}

impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> Buf<T> {
    fn new(what: &'static str) -> Self {
        Self { slice: None, what }
    }

    fn ensure(&mut self, stream: &Arc<CudaStream>, len: usize) -> Result<&mut CudaSlice<T>, DeviceError> {
        let len = len.max(1);
        if self.slice.as_ref().is_none_or(|s| s.len() < len) {
            self.slice = None;
            let n = len.next_power_of_two();
            self.slice = Some(call(&format!("alloc {} ({n} elements)", self.what), stream.alloc_zeros::<T>(n))?);
        }
        Ok(self.slice.as_mut().expect("allocated above"))
    }

    fn get(&self) -> &CudaSlice<T> {
        self.slice.as_ref().expect("ensure() runs before get() in every step")
    }
}

/// One engine loop's state on the device: its stream and cuBLAS handle, the KV cache and the
/// step's buffers.
#[derive(Debug)]
pub(crate) struct CudaExec {
    model: Arc<CudaModel>,
    cfg: LlamaConfig,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// `[layer][slot][kv_dim]` f16 keys, and values alike.
    k_cache: CudaSlice<f16>,
    v_cache: CudaSlice<f16>,
    num_blocks: usize,
    block_size: usize,
    x: Buf<f32>,
    xn: Buf<f16>,
    qkv: Buf<f32>,
    attn: Buf<f16>,
    proj: Buf<f32>,
    gu: Buf<f32>,
    act: Buf<f16>,
    sel: Buf<f32>,
    seln: Buf<f16>,
    logits: Buf<f32>,
    meta: Buf<u32>,
    rope: Buf<f32>,
    ids: Buf<u32>,
    lps: Buf<f32>,
    host_meta: Vec<u32>,
    host_rope: Vec<f32>,
    /// Per sampled row of the last step: greedy id and its log-probability.
    pub(crate) greedy: Vec<(u32, f32)>,
    /// Host copies of the logits rows that asked for them, `vocab` each, in row order.
    pub(crate) host_logits: Vec<f32>,
    /// For each sampled row, its index into `host_logits` rows, if copied.
    pub(crate) host_row: Vec<Option<usize>>,
}

/// Bytes of KV for one block (every layer, keys and values).
fn block_bytes(c: &LlamaConfig, block_size: usize) -> usize {
    c.n_layers * 2 * block_size * c.kv_dim() * 2
}

impl CudaExec {
    /// A KV cache of at most `max_blocks` blocks of `block_size` tokens, fewer if free device
    /// memory (times `mem_fraction`, after room for the step buffers) holds fewer.
    pub(crate) fn new(
        model: Arc<CudaModel>,
        block_size: usize,
        max_blocks: usize,
        max_step_tokens: usize,
        mem_fraction: f64,
    ) -> Result<Self, DeviceError> {
        if block_size == 0 || max_blocks == 0 {
            return Err(DeviceError::Unsupported { what: "a KV cache of zero blocks or zero-token blocks".into() });
        }
        let cfg = &model.cfg.clone();
        let ctx = model.ctx.clone();
        call("bind context", ctx.bind_to_thread())?;
        let stream = call("create stream", ctx.new_stream())?;
        let blas = call("create cuBLAS handle", CudaBlas::new(stream.clone()))?;
        let (free, _total) = model.mem_info()?;
        // Step buffers at their largest: activations for max_step_tokens rows plus logits for
        // up to 512 rows.
        let t = max_step_tokens.max(1);
        let step_bytes =
            t * (cfg.dim * 4 * 3 + (cfg.dim + 2 * cfg.kv_dim()) * 4 + cfg.ffn_dim * (2 * 4 + 2)) + 512 * cfg.vocab * 4;
        let bb = block_bytes(cfg, block_size);
        let budget = ((free as f64 * mem_fraction.clamp(0.05, 0.98)) as usize).saturating_sub(step_bytes);
        let fit = budget / bb;
        let min_blocks = cfg.ctx_len.div_ceil(block_size).min(max_blocks);
        if fit < min_blocks.max(1) {
            return Err(DeviceError::OutOfMemory {
                free_bytes: free,
                weight_bytes: model.weight_bytes,
                kv_min_bytes: min_blocks.max(1) * bb + step_bytes,
            });
        }
        let num_blocks = fit.min(max_blocks).max(1);
        let elems = cfg.n_layers * num_blocks * block_size * cfg.kv_dim();
        let k_cache = call("alloc kv cache (keys)", stream.alloc_zeros::<f16>(elems))?;
        let v_cache = call("alloc kv cache (values)", stream.alloc_zeros::<f16>(elems))?;
        Ok(Self {
            model,
            cfg: cfg.clone(),
            stream,
            blas,
            k_cache,
            v_cache,
            num_blocks,
            block_size,
            x: Buf::new("x"),
            xn: Buf::new("xn"),
            qkv: Buf::new("qkv"),
            attn: Buf::new("attn"),
            proj: Buf::new("proj"),
            gu: Buf::new("gate_up"),
            act: Buf::new("act"),
            sel: Buf::new("sel"),
            seln: Buf::new("seln"),
            logits: Buf::new("logits"),
            meta: Buf::new("step metadata"),
            rope: Buf::new("rope angles"),
            ids: Buf::new("ids"),
            lps: Buf::new("logprobs"),
            host_meta: Vec::new(),
            host_rope: Vec::new(),
            greedy: Vec::new(),
            host_logits: Vec::new(),
            host_row: Vec::new(),
        })
    }

    /// Blocks in the device KV cache.
    pub(crate) fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// The device's name.
    pub(crate) fn device_name(&self) -> &str {
        &self.model.name
    }

    /// `y[t][n] = x[t][k] · w[n][k]ᵀ`: f16 in, f32 accumulate and out.
    fn gemm(
        &self,
        op: &str,
        w: &CudaSlice<f16>,
        x: &CudaSlice<f16>,
        y: &mut CudaSlice<f32>,
        (t, n, k): (usize, usize, usize),
    ) -> Result<(), DeviceError> {
        debug_assert!(w.len() >= n * k && x.len() >= t * k && y.len() >= t * n);
        let (alpha, beta) = (1f32, 0f32);
        let (wp, _a) = w.device_ptr(&self.stream);
        let (xp, _b) = x.device_ptr(&self.stream);
        let (yp, _c) = y.device_ptr_mut(&self.stream);
        // SAFETY: the three buffers hold at least n·k, t·k and t·n elements (asserted above and
        // sized by `ensure`); the handle is bound to this exec's stream.
        let r = unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                t as i32,
                k as i32,
                (&alpha) as *const f32 as *const c_void,
                wp as *const c_void,
                blas_sys::cudaDataType_t::CUDA_R_16F,
                k as i32,
                xp as *const c_void,
                blas_sys::cudaDataType_t::CUDA_R_16F,
                k as i32,
                (&beta) as *const f32 as *const c_void,
                yp as *mut c_void,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        call(op, r)
    }

    /// Runs one step that `Model::validate_shape` accepted for this cache (the caller,
    /// [`crate::exec::Executor::forward`], checks it: token ids, positions and block ids index
    /// device memory unchecked). `host_logits(i)` says whether sampled row `i` needs its logits
    /// on the host. Afterwards `greedy` has one entry per sampled row.
    pub(crate) fn forward(
        &mut self,
        batch: &[SeqStep<'_>],
        host_logits: &dyn Fn(usize) -> bool,
    ) -> Result<(), DeviceError> {
        self.greedy.clear();
        self.host_logits.clear();
        self.host_row.clear();
        let c = self.cfg.clone();
        let (dim, kvd, hd, f) = (c.dim, c.kv_dim(), c.head_dim, c.ffn_dim);
        let qkv_w = dim + 2 * kvd;
        let t: usize = batch.iter().map(|s| s.tokens.len()).sum();
        if t == 0 {
            return Ok(());
        }
        call("bind context", self.model.ctx.bind_to_thread())?;

        // Step metadata in one upload: tokens | positions | slots | table offsets | logit rows | tables.
        let m = &mut self.host_meta;
        m.clear();
        m.extend(batch.iter().flat_map(|s| s.tokens.iter().copied()));
        m.extend(batch.iter().flat_map(|s| (s.pos..s.pos + s.tokens.len()).map(|p| p as u32)));
        let bs = self.block_size;
        for s in batch {
            m.extend((s.pos..s.pos + s.tokens.len()).map(|p| s.blocks[p / bs] * bs as u32 + (p % bs) as u32));
        }
        // Tables start at 5t, after the logit-row region (padded to t entries).
        let mut tab_len = 0usize;
        for s in batch {
            let o = (5 * t + tab_len) as u32;
            m.extend(std::iter::repeat_n(o, s.tokens.len()));
            tab_len += s.blocks.len();
        }
        let sel = logit_rows(batch);
        let rows = sel.len();
        debug_assert_eq!(m.len(), 4 * t);
        m.extend(sel.iter().map(|&r| r as u32));
        m.resize(5 * t, 0);
        for s in batch {
            m.extend_from_slice(s.blocks);
        }
        let meta_len = m.len();
        // RoPE angles of each row's position, in f64 as on the CPU.
        let cs = &mut self.host_rope;
        cs.clear();
        for s in batch {
            for p in s.pos..s.pos + s.tokens.len() {
                for f in &self.model.inv_freq {
                    let th = p as f64 * f;
                    cs.push(th.cos() as f32);
                    cs.push(th.sin() as f32);
                }
            }
        }
        let rope = self.rope.ensure(&self.stream, cs.len())?;
        call("upload rope angles", self.stream.memcpy_htod(&self.host_rope[..], rope))?;
        let meta = self.meta.ensure(&self.stream, meta_len)?;
        call("upload step metadata", self.stream.memcpy_htod(&self.host_meta[..], meta))?;
        let meta = self.meta.get();
        let tokens = meta.slice(0..t);
        let pos = meta.slice(t..2 * t);
        let slots = meta.slice(2 * t..3 * t);
        let tab_off = meta.slice(3 * t..4 * t);
        let sel_idx = meta.slice(4 * t..4 * t + rows.max(1));
        // Offsets into `meta` itself: the attention kernel reads tables through `meta`.
        let tables = meta.slice(0..meta_len);

        self.x.ensure(&self.stream, t * dim)?;
        self.xn.ensure(&self.stream, t * dim)?;
        self.qkv.ensure(&self.stream, t * qkv_w)?;
        self.attn.ensure(&self.stream, t * dim)?;
        self.proj.ensure(&self.stream, t * dim)?;
        self.gu.ensure(&self.stream, t * 2 * f)?;
        self.act.ensure(&self.stream, t * f)?;
        let w = &self.model;
        let k = &w.k;
        let rows1 = |n: usize, threads: u32| LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let (dim_i, eps) = (dim as i32, c.rms_eps);
        let launch = |op: &str, r: Result<Option<(cudarc::driver::CudaEvent, cudarc::driver::CudaEvent)>, _>| {
            call(op, r).map(|_| ())
        };

        // SAFETY (every launch below): each kernel's pointer arguments are buffers sized above
        // for `t` rows (or `rows`), its integer arguments are the shapes those sizes were computed
        // from, and the indices it reads (tokens, positions, slots, block ids) were checked by
        // `Model::validate_shape` against the vocabulary, context and cache before this call.
        unsafe {
            launch(
                "launch embed_rows",
                self.stream
                    .launch_builder(&k.embed_rows)
                    .arg(&w.embed)
                    .arg(&tokens)
                    .arg(self.x.get())
                    .arg(&dim_i)
                    .launch(rows1(t, 256)),
            )?;
        }
        let layer_elems = self.num_blocks * self.block_size * kvd;
        for (li, l) in w.layers.iter().enumerate() {
            let null = 0u64;
            // SAFETY: as above; `res` is null (0) on the first layer, where there is no residual.
            unsafe {
                let mut b = self.stream.launch_builder(&k.residual_rmsnorm);
                b.arg(self.x.get());
                if li == 0 {
                    b.arg(&null);
                } else {
                    b.arg(self.proj.get());
                }
                launch(
                    "launch residual_rmsnorm",
                    b.arg(&l.attn_norm).arg(self.xn.get()).arg(&dim_i).arg(&eps).launch(rows1(t, 256)),
                )?;
            }
            let mut qkv = self.qkv.slice.take().expect("ensured");
            let r = self.gemm("gemm qkv", &l.wqkv, self.xn.get(), &mut qkv, (t, qkv_w, dim));
            self.qkv.slice = Some(qkv);
            r?;
            let kc = self.k_cache.slice(li * layer_elems..(li + 1) * layer_elems);
            let vc = self.v_cache.slice(li * layer_elems..(li + 1) * layer_elems);
            let (qkv_wi, n_rot, hd_i, half) =
                (qkv_w as i32, (c.n_heads + c.n_kv_heads) as i32, hd as i32, (c.rope_dim / 2) as i32);
            let (qdim_i, kvd_i, bs_i) = (dim as i32, kvd as i32, bs as i32);
            let (nh, group) = (c.n_heads as i32, (c.n_heads / c.n_kv_heads) as i32);
            let scale = 1.0 / (hd as f32).sqrt();
            // SAFETY: as above; the K/V views are this layer's part of the cache, and every slot
            // is below num_blocks · block_size (block ids were validated).
            unsafe {
                launch(
                    "launch rope",
                    self.stream
                        .launch_builder(&k.rope)
                        .arg(self.qkv.get())
                        .arg(self.rope.get())
                        .arg(&qkv_wi)
                        .arg(&n_rot)
                        .arg(&hd_i)
                        .arg(&half)
                        .launch(rows1(t, 128)),
                )?;
                launch(
                    "launch kv_store",
                    self.stream
                        .launch_builder(&k.kv_store)
                        .arg(self.qkv.get())
                        .arg(&kc)
                        .arg(&vc)
                        .arg(&slots)
                        .arg(&qkv_wi)
                        .arg(&qdim_i)
                        .arg(&kvd_i)
                        .launch(rows1(t, 128)),
                )?;
                launch(
                    "launch attention",
                    self.stream
                        .launch_builder(&k.attention)
                        .arg(self.qkv.get())
                        .arg(&kc)
                        .arg(&vc)
                        .arg(&pos)
                        .arg(&tab_off)
                        .arg(&tables)
                        .arg(self.attn.get())
                        .arg(&qkv_wi)
                        .arg(&nh)
                        .arg(&group)
                        .arg(&hd_i)
                        .arg(&kvd_i)
                        .arg(&bs_i)
                        .arg(&scale)
                        .launch(LaunchConfig {
                            grid_dim: (t as u32, c.n_heads as u32, 1),
                            block_dim: (128, 1, 1),
                            shared_mem_bytes: 0,
                        }),
                )?;
            }
            let mut proj = self.proj.slice.take().expect("ensured");
            let r = self.gemm("gemm attn_output", &l.wo, self.attn.get(), &mut proj, (t, dim, dim));
            self.proj.slice = Some(proj);
            r?;
            // SAFETY: as above.
            unsafe {
                launch(
                    "launch residual_rmsnorm",
                    self.stream
                        .launch_builder(&k.residual_rmsnorm)
                        .arg(self.x.get())
                        .arg(self.proj.get())
                        .arg(&l.ffn_norm)
                        .arg(self.xn.get())
                        .arg(&dim_i)
                        .arg(&eps)
                        .launch(rows1(t, 256)),
                )?;
            }
            let mut gu = self.gu.slice.take().expect("ensured");
            let r = self.gemm("gemm gate_up", &l.w_gate_up, self.xn.get(), &mut gu, (t, 2 * f, dim));
            self.gu.slice = Some(gu);
            r?;
            let f_i = f as i32;
            // SAFETY: as above.
            unsafe {
                launch(
                    "launch silu_mul",
                    self.stream
                        .launch_builder(&k.silu_mul)
                        .arg(self.gu.get())
                        .arg(self.act.get())
                        .arg(&f_i)
                        .launch(rows1(t, 256)),
                )?;
            }
            let mut proj = self.proj.slice.take().expect("ensured");
            let r = self.gemm("gemm ffn_down", &l.w_down, self.act.get(), &mut proj, (t, dim, f));
            self.proj.slice = Some(proj);
            r?;
        }
        if rows == 0 {
            return call("synchronize step", self.stream.synchronize());
        }

        // Logits for the rows that asked, then the greedy choice of each on the device.
        self.sel.ensure(&self.stream, rows * dim)?;
        self.seln.ensure(&self.stream, rows * dim)?;
        self.logits.ensure(&self.stream, rows * c.vocab)?;
        self.ids.ensure(&self.stream, rows)?;
        self.lps.ensure(&self.stream, rows)?;
        let null = 0u64;
        let vocab_i = c.vocab as i32;
        // SAFETY: as above; sel_idx holds `rows` row indices below t.
        unsafe {
            launch(
                "launch gather_add",
                self.stream
                    .launch_builder(&k.gather_add)
                    .arg(self.x.get())
                    .arg(self.proj.get())
                    .arg(&sel_idx)
                    .arg(self.sel.get())
                    .arg(&dim_i)
                    .launch(rows1(rows, 256)),
            )?;
            launch(
                "launch output rmsnorm",
                self.stream
                    .launch_builder(&k.residual_rmsnorm)
                    .arg(self.sel.get())
                    .arg(&null)
                    .arg(&w.output_norm)
                    .arg(self.seln.get())
                    .arg(&dim_i)
                    .arg(&eps)
                    .launch(rows1(rows, 256)),
            )?;
        }
        let mut logits = self.logits.slice.take().expect("ensured");
        let r = self.gemm("gemm output", &w.output, self.seln.get(), &mut logits, (rows, c.vocab, dim));
        self.logits.slice = Some(logits);
        r?;
        // SAFETY: as above; ids and lps hold `rows` entries.
        unsafe {
            launch(
                "launch argmax_logprob",
                self.stream
                    .launch_builder(&k.argmax_logprob)
                    .arg(self.logits.get())
                    .arg(&vocab_i)
                    .arg(self.ids.get())
                    .arg(self.lps.get())
                    .launch(rows1(rows, 256)),
            )?;
        }
        let mut ids = vec![0u32; rows];
        let mut lps = vec![0f32; rows];
        call("copy ids", self.stream.memcpy_dtoh(&self.ids.get().slice(0..rows), &mut ids[..]))?;
        call("copy logprobs", self.stream.memcpy_dtoh(&self.lps.get().slice(0..rows), &mut lps[..]))?;
        let vocab = c.vocab;
        for i in 0..rows {
            if host_logits(i) {
                let at = self.host_logits.len();
                self.host_logits.resize(at + vocab, 0.0);
                let src: CudaView<'_, f32> = self.logits.get().slice(i * vocab..(i + 1) * vocab);
                call("copy logits row", self.stream.memcpy_dtoh(&src, &mut self.host_logits[at..]))?;
                self.host_row.push(Some(at / vocab));
            } else {
                self.host_row.push(None);
            }
        }
        call("synchronize step", self.stream.synchronize())?;
        self.greedy.extend(ids.into_iter().zip(lps));
        Ok(())
    }
}

impl Drop for CudaExec {
    fn drop(&mut self) {
        // As for `CudaModel`: make the context current on this thread and let queued work end
        // before the cache and buffers are freed.
        let _ = self.model.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
    }
}
