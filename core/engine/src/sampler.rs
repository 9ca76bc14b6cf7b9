//! Token sampling: turns one row of logits into the next token, with the OpenAI/llama.cpp knobs.
//!
//! This module owns the request-level sampling parameters and their validation, the per-step
//! pipeline (repetition/presence/frequency penalties, temperature, top-k, min-p, top-p and a
//! seeded draw), the log-softmax of the raw logits reported as `logprobs`, and the streaming
//! stop-string matcher. It never runs the model, never tokenizes or decodes, never decides how
//! much history to pass (the caller does), and never panics on any input: NaN logits count as
//! `-inf`, `+inf` as the largest finite logit, and history ids outside the vocab are ignored.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::constraint::{Constraint, Grammar};

/// Largest accepted `top_k`; larger values are almost certainly client bugs.
pub const MAX_TOP_K: u32 = 100_000;
/// Largest accepted `max_tokens`; the caller may clamp further to the context window.
pub const MAX_MAX_TOKENS: u32 = 65_536;
/// Most stop strings per request (OpenAI allows 4; llama.cpp servers commonly allow more).
pub const MAX_STOPS: usize = 8;
/// Longest stop string in bytes; bounds how much text the stop matcher ever holds back.
pub const MAX_STOP_BYTES: usize = 256;
/// Most `top_logprobs` alternatives per token (the OpenAI limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most `logit_bias` entries (the OpenAI limit).
pub const MAX_LOGIT_BIAS: usize = 300;

/// Per-request sampling knobs. Deserializes with every field optional (missing = default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy; valid `0..=2`.
    pub temperature: f32,
    /// 0 disables; valid `0..=MAX_TOP_K`.
    pub top_k: u32,
    /// 1 disables; valid `(0, 1]`.
    pub top_p: f32,
    /// 0 disables; valid `0..=1`, relative to the most likely token's probability.
    pub min_p: f32,
    /// OpenAI presence penalty, valid `-2..=2`: `logit -= presence` for every token already
    /// generated (output only, as OpenAI and vLLM define it).
    pub presence_penalty: f32,
    /// OpenAI frequency penalty, valid `-2..=2`: `logit -= frequency * count` over the output.
    pub frequency_penalty: f32,
    /// CTRL/llama.cpp repetition penalty; 1 disables; valid `(0, 10]`.
    pub repetition_penalty: f32,
    /// Same seed and same logits sequence give the same tokens; `None` seeds from entropy.
    pub seed: Option<u64>,
    /// Valid `1..=MAX_MAX_TOKENS`. Not used by [`Sampler`]; carried for the generation loop.
    pub max_tokens: u32,
    /// At most `MAX_STOPS` strings of `1..=MAX_STOP_BYTES` bytes. Used by [`StopMatcher`].
    pub stop: Vec<String>,
    /// How many alternatives [`Sampled::top`] reports, `0..=MAX_TOP_LOGPROBS`.
    pub top_logprobs: u32,
    /// Keep generating past end-of-turn tokens until `max_tokens` (benchmarks, as llama.cpp's
    /// and vLLM's `ignore_eos`). Stop strings still apply.
    pub ignore_eos: bool,
    /// OpenAI `logit_bias`: `(token id, bias)` added to the logit before sampling; at most
    /// `MAX_LOGIT_BIAS` entries, each bias in `-100..=100`. Ids are checked against the model's
    /// vocabulary by the engine.
    pub logit_bias: Vec<(u32, f32)>,
    /// Output must match this grammar; compiled by the engine (see [`crate::constraint`]).
    pub grammar: Option<Grammar>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            max_tokens: 256,
            stop: Vec::new(),
            top_logprobs: 0,
            ignore_eos: false,
            logit_bias: Vec::new(),
            grammar: None,
        }
    }
}

/// A rejected [`SamplingParams`] field. Messages name the field and its allowed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be a finite number in 0..=2, got {0}")]
    Temperature(f32),
    #[error("top_k must be in 0..={max} (0 disables), got {0}", max = MAX_TOP_K)]
    TopK(u32),
    #[error("top_p must be a finite number in (0, 1] (1 disables), got {0}")]
    TopP(f32),
    #[error("min_p must be a finite number in 0..=1 (0 disables), got {0}")]
    MinP(f32),
    #[error("presence_penalty must be a finite number in -2..=2, got {0}")]
    PresencePenalty(f32),
    #[error("frequency_penalty must be a finite number in -2..=2, got {0}")]
    FrequencyPenalty(f32),
    #[error("repetition_penalty must be a finite number in (0, 10] (1 disables), got {0}")]
    RepetitionPenalty(f32),
    #[error("max_tokens must be in 1..={max}, got {0}", max = MAX_MAX_TOKENS)]
    MaxTokens(u32),
    #[error("stop must hold at most {max} strings, got {0}", max = MAX_STOPS)]
    TooManyStops(usize),
    #[error("stop[{index}] must be 1..={max} bytes long, got {len}", max = MAX_STOP_BYTES)]
    StopLength { index: usize, len: usize },
    #[error("top_logprobs must be in 0..={max}, got {0}", max = MAX_TOP_LOGPROBS)]
    TopLogprobs(u32),
    #[error("logit_bias must hold at most {max} entries, got {0}", max = MAX_LOGIT_BIAS)]
    TooManyBiases(usize),
    #[error("logit_bias[{id}] must be a finite number in -100..=100, got {bias}")]
    LogitBias { id: u32, bias: f32 },
}

impl SamplingError {
    /// Stable label: the offending parameter's name, usable as OpenAI's `error.param`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Temperature(_) => "temperature",
            Self::TopK(_) => "top_k",
            Self::TopP(_) => "top_p",
            Self::MinP(_) => "min_p",
            Self::PresencePenalty(_) => "presence_penalty",
            Self::FrequencyPenalty(_) => "frequency_penalty",
            Self::RepetitionPenalty(_) => "repetition_penalty",
            Self::MaxTokens(_) => "max_tokens",
            Self::TooManyStops(_) | Self::StopLength { .. } => "stop",
            Self::TopLogprobs(_) => "top_logprobs",
            Self::TooManyBiases(_) | Self::LogitBias { .. } => "logit_bias",
        }
    }
}

/// Inclusive range check that also rejects NaN and infinities.
fn within(x: f32, lo: f32, hi: f32) -> bool {
    x.is_finite() && x >= lo && x <= hi
}

impl SamplingParams {
    /// Checks every field; reports the first offending one.
    pub fn validate(&self) -> Result<(), SamplingError> {
        use SamplingError as E;
        let bad_stop = self.stop.iter().enumerate().find(|(_, s)| s.is_empty() || s.len() > MAX_STOP_BYTES);
        let checks = [
            (within(self.temperature, 0.0, 2.0), E::Temperature(self.temperature)),
            (self.top_k <= MAX_TOP_K, E::TopK(self.top_k)),
            (within(self.top_p, 0.0, 1.0) && self.top_p > 0.0, E::TopP(self.top_p)),
            (within(self.min_p, 0.0, 1.0), E::MinP(self.min_p)),
            (within(self.presence_penalty, -2.0, 2.0), E::PresencePenalty(self.presence_penalty)),
            (within(self.frequency_penalty, -2.0, 2.0), E::FrequencyPenalty(self.frequency_penalty)),
            (
                within(self.repetition_penalty, 0.0, 10.0) && self.repetition_penalty > 0.0,
                E::RepetitionPenalty(self.repetition_penalty),
            ),
            ((1..=MAX_MAX_TOKENS).contains(&self.max_tokens), E::MaxTokens(self.max_tokens)),
            (self.stop.len() <= MAX_STOPS, E::TooManyStops(self.stop.len())),
            (self.top_logprobs <= MAX_TOP_LOGPROBS, E::TopLogprobs(self.top_logprobs)),
            (self.logit_bias.len() <= MAX_LOGIT_BIAS, E::TooManyBiases(self.logit_bias.len())),
        ];
        if let Some(e) = checks.into_iter().find_map(|(ok, e)| (!ok).then_some(e)) {
            return Err(e);
        }
        if let Some(&(id, bias)) = self.logit_bias.iter().find(|(_, b)| !within(*b, -100.0, 100.0)) {
            return Err(E::LogitBias { id, bias });
        }
        match bad_stop {
            Some((index, s)) => Err(E::StopLength { index, len: s.len() }),
            None => Ok(()),
        }
    }
}

/// One token and its log-probability under the raw logits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// The chosen token plus what the OpenAI `logprobs` response needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// Log-softmax of the raw logits (before penalties and temperature) at `id`.
    pub logprob: f32,
    /// The `min(top_logprobs, vocab)` most likely raw tokens, logprob descending, ties by lower id.
    pub top: Vec<TokenLogprob>,
}

/// NaN would poison every comparison and sum, and `+inf` makes `x - max` NaN; mapping them to
/// `-inf` and `f32::MAX` keeps the limits right (an infinite logit takes all the mass).
#[inline]
fn clean(x: f32) -> f32 {
    if x.is_nan() { f32::NEG_INFINITY } else { x.min(f32::MAX) }
}

/// `exp(x)` for `x <= 0` (always the case after max-subtraction), Cephes-style polynomial.
/// libm's `expf` is an opaque call LLVM cannot vectorize, and two passes of it over a 49k vocab
/// cost more than the rest of sampling; this is within ~2 ulp and vectorizes. Results below
/// `exp(-87)` flush to 0 so hopeless candidates drop out exactly as with a true underflow.
#[inline]
fn exp_nonpos(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to an integer
    // Selects rather than `clamp` so the loop vectorizes; NaN lands on -87 and then on 0 below.
    let xc = if x > -87.0 { x } else { -87.0 };
    let xc = if xc < 0.0 { xc } else { 0.0 };
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    // The low mantissa bits of `t` hold n (two's complement), so 2^n needs no float->int cast.
    let pow2n = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    let y = (p * r * r + r + 1.0) * pow2n;
    if x >= -87.0 { y } else { 0.0 }
}

/// `sum(exp(x - max))` over the logits. Independent f32 lanes let the loop vectorize; each lane
/// is folded into the f64 total every 1024 terms so precision matches a plain f64 sum.
fn sum_exp(logits: &[f32], max: f32) -> f64 {
    const LANES: usize = 16;
    let chunks = logits.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(exp_nonpos(clean(x) - max))).sum();
    let mut acc = [0.0f32; LANES];
    let mut total = tail;
    for (k, chunk) in chunks.enumerate() {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += exp_nonpos(clean(x) - max);
        }
        if k % 64 == 63 {
            total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
            acc = [0.0; LANES];
        }
    }
    total + acc.iter().map(|&a| f64::from(a)).sum::<f64>()
}

/// Descending by value, then ascending by id, so every selection is deterministic.
fn by_value_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Max and log-sum-exp of the raw logits, so any token's logprob is a subtraction. They are
/// kept apart because `max + ln(sum)` in one float loses `ln(sum)` when `max` is huge.
#[derive(Debug, Clone, Copy)]
struct LogSoftmax {
    max: f32,
    log_sum: f64,
}

impl LogSoftmax {
    fn new(logits: &[f32]) -> Self {
        let max = logits.iter().map(|&x| clean(x)).fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return Self { max, log_sum: 0.0 };
        }
        let sum = sum_exp(logits, max);
        Self { max, log_sum: sum.ln() }
    }

    fn logprob(self, x: f32) -> f32 {
        if self.max == f32::NEG_INFINITY {
            // Every token was masked: there is no distribution, so report "impossible".
            return f32::NEG_INFINITY;
        }
        (f64::from(clean(x)) - f64::from(self.max) - self.log_sum) as f32
    }
}

/// xoshiro256** seeded through splitmix64: tiny, fast, and stable across platforms and Rust
/// versions, which a seeded API needs and `std` does not promise.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn seeded(seed: u64) -> Self {
        // splitmix64 is a bijection over distinct states, so the xoshiro state is never all zero.
        let mut sm = seed;
        let mut next = || splitmix64(&mut sm);
        Self { s: [next(), next(), next(), next()] }
    }

    fn from_entropy() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // RandomState carries per-process random keys; counter and clock separate concurrent calls.
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, AtomicOrdering::Relaxed));
        if let Ok(d) = SystemTime::now().duration_since(UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        Self::seeded(h.finish())
    }

    fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.s;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Per-sequence sampler. Owns the RNG stream and scratch buffers reused across steps, so one
/// `Sampler` must serve exactly one sequence.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Penalized copy of the logits; only filled when a penalty is active.
    work: Vec<f32>,
    /// Surviving (id, value-then-weight) candidates of the stochastic path.
    cands: Vec<(u32, f32)>,
    /// Sorted in-vocab history, to count repeats without a vocab-sized table.
    hist: Vec<u32>,
    /// How often each token was generated (presence and frequency penalties).
    counts: std::collections::HashMap<u32, u32>,
    /// The grammar the output must match, if any.
    constraint: Option<Box<Constraint>>,
    /// The grammar is complete: nothing may follow the last token.
    grammar_done: bool,
    /// The grammar engine failed (the sequence cannot go on).
    grammar_error: Option<String>,
}

impl Sampler {
    /// Validates `params` and seeds the RNG (from `params.seed`, else from entropy).
    pub fn new(params: &SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let rng = params.seed.map_or_else(Rng::from_entropy, Rng::seeded);
        Ok(Self {
            params: params.clone(),
            rng,
            work: Vec::new(),
            cands: Vec::new(),
            hist: Vec::new(),
            counts: Default::default(),
            constraint: None,
            grammar_done: false,
            grammar_error: None,
        })
    }

    /// Restricts every choice to what `constraint` allows next, and advances it.
    pub fn with_constraint(mut self, constraint: Box<Constraint>) -> Self {
        self.constraint = Some(constraint);
        self
    }

    /// The sequence's grammar, if it has one (to compute its next mask ahead of time).
    pub fn constraint_mut(&mut self) -> Option<&mut Constraint> {
        self.constraint.as_deref_mut()
    }

    /// The grammar is complete after the last token: the sequence must end.
    pub fn grammar_done(&self) -> bool {
        self.grammar_done
    }

    /// Why the grammar engine could not go on, if it failed.
    pub fn grammar_error(&self) -> Option<&str> {
        self.grammar_error.as_deref()
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `logits` is one position's raw logits (len = vocab); `history` is
    /// whatever the caller wants penalized (llama.cpp: the last 64 tokens of prompt+output).
    /// Empty `logits` yields `id 0` with logprob `-inf` and no alternatives.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Sampled {
        if logits.is_empty() {
            return Sampled { id: 0, logprob: f32::NEG_INFINITY, top: Vec::new() };
        }
        let norm = LogSoftmax::new(logits);
        let id = self.choose(logits, history);
        self.observe(id);
        let logprob = logits.get(id as usize).map_or(f32::NEG_INFINITY, |&x| norm.logprob(x));
        let top = top_n(logits, self.params.top_logprobs as usize)
            .into_iter()
            .map(|(id, x)| TokenLogprob { id, logprob: norm.logprob(x) })
            .collect();
        Sampled { id, logprob, top }
    }

    /// Whether the greedy choice a device makes from the raw logits (largest value, lowest id
    /// on ties, NaN as -inf) is exactly what [`Self::sample`] would choose and report: greedy,
    /// no penalties, no alternatives asked for.
    pub fn is_device_greedy(&self) -> bool {
        let p = &self.params;
        (p.temperature == 0.0 || p.top_k == 1)
            && !self.penalties_active()
            && p.top_logprobs == 0
            && p.logit_bias.is_empty()
            && self.constraint.is_none()
    }

    /// Takes a greedy choice made on a device (see [`Self::is_device_greedy`]).
    pub fn accept_device_greedy(&mut self, id: u32, logprob: f32) -> Sampled {
        Sampled { id, logprob, top: Vec::new() }
    }

    fn penalties_active(&self) -> bool {
        let p = &self.params;
        p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0
    }

    /// Records a chosen token: output counts for the penalties, and the grammar's state.
    fn observe(&mut self, id: u32) {
        let p = &self.params;
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            *self.counts.entry(id).or_default() += 1;
        }
        if let Some(c) = &mut self.constraint
            && self.grammar_error.is_none()
        {
            match c.advance(id) {
                Ok(done) => self.grammar_done = done,
                Err(e) => self.grammar_error = Some(e),
            }
        }
    }

    fn choose(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let repetition = self.params.repetition_penalty != 1.0 && !history.is_empty();
        let edits = repetition || !self.counts.is_empty() || !self.params.logit_bias.is_empty();
        let vals: &[f32] = if edits || self.constraint.is_some() {
            self.work.clear();
            self.work.extend(logits.iter().map(|&x| clean(x)));
            if edits {
                apply_penalties(&mut self.work, history, &mut self.hist, &self.counts, &self.params);
            }
            if let Some(c) = &mut self.constraint
                && let Err(e) = c.mask(&mut self.work)
            {
                self.grammar_error = Some(e);
            }
            &self.work
        } else {
            logits
        };
        if self.params.temperature == 0.0 || self.params.top_k == 1 {
            return argmax(vals);
        }
        draw(vals, &self.params, &mut self.cands, &mut self.rng)
    }
}

/// Repetition penalty over the `history` window (llama.cpp/CTRL: shrink positive logits, grow
/// negative ones, once per distinct token), then OpenAI's
/// `logit -= presence * (count > 0) + frequency * count` over the tokens generated so far,
/// then `logit_bias`.
fn apply_penalties(
    work: &mut [f32],
    history: &[u32],
    hist: &mut Vec<u32>,
    counts: &std::collections::HashMap<u32, u32>,
    p: &SamplingParams,
) {
    if p.repetition_penalty != 1.0 {
        hist.clear();
        hist.extend(history.iter().copied().filter(|&t| (t as usize) < work.len()));
        hist.sort_unstable();
        hist.dedup();
        for &t in hist.iter() {
            let x = &mut work[t as usize];
            *x = if *x <= 0.0 { *x * p.repetition_penalty } else { *x / p.repetition_penalty };
        }
    }
    for (&t, &n) in counts {
        if let Some(x) = work.get_mut(t as usize) {
            *x -= p.presence_penalty + p.frequency_penalty * n as f32;
        }
    }
    for &(t, bias) in &p.logit_bias {
        if let Some(x) = work.get_mut(t as usize) {
            *x += bias;
        }
    }
}

/// Single pass, no allocation; strict `>` keeps the lowest id on ties and skips NaN.
fn argmax(vals: &[f32]) -> u32 {
    let mut best = 0u32;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &x) in (0u32..).zip(vals) {
        let v = clean(x);
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// top-k -> softmax(logit / T) -> min-p -> top-p -> weighted draw.
fn draw(vals: &[f32], p: &SamplingParams, cands: &mut Vec<(u32, f32)>, rng: &mut Rng) -> u32 {
    cands.clear();
    cands.extend((0u32..).zip(vals).map(|(i, &x)| (i, clean(x))).filter(|c| c.1 > f32::NEG_INFINITY));
    let k = p.top_k as usize;
    if k > 0 && k < cands.len() {
        cands.select_nth_unstable_by(k - 1, by_value_desc);
        cands.truncate(k);
    }
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return argmax(vals);
    }
    // Weights relative to the best token (which gets exactly 1), so min-p is a plain threshold
    // and no normalization is needed until the draw.
    let inv_t = 1.0 / p.temperature;
    for c in cands.iter_mut() {
        c.1 = exp_nonpos((c.1 - max) * inv_t);
    }
    cands.retain(|c| c.1 > 0.0 && c.1 >= p.min_p);
    if p.top_p < 1.0 {
        top_p_filter(cands, p.top_p);
    }
    let total: f64 = cands.iter().map(|c| f64::from(c.1)).sum();
    let u = rng.next_f64() * total;
    let mut cum = 0.0f64;
    for c in cands.iter() {
        cum += f64::from(c.1);
        if cum > u {
            return c.0;
        }
    }
    // Only reachable through rounding at the very top of the range.
    cands.last().map_or_else(|| argmax(vals), |c| c.0)
}

/// Keeps the smallest highest-weight prefix whose mass reaches `top_p` of the total (at least one).
/// Peaked distributions are covered by a few hundred tokens, so select-and-sort a growing head
/// instead of sorting the whole vocab; a flat distribution ends in one full sort.
fn top_p_filter(cands: &mut Vec<(u32, f32)>, top_p: f32) {
    let target = f64::from(top_p) * cands.iter().map(|c| f64::from(c.1)).sum::<f64>();
    let mut head = cands.len().min(256);
    loop {
        if head < cands.len() {
            cands.select_nth_unstable_by(head, by_value_desc);
        }
        let Some(sorted) = cands.get_mut(..head) else {
            return;
        };
        sorted.sort_unstable_by(by_value_desc);
        let mut cum = 0.0f64;
        if let Some(n) = sorted.iter().position(|c| {
            cum += f64::from(c.1);
            cum >= target
        }) {
            cands.truncate(n + 1);
            return;
        }
        if head == cands.len() {
            // Rounding left the sum a hair short of the target: everything is kept.
            return;
        }
        head = cands.len().min(head * 4);
    }
}

/// The `n` largest raw logits, descending, ties by lower id. `n <= 20`, so a small sorted
/// insertion buffer beats selecting over a copy of the vocab.
fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(n.saturating_add(1).min(logits.len() + 1));
    if n == 0 {
        return out;
    }
    for (i, &x) in (0u32..).zip(logits) {
        let v = clean(x);
        if out.len() < n || out.last().is_some_and(|l| v > l.1) {
            // Equal values already present have lower ids, so insert after them.
            let pos = out.partition_point(|c| c.1 >= v);
            out.insert(pos, (i, v));
            out.truncate(n);
        }
    }
    out
}

/// What [`StopMatcher::push`] lets through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopOutput {
    /// Text safe to stream now; never contains (any part of) a completed stop string.
    pub emit: String,
    /// A stop string completed; generation should end and later pushes emit nothing.
    pub stopped: bool,
}

/// Streaming stop-string matcher over decoded text.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match before any text).
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), ..Self::default() }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feed newly decoded text; returns what may be emitted now and whether a stop string completed.
    /// Text that could be the beginning of a stop string is held back until it is decided.
    /// On a match, the emitted text ends right before the earliest stop occurrence.
    pub fn push(&mut self, text: &str) -> StopOutput {
        if self.stopped {
            return StopOutput { emit: String::new(), stopped: true };
        }
        self.held.push_str(text);
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let mut emit = std::mem::take(&mut self.held);
            // `find` returns a char boundary, so this cannot split a character.
            emit.truncate(pos);
            self.stopped = true;
            return StopOutput { emit, stopped: true };
        }
        // A stop prefix starts with a UTF-8 lead byte, so the cut is already a boundary; flooring
        // only guards that invariant (holding back more is always safe).
        let cut = self.held.floor_char_boundary(self.held.len().saturating_sub(self.partial_suffix_len()));
        let rest = self.held.split_off(cut);
        StopOutput { emit: std::mem::replace(&mut self.held, rest), stopped: false }
    }

    /// End of generation without a stop: flush whatever is held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Longest tail of `held` (in bytes) that is a proper prefix of some stop string.
    fn partial_suffix_len(&self) -> usize {
        let h = self.held.as_bytes();
        self.stops
            .iter()
            .filter_map(|s| {
                let s = s.as_bytes();
                let longest = s.len().saturating_sub(1).min(h.len());
                (1..=longest).rev().find(|&l| s.get(..l).is_some_and(|pre| h.ends_with(pre)))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Edit = fn(&mut SamplingParams);

    fn sampler(temperature: f32, edit: impl FnOnce(&mut SamplingParams)) -> Sampler {
        let mut p = SamplingParams { temperature, seed: Some(7), ..SamplingParams::default() };
        edit(&mut p);
        Sampler::new(&p).expect("valid params")
    }

    fn ids(s: &mut Sampler, logits: &[f32], history: &[u32], n: usize) -> Vec<u32> {
        (0..n).map(|_| s.sample(logits, history).id).collect()
    }

    fn frequencies(s: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for id in ids(s, logits, &[], draws) {
            counts[id as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn validation_names_each_bad_field() {
        assert_eq!(SamplingParams::default().validate(), Ok(()));
        let cases: [(Edit, &str); 21] = [
            (|p| p.temperature = 3.5, "temperature"),
            (|p| p.temperature = f32::NAN, "temperature"),
            (|p| p.temperature = -0.1, "temperature"),
            (|p| p.top_k = MAX_TOP_K + 1, "top_k"),
            (|p| p.top_p = 0.0, "top_p"),
            (|p| p.top_p = 1.5, "top_p"),
            (|p| p.min_p = f32::INFINITY, "min_p"),
            (|p| p.min_p = -0.5, "min_p"),
            (|p| p.presence_penalty = 2.5, "presence_penalty"),
            (|p| p.frequency_penalty = f32::NEG_INFINITY, "frequency_penalty"),
            (|p| p.repetition_penalty = 0.0, "repetition_penalty"),
            (|p| p.repetition_penalty = 11.0, "repetition_penalty"),
            (|p| p.max_tokens = 0, "max_tokens"),
            (|p| p.max_tokens = MAX_MAX_TOKENS + 1, "max_tokens"),
            (|p| p.stop = vec!["x".into(); MAX_STOPS + 1], "stop"),
            (|p| p.stop = vec!["ok".into(), String::new()], "stop"),
            (|p| p.stop = vec!["y".repeat(MAX_STOP_BYTES + 1)], "stop"),
            (|p| p.top_logprobs = MAX_TOP_LOGPROBS + 1, "top_logprobs"),
            (|p| p.logit_bias = vec![(1, 0.5); MAX_LOGIT_BIAS + 1], "logit_bias"),
            (|p| p.logit_bias = vec![(1, 100.5)], "logit_bias"),
            (|p| p.logit_bias = vec![(1, f32::NAN)], "logit_bias"),
        ];
        for (edit, field) in cases {
            let mut p = SamplingParams::default();
            edit(&mut p);
            let err = Sampler::new(&p).expect_err(field);
            assert_eq!(err.kind(), field);
            assert!(err.to_string().starts_with(field), "{err}");
        }
        let mut p = SamplingParams { temperature: 3.5, ..SamplingParams::default() };
        assert_eq!(p.validate().expect_err("bad").to_string(), "temperature must be a finite number in 0..=2, got 3.5");
        p.temperature = 1.0;
        p.stop = vec!["a".into(), "b".repeat(300)];
        assert_eq!(p.validate().expect_err("bad").to_string(), "stop[1] must be 1..=256 bytes long, got 300");
    }

    #[test]
    fn fast_exp_matches_std() {
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_nonpos(x), x.exp());
            assert!((got - want).abs() <= want * 4e-7, "exp({x}) = {got}, want {want}");
        }
        assert_eq!([exp_nonpos(0.0), exp_nonpos(-88.0), exp_nonpos(f32::NEG_INFINITY)], [1.0, 0.0, 0.0]);
        assert_eq!(exp_nonpos(f32::NAN), 0.0);
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = sampler(0.0, |_| {});
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9], &[]).id, 1);
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0, 3.0], &[]).id, 1);
        assert_eq!(s.sample(&[-5.0, -5.0], &[]).id, 0);
    }

    #[test]
    fn logprobs_match_hand_computation_and_normalize() {
        // probs 1/6, 2/6, 3/6, shifted by a large constant to exercise the max-subtraction.
        let logits = [1000.0, 1000.0 + 2f32.ln(), 1000.0 + 3f32.ln()];
        let out = sampler(0.0, |p| p.top_logprobs = 3).sample(&logits, &[]);
        assert_eq!(out.id, 2);
        assert!((out.logprob - 0.5f32.ln()).abs() < 1e-4, "{}", out.logprob);
        assert_eq!(out.top.iter().map(|t| t.id).collect::<Vec<_>>(), [2, 1, 0]);
        assert!((out.top[2].logprob - (1.0f32 / 6.0).ln()).abs() < 1e-4);
        let total: f32 = out.top.iter().map(|t| t.logprob.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        // Reported logprobs are of the raw logits, whatever the penalties and temperature did.
        let out = sampler(0.0, |p| p.logit_bias = vec![(0, -2.0)]).sample(&[2.0, 1.0], &[0]);
        assert_eq!(out.id, 1);
        assert!((out.logprob - (1.0 - (2f32.exp() + 1f32.exp()).ln())).abs() < 1e-5);
    }

    #[test]
    fn top_alternatives_are_sorted_truncated_and_tie_stable() {
        let logits = [0.5, 2.0, 2.0, -1.0, 3.0, 0.0, 2.0];
        let top = sampler(0.0, |p| p.top_logprobs = 4).sample(&logits, &[]).top;
        assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), [4, 1, 2, 6]);
        assert!(top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        assert!(sampler(0.0, |_| {}).sample(&logits, &[]).top.is_empty());
        assert_eq!(sampler(0.0, |p| p.top_logprobs = 20).sample(&logits, &[]).top.len(), logits.len());
    }

    #[test]
    fn same_seed_same_sequence_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let run = |seed| ids(&mut sampler(1.0, |p| p.seed = seed), &logits, &[], 200);
        assert_eq!(run(Some(42)), run(Some(42)));
        assert_ne!(run(Some(42)), run(Some(43)));
        assert_ne!(run(None), run(None));
    }

    #[test]
    fn temperature_sampling_follows_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        for t in [1.0f32, 0.5, 2.0] {
            let freq = frequencies(&mut sampler(t, |_| {}), &logits, 20_000);
            let z: f64 = logits.iter().map(|&x| f64::from(x / t).exp()).sum();
            for (f, &x) in freq.iter().zip(&logits) {
                let want = f64::from(x / t).exp() / z;
                assert!((f - want).abs() < 0.02, "t={t} got {f} want {want}");
            }
        }
    }

    #[test]
    fn top_k_limits_candidates_and_one_equals_greedy() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919 % 1009) as f32) * 0.01).collect();
        let want = sampler(0.0, |_| {}).sample(&logits, &[]).id;
        assert!(ids(&mut sampler(1.5, |p| p.top_k = 1), &logits, &[], 100).iter().all(|&id| id == want));
        let freq = frequencies(&mut sampler(1.0, |p| p.top_k = 2), &[0.0, 1.0, 0.9, 0.8, 0.95], 2000);
        assert!(freq[1] > 0.3 && freq[4] > 0.3, "{freq:?}");
        assert_eq!(freq[0] + freq[2] + freq[3], 0.0);
    }

    #[test]
    fn top_p_keeps_smallest_covering_set() {
        let tiny = ids(&mut sampler(1.0, |p| p.top_p = 0.01), &[1.0, 1.2, 1.1, 0.0], &[], 500);
        assert!(tiny.iter().all(|&id| id == 1));
        // probs 0.5, 0.3, 0.2: top_p 0.7 keeps {0, 1}, renormalized to 0.625 / 0.375.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let freq = frequencies(&mut sampler(1.0, |p| p.top_p = 0.7), &logits, 5000);
        assert_eq!(freq[2], 0.0);
        assert!((freq[0] - 0.625).abs() < 0.03, "{freq:?}");
        // Flat 2000-token vocab: top_p 0.5 needs the 1000 lowest ids (ties by id), past the first head.
        let drawn = ids(&mut sampler(1.0, |p| p.top_p = 0.5), &[0.0; 2000], &[], 500);
        assert!(drawn.iter().all(|&id| id < 1000) && drawn.iter().any(|&id| id > 900));
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // p / p_max = 1, 0.6, 0.4: min_p 0.5 drops token 2 only.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let freq = frequencies(&mut sampler(1.0, |p| p.min_p = 0.5), &logits, 5000);
        assert_eq!(freq[2], 0.0);
        assert!(freq[0] > 0.5 && freq[1] > 0.3, "{freq:?}");
        assert!(frequencies(&mut sampler(1.0, |_| {}), &logits, 5000)[2] > 0.1);
    }

    #[test]
    fn each_penalty_changes_the_choice() {
        assert_eq!(sampler(0.0, |_| {}).sample(&[2.0, 1.9], &[0]).id, 0);
        let mut rep = sampler(0.0, |p| p.repetition_penalty = 1.1);
        assert_eq!(rep.sample(&[2.0, 1.9], &[0]).id, 1); // 2.0 / 1.1 < 1.9
        assert_eq!(rep.sample(&[-1.0, -1.05], &[0]).id, 1); // -1.0 * 1.1 < -1.05
        assert_eq!(rep.sample(&[2.0, 1.9], &[1]).id, 0);
        assert_eq!(rep.sample(&[2.0, 1.9], &[u32::MAX, 7]).id, 0); // out of vocab: ignored
        // Presence and frequency count what this sampler generated (OpenAI's definition),
        // not the history window (the prompt is not penalized).
        let mut pres = sampler(0.0, |p| p.presence_penalty = 1.0);
        assert_eq!(ids(&mut pres, &[1.0, 0.5], &[0, 0, 0], 3), [0, 1, 0]); // 0 < 0.5, then 0 > -0.5
        let mut neg = sampler(0.0, |p| p.presence_penalty = -1.0);
        assert_eq!(ids(&mut neg, &[1.0, 1.5], &[], 2), [1, 1]);
        let mut freq = sampler(0.0, |p| p.frequency_penalty = 0.2);
        // 1.0, 0.8, 0.6 beat 0.5; 0.4 loses to 0.5; then 0.4 beats 0.3.
        assert_eq!(ids(&mut freq, &[1.0, 0.5], &[0, 0, 0, 0], 5), [0, 0, 0, 1, 0]);
        let mut bias = sampler(0.0, |p| p.logit_bias = vec![(1, 5.0), (7, 100.0)]);
        assert_eq!(bias.sample(&[2.0, 1.9], &[]).id, 1); // id 7 is outside these logits: ignored
        let mut ban = sampler(1.0, |p| p.logit_bias = vec![(0, -100.0)]);
        assert!(ids(&mut ban, &[5.0, 0.0, 0.0], &[], 50).iter().all(|&id| id != 0));
    }

    #[test]
    fn nan_inf_and_empty_logits_do_not_panic() {
        let edit = |p: &mut SamplingParams| {
            (p.top_logprobs, p.frequency_penalty, p.top_p, p.min_p) = (5, 0.5, 0.9, 0.1);
        };
        for t in [0.0f32, 1.0] {
            let mut s = sampler(t, edit);
            for _ in 0..50 {
                let out = s.sample(&[f32::NAN, 1.0, f32::NAN, 0.5], &[0, 1, 2]);
                assert!((out.id == 1 || out.id == 3) && out.logprob.is_finite(), "{out:?}");
            }
            let out = s.sample(&[f32::NAN; 3], &[0]);
            assert_eq!((out.id, out.logprob), (0, f32::NEG_INFINITY));
            let out = s.sample(&[0.0, f32::INFINITY, f32::INFINITY], &[]);
            assert!(out.id == 1 || out.id == 2);
            assert!((out.logprob - 0.5f32.ln()).abs() < 1e-5, "{out:?}");
            let empty = Sampled { id: 0, logprob: f32::NEG_INFINITY, top: vec![] };
            assert_eq!(s.sample(&[], &[1]), empty);
        }
    }

    /// Pushes every chunk; returns (all emitted text, stopped), flushing with `finish` if not.
    fn run(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = String::new();
        for c in chunks {
            let o = m.push(c);
            out.push_str(&o.emit);
            if o.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    fn out(emit: &str, stopped: bool) -> StopOutput {
        StopOutput { emit: emit.into(), stopped }
    }

    #[test]
    fn stop_split_across_chunks_and_false_starts() {
        let mut m = StopMatcher::new(&["</s>".into()]);
        assert_eq!(m.push("Hello <"), out("Hello ", false));
        assert_eq!(m.push("/s"), out("", false));
        assert_eq!(m.push("> tail"), out("", true));
        assert_eq!(m.push("more"), out("", true));
        assert_eq!(m.finish(), "");
        assert!(m.is_stopped());
        let mut m = StopMatcher::new(&["</s>".into()]);
        assert_eq!(m.push("a </"), out("a ", false));
        assert_eq!(m.push("b>"), out("</b>", false));
        assert_eq!(run(&["</s>"], &["x<", "/", "/s>"]), ("x<//s>".into(), false));
    }

    #[test]
    fn stop_with_multibyte_characters() {
        let mut m = StopMatcher::new(&["日本".into()]);
        assert_eq!(m.push("今日"), out("今", false));
        assert_eq!(m.push("は"), out("日は", false));
        assert_eq!(m.push("日"), out("", false));
        assert_eq!(m.push("本語"), out("", true));
        // "é" and "ã" share their lead byte; nothing may be held back on that byte alone.
        let mut m = StopMatcher::new(&["éx".into()]);
        assert_eq!(m.push("aã"), out("aã", false));
        assert_eq!(m.push("é"), out("", false));
        assert_eq!(m.finish(), "é");
        assert_eq!(run(&["🙂!"], &["ok🙂", "🙂", "!"]), ("ok🙂".into(), true));
    }

    #[test]
    fn multiple_stops_earliest_wins() {
        assert_eq!(run(&["STOP", "END"], &["xxENDyySTOP"]), ("xx".into(), true));
        assert_eq!(run(&["END", "STOP"], &["aST", "OPbEND"]), ("a".into(), true));
        assert_eq!(run(&["abc", "bd"], &["ab", "d"]), ("a".into(), true));
    }

    #[test]
    fn finish_flushes_and_nothing_is_held_needlessly() {
        let mut m = StopMatcher::new(&["<|end|>".into()]);
        assert_eq!(m.push("hello"), out("hello", false));
        assert_eq!(m.push("ab<|e"), out("ab", false));
        assert_eq!((m.finish(), m.finish()), ("<|e".into(), String::new()));
        assert_eq!(StopMatcher::new(&[String::new()]).push("any"), out("any", false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
