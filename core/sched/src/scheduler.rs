//! The scheduler state machine.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

use crate::block::{BlockHash, BlockPool, BlockTable};
use crate::config::{SchedConfig, Tier};
use crate::metrics::SchedCounters;

/// The shortest saturated period an admission-rate sample is taken over (with at least four
/// starts in it; a period of fifteen times this with fewer is a sample too).
const START_WINDOW_MS: u64 = 1000;

/// Names a sequence; chosen by the caller, unique among live sequences.
pub type SeqId = u64;

/// A validated request to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqRequest {
    pub id: SeqId,
    pub tier: Tier,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Most output tokens (the last one is sampled, never computed into the cache).
    pub max_tokens: usize,
    /// Scope of prefix-cache sharing: sequences share cached KV only with equal salts (the
    /// tenant, by default).
    pub cache_salt: Vec<u8>,
}

/// Why a request was not queued. Nothing of it is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("prompt is empty")]
    EmptyPrompt,
    #[error("sequence id {0} is already in use")]
    DuplicateId(SeqId),
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    /// Prompt plus output can never fit, however idle the server.
    #[error("prompt of {prompt} tokens + max_tokens {max_tokens} exceeds the {what} of {limit} tokens")]
    NeverFits { prompt: usize, max_tokens: usize, limit: usize, what: &'static str },
    /// The prompt is over the tier's input cap.
    #[error("prompt of {prompt} tokens exceeds the {tier} tier's max_input_tokens of {limit}")]
    InputTooLong { tier: Tier, prompt: usize, limit: usize },
    /// Too many requests of this tier are waiting.
    #[error("{tier} queue is full ({limit} requests waiting); retry after {retry_after_ms} ms")]
    QueueFull { tier: Tier, limit: usize, retry_after_ms: u64 },
    /// Too many prompt tokens of this tier are waiting.
    #[error(
        "{tier} queue holds {queued} prompt tokens; {prompt} more exceeds the limit of {limit}; retry after {retry_after_ms} ms"
    )]
    QueueTokensFull { tier: Tier, queued: usize, prompt: usize, limit: usize, retry_after_ms: u64 },
    /// The tier's queue drains too slowly for this request to start before its queue deadline:
    /// it is refused now rather than dropped after waiting. Lower tiers, whose share of the
    /// admissions is smaller, reach this first.
    #[error(
        "the {tier} queue would hold this request about {estimate_ms} ms, over its queue deadline of {deadline_ms} ms; retry after {retry_after_ms} ms"
    )]
    WouldMissDeadline { tier: Tier, estimate_ms: u64, deadline_ms: u64, retry_after_ms: u64 },
}

impl AdmitError {
    /// A stable label for metrics and error codes (one of [`crate::metrics::REJECT_REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            AdmitError::EmptyPrompt | AdmitError::ZeroMaxTokens | AdmitError::DuplicateId(_) => "invalid",
            AdmitError::NeverFits { .. } => "never_fits",
            AdmitError::InputTooLong { .. } => "input_too_long",
            AdmitError::QueueFull { .. } => "queue_full",
            AdmitError::QueueTokensFull { .. } => "queue_tokens_full",
            AdmitError::WouldMissDeadline { .. } => "would_miss_deadline",
        }
    }

    /// When retrying may succeed; `None` when retrying the same request never will.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            AdmitError::QueueFull { retry_after_ms, .. }
            | AdmitError::QueueTokensFull { retry_after_ms, .. }
            | AdmitError::WouldMissDeadline { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }
}

/// Why a queued request was dropped before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropError {
    #[error("waited {waited_ms} ms in the queue, over the deadline of {limit_ms} ms")]
    QueueTimeout { waited_ms: u64, limit_ms: u64 },
}

/// Why a sequence finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The engine reported a stop (end-of-turn token or stop string).
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
}

/// What happened to a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Its first prefill chunk is in this step; `cached_tokens` prompt tokens came from the
    /// prefix cache.
    Started { id: SeqId, cached_tokens: usize, queued_ms: u64 },
    /// Output token number `index` (from 0).
    Token { id: SeqId, token: u32, index: usize },
    /// Done; its blocks are released.
    Finished { id: SeqId, reason: FinishReason, prompt_tokens: usize, output_tokens: usize, cached_tokens: usize },
    /// Dropped from the queue before starting; nothing was computed.
    Dropped { id: SeqId, error: DropError },
    /// Its blocks were taken back; it will resume by recomputing, with unchanged output.
    Preempted { id: SeqId },
}

/// One sequence's part of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSeq {
    pub id: SeqId,
    /// Tokens to compute, at positions `pos..pos + tokens.len()`.
    pub tokens: Vec<u32>,
    pub pos: usize,
    /// Block ids covering `0..pos + tokens.len()`.
    pub blocks: Vec<u32>,
    /// Whether the last token's logits are sampled this step (the chunk ends the known tokens).
    pub sample: bool,
}

/// What to run in one step, and what happened while planning it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Step number; [`Scheduler::on_step_output`] accepts only the latest plan.
    pub step: u64,
    /// Decodes first, then prefill chunks.
    pub seqs: Vec<PlannedSeq>,
    /// Drops and preemptions decided while planning.
    pub events: Vec<Event>,
}

impl StepPlan {
    /// Nothing to compute.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Tokens computed by the step.
    pub fn tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }

    /// Entries of [`Self::seqs`] that need a [`Sample`], in order.
    pub fn samples(&self) -> impl Iterator<Item = &PlannedSeq> {
        self.seqs.iter().filter(|s| s.sample)
    }
}

/// The token sampled for a planned sequence, and whether the engine saw a stop in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub token: u32,
    pub stop: bool,
}

/// [`Scheduler::on_step_output`] was given output that does not match the current plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanMismatch {
    #[error("plan of step {plan} is not the current step {current}")]
    Stale { plan: u64, current: u64 },
    #[error("plan asks for {expected} samples, got {got}")]
    Samples { expected: usize, got: usize },
}

#[derive(Debug)]
struct Seq {
    tier: Tier,
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    root: BlockHash,
    /// Hash chain of the full blocks of `tokens` computed so far (extended lazily).
    hashes: Vec<BlockHash>,
    table: BlockTable,
    /// Tokens whose KV is in `table`.
    computed: usize,
    /// Leading blocks of `table` already named in the prefix cache.
    registered: usize,
    cached_tokens: usize,
    arrived_ms: u64,
    started: bool,
    preempted: bool,
    running: bool,
    start_order: u64,
    planned_step: u64,
}

impl Seq {
    fn extend_hashes(&mut self, blocks: usize, bs: usize) {
        while self.hashes.len() < blocks {
            let i = self.hashes.len();
            let parent = self.hashes.last().copied().unwrap_or(self.root);
            self.hashes.push(parent.child(&self.tokens[i * bs..(i + 1) * bs]));
        }
    }

    fn remaining(&self) -> usize {
        self.tokens.len() - self.computed
    }
}

/// Continuous-batching scheduler for one model fleet. See the crate docs.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedConfig,
    pool: BlockPool,
    seqs: HashMap<SeqId, Seq>,
    waiting: [VecDeque<SeqId>; 4],
    /// Prompt tokens waiting per tier.
    queued_tokens: [usize; 4],
    running: Vec<SeqId>,
    /// Weighted tokens served per tier (start-time fair queuing), and the virtual time of the
    /// latest admission, which a tier joining the competition starts from.
    vtime: [f64; 4],
    vclock: f64,
    step: u64,
    next_start: u64,
    /// Tokens per millisecond, smoothed, for retry-after estimates before `start_rate` is known.
    rate: Option<f64>,
    /// Per tier, and for all tiers together (the last entry): admissions per millisecond while
    /// that queue (any queue) held requests, smoothed. How fast a queue drains when there is
    /// more work than room.
    start_rate: [Option<f64>; 5],
    /// The measurement windows of `start_rate`: backlogged milliseconds and the starts in them.
    window: [(u64, u64); 5],
    /// The previous plan's time, and which queues (and whether any) it left with requests.
    last_schedule: Option<(u64, [bool; 5])>,
    last_plan: Option<(u64, usize)>,
    counters: SchedCounters,
    watermark: usize,
    /// Per tier: whether its `prefill_chunk` applies in the step being planned.
    capped: [bool; 4],
}

impl Scheduler {
    /// A scheduler with an empty cache. The config must pass [`SchedConfig::validate`].
    pub fn new(cfg: SchedConfig) -> Result<Self, crate::config::ConfigError> {
        cfg.validate()?;
        let pool = BlockPool::new(cfg.num_blocks, cfg.block_size);
        // Admission keeps 1% of blocks spare so running sequences can decode without preempting.
        let watermark = cfg.num_blocks / 100;
        Ok(Self {
            cfg,
            pool,
            seqs: HashMap::new(),
            waiting: Default::default(),
            queued_tokens: [0; 4],
            running: Vec::new(),
            vtime: [0.0; 4],
            vclock: 0.0,
            step: 0,
            next_start: 0,
            rate: None,
            start_rate: [None; 5],
            window: [(0, 0); 5],
            last_schedule: None,
            last_plan: None,
            counters: SchedCounters::default(),
            watermark,
            capped: [false; 4],
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    /// Counters since creation.
    pub fn counters(&self) -> &SchedCounters {
        &self.counters
    }

    /// Blocks held by running sequences, and blocks in all.
    pub fn blocks_used(&self) -> (usize, usize) {
        (self.pool.held(), self.pool.num_blocks())
    }

    /// Requests waiting in `tier`'s queue (preempted ones included).
    pub fn waiting(&self, tier: Tier) -> usize {
        self.waiting[tier.index()].len()
    }

    /// Sequences running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// No sequence waiting or running.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Whether `id` is waiting or running.
    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// How long `tier`'s queue, with `extra` more requests at its back, takes to start its
    /// last one: the queue's length over the rate the tier's queue was measured to drain at
    /// while it held requests. A tier not yet measured gets its weight's share, among the tiers
    /// with requests waiting, of the rate measured for all. `None` until a backlogged period
    /// has been measured.
    pub fn queue_estimate_ms(&self, tier: Tier, extra: usize) -> Option<u64> {
        let t = tier.index();
        let positive = |r: Option<f64>| r.filter(|r| *r > 0.0);
        let rate = match positive(self.start_rate[t]) {
            Some(r) => r,
            None => {
                let all = positive(self.start_rate[4])?;
                let w = |i: usize| f64::from(self.cfg.tiers[i].weight.max(1));
                let competing: f64 = (0..4).filter(|&i| i == t || !self.waiting[i].is_empty()).map(w).sum();
                all * w(t) / competing
            }
        };
        let n = (self.waiting[t].len() + extra) as f64;
        Some((n / rate).min(u64::MAX as f64 / 2.0) as u64)
    }

    /// When a refused request of `tier` may be accepted: its own queue's estimate (until its
    /// queue has drained below the deadline, for [`AdmitError::WouldMissDeadline`]), else the
    /// time to prefill every queued prompt token.
    fn retry_after_ms(&self, tier: Tier) -> u64 {
        let deadline = self.cfg.tier(tier).queue_deadline_ms;
        let own = self.queue_estimate_ms(tier, 1).map(|e| if deadline > 0 { e.saturating_sub(deadline) } else { e });
        let queued: usize = self.queued_tokens.iter().sum();
        let fallback = match self.rate {
            Some(r) if r > 0.0 => (queued as f64 / r) as u64,
            _ => 1000,
        };
        own.unwrap_or(fallback).clamp(1000, 120_000)
    }

    /// Measures admission rates over periods when requests were left waiting: the starts a
    /// plan makes after such a period are what the freed room allowed. `starts` is per tier.
    fn observe_admissions(&mut self, now_ms: u64, starts: [u64; 4]) {
        let starts = [starts[0], starts[1], starts[2], starts[3], starts.iter().sum()];
        if let Some((at, backlogged)) = self.last_schedule {
            for i in 0..5 {
                if backlogged[i] {
                    self.window[i].0 += now_ms.saturating_sub(at);
                    self.window[i].1 += starts[i];
                }
            }
        }
        for i in 0..5 {
            let (ms, n) = self.window[i];
            if (ms >= START_WINDOW_MS && n >= 4) || ms >= 15 * START_WINDOW_MS {
                let r = n as f64 / ms as f64;
                self.start_rate[i] = Some(self.start_rate[i].map_or(r, |old| 0.5 * old + 0.5 * r));
                self.window[i] = (0, 0);
            }
        }
        let waiting = |i: usize| !self.waiting[i].is_empty();
        let any = (0..4).any(waiting);
        self.last_schedule = Some((now_ms, [waiting(0), waiting(1), waiting(2), waiting(3), any]));
    }

    /// Queues a request, or rejects it at once with the reason.
    pub fn add(&mut self, req: SeqRequest, now_ms: u64) -> Result<(), AdmitError> {
        let r = self.check_add(&req);
        if let Err(e) = &r {
            let i = crate::metrics::REJECT_REASONS.iter().position(|x| *x == e.reason()).unwrap_or(0);
            self.counters.rejections[i] += 1;
            return r;
        }
        let t = req.tier.index();
        if self.waiting[t].is_empty() {
            // A tier that was idle competes from now on; it does not bank credit while away.
            self.vtime[t] = self.vtime[t].max(self.vclock);
        }
        let n = req.prompt.len();
        self.queued_tokens[t] += n;
        self.waiting[t].push_back(req.id);
        self.seqs.insert(
            req.id,
            Seq {
                tier: req.tier,
                root: BlockHash::root(&self.cfg.model_id, &req.cache_salt),
                tokens: req.prompt,
                prompt_len: n,
                max_tokens: req.max_tokens,
                hashes: Vec::new(),
                table: BlockTable::default(),
                computed: 0,
                registered: 0,
                cached_tokens: 0,
                arrived_ms: now_ms,
                started: false,
                preempted: false,
                running: false,
                start_order: 0,
                planned_step: 0,
            },
        );
        self.debug_check();
        Ok(())
    }

    fn check_add(&self, req: &SeqRequest) -> Result<(), AdmitError> {
        let n = req.prompt.len();
        if n == 0 {
            return Err(AdmitError::EmptyPrompt);
        }
        if req.max_tokens == 0 {
            return Err(AdmitError::ZeroMaxTokens);
        }
        if self.seqs.contains_key(&req.id) {
            return Err(AdmitError::DuplicateId(req.id));
        }
        let tc = self.cfg.tier(req.tier);
        if n > tc.max_input_tokens {
            return Err(AdmitError::InputTooLong { tier: req.tier, prompt: n, limit: tc.max_input_tokens });
        }
        let total = n.saturating_add(req.max_tokens);
        let cache = self.cfg.num_blocks * self.cfg.block_size;
        for (limit, what) in [(self.cfg.max_context, "context length"), (cache, "KV cache")] {
            if total > limit {
                return Err(AdmitError::NeverFits { prompt: n, max_tokens: req.max_tokens, limit, what });
            }
        }
        let t = req.tier.index();
        if self.waiting[t].len() >= tc.max_queued_requests {
            return Err(AdmitError::QueueFull {
                tier: req.tier,
                limit: tc.max_queued_requests,
                retry_after_ms: self.retry_after_ms(req.tier),
            });
        }
        if self.queued_tokens[t] + n > tc.max_queued_tokens {
            return Err(AdmitError::QueueTokensFull {
                tier: req.tier,
                queued: self.queued_tokens[t],
                prompt: n,
                limit: tc.max_queued_tokens,
                retry_after_ms: self.retry_after_ms(req.tier),
            });
        }
        // Shed what would only wait to be dropped: with a queue already there, a request whose
        // estimated start is past its tier's deadline is refused now, with when to come back.
        if tc.queue_deadline_ms > 0
            && !self.waiting[t].is_empty()
            && let Some(estimate_ms) = self.queue_estimate_ms(req.tier, 1)
            && estimate_ms > tc.queue_deadline_ms
        {
            return Err(AdmitError::WouldMissDeadline {
                tier: req.tier,
                estimate_ms,
                deadline_ms: tc.queue_deadline_ms,
                retry_after_ms: self.retry_after_ms(req.tier),
            });
        }
        Ok(())
    }

    /// Removes a sequence wherever it is, releasing its blocks now. `false` if unknown.
    pub fn cancel(&mut self, id: SeqId) -> bool {
        let Some(mut seq) = self.seqs.remove(&id) else { return false };
        let t = seq.tier.index();
        if seq.running {
            self.running.retain(|&r| r != id);
        } else {
            self.waiting[t].retain(|&w| w != id);
            self.queued_tokens[t] -= seq.tokens.len();
        }
        self.pool.release(&mut seq.table);
        self.debug_check();
        true
    }

    /// Plans the next step at time `now_ms`: drops queued requests past their deadline, gives
    /// every running sequence its decode token (preempting when blocks run out), continues
    /// partial prefills, then admits waiting requests by weighted fair share until the step's
    /// token budget is spent.
    pub fn schedule(&mut self, now_ms: u64) -> StepPlan {
        self.step += 1;
        self.counters.steps += 1;
        if let Some((at, tokens)) = self.last_plan.take()
            && now_ms > at
            && tokens > 0
        {
            let r = tokens as f64 / (now_ms - at) as f64;
            self.rate = Some(self.rate.map_or(r, |old| 0.8 * old + 0.2 * r));
        }
        let mut plan = StepPlan { step: self.step, ..StepPlan::default() };
        self.drop_expired(now_ms, &mut plan.events);

        self.make_room_for_higher_tiers(&mut plan.events);
        let mut budget = self.cfg.max_step_tokens;
        // Prompt tokens each tier has prefilling in this step, against its `prefill_chunk`,
        // which applies only below the highest tier with work.
        let prefill = &mut [0usize; 4];
        let top = Tier::ALL.into_iter().rev().find(|t| !self.waiting[t.index()].is_empty() || self.tier_running(*t));
        self.capped = Tier::ALL.map(|t| top.is_some_and(|top| t < top));
        let seqs = &self.seqs;
        self.running.sort_by_key(|id| {
            let s = &seqs[id];
            (Reverse(s.tier), s.start_order)
        });
        for decode_pass in [true, false] {
            let mut i = 0;
            while i < self.running.len() && budget > 0 {
                let id = self.running[i];
                let s = &self.seqs[&id];
                if s.planned_step == self.step || (s.remaining() == 1) != decode_pass {
                    i += 1;
                    continue;
                }
                let ti = s.tier.index();
                let cap = if decode_pass { usize::MAX } else { self.prefill_cap(ti).saturating_sub(prefill[ti]) };
                let mut chunk = s.remaining().min(budget).min(cap);
                if chunk == 0 {
                    i += 1;
                    continue;
                }
                loop {
                    let s = self.seqs.get_mut(&id).expect("running sequences exist");
                    if self.pool.ensure(&mut s.table, s.computed + chunk) {
                        budget -= chunk;
                        if !decode_pass {
                            prefill[ti] += chunk;
                        }
                        self.plan_seq(id, chunk, &mut plan);
                        i += 1;
                        break;
                    }
                    // Out of blocks: the lowest-priority, most recently started sequence that is
                    // not already in this step gives its blocks back.
                    let step = self.step;
                    let victim =
                        (i + 1..self.running.len()).rev().find(|&j| self.seqs[&self.running[j]].planned_step != step);
                    if let Some(j) = victim {
                        self.preempt(j, &mut plan.events);
                        continue;
                    }
                    if !decode_pass {
                        // A partial prefill takes what fits and waits for the rest.
                        let s = &self.seqs[&id];
                        let fit = ((s.table.len() + self.pool.available()) * self.cfg.block_size)
                            .saturating_sub(s.computed)
                            .min(chunk);
                        if fit > 0 && fit < chunk {
                            chunk = fit;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    // Nothing below it to take from: it steps aside itself.
                    self.preempt(i, &mut plan.events);
                    break;
                }
            }
        }
        self.admit(now_ms, &mut budget, prefill, &mut plan);
        let mut starts = [0u64; 4];
        for e in &plan.events {
            if let Event::Started { id, .. } = e {
                starts[self.seqs[id].tier.index()] += 1;
            }
        }
        self.observe_admissions(now_ms, starts);
        self.last_plan = Some((now_ms, plan.tokens()));
        self.debug_check();
        plan
    }

    /// When the request fair queuing would admit next outranks a running sequence and there is
    /// no room for it (every running slot taken, or too few blocks for its first chunk), the
    /// lowest-priority, most recently started running sequence of a lower tier steps aside for
    /// recompute. Only the next admission's tier counts, so a slot freed for it cannot go to
    /// another tier, and at most one sequence steps aside per step.
    fn make_room_for_higher_tiers(&mut self, events: &mut Vec<Event>) {
        let Some(tier) = self.next_tier(&[false; 4]) else { return };
        let Some(&head) = self.waiting[tier.index()].front() else { return };
        let first_chunk =
            self.seqs[&head].tokens.len().min(self.cfg.max_step_tokens).min(self.cfg.tier(tier).prefill_chunk);
        let need = first_chunk.div_ceil(self.cfg.block_size) + self.watermark;
        if self.running.len() < self.cfg.max_running && self.pool.available() >= need {
            return;
        }
        let victim = (0..self.running.len()).filter(|&i| self.seqs[&self.running[i]].tier < tier).min_by_key(|&i| {
            let s = &self.seqs[&self.running[i]];
            (s.tier, Reverse(s.start_order))
        });
        if let Some(i) = victim {
            self.preempt(i, events);
        }
    }

    fn drop_expired(&mut self, now_ms: u64, events: &mut Vec<Event>) {
        for t in Tier::ALL {
            let limit = self.cfg.tier(t).queue_deadline_ms;
            if limit == 0 {
                continue;
            }
            let ti = t.index();
            let mut i = 0;
            while i < self.waiting[ti].len() {
                let id = self.waiting[ti][i];
                let s = &self.seqs[&id];
                let waited = now_ms.saturating_sub(s.arrived_ms);
                // A preempted sequence has already streamed output; it is never dropped.
                if !s.preempted && waited > limit {
                    self.waiting[ti].remove(i);
                    let s = self.seqs.remove(&id).expect("waiting sequences exist");
                    self.queued_tokens[ti] -= s.tokens.len();
                    self.counters.rejections[5] += 1;
                    events.push(Event::Dropped {
                        id,
                        error: DropError::QueueTimeout { waited_ms: waited, limit_ms: limit },
                    });
                } else {
                    i += 1;
                }
            }
        }
    }

    fn preempt(&mut self, index: usize, events: &mut Vec<Event>) {
        let id = self.running.remove(index);
        let s = self.seqs.get_mut(&id).expect("running sequences exist");
        self.pool.release(&mut s.table);
        s.computed = 0;
        s.registered = 0;
        s.running = false;
        s.preempted = true;
        let t = s.tier.index();
        self.queued_tokens[t] += s.tokens.len();
        // Back to the head of its queue: it was admitted before anything still waiting.
        self.waiting[t].push_front(id);
        self.counters.preemptions += 1;
        events.push(Event::Preempted { id });
    }

    fn plan_seq(&mut self, id: SeqId, chunk: usize, plan: &mut StepPlan) {
        let s = self.seqs.get_mut(&id).expect("planned sequences exist");
        s.planned_step = self.step;
        let w = f64::from(self.cfg.tiers[s.tier.index()].weight);
        self.vtime[s.tier.index()] += chunk as f64 / w;
        plan.seqs.push(PlannedSeq {
            id,
            tokens: s.tokens[s.computed..s.computed + chunk].to_vec(),
            pos: s.computed,
            blocks: s.table.ids().to_vec(),
            sample: s.computed + chunk == s.tokens.len(),
        });
    }

    fn tier_running(&self, t: Tier) -> bool {
        self.running.iter().any(|id| self.seqs[id].tier == t)
    }

    /// Prefill tokens tier `t` may take this step.
    fn prefill_cap(&self, t: usize) -> usize {
        if self.capped[t] { self.cfg.tiers[t].prefill_chunk } else { usize::MAX }
    }

    /// The backlogged tier furthest behind its weighted share (ties go to the higher tier).
    fn next_tier(&self, spent: &[bool; 4]) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .rev()
            .filter(|t| !self.waiting[t.index()].is_empty() && !spent[t.index()])
            .min_by(|a, b| self.vtime[a.index()].total_cmp(&self.vtime[b.index()]))
    }

    fn admit(&mut self, now_ms: u64, budget: &mut usize, prefill: &mut [usize; 4], plan: &mut StepPlan) {
        let bs = self.cfg.block_size;
        // Tiers that used up their prefill chunk for this step.
        let mut spent = [false; 4];
        while *budget > 0 && self.running.len() < self.cfg.max_running {
            let Some(tier) = self.next_tier(&spent) else { break };
            let t = tier.index();
            let cap = self.prefill_cap(t).saturating_sub(prefill[t]);
            if cap == 0 {
                spent[t] = true;
                continue;
            }
            let id = self.waiting[t][0];
            let s = self.seqs.get_mut(&id).expect("waiting sequences exist");
            // Reuse leading cached blocks, always leaving at least one token to compute so
            // the step yields logits.
            let full = if self.cfg.prefix_cache { (s.tokens.len() - 1) / bs } else { 0 };
            s.extend_hashes(full, bs);
            let (hit, unheld) = self.pool.probe(&s.hashes[..full]);
            let start = hit * bs;
            let chunk = (s.tokens.len() - start).min(*budget).min(cap);
            let need = self.pool.blocks_for(hit, start + chunk);
            let spare = if self.running.is_empty() { 0 } else { self.watermark };
            if self.pool.available() < unheld + need + spare {
                break;
            }
            self.waiting[t].pop_front();
            self.queued_tokens[t] -= s.tokens.len();
            let got = self.pool.acquire_prefix(&mut s.table, &s.hashes[..hit]);
            debug_assert_eq!(got, hit);
            let ok = self.pool.ensure(&mut s.table, start + chunk);
            debug_assert!(ok, "capacity was checked");
            s.computed = start;
            s.registered = hit;
            s.running = true;
            s.start_order = self.next_start;
            self.next_start += 1;
            self.counters.prefix_query_tokens += (full * bs) as u64;
            self.counters.prefix_hit_tokens += start as u64;
            if !s.started {
                s.started = true;
                s.cached_tokens = start;
                plan.events.push(Event::Started {
                    id,
                    cached_tokens: start,
                    queued_ms: now_ms.saturating_sub(s.arrived_ms),
                });
            }
            self.vclock = self.vclock.max(self.vtime[t]);
            self.running.push(id);
            *budget -= chunk;
            prefill[t] += chunk;
            self.plan_seq(id, chunk, plan);
        }
    }

    /// Applies a step's results: advances every planned sequence, records sampled tokens and
    /// finishes sequences that stopped or reached their length. `samples` has one entry per
    /// [`StepPlan::samples`], in order. Sequences cancelled since planning are skipped.
    pub fn on_step_output(&mut self, plan: &StepPlan, samples: &[Sample]) -> Result<Vec<Event>, PlanMismatch> {
        if plan.step != self.step {
            return Err(PlanMismatch::Stale { plan: plan.step, current: self.step });
        }
        let expected = plan.samples().count();
        if samples.len() != expected {
            return Err(PlanMismatch::Samples { expected, got: samples.len() });
        }
        // A plan is applied once.
        self.step += 1;
        let bs = self.cfg.block_size;
        let mut events = Vec::new();
        let mut samples = samples.iter();
        for p in &plan.seqs {
            let sample = if p.sample { samples.next().copied() } else { None };
            let Some(s) = self.seqs.get_mut(&p.id) else { continue };
            if !s.running || s.computed != p.pos || s.computed + p.tokens.len() > s.tokens.len() {
                continue;
            }
            let t = s.tier.index();
            s.computed += p.tokens.len();
            if p.tokens.len() == 1 && p.pos >= s.prompt_len {
                self.counters.decode_tokens[t] += 1;
            } else {
                self.counters.prefill_tokens[t] += p.tokens.len() as u64;
            }
            if self.cfg.prefix_cache {
                let full = s.computed / bs;
                s.extend_hashes(full, bs);
                for i in s.registered..full {
                    self.pool.register(&s.table, i, s.hashes[i]);
                }
                s.registered = s.registered.max(full);
            }
            let Some(sample) = sample else { continue };
            s.tokens.push(sample.token);
            let output = s.tokens.len() - s.prompt_len;
            events.push(Event::Token { id: p.id, token: sample.token, index: output - 1 });
            let reason = if sample.stop {
                Some(FinishReason::Stop)
            } else if output >= s.max_tokens || s.tokens.len() >= self.cfg.max_context {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = reason {
                events.push(Event::Finished {
                    id: p.id,
                    reason,
                    prompt_tokens: s.prompt_len,
                    output_tokens: output,
                    cached_tokens: s.cached_tokens,
                });
                self.cancel(p.id);
            }
        }
        self.debug_check();
        Ok(events)
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if let Err(e) = self.check_invariants() {
            panic!("scheduler invariant broken: {e}");
        }
    }

    /// Checks that every block is free, cached or held, that reference counts equal the
    /// block tables holding each block, that waiting sequences hold nothing and running ones
    /// hold enough, and that queue accounting adds up. Runs after every call in debug builds.
    pub fn check_invariants(&self) -> Result<(), String> {
        let tables: Vec<&BlockTable> = self.running.iter().map(|id| &self.seqs[id].table).collect();
        self.pool.check(&tables)?;
        let bs = self.cfg.block_size;
        for id in &self.running {
            let s = self.seqs.get(id).ok_or_else(|| format!("running {id} does not exist"))?;
            if !s.running || s.table.len() < s.computed.div_ceil(bs) || s.computed > s.tokens.len() {
                return Err(format!("running {id}: {} blocks for {} computed tokens", s.table.len(), s.computed));
            }
        }
        let mut waiting = 0;
        for t in Tier::ALL {
            let mut tokens = 0;
            for id in &self.waiting[t.index()] {
                let s = self.seqs.get(id).ok_or_else(|| format!("waiting {id} does not exist"))?;
                if s.running || !s.table.is_empty() || s.computed != 0 || s.tier != t {
                    return Err(format!("waiting {id} holds blocks or is marked running"));
                }
                tokens += s.tokens.len();
            }
            if tokens != self.queued_tokens[t.index()] {
                return Err(format!("{t}: {tokens} tokens waiting, accounted {}", self.queued_tokens[t.index()]));
            }
            waiting += self.waiting[t.index()].len();
        }
        if waiting + self.running.len() != self.seqs.len() {
            return Err(format!(
                "{} sequences but {waiting} waiting and {} running",
                self.seqs.len(),
                self.running.len()
            ));
        }
        Ok(())
    }
}
