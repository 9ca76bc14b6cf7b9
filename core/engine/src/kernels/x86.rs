//! x86-64 SIMD kernels (AVX2 and AVX-512 VNNI on 256-bit vectors).
//!
//! Layout reminder (see `quant`): for one group of eight rows and one 32-element block, vector
//! `j` holds, in its 32-bit lane `r`, the four quants `4j..4j+4` of row `r`. Broadcasting the four
//! matching activation bytes and issuing one `vpdpbusd` therefore advances all eight row dot
//! products at once. With AVX-512, two adjacent groups share one 512-bit vector (sixteen rows):
//! `vpdpbusd` retires the same multiply-adds per cycle either way on Ice Lake and Zen 4, but each
//! activation broadcast, scale conversion and accumulator update then serves twice the rows.

#![allow(unsafe_code)] // SIMD intrinsics; every entry point checks its slice bounds first.

use std::arch::x86_64::*;
use std::ops::Range;

use super::Isa;
use crate::quant::{PackedKind, PackedMatrix, QK, QuantizedActs, ROWS};
use crate::row_writers::OutRows;

/// Token rows processed together, sharing the unpacked weights held in registers. Eight spills
/// accumulators even with AVX-512VL's 32 registers; four does not.
const NT: usize = 4;

struct Tile {
    qs: *const u8,
    /// Bytes of quants from one group to the next (a pair kernel's second group).
    group_bytes: usize,
    sc: *const u16,
    nb: usize,
    xq: *const i8,
    ldx: usize,
    xd: *const f32,
    xs: *const f32,
    ldd: usize,
    y: *mut f32,
    ldy: usize,
    rows: usize,
}

macro_rules! dispatch {
    ($f:ident, $nt:expr, $tile:expr) => {
        match $nt {
            1 => $f::<1>($tile),
            2 => $f::<2>($tile),
            3 => $f::<3>($tile),
            _ => $f::<4>($tile),
        }
    };
}

pub(super) fn matmul(isa: Isa, w: &PackedMatrix, x: &QuantizedActs, groups: Range<usize>, y: &OutRows) {
    let nb = w.blocks();
    let gbb = w.group_block_bytes();
    assert!(groups.end <= w.groups());
    assert!(x.t.checked_mul(nb).is_some_and(|e| e <= x.d.len() && e <= x.s.len()));
    let packed = w.groups().checked_mul(nb);
    assert!(packed.and_then(|p| p.checked_mul(gbb)).is_some_and(|b| b <= w.quants.len()));
    assert!(packed.and_then(|p| p.checked_mul(2 * ROWS)).is_some_and(|b| b <= w.scales.len()));
    assert!(x.t.checked_mul(w.k).is_some_and(|e| e <= x.q.len()));
    // With 512-bit VNNI, adjacent groups run in pairs (see the module docs). Each lane does the
    // same operations in the same order as the 8-row kernel, so a row's result does not depend
    // on whether it was paired (which follows the chunking, and so the thread count).
    let pairs = isa == Isa::Avx512Vnni && matches!(w.kind, PackedKind::U4 | PackedKind::U5 | PackedKind::U8);
    let mut g = groups.start;
    while g < groups.end {
        let pair = pairs && g + 1 < groups.end;
        let rows = (w.n - g * ROWS).min(if pair { 2 * ROWS } else { ROWS });
        let mut t0 = 0;
        while t0 < x.t {
            let nt = (x.t - t0).min(NT);
            let tile = Tile {
                // SAFETY (all pointer offsets): within the lengths asserted above.
                qs: unsafe { w.quants.as_ptr().add(g * nb * gbb) },
                group_bytes: nb * gbb,
                sc: unsafe { w.scales.as_ptr().add(g * nb * 2 * ROWS) },
                nb,
                xq: unsafe { x.q.as_ptr().add(t0 * w.k) },
                ldx: w.k,
                xd: unsafe { x.d.as_ptr().add(t0 * nb) },
                xs: unsafe { x.s.as_ptr().add(t0 * nb) },
                ldd: nb,
                // The tile's last row is checked; earlier rows lie below it at stride `ld`.
                y: {
                    y.span(t0 + nt - 1, g * ROWS, rows);
                    y.span(t0, g * ROWS, rows)
                },
                ldy: y.ld,
                rows,
            };
            // SAFETY: the caller's `isa` was detected on this CPU (`Isa::available`); a pair's
            // second group follows the first in `quants` and `scales` (group-major), inside the
            // lengths asserted above because `g + 1 < groups.end <= w.groups()`.
            unsafe {
                match (isa, &w.kind) {
                    (Isa::Avx512Vnni, PackedKind::U4) if pair => dispatch!(u4_vnni_pair, nt, &tile),
                    (Isa::Avx512Vnni, PackedKind::U5 | PackedKind::U8) if pair => dispatch!(u8_vnni_pair, nt, &tile),
                    (Isa::Avx512Vnni, PackedKind::U4) => dispatch!(u4_vnni, nt, &tile),
                    (Isa::Avx512Vnni, PackedKind::U5 | PackedKind::U8) => dispatch!(u8_vnni, nt, &tile),
                    (_, PackedKind::U4) => dispatch!(u4_avx2, nt, &tile),
                    (_, PackedKind::U5) => dispatch!(u5_avx2, nt, &tile),
                    (_, PackedKind::U8) => dispatch!(u8_avx2, nt, &tile),
                    // Signed weights × signed activations: the sign trick serves every ISA.
                    (_, PackedKind::I8H) => dispatch!(i8h_avx2, nt, &tile),
                    (_, PackedKind::F32) => unreachable!("f32 weights use the f32 kernel"),
                }
            }
            t0 += nt;
        }
        g += if pair { 2 } else { 1 };
    }
}

#[inline(always)]
unsafe fn bcast4(p: *const i8, j: usize) -> __m256i {
    unsafe { _mm256_set1_epi32(std::ptr::read_unaligned(p.cast::<i32>().add(j))) }
}

#[inline(always)]
unsafe fn store_rows(acc: __m256, y: *mut f32, rows: usize) {
    unsafe {
        if rows == ROWS {
            _mm256_storeu_ps(y, acc);
        } else {
            let mut tmp = [0f32; ROWS];
            _mm256_storeu_ps(tmp.as_mut_ptr(), acc);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), y, rows);
        }
    }
}

/// Body shared by the four kernels. `$unpack` yields the eight weight vectors of a block,
/// `$dot` reduces them against one token's block to eight i32 lanes, and `$offset` says whether
/// the `m · s` term applies.
macro_rules! kernel {
    ($name:ident, $feat:literal, $unpack:ident, $dot:ident, $offset:expr) => {
        #[target_feature(enable = $feat)]
        unsafe fn $name<const N: usize>(t: &Tile) {
            unsafe {
                // The `m · s` term joins each block's sum at once: the two nearly cancel (for
                // 8-bit weights `m = -128d`), and summing them apart would lose the difference.
                let mut acc = [_mm256_setzero_ps(); N];
                for b in 0..t.nb {
                    let w = $unpack(t.qs, b);
                    let s = t.sc.add(b * 2 * ROWS);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(s.cast()));
                    let m = _mm256_cvtph_ps(_mm_loadu_si128(s.add(ROWS).cast()));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = t.xq.add(i * t.ldx + b * QK);
                        let isum = $dot(&w, x);
                        let dx = _mm256_set1_ps(*t.xd.add(i * t.ldd + b));
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, dx), *a);
                        if $offset {
                            *a = _mm256_fmadd_ps(m, _mm256_set1_ps(*t.xs.add(i * t.ldd + b)), *a);
                        }
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    store_rows(*a, t.y.add(i * t.ldy), t.rows);
                }
            }
        }
    };
}

/// Sixteen-row form of [`kernel!`] for two adjacent groups (`t.rows` counts both); 512-bit VNNI.
macro_rules! pair_kernel {
    ($name:ident, $unpack:ident) => {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $name<const N: usize>(t: &Tile) {
            unsafe {
                let mut acc = [_mm512_setzero_ps(); N];
                let sc_second = t.nb * 2 * ROWS;
                for b in 0..t.nb {
                    let w = $unpack(t.qs, t.group_bytes, b);
                    let s = t.sc.add(b * 2 * ROWS);
                    let d = halves(s, sc_second);
                    let m = halves(s.add(ROWS), sc_second);
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = t.xq.add(i * t.ldx + b * QK);
                        let isum = dot_vnni512(&w, x);
                        let dx = _mm512_set1_ps(*t.xd.add(i * t.ldd + b));
                        *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, dx), *a);
                        *a = _mm512_fmadd_ps(m, _mm512_set1_ps(*t.xs.add(i * t.ldd + b)), *a);
                    }
                }
                let mask: __mmask16 = if t.rows >= 2 * ROWS { 0xffff } else { (1u16 << t.rows) - 1 };
                for (i, a) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(t.y.add(i * t.ldy), mask, *a);
                }
            }
        }
    };
}

/// Block `b` of two groups, the second `second` bytes after the first: vector `j` holds the
/// first group's vector `j` in its low half and the second's in its high half.
#[inline(always)]
unsafe fn unpack_u4_pair(qs: *const u8, second: usize, b: usize) -> [__m512i; 8] {
    unsafe {
        let p = qs.add(b * QK * ROWS / 2);
        let mask = _mm512_set1_epi8(0x0f);
        let v = [join(p, second, 0), join(p, second, 1), join(p, second, 2), join(p, second, 3)];
        [
            _mm512_and_si512(v[0], mask),
            _mm512_and_si512(v[1], mask),
            _mm512_and_si512(v[2], mask),
            _mm512_and_si512(v[3], mask),
            _mm512_and_si512(_mm512_srli_epi16(v[0], 4), mask),
            _mm512_and_si512(_mm512_srli_epi16(v[1], 4), mask),
            _mm512_and_si512(_mm512_srli_epi16(v[2], 4), mask),
            _mm512_and_si512(_mm512_srli_epi16(v[3], 4), mask),
        ]
    }
}

#[inline(always)]
unsafe fn unpack_u8_pair(qs: *const u8, second: usize, b: usize) -> [__m512i; 8] {
    unsafe {
        let p = qs.add(b * QK * ROWS);
        [
            join(p, second, 0),
            join(p, second, 1),
            join(p, second, 2),
            join(p, second, 3),
            join(p, second, 4),
            join(p, second, 5),
            join(p, second, 6),
            join(p, second, 7),
        ]
    }
}

/// The 32 bytes at `p + 32j` (low half) and `second` bytes further on (high half).
/// The 512-bit helpers avoid closures and `array::from_fn`: a closure is compiled without its
/// caller's target features, so its 512-bit intrinsics would become calls.
#[inline(always)]
unsafe fn join(p: *const u8, second: usize, j: usize) -> __m512i {
    unsafe {
        let lo = _mm256_loadu_si256(p.add(32 * j).cast());
        let hi = _mm256_loadu_si256(p.add(second + 32 * j).cast());
        _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
    }
}

/// Eight f16 values at `p` (low half) and `second` elements further on (high half), as f32.
#[inline(always)]
unsafe fn halves(p: *const u16, second: usize) -> __m512 {
    unsafe {
        let lo = _mm_loadu_si128(p.cast());
        let hi = _mm_loadu_si128(p.add(second).cast());
        _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1))
    }
}

#[inline(always)]
unsafe fn bcast4_512(x: *const i8, j: usize) -> __m512i {
    unsafe { _mm512_set1_epi32(std::ptr::read_unaligned(x.cast::<i32>().add(j))) }
}

/// [`dot_vnni`] on sixteen rows; the same two chains in the same order.
#[inline(always)]
unsafe fn dot_vnni512(w: &[__m512i; 8], x: *const i8) -> __m512i {
    unsafe {
        let z = _mm512_setzero_si512();
        let mut a0 = _mm512_dpbusd_epi32(z, w[0], bcast4_512(x, 0));
        let mut a1 = _mm512_dpbusd_epi32(z, w[1], bcast4_512(x, 1));
        a0 = _mm512_dpbusd_epi32(a0, w[2], bcast4_512(x, 2));
        a1 = _mm512_dpbusd_epi32(a1, w[3], bcast4_512(x, 3));
        a0 = _mm512_dpbusd_epi32(a0, w[4], bcast4_512(x, 4));
        a1 = _mm512_dpbusd_epi32(a1, w[5], bcast4_512(x, 5));
        a0 = _mm512_dpbusd_epi32(a0, w[6], bcast4_512(x, 6));
        a1 = _mm512_dpbusd_epi32(a1, w[7], bcast4_512(x, 7));
        _mm512_add_epi32(a0, a1)
    }
}

pair_kernel!(u4_vnni_pair, unpack_u4_pair);
pair_kernel!(u8_vnni_pair, unpack_u8_pair);

#[inline(always)]
unsafe fn unpack_u4(qs: *const u8, b: usize) -> [__m256i; 8] {
    unsafe {
        let p = qs.add(b * QK * ROWS / 2).cast::<__m256i>();
        let mask = _mm256_set1_epi8(0x0f);
        let p0 = _mm256_loadu_si256(p);
        let p1 = _mm256_loadu_si256(p.add(1));
        let p2 = _mm256_loadu_si256(p.add(2));
        let p3 = _mm256_loadu_si256(p.add(3));
        [
            _mm256_and_si256(p0, mask),
            _mm256_and_si256(p1, mask),
            _mm256_and_si256(p2, mask),
            _mm256_and_si256(p3, mask),
            _mm256_and_si256(_mm256_srli_epi16(p0, 4), mask),
            _mm256_and_si256(_mm256_srli_epi16(p1, 4), mask),
            _mm256_and_si256(_mm256_srli_epi16(p2, 4), mask),
            _mm256_and_si256(_mm256_srli_epi16(p3, 4), mask),
        ]
    }
}

#[inline(always)]
unsafe fn unpack_u8(qs: *const u8, b: usize) -> [__m256i; 8] {
    unsafe {
        let p = qs.add(b * QK * ROWS).cast::<__m256i>();
        std::array::from_fn(|j| _mm256_loadu_si256(p.add(j)))
    }
}

/// AVX2 path for 8-bit weights: flip to signed and use the sign trick, because `vpmaddubsw`
/// on unsigned 0..255 × i8 would saturate its i16 pair sums.
#[inline(always)]
unsafe fn unpack_u8_signed(qs: *const u8, b: usize) -> [__m256i; 8] {
    unsafe {
        let bias = _mm256_set1_epi8(-128);
        unpack_u8(qs, b).map(|v| _mm256_xor_si256(v, bias))
    }
}

#[inline(always)]
unsafe fn dot_vnni(w: &[__m256i; 8], x: *const i8) -> __m256i {
    unsafe {
        let z = _mm256_setzero_si256();
        let mut a0 = _mm256_dpbusd_epi32(z, w[0], bcast4(x, 0));
        let mut a1 = _mm256_dpbusd_epi32(z, w[1], bcast4(x, 1));
        a0 = _mm256_dpbusd_epi32(a0, w[2], bcast4(x, 2));
        a1 = _mm256_dpbusd_epi32(a1, w[3], bcast4(x, 3));
        a0 = _mm256_dpbusd_epi32(a0, w[4], bcast4(x, 4));
        a1 = _mm256_dpbusd_epi32(a1, w[5], bcast4(x, 5));
        a0 = _mm256_dpbusd_epi32(a0, w[6], bcast4(x, 6));
        a1 = _mm256_dpbusd_epi32(a1, w[7], bcast4(x, 7));
        _mm256_add_epi32(a0, a1)
    }
}

/// 4-bit quants × i8: each `vpmaddubsw` pair sum is at most 2·15·127, so all eight fit in i16
/// before the single widening `vpmaddwd`.
#[inline(always)]
unsafe fn dot_u4_avx2(w: &[__m256i; 8], x: *const i8) -> __m256i {
    unsafe {
        let mut s = _mm256_maddubs_epi16(w[0], bcast4(x, 0));
        for (j, wj) in w.iter().enumerate().skip(1) {
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(*wj, bcast4(x, j)));
        }
        _mm256_madd_epi16(s, _mm256_set1_epi16(1))
    }
}

#[inline(always)]
unsafe fn dot_i8_avx2(w: &[__m256i; 8], x: *const i8) -> __m256i {
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        for (j, wj) in w.iter().enumerate() {
            let xs = _mm256_sign_epi8(bcast4(x, j), *wj);
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(*wj), xs);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        acc
    }
}

/// 5-bit quants × i8: a `vpmaddubsw` pair sum is at most 2·31·128, so four of them still fit
/// in i16 before widening.
#[inline(always)]
unsafe fn dot_u5_avx2(w: &[__m256i; 8], x: *const i8) -> __m256i {
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let half = |j: usize| {
            let mut s = _mm256_maddubs_epi16(w[j], bcast4(x, j));
            for (i, wi) in w.iter().enumerate().skip(j + 1).take(3) {
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(*wi, bcast4(x, i)));
            }
            _mm256_madd_epi16(s, ones)
        };
        _mm256_add_epi32(half(0), half(4))
    }
}

/// Signed × signed over each 16-element half of a block (vectors 0..4 and 4..8).
#[inline(always)]
unsafe fn dot_i8_halves_avx2(w: &[__m256i; 8], x: *const i8) -> (__m256i, __m256i) {
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let part = |j: usize| {
            let xs = _mm256_sign_epi8(bcast4(x, j), w[j]);
            _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w[j]), xs), ones)
        };
        let lo = _mm256_add_epi32(_mm256_add_epi32(part(0), part(1)), _mm256_add_epi32(part(2), part(3)));
        let hi = _mm256_add_epi32(_mm256_add_epi32(part(4), part(5)), _mm256_add_epi32(part(6), part(7)));
        (lo, hi)
    }
}

/// [`PackedKind::I8H`]: two scales per block (the `d` and `m` slots hold the halves' scales).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8h_avx2<const N: usize>(t: &Tile) {
    unsafe {
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..t.nb {
            let w = unpack_u8_signed(t.qs, b);
            let s = t.sc.add(b * 2 * ROWS);
            let d_lo = _mm256_cvtph_ps(_mm_loadu_si128(s.cast()));
            let d_hi = _mm256_cvtph_ps(_mm_loadu_si128(s.add(ROWS).cast()));
            for (i, a) in acc.iter_mut().enumerate() {
                let (lo, hi) = dot_i8_halves_avx2(&w, t.xq.add(i * t.ldx + b * QK));
                let dx = _mm256_set1_ps(*t.xd.add(i * t.ldd + b));
                let sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), d_lo, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d_hi));
                *a = _mm256_fmadd_ps(sum, dx, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            store_rows(*a, t.y.add(i * t.ldy), t.rows);
        }
    }
}

kernel!(u4_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", unpack_u4, dot_vnni, true);
kernel!(u5_avx2, "avx2,fma,f16c", unpack_u8, dot_u5_avx2, true);
kernel!(u8_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", unpack_u8, dot_vnni, true);
kernel!(u4_avx2, "avx2,fma,f16c", unpack_u4, dot_u4_avx2, true);
// The signed dot already includes the -128 offset, so the `m · s` term is skipped.
kernel!(u8_avx2, "avx2,fma,f16c", unpack_u8_signed, dot_i8_avx2, false);

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Quantizes one 32-element block to i8 (ggml's rounding: 127/amax, nearest-even); returns
/// `(amax, Σq)`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_impl(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let mut m = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
        m = _mm256_max_ps(m, _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let i: [__m256i; 4] = std::array::from_fn(|k| {
            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01));
        // packs interleave 128-bit lanes; the permute restores element order.
        let p16a = _mm256_packs_epi32(i[0], i[1]);
        let p16b = _mm256_packs_epi32(i[2], i[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr().cast(), ordered);
        (amax, _mm_cvtsi128_si32(s1))
    }
}

/// See [`quantize_block_impl`].
pub(crate) fn quantize_block(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
    // SAFETY: only called when `Isa::detect()` found AVX2/FMA/F16C.
    unsafe { quantize_block_impl(x, q) }
}

/// `out[g] = qs[g] · k` for each of the `out.len()` queries of a GQA group, `qs` laid out
/// query-major with `k.len()` (a multiple of 16) elements each; `k` is converted once.
/// Horizontal sums of two vectors at once.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum2(a: __m256, b: __m256) -> (f32, f32) {
    let h = _mm256_hadd_ps(a, b);
    let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    let s = _mm_hadd_ps(s, s);
    (_mm_cvtss_f32(s), _mm_cvtss_f32(_mm_shuffle_ps(s, s, 1)))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_group_impl(qs: &[f32], k: &[u16], out: &mut [f32]) {
    unsafe {
        let hd = k.len();
        let mut acc = [_mm256_setzero_ps(); 8];
        let g = out.len();
        for i in (0..hd).step_by(8) {
            let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(i).cast()));
            for (j, a) in acc.iter_mut().enumerate().take(g) {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(qs.as_ptr().add(j * hd + i)), kv, *a);
            }
        }
        for (j, o) in out.iter_mut().enumerate() {
            *o = hsum(acc[j]);
        }
    }
}

/// `outs[g] += ws[g] · v` for each query of a group (`outs` query-major, `v.len()` each).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn axpy_f16_group_impl(outs: &mut [f32], ws: &[f32], v: &[u16]) {
    unsafe {
        let hd = v.len();
        for i in (0..hd).step_by(8) {
            let vv = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i).cast()));
            for (j, &w) in ws.iter().enumerate() {
                let o = outs.as_mut_ptr().add(j * hd + i);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(w), vv, _mm256_loadu_ps(o)));
            }
        }
    }
}

pub(super) fn dot_f16_group(qs: &[f32], k: &[u16], out: &mut [f32]) {
    assert!(out.len() <= 8 && k.len().is_multiple_of(16) && qs.len() >= out.len() * k.len());
    // SAFETY: bounds checked; SIMD `Isa` detected by the caller.
    unsafe { dot_f16_group_impl(qs, k, out) }
}

pub(super) fn axpy_f16_group(outs: &mut [f32], ws: &[f32], v: &[u16]) {
    assert!(v.len().is_multiple_of(16) && outs.len() >= ws.len() * v.len());
    // SAFETY: as above.
    unsafe { axpy_f16_group_impl(outs, ws, v) }
}

/// `e^x` for eight lanes (Cephes polynomial, ~1 ulp on [-87, 88]; lanes below -87 give ~0).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_ps(x: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3)), _mm256_set1_ps(88.3));
    let n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), _mm256_set1_ps(0.5)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
    let pow2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
}

/// Attention of the `G` query heads of one GQA group (one query row) over positions `range` of
/// a sequence, read straight from the paged cache. Leaves the unnormalized result in `part`
/// (see [`super::AttnPartial`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // `i` indexes registers and memory alike
unsafe fn attend_segment_impl<const G: usize>(
    q: &[f32],
    kv: &crate::kv::KvLayer<'_>,
    blocks: &[u32],
    kvh: usize,
    range: Range<usize>,
    scale: f32,
    scores: &mut Vec<f32>,
    part: &mut super::AttnPartial,
) {
    unsafe {
        const HD: usize = 64;
        let bs = kv.block_size;
        let row = kv.kv_dim;
        let base = kv.data.as_ptr();
        let qp = q.as_ptr();
        let len = range.len();
        // scores[g * len + i], each head's run padded to a multiple of 8 for the vector exp.
        let stride = len.next_multiple_of(8);
        scores.clear();
        scores.resize(G * stride, f32::NEG_INFINITY);
        let sp = scores.as_mut_ptr();
        let mut max = [f32::NEG_INFINITY; G];
        let key = |p: usize| base.add((*blocks.get_unchecked(p / bs) as usize * 2 * bs + p % bs) * row + kvh * HD);
        // Two positions per iteration: independent accumulator chains keep the FMA pipes busy
        // (one position alone is a chain of eight dependent FMAs per head).
        let mut i = 0;
        while i < len {
            let pair = i + 1 < len;
            let k0 = key(range.start + i);
            let k1 = if pair { key(range.start + i + 1) } else { k0 };
            let mut a0 = [_mm256_setzero_ps(); G];
            let mut a1 = [_mm256_setzero_ps(); G];
            for c in (0..HD).step_by(8) {
                let x0 = _mm256_cvtph_ps(_mm_loadu_si128(k0.add(c).cast()));
                let x1 = _mm256_cvtph_ps(_mm_loadu_si128(k1.add(c).cast()));
                for g in 0..G {
                    let qv = _mm256_loadu_ps(qp.add(g * HD + c));
                    a0[g] = _mm256_fmadd_ps(qv, x0, a0[g]);
                    a1[g] = _mm256_fmadd_ps(qv, x1, a1[g]);
                }
            }
            for g in 0..G {
                let (s0, s1) = hsum2(a0[g], a1[g]);
                let (s0, s1) = (s0 * scale, s1 * scale);
                *sp.add(g * stride + i) = s0;
                max[g] = max[g].max(s0);
                if pair {
                    *sp.add(g * stride + i + 1) = s1;
                    max[g] = max[g].max(s1);
                }
            }
            i += 2;
        }
        for g in 0..G {
            let m = _mm256_set1_ps(max[g]);
            let mut sum = _mm256_setzero_ps();
            for c in (0..stride).step_by(8) {
                let v = _mm256_loadu_ps(sp.add(g * stride + c));
                // Padding lanes hold -inf: masked to 0 so they add nothing.
                let valid = _mm256_cmp_ps::<_CMP_NEQ_OQ>(v, _mm256_set1_ps(f32::NEG_INFINITY));
                let e = _mm256_and_ps(exp_ps(_mm256_sub_ps(v, m)), valid);
                _mm256_storeu_ps(sp.add(g * stride + c), e);
                sum = _mm256_add_ps(sum, e);
            }
            part.m[g] = max[g];
            part.l[g] = hsum(sum);
        }
        // Two 8-wide column chunks per pass keep 2·G accumulators in registers (all eight chunks
        // at once would spill with AVX2's sixteen); each value row is still read once per chunk.
        let vrow =
            |p: usize| base.add(((*blocks.get_unchecked(p / bs) as usize * 2 + 1) * bs + p % bs) * row + kvh * HD);
        for c in (0..HD).step_by(16) {
            let mut o0 = [_mm256_setzero_ps(); G];
            let mut o1 = [_mm256_setzero_ps(); G];
            for (i, p) in range.clone().enumerate() {
                let v = vrow(p).add(c);
                let v0 = _mm256_cvtph_ps(_mm_loadu_si128(v.cast()));
                let v1 = _mm256_cvtph_ps(_mm_loadu_si128(v.add(8).cast()));
                for g in 0..G {
                    let w = _mm256_set1_ps(*sp.add(g * stride + i));
                    o0[g] = _mm256_fmadd_ps(w, v0, o0[g]);
                    o1[g] = _mm256_fmadd_ps(w, v1, o1[g]);
                }
            }
            for g in 0..G {
                _mm256_storeu_ps(part.o.as_mut_ptr().add(g * HD + c), o0[g]);
                _mm256_storeu_ps(part.o.as_mut_ptr().add(g * HD + c + 8), o1[g]);
            }
        }
    }
}

/// SIMD attention over one segment for head size 64 and GQA groups of 1–4 query heads; `false`
/// if the shape is not one this kernel covers (the caller then uses the portable path).
#[allow(clippy::too_many_arguments)]
pub(super) fn attend_segment(
    q: &[f32],
    kv: &crate::kv::KvLayer<'_>,
    blocks: &[u32],
    kvh: usize,
    range: Range<usize>,
    scale: f32,
    scores: &mut Vec<f32>,
    part: &mut super::AttnPartial,
) -> bool {
    let g = q.len() / 64;
    if kv.head_dim != 64 || !(1..=4).contains(&g) || q.len() != g * 64 || range.is_empty() {
        return false;
    }
    // Every position's block and row must lie inside the layer: checked once here so the
    // kernel's loads need no bounds checks.
    assert!(kv.block_size > 0 && (kvh + 1).checked_mul(64).is_some_and(|e| e <= kv.kv_dim));
    let need_blocks = range.end.div_ceil(kv.block_size);
    assert!(blocks.len() >= need_blocks);
    let per_block =
        kv.block_size.checked_mul(kv.kv_dim).and_then(|e| e.checked_mul(2)).expect("KV block size overflows");
    let first = range.start / kv.block_size;
    assert!(blocks[first..need_blocks].iter().all(|&b| {
        (b as usize).checked_add(1).and_then(|n| n.checked_mul(per_block)).is_some_and(|e| e <= kv.data.len())
    }));
    // SAFETY: bounds established above; SIMD `Isa` detected by the caller.
    unsafe {
        match g {
            1 => attend_segment_impl::<1>(q, kv, blocks, kvh, range, scale, scores, part),
            2 => attend_segment_impl::<2>(q, kv, blocks, kvh, range, scale, scores, part),
            3 => attend_segment_impl::<3>(q, kv, blocks, kvh, range, scale, scores, part),
            _ => attend_segment_impl::<4>(q, kv, blocks, kvh, range, scale, scores, part),
        }
    }
    true
}
