//! The model file and the windowed scorer.
//!
//! The model is an embedding bag with one hidden layer (fastText's shape, plus a ReLU): each
//! hashed feature has an `H`-wide embedding; a window's hidden layer is
//! `relu(b1 + scale · Σ(±embedding) / sqrt(features in window))` over the window's distinct
//! features, its logits are
//! `b2 + W2 · hidden`, and its harm is `1 − p(benign)` under the softmax. A text's score is its
//! most harmful window, so a harmful ask inside a long document is not diluted by the rest,
//! and turns joined into one text are read together.
//!
//! File layout (little-endian), written by the trainer and compiled into the filter:
//!
//! ```text
//! magic "CPSG"  version u32 = 3
//! bits u32  classes u32  hidden u32  window u32  stride u32
//! scale f32  b1[hidden] f32  w2[hidden][classes] f32  b2[classes] f32
//! threshold[classes] f32 (threshold[0]: the rule floor)
//! embedding[2^bits][hidden] i8
//! ```
//!
//! Class 0 is benign; class `1 + k` is `Category::ALL[k]`.

use crate::category::Category;

/// Number of classes: benign plus every category.
pub const CLASSES: usize = 1 + Category::ALL.len();
/// Widest hidden layer the scorer supports.
pub const MAX_HIDDEN: usize = 64;
const MAGIC: &[u8; 4] = b"CPSG";
const VERSION: u32 = 3;
const HEADER: usize = 4 + 4 * 6;

/// Why a model file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// The file does not start with the model magic and version.
    Format,
    /// A header field is outside what the scorer supports (named).
    Field(&'static str),
    /// The file's length does not match its header.
    Size { expected: usize, found: usize },
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::Format => write!(f, "not a presafety model file (magic or version)"),
            ModelError::Field(name) => write!(f, "model header field `{name}` is out of range"),
            ModelError::Size { expected, found } => {
                write!(f, "model file is {found} bytes, its header implies {expected}")
            }
        }
    }
}

impl std::error::Error for ModelError {}

/// A parsed model: a view over the file's bytes (no copy, no allocation).
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    pub bits: u32,
    pub hidden: usize,
    pub window: usize,
    pub stride: usize,
    pub scale: f32,
    /// Default harm threshold per harmful class; index 0 (benign) holds the harm a rule
    /// finding needs from the classifier to block (`Policy::rule_floor`).
    pub threshold: [f32; CLASSES],
    b2: [f32; CLASSES],
    /// `b1[hidden]` then `w2[hidden][classes]`, as little-endian f32 bytes.
    dense: &'a [u8],
    embedding: &'a [u8],
}

/// The parts of a model, as the trainer produces them.
#[derive(Debug)]
pub struct Parts<'p> {
    pub bits: u32,
    pub hidden: usize,
    pub window: u32,
    pub stride: u32,
    pub scale: f32,
    pub b1: &'p [f32],
    pub w2: &'p [f32],
    pub b2: &'p [f32; CLASSES],
    pub threshold: &'p [f32; CLASSES],
    pub embedding: &'p [i8],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}

impl<'a> Model<'a> {
    /// Parse a model file.
    pub fn parse(b: &'a [u8]) -> Result<Model<'a>, ModelError> {
        if b.len() < HEADER || &b[..4] != MAGIC || u32_at(b, 4) != VERSION {
            return Err(ModelError::Format);
        }
        let bits = u32_at(b, 8);
        if !(8..=24).contains(&bits) {
            return Err(ModelError::Field("bits"));
        }
        if u32_at(b, 12) as usize != CLASSES {
            return Err(ModelError::Field("classes"));
        }
        let hidden = u32_at(b, 16) as usize;
        if !(1..=MAX_HIDDEN).contains(&hidden) {
            return Err(ModelError::Field("hidden"));
        }
        let window = u32_at(b, 20) as usize;
        let stride = u32_at(b, 24) as usize;
        if !(1..=4096).contains(&window) {
            return Err(ModelError::Field("window"));
        }
        if !(1..=window).contains(&stride) {
            return Err(ModelError::Field("stride"));
        }
        let dense_at = HEADER + 4;
        let dense_len = 4 * (hidden + hidden * CLASSES);
        let b2_at = dense_at + dense_len;
        let threshold_at = b2_at + 4 * CLASSES;
        let embedding_at = threshold_at + 4 * CLASSES;
        let expected = embedding_at + (hidden << bits);
        if b.len() != expected {
            return Err(ModelError::Size { expected, found: b.len() });
        }
        let model = Model {
            bits,
            hidden,
            window,
            stride,
            scale: f32_at(b, HEADER),
            threshold: std::array::from_fn(|k| f32_at(b, threshold_at + 4 * k)),
            b2: std::array::from_fn(|k| f32_at(b, b2_at + 4 * k)),
            dense: &b[dense_at..b2_at],
            embedding: &b[embedding_at..],
        };
        let dense_finite = model.dense.chunks_exact(4).all(|c| f32_at(c, 0).is_finite());
        if !model.scale.is_finite() || !dense_finite || model.b2.iter().chain(&model.threshold).any(|x| !x.is_finite())
        {
            return Err(ModelError::Field("a weight or threshold is not finite"));
        }
        Ok(model)
    }

    /// Serialise a model from its parts (the trainer's output).
    pub fn write(p: &Parts<'_>) -> Vec<u8> {
        assert_eq!(p.embedding.len(), p.hidden << p.bits, "embedding table size");
        assert_eq!((p.b1.len(), p.w2.len()), (p.hidden, p.hidden * CLASSES), "dense layer sizes");
        let mut out = Vec::with_capacity(HEADER + p.embedding.len() + 4 * (p.hidden * (CLASSES + 1) + 3 * CLASSES));
        out.extend_from_slice(MAGIC);
        for v in [VERSION, p.bits, CLASSES as u32, p.hidden as u32, p.window, p.stride] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for x in std::iter::once(&p.scale).chain(p.b1).chain(p.w2).chain(p.b2).chain(p.threshold) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend(p.embedding.iter().map(|&w| w as u8));
        out
    }

    #[inline]
    fn row(&self, bucket: u32) -> &[u8] {
        let at = bucket as usize * self.hidden;
        &self.embedding[at..at + self.hidden]
    }

    /// Logits of one window from its embedding sum and feature count (the scorer decodes the
    /// dense layer once per text instead: [`Dense`]).
    pub fn logits(&self, sum: &[i32], count: u32) -> [f32; CLASSES] {
        let mut padded = [0i32; MAX_HIDDEN];
        padded[..self.hidden].copy_from_slice(&sum[..self.hidden]);
        Dense::new(self).logits(&padded, count)
    }
}

/// The dense layers decoded into fixed-size, zero-padded arrays, so a window's logits are
/// straight-line vector arithmetic (padding lanes are 0 through the ReLU and add nothing).
pub(crate) struct Dense {
    scale: f32,
    b1: [f32; MAX_HIDDEN],
    /// `w2` transposed: one row of hidden weights per class.
    w2t: [[f32; MAX_HIDDEN]; CLASSES],
    b2: [f32; CLASSES],
}

impl Dense {
    pub(crate) fn new(m: &Model<'_>) -> Dense {
        let mut d = Dense { scale: m.scale, b1: [0.0; MAX_HIDDEN], w2t: [[0.0; MAX_HIDDEN]; CLASSES], b2: m.b2 };
        for j in 0..m.hidden {
            d.b1[j] = f32_at(m.dense, 4 * j);
            for (k, row) in d.w2t.iter_mut().enumerate() {
                row[j] = f32_at(m.dense, 4 * (m.hidden + j * CLASSES + k));
            }
        }
        d
    }

    /// Logits of one window from its embedding sum (zero past `hidden`) and feature count.
    pub(crate) fn logits(&self, sum: &[i32; MAX_HIDDEN], count: u32) -> [f32; CLASSES] {
        let norm = self.scale / (count.max(1) as f32).sqrt();
        let h: [f32; MAX_HIDDEN] = std::array::from_fn(|j| (self.b1[j] + sum[j] as f32 * norm).max(0.0));
        std::array::from_fn(|k| self.b2[k] + self.w2t[k].iter().zip(&h).map(|(w, x)| w * x).sum::<f32>())
    }
}

/// Per-window class probabilities of the most harmful window of a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// `1 − p(benign)` of the most harmful window (0 for an empty text).
    pub harm: f32,
    /// The most probable harmful category in that window.
    pub category: Category,
    /// Token range `[start, end)` of that window.
    pub window: (usize, usize),
}

impl Scores {
    /// The score of an empty text.
    pub const NONE: Scores = Scores { harm: 0.0, category: Category::ALL[0], window: (0, 0) };
}

/// Per-window embedding sums, kept as differences between consecutive windows.
///
/// A window counts each distinct feature once (presence, not frequency), so repeating a
/// sentence does not make it more harmful: a feature occurrence at token `t` contributes to
/// the windows that contain `t` but not the feature's previous occurrence. Those windows
/// are a contiguous run of window indices, so each occurrence is two row updates at most.
pub(crate) struct Sums {
    hidden: usize,
    tokens: usize,
    /// `diff[k * hidden + j]`: window `k`'s sum minus window `k − 1`'s.
    diff: Vec<i32>,
    counts: Vec<i32>,
    last_window: usize,
    /// For each feature key: the first window after those holding its last occurrence.
    last: LastSeen,
    at: At,
    /// The current token's features that are new to all of its windows.
    token_sum: [i32; MAX_HIDDEN],
    token_count: i32,
}

/// `acc ±= row`, widening the i8 weights. The common width gets fixed-size arrays, which
/// compile to a few vector instructions.
#[inline]
fn add_row(acc: &mut [i32], row: &[u8], negative: bool) {
    if let (Ok(acc), Ok(row)) = (<&mut [i32; 32]>::try_from(&mut *acc), <&[u8; 32]>::try_from(row)) {
        return add_fixed(acc, row, negative);
    }
    if negative {
        for (a, &w) in acc.iter_mut().zip(row) {
            *a -= i32::from(w as i8);
        }
    } else {
        for (a, &w) in acc.iter_mut().zip(row) {
            *a += i32::from(w as i8);
        }
    }
}

#[inline(always)]
fn add_fixed<const N: usize>(acc: &mut [i32; N], row: &[u8; N], negative: bool) {
    if negative {
        for j in 0..N {
            acc[j] -= i32::from(row[j] as i8);
        }
    } else {
        for j in 0..N {
            acc[j] += i32::from(row[j] as i8);
        }
    }
}

/// The windows of the current token.
#[derive(Clone, Copy)]
struct At {
    token: usize,
    /// The first and last windows that hold the token.
    first: usize,
    end: usize,
    /// The first window that starts after the token.
    after: u32,
}

impl At {
    fn new(token: usize, window: usize, stride: usize, last_window: usize) -> At {
        let first = if token < window { 0 } else { (token - window) / stride + 1 };
        let end = (token / stride).min(last_window);
        At { token, first, end, after: (token / stride + 1) as u32 }
    }
}

impl Sums {
    pub(crate) fn new(model: &Model<'_>, tokens: usize) -> Sums {
        let windows = window_count(tokens, model.window, model.stride);
        Sums {
            hidden: model.hidden,
            tokens,
            diff: vec![0; (windows + 1) * model.hidden],
            counts: vec![0; windows + 1],
            last_window: windows - 1,
            last: LastSeen::with_capacity(tokens * 8),
            at: At::new(0, model.window, model.stride, windows - 1),
            token_sum: [0; MAX_HIDDEN],
            token_count: 0,
        }
    }

    /// Count feature `f` at `token` (tokens in non-decreasing order).
    #[inline]
    pub(crate) fn add(&mut self, model: &Model<'_>, token: usize, f: super::features::Feature) {
        if token != self.at.token {
            self.flush();
            self.at = At::new(token, model.window, model.stride, self.last_window);
        }
        let At { first, end, after, .. } = self.at;
        // Windows up to the one holding the feature's previous occurrence already count it.
        let seen = self.last.replace(f.bucket << 1 | u32::from(f.negative), after).map_or(0, |s| s as usize);
        let row = model.row(f.bucket);
        if seen <= first {
            // New to every window holding this token: summed with the token's other such
            // features and added to those windows once, in `flush`.
            self.token_count += 1;
            add_row(&mut self.token_sum[..self.hidden], row, f.negative);
        } else if seen <= end {
            let h = self.hidden;
            add_row(&mut self.diff[seen * h..(seen + 1) * h], row, f.negative);
            add_row(&mut self.diff[(end + 1) * h..(end + 2) * h], row, !f.negative);
            self.counts[seen] += 1;
            self.counts[end + 1] -= 1;
        }
    }

    /// Add the current token's sum to the windows that hold the token.
    fn flush(&mut self) {
        if self.token_count == 0 {
            return;
        }
        let (h, At { first, end, .. }) = (self.hidden, self.at);
        for (k, sign) in [(first, 1), (end + 1, -1)] {
            for (d, &t) in self.diff[k * h..(k + 1) * h].iter_mut().zip(&self.token_sum[..h]) {
                *d += sign * t;
            }
            self.counts[k] += sign * self.token_count;
        }
        self.token_sum = [0; MAX_HIDDEN];
        self.token_count = 0;
    }

    /// Score every window from the running sum of the differences.
    pub(crate) fn score(mut self, model: &Model<'_>) -> Scores {
        self.flush();
        let h = self.hidden;
        let dense = Dense::new(model);
        let mut best = Scores::NONE;
        let mut window = [0i32; MAX_HIDDEN];
        let mut count = 0i32;
        for k in 0..self.counts.len() - 1 {
            for (w, d) in window.iter_mut().zip(&self.diff[k * h..(k + 1) * h]) {
                *w += d;
            }
            count += self.counts[k];
            if count > 0 {
                let (harm, category) = harm_of(&dense.logits(&window, count as u32));
                if harm > best.harm {
                    let start = k * model.stride;
                    best = Scores { harm, category, window: (start, (start + model.window).min(self.tokens)) };
                }
            }
        }
        best
    }
}

/// Windows of `window` tokens every `stride` tokens over `tokens` tokens: the last one
/// reaches the end (one window for a text shorter than a window, or an empty one).
pub(crate) fn window_count(tokens: usize, window: usize, stride: usize) -> usize {
    if tokens <= window { 1 } else { (tokens - window).div_ceil(stride) + 1 }
}

/// A value per feature key: an open-addressing table (linear probing,
/// at most half full), so the scan allocates in proportion to its text.
struct LastSeen {
    /// `key + 1` in the high half (0: empty), the value in the low half.
    slots: Vec<u64>,
    len: usize,
}

impl LastSeen {
    fn with_capacity(n: usize) -> LastSeen {
        LastSeen { slots: vec![0; (2 * n).next_power_of_two().max(64)], len: 0 }
    }

    /// Store `value` for `key`; returns the value it had.
    fn replace(&mut self, key: u32, value: u32) -> Option<u32> {
        if 2 * (self.len + 1) > self.slots.len() {
            let grown = vec![0; 2 * self.slots.len()];
            let old = std::mem::replace(&mut self.slots, grown);
            for e in old.into_iter().filter(|&e| e != 0) {
                let at = self.find((e >> 32) as u32 - 1);
                self.slots[at] = e;
            }
        }
        let at = self.find(key);
        let old = self.slots[at];
        self.slots[at] = (u64::from(key) + 1) << 32 | u64::from(value);
        if old == 0 {
            self.len += 1;
            None
        } else {
            Some(old as u32)
        }
    }

    fn find(&self, key: u32) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = (u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask;
        loop {
            let e = self.slots[at];
            if e == 0 || (e >> 32) as u32 == key + 1 {
                return at;
            }
            at = (at + 1) & mask;
        }
    }
}

/// `1 − p(benign)` and the most probable harmful category of one window's logits.
pub fn harm_of(logits: &[f32; CLASSES]) -> (f32, Category) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
    let exps: [f32; CLASSES] = std::array::from_fn(|k| (logits[k] - max).exp());
    let total: f32 = exps.iter().sum();
    let top = (1..CLASSES).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(1);
    (1.0 - exps[0] / total, Category::ALL[top - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::features::Feature;

    /// A model with `hidden = 2`: hidden unit 0 feeds class `class`, unit 1 nothing.
    fn tiny(embedding: &[i8], class: usize) -> Vec<u8> {
        let mut w2 = vec![0.0; 2 * CLASSES];
        w2[class] = 10.0;
        Model::write(&Parts {
            bits: 8,
            hidden: 2,
            window: 4,
            stride: 2,
            scale: 1.0 / 100.0,
            b1: &[0.0, 0.0],
            w2: &w2,
            b2: &[0.0; CLASSES],
            threshold: &[0.5; CLASSES],
            embedding,
        })
    }

    #[test]
    fn roundtrip_and_refusals() {
        let bytes = tiny(&vec![0; 2 << 8], 3);
        let m = Model::parse(&bytes).expect("parse");
        assert_eq!((m.bits, m.hidden, m.window, m.stride), (8, 2, 4, 2));
        assert_eq!(
            Model::parse(&bytes[..bytes.len() - 1]).unwrap_err(),
            ModelError::Size { expected: bytes.len(), found: bytes.len() - 1 }
        );
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(Model::parse(&bad).unwrap_err(), ModelError::Format);
        let mut bad = bytes.clone();
        bad[8] = 40;
        assert_eq!(Model::parse(&bad).unwrap_err(), ModelError::Field("bits"));
        let mut bad = bytes.clone();
        bad[16] = 200;
        assert_eq!(Model::parse(&bad).unwrap_err(), ModelError::Field("hidden"));
        let mut bad = bytes.clone();
        bad[24] = 9; // stride > window
        assert_eq!(Model::parse(&bad).unwrap_err(), ModelError::Field("stride"));
        let mut bad = bytes;
        bad[HEADER..HEADER + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(Model::parse(&bad), Err(ModelError::Field(_))));
    }

    #[test]
    fn most_harmful_window_wins() {
        // Bucket 1 lights hidden unit 0, which feeds class 3 (weapons).
        let mut e = vec![0i8; 2 << 8];
        e[2] = 100;
        let bytes = tiny(&e, 3);
        let m = Model::parse(&bytes).unwrap();
        let mut sums = Sums::new(&m, 10);
        for t in 0..10 {
            sums.add(&m, t, Feature { bucket: if t == 7 { 1 } else { 2 }, negative: false });
        }
        let s = sums.score(&m);
        assert_eq!(s.category, Category::Weapons);
        assert!(s.harm > 0.9, "{}", s.harm);
        assert!(s.window.0 <= 7 && 7 < s.window.1);
        // The same feature counted negatively switches the unit off (ReLU): harmless.
        let mut sums = Sums::new(&m, 1);
        sums.add(&m, 0, Feature { bucket: 1, negative: true });
        assert!(sums.score(&m).harm < 0.95);
    }

    #[test]
    fn empty_text_is_harmless() {
        let bytes = tiny(&vec![0; 2 << 8], 3);
        let m = Model::parse(&bytes).unwrap();
        assert_eq!(Sums::new(&m, 0).score(&m).harm, 0.0);
    }

    #[test]
    fn windows_count_distinct_features() {
        // Every bucket lights unit 0 a little, by bucket, so any miscount changes the harm.
        let e: Vec<i8> = (0..2 << 8).map(|i| if i % 2 == 0 { (i / 2 % 7) as i8 * 9 - 20 } else { 0 }).collect();
        let bytes = tiny(&e, 3);
        let m = Model::parse(&bytes).unwrap();
        let mut seed = 7u64;
        for n in 0..40usize {
            let mut feats = Vec::new();
            for t in 0..n {
                for _ in 0..3 {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    feats.push((t, Feature { bucket: (seed >> 40) as u32 % 6, negative: seed >> 20 & 1 == 1 }));
                }
            }
            let mut sums = Sums::new(&m, n);
            for &(t, f) in &feats {
                sums.add(&m, t, f);
            }
            let got = sums.score(&m);
            // The same by brute force: each window's distinct features, summed.
            let mut want = Scores::NONE;
            for k in 0..window_count(n, m.window, m.stride) {
                let (start, end) = (k * m.stride, (k * m.stride + m.window).min(n));
                let mut distinct: Vec<(u32, bool)> = feats
                    .iter()
                    .filter(|(t, _)| (start..end).contains(t))
                    .map(|(_, f)| (f.bucket, f.negative))
                    .collect();
                distinct.sort_unstable();
                distinct.dedup();
                if distinct.is_empty() {
                    continue;
                }
                let mut sum = [0i32; 2];
                for &(b, neg) in &distinct {
                    for (s, &x) in sum.iter_mut().zip(m.row(b)) {
                        *s += if neg { -1 } else { 1 } * i32::from(x as i8);
                    }
                }
                let (harm, category) = harm_of(&m.logits(&sum, distinct.len() as u32));
                if harm > want.harm {
                    want = Scores { harm, category, window: (start, end) };
                }
            }
            assert_eq!(got, want, "{n} tokens");
        }
    }

    #[test]
    fn repeating_a_text_is_no_evidence() {
        let mut e = vec![0i8; 2 << 8];
        e[2] = 60;
        let bytes = tiny(&e, 3);
        let m = Model::parse(&bytes).unwrap();
        let harm = |reps: usize| {
            let mut sums = Sums::new(&m, 2 * reps);
            for r in 0..reps {
                sums.add(&m, 2 * r, Feature { bucket: 1, negative: false });
                sums.add(&m, 2 * r + 1, Feature { bucket: 2, negative: false });
            }
            sums.score(&m).harm
        };
        assert!(harm(1) > 0.0);
        assert_eq!(harm(1), harm(2));
        assert_eq!(harm(1), harm(50));
    }
}
