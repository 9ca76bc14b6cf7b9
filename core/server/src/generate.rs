//! One `Generate`, in four named stages: **admit** (phase, structural limits, the stored
//! history, the route to a fleet) → **build** the prompt (chat template, trimming, the engine's
//! checks) → **stream** the answer (tokens through the post-generation gate, cancel, deadline,
//! shutdown) → **commit** the turn (durable tier first) and send `Done`.
//!
//! Each stage either hands the next one what it made or ends the request with a [`Refusal`],
//! sent as the stream's one `Error`. A write that fails means the edge went away ([`Gone`]):
//! dropping the engine stream then cancels the sequence and frees its blocks.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_engine::constraint::Grammar;
use chorus_engine::sampler::SamplingParams;
use chorus_engine::serve::{SeqEvent, SeqStream, SubmitError, ValidSeq};
use chorus_proto::quic::{FramedSend, ReadError, RequestStream};
use chorus_proto::{
    Accepted, ChoiceEnd, Constraint, Done, ErrorCode, FinishReason, Generate, Logprob, Message, Reply, Request, Role,
    Token, Usage, tools,
};
use tracing::info;

use crate::fleet::{Fleet, FleetGuard, Route};
use crate::history::{self, Resolved, Thread};
use crate::metrics::CoreMetrics;
use crate::prompt::{self, PromptError};
use crate::replies::{Gone, error, reply};
use crate::state::{Core, Phase};
use crate::store::Context;
use crate::wire;

/// How a request ended: the fleet that served it (`-` for none) and its final reply.
#[derive(Debug)]
pub(crate) struct Ended {
    pub fleet: String,
    pub last: Reply,
}

/// Why a request ends with an `Error`, and the fleet it is counted under.
#[derive(Debug)]
struct Refusal {
    fleet: String,
    code: ErrorCode,
    message: String,
    retry_after_ms: Option<u32>,
    /// The request field at fault.
    param: Option<String>,
}

impl Refusal {
    fn new(fleet: &str, code: ErrorCode, message: impl Into<String>, retry_after_ms: Option<u32>) -> Self {
        Self { fleet: fleet.to_string(), code, message: message.into(), retry_after_ms, param: None }
    }

    async fn send(self, send: &mut FramedSend) -> Result<Ended, Gone> {
        let mut last = error(self.code, self.message, self.retry_after_ms);
        if let Reply::Error(e) = &mut last {
            e.param = self.param;
        }
        reply(send, &last).await?;
        Ok(Ended { fleet: self.fleet, last })
    }
}

/// Serves a Generate to its final reply.
pub(crate) async fn serve(core: &Arc<Core>, stream: &mut RequestStream, g: Generate) -> Result<Ended, Gone> {
    let received = Instant::now();
    let admitted = match admit(core, &g).await {
        Ok(Admission::Go(a)) => a,
        Ok(Admission::Replay(c, version)) => {
            let last = history::replay(&mut stream.replies, &c, version).await?;
            return Ok(Ended { fleet: "-".into(), last });
        }
        Err(r) => return r.send(&mut stream.replies).await,
    };
    let built = match build(core, &g, &admitted).await {
        Ok(b) => b,
        Err(r) => return r.send(&mut stream.replies).await,
    };
    match answer(core, stream, &g, &admitted, built, received).await? {
        Ok(a) => commit(core, &mut stream.replies, &g, &admitted, a).await,
        Err(r) => r.send(&mut stream.replies).await,
    }
}

/// What admission decided.
enum Admission {
    Go(Admitted),
    /// The request already produced a committed turn: send it again.
    Replay(crate::store::Conversation, u64),
}

/// A request the core will answer, and where.
struct Admitted {
    thread: Thread,
    fleet: Arc<Fleet>,
    degraded: bool,
}

/// Stage 1: the core is serving, the request is within the protocol's limits, its history is
/// found, and a fleet has room.
async fn admit(core: &Core, g: &Generate) -> Result<Admission, Refusal> {
    if core.phase() != Phase::Serving {
        return Err(Refusal::new("-", ErrorCode::Draining, "the core is draining; retry on another core", Some(0)));
    }
    g.check(&core.limits).map_err(|e| Refusal::new("-", ErrorCode::InvalidRequest, e.to_string(), None))?;
    let thread = match history::resolve(core, g).await {
        Resolved::Go(t) => t,
        Resolved::Replay(c, version) => return Ok(Admission::Replay(c, version)),
        Resolved::Fail(code, message) => return Err(Refusal::new("-", code, message, None)),
    };
    match core.router.route(g.tier, |i| core.fleets[i].waiting()) {
        Route::Fleet { fleet, degraded } => {
            Ok(Admission::Go(Admitted { thread, fleet: core.fleets[fleet].clone(), degraded }))
        }
        Route::OverCapacity { fleet, waiting, bound, retry_after_ms } => {
            let name = &core.fleets[fleet].name;
            Err(Refusal::new(
                name,
                ErrorCode::OverCapacity,
                format!("fleet {name} has {waiting} requests waiting (bound {bound})"),
                Some(retry_after_ms),
            ))
        }
    }
}

/// The prompt, checked by the engine and ready to submit.
struct Built {
    seq: ValidSeq,
    /// With `n` > 1: the other answers' sequences (the same prompt, their own seeds), submitted
    /// once the first has its prompt in the prefix cache.
    extra: Vec<ValidSeq>,
    prompt_tokens: u32,
    trimmed_messages: u32,
    history_messages: u32,
    /// The prompt as text, when the edge asked for it (evaluation).
    echo: Option<String>,
    /// The ids the next turn's prompt starts with (this prompt, then the answer), for a stored
    /// conversation; empty otherwise.
    context_ids: Vec<u32>,
}

/// Stage 2: history + new messages → the chat template → ids within the tier's input cap and
/// the context left after `max_tokens`, oldest turns trimmed first.
async fn build(core: &Core, g: &Generate, a: &Admitted) -> Result<Built, Refusal> {
    let fleet = &a.fleet;
    let refuse = |code, message: String| Refusal::new(&fleet.name, code, message, None);
    let tier = wire::sched_tier(g.tier);
    let ctx = fleet.engine.model.cfg.ctx_len;
    let limit = core.tiers[tier.index()].max_input_tokens.min(ctx.saturating_sub(g.max_tokens as usize));
    let history = a.thread.history();
    let history_messages = history.len() as u32;
    // Rendering and tokenizing a long history is CPU work: off the async threads.
    let built = {
        let engine = fleet.engine.clone();
        let model = fleet.model.clone();
        let context = a.thread.prior.as_ref().and_then(|c| c.context.clone());
        let mut messages = history;
        messages.extend(g.messages.iter().cloned());
        offer_tools(&mut messages, g);
        let raw = g.prompt.clone();
        tokio::task::spawn_blocking(move || match raw {
            Some(raw) => prompt::raw(&engine, raw, limit),
            None => prompt::build_after(&engine, &model, context.as_ref(), &messages, limit),
        })
        .await
    };
    let p = match built {
        Ok(Ok(p)) => p,
        Ok(Err(e @ (PromptError::TooLong { .. } | PromptError::RawTooLong { .. }))) => {
            return Err(refuse(ErrorCode::PromptTooLong, e.to_string()));
        }
        Ok(Err(e)) => return Err(refuse(ErrorCode::InvalidRequest, e.to_string())),
        Err(e) => return Err(refuse(ErrorCode::Internal, format!("prompt builder: {e}"))),
    };
    let s = &g.sampling;
    let d = &fleet.defaults;
    let params = SamplingParams {
        temperature: s.temperature.unwrap_or(d.temperature),
        top_k: s.top_k.unwrap_or(d.top_k),
        top_p: s.top_p.unwrap_or(d.top_p),
        min_p: s.min_p,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
        max_tokens: g.max_tokens,
        stop: g.stop.clone(),
        top_logprobs: s.logprobs.map_or(0, u32::from),
        ignore_eos: s.ignore_eos,
        logit_bias: s.logit_bias.clone(),
        grammar: grammar(g),
    };
    let prompt_tokens = p.ids.len() as u32;
    // Special tokens are kept: the text shows the template's turn markers too.
    let echo = if g.echo_prompt { fleet.engine.tokenizer.decode(&p.ids, false).ok() } else { None };
    let context_ids = if a.thread.id.is_some() { p.ids.clone() } else { Vec::new() };
    // The cache salt is the tenant: tenants never share KV. A grammar is compiled in
    // `validate` (milliseconds when it is not cached): off the async threads.
    let handle = fleet.handle.clone();
    let salt = salt_of(g);
    // Each further answer samples with its own seed (a given seed stays reproducible).
    let others: Vec<(Vec<u32>, SamplingParams)> = (1..u64::from(g.n.max(1)))
        .map(|i| (p.ids.clone(), SamplingParams { seed: params.seed.map(|s| s.wrapping_add(i)), ..params.clone() }))
        .collect();
    let validated = if params.grammar.is_some() {
        tokio::task::spawn_blocking(move || handle.validate(p.ids, params, tier, salt))
            .await
            .map_err(|e| refuse(ErrorCode::Internal, format!("grammar compiler: {e}")))?
    } else {
        handle.validate(p.ids, params, tier, salt)
    };
    let extra: Result<Vec<ValidSeq>, SubmitError> =
        others.into_iter().map(|(ids, params)| fleet.handle.validate(ids, params, tier, salt_of(g))).collect();
    let seq = validated.and_then(|seq| Ok((seq, extra?))).map_err(|e| {
        let param = match &e {
            // The tools' grammar is built from their schemas: a schema it cannot take is theirs.
            SubmitError::Constraint(_) if tools::grammar(&g.tools, &g.tool_choice, false, None).is_some() => {
                Some("tools")
            }
            SubmitError::Constraint(c) => Some(c.field()),
            SubmitError::Sampling(s) => Some(s.kind()),
            SubmitError::BiasToken { .. } => Some("logit_bias"),
            SubmitError::EmptyPrompt | SubmitError::BadToken { .. } => None,
        };
        Refusal { param: param.map(str::to_string), ..refuse(ErrorCode::InvalidRequest, e.to_string()) }
    })?;
    let (seq, extra) = seq;
    Ok(Built { seq, extra, prompt_tokens, trimmed_messages: p.trimmed as u32, history_messages, echo, context_ids })
}

/// The prefix-cache salt: the tenant (tenants never share KV).
fn salt_of(g: &Generate) -> Vec<u8> {
    g.tenant.clone().into_bytes()
}

/// Offers the request's tools in the system message (the generic syntax of
/// [`chorus_proto::tools`]; the built-in templates have no tool syntax of their own).
fn offer_tools(messages: &mut Vec<Message>, g: &Generate) {
    let text = tools::instructions(&g.tools, &g.tool_choice, g.parallel_tool_calls);
    if text.is_empty() {
        return;
    }
    match messages.first_mut() {
        Some(m) if m.role == Role::System => {
            m.content.push_str("\n\n");
            m.content.push_str(&text);
        }
        _ => messages.insert(0, Message { role: Role::System, content: text }),
    }
}

/// The grammar the answer must match: the tools' (calls, or content when `auto`), else the
/// response format's.
fn grammar(g: &Generate) -> Option<Grammar> {
    if let Some(lark) = tools::grammar(&g.tools, &g.tool_choice, g.parallel_tool_calls, g.constraint.as_ref()) {
        return Some(Grammar::Lark(lark));
    }
    g.constraint.as_ref().map(|c| match c {
        Constraint::JsonObject => Grammar::JsonObject,
        Constraint::JsonSchema(s) => Grammar::JsonSchema(s.clone()),
        Constraint::Regex(r) => Grammar::Regex(r.clone()),
        Constraint::Grammar(l) => Grammar::Lark(l.clone()),
    })
}

/// A complete answer, ready to commit.
struct Answer {
    finish_reason: FinishReason,
    usage: Usage,
    /// With `ContentFilter`: the category that matched.
    filter_category: Option<String>,
    /// What the next turn's prompt can start from; `None` when the turn is not stored, or
    /// the answer was cut by the gate (its ids then end mid-thought).
    context: Option<Context>,
    text: String,
    /// With `n` > 1: how each answer ended.
    choices: Vec<ChoiceEnd>,
}

/// Stage 3: submit, send `Accepted`, then stream tokens until the engine finishes, the gate
/// stops the answer, or the edge, the deadline or a shutdown ends it.
async fn answer(
    core: &Core,
    stream: &mut RequestStream,
    g: &Generate,
    a: &Admitted,
    built: Built,
    received: Instant,
) -> Result<Result<Answer, Refusal>, Gone> {
    let fleet = &a.fleet;
    let queue_position = fleet.waiting_tier(g.tier);
    let guard = fleet.enter(g.tier);
    let engine = fleet.handle.submit(built.seq);
    if a.degraded {
        CoreMetrics::inc(&core.metrics.degraded_total);
    }
    if built.trimmed_messages > 0 {
        CoreMetrics::inc(&core.metrics.trimmed_total);
    }
    let accepted = Accepted {
        model: fleet.model.clone(),
        fleet: fleet.name.clone(),
        degraded: a.degraded,
        queue_position,
        prompt_tokens: built.prompt_tokens,
        trimmed_messages: built.trimmed_messages,
        conversation_id: a.thread.id.clone(),
        history_messages: built.history_messages,
        store: a.thread.status,
        prompt: built.echo,
    };
    reply(&mut stream.replies, &Reply::Accepted(accepted)).await?;
    let mut tokens = vec![Tokens::new(core, g, a, Some(guard), built.prompt_tokens, built.context_ids)];
    tokens.extend(built.extra.iter().map(|_| Tokens::new(core, g, a, None, built.prompt_tokens, Vec::new())));
    let deadline = g.deadline_ms.map(|ms| received + Duration::from_millis(ms.into()));
    let later = Later { handle: &fleet.handle, seqs: built.extra };
    follow(core, stream, engine, later, deadline, &mut tokens).await
}

/// The select loop of stage 3: whichever of shutdown, deadline, a frame from the edge or an
/// engine event comes first.
async fn follow(
    core: &Core,
    stream: &mut RequestStream,
    engine: SeqStream,
    mut later: Later<'_>,
    deadline: Option<Instant>,
    tokens: &mut [Tokens<'_>],
) -> Result<Result<Answer, Refusal>, Gone> {
    let fleet = tokens[0].fleet.name.as_str();
    let mut engines: Vec<Option<SeqStream>> = vec![Some(engine)];
    let mut answers: Vec<Option<Answer>> = tokens.iter().map(|_| None).collect();
    let fail = |code, message: String| Ok(Err(Refusal::new(fleet, code, message, None)));
    let mut phase = core.phases();
    let mut reading = true;
    loop {
        if *phase.borrow_and_update() == Phase::Stopping {
            let why = "the core shut down before the answer finished";
            return Ok(Err(Refusal::new(fleet, ErrorCode::ShuttingDown, why, Some(0))));
        }
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = phase.changed() => continue,
            _ = until_deadline => {
                let ms = tokens[0].g.deadline_ms.unwrap_or(0);
                return fail(ErrorCode::DeadlineExceeded, format!("deadline of {ms} ms passed"));
            }
            r = stream.requests.next::<Request>(), if reading => match r {
                Ok(Some(Request::Cancel)) => return fail(ErrorCode::Cancelled, "cancelled by the edge".into()),
                Ok(Some(Request::Generate(_) | Request::Store(_))) => {
                    return fail(ErrorCode::Protocol, "one request per stream".into());
                }
                Ok(None) => reading = false,
                // Reset: the client went away. Dropping the engine stream cancels the sequence.
                Err(ReadError::Gone(_)) => return Err(Gone),
                Err(ReadError::Frame(e)) => return fail(ErrorCode::Protocol, e.to_string()),
            },
            (i, ev) = next_event(&mut engines) => {
                let t = &mut tokens[i];
                let choice = i as u8;
                match t.on_event(ev) {
                    Flow::Send(mut tok) => {
                        if failpoint_stall(t.completion) {
                            eprintln!("failpoint stall_after_tokens: request {}", t.g.request_id);
                            std::future::pending::<()>().await;
                        }
                        tok.choice = choice;
                        reply(&mut stream.replies, &Reply::Token(tok)).await?;
                        // The first answer's prompt is in the prefix cache now: the others
                        // start from it.
                        later.submit(&mut engines);
                    }
                    Flow::Finish(tail, answer) => {
                        if let Some(mut tok) = tail {
                            tok.choice = choice;
                            reply(&mut stream.replies, &Reply::Token(tok)).await?;
                        }
                        engines[i] = None;
                        answers[i] = Some(answer);
                        later.submit(&mut engines);
                        if answers.iter().all(Option::is_some) {
                            return Ok(Ok(combine(answers.into_iter().flatten().collect())));
                        }
                    }
                    Flow::Refuse(r) => return Ok(Err(r)),
                    Flow::Wait => {}
                }
            },
        }
    }
}

/// The sequences of answers after the first, submitted once the first has produced a token
/// (its prompt blocks are then in the prefix cache, so they prefill only the last partial one).
struct Later<'a> {
    handle: &'a chorus_engine::serve::EngineHandle,
    seqs: Vec<ValidSeq>,
}

impl Later<'_> {
    fn submit(&mut self, engines: &mut Vec<Option<SeqStream>>) {
        for seq in self.seqs.drain(..) {
            engines.push(Some(self.handle.submit(seq)));
        }
    }
}

/// The next event of any answer still running, with its index.
async fn next_event(engines: &mut [Option<SeqStream>]) -> (usize, Option<SeqEvent>) {
    std::future::poll_fn(|cx| {
        for (i, e) in engines.iter_mut().enumerate() {
            if let Some(s) = e
                && let std::task::Poll::Ready(ev) = s.poll_next(cx)
            {
                return std::task::Poll::Ready((i, ev));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// One answer, or several made one: the first's text and finish, the prompt counted once and
/// every answer's tokens, and how each ended.
fn combine(mut answers: Vec<Answer>) -> Answer {
    if answers.len() == 1 {
        return answers.remove(0);
    }
    let choices: Vec<ChoiceEnd> = answers
        .iter()
        .map(|a| ChoiceEnd {
            finish_reason: a.finish_reason,
            filter_category: a.filter_category.clone(),
            completion_tokens: a.usage.completion_tokens,
        })
        .collect();
    let completion_tokens = answers.iter().map(|a| a.usage.completion_tokens).sum();
    let mut first = answers.remove(0);
    first.usage.completion_tokens = completion_tokens;
    first.choices = choices;
    first
}

/// What an engine event means for the stream.
enum Flow {
    /// Nothing to send yet.
    Wait,
    /// A token to send.
    Send(Token),
    /// The answer is complete, after the held-back text (if any).
    Finish(Option<Token>, Answer),
    Refuse(Refusal),
}

/// One answer's progress: the gate's window, counts, the text so far and the ids the next turn
/// starts from.
struct Tokens<'a> {
    core: &'a Core,
    g: &'a Generate,
    fleet: &'a Fleet,
    thread_stored: bool,
    /// The request's place in the fleet's gauges (the first answer holds it).
    guard: Option<FleetGuard>,
    gate: crate::safety::Gate<'a>,
    prompt_tokens: u32,
    cached: u32,
    completion: u32,
    text: String,
    context_ids: Vec<u32>,
    /// Engine instants to wall-clock microseconds (`Token.emitted_us`).
    anchor: (Instant, SystemTime),
}

impl<'a> Tokens<'a> {
    fn new(
        core: &'a Core,
        g: &'a Generate,
        a: &'a Admitted,
        guard: Option<FleetGuard>,
        prompt_tokens: u32,
        context_ids: Vec<u32>,
    ) -> Self {
        Self {
            core,
            g,
            fleet: &a.fleet,
            thread_stored: a.thread.id.is_some(),
            guard,
            gate: core.policy.gate(),
            prompt_tokens,
            cached: 0,
            completion: 0,
            text: String::new(),
            context_ids,
            anchor: (Instant::now(), SystemTime::now()),
        }
    }

    fn unix_us(&self, at: Instant) -> u64 {
        let (mono, wall) = self.anchor;
        let t = match at.checked_duration_since(mono) {
            Some(after) => wall + after,
            None => wall.checked_sub(mono.duration_since(at)).unwrap_or(wall),
        };
        t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
    }

    /// The gate stopped the answer: it ends `content_filter`, the matching text unsent.
    fn filtered(&mut self, category: String) -> Flow {
        let usage =
            Usage { prompt_tokens: self.prompt_tokens, completion_tokens: self.completion, cached_tokens: self.cached };
        let answer = Answer {
            finish_reason: FinishReason::ContentFilter,
            usage,
            filter_category: Some(category),
            context: None,
            text: std::mem::take(&mut self.text),
            choices: Vec::new(),
        };
        Flow::Finish(None, answer)
    }

    fn on_event(&mut self, ev: Option<SeqEvent>) -> Flow {
        let fleet = self.fleet.name.as_str();
        let Some(ev) = ev else {
            return Flow::Refuse(Refusal::new(fleet, ErrorCode::EngineFailed, "the engine loop stopped", None));
        };
        match ev {
            SeqEvent::Started { cached_tokens, .. } => {
                if let Some(g) = &mut self.guard {
                    g.started();
                }
                self.cached = cached_tokens as u32;
                Flow::Wait
            }
            SeqEvent::Token { token, text, sampled, at } => {
                self.completion += 1;
                if let Some(v) = self.gate.push(&text) {
                    info!(fleet, request = %self.g.request_id, rule = %v.rule, "answer stopped by the post-generation safety gate");
                    return self.filtered(v.category);
                }
                self.context_ids.push(token);
                let logprobs = self.g.sampling.logprobs.is_some().then(|| {
                    let tok = &self.fleet.engine.tokenizer;
                    let lp = |id: u32, logprob: f32| Logprob {
                        id,
                        text: tok.decode(&[id], false).unwrap_or_default(),
                        logprob,
                    };
                    (lp(sampled.id, sampled.logprob), sampled.top.iter().map(|t| lp(t.id, t.logprob)).collect())
                });
                self.text.push_str(&text);
                Flow::Send(Token { text, ids: vec![token], logprobs, emitted_us: self.unix_us(at), choice: 0 })
            }
            SeqEvent::Finished { reason, text, usage } => {
                if let Some(v) = self.gate.push(&text) {
                    return self.filtered(v.category);
                }
                let tail = (!text.is_empty()).then(|| {
                    self.text.push_str(&text);
                    Token { text, ids: vec![], logprobs: None, emitted_us: self.unix_us(Instant::now()), choice: 0 }
                });
                let context = self
                    .thread_stored
                    .then(|| Context { model: self.fleet.model.clone(), ids: std::mem::take(&mut self.context_ids) });
                let answer = Answer {
                    finish_reason: wire::finish_reason(reason),
                    usage: wire::usage(&usage),
                    filter_category: None,
                    context,
                    text: std::mem::take(&mut self.text),
                    choices: Vec::new(),
                };
                Flow::Finish(tail, answer)
            }
            SeqEvent::Rejected(e) => {
                let retry = e.retry_after_ms().map(|ms| ms.min(u32::MAX.into()) as u32);
                Flow::Refuse(Refusal::new(fleet, wire::admit_error_code(&e), e.to_string(), retry))
            }
            SeqEvent::Dropped(e) => {
                let retry = Some(self.core.cfg.router.retry_after_ms);
                Flow::Refuse(Refusal::new(fleet, ErrorCode::QueueTimeout, e.to_string(), retry))
            }
            SeqEvent::Failed(why) => Flow::Refuse(Refusal::new(fleet, ErrorCode::EngineFailed, why.to_string(), None)),
        }
    }
}

/// Stage 4: store the turn (durable first), then send `Done` saying what became of it.
async fn commit(core: &Core, send: &mut FramedSend, g: &Generate, a: &Admitted, answer: Answer) -> Result<Ended, Gone> {
    let stored = history::store_turn(
        core,
        g,
        &a.thread,
        &a.fleet.model,
        &answer.text,
        answer.finish_reason,
        answer.usage,
        answer.context,
    )
    .await;
    let last = Reply::Done(Done {
        finish_reason: answer.finish_reason,
        usage: answer.usage,
        filter_category: answer.filter_category,
        stored,
        choices: answer.choices,
    });
    reply(send, &last).await?;
    Ok(Ended { fleet: a.fleet.name.clone(), last })
}

/// Test hook: with `CHORUS_FAILPOINT=stall_after_tokens@N` every answer stops (holding its
/// stream open, sending nothing more) before its token N + 1, so a test can kill the core
/// with requests in flight before or after their first token.
fn failpoint_stall(completion: u32) -> bool {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    AT.get_or_init(|| crate::failpoint::named("stall_after_tokens")).is_some_and(|n| u64::from(completion) == n + 1)
}
