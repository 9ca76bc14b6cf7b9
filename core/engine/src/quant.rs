//! Weight and activation formats for the CPU matmul kernels.
//!
//! GGUF block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the K-quants Q4_K, Q5_K and Q6_K, F16,
//! BF16, F32) are unpacked once at load time into a [`PackedMatrix`]: rows are taken eight at a
//! time and their 4-byte groups interleaved so that a single `vpdpbusd` (u8 × i8 → i32) computes
//! one partial dot product for each of eight output rows, with no horizontal sums. Every
//! quantized format becomes `w = d·q + m` per 32-element block with unsigned `q` (Q4_0:
//! `m = -8d`; Q8_0: `q + 128`, `m = -128d`; a K-quant's 32-element sub-block: its super-block
//! scale times the sub-block's 6-bit scale and minimum), so a handful of kernels serve them all.
//! Q6_K's sub-blocks are 16 elements, so its blocks carry two scales, one per half
//! ([`PackedKind::I8H`]). Activations
//! are quantized per 32-element block to i8 with an f16-rounded scale, as ggml's q8 formats do.
//! This module owns the layouts and the scalar reference; `kernels` owns the SIMD paths and
//! activation quantization (`QuantizedActs::quantize`, `kernels::quantize_row`), whose every
//! block goes through the instruction-set dispatch.

use half::{bf16, f16};

use crate::gguf::{GgmlType, TensorInfo};
use crate::row_writers::OutRows;

/// Elements per quantization block.
pub const QK: usize = 32;
/// Rows interleaved in one packed group.
pub const ROWS: usize = 8;
/// Elements per K-quant super-block (and per activation scale for K-quant weights).
pub const QK_K: usize = 256;

/// Why a tensor cannot be used as a weight matrix.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The tensor's type has no CPU kernel yet.
    #[error(
        "tensor {tensor}: type {ty} is not supported by the CPU backend (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)"
    )]
    Unsupported {
        /// Tensor name.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// The tensor's shape is not the one the model needs.
    #[error("tensor {tensor}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Tensor name.
        tensor: String,
        /// Shape the model needs (innermost first).
        expected: Vec<u64>,
        /// Shape in the file.
        found: Vec<u64>,
    },
}

/// Storage of a packed matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackedKind {
    /// 4-bit unsigned quants: per (group, block) 128 bytes, nibble `j` of lane `r` holds
    /// elements `4j..4j+4` (low) and `4(j+4)..` (high) of row `r`.
    U4,
    /// 5-bit unsigned quants (0..=31) stored a byte each, laid out as [`PackedKind::U8`]: small
    /// enough that `vpmaddubsw` pair sums cannot saturate, with any offset `m`.
    U5,
    /// 8-bit unsigned quants: per (group, block) 256 bytes; `m = -128d` (the AVX2 kernel relies
    /// on it).
    U8,
    /// Signed quants `q - 128` with one scale per 16-element half block and no offset: the
    /// scales hold the 8 first-half scales then the 8 second-half ones (Q6_K).
    I8H,
    /// Plain f32 rows (for F32/F16/BF16 tensors).
    F32,
}

/// A weight matrix of `n` rows by `k` columns, ready for the kernels.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// Layout of `quants`.
    pub kind: PackedKind,
    /// Output rows (not padded).
    pub n: usize,
    /// Input columns (a multiple of [`QK`] for quantized kinds).
    pub k: usize,
    /// Quantized data, group-major then block-major.
    pub quants: Vec<u8>,
    /// Per (group, block): the 8 row scales `d` then the 8 row offsets `m`, as f16 bits.
    pub scales: Vec<u16>,
    /// Row-major f32 weights for [`PackedKind::F32`].
    pub f32: Vec<f32>,
    /// Elements per activation scale the kernels expect: [`QK`], or [`QK_K`] for K-quant
    /// weights, whose activations llama.cpp quantizes per 256 with an f32 scale (Q8_K); we do
    /// the same so both engines round the same activations the same way.
    pub act_block: usize,
}

impl PackedMatrix {
    /// Row groups (output rows rounded up to [`ROWS`]).
    pub fn groups(&self) -> usize {
        self.n.div_ceil(ROWS)
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.k / QK
    }

    /// Bytes of quants per (group, block).
    pub fn group_block_bytes(&self) -> usize {
        match self.kind {
            PackedKind::U4 => QK * ROWS / 2,
            PackedKind::U5 | PackedKind::U8 | PackedKind::I8H => QK * ROWS,
            PackedKind::F32 => 0,
        }
    }

    /// Packs a GGUF tensor whose ggml shape is `[k, n]` (n rows of k).
    pub fn from_tensor(info: &TensorInfo, data: &[u8], k: usize, n: usize) -> Result<Self, QuantError> {
        if info.dims != [k as u64, n as u64] {
            return Err(QuantError::Shape {
                tensor: info.name.clone(),
                expected: vec![k as u64, n as u64],
                found: info.dims.clone(),
            });
        }
        Self::from_rows(info.ty, data, k, n)
            .ok_or_else(|| QuantError::Unsupported { tensor: info.name.clone(), ty: info.ty })
    }

    /// Packs `n` rows of `k` elements stored in ggml type `ty`. `None` if the type has no kernel.
    pub fn from_rows(ty: GgmlType, data: &[u8], k: usize, n: usize) -> Option<Self> {
        if !k.is_multiple_of(ty.block_len() as usize) {
            return None;
        }
        let row_bytes = k / ty.block_len() as usize * ty.block_bytes() as usize;
        debug_assert_eq!(data.len(), row_bytes * n);
        let f32_matrix = |conv: &dyn Fn(&[u8]) -> Vec<f32>| Self {
            kind: PackedKind::F32,
            n,
            k,
            quants: Vec::new(),
            scales: Vec::new(),
            f32: conv(data),
            act_block: QK,
        };
        let unsigned = match ty {
            GgmlType::F32 => {
                return Some(f32_matrix(&|d| {
                    d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
                }));
            }
            GgmlType::F16 => {
                return Some(f32_matrix(&|d| {
                    d.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
                }));
            }
            GgmlType::BF16 => {
                return Some(f32_matrix(&|d| {
                    d.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
                }));
            }
            _ => ty,
        };
        let kind = match unsigned {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => PackedKind::U4,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => PackedKind::U5,
            GgmlType::Q8_0 => PackedKind::U8,
            GgmlType::Q6_K => PackedKind::I8H,
            _ => return None,
        };
        let nb = k / QK;
        let groups = n.div_ceil(ROWS);
        let gb_bytes = if kind == PackedKind::U4 { QK * ROWS / 2 } else { QK * ROWS };
        let mut quants = vec![0u8; groups * nb * gb_bytes];
        let mut scales = vec![0u16; groups * nb * 2 * ROWS];
        let mut blocks = Vec::with_capacity(nb);
        for row in 0..n {
            let (g, r) = (row / ROWS, row % ROWS);
            blocks.clear();
            decode_row(ty, &data[row * row_bytes..][..row_bytes], &mut blocks);
            for (b, blk) in blocks.iter().enumerate() {
                let gb = g * nb + b;
                scales[gb * 2 * ROWS + r] = f16::from_f32(blk.a).to_bits();
                scales[gb * 2 * ROWS + ROWS + r] = f16::from_f32(blk.b).to_bits();
                let out = &mut quants[gb * gb_bytes..][..gb_bytes];
                for j in 0..QK / 4 {
                    for i in 0..4 {
                        let e = 4 * j + i;
                        if kind != PackedKind::U4 {
                            out[j * 32 + r * 4 + i] = blk.q[e];
                        } else if j < 4 {
                            out[j * 32 + r * 4 + i] |= blk.q[e];
                        } else {
                            out[(j - 4) * 32 + r * 4 + i] |= blk.q[e] << 4;
                        }
                    }
                }
            }
        }
        // Derived scales and offsets (-8d, -128d, a K-quant's d·scale) can overflow f16 for absurd
        // scales; such a tensor is kept exact in f32 instead of turning into infinities.
        if scales.iter().any(|&b| f16::from_bits(b).is_infinite()) {
            return Some(Self {
                kind: PackedKind::F32,
                n,
                k,
                quants: Vec::new(),
                scales: Vec::new(),
                f32: dequantize_blocks(ty, data),
                act_block: QK,
            });
        }
        let act_block = if ty.block_len() as usize == QK_K { QK_K } else { QK };
        Some(Self { kind, n, k, quants, scales, f32: Vec::new(), act_block })
    }

    /// Dequantizes row `row` (for embedding look-ups and tests).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        if self.kind == PackedKind::F32 {
            out.copy_from_slice(&self.f32[row * self.k..][..self.k]);
            return;
        }
        let (g, r) = (row / ROWS, row % ROWS);
        let nb = self.blocks();
        let gbb = self.group_block_bytes();
        for b in 0..nb {
            let gb = g * nb + b;
            let d = f16::from_bits(self.scales[gb * 2 * ROWS + r]).to_f32();
            let m = f16::from_bits(self.scales[gb * 2 * ROWS + ROWS + r]).to_f32();
            let qs = &self.quants[gb * gbb..][..gbb];
            for e in 0..QK {
                let q = self.quant(qs, r, e);
                out[b * QK + e] = match self.kind {
                    // `d` and `m` are the two halves' scales.
                    PackedKind::I8H => (if e < QK / 2 { d } else { m }) * f32::from(q as i16 - 128),
                    _ => d * f32::from(q) + m,
                };
            }
        }
    }

    /// The unsigned quant of element `e` (within a block) of lane `r`, from a (group, block) slice.
    #[inline]
    fn quant(&self, qs: &[u8], r: usize, e: usize) -> u8 {
        let (j, i) = (e / 4, e % 4);
        match self.kind {
            PackedKind::U5 | PackedKind::U8 | PackedKind::I8H => qs[j * 32 + r * 4 + i],
            _ if j < 4 => qs[j * 32 + r * 4 + i] & 0x0f,
            _ => qs[(j - 4) * 32 + r * 4 + i] >> 4,
        }
    }
}

/// One 32-element block in the unified form: `w = a·q + b` (for [`PackedKind::I8H`]:
/// `w = (q - 128) · (a for the first half, b for the second)`).
#[derive(Clone, Copy)]
struct Block {
    q: [u8; QK],
    a: f32,
    b: f32,
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q4_K / Q5_K: the 6-bit scale and minimum of sub-block `j` (0..8) from the 12 packed bytes
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Decodes one row of `ty` blocks (a whole number of them) into unified 32-element blocks.
/// The arithmetic is ggml's reference dequantization, regrouped: a K-quant sub-block's scale
/// `d·sc` and offset `-dmin·m` are computed in f32 exactly as ggml does before use.
fn decode_row(ty: GgmlType, row: &[u8], out: &mut Vec<Block>) {
    let bb = ty.block_bytes() as usize;
    for blk in row.chunks_exact(bb) {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let d = f16_at(blk, 0);
                let mut q = [0u8; QK];
                let m = match ty {
                    GgmlType::Q4_0 => {
                        unpack_nibbles(&blk[2..18], &mut q);
                        -8.0 * d
                    }
                    GgmlType::Q4_1 => {
                        unpack_nibbles(&blk[4..20], &mut q);
                        f16_at(blk, 2)
                    }
                    GgmlType::Q5_0 | GgmlType::Q5_1 => {
                        let (m, hi) = if ty == GgmlType::Q5_0 { (-16.0 * d, 2) } else { (f16_at(blk, 2), 4) };
                        let qh = u32::from_le_bytes([blk[hi], blk[hi + 1], blk[hi + 2], blk[hi + 3]]);
                        unpack_nibbles(&blk[hi + 4..hi + 20], &mut q);
                        for (e, v) in q.iter_mut().enumerate() {
                            *v |= (((qh >> e) & 1) as u8) << 4;
                        }
                        m
                    }
                    _ => {
                        for (dst, &src) in q.iter_mut().zip(&blk[2..34]) {
                            *dst = (src as i8 as i16 + 128) as u8;
                        }
                        -128.0 * d
                    }
                };
                out.push(Block { q, a: d, b: m });
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let sc = &blk[4..16];
                let (qh, ql) =
                    if ty == GgmlType::Q5_K { (Some(&blk[16..48]), &blk[48..176]) } else { (None, &blk[16..144]) };
                for j in 0..8 {
                    let (s, m) = scale_min_k4(j, sc);
                    // Sub-blocks 2i and 2i+1 share 32 bytes: low nibbles, then high ones.
                    let bytes = &ql[(j / 2) * 32..][..32];
                    let mut q = [0u8; QK];
                    for (l, v) in q.iter_mut().enumerate() {
                        let nib = if j % 2 == 0 { bytes[l] & 0x0f } else { bytes[l] >> 4 };
                        let high = qh.map_or(0, |h| (h[l] >> j) & 1);
                        *v = nib | high << 4;
                    }
                    out.push(Block { q, a: d * f32::from(s), b: -(dmin * f32::from(m)) });
                }
            }
            GgmlType::Q6_K => {
                let (ql, qh, sc, d) = (&blk[..128], &blk[128..192], &blk[192..208], f16_at(blk, 208));
                let mut w = [0u8; 256];
                for half in 0..2 {
                    let (ql, qh) = (&ql[half * 64..], &qh[half * 32..]);
                    let y = &mut w[half * 128..];
                    for l in 0..32 {
                        y[l] = (ql[l] & 0x0f) | (qh[l] & 3) << 4;
                        y[l + 32] = (ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4;
                        y[l + 64] = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
                        y[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
                    }
                }
                for (b, chunk) in w.chunks_exact(QK).enumerate() {
                    let mut q = [0u8; QK];
                    // Stored as (q - 32) + 128, the signed value offset like Q8_0's.
                    for (dst, &v) in q.iter_mut().zip(chunk) {
                        *dst = v + 96;
                    }
                    let (s0, s1) = (sc[2 * b] as i8, sc[2 * b + 1] as i8);
                    out.push(Block { q, a: d * f32::from(s0), b: d * f32::from(s1) });
                }
            }
            _ => {}
        }
    }
}

/// Dequantizes blocks of any packed type straight from the file format: the reference the
/// packing and the kernels are tested against, and the exact fallback.
pub(crate) fn dequantize_blocks(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let mut blocks = Vec::new();
    decode_row(ty, data, &mut blocks);
    let mut out = Vec::with_capacity(blocks.len() * QK);
    for blk in &blocks {
        if ty == GgmlType::Q6_K {
            out.extend(
                blk.q
                    .iter()
                    .enumerate()
                    .map(|(e, &q)| (if e < QK / 2 { blk.a } else { blk.b }) * f32::from(q as i16 - 128)),
            );
        } else {
            out.extend(blk.q.iter().map(|&q| blk.a * f32::from(q) + blk.b));
        }
    }
    out
}

/// ggml's nibble order: byte `i` holds element `i` (low) and `i + 16` (high).
fn unpack_nibbles(src: &[u8], q: &mut [u8; QK]) {
    for (i, &b) in src.iter().enumerate() {
        q[i] = b & 0x0f;
        q[i + 16] = b >> 4;
    }
}

/// Activations of `t` rows quantized per block: `x ≈ d · q`.
#[derive(Debug, Clone, Default)]
pub struct QuantizedActs {
    /// Rows.
    pub t: usize,
    /// Columns (a multiple of [`QK`]).
    pub k: usize,
    /// `t × k` quants.
    pub q: Vec<i8>,
    /// `t × k/QK` scales (f16-rounded, as ggml stores them).
    pub d: Vec<f32>,
    /// `t × k/QK` values of `d · Σq`, the correction term for weights with an offset `m`.
    pub s: Vec<f32>,
}

impl QuantizedActs {
    /// Sizes the buffers for `t` rows of `k` (contents unspecified until rows are quantized).
    pub fn set_shape(&mut self, t: usize, k: usize) {
        let nb = k / QK;
        self.t = t;
        self.k = k;
        self.q.resize(t * k, 0);
        self.d.resize(t * nb, 0.0);
        self.s.resize(t * nb, 0.0);
    }

    /// Quantizes `t` rows of `k` (a multiple of [`QK_K`]) with [`quantize_row_k`].
    pub fn quantize_k(&mut self, x: &[f32], t: usize, k: usize) {
        self.set_shape(t, k);
        let nb = k / QK;
        for r in 0..t {
            quantize_row_k(
                &x[r * k..][..k],
                &mut self.q[r * k..][..k],
                &mut self.d[r * nb..][..nb],
                &mut self.s[r * nb..][..nb],
            );
        }
    }

    /// Split borrows of the three buffers, for filling rows in parallel.
    pub fn parts_mut(&mut self) -> (&mut [i8], &mut [f32], &mut [f32]) {
        (&mut self.q, &mut self.d, &mut self.s)
    }
}

/// Quantizes one row (a multiple of [`QK_K`] long) exactly as ggml's `quantize_row_q8_K`
/// does: per 256 elements, `iscale = -127 / x_max` for the element of largest magnitude,
/// `q = min(127, round(iscale · x))` ties to even, `d = 1 / iscale` (so `d` may be negative).
/// The scale is repeated for each 32-element block (`d`, `s` hold one entry per 32) so the
/// kernels read it as they read Q8_0's.
pub fn quantize_row_k(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (sb, sup) in x.chunks_exact(QK_K).enumerate() {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in sup {
            if v.abs() > amax {
                (amax, max) = (v.abs(), v);
            }
        }
        let (iscale, scale) = if amax > 0.0 {
            let iscale = -127.0 / max;
            (iscale, 1.0 / iscale)
        } else {
            (0.0, 0.0)
        };
        for (b, blk) in sup.chunks_exact(QK).enumerate() {
            let at = sb * (QK_K / QK) + b;
            let mut sum = 0i32;
            for (dst, &v) in q[at * QK..][..QK].iter_mut().zip(blk) {
                *dst = (iscale * v).round_ties_even().min(127.0) as i8;
                sum += i32::from(*dst);
            }
            d[at] = scale;
            s[at] = scale * sum as f32;
        }
    }
}

/// Scalar block quantization, ggml's arithmetic (127/amax, round to nearest even).
pub fn quantize_block_scalar(blk: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
    let amax = blk.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (dst, &v) in q.iter_mut().zip(blk) {
        let r = (v * id).round_ties_even() as i8;
        *dst = r;
        sum += i32::from(r);
    }
    (amax, sum)
}

/// Scalar reference for `y[t][row] = Σ_k w[row][k]·x[t][k]` over rows `groups` (in units of
/// [`ROWS`]); `y` has row stride `ldy`. The SIMD kernels must agree with this.
pub(crate) fn matmul_scalar(w: &PackedMatrix, x: &QuantizedActs, groups: std::ops::Range<usize>, y: &OutRows) {
    let nb = w.blocks();
    let gbb = w.group_block_bytes();
    for g in groups {
        for t in 0..x.t {
            let mut acc = [0f32; ROWS];
            for b in 0..nb {
                let gb = g * nb + b;
                let qs = &w.quants[gb * gbb..][..gbb];
                let xq = &x.q[t * w.k + b * QK..][..QK];
                let (xd, xs) = (x.d[t * nb + b], x.s[t * nb + b]);
                for (r, a) in acc.iter_mut().enumerate() {
                    let d = f16::from_bits(w.scales[gb * 2 * ROWS + r]).to_f32();
                    let m = f16::from_bits(w.scales[gb * 2 * ROWS + ROWS + r]).to_f32();
                    if w.kind == PackedKind::I8H {
                        // Signed quants, one scale per half block, no offset.
                        let mut half = [0i32; 2];
                        for (e, &xv) in xq.iter().enumerate() {
                            half[e / (QK / 2)] += (i32::from(w.quant(qs, r, e)) - 128) * i32::from(xv);
                        }
                        *a += (half[0] as f32 * d + half[1] as f32 * m) * xd;
                        continue;
                    }
                    let mut isum = 0i32;
                    for (e, &xv) in xq.iter().enumerate() {
                        isum += i32::from(w.quant(qs, r, e)) * i32::from(xv);
                    }
                    *a += isum as f32 * (d * xd) + m * xs;
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let row = g * ROWS + r;
                if row < w.n {
                    // SAFETY: this call owns rows `groups` of every output row.
                    #[allow(unsafe_code)]
                    unsafe {
                        y.set(t, row, *a)
                    };
                }
            }
        }
    }
}

/// Scalar f32 matmul for [`PackedKind::F32`] over rows `rows`.
pub(crate) fn matmul_f32(w: &PackedMatrix, x: &[f32], t: usize, rows: std::ops::Range<usize>, y: &OutRows) {
    let k = w.k;
    for row in rows {
        let wr = &w.f32[row * k..][..k];
        for ti in 0..t {
            let xr = &x[ti * k..][..k];
            let mut acc = [0f32; 8];
            for (wc, xc) in wr.chunks_exact(8).zip(xr.chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += wc[i] * xc[i];
                }
            }
            let tail: f32 =
                wr.chunks_exact(8).remainder().iter().zip(xr.chunks_exact(8).remainder()).map(|(a, b)| a * b).sum();
            // SAFETY: this call owns columns `rows` of every output row.
            #[allow(unsafe_code)]
            unsafe {
                y.set(ti, row, acc.iter().sum::<f32>() + tail)
            };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        pub fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        pub fn f(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        }
    }

    /// Every block type the packer takes.
    pub(crate) const QUANT_TYPES: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// Random GGUF-format blocks for `n` rows of `k`: random quants and sub-scales, sane f16
    /// super-block scales.
    pub(crate) fn random_blocks(ty: GgmlType, k: usize, n: usize, rng: &mut Lcg) -> Vec<u8> {
        let mut out = Vec::new();
        let scale = |rng: &mut Lcg, out: &mut Vec<u8>, s: f32| {
            out.extend_from_slice(&f16::from_f32(s * (0.5 + rng.f().abs())).to_le_bytes());
        };
        for _ in 0..n * k / ty.block_len() as usize {
            let bytes = ty.block_bytes() as usize;
            match ty {
                GgmlType::Q4_1 | GgmlType::Q5_1 => {
                    scale(rng, &mut out, 0.02);
                    scale(rng, &mut out, -0.1);
                    out.extend((4..bytes).map(|_| rng.next() as u8));
                }
                GgmlType::Q4_K | GgmlType::Q5_K => {
                    scale(rng, &mut out, 0.002);
                    scale(rng, &mut out, 0.002);
                    out.extend((4..bytes).map(|_| rng.next() as u8));
                }
                GgmlType::Q6_K => {
                    out.extend((0..bytes - 2).map(|_| rng.next() as u8));
                    scale(rng, &mut out, 0.0005);
                }
                _ => {
                    scale(rng, &mut out, 0.02);
                    out.extend((2..bytes).map(|_| rng.next() as u8));
                }
            }
        }
        out
    }

    /// ggml's reference dequantization, written out per format exactly as ggml lays the bits
    /// (independent of `decode_row`, which regroups them for packing).
    pub(crate) fn dequant_reference(ty: GgmlType, data: &[u8]) -> Vec<f32> {
        let h = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let mut y = Vec::new();
        for x in data.chunks_exact(ty.block_bytes() as usize) {
            match ty {
                GgmlType::Q4_0 | GgmlType::Q4_1 => {
                    let (d, m, qs) =
                        if ty == GgmlType::Q4_0 { (h(x, 0), None, &x[2..]) } else { (h(x, 0), Some(h(x, 2)), &x[4..]) };
                    let mut blk = [0f32; 32];
                    for j in 0..16 {
                        let (a, b) = (f32::from(qs[j] & 15), f32::from(qs[j] >> 4));
                        blk[j] = m.map_or(d * (a - 8.0), |m| d * a + m);
                        blk[j + 16] = m.map_or(d * (b - 8.0), |m| d * b + m);
                    }
                    y.extend(blk);
                }
                GgmlType::Q5_0 | GgmlType::Q5_1 => {
                    let (d, m, o) = if ty == GgmlType::Q5_0 { (h(x, 0), None, 2) } else { (h(x, 0), Some(h(x, 2)), 4) };
                    let qh = u32::from_le_bytes([x[o], x[o + 1], x[o + 2], x[o + 3]]);
                    let qs = &x[o + 4..];
                    let mut blk = [0f32; 32];
                    for j in 0..16 {
                        let xh0 = ((qh >> j) << 4) & 0x10;
                        let xh1 = (qh >> (j + 12)) & 0x10;
                        let x0 = (u32::from(qs[j] & 0x0f) | xh0) as f32;
                        let x1 = (u32::from(qs[j] >> 4) | xh1) as f32;
                        blk[j] = m.map_or(d * (x0 - 16.0), |m| d * x0 + m);
                        blk[j + 16] = m.map_or(d * (x1 - 16.0), |m| d * x1 + m);
                    }
                    y.extend(blk);
                }
                GgmlType::Q8_0 => y.extend(x[2..34].iter().map(|&q| h(x, 0) * f32::from(q as i8))),
                GgmlType::Q4_K | GgmlType::Q5_K => {
                    let (d, dmin, sc) = (h(x, 0), h(x, 2), &x[4..16]);
                    let (qh, mut ql) =
                        if ty == GgmlType::Q5_K { (Some(&x[16..48]), &x[48..]) } else { (None, &x[16..]) };
                    let (mut is, mut u1, mut u2) = (0, 1u8, 2u8);
                    for _ in 0..4 {
                        let (s1, m1) = scale_min_k4(is, sc);
                        let (s2, m2) = scale_min_k4(is + 1, sc);
                        let (d1, d2) = (d * f32::from(s1), d * f32::from(s2));
                        let (mn1, mn2) = (dmin * f32::from(m1), dmin * f32::from(m2));
                        for l in 0..32 {
                            let hi = qh.map_or(0.0, |q| if q[l] & u1 != 0 { 16.0 } else { 0.0 });
                            y.push(d1 * (f32::from(ql[l] & 0x0f) + hi) - mn1);
                        }
                        for l in 0..32 {
                            let hi = qh.map_or(0.0, |q| if q[l] & u2 != 0 { 16.0 } else { 0.0 });
                            y.push(d2 * (f32::from(ql[l] >> 4) + hi) - mn2);
                        }
                        ql = &ql[32..];
                        is += 2;
                        u1 <<= 2;
                        u2 <<= 2;
                    }
                }
                GgmlType::Q6_K => {
                    let d = h(x, 208);
                    let mut blk = [0f32; 256];
                    for n in 0..2 {
                        let (ql, qh, sc) = (&x[n * 64..], &x[128 + n * 32..], &x[192 + n * 8..]);
                        for l in 0..32 {
                            let is = l / 16;
                            let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                            let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                            let y = &mut blk[n * 128..];
                            y[l] = d * f32::from(sc[is] as i8) * q1 as f32;
                            y[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
                            y[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
                            y[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
                        }
                    }
                    y.extend(blk);
                }
                _ => unreachable!("{ty}"),
            }
        }
        y
    }

    /// A (k, n) shape valid for `ty`'s block length.
    pub(crate) fn shape_for(ty: GgmlType, k: usize) -> usize {
        k.next_multiple_of(ty.block_len() as usize)
    }

    /// Dequantizes GGUF blocks straight from the file format (independent of the packing).
    fn dequant_gguf(ty: GgmlType, data: &[u8], k: usize, n: usize) -> Vec<f32> {
        let out = dequant_reference(ty, data);
        assert_eq!(out.len(), k * n);
        for (a, b) in out.iter().zip(dequantize_blocks(ty, data)) {
            // `d·q + (-8d)` and `d·(q - 8)` round differently in the last bit.
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1e-3),
                "{ty}: the packer's decoder differs from ggml's: {a} vs {b}"
            );
        }
        out
    }

    #[test]
    fn packing_round_trips_every_format() {
        let mut rng = Lcg(7);
        for ty in QUANT_TYPES {
            let (k, n) = (shape_for(ty, 96), 20);
            let data = random_blocks(ty, k, n, &mut rng);
            let want = dequant_gguf(ty, &data, k, n);
            let p = PackedMatrix::from_rows(ty, &data, k, n).unwrap();
            let mut row = vec![0f32; k];
            for r in 0..n {
                p.dequantize_row(r, &mut row);
                for (got, want) in row.chunks_exact(QK).zip(want[r * k..].chunks_exact(QK)) {
                    // Exact for the 32-block formats. A K-quant sub-block's `d·sc` and `dmin·m`
                    // are rounded to f16 when packed: each off by at most 2^-11, and both
                    // terms are within twice the block's largest |w|.
                    let tol = 1e-6 + 3.0 * 2f32.powi(-11) * want.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in got.iter().zip(want) {
                        assert!((a - b).abs() <= tol, "{ty} row {r}: {a} vs {b} (bound {tol})");
                    }
                }
            }
        }
    }

    #[test]
    fn k_quant_activations_follow_ggml_q8_k() {
        // Largest magnitude maps to -127 whatever its sign (iscale = -127 / x_max).
        let mut x: Vec<f32> = (0..2 * QK_K).map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0).collect();
        x[3] = 9.0;
        x[QK_K + 5] = -7.0;
        let mut qa = QuantizedActs::default();
        qa.quantize_k(&x, 1, 2 * QK_K);
        assert_eq!((qa.q[3], qa.q[QK_K + 5]), (-127, -127));
        let blocks = QK_K / QK;
        assert!(qa.d[..blocks].iter().all(|&d| d == qa.d[0]) && qa.d[0] < 0.0, "one scale per 256, signed");
        for (i, (&q, &v)) in qa.q.iter().zip(&x).enumerate() {
            let d = qa.d[i / QK];
            assert!((f32::from(q) * d - v).abs() <= d.abs() / 2.0 + 1e-6, "[{i}] {q} · {d} vs {v}");
        }
        for b in 0..2 * blocks {
            let sum: i32 = qa.q[b * QK..][..QK].iter().map(|&q| i32::from(q)).sum();
            assert_eq!(qa.s[b], qa.d[b] * sum as f32);
        }
    }

    #[test]
    fn overflowing_derived_offsets_fall_back_to_exact_f32() {
        // d = 60000: -128·d does not fit in f16.
        let mut blk = f16::from_f32(60000.0).to_le_bytes().to_vec();
        blk.extend((0..32).map(|i| i as u8));
        let p = PackedMatrix::from_rows(GgmlType::Q8_0, &blk, 32, 1).unwrap();
        assert_eq!(p.kind, PackedKind::F32);
        let mut row = [0f32; 32];
        p.dequantize_row(0, &mut row);
        assert!(row.iter().all(|v| v.is_finite()) && row[2] == 2.0 * f16::from_f32(60000.0).to_f32());
    }

    #[test]
    fn scalar_matmul_matches_dequantized_dot() {
        let mut rng = Lcg(11);
        for ty in QUANT_TYPES {
            let (k, n, t) = (shape_for(ty, 128), 19, 3);
            let data = random_blocks(ty, k, n, &mut rng);
            let w = dequant_gguf(ty, &data, k, n);
            let p = PackedMatrix::from_rows(ty, &data, k, n).unwrap();
            let x: Vec<f32> = (0..t * k).map(|_| rng.f()).collect();
            let mut qa = QuantizedActs::default();
            qa.quantize(&x, t, k);
            let mut y = vec![0f32; t * n];
            matmul_scalar(&p, &qa, 0..p.groups(), &OutRows::new(&mut y, n));
            for ti in 0..t {
                for r in 0..n {
                    let exact: f32 = (0..k).map(|c| w[r * k + c] * x[ti * k + c]).sum();
                    let got = y[ti * n + r];
                    // Activation quantization error: ~1% of the magnitude of the terms.
                    let mag: f32 = (0..k).map(|c| (w[r * k + c] * x[ti * k + c]).abs()).sum();
                    assert!((got - exact).abs() <= 0.02 * mag + 1e-4, "{ty} t{ti} r{r}: {got} vs {exact}");
                }
            }
        }
    }
}
