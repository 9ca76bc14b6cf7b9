//! The QUIC side: accept edge connections (mutual TLS, version handshake on the control
//! stream, load reports), serve one request per bidirectional stream, and drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_engine::sampler::SamplingParams;
use chorus_engine::serve::SeqEvent;
use chorus_proto::{
    Accepted, Control, ConversationRef, Done, ErrorCode, ErrorReply, FinishReason, FleetInfo, FleetLoad, FrameDecoder,
    FrameError, Generate, Hello, LoadReport, Logprob, Message, PROTOCOL_VERSION, Reply, Request, StoreOp, StoreReply,
    StoreRequest, StoreStatus, Stored, Token, Usage,
};
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::{CoreConfig, sched_tier};
use crate::fleet::{Fleet, Route, Router};
use crate::metrics::CoreMetrics;
use crate::prompt::{self, PromptError};
use crate::safety::Policy;
use crate::store::{Commit, Context, Conversation, ConversationStore, HotRead, Owner, StoreError};

/// Where the core is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// No new connections or requests; in-flight requests run on.
    Draining,
    /// In-flight requests are ended with `shutting_down`.
    Stopping,
}

/// Everything a connection or request needs; shared.
#[derive(Debug)]
pub struct Core {
    pub cfg: CoreConfig,
    pub fleets: Vec<Arc<Fleet>>,
    pub router: Router,
    pub policy: Policy,
    pub store: Arc<ConversationStore>,
    pub metrics: CoreMetrics,
    pub limits: chorus_proto::Limits,
    /// Per-tier scheduling limits (the config's, resolved once).
    pub tiers: [chorus_sched::TierConfig; 4],
    phase: watch::Sender<Phase>,
    /// `None` when ready, else why not.
    unready: std::sync::Mutex<Option<String>>,
}

impl Core {
    /// A core over started fleets and an open store.
    pub fn new(cfg: CoreConfig, fleets: Vec<Arc<Fleet>>, store: Arc<ConversationStore>) -> Arc<Self> {
        let router = Router::new(&cfg, &fleets);
        let policy = Policy::new(&cfg.post_safety);
        Arc::new(Self {
            tiers: cfg.tier_configs(),
            cfg,
            fleets,
            router,
            policy,
            store,
            metrics: CoreMetrics::default(),
            limits: chorus_proto::Limits::default(),
            phase: watch::channel(Phase::Serving).0,
            unready: std::sync::Mutex::new(None),
        })
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        self.phase.send_replace(p);
    }

    /// `Ok` when ready; else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.phase() != Phase::Serving {
            return Err("draining".into());
        }
        match &*self.unready.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    pub(crate) fn set_unready(&self, why: Option<String>) {
        *self.unready.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Requests accepted and not finished, all fleets.
    pub fn in_flight(&self) -> u32 {
        self.fleets.iter().map(|f| f.in_flight()).sum()
    }

    /// The Prometheus page.
    pub fn metrics_page(&self) -> String {
        let core = self.metrics.page(self.readiness().is_ok(), self.phase() != Phase::Serving, &self.fleets);
        crate::metrics::merge_families(&[core, self.store.metrics.render()])
    }

    fn load_report(&self, seq: u64) -> LoadReport {
        LoadReport {
            seq,
            ready: self.readiness().is_ok(),
            draining: self.phase() != Phase::Serving,
            fleets: self
                .fleets
                .iter()
                .map(|f| {
                    let m = f.handle.metrics();
                    FleetLoad {
                        fleet: f.name.clone(),
                        waiting: chorus_proto::Tier::ALL.map(|t| f.waiting_tier(t)),
                        running: m.running as u32,
                        kv_blocks_used: m.kv_blocks_used as u32,
                        kv_blocks_total: m.kv_blocks_total as u32,
                    }
                })
                .collect(),
        }
    }
}

/// Reads frames from a stream.
struct FrameReader {
    recv: RecvStream,
    dec: FrameDecoder,
}

/// Why reading a frame stopped.
#[derive(Debug)]
enum ReadError {
    /// The peer reset the stream or the connection went away.
    Gone(String),
    /// The bytes broke the protocol.
    Frame(FrameError),
}

impl FrameReader {
    fn new(recv: RecvStream, max: u32) -> Self {
        Self { recv, dec: FrameDecoder::new(max) }
    }

    /// The next message; `Ok(None)` when the peer finished its side cleanly. Cancel-safe:
    /// received bytes live in the decoder, not in the future.
    async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(m) = self.dec.decode().map_err(ReadError::Frame)? {
                return Ok(Some(m));
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.dec.push(&chunk.bytes),
                Ok(None) => {
                    self.dec.finish().map_err(ReadError::Frame)?;
                    return Ok(None);
                }
                Err(e) => return Err(ReadError::Gone(e.to_string())),
            }
        }
    }
}

async fn write<T: serde::Serialize>(send: &mut SendStream, msg: &T, max: u32) -> Result<(), String> {
    let bytes = chorus_proto::encode_to_vec(msg, max).map_err(|e| e.to_string())?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())
}

fn error(code: ErrorCode, message: impl Into<String>, retry_after_ms: Option<u32>) -> Reply {
    Reply::Error(ErrorReply { code, message: message.into(), retry_after_ms })
}

/// Serves connections from `endpoint` until it is closed.
pub async fn accept_loop(core: Arc<Core>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        if core.phase() != Phase::Serving {
            incoming.refuse();
            continue;
        }
        let core = core.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    // Almost always TLS: no client certificate, or one from another CA.
                    core.metrics.refused("tls");
                    warn!(%remote, error = %e, "edge connection refused");
                    return;
                }
            };
            CoreMetrics::inc(&core.metrics.connections_total);
            CoreMetrics::inc(&core.metrics.connections_open);
            connection(&core, conn, remote).await;
            CoreMetrics::dec(&core.metrics.connections_open);
        });
    }
}

async fn connection(core: &Arc<Core>, conn: Connection, remote: SocketAddr) {
    let max = core.cfg.max_frame;
    let timeout = Duration::from_millis(core.cfg.handshake_timeout_ms);
    // The control stream is the first stream the edge opens; nothing else is served before
    // the versions agree.
    let hello = tokio::time::timeout(timeout, async {
        let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut r = FrameReader::new(recv, max);
        match r.next::<Hello>().await {
            Ok(Some(h)) => Ok((send, h)),
            Ok(None) => Err("the control stream ended before Hello".to_string()),
            Err(ReadError::Frame(e)) => Err(format!("malformed Hello: {e}")),
            Err(ReadError::Gone(e)) => Err(e),
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no Hello within {} ms", timeout.as_millis())));
    let (mut control, hello) = match hello {
        Ok(x) => x,
        Err(why) => {
            core.metrics.refused("hello");
            warn!(%remote, %why, "edge connection closed");
            conn.close(chorus_proto::CLOSE_PROTOCOL_ERROR.into(), why.as_bytes());
            return;
        }
    };
    let Some(version) = chorus_proto::negotiate(&hello, PROTOCOL_VERSION..=PROTOCOL_VERSION) else {
        let why = format!(
            "unsupported protocol version: the edge speaks {}..={}, this core speaks {PROTOCOL_VERSION}",
            hello.min_version, hello.max_version
        );
        core.metrics.refused("version");
        warn!(%remote, edge = %hello.edge_id, %why, "edge connection closed");
        conn.close(chorus_proto::CLOSE_UNSUPPORTED_VERSION.into(), why.as_bytes());
        return;
    };
    info!(%remote, edge = %hello.edge_id, version, "edge connected");
    let welcome = Control::Welcome {
        version,
        core_id: core.cfg.core_id.clone(),
        region: core.cfg.region.clone(),
        fleets: core.fleets.iter().map(|f| FleetInfo { fleet: f.name.clone(), model: f.model.clone() }).collect(),
    };
    if write(&mut control, &welcome, max).await.is_err() {
        return;
    }
    let reports = {
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(core.cfg.load_report_ms));
            for seq in 0.. {
                tick.tick().await;
                if write(&mut control, &Control::Load(core.load_report(seq)), max).await.is_err() {
                    break;
                }
            }
        })
    };
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(%remote, error = %e, "edge connection ended");
                break;
            }
        };
        let core = core.clone();
        tokio::spawn(async move {
            CoreMetrics::inc(&core.metrics.streams_total);
            CoreMetrics::inc(&core.metrics.streams_open);
            request(&core, send, recv).await;
            CoreMetrics::dec(&core.metrics.streams_open);
        });
    }
    reports.abort();
}

/// The outcome label of a reply, for metrics.
fn outcome(r: &Reply) -> String {
    match r {
        Reply::Done(d) => d.finish_reason.as_str().to_string(),
        Reply::Error(e) => e.code.to_string(),
        Reply::Store(_) => "ok".into(),
        _ => "none".into(),
    }
}

/// Serves one request stream to its end.
async fn request(core: &Arc<Core>, mut send: SendStream, recv: RecvStream) {
    let max = core.cfg.max_frame;
    let mut reader = FrameReader::new(recv, max);
    let first =
        tokio::time::timeout(Duration::from_millis(core.cfg.handshake_timeout_ms), reader.next::<Request>()).await;
    let g = match first {
        Ok(Ok(Some(Request::Generate(g)))) => g,
        Ok(Ok(Some(Request::Store(r)))) => {
            let op = store_op_name(&r.op);
            let last = match serve_store(core, &mut send, *r).await {
                Ok(r) => r,
                Err(Gone) => return,
            };
            core.metrics.outcome("store", &format!("{op}_{}", outcome(&last)));
            let _ = send.finish();
            return;
        }
        Ok(Ok(Some(Request::Cancel))) | Ok(Ok(None)) => {
            let _ =
                write(&mut send, &error(ErrorCode::Protocol, "a request stream must begin with Generate", None), max)
                    .await;
            let _ = send.finish();
            return;
        }
        Ok(Err(ReadError::Frame(e))) => {
            core.metrics.outcome("-", "protocol_error");
            let _ = write(&mut send, &error(ErrorCode::Protocol, e.to_string(), None), max).await;
            let _ = send.finish();
            return;
        }
        Ok(Err(ReadError::Gone(_))) => return,
        Err(_) => {
            let _ = write(&mut send, &error(ErrorCode::Protocol, "no Generate frame in time", None), max).await;
            let _ = send.finish();
            return;
        }
    };
    let (fleet_name, last) = match serve_generate(core, &mut send, &mut reader, *g).await {
        Ok(x) => x,
        Err(Gone) => return,
    };
    core.metrics.outcome(&fleet_name, &outcome(&last));
    let _ = send.finish();
}

/// The stream went away (reset, stopped, connection lost); nothing more can be sent.
struct Gone;

/// Sends one reply; a failed write means the edge stopped reading (cancel).
async fn reply(send: &mut SendStream, r: &Reply, max: u32) -> Result<(), Gone> {
    write(send, r, max).await.map_err(|_| Gone)
}

/// Where a request's history comes from and where its turn goes.
struct Thread {
    owner: Owner,
    /// The conversation id when the turn is to be stored.
    id: Option<String>,
    /// The stored conversation it continues.
    prior: Option<Conversation>,
    status: StoreStatus,
}

impl Thread {
    fn history(&self) -> Vec<Message> {
        self.prior.as_ref().map(Conversation::messages).unwrap_or_default()
    }
}

/// What a Generate found in the store before generating.
enum Resolved {
    Go(Thread),
    /// The request already produced a committed turn: replay it.
    Replay(Conversation, u64),
    Fail(ErrorCode, String),
}

async fn resolve(core: &Core, g: &Generate) -> Resolved {
    let owner = Owner::new(&g.tenant, &g.user);
    let store = &core.store;
    let unavailable = |owner: Owner, id: Option<String>, e: &StoreError| {
        warn!(request = %g.request_id, error = %e, "conversation store unavailable: answering single-turn");
        store.metrics.degraded("unavailable");
        Resolved::Go(Thread { owner, id, prior: None, status: StoreStatus::Unavailable })
    };
    if g.conversation == ConversationRef::Stateless {
        return Resolved::Go(Thread { owner, id: None, prior: None, status: StoreStatus::NotUsed });
    }
    match store.replay(&owner, &g.request_id).await {
        // A request id names one turn: reusing it for another conversation is refused.
        Ok(Some((c, version))) if g.conversation.id().is_none_or(|id| id == c.id) => {
            return Resolved::Replay(c, version);
        }
        Ok(Some((c, version))) => {
            return Resolved::Fail(
                ErrorCode::Conflict,
                format!("request_id {:?} already produced turn {version} of conversation {:?}", g.request_id, c.id),
            );
        }
        Ok(None) => {}
        Err(e @ StoreError::Unavailable { .. }) => {
            return unavailable(owner, g.conversation.id().map(String::from), &e);
        }
        Err(e) => return Resolved::Fail(e.code(), e.to_string()),
    }
    let id = match &g.conversation {
        ConversationRef::Continue(id) => id.clone(),
        _ => {
            return Resolved::Go(Thread {
                owner,
                id: Some(crate::store::new_id("conv_")),
                prior: None,
                status: StoreStatus::Ok,
            });
        }
    };
    match store.load(&owner, &id).await {
        Ok((c, read)) => {
            if c.version >= store.cfg.max_turns {
                return Resolved::Fail(
                    ErrorCode::InvalidRequest,
                    format!(
                        "conversation: {} turns; the limit is {}; start a new conversation",
                        c.version, store.cfg.max_turns
                    ),
                );
            }
            let status = if read == HotRead::Down {
                store.metrics.degraded("hot_unavailable");
                StoreStatus::HotUnavailable
            } else {
                StoreStatus::Ok
            };
            Resolved::Go(Thread { owner, id: Some(id), prior: Some(c), status })
        }
        Err(StoreError::NotFound) => Resolved::Fail(ErrorCode::NotFound, format!("conversation {id:?} not found")),
        Err(e @ StoreError::Unavailable { .. }) => unavailable(owner, Some(id), &e),
        Err(e) => Resolved::Fail(e.code(), e.to_string()),
    }
}

/// Sends a committed turn again (a retry of a request whose turn is already stored: nothing is
/// generated or billed twice).
async fn replay(core: &Core, send: &mut SendStream, c: &Conversation, version: u64) -> Result<Reply, Gone> {
    let max = core.cfg.max_frame;
    let Some(turn) = version.checked_sub(1).and_then(|i| c.turns.get(i as usize)) else {
        let r = error(ErrorCode::Internal, format!("conversation {} has no turn {version}", c.id), None);
        reply(send, &r, max).await?;
        return Ok(r);
    };
    let accepted = Accepted {
        model: turn.model.clone(),
        fleet: String::new(),
        degraded: false,
        queue_position: 0,
        prompt_tokens: turn.usage.prompt_tokens,
        trimmed_messages: 0,
        conversation_id: Some(c.id.clone()),
        history_messages: 0,
        store: StoreStatus::Ok,
        prompt: None,
    };
    reply(send, &Reply::Accepted(accepted), max).await?;
    let token = Token { text: turn.answer.clone(), ids: vec![], logprobs: None, emitted_us: turn.created_ms * 1000 };
    reply(send, &Reply::Token(token), max).await?;
    let r = Reply::Done(Done {
        finish_reason: turn.finish_reason,
        usage: turn.usage,
        filter_category: None,
        stored: Stored::Committed { conversation_id: c.id.clone(), version },
    });
    reply(send, &r, max).await?;
    Ok(r)
}

/// Runs a Generate to its final reply; returns the fleet and that reply.
async fn serve_generate(
    core: &Arc<Core>,
    send: &mut SendStream,
    reader: &mut FrameReader,
    g: Generate,
) -> Result<(String, Reply), Gone> {
    let max = core.cfg.max_frame;
    let received = Instant::now();
    macro_rules! fail {
        ($fleet:expr, $code:expr, $msg:expr, $retry:expr) => {{
            let r = error($code, $msg, $retry);
            reply(send, &r, max).await?;
            return Ok(($fleet.to_string(), r));
        }};
    }
    if core.phase() != Phase::Serving {
        fail!("-", ErrorCode::Draining, "the core is draining; retry on another core", Some(0));
    }
    if let Err(e) = g.check(&core.limits) {
        fail!("-", ErrorCode::InvalidRequest, e.to_string(), None);
    }
    let thread = match resolve(core, &g).await {
        Resolved::Go(t) => t,
        Resolved::Replay(c, version) => return Ok(("-".into(), replay(core, send, &c, version).await?)),
        Resolved::Fail(code, msg) => fail!("-", code, msg, None),
    };
    let (fi, degraded) = match core.router.route(g.tier, |i| core.fleets[i].waiting()) {
        Route::Fleet { fleet, degraded } => (fleet, degraded),
        Route::OverCapacity { fleet, waiting, bound, retry_after_ms } => fail!(
            core.fleets[fleet].name,
            ErrorCode::OverCapacity,
            format!("fleet {} has {waiting} requests waiting (bound {bound})", core.fleets[fleet].name),
            Some(retry_after_ms)
        ),
    };
    let fleet = core.fleets[fi].clone();
    let tier = sched_tier(g.tier);
    let ctx = fleet.engine.model.cfg.ctx_len;
    let limit = core.tiers[tier.index()].max_input_tokens.min(ctx.saturating_sub(g.max_tokens as usize));
    let history = thread.history();
    let history_messages = history.len();
    // Rendering and tokenizing a long history is CPU work: off the async threads.
    let built = {
        let engine = fleet.engine.clone();
        let model = fleet.model.clone();
        let context = thread.prior.as_ref().and_then(|c| c.context.clone());
        let mut messages = history;
        messages.extend(g.messages.iter().cloned());
        tokio::task::spawn_blocking(move || prompt::build_after(&engine, &model, context.as_ref(), &messages, limit))
            .await
    };
    let p = match built {
        Ok(Ok(p)) => p,
        Ok(Err(e @ PromptError::TooLong { .. })) => fail!(fleet.name, ErrorCode::PromptTooLong, e.to_string(), None),
        Ok(Err(e)) => fail!(fleet.name, ErrorCode::InvalidRequest, e.to_string(), None),
        Err(e) => fail!(fleet.name, ErrorCode::Internal, format!("prompt builder: {e}"), None),
    };
    let s = &g.sampling;
    let params = SamplingParams {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
        max_tokens: g.max_tokens,
        stop: g.stop.clone(),
        top_logprobs: s.logprobs.map_or(0, u32::from),
        ignore_eos: s.ignore_eos,
    };
    let prompt_tokens = p.ids.len();
    // Special tokens are kept: the text shows the template's turn markers too.
    let prompt_text = if g.echo_prompt { fleet.engine.tokenizer.decode(&p.ids, false).ok() } else { None };
    // The ids the next turn's prompt will start with: this prompt, then the answer's tokens.
    let mut context_ids = if thread.id.is_some() { p.ids.clone() } else { Vec::new() };
    // The cache salt is the tenant: tenants never share KV.
    let seq = match fleet.handle.validate(p.ids, params, tier, g.tenant.as_bytes()) {
        Ok(s) => s,
        Err(e) => fail!(fleet.name, ErrorCode::InvalidRequest, e.to_string(), None),
    };
    let queue_position = fleet.waiting_tier(g.tier);
    let mut guard = fleet.enter(g.tier);
    let mut stream = fleet.handle.submit(seq);
    if degraded {
        CoreMetrics::inc(&core.metrics.degraded_total);
    }
    if p.trimmed > 0 {
        CoreMetrics::inc(&core.metrics.trimmed_total);
    }
    reply(
        send,
        &Reply::Accepted(Accepted {
            model: fleet.model.clone(),
            fleet: fleet.name.clone(),
            degraded,
            queue_position,
            prompt_tokens: prompt_tokens as u32,
            trimmed_messages: p.trimmed as u32,
            conversation_id: thread.id.clone(),
            history_messages: history_messages as u32,
            store: thread.status,
            prompt: prompt_text,
        }),
        max,
    )
    .await?;

    let logprobs = g.sampling.logprobs.is_some();
    let tok = &fleet.engine.tokenizer;
    let text_of = |id: u32| tok.decode(&[id], false).unwrap_or_default();
    let mut gate = core.policy.gate();
    let mut cached = 0u32;
    let mut completion = 0u32;
    let mut answer = String::new();
    let mut phase = core.phase.subscribe();
    let deadline = g.deadline_ms.map(|ms| received + Duration::from_millis(ms.into()));
    let mut reading = true;
    let anchor = (Instant::now(), SystemTime::now());
    let unix_us = |at: Instant| -> u64 {
        let wall = match at.checked_duration_since(anchor.0) {
            Some(after) => anchor.1 + after,
            None => anchor.1.checked_sub(anchor.0.duration_since(at)).unwrap_or(anchor.1),
        };
        wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
    };
    // The answer is complete: store the turn (durable first), then send `Done`.
    macro_rules! finish {
        ($finish_reason:expr, $usage:expr, $filter:expr, $context:expr) => {{
            let (finish_reason, usage) = ($finish_reason, $usage);
            let stored = store_turn(core, &g, &thread, &fleet.model, &answer, finish_reason, usage, $context).await;
            let r = Reply::Done(Done { finish_reason, usage, filter_category: $filter, stored });
            reply(send, &r, max).await?;
            return Ok((fleet.name.clone(), r));
        }};
    }
    let usage = |completion: u32, cached: u32| Usage {
        prompt_tokens: prompt_tokens as u32,
        completion_tokens: completion,
        cached_tokens: cached,
    };
    loop {
        if *phase.borrow_and_update() == Phase::Stopping {
            fail!(fleet.name, ErrorCode::ShuttingDown, "the core shut down before the answer finished", Some(0));
        }
        tokio::select! {
            biased;
            _ = phase.changed() => continue,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d.into()).await, None => std::future::pending().await } } => {
                fail!(fleet.name, ErrorCode::DeadlineExceeded, format!("deadline of {} ms passed", g.deadline_ms.unwrap_or(0)), None);
            }
            r = reader.next::<Request>(), if reading => match r {
                Ok(Some(Request::Cancel)) => fail!(fleet.name, ErrorCode::Cancelled, "cancelled by the edge", None),
                Ok(Some(Request::Generate(_) | Request::Store(_))) => fail!(fleet.name, ErrorCode::Protocol, "one request per stream", None),
                Ok(None) => reading = false,
                // Reset: the client went away. Dropping the engine stream cancels the sequence.
                Err(ReadError::Gone(_)) => return Err(Gone),
                Err(ReadError::Frame(e)) => fail!(fleet.name, ErrorCode::Protocol, e.to_string(), None),
            },
            ev = stream.next() => {
                let Some(ev) = ev else {
                    fail!(fleet.name, ErrorCode::EngineFailed, "the engine loop stopped", None);
                };
                match ev {
                    SeqEvent::Started { cached_tokens, .. } => {
                        guard.started();
                        cached = cached_tokens as u32;
                    }
                    SeqEvent::Token { token, text, sampled, at } => {
                        completion += 1;
                        if let Some(v) = gate.push(&text) {
                            info!(fleet = %fleet.name, request = %g.request_id, rule = %v.rule, "answer stopped by the post-generation safety gate");
                            finish!(FinishReason::ContentFilter, usage(completion, cached), Some(v.category), None);
                        }
                        context_ids.push(token);
                        let logprobs = logprobs.then(|| {
                            (
                                Logprob { id: sampled.id, text: text_of(sampled.id), logprob: sampled.logprob },
                                sampled.top.iter().map(|t| Logprob { id: t.id, text: text_of(t.id), logprob: t.logprob }).collect(),
                            )
                        });
                        answer.push_str(&text);
                        if failpoint_stall(completion) {
                            eprintln!("failpoint stall_after_tokens: request {}", g.request_id);
                            std::future::pending::<()>().await;
                        }
                        reply(send, &Reply::Token(Token { text, ids: vec![token], logprobs, emitted_us: unix_us(at) }), max).await?;
                    }
                    SeqEvent::Finished { reason, text, usage: u } => {
                        if let Some(v) = gate.push(&text) {
                            finish!(FinishReason::ContentFilter, usage(completion, cached), Some(v.category), None);
                        }
                        if !text.is_empty() {
                            answer.push_str(&text);
                            reply(send, &Reply::Token(Token { text, ids: vec![], logprobs: None, emitted_us: unix_us(Instant::now()) }), max).await?;
                        }
                        let finish_reason = match reason {
                            chorus_engine::engine::FinishReason::Stop => FinishReason::Stop,
                            chorus_engine::engine::FinishReason::Length => FinishReason::Length,
                        };
                        let usage = Usage { prompt_tokens: u.prompt_tokens as u32, completion_tokens: u.completion_tokens as u32, cached_tokens: u.cached_tokens as u32 };
                        let context = thread.id.is_some().then(|| Context { model: fleet.model.clone(), ids: std::mem::take(&mut context_ids) });
                        finish!(finish_reason, usage, None, context);
                    }
                    SeqEvent::Rejected(e) => {
                        let code = match e {
                            _ if e.retry_after_ms().is_some() => ErrorCode::OverCapacity,
                            chorus_sched::AdmitError::InputTooLong { .. } | chorus_sched::AdmitError::NeverFits { .. } => ErrorCode::PromptTooLong,
                            _ => ErrorCode::InvalidRequest,
                        };
                        fail!(fleet.name, code, e.to_string(), e.retry_after_ms().map(|ms| ms.min(u32::MAX.into()) as u32));
                    }
                    SeqEvent::Dropped(e) => fail!(fleet.name, ErrorCode::QueueTimeout, e.to_string(), Some(core.cfg.router.retry_after_ms)),
                    SeqEvent::Failed(why) => fail!(fleet.name, ErrorCode::EngineFailed, why, None),
                }
            }
        }
    }
}

/// Stores a finished turn, durable tier first; says what became of it.
#[allow(clippy::too_many_arguments)]
async fn store_turn(
    core: &Core,
    g: &Generate,
    thread: &Thread,
    model: &str,
    answer: &str,
    finish_reason: FinishReason,
    usage: Usage,
    context: Option<Context>,
) -> Stored {
    if g.conversation == ConversationRef::Stateless {
        return Stored::NotRequested;
    }
    let (Some(id), false) = (&thread.id, thread.status == StoreStatus::Unavailable) else {
        return Stored::Failed {
            code: ErrorCode::StoreUnavailable,
            message: "the conversation store was unreachable: this turn was answered without history and is not stored"
                .into(),
        };
    };
    let now = crate::store::now_ms();
    let commit = Commit {
        owner: thread.owner.clone(),
        conversation_id: id.clone(),
        base: thread.prior.as_ref().map(|c| c.version),
        tier: g.tier,
        turn: chorus_proto::Turn {
            version: thread.prior.as_ref().map_or(1, |c| c.version + 1),
            request_id: g.request_id.clone(),
            created_ms: now,
            input: g.messages.clone(),
            answer: answer.to_string(),
            finish_reason,
            model: model.to_string(),
            usage,
        },
        context,
        now_ms: now,
    };
    match core.store.commit(&commit, thread.prior.clone()).await {
        Ok(version) => Stored::Committed { conversation_id: id.clone(), version },
        Err(e) => {
            warn!(request = %g.request_id, conversation = %id, error = %e, "turn not stored");
            Stored::Failed { code: e.code(), message: e.to_string() }
        }
    }
}

fn store_op_name(op: &StoreOp) -> &'static str {
    match op {
        StoreOp::List { .. } => "list",
        StoreOp::Get { .. } => "get",
        StoreOp::Delete { .. } => "delete",
        StoreOp::Erase => "erase",
        StoreOp::Export => "export",
        StoreOp::Feedback { .. } => "feedback",
    }
}

/// The largest export piece, bytes (well under the frame limit).
const EXPORT_PIECE: usize = 256 * 1024;

/// Serves one store request; returns its final reply.
async fn serve_store(core: &Core, send: &mut SendStream, r: StoreRequest) -> Result<Reply, Gone> {
    let max = core.cfg.max_frame;
    let answer = async {
        if core.phase() != Phase::Serving {
            return Err((ErrorCode::Draining, "the core is draining; retry on another core".to_string()));
        }
        r.check(&core.limits).map_err(|e| (ErrorCode::InvalidRequest, e.to_string()))?;
        let owner = Owner::new(&r.tenant, &r.user);
        let store = &core.store;
        let e = |e: StoreError| (e.code(), e.to_string());
        Ok(match r.op {
            StoreOp::List { limit } => {
                StoreReply::List(store.list(&owner, limit.clamp(1, 1000) as usize).await.map_err(e)?)
            }
            StoreOp::Get { conversation_id } => {
                StoreReply::Conversation(store.load(&owner, &conversation_id).await.map_err(e)?.0.view())
            }
            StoreOp::Delete { conversation_id } => {
                store.delete(&owner, &conversation_id).await.map_err(e)?;
                StoreReply::Deleted
            }
            StoreOp::Erase => StoreReply::Erased(store.erase(&owner).await.map_err(e)?),
            StoreOp::Export => {
                let doc = store.export(&owner).await.map_err(e)?;
                let json = serde_json::to_string(&doc).map_err(|x| (ErrorCode::Internal, x.to_string()))?;
                StoreReply::Export { data: json, last: true }
            }
            StoreOp::Feedback { conversation_id, version, rating, comment } => StoreReply::FeedbackRecorded {
                feedback_id: store.feedback(&owner, &conversation_id, version, rating, comment).await.map_err(e)?,
            },
        })
    }
    .await;
    let last = match answer {
        Ok(StoreReply::Export { data, .. }) => {
            let mut rest = data.as_str();
            while rest.len() > EXPORT_PIECE {
                let mut cut = EXPORT_PIECE;
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                let piece = Reply::Store(StoreReply::Export { data: rest[..cut].to_string(), last: false });
                reply(send, &piece, max).await?;
                rest = &rest[cut..];
            }
            Reply::Store(StoreReply::Export { data: rest.to_string(), last: true })
        }
        Ok(a) => {
            let r = Reply::Store(a);
            match chorus_proto::encode_to_vec(&r, max) {
                Ok(_) => r,
                Err(_) => error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "the answer is larger than the frame limit of {max} bytes; use Export, which is sent in pieces"
                    ),
                    None,
                ),
            }
        }
        Err((code, message)) => error(code, message, None),
    };
    reply(send, &last, max).await?;
    Ok(last)
}

/// One fleet's progress as the watchdog sees it.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    steps: u64,
    since: Instant,
}

impl Progress {
    pub fn new(steps: u64, now: Instant) -> Self {
        Self { steps, since: now }
    }

    /// Records a sample; returns how long work has been in flight with no step completed.
    pub fn observe(&mut self, steps: u64, in_flight: u32, now: Instant) -> Option<Duration> {
        if steps != self.steps || in_flight == 0 {
            *self = Self::new(steps, now);
            return None;
        }
        Some(now.duration_since(self.since))
    }
}

/// Watches the engines: `/readyz` turns false when a fleet has work in flight and its engine
/// has not completed a step for `stall_secs` (a hung engine answers nothing, but looks alive).
pub async fn watchdog(core: Arc<Core>) {
    let stall = Duration::from_secs(core.cfg.stall_secs);
    let mut last: Vec<Progress> =
        core.fleets.iter().map(|f| Progress::new(f.handle.metrics().steps, Instant::now())).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut why = None;
        for (f, p) in core.fleets.iter().zip(&mut last) {
            if let Some(d) = p.observe(f.handle.metrics().steps, f.in_flight(), now).filter(|d| *d >= stall) {
                why = Some(format!(
                    "fleet {}: {} requests in flight and no engine step for {:.1} s",
                    f.name,
                    f.in_flight(),
                    d.as_secs_f64()
                ));
            }
        }
        core.set_unready(why);
    }
}

/// Counts what [`Core::in_flight`] needs to reach zero.
pub(crate) fn any_in_flight(core: &Core) -> bool {
    core.in_flight() > 0 || core.metrics.streams_open.load(Ordering::Relaxed) > 0
}

/// Test hook: with `CHORUS_FAILPOINT=stall_after_tokens@N` every answer stops (holding its
/// stream open, sending nothing more) before its token N + 1, so a test can kill the core
/// with requests in flight before or after their first token.
fn failpoint_stall(completion: u32) -> bool {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    AT.get_or_init(|| crate::failpoint("stall_after_tokens")).is_some_and(|n| u64::from(completion) == n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_work_in_flight_with_no_step() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Progress::new(5, t0);
        // Idle: never a stall, however long.
        assert_eq!(p.observe(5, 0, t0 + 10 * s), None);
        // Work arrives; steps advance: fine.
        assert_eq!(p.observe(5, 2, t0 + 11 * s), Some(s));
        assert_eq!(p.observe(6, 2, t0 + 12 * s), None);
        // Steps stop while work waits: the stall grows from the last step.
        assert_eq!(p.observe(6, 2, t0 + 15 * s), Some(3 * s));
        assert_eq!(p.observe(6, 2, t0 + 20 * s), Some(8 * s));
        // Progress resumes.
        assert_eq!(p.observe(7, 2, t0 + 21 * s), None);
    }
}
