//! The engine loop: one thread per model fleet runs schedule → forward → sample → events, and
//! [`EngineHandle`] is how servers reach it — [`EngineHandle::submit`] returns a stream of
//! [`SeqEvent`]s, dropping the stream (or [`EngineHandle::cancel`]) cancels the sequence.
//!
//! Scheduling decisions are the [`chorus_sched::Scheduler`]'s; this module owns the KV cache
//! storage, per-sequence sampling and detokenization, and the metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chorus_sched::config::ConfigError;
use chorus_sched::metrics::{REJECT_REASONS, SchedCounters, TierHistograms};
use chorus_sched::{
    AdmitError, DropError, Event, Sample, SchedConfig, Scheduler, SeqId, SeqRequest, StepPlan, Tier, TierConfig,
};
use tokio::sync::mpsc as async_mpsc;

use crate::engine::{BLOCK_SIZE, Engine, FinishReason};
use crate::exec::{ExecError, Executor, KvPlan, RowOut};
use crate::sampler::{Sampled, Sampler, SamplingError, SamplingParams, StopMatcher};
use crate::step::{LogitsFor, MAX_STEP_TOKENS, SeqStep};
use crate::tokenizer::StreamDecoder;

/// How the engine loop runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// KV cache capacity in tokens (rounded up to whole blocks).
    pub kv_tokens: usize,
    /// Tokens computed per step: decodes first, then prefill chunks.
    pub max_step_tokens: usize,
    /// Sequences decoding at once.
    pub max_running: usize,
    /// Reuse cached KV of identical leading prompt blocks (within one cache salt).
    pub prefix_cache: bool,
    /// Names the weights in prefix-cache identities and metric labels.
    pub model_id: String,
    /// Per-tier weights and limits, indexed by [`Tier::index`].
    pub tiers: [TierConfig; 4],
    /// On a GPU: the share of free device memory the KV cache (and step buffers) may take;
    /// `kv_tokens` still caps it.
    pub gpu_memory_fraction: f64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            kv_tokens: 32 * 1024,
            max_step_tokens: 256,
            // On a 2-core CPU aggregate throughput stops growing at about 16 streams, while
            // every running sequence's decode token lengthens each step that a newly arrived
            // request waits behind.
            max_running: 16,
            prefix_cache: true,
            model_id: "model".to_string(),
            tiers: Tier::ALL.map(TierConfig::default_for),
            gpu_memory_fraction: 0.9,
        }
    }
}

/// Why the engine loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("max_step_tokens is {0}; the engine runs at most {MAX_STEP_TOKENS} tokens per step")]
    StepTokens(usize),
    #[error("starting the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Why a sequence was not accepted for submission. Nothing of it was queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("prompt is empty")]
    EmptyPrompt,
    #[error("prompt[{index}] = {id} is outside the model's vocabulary of {vocab}")]
    BadToken { index: usize, id: u32, vocab: usize },
    #[error(transparent)]
    Sampling(#[from] SamplingError),
}

/// A sequence checked against the model: token ids in its vocabulary, sampling parameters in
/// range. Only [`EngineHandle::validate`] makes one.
#[derive(Debug, Clone)]
pub struct ValidSeq {
    prompt: Vec<u32>,
    params: SamplingParams,
    tier: Tier,
    cache_salt: Vec<u8>,
}

impl ValidSeq {
    /// Prompt token ids.
    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    /// Sampling parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Service tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }
}

/// Token counts of a finished sequence (OpenAI `usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

/// What happens to a submitted sequence, in order. `Rejected`, `Finished`, `Dropped` and
/// `Failed` are final.
#[derive(Debug, Clone, PartialEq)]
pub enum SeqEvent {
    /// Not queued (can never fit, tier input cap, queue full); see [`AdmitError::retry_after_ms`].
    Rejected(AdmitError),
    /// Prefill began after `queued`; `cached_tokens` prompt tokens were reused from the cache.
    Started { cached_tokens: usize, queued: Duration },
    /// One output token and the text that became final with it (may be empty: a partial UTF-8
    /// character, a held-back possible stop string, or an end-of-turn token).
    /// `at` is when the engine loop emitted it (for measuring what happens downstream).
    Token { token: u32, text: String, sampled: Sampled, at: Instant },
    /// Done. `text` is output held back until the end (empty when a stop string ended it).
    Finished { reason: FinishReason, text: String, usage: Usage },
    /// Waited past the tier's queue deadline before starting.
    Dropped(DropError),
    /// The engine failed on this step (a bug, reported rather than hidden).
    Failed(String),
}

impl SeqEvent {
    fn is_final(&self) -> bool {
        matches!(self, SeqEvent::Rejected(_) | SeqEvent::Finished { .. } | SeqEvent::Dropped(_) | SeqEvent::Failed(_))
    }
}

enum Cmd {
    Submit { id: SeqId, seq: ValidSeq, tx: async_mpsc::UnboundedSender<SeqEvent>, at: Instant },
    Cancel(SeqId),
}

/// What the engine loop has measured, per tier where it matters.
#[derive(Debug, Clone, Default)]
pub struct EngineMetrics {
    /// Submission to first token.
    pub ttft: TierHistograms,
    /// Between consecutive tokens of one sequence.
    pub inter_token: TierHistograms,
    /// Submission to start of prefill.
    pub queue: TierHistograms,
    /// The scheduler's counters (prefix cache, preemptions, rejections, tokens by tier).
    pub sched: SchedCounters,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    pub running: usize,
    pub waiting: [usize; 4],
    /// Steps the model rejected (each fails the sequences in it).
    pub failed_steps: u64,
    /// Steps run (a watchdog's sign of progress).
    pub steps: u64,
}

impl EngineMetrics {
    /// Prometheus text exposition, every series labelled with `model`.
    pub fn render(&self, model: &str) -> String {
        self.render_labelled(&[("model", model)])
    }

    /// Prometheus text exposition, every series carrying `labels`.
    pub fn render_labelled(&self, labels: &[(&str, &str)]) -> String {
        use std::fmt::Write as _;
        let m = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace(['"', '\\', '\n'], "_")))
            .collect::<Vec<_>>()
            .join(",");
        let mut o = String::new();
        self.ttft.render("chorus_ttft_seconds", "Time to first token.", &m, &mut o);
        self.inter_token.render("chorus_inter_token_seconds", "Time between output tokens.", &m, &mut o);
        self.queue.render("chorus_queue_seconds", "Time from submission to start of prefill.", &m, &mut o);
        let mut gauge = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let sep = if labels.is_empty() { "" } else { "," };
                let _ = writeln!(o, "{name}{{{m}{sep}{labels}}} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v)];
        gauge(
            "chorus_kv_blocks_used",
            "KV blocks held by running sequences.",
            "gauge",
            one(self.kv_blocks_used as u64),
        );
        gauge("chorus_kv_blocks_total", "KV blocks in the cache.", "gauge", one(self.kv_blocks_total as u64));
        gauge("chorus_running_sequences", "Sequences in the running batch.", "gauge", one(self.running as u64));
        let per_tier = |f: &dyn Fn(Tier) -> u64| Tier::ALL.iter().map(|&t| (format!("tier=\"{t}\""), f(t))).collect();
        gauge(
            "chorus_queue_depth",
            "Requests waiting, per tier.",
            "gauge",
            per_tier(&|t| self.waiting[t.index()] as u64),
        );
        gauge(
            "chorus_prefix_cache_query_tokens_total",
            "Prompt tokens looked up in the prefix cache.",
            "counter",
            one(self.sched.prefix_query_tokens),
        );
        gauge(
            "chorus_prefix_cache_hit_tokens_total",
            "Prompt tokens found in the prefix cache.",
            "counter",
            one(self.sched.prefix_hit_tokens),
        );
        gauge("chorus_preemptions_total", "Sequences preempted for recompute.", "counter", one(self.sched.preemptions));
        gauge(
            "chorus_rejections_total",
            "Requests refused or dropped by the scheduler, by reason.",
            "counter",
            REJECT_REASONS.iter().zip(self.sched.rejections).map(|(r, v)| (format!("reason=\"{r}\""), v)).collect(),
        );
        let mut tokens = Vec::new();
        for t in Tier::ALL {
            tokens.push((format!("tier=\"{t}\",kind=\"prompt\""), self.sched.prefill_tokens[t.index()]));
            tokens.push((format!("tier=\"{t}\",kind=\"output\""), self.sched.decode_tokens[t.index()]));
        }
        gauge("chorus_tokens_total", "Tokens computed, by tier and kind.", "counter", tokens);
        gauge("chorus_engine_failed_steps_total", "Steps the model rejected.", "counter", one(self.failed_steps));
        gauge("chorus_engine_steps_total", "Steps the engine loop ran.", "counter", one(self.steps));
        o
    }
}

/// A handle to a running engine loop; cheap to clone. The loop ends when every handle and
/// stream is dropped.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Cmd>,
    next_id: Arc<AtomicU64>,
    vocab: usize,
    metrics: Arc<Mutex<EngineMetrics>>,
    model_id: Arc<str>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Submit { id, .. } => write!(f, "Submit({id})"),
            Cmd::Cancel(id) => write!(f, "Cancel({id})"),
        }
    }
}

impl EngineHandle {
    /// Starts the engine loop on its own thread.
    pub fn start(engine: Arc<Engine>, opts: ServeOptions) -> Result<Self, StartError> {
        if opts.max_step_tokens > MAX_STEP_TOKENS {
            return Err(StartError::StepTokens(opts.max_step_tokens));
        }
        let c = &engine.model.cfg;
        // The KV cache first: on a GPU free memory may hold fewer blocks than asked for, and the
        // scheduler must hand out only blocks that exist.
        let exec = Executor::new(
            &engine,
            KvPlan {
                block_size: BLOCK_SIZE,
                max_blocks: opts.kv_tokens.div_ceil(BLOCK_SIZE).max(1),
                max_step_tokens: opts.max_step_tokens,
                gpu_memory_fraction: opts.gpu_memory_fraction,
            },
        )?;
        let num_blocks = exec.num_blocks();
        let mut cfg = SchedConfig::new(opts.model_id.clone(), BLOCK_SIZE, num_blocks, c.ctx_len);
        cfg.max_step_tokens = opts.max_step_tokens;
        cfg.max_running = opts.max_running;
        cfg.prefix_cache = opts.prefix_cache;
        cfg.tiers = opts.tiers.clone();
        let sched = Scheduler::new(cfg)?;
        let (tx, rx) = mpsc::channel();
        let metrics = Arc::new(Mutex::new(EngineMetrics { kv_blocks_total: num_blocks, ..Default::default() }));
        let vocab = c.vocab;
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("chorus-engine".into())
            .spawn(move || Loop::new(engine, sched, exec, m).run(&rx))?;
        Ok(Self { tx, next_id: Arc::new(AtomicU64::new(1)), vocab, metrics, model_id: opts.model_id.into() })
    }

    /// Checks a sequence against the model.
    pub fn validate(
        &self,
        prompt: Vec<u32>,
        params: SamplingParams,
        tier: Tier,
        cache_salt: impl Into<Vec<u8>>,
    ) -> Result<ValidSeq, SubmitError> {
        if prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if let Some((index, &id)) = prompt.iter().enumerate().find(|(_, id)| **id as usize >= self.vocab) {
            return Err(SubmitError::BadToken { index, id, vocab: self.vocab });
        }
        params.validate()?;
        Ok(ValidSeq { prompt, params, tier, cache_salt: cache_salt.into() })
    }

    /// Queues a sequence; its events arrive on the returned stream.
    pub fn submit(&self, seq: ValidSeq) -> SeqStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_mpsc::unbounded_channel();
        let finished = if self.tx.send(Cmd::Submit { id, seq, tx: tx.clone(), at: Instant::now() }).is_err() {
            let _ = tx.send(SeqEvent::Failed("the engine loop has stopped".into()));
            true
        } else {
            false
        };
        SeqStream { id, rx, tx: self.tx.clone(), finished }
    }

    /// Cancels a sequence wherever it is; its blocks are free before the next step.
    pub fn cancel(&self, id: SeqId) {
        let _ = self.tx.send(Cmd::Cancel(id));
    }

    /// A snapshot of the metrics (updated once per step).
    pub fn metrics(&self) -> EngineMetrics {
        self.metrics.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The metrics as Prometheus text.
    pub fn render_metrics(&self) -> String {
        self.metrics().render(&self.model_id)
    }
}

/// The events of one submitted sequence. Dropping it before the final event cancels the
/// sequence.
#[derive(Debug)]
pub struct SeqStream {
    id: SeqId,
    rx: async_mpsc::UnboundedReceiver<SeqEvent>,
    tx: mpsc::Sender<Cmd>,
    finished: bool,
}

impl SeqStream {
    /// The sequence's id (for [`EngineHandle::cancel`]).
    pub fn id(&self) -> SeqId {
        self.id
    }

    fn seen(&mut self, e: Option<SeqEvent>) -> Option<SeqEvent> {
        if e.as_ref().is_none_or(SeqEvent::is_final) {
            self.finished = true;
        }
        e
    }

    /// The next event; `None` after the final one.
    pub async fn next(&mut self) -> Option<SeqEvent> {
        let e = self.rx.recv().await;
        self.seen(e)
    }

    /// The next event, blocking the thread (not for use inside an async runtime).
    pub fn blocking_next(&mut self) -> Option<SeqEvent> {
        let e = self.rx.blocking_recv();
        self.seen(e)
    }
}

impl Drop for SeqStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Cmd::Cancel(self.id));
        }
    }
}

struct Live {
    tx: async_mpsc::UnboundedSender<SeqEvent>,
    tier: Tier,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    /// Recent prompt and output ids, for penalties (the last 64 are used, as llama.cpp does).
    history: Vec<u32>,
    submitted: Instant,
    last_token: Option<Instant>,
    /// Text of the sample awaiting its `Token` event, and the sample.
    pending: Option<(String, Sampled)>,
    stopped_by_string: bool,
    ignore_eos: bool,
}

const PENALTY_WINDOW: usize = 64;

struct Loop {
    engine: Arc<Engine>,
    sched: Scheduler,
    exec: Executor,
    live: HashMap<SeqId, Live>,
    metrics: Arc<Mutex<EngineMetrics>>,
    local: EngineMetrics,
    t0: Instant,
}

impl Loop {
    fn new(engine: Arc<Engine>, sched: Scheduler, exec: Executor, metrics: Arc<Mutex<EngineMetrics>>) -> Self {
        let local = metrics.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Self { engine, sched, exec, live: HashMap::new(), metrics, local, t0: Instant::now() }
    }

    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn run(mut self, rx: &mpsc::Receiver<Cmd>) {
        loop {
            if self.sched.is_idle() {
                self.publish();
                match rx.recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        // Every handle and stream is gone: nobody can receive output.
                        return;
                    }
                }
            }
            if !self.step() && !self.sched.is_idle() {
                // Nothing runnable yet (cannot happen with a valid config; never spin).
                if let Ok(cmd) = rx.recv_timeout(Duration::from_millis(1)) {
                    self.command(cmd);
                }
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit { id, seq, tx, at } => {
                let req = SeqRequest {
                    id,
                    tier: seq.tier,
                    max_tokens: seq.params.max_tokens as usize,
                    prompt: seq.prompt,
                    cache_salt: seq.cache_salt,
                };
                let history = req.prompt[req.prompt.len().saturating_sub(PENALTY_WINDOW)..].to_vec();
                if let Err(e) = self.sched.add(req, self.now_ms()) {
                    let _ = tx.send(SeqEvent::Rejected(e));
                    return;
                }
                let sampler = match Sampler::new(&seq.params) {
                    Ok(s) => s,
                    Err(e) => {
                        // Validated already; kept as a typed failure rather than a panic.
                        self.sched.cancel(id);
                        let _ = tx.send(SeqEvent::Failed(e.to_string()));
                        return;
                    }
                };
                self.live.insert(
                    id,
                    Live {
                        tx,
                        tier: seq.tier,
                        sampler,
                        decoder: StreamDecoder::new(true),
                        stops: StopMatcher::new(&seq.params.stop),
                        history,
                        submitted: at,
                        last_token: None,
                        pending: None,
                        stopped_by_string: false,
                        ignore_eos: seq.params.ignore_eos,
                    },
                );
            }
            Cmd::Cancel(id) => {
                self.sched.cancel(id);
                self.live.remove(&id);
            }
        }
    }

    /// Runs one step; `false` if there was nothing to run.
    fn step(&mut self) -> bool {
        let plan = self.sched.schedule(self.now_ms());
        self.deliver(&plan.events);
        if plan.is_empty() {
            return false;
        }
        let steps: Vec<SeqStep<'_>> = plan
            .seqs
            .iter()
            .map(|p| SeqStep {
                tokens: &p.tokens,
                pos: p.pos,
                blocks: &p.blocks,
                logits: if p.sample { LogitsFor::Last } else { LogitsFor::None },
            })
            .collect();
        let e = &*self.engine;
        // Which sampled rows need their logits on the host (on a GPU, the rest are chosen there).
        let needs_host: Vec<bool> =
            plan.samples().map(|p| self.live.get(&p.id).is_some_and(|l| !l.sampler.is_device_greedy())).collect();
        let rows = match self.exec.forward(e, &steps, &|i| needs_host.get(i).copied().unwrap_or(true)) {
            Ok(rows) => rows,
            Err(err) => {
                self.fail_plan(&plan, &err.to_string());
                return true;
            }
        };
        self.local.steps += 1;
        let mut samples = Vec::with_capacity(plan.seqs.len());
        for (i, p) in plan.samples().enumerate().take(rows) {
            let out = self.exec.row(i);
            samples.push(match self.live.get_mut(&p.id) {
                Some(l) => Self::sample(e, l, out),
                // Its stream went away mid-step; the cancel is queued. Any token will do.
                None => Sample { token: 0, stop: true },
            });
        }
        match self.sched.on_step_output(&plan, &samples) {
            Ok(events) => {
                // Publish first, so a client that sees its sequence finish sees its blocks freed.
                self.publish();
                self.deliver(&events);
            }
            // Cannot happen: the plan is the one just made. Fail its sequences loudly.
            Err(err) => self.fail_plan(&plan, &err.to_string()),
        }
        true
    }

    /// Ends every sequence of a step that could not be completed, releasing its blocks.
    fn fail_plan(&mut self, plan: &StepPlan, why: &str) {
        self.local.failed_steps += 1;
        for p in &plan.seqs {
            self.sched.cancel(p.id);
            if let Some(l) = self.live.remove(&p.id) {
                let _ = l.tx.send(SeqEvent::Failed(why.to_string()));
            }
        }
    }

    fn sample(e: &Engine, l: &mut Live, out: RowOut<'_>) -> Sample {
        let window = &l.history[l.history.len().saturating_sub(PENALTY_WINDOW)..];
        let s = match (out.logits, out.greedy) {
            (Some(row), _) => l.sampler.sample(row, window),
            (None, Some((id, logprob))) => l.sampler.accept_device_greedy(id, logprob),
            // Cannot happen: a row has logits or a device choice.
            (None, None) => l.sampler.sample(&[], window),
        };
        let id = s.id;
        if l.history.len() >= 4 * PENALTY_WINDOW {
            l.history.drain(..l.history.len() - PENALTY_WINDOW);
        }
        l.history.push(id);
        if e.stop_ids.contains(&id) && !l.ignore_eos {
            l.pending = Some((String::new(), s));
            return Sample { token: id, stop: true };
        }
        let piece = l.decoder.push(&e.tokenizer, id);
        let so = l.stops.push(&piece);
        l.stopped_by_string = so.stopped;
        l.pending = Some((so.emit, s));
        Sample { token: id, stop: so.stopped }
    }

    fn deliver(&mut self, events: &[Event]) {
        let now = Instant::now();
        for ev in events {
            match ev {
                Event::Started { id, cached_tokens, .. } => {
                    if let Some(l) = self.live.get(id) {
                        let queued = now.duration_since(l.submitted);
                        self.local.queue.get(l.tier).observe(queued.as_secs_f64() * 1e3);
                        self.send(*id, SeqEvent::Started { cached_tokens: *cached_tokens, queued });
                    }
                }
                Event::Token { id, token, .. } => {
                    let Some(l) = self.live.get_mut(id) else { continue };
                    let (text, sampled) = l
                        .pending
                        .take()
                        .unwrap_or_else(|| (String::new(), Sampled { id: *token, logprob: 0.0, top: Vec::new() }));
                    match l.last_token {
                        None => {
                            self.local.ttft.get(l.tier).observe(now.duration_since(l.submitted).as_secs_f64() * 1e3)
                        }
                        Some(t) => {
                            self.local.inter_token.get(l.tier).observe(now.duration_since(t).as_secs_f64() * 1e3)
                        }
                    }
                    l.last_token = Some(now);
                    self.send(*id, SeqEvent::Token { token: *token, text, sampled, at: now });
                }
                Event::Finished { id, reason, prompt_tokens, output_tokens, cached_tokens } => {
                    let Some(mut l) = self.live.remove(id) else { continue };
                    let text = if l.stopped_by_string {
                        String::new()
                    } else {
                        let tail = l.decoder.finish();
                        let mut so = l.stops.push(&tail);
                        if !so.stopped {
                            so.emit.push_str(&l.stops.finish());
                        }
                        so.emit
                    };
                    let reason = match reason {
                        chorus_sched::FinishReason::Stop => FinishReason::Stop,
                        chorus_sched::FinishReason::Length => FinishReason::Length,
                    };
                    let usage = Usage {
                        prompt_tokens: *prompt_tokens,
                        completion_tokens: *output_tokens,
                        cached_tokens: *cached_tokens,
                    };
                    let _ = l.tx.send(SeqEvent::Finished { reason, text, usage });
                }
                Event::Dropped { id, error } => {
                    if let Some(l) = self.live.remove(id) {
                        let _ = l.tx.send(SeqEvent::Dropped(error.clone()));
                    }
                }
                Event::Preempted { .. } => {}
            }
        }
    }

    /// Sends to a live sequence; a closed stream cancels it.
    fn send(&mut self, id: SeqId, ev: SeqEvent) {
        if let Some(l) = self.live.get(&id)
            && l.tx.send(ev).is_err()
        {
            self.live.remove(&id);
            self.sched.cancel(id);
        }
    }

    fn publish(&mut self) {
        let s = &self.sched;
        self.local.sched = s.counters().clone();
        (self.local.kv_blocks_used, self.local.kv_blocks_total) = s.blocks_used();
        self.local.running = s.running();
        self.local.waiting = Tier::ALL.map(|t| s.waiting(t));
        *self.metrics.lock().unwrap_or_else(|e| e.into_inner()) = self.local.clone();
    }
}
