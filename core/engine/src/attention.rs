//! Causal attention over the paged KV cache for one layer of a step.
//!
//! Every query row attends segment by segment ([`kernels::ATTN_SEGMENT`] positions) and the
//! partial results are combined in ascending order, so a row's output is the same bits whether
//! its segments ran on one thread or were spread over several: few rows with long contexts
//! (decode) spread their segments, many rows (prefill, large batches) spread rows.

use crate::kernels::{self, Isa};
use crate::kv::KvCache;
use crate::row_writers::{RowsMut, SharedMut};
use crate::step::{LlamaConfig, SeqStep};
use crate::threadpool::ThreadPool;

/// One layer's attention inputs for a step; both paths read the same geometry from here.
pub(crate) struct LayerAttention<'a> {
    /// Model shape.
    pub cfg: &'a LlamaConfig,
    /// Compute threads.
    pub pool: &'a ThreadPool,
    /// Kernel instruction set.
    pub isa: Isa,
    /// The cache, already holding this step's keys and values.
    pub kv: &'a KvCache,
    /// Layer index.
    pub layer: usize,
    /// For a sliding-window layer: how many positions (its own included) a query sees.
    pub window: Option<usize>,
    /// The step's sequences.
    pub batch: &'a [SeqStep<'a>],
    /// Rows of `[q | k | v]`, RoPE applied.
    pub qkv: &'a [f32],
}

impl LayerAttention<'_> {
    /// Causal attention of every query row against its sequence's cached keys and values,
    /// written to `out` (rows of `dim`).
    pub(crate) fn run(&self, out: &mut [f32]) {
        let c = self.cfg;
        let group = c.n_heads / c.n_kv_heads;
        if self.isa == Isa::Scalar || c.head_dim != 64 || group > kernels::ATTN_MAX_GROUP || self.window.is_some() {
            self.portable(out);
        } else {
            self.fused(out);
        }
    }

    /// `(q and output width, head size, qkv row width, GQA group, score scale)`.
    fn geometry(&self) -> (usize, usize, usize, usize, f32) {
        let c = self.cfg;
        (c.q_dim(), c.head_dim, c.q_dim() + 2 * c.kv_dim(), c.n_heads / c.n_kv_heads, c.attn_scale)
    }

    /// The SIMD path: head size 64, GQA groups of at most [`kernels::ATTN_MAX_GROUP`].
    fn fused(&self, out: &mut [f32]) {
        let Self { cfg: c, pool, isa, kv, layer, batch, qkv, window: _ } = *self;
        let (dim, hd, qkv_w, group, scale) = self.geometry();
        // Each row attends segment by segment (kernels::ATTN_SEGMENT positions) and the partials
        // are combined in order; see `AttnPartial`. Rows of one sequence share its block table.
        let mut rows = Vec::new();
        for (si, sq) in batch.iter().enumerate() {
            rows.extend((0..sq.tokens.len()).map(|i| (si, sq.pos + i)));
        }
        let segs = |pos: usize| (pos + 1).div_ceil(kernels::ATTN_SEGMENT);
        let max_segs = rows.iter().map(|&(_, p)| segs(p)).max().unwrap_or(1);
        let units = rows.len() * c.n_kv_heads;
        let layer_kv = kv.layer_view(layer);
        let out_rows = RowsMut::new(out, dim);
        let seg_range =
            |pos: usize, sg: usize| sg * kernels::ATTN_SEGMENT..((sg + 1) * kernels::ATTN_SEGMENT).min(pos + 1);
        let q_of = |r: usize, kvh: usize| &qkv[r * qkv_w + kvh * group * hd..][..group * hd];
        let segment = |r: usize, kvh: usize, sg: usize, scores: &mut Vec<f32>, part: &mut kernels::AttnPartial| {
            let (si, pos) = rows[r];
            let ok = kernels::attend_segment(
                isa,
                q_of(r, kvh),
                &layer_kv,
                batch[si].blocks,
                kvh,
                seg_range(pos, sg),
                scale,
                scores,
                part,
            );
            assert!(ok, "shape checked before choosing the fused path");
        };
        let combine = |r: usize, kvh: usize, parts: &[kernels::AttnPartial]| {
            // SAFETY: each (row, KV head) is combined by exactly one work item.
            #[allow(unsafe_code)]
            let o = unsafe { out_rows.get_range(r, kvh * group * hd, group * hd) };
            kernels::combine_partials(parts, group, hd, o);
        };
        if max_segs > 1 && units < 4 * pool.n_threads() {
            // Few rows with long contexts (decode): spread the segments themselves over threads.
            let mut parts = vec![kernels::AttnPartial::default(); units * max_segs];
            {
                let slots = RowsMut::new(&mut parts, 1);
                let n_items = units * max_segs;
                pool.for_chunks(n_items, 1, &|items| {
                    let mut scores = Vec::new();
                    for item in items {
                        let (unit, sg) = (item / max_segs, item % max_segs);
                        let (r, kvh) = (unit / c.n_kv_heads, unit % c.n_kv_heads);
                        let pos = rows[r].1;
                        if sg >= segs(pos) {
                            continue;
                        }
                        // SAFETY: one slot per item.
                        #[allow(unsafe_code)]
                        let part = unsafe { &mut slots.get(item)[0] };
                        segment(r, kvh, sg, &mut scores, part);
                    }
                });
            }
            let parts = &parts;
            pool.for_chunks(units, 1, &|us| {
                for unit in us {
                    let (r, kvh) = (unit / c.n_kv_heads, unit % c.n_kv_heads);
                    combine(r, kvh, &parts[unit * max_segs..][..segs(rows[r].1)]);
                }
            });
            return;
        }
        // Many rows: each work item takes a run of one sequence's rows for one KV head.
        const QCHUNK: usize = 16;
        let mut chunks = Vec::new();
        let mut row0 = 0;
        for sq in batch {
            let n = sq.tokens.len();
            chunks.extend((0..n).step_by(QCHUNK).map(|q0| row0 + q0..row0 + (q0 + QCHUNK).min(n)));
            row0 += n;
        }
        pool.for_chunks(chunks.len() * c.n_kv_heads, 1, &|items| {
            let mut scores = Vec::new();
            let mut parts = vec![kernels::AttnPartial::default(); max_segs];
            for item in items {
                let (chunk, kvh) = (item / c.n_kv_heads, item % c.n_kv_heads);
                for r in chunks[chunk].clone() {
                    let pos = rows[r].1;
                    let n = segs(pos);
                    for (sg, part) in parts[..n].iter_mut().enumerate() {
                        segment(r, kvh, sg, &mut scores, part);
                    }
                    combine(r, kvh, &parts[..n]);
                }
            }
        });
    }

    /// The portable path (scalar ISA, or shapes the fused kernel does not cover).
    fn portable(&self, out: &mut [f32]) {
        let Self { cfg: c, pool, isa, kv, layer, batch, qkv, window } = *self;
        let (dim, hd, qkv_w, group, scale) = self.geometry();
        // Work items: (sequence, KV head, chunk of query rows). The query heads that share a KV
        // head are done together so each cached key and value is converted once per query row;
        // chunks keep long prefills balanced across threads.
        const QCHUNK: usize = 16;
        let mut items = Vec::new();
        let mut row0 = 0;
        for (si, sq) in batch.iter().enumerate() {
            let n = sq.tokens.len();
            for kvh in 0..c.n_kv_heads {
                for q0 in (0..n).step_by(QCHUNK) {
                    items.push((si, kvh, row0 + q0, q0..(q0 + QCHUNK).min(n)));
                }
            }
            row0 += n;
        }
        let out_ptr = SharedMut(out.as_mut_ptr());
        let out_len = out.len();
        pool.for_chunks(items.len(), 1, &|range| {
            let mut scores: Vec<f32> = Vec::new();
            let mut dots = vec![0f32; group];
            let mut ws = vec![0f32; group];
            for (si, kvh, first_row, qs) in items[range].iter().cloned() {
                let sq = &batch[si];
                for (k, qi) in qs.enumerate() {
                    let row = first_row + k;
                    let q = &qkv[row * qkv_w + kvh * group * hd..][..group * hd];
                    let n = sq.pos + qi + 1;
                    let first = window.map_or(0, |w| n.saturating_sub(w));
                    let start = row * dim + kvh * group * hd;
                    assert!(start + group * hd <= out_len);
                    // SAFETY: in bounds (above); each (row, KV head) belongs to one work item.
                    #[allow(unsafe_code)]
                    let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), group * hd) };
                    // scores[p * group + g]
                    scores.clear();
                    let mut max = vec![f32::NEG_INFINITY; group];
                    for p in first..n {
                        kernels::dot_f16_group(isa, q, kv.key(layer, sq.blocks, p, kvh), &mut dots);
                        for ((m, d), s) in max.iter_mut().zip(&dots).zip(std::iter::repeat(scale)) {
                            *m = m.max(d * s);
                        }
                        scores.extend(dots.iter().map(|d| d * scale));
                    }
                    let mut sum = vec![0f32; group];
                    for ps in scores.chunks_exact_mut(group) {
                        for ((s, m), t) in ps.iter_mut().zip(&max).zip(sum.iter_mut()) {
                            *s = (*s - m).exp();
                            *t += *s;
                        }
                    }
                    o.fill(0.0);
                    for (p, ps) in (first..n).zip(scores.chunks_exact(group)) {
                        for ((w, s), t) in ws.iter_mut().zip(ps).zip(&sum) {
                            *w = s / t;
                        }
                        kernels::axpy_f16_group(isa, o, &ws, kv.value(layer, sq.blocks, p, kvh));
                    }
                }
            }
        });
    }
}
