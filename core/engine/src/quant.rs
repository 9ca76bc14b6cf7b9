//! Weight and activation formats for the CPU matmul kernels.
//!
//! GGUF block formats (Q4_0, Q4_1, Q8_0, F16, BF16, F32) are unpacked once at load time into a
//! [`PackedMatrix`]: rows are taken eight at a time and their 4-byte groups interleaved so that a
//! single `vpdpbusd` (u8 × i8 → i32) computes one partial dot product for each of eight output
//! rows, with no horizontal sums. Every quantized format becomes `w = d·q + m` with unsigned `q`
//! (Q4_0: `m = -8d`; Q8_0: `q + 128`, `m = -128d`), so one kernel serves them all. Activations
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

/// Why a tensor cannot be used as a weight matrix.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The tensor's type has no CPU kernel yet.
    #[error(
        "tensor {tensor}: type {ty} is not supported by the CPU backend (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)"
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
    /// 8-bit unsigned quants: per (group, block) 256 bytes.
    U8,
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
            PackedKind::U8 => QK * ROWS,
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
        let row_bytes = k / ty.block_len() as usize * ty.block_bytes() as usize;
        debug_assert_eq!(data.len(), row_bytes * n);
        let f32_matrix = |conv: &dyn Fn(&[u8]) -> Vec<f32>| Self {
            kind: PackedKind::F32,
            n,
            k,
            quants: Vec::new(),
            scales: Vec::new(),
            f32: conv(data),
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
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => ty,
            _ => return None,
        };
        let nb = k / QK;
        let groups = n.div_ceil(ROWS);
        let (kind, gb_bytes) =
            if unsigned == GgmlType::Q8_0 { (PackedKind::U8, QK * ROWS) } else { (PackedKind::U4, QK * ROWS / 2) };
        let mut quants = vec![0u8; groups * nb * gb_bytes];
        let mut scales = vec![0u16; groups * nb * 2 * ROWS];
        let bb = ty.block_bytes() as usize;
        let mut q = [0u8; QK];
        for row in 0..n {
            let (g, r) = (row / ROWS, row % ROWS);
            for b in 0..nb {
                let blk = &data[row * row_bytes + b * bb..][..bb];
                let d = f16::from_le_bytes([blk[0], blk[1]]);
                let m = match ty {
                    GgmlType::Q4_0 => {
                        unpack_nibbles(&blk[2..18], &mut q);
                        f16::from_f32(-8.0 * d.to_f32())
                    }
                    GgmlType::Q4_1 => {
                        unpack_nibbles(&blk[4..20], &mut q);
                        f16::from_le_bytes([blk[2], blk[3]])
                    }
                    _ => {
                        for (dst, &src) in q.iter_mut().zip(&blk[2..34]) {
                            *dst = (src as i8 as i16 + 128) as u8;
                        }
                        f16::from_f32(-128.0 * d.to_f32())
                    }
                };
                let gb = g * nb + b;
                scales[gb * 2 * ROWS + r] = d.to_bits();
                scales[gb * 2 * ROWS + ROWS + r] = m.to_bits();
                let out = &mut quants[gb * gb_bytes..][..gb_bytes];
                for j in 0..QK / 4 {
                    for i in 0..4 {
                        let e = 4 * j + i;
                        if kind == PackedKind::U8 {
                            out[j * 32 + r * 4 + i] = q[e];
                        } else if j < 4 {
                            out[j * 32 + r * 4 + i] |= q[e];
                        } else {
                            out[(j - 4) * 32 + r * 4 + i] |= q[e] << 4;
                        }
                    }
                }
            }
        }
        // Q4_0/Q8_0 offsets are derived (-8d, -128d) and can overflow f16 for absurd scales; such a
        // tensor is kept exact in f32 instead of turning into infinities.
        if scales.iter().any(|&b| f16::from_bits(b).is_infinite()) {
            return Some(Self {
                kind: PackedKind::F32,
                n,
                k,
                quants: Vec::new(),
                scales: Vec::new(),
                f32: dequantize_blocks(ty, data),
            });
        }
        Some(Self { kind, n, k, quants, scales, f32: Vec::new() })
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
                out[b * QK + e] = d * f32::from(self.quant(qs, r, e)) + m;
            }
        }
    }

    /// The unsigned quant of element `e` (within a block) of lane `r`, from a (group, block) slice.
    #[inline]
    fn quant(&self, qs: &[u8], r: usize, e: usize) -> u8 {
        let (j, i) = (e / 4, e % 4);
        match self.kind {
            PackedKind::U8 => qs[j * 32 + r * 4 + i],
            _ if j < 4 => qs[j * 32 + r * 4 + i] & 0x0f,
            _ => qs[(j - 4) * 32 + r * 4 + i] >> 4,
        }
    }
}

/// Dequantizes Q4_0 / Q4_1 / Q8_0 blocks straight from the file format.
pub(crate) fn dequantize_blocks(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let bb = ty.block_bytes() as usize;
    let mut out = Vec::with_capacity(data.len() / bb * QK);
    let mut q = [0u8; QK];
    for blk in data.chunks_exact(bb) {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        match ty {
            GgmlType::Q4_0 => {
                unpack_nibbles(&blk[2..18], &mut q);
                out.extend(q.iter().map(|&v| d * (f32::from(v) - 8.0)));
            }
            GgmlType::Q4_1 => {
                let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                unpack_nibbles(&blk[4..20], &mut q);
                out.extend(q.iter().map(|&v| d * f32::from(v) + m));
            }
            _ => out.extend(blk[2..34].iter().map(|&v| d * f32::from(v as i8))),
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

    /// Split borrows of the three buffers, for filling rows in parallel.
    pub fn parts_mut(&mut self) -> (&mut [i8], &mut [f32], &mut [f32]) {
        (&mut self.q, &mut self.d, &mut self.s)
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

    /// Random GGUF-format blocks for `n` rows of `k`.
    pub(crate) fn random_blocks(ty: GgmlType, k: usize, n: usize, rng: &mut Lcg) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..n * k / QK {
            let d = f16::from_f32(0.01 + 0.02 * rng.f().abs()).to_le_bytes();
            out.extend_from_slice(&d);
            match ty {
                GgmlType::Q4_1 => {
                    out.extend_from_slice(&f16::from_f32(-0.1 * rng.f().abs()).to_le_bytes());
                    out.extend((0..16).map(|_| rng.next() as u8));
                }
                GgmlType::Q4_0 => out.extend((0..16).map(|_| rng.next() as u8)),
                GgmlType::Q8_0 => out.extend((0..32).map(|_| rng.next() as u8)),
                _ => unreachable!(),
            }
        }
        out
    }

    /// Dequantizes GGUF blocks straight from the file format (independent of the packing).
    fn dequant_gguf(ty: GgmlType, data: &[u8], k: usize, n: usize) -> Vec<f32> {
        let out = dequantize_blocks(ty, data);
        assert_eq!(out.len(), k * n);
        out
    }

    #[test]
    fn packing_round_trips_every_format() {
        let mut rng = Lcg(7);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let (k, n) = (96, 20);
            let data = random_blocks(ty, k, n, &mut rng);
            let want = dequant_gguf(ty, &data, k, n);
            let p = PackedMatrix::from_rows(ty, &data, k, n).unwrap();
            let mut row = vec![0f32; k];
            for r in 0..n {
                p.dequantize_row(r, &mut row);
                for (a, b) in row.iter().zip(&want[r * k..]) {
                    assert!((a - b).abs() < 1e-6, "{ty} row {r}: {a} vs {b}");
                }
            }
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
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let (k, n, t) = (128, 19, 3);
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
