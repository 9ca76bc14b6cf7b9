//! CPU compute kernels with run-time instruction-set selection.
//!
//! [`Isa`] is detected once; every entry point takes it explicitly so tests can run each path
//! that the machine supports against the scalar reference. Matmuls are split across the thread
//! pool by groups of eight output rows; within a group the token dimension is tiled so that the
//! unpacked weights are reused from registers.

use crate::quant::{self, PackedKind, PackedMatrix, QK, QuantizedActs};
use crate::row_writers::OutRows;
use crate::threadpool::ThreadPool;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Instruction-set levels with a kernel of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust; the reference every other path is tested against.
    Scalar,
    /// AVX2 + FMA + F16C (`vpmaddubsw` dot products).
    Avx2,
    /// AVX2 plus AVX-512 (F, BW, VL, VNNI): `vpdpbusd` on 256-bit vectors for one group of
    /// eight rows, on 512-bit vectors for two.
    Avx512Vnni,
}

impl Isa {
    /// The best level this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni");
            if avx2 && avx512 {
                return Self::Avx512Vnni;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// [`Self::detect`], computed once.
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(Self::detect)
    }

    /// Whether this CPU can run `self`. Every kernel entry point asserts it: running an
    /// instruction the CPU lacks would be undefined behaviour, not an error.
    #[inline]
    pub fn supported(self) -> bool {
        self <= Self::best()
    }

    #[inline]
    pub(crate) fn assert_supported(self) {
        assert!(
            self.supported(),
            "instruction set {} is not available on this CPU (best: {})",
            self.name(),
            Self::best().name()
        );
    }

    /// Every level this CPU can run, from scalar up.
    pub fn available() -> Vec<Self> {
        let best = Self::best();
        [Self::Scalar, Self::Avx2, Self::Avx512Vnni].into_iter().filter(|i| *i <= best).collect()
    }

    /// Parses a name as given on the command line.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scalar" => Some(Self::Scalar),
            "avx2" => Some(Self::Avx2),
            "avx512vnni" | "avx512" => Some(Self::Avx512Vnni),
            _ => None,
        }
    }

    /// A short name for logs and benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512Vnni => "avx512vnni",
        }
    }
}

/// Runs `f(row)` for every row in `0..t`, spread over the pool when there are rows enough to
/// pay for the hand-off.
pub(crate) fn par_rows(pool: &ThreadPool, t: usize, f: &(dyn Fn(usize) + Sync)) {
    if t < 4 {
        (0..t).for_each(f);
    } else {
        pool.for_chunks(t, 1, &|rows| rows.for_each(f));
    }
}

/// `y[t][row] = Σ_k w[row][k] · x[t][k]` for all `t` rows of `x`; `y` has row stride `ldy`
/// (`ldy >= w.n`, so several matrices can write side by side into one buffer).
/// `xf` is the same activations in f32 (used by F32 weights), `xq` their quantized form.
pub fn matmul(
    pool: &ThreadPool,
    isa: Isa,
    w: &PackedMatrix,
    xf: &[f32],
    xq: &QuantizedActs,
    y: &mut [f32],
    ldy: usize,
) {
    let t = xq.t;
    let n = w.n;
    isa.assert_supported();
    let covered = t.checked_sub(1).map_or(Some(0), |r| r.checked_mul(ldy).and_then(|o| o.checked_add(n)));
    assert!(ldy >= n && covered.is_some_and(|c| c <= y.len()) && t.checked_mul(w.k).is_some_and(|e| e <= xf.len()));
    let out = OutRows::new(y, ldy);
    if w.kind == PackedKind::F32 {
        // Each chunk writes only the columns `rows` of every output row.
        pool.for_chunks(n, 16, &|rows| quant::matmul_f32(w, xf, t, rows, &out));
        return;
    }
    assert_eq!(xq.k, w.k, "activation width must match the weight matrix");
    let groups = w.groups();
    // Enough chunks for dynamic balance, few enough that each is worth a fetch_add.
    let chunk = (groups / (pool.n_threads() * 8)).clamp(1, 64);
    // 512-bit VNNI runs groups in pairs within a chunk: even chunks leave no group unpaired
    // but the matrix's last.
    let chunk = if isa == Isa::Avx512Vnni { chunk.next_multiple_of(2) } else { chunk };
    // Each chunk writes only the outputs of its own row groups.
    pool.for_chunks(groups, chunk, &|range| match isa {
        Isa::Scalar => quant::matmul_scalar(w, xq, range, &out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512Vnni => x86::matmul(isa, w, xq, range, &out),
        #[cfg(not(target_arch = "x86_64"))]
        _ => quant::matmul_scalar(w, xq, range, &out),
    });
}

/// Dot product of an f32 query with an f16 key (bits); the portable reference.
#[inline]
pub fn dot_f16(q: &[f32], k: &[u16]) -> f32 {
    q.iter().zip(k).map(|(a, b)| a * half::f16::from_bits(*b).to_f32()).sum()
}

/// `out += a · v` with `v` in f16 bits; the portable reference.
#[inline]
pub fn axpy_f16(out: &mut [f32], a: f32, v: &[u16]) {
    for (o, b) in out.iter_mut().zip(v) {
        *o += a * half::f16::from_bits(*b).to_f32();
    }
}

/// `out[g] = qs[g] · k` for the queries of one GQA group (at most 8), `qs` query-major.
#[inline]
pub fn dot_f16_group(isa: Isa, qs: &[f32], k: &[u16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && k.len().is_multiple_of(16) && out.len() <= 8 {
        return x86::dot_f16_group(qs, k, out);
    }
    let hd = k.len();
    for (g, o) in out.iter_mut().enumerate() {
        *o = dot_f16(&qs[g * hd..][..hd], k);
    }
}

/// `outs[g] += ws[g] · v` for the queries of one GQA group, `outs` query-major.
#[inline]
pub fn axpy_f16_group(isa: Isa, outs: &mut [f32], ws: &[f32], v: &[u16]) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar && v.len().is_multiple_of(16) {
        return x86::axpy_f16_group(outs, ws, v);
    }
    let hd = v.len();
    for (g, &w) in ws.iter().enumerate() {
        axpy_f16(&mut outs[g * hd..][..hd], w, v);
    }
}

/// Positions per attention segment. Attention is always computed segment by segment and the
/// partial results combined in ascending order, so a row's result does not depend on whether
/// its segments ran on one thread or several (batch invariance).
pub const ATTN_SEGMENT: usize = 512;

/// Largest GQA group the fused attention kernel handles.
pub const ATTN_MAX_GROUP: usize = 4;

/// One segment's attention for the query heads of one GQA group, before normalization:
/// `o[g] = Σ_p e^(s_gp - m[g]) v_p` and `l[g] = Σ_p e^(s_gp - m[g])`.
#[derive(Debug, Clone)]
pub struct AttnPartial {
    /// Running max per head.
    pub m: [f32; ATTN_MAX_GROUP],
    /// Sum of weights per head.
    pub l: [f32; ATTN_MAX_GROUP],
    /// Unnormalized outputs, head-major, 64 per head.
    pub o: [f32; ATTN_MAX_GROUP * 64],
}

impl Default for AttnPartial {
    fn default() -> Self {
        Self { m: [f32::NEG_INFINITY; ATTN_MAX_GROUP], l: [0.0; ATTN_MAX_GROUP], o: [0.0; ATTN_MAX_GROUP * 64] }
    }
}

/// SIMD attention of one query row's GQA group over `range`; `false` when this ISA or shape has
/// no fused kernel (the caller falls back to the portable path).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn attend_segment(
    isa: Isa,
    q: &[f32],
    kv: &crate::kv::KvLayer<'_>,
    blocks: &[u32],
    kvh: usize,
    range: std::ops::Range<usize>,
    scale: f32,
    scores: &mut Vec<f32>,
    part: &mut AttnPartial,
) -> bool {
    isa.assert_supported();
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return x86::attend_segment(q, kv, blocks, kvh, range, scale, scores, part);
    }
    let _ = (isa, q, kv, blocks, kvh, range, scale, scores, part);
    false
}

/// Combines segment partials (in the given order) into normalized outputs for `group` heads of
/// `hd` elements each.
pub fn combine_partials(parts: &[AttnPartial], group: usize, hd: usize, out: &mut [f32]) {
    for g in 0..group {
        let m = parts.iter().map(|p| p.m[g]).fold(f32::NEG_INFINITY, f32::max);
        let o = &mut out[g * hd..][..hd];
        o.fill(0.0);
        let mut l = 0f32;
        for p in parts {
            if p.l[g] == 0.0 {
                continue;
            }
            let f = (p.m[g] - m).exp();
            l += f * p.l[g];
            for (a, b) in o.iter_mut().zip(&p.o[g * hd..][..hd]) {
                *a += f * b;
            }
        }
        // No weight at all (every score -inf or NaN) yields zeros, not 0 * inf.
        let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
        for a in o.iter_mut() {
            *a *= inv;
        }
    }
}

// Activation quantization is defined here rather than in `quant`, beside the `QuantizedActs`
// layout, because every block goes through the instruction-set dispatch of `quantize_block`;
// `quant` keeps only the scalar reference and so needs nothing from this module.
impl QuantizedActs {
    /// Quantizes `x` (`t` rows of `k`), reusing this buffer's allocations.
    pub fn quantize(&mut self, x: &[f32], t: usize, k: usize) {
        self.quantize_with(Isa::best(), x, t, k);
    }

    /// [`Self::quantize`] on a given instruction set (tests compare them).
    pub fn quantize_with(&mut self, isa: Isa, x: &[f32], t: usize, k: usize) {
        self.set_shape(t, k);
        let nb = k / QK;
        for r in 0..t {
            quantize_row(
                isa,
                &x[r * k..][..k],
                &mut self.q[r * k..][..k],
                &mut self.d[r * nb..][..nb],
                &mut self.s[r * nb..][..nb],
            );
        }
    }
}

/// Quantizes one row `x` into `q` (same length) and its per-block `d` and `s`.
pub fn quantize_row(isa: Isa, x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    isa.assert_supported();
    for (((blk, q), d), s) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).zip(d.iter_mut()).zip(s.iter_mut()) {
        let (blk, q): (&[f32; QK], &mut [i8; QK]) = (blk.try_into().expect("QK"), q.try_into().expect("QK"));
        let (amax, sum) = quantize_block(isa, blk, q);
        let d16 = half::f16::from_f32(amax / 127.0).to_f32();
        *d = d16;
        *s = d16 * sum as f32;
    }
}

/// Quantizes one block of activations; see [`quant::quantize_block_scalar`]. Callers have
/// checked `isa` (per row, not per block).
#[inline]
pub(crate) fn quantize_block(isa: Isa, x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return x86::quantize_block(x, q);
    }
    let _ = isa;
    quant::quantize_block_scalar(x, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::{Lcg, QUANT_TYPES, random_blocks, shape_for};

    #[test]
    fn every_isa_matches_scalar_bit_for_bit_or_close() {
        let pool = ThreadPool::new(2);
        let mut rng = Lcg(3);
        for ty in QUANT_TYPES {
            for &(k, n, t) in &[(64, 8, 1), (576, 40, 5), (1536, 24, 9), (96, 19, 4), (32, 3, 13), (64, 12, 6)] {
                let k = shape_for(ty, k);
                let data = random_blocks(ty, k, n, &mut rng);
                let w = PackedMatrix::from_rows(ty, &data, k, n).unwrap();
                let x: Vec<f32> = (0..t * k).map(|_| rng.f() * 3.0).collect();
                let mut qa = QuantizedActs::default();
                qa.quantize(&x, t, k);
                let mut want = vec![0f32; t * n];
                matmul(&pool, Isa::Scalar, &w, &x, &qa, &mut want, n);
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; t * n];
                    matmul(&pool, isa, &w, &x, &qa, &mut got, n);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        let tol = 1e-4 * (1.0 + b.abs());
                        assert!((a - b).abs() <= tol, "{ty} {isa:?} k{k} n{n} t{t} [{i}]: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_in_a_paired_tile_and_alone() {
        // 512-bit VNNI computes two row groups per tile; which groups pair up follows the
        // chunking (and so the thread count). Rows 8..16 of a 40-row matrix are the second half
        // of a pair; as a matrix of their own they are one group, alone.
        let pool = ThreadPool::new(2);
        let mut rng = Lcg(17);
        for ty in QUANT_TYPES {
            let (k, n, t) = (shape_for(ty, 256), 40, 6);
            let data = random_blocks(ty, k, n, &mut rng);
            let row_bytes = data.len() / n;
            let full = PackedMatrix::from_rows(ty, &data, k, n).unwrap();
            let part = PackedMatrix::from_rows(ty, &data[8 * row_bytes..16 * row_bytes], k, 8).unwrap();
            let x: Vec<f32> = (0..t * k).map(|_| rng.f() * 2.0).collect();
            let mut qa = QuantizedActs::default();
            qa.quantize(&x, t, k);
            for isa in Isa::available() {
                let (mut a, mut b) = (vec![0f32; t * n], vec![0f32; t * 8]);
                matmul(&pool, isa, &full, &x, &qa, &mut a, n);
                matmul(&pool, isa, &part, &x, &qa, &mut b, 8);
                for r in 0..t {
                    assert_eq!(a[r * n + 8..r * n + 16], b[r * 8..r * 8 + 8], "{ty} {isa:?} token {r}");
                }
            }
        }
    }

    #[test]
    fn activation_quantization_is_ggml_like() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut qa = QuantizedActs::default();
        qa.quantize(&x, 1, 32);
        assert_eq!(qa.q[0], -127);
        assert!((qa.d[0] - 16.0 / 127.0).abs() < 1e-4);
        let sum: i32 = qa.q.iter().map(|&q| i32::from(q)).sum();
        assert!((qa.s[0] - qa.d[0] * sum as f32).abs() < 1e-6);
        let zeros = vec![0f32; 32];
        qa.quantize(&zeros, 1, 32);
        assert!(qa.q.iter().all(|&q| q == 0) && qa.d[0] == 0.0);
    }

    #[test]
    fn activation_quantization_agrees_across_isas() {
        let mut rng = Lcg(9);
        for scale in [1e-3f32, 1.0, 300.0] {
            let mut x: Vec<f32> = (0..32 * 40).map(|_| rng.f() * scale).collect();
            // Exact halves exercise ties-to-even; zeros the empty block.
            x[5] = 0.5 * scale;
            x[32..64].fill(0.0);
            let mut want = QuantizedActs::default();
            want.quantize_with(Isa::Scalar, &x, 40, 32);
            for isa in Isa::available() {
                let mut got = QuantizedActs::default();
                got.quantize_with(isa, &x, 40, 32);
                assert_eq!(got.q, want.q, "{isa:?} scale {scale}");
                assert_eq!(got.d, want.d);
                assert_eq!(got.s, want.s);
            }
        }
    }

    #[test]
    fn fused_attention_matches_the_definition() {
        let mut rng = Lcg(21);
        let (hd, kv_heads, bs) = (64, 3, 16);
        let mut kv = crate::kv::KvCache::new(2, kv_heads, hd, bs, 8).unwrap();
        let blocks = [6u32, 1, 4, 0];
        let n = 50;
        let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..n)
            .map(|_| ((0..kv_heads * hd).map(|_| rng.f()).collect(), (0..kv_heads * hd).map(|_| rng.f()).collect()))
            .collect();
        for (p, (k, v)) in rows.iter().enumerate() {
            kv.write(1, &blocks, p, k, v);
        }
        let f = |x: f32| half::f16::from_f32(x).to_f32();
        for g in 1..=4 {
            let q: Vec<f32> = (0..g * hd).map(|_| rng.f() * 2.0).collect();
            let kvh = 2;
            for isa in Isa::available() {
                let mut out = vec![0f32; g * hd];
                let mut scores = Vec::new();
                // Two segments, combined, exercise the partial path as the model uses it.
                let mut parts = vec![AttnPartial::default(); 2];
                let mut fused = true;
                for (part, range) in parts.iter_mut().zip([0..17, 17..n]) {
                    fused &= attend_segment(isa, &q, &kv.layer_view(1), &blocks, kvh, range, 0.125, &mut scores, part);
                }
                if !fused {
                    assert_eq!(isa, Isa::Scalar);
                    continue;
                }
                combine_partials(&parts, g, hd, &mut out);
                for gi in 0..g {
                    let qh = &q[gi * hd..][..hd];
                    let s: Vec<f32> = rows
                        .iter()
                        .map(|(k, _)| (0..hd).map(|i| qh[i] * f(k[kvh * hd + i])).sum::<f32>() * 0.125)
                        .collect();
                    let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
                    let z: f32 = e.iter().sum();
                    for i in 0..hd {
                        let want: f32 = rows.iter().zip(&e).map(|((_, v), w)| w / z * f(v[kvh * hd + i])).sum();
                        let got = out[gi * hd + i];
                        assert!((got - want).abs() < 1e-4, "{isa:?} g{g} head {gi} [{i}]: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn f16_group_helpers_agree_with_scalar() {
        let mut rng = Lcg(5);
        let q: Vec<f32> = (0..64).map(|_| rng.f()).collect();
        let k: Vec<u16> = (0..64).map(|_| half::f16::from_f32(rng.f()).to_bits()).collect();
        for isa in Isa::available() {
            let (mut g1, mut g2) = ([0f32; 3], [0f32; 3]);
            let qs: Vec<f32> = (0..3 * 64).map(|i| q[i % 64] * (1.0 + i as f32 / 100.0)).collect();
            dot_f16_group(isa, &qs, &k, &mut g1);
            dot_f16_group(Isa::Scalar, &qs, &k, &mut g2);
            for (a, b) in g1.iter().zip(&g2) {
                assert!((a - b).abs() < 1e-4, "{isa:?} group dot");
            }
            let (mut o3, mut o4) = (qs.clone(), qs.clone());
            axpy_f16_group(isa, &mut o3, &[0.5, -1.0, 2.0], &k);
            axpy_f16_group(Isa::Scalar, &mut o4, &[0.5, -1.0, 2.0], &k);
            for (a, b) in o3.iter().zip(&o4) {
                assert!((a - b).abs() < 1e-5, "{isa:?} group axpy");
            }
        }
    }
}
