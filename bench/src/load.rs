//! `chorus bench load`: drives an OpenAI-compatible chat endpoint open-loop (Poisson arrivals
//! at a rate, whatever the server does: the way users arrive) or closed-loop (N users, each
//! waiting for its answer and thinking before the next), with a tier mix, multi-turn sessions
//! sharing a long system prompt, and drawn lengths; bounded in time and requests. It samples
//! the server's `/metrics` while running and shows a live progress line.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::{Call, Endpoint, Req, call, get_text};
use crate::dist::{Poisson, Rng};
use crate::prom;
use crate::report::{Mode, Record, RunReport, ServerSide, SloTarget};
use crate::stats::Summary;
use crate::workload::{MAX_OUTPUT_TOKENS, Session, Shape, system_prompt};

/// One tier of the mix: its API key and its share of sessions.
#[derive(Debug, Clone)]
pub struct TierKey {
    pub tier: String,
    pub key: Option<String>,
    pub weight: f64,
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub endpoint: Endpoint,
    pub model: String,
    pub tiers: Vec<TierKey>,
    pub shape: Shape,
    /// Stop sending after this long…
    pub duration: Duration,
    /// …or after this many requests.
    pub max_requests: usize,
    /// Closed loop: pause between an answer and the user's next request.
    pub think: Duration,
    /// Ask the server to generate to `max_tokens` (vLLM / llama.cpp / Chorus `ignore_eos`).
    pub ignore_eos: bool,
    pub temperature: f32,
    /// Per request, retries included.
    pub timeout: Duration,
    /// Wait out a 429's Retry-After and retry, at most this many times (0: count and move on).
    pub retry_429: u32,
    /// Where to read server metrics (`None`: the endpoint's origin `/metrics`, if it answers).
    pub metrics: Option<Endpoint>,
    pub seed: u64,
    /// Draw a progress line on stderr.
    pub progress: bool,
    /// Open loop: most requests in flight; an arrival past it is not sent and is counted as
    /// the error `client_max_in_flight` (the generator's limit, not the server's).
    pub max_in_flight: usize,
    pub slo: Vec<SloTarget>,
}

/// Counters the progress line and the metrics sampler read.
#[derive(Debug, Default)]
struct Live {
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    tokens: AtomicU64,
}

struct Shared {
    spec: LoadSpec,
    system: String,
    start: Instant,
    /// Sessions between turns, waiting for their next request.
    idle: Mutex<Vec<Session>>,
    rng: Mutex<Rng>,
    records: Mutex<Vec<Record>>,
    live: Live,
    issued: AtomicUsize,
}

/// Runs one open- or closed-loop run and reports it.
pub async fn run(spec: LoadSpec, mode: Mode) -> RunReport {
    let system = system_prompt(spec.shape.system_words);
    let system = if spec.shape.system_words == 0 { String::new() } else { system };
    let shared = Arc::new(Shared {
        rng: Mutex::new(Rng::new(spec.seed)),
        spec,
        system,
        start: Instant::now(),
        idle: Mutex::new(Vec::new()),
        records: Mutex::new(Vec::new()),
        live: Live::default(),
        issued: AtomicUsize::new(0),
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    let sampler = tokio::spawn(sample_metrics(shared.clone(), stop.clone()));
    let progress = shared.spec.progress.then(|| tokio::spawn(progress(shared.clone(), mode.clone())));
    match &mode {
        Mode::Open { rate } => open_loop(&shared, *rate).await,
        Mode::Closed { users, .. } => closed_loop(&shared, *users).await,
    }
    stop.notify_one();
    let server = sampler.await.unwrap_or_default();
    if let Some(p) = progress {
        p.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[2K");
        }
    }
    let mut records = std::mem::take(&mut *shared.records.lock().unwrap_or_else(|e| e.into_inner()));
    records.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    // From the first send to the last answer.
    let first = records.iter().map(|r| r.t_s).fold(f64::INFINITY, f64::min);
    let last = records.iter().map(|r| r.t_s + r.e2e_ms / 1e3).fold(0.0, f64::max);
    let wall_s = if records.is_empty() { 0.0 } else { (last - first).max(1e-3) };
    let honoured = shared.spec.retry_429 > 0;
    RunReport::build(mode, wall_s, records, server, &shared.spec.slo, honoured)
}

async fn open_loop(shared: &Arc<Shared>, rate: f64) {
    let arrivals = Poisson::new(rate, shared.spec.duration, Rng::new(shared.spec.seed ^ 0xA5A5_5A5A));
    let mut tasks = tokio::task::JoinSet::new();
    for at in arrivals.take(shared.spec.max_requests) {
        let due = shared.start + at;
        tokio::time::sleep_until(due.into()).await;
        // Reap finished tasks as we go (a long run holds only what is in flight).
        while let Some(done) = tasks.try_join_next() {
            lost(shared, done);
        }
        if tasks.len() >= shared.spec.max_in_flight {
            shared.issued.fetch_add(1, Relaxed);
            refuse_locally(shared, at, "client_max_in_flight");
            continue;
        }
        let s = shared.clone();
        // Latency counts from when the request was due, not from when this task got to it.
        tasks.spawn(async move { one_request(&s, None, false, Some(due)).await });
    }
    while let Some(done) = tasks.join_next().await {
        lost(shared, done);
    }
}

/// A request task that panicked still counts: as an error of the generator.
fn lost<T>(shared: &Shared, done: Result<T, tokio::task::JoinError>) {
    if done.is_err() {
        refuse_locally(shared, shared.start.elapsed(), "client_task_failed");
    }
}

/// Records a request the generator itself could not send.
fn refuse_locally(shared: &Shared, at: Duration, why: &str) {
    shared.live.sent.fetch_add(1, Relaxed);
    shared.live.done.fetch_add(1, Relaxed);
    shared.live.errors.fetch_add(1, Relaxed);
    let r = Record { tier: "client".into(), t_s: at.as_secs_f64(), error: Some(why.into()), ..Default::default() };
    shared.records.lock().unwrap_or_else(|e| e.into_inner()).push(r);
}

async fn closed_loop(shared: &Arc<Shared>, users: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for u in 0..users {
        let s = shared.clone();
        tasks.spawn(async move {
            // Users start spread over the first think time (or 100 ms; within the run), not
            // all at once.
            let spread = s.spec.think.max(Duration::from_millis(100)).min(s.spec.duration / 2);
            tokio::time::sleep(spread.mul_f64(u as f64 / users.max(1) as f64)).await;
            let end = s.start + s.spec.duration;
            let mut session: Option<Session> = None;
            while Instant::now() < end {
                match one_request(&s, session.take(), true, None).await {
                    Some(next) => session = next,
                    None => break,
                }
                tokio::time::sleep_until((Instant::now() + s.spec.think).min(end).into()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Sends one request of a session (`session`: the closed loop's own; `None`: an idle session
/// of a drawn tier, or a new one). `None` when the request bound is reached; else the session
/// if it goes on and is `owned` (a closed-loop user's), while an open loop's goes back to the
/// idle pool.
async fn one_request(
    s: &Arc<Shared>,
    session: Option<Session>,
    owned: bool,
    due: Option<Instant>,
) -> Option<Option<Session>> {
    if s.issued.fetch_add(1, Relaxed) >= s.spec.max_requests {
        return None;
    }
    let (mut session, prompt, max_tokens) = {
        let mut rng = s.rng.lock().unwrap_or_else(|e| e.into_inner());
        let session = match session {
            Some(x) => x,
            None => {
                let weights: Vec<f64> = s.spec.tiers.iter().map(|t| t.weight).collect();
                let tier = rng.weighted(&weights);
                let mut idle = s.idle.lock().unwrap_or_else(|e| e.into_inner());
                match idle.iter().position(|x| x.tier == tier) {
                    Some(i) => idle.swap_remove(i),
                    None => Session::new(tier, &s.spec.shape, &s.system, &mut rng),
                }
            }
        };
        let prompt = session.next_prompt(&s.spec.shape, &mut rng);
        let max_tokens = s.spec.shape.output_tokens.sample(&mut rng, MAX_OUTPUT_TOKENS);
        (session, prompt, max_tokens)
    };
    let tier = &s.spec.tiers[session.tier];
    let mut messages = session.messages.clone();
    messages.push(json!({"role": "user", "content": prompt}));
    let mut body = json!({
        "model": s.spec.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": max_tokens,
        "temperature": s.spec.temperature,
    });
    if s.spec.ignore_eos {
        body["ignore_eos"] = Value::Bool(true);
    }
    let sent = due.unwrap_or_else(Instant::now);
    let t_s = (sent - s.start).as_secs_f64();
    s.live.sent.fetch_add(1, Relaxed);
    let mut record = Record { tier: tier.tier.clone(), t_s, turn: session.turn, ..Default::default() };
    let mut c: Call;
    loop {
        let left = s.spec.timeout.saturating_sub(sent.elapsed());
        let req = Req {
            method: "POST",
            path: "/chat/completions",
            key: tier.key.as_deref(),
            headers: vec![],
            body: Some(&body),
            timeout: left,
        };
        let attempt = Instant::now();
        c = call(&s.spec.endpoint, &req).await;
        if c.status != 429 {
            // Latencies count from when the request was due: lag and 429 waits are the user's.
            let offset = attempt - sent;
            c.ttft = c.ttft.map(|t| t + offset);
            for ch in &mut c.chunks {
                *ch += offset;
            }
            c.end += offset;
            break;
        }
        record.rate_limited += 1;
        record.retry_after_given += u32::from(c.retry_after.is_some());
        let wait = c.retry_after.unwrap_or(Duration::from_secs(1));
        if record.retries >= s.spec.retry_429 || sent.elapsed() + wait >= s.spec.timeout {
            c.end = sent.elapsed();
            break;
        }
        record.retries += 1;
        tokio::time::sleep(wait).await;
    }
    record.status = c.status;
    record.error = if c.ok() { None } else { Some(c.error.clone().unwrap_or_else(|| format!("http_{}", c.status))) };
    record.ttft_ms = c.ttft.map(|t| t.as_secs_f64() * 1e3);
    record.e2e_ms = c.end.as_secs_f64() * 1e3;
    record.output_tokens = c.output_tokens();
    record.prompt_tokens = c.usage.map(|u| u.prompt_tokens);
    record.cached_tokens = c.usage.and_then(|u| u.cached_tokens);
    record.fleet = c.header("x-chorus-fleet").map(str::to_owned);
    // Gaps between deliveries: chunks that came in one read arrive together, not 0 ms apart.
    record.itl_ms = c.chunks.windows(2).filter(|w| w[1] > w[0]).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3).collect();
    let ok = record.answered();
    s.live.done.fetch_add(1, Relaxed);
    if !ok {
        s.live.errors.fetch_add(1, Relaxed);
    }
    s.live.tokens.fetch_add(u64::from(record.output_tokens), Relaxed);
    s.records.lock().unwrap_or_else(|e| e.into_inner()).push(record);
    // A failed turn ends its session (its history would be missing the answer).
    if !(ok && session.answered(prompt, c.content)) {
        return Some(None);
    }
    if owned {
        return Some(Some(session));
    }
    s.idle.lock().unwrap_or_else(|e| e.into_inner()).push(session);
    Some(None)
}

/// Samples the server's metrics about once a second until told to stop.
async fn sample_metrics(s: Arc<Shared>, stop: Arc<tokio::sync::Notify>) -> ServerSide {
    let ep = s
        .spec
        .metrics
        .clone()
        .unwrap_or_else(|| Endpoint { authority: s.spec.endpoint.authority.clone(), prefix: String::new() });
    let path = if ep.prefix.is_empty() { "/metrics".to_owned() } else { String::new() };
    let scrape = || async {
        let (status, text) = get_text(&ep, &path, None, Duration::from_secs(2)).await?;
        (status == 200).then(|| prom::parse(&text))
    };
    let mut first = None;
    let mut last = None;
    let mut depths = Vec::new();
    let mut scrapes = 0;
    loop {
        if let Some(samples) = scrape().await {
            scrapes += 1;
            if let Some(q) = prom::queue_depth(&samples) {
                depths.push(q);
            }
            if let Some(c) = prom::prefix_cache_counters(&samples) {
                first.get_or_insert(c);
                last = Some(c);
            }
        } else if scrapes == 0 {
            return ServerSide::default(); // no metrics page: nothing to sample
        }
        tokio::select! {
            _ = stop.notified() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    // One last scrape after the run: the final answers' tokens.
    if let Some(c) = scrape().await.and_then(|s| prom::prefix_cache_counters(&s)) {
        last = Some(c);
    }
    let hit = match (first, last) {
        (Some((c0, p0)), Some((c1, p1))) if p1 > p0 => Some(((c1 - c0) / (p1 - p0)).clamp(0.0, 1.0)),
        _ => None,
    };
    ServerSide { prefix_cache_hit_rate: hit, queue_depth: (!depths.is_empty()).then(|| Summary::of(depths)), scrapes }
}

/// Redraws one progress line on stderr (a line every 5 s when stderr is not a terminal).
async fn progress(s: Arc<Shared>, mode: Mode) {
    let tty = std::io::stderr().is_terminal();
    let period = if tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
    let total = s.spec.duration.as_secs_f64();
    loop {
        tokio::time::sleep(period).await;
        let el = s.start.elapsed().as_secs_f64();
        let frac = (el / total).clamp(0.0, 1.0);
        let width = 24;
        let filled = (frac * width as f64).round() as usize;
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
        // `done` first: a request counted done was counted sent before it.
        let (done, err) = (s.live.done.load(Relaxed), s.live.errors.load(Relaxed));
        let sent = s.live.sent.load(Relaxed).max(done);
        let tok_s = s.live.tokens.load(Relaxed) as f64 / el.max(1e-3);
        let line = format!(
            "{} [{bar}] {el:>5.1}/{total:.0}s sent {sent} done {done} in flight {} errors {err} {tok_s:.0} tok/s",
            mode.name(),
            sent - done
        );
        let mut e = std::io::stderr().lock();
        if tty {
            let _ = write!(e, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }
}
