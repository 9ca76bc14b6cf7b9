//! The engine loop: one thread per model fleet runs schedule → forward → sample → events, and
//! [`EngineHandle`] is how servers reach it — [`EngineHandle::submit`] returns a stream of
//! [`SeqEvent`]s, dropping the stream (or [`EngineHandle::cancel`]) cancels the sequence.
//!
//! Scheduling decisions are the [`chorus_sched::Scheduler`]'s; this module owns the KV cache
//! storage, per-sequence sampling and detokenization, and the metrics.
//!
//! The loop runs under a supervisor on the same thread. A panic inside the loop, or a step the
//! backend fails, ends that loop: every sequence it held gets [`SeqEvent::Failed`], its
//! scheduler and KV cache are dropped and built again, and a new loop takes the commands that
//! were waiting. [`EngineHandle::health`] says which state the loop is in, how many steps it
//! has completed and how often it restarted.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chorus_sched::config::ConfigError;
use chorus_sched::metrics::SchedCounters;
use chorus_sched::{AdmitError, DropError, Event, Sample, SchedConfig, Scheduler, SeqId, SeqRequest, Tier, TierConfig};
use tokio::sync::mpsc as async_mpsc;

use crate::constraint::{Constraint, ConstraintError};
use crate::engine::{BLOCK_SIZE, Engine, FinishReason};
use crate::exec::{ExecError, Executor, KvPlan, RowOut};
use crate::health::Pulse;
pub use crate::health::{EngineFailure, EngineHealth, Failpoints, LastFailure, LoopState};
pub use crate::metrics::EngineMetrics;
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
    #[error("logit_bias names token {id}, outside the model's vocabulary of {vocab}")]
    BiasToken { id: u32, vocab: usize },
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
}

/// A sequence checked against the model: token ids in its vocabulary, sampling parameters in
/// range, its grammar compiled. Only [`EngineHandle::validate`] makes one.
#[derive(Debug)]
pub struct ValidSeq {
    prompt: Vec<u32>,
    params: SamplingParams,
    tier: Tier,
    cache_salt: Vec<u8>,
    /// Boxed: a compiled matcher is kilobytes, and the loop's commands move by value.
    constraint: Option<Box<Constraint>>,
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
    /// The engine failed while the sequence was in it (a panic or a failed step: the loop
    /// restarts), or could not take it (restarting, stopped).
    Failed(EngineFailure),
}

impl SeqEvent {
    fn is_final(&self) -> bool {
        matches!(self, SeqEvent::Rejected(_) | SeqEvent::Finished { .. } | SeqEvent::Dropped(_) | SeqEvent::Failed(_))
    }
}

enum Cmd {
    Submit { id: SeqId, seq: Box<ValidSeq>, tx: async_mpsc::UnboundedSender<SeqEvent>, at: Instant },
    Cancel(SeqId),
}

/// A handle to a running engine loop; cheap to clone. The loop ends when every handle and
/// stream is dropped.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Cmd>,
    next_id: Arc<AtomicU64>,
    vocab: usize,
    engine: Arc<Engine>,
    metrics: Arc<Mutex<EngineMetrics>>,
    model_id: Arc<str>,
    pulse: Arc<Pulse>,
    failpoints: Arc<Failpoints>,
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
    /// Starts the engine loop, under its supervisor, on its own thread. The first scheduler
    /// and KV cache are built here, so a configuration or device that cannot work is an error
    /// now rather than a loop that keeps restarting.
    pub fn start(engine: Arc<Engine>, opts: ServeOptions) -> Result<Self, StartError> {
        if opts.max_step_tokens > MAX_STEP_TOKENS {
            return Err(StartError::StepTokens(opts.max_step_tokens));
        }
        let first = build(&engine, &opts)?;
        let (tx, rx) = mpsc::channel();
        let metrics =
            Arc::new(Mutex::new(EngineMetrics { kv_blocks_total: first.1.num_blocks(), ..Default::default() }));
        let pulse = Arc::new(Pulse::default());
        let failpoints = Arc::new(Failpoints::default());
        let vocab = engine.model.cfg.vocab;
        let model_id: Arc<str> = opts.model_id.clone().into();
        let handle_engine = engine.clone();
        let sup =
            Supervisor { engine, opts, metrics: metrics.clone(), pulse: pulse.clone(), failpoints: failpoints.clone() };
        std::thread::Builder::new().name("chorus-engine".into()).spawn(move || {
            // The loop's thread computes as the pool's thread 0.
            sup.engine.pool.enter();
            sup.run(&rx, first)
        })?;
        Ok(Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            vocab,
            engine: handle_engine,
            metrics,
            model_id,
            pulse,
            failpoints,
        })
    }

    /// The loop's state, progress and restarts.
    pub fn health(&self) -> EngineHealth {
        self.pulse.health()
    }

    /// The loop's test hooks.
    pub fn failpoints(&self) -> &Failpoints {
        &self.failpoints
    }

    /// Checks a sequence against the model and compiles its grammar (on this thread, from the
    /// engine's cache when the same grammar was compiled before).
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
        if let Some(&(id, _)) = params.logit_bias.iter().find(|(id, _)| *id as usize >= self.vocab) {
            return Err(SubmitError::BiasToken { id, vocab: self.vocab });
        }
        let constraint =
            params.grammar.as_ref().map(|g| self.engine.constraints.compile(g).map(Box::new)).transpose()?;
        Ok(ValidSeq { prompt, params, tier, cache_salt: cache_salt.into(), constraint })
    }

    /// Queues a sequence; its events arrive on the returned stream.
    pub fn submit(&self, seq: ValidSeq) -> SeqStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_mpsc::unbounded_channel();
        let finished =
            if self.tx.send(Cmd::Submit { id, seq: Box::new(seq), tx: tx.clone(), at: Instant::now() }).is_err() {
                let _ = tx.send(SeqEvent::Failed(EngineFailure::Stopped));
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

    /// A snapshot of the metrics (updated once per step; restarts and state at once).
    pub fn metrics(&self) -> EngineMetrics {
        let mut m = self.metrics.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let h = self.pulse.health();
        m.restarts = h.restarts;
        m.up = h.state == LoopState::Running;
        m
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

    /// Polls for the next event (to wait on several streams at once); `None` after the final one.
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<SeqEvent>> {
        match self.rx.poll_recv(cx) {
            std::task::Poll::Ready(e) => std::task::Poll::Ready(self.seen(e)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
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
    /// The grammar engine failed on this sequence: it ends `Failed` with this reason.
    grammar_failure: Option<String>,
}

const PENALTY_WINDOW: usize = 64;

/// Restarts closer together than this wait [`BACKOFF_MIN`]..[`BACKOFF_MAX`] (doubling)
/// before the rebuild, so an engine that fails at once every time does not spin.
const RESTART_WINDOW: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The KV cache and the scheduler over its blocks: what a restart builds again. The cache
/// comes first: on a GPU free memory may hold fewer blocks than asked for, and the scheduler
/// must hand out only blocks that exist.
fn build(engine: &Engine, opts: &ServeOptions) -> Result<(Scheduler, Executor), StartError> {
    let exec = Executor::new(
        engine,
        KvPlan {
            block_size: BLOCK_SIZE,
            max_blocks: opts.kv_tokens.div_ceil(BLOCK_SIZE).max(1),
            max_step_tokens: opts.max_step_tokens,
            gpu_memory_fraction: opts.gpu_memory_fraction,
        },
    )?;
    let mut cfg = SchedConfig::new(opts.model_id.clone(), BLOCK_SIZE, exec.num_blocks(), engine.model.cfg.ctx_len);
    cfg.max_step_tokens = opts.max_step_tokens;
    cfg.max_running = opts.max_running;
    cfg.prefix_cache = opts.prefix_cache;
    cfg.tiers = opts.tiers.clone();
    Ok((Scheduler::new(cfg)?, exec))
}

/// Why a loop returned.
enum Exit {
    /// Every handle and stream is gone: nobody can receive output.
    Disconnected,
    /// A failure that leaves the loop's state suspect: restart.
    Failed(EngineFailure),
}

/// Runs loops on the engine thread, one after another: a loop that panics or fails a step is
/// wound down (its sequences failed, its KV cache dropped) and replaced by a fresh one.
///
/// The loop runs inside `catch_unwind` on the same thread rather than on a thread that gets
/// respawned: the command channel and the failed loop's sequence table stay in hand, so every
/// sequence it held is told, and commands that were waiting go to the next loop.
struct Supervisor {
    engine: Arc<Engine>,
    opts: ServeOptions,
    metrics: Arc<Mutex<EngineMetrics>>,
    pulse: Arc<Pulse>,
    failpoints: Arc<Failpoints>,
}

/// Marks the loop down when the engine thread ends, however it ends.
struct DownOnExit(Arc<Pulse>);

impl Drop for DownOnExit {
    fn drop(&mut self) {
        self.0.set_state(LoopState::Down);
    }
}

impl Supervisor {
    fn run(self, rx: &mpsc::Receiver<Cmd>, first: (Scheduler, Executor)) {
        let _down = DownOnExit(self.pulse.clone());
        let mut parts = Some(first);
        let mut backoff = BACKOFF_MIN;
        let mut last_failure: Option<Instant> = None;
        loop {
            let (sched, exec) = match parts.take().map_or_else(|| build(&self.engine, &self.opts), Ok) {
                Ok(p) => p,
                Err(e) => {
                    self.pulse.set_state(LoopState::Down);
                    let why = EngineFailure::Restarting(format!("rebuilding the engine state failed: {e}"));
                    if !refuse_for(rx, backoff, &why) {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let mut lp = Loop::new(
                self.engine.clone(),
                sched,
                exec,
                self.metrics.clone(),
                self.pulse.clone(),
                self.failpoints.clone(),
            );
            self.pulse.set_state(LoopState::Running);
            let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| lp.run(rx))) {
                Ok(Exit::Disconnected) => return,
                Ok(Exit::Failed(f)) => f,
                Err(payload) => EngineFailure::Panicked(panic_message(payload.as_ref())),
            };
            // Recorded before any sequence is told, so a client that sees its request fail
            // already finds the engine not running.
            self.pulse.failed(failure.clone());
            lp.wind_down(&failure);
            // The old KV cache goes before its replacement is allocated.
            drop(lp);
            let now = Instant::now();
            if last_failure.is_some_and(|t| now.duration_since(t) < RESTART_WINDOW) {
                if !refuse_for(rx, backoff, &EngineFailure::Restarting(failure.to_string())) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            } else {
                backoff = BACKOFF_MIN;
            }
            last_failure = Some(now);
        }
    }
}

/// Answers commands for `d` with no loop running: a submission fails at once with `why`
/// (nothing waits on an engine that is not there). `false` when every handle is gone.
fn refuse_for(rx: &mpsc::Receiver<Cmd>, d: Duration, why: &EngineFailure) -> bool {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match rx.recv_timeout(left) {
            Ok(Cmd::Submit { tx, .. }) => {
                let _ = tx.send(SeqEvent::Failed(why.clone()));
            }
            Ok(Cmd::Cancel(_)) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => return true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic with no message".to_string(),
    }
}

struct Loop {
    engine: Arc<Engine>,
    sched: Scheduler,
    exec: Executor,
    live: HashMap<SeqId, Live>,
    metrics: Arc<Mutex<EngineMetrics>>,
    local: EngineMetrics,
    /// The scheduler counters of the loops before this one (a restart keeps the totals).
    sched_base: SchedCounters,
    pulse: Arc<Pulse>,
    failpoints: Arc<Failpoints>,
    t0: Instant,
}

impl Loop {
    fn new(
        engine: Arc<Engine>,
        sched: Scheduler,
        exec: Executor,
        metrics: Arc<Mutex<EngineMetrics>>,
        pulse: Arc<Pulse>,
        failpoints: Arc<Failpoints>,
    ) -> Self {
        let mut local = metrics.lock().unwrap_or_else(|e| e.into_inner()).clone();
        local.kv_blocks_total = exec.num_blocks();
        let sched_base = local.sched.clone();
        Self {
            engine,
            sched,
            exec,
            live: HashMap::new(),
            metrics,
            local,
            sched_base,
            pulse,
            failpoints,
            t0: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn run(&mut self, rx: &mpsc::Receiver<Cmd>) -> Exit {
        loop {
            if self.sched.is_idle() {
                self.publish();
                self.pulse.set_busy(false);
                match rx.recv() {
                    Ok(cmd) => {
                        self.pulse.set_busy(true);
                        self.command(cmd);
                    }
                    Err(_) => return Exit::Disconnected,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Exit::Disconnected,
                }
            }
            match self.step() {
                Ok(true) => {}
                Ok(false) => {
                    if !self.sched.is_idle() {
                        // Nothing runnable yet (cannot happen with a valid config; never spin).
                        if let Ok(cmd) = rx.recv_timeout(Duration::from_millis(1)) {
                            self.command(cmd);
                        }
                    }
                }
                Err(f) => return Exit::Failed(f),
            }
        }
    }

    /// After a failure: every sequence the loop held is told, and the metrics show the
    /// scheduler's totals so far with nothing running (its blocks die with it).
    fn wind_down(&mut self, failure: &EngineFailure) {
        for (_, l) in self.live.drain() {
            let _ = l.tx.send(SeqEvent::Failed(failure.clone()));
        }
        let mut sched = self.sched_base.clone();
        sched.add(self.sched.counters());
        self.local.sched = sched;
        self.local.kv_blocks_used = 0;
        self.local.running = 0;
        self.local.waiting = [0; 4];
        *self.metrics.lock().unwrap_or_else(|e| e.into_inner()) = self.local.clone();
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit { id, seq, tx, at } => {
                let seq = *seq;
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
                    Ok(s) => match seq.constraint {
                        Some(c) => s.with_constraint(c),
                        None => s,
                    },
                    Err(e) => {
                        // Validated already; kept as a typed failure rather than a panic.
                        self.sched.cancel(id);
                        let _ = tx.send(SeqEvent::Failed(EngineFailure::Internal(e.to_string())));
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
                        grammar_failure: None,
                    },
                );
            }
            Cmd::Cancel(id) => {
                self.sched.cancel(id);
                self.live.remove(&id);
            }
        }
    }

    /// Runs one step; `Ok(false)` if there was nothing to run, `Err` when the loop must
    /// restart (the backend failed the step, or the scheduler refused its own plan).
    fn step(&mut self) -> Result<bool, EngineFailure> {
        let plan = self.sched.schedule(self.now_ms());
        self.deliver(&plan.events);
        if plan.is_empty() {
            return Ok(false);
        }
        self.failpoints.on_step();
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
        let host = |i: usize| needs_host.get(i).copied().unwrap_or(true);
        // Constrained sequences' next masks are computed beside the forward pass, so the
        // sampler finds them ready (a mask depends only on the tokens taken so far).
        // The step holds the machine's compute pool, which other fleets' loops share; its claim
        // is the weight of the most important tier in it.
        let tiers = &self.sched.config().tiers;
        let weight = plan.seqs.iter().filter_map(|p| self.live.get(&p.id)).map(|l| tiers[l.tier.index()].weight).max();
        let grant = e.pool.step(weight.unwrap_or(1));
        let ahead: Vec<&mut Constraint> = self.live.values_mut().filter_map(|l| l.sampler.constraint_mut()).collect();
        let forwarded = if ahead.is_empty() {
            self.exec.forward(e, &steps, &host)
        } else {
            let exec = &mut self.exec;
            std::thread::scope(|s| {
                let masks = s.spawn(move || {
                    for c in ahead {
                        // An error here is found again, and reported, when the row samples.
                        let _ = c.prepare();
                    }
                });
                let rows = exec.forward(e, &steps, &host);
                let _ = masks.join();
                rows
            })
        };
        // Sampling and delivery need no pool: the next loop's step may start.
        drop(grant);
        let rows = match forwarded {
            Ok(rows) => rows,
            Err(err) => {
                // A device error can leave the KV cache or the device context half-written:
                // nothing of this loop is trusted after it.
                self.local.failed_steps += 1;
                return Err(EngineFailure::Step(err.to_string()));
            }
        };
        self.local.steps += 1;
        self.pulse.stepped();
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
                Ok(true)
            }
            // Cannot happen: the plan is the one just made. The scheduler is not trusted after it.
            Err(err) => Err(EngineFailure::Internal(format!("the scheduler refused its own step: {err}"))),
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
        if let Some(why) = l.sampler.grammar_error() {
            l.grammar_failure = Some(format!("constrained decoding failed: {why}"));
            l.pending = Some((String::new(), s));
            return Sample { token: id, stop: true };
        }
        let grammar_done = l.sampler.grammar_done();
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
        Sample { token: id, stop: so.stopped || grammar_done }
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
                    if let Some(why) = l.grammar_failure.take() {
                        let _ = l.tx.send(SeqEvent::Failed(EngineFailure::Internal(why)));
                        continue;
                    }
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
        let mut sched = self.sched_base.clone();
        sched.add(s.counters());
        self.local.sched = sched;
        (self.local.kv_blocks_used, self.local.kv_blocks_total) = s.blocks_used();
        self.local.running = s.running();
        self.local.waiting = Tier::ALL.map(|t| s.waiting(t));
        *self.metrics.lock().unwrap_or_else(|e| e.into_inner()) = self.local.clone();
    }
}
