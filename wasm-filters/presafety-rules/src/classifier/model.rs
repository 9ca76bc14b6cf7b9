//! The model file and the windowed scorer.
//!
//! The model is an embedding bag with one hidden layer (fastText's shape, plus a ReLU): each
//! hashed feature has an `H`-wide embedding; a window's hidden layer is
//! `relu(b1 + scale · Σ(±embedding) / sqrt(features in window))`, its logits are
//! `b2 + W2 · hidden`, and its harm is `1 − p(benign)` under the softmax. A text's score is its
//! most harmful window, so a harmful ask inside a long document is not diluted by the rest,
//! and turns joined into one text are read together.
//!
//! File layout (little-endian), written by the trainer and compiled into the filter:
//!
//! ```text
//! magic "CPSG"  version u32 = 2
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
const VERSION: u32 = 2;
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

    /// Logits of one window from its embedding sum and feature count.
    pub fn logits(&self, sum: &[i32], count: u32) -> [f32; CLASSES] {
        let norm = self.scale / (count.max(1) as f32).sqrt();
        let mut z = self.b2;
        for (j, &s) in sum.iter().enumerate().take(self.hidden) {
            let h = (f32_at(self.dense, 4 * j) + s as f32 * norm).max(0.0);
            if h == 0.0 {
                continue;
            }
            let row = 4 * (self.hidden + j * CLASSES);
            for (k, zk) in z.iter_mut().enumerate() {
                *zk += h * f32_at(self.dense, row + 4 * k);
            }
        }
        z
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

/// Per-token embedding sums, turned into prefix sums for the windows.
pub(crate) struct Sums {
    hidden: usize,
    /// `sums[t * hidden + j]`: total of tokens `< t` (after [`Sums::score`]'s prefix pass).
    sums: Vec<i32>,
    counts: Vec<u32>,
}

impl Sums {
    pub(crate) fn new(model: &Model<'_>, tokens: usize) -> Sums {
        Sums { hidden: model.hidden, sums: vec![0; (tokens + 1) * model.hidden], counts: vec![0; tokens + 1] }
    }

    #[inline]
    pub(crate) fn add(&mut self, model: &Model<'_>, token: usize, f: super::features::Feature) {
        let row = model.row(f.bucket);
        let at = (token + 1) * self.hidden;
        let acc = &mut self.sums[at..at + self.hidden];
        if f.negative {
            for (a, &w) in acc.iter_mut().zip(row) {
                *a -= i32::from(w as i8);
            }
        } else {
            for (a, &w) in acc.iter_mut().zip(row) {
                *a += i32::from(w as i8);
            }
        }
        self.counts[token + 1] += 1;
    }

    /// Turn per-token totals into prefix sums and score every window.
    pub(crate) fn score(mut self, model: &Model<'_>) -> Scores {
        let h = self.hidden;
        let n = self.counts.len() - 1;
        for t in 1..=n {
            let (before, here) = self.sums.split_at_mut(t * h);
            for (a, p) in here[..h].iter_mut().zip(&before[(t - 1) * h..]) {
                *a += p;
            }
            self.counts[t] += self.counts[t - 1];
        }
        let mut best = Scores::NONE;
        let mut window = [0i32; MAX_HIDDEN];
        let mut start = 0;
        loop {
            let end = (start + model.window).min(n);
            let count = self.counts[end] - self.counts[start];
            if count > 0 {
                let (hi, lo) = (&self.sums[end * h..(end + 1) * h], &self.sums[start * h..(start + 1) * h]);
                for ((w, a), b) in window.iter_mut().zip(hi).zip(lo) {
                    *w = a - b;
                }
                let (harm, category) = harm_of(&model.logits(&window[..h], count));
                if harm > best.harm {
                    best = Scores { harm, category, window: (start, end) };
                }
            }
            if end >= n {
                break;
            }
            start += model.stride;
        }
        best
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
}
