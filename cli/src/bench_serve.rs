//! `chorus bench engine --concurrency …`: the engine loop under load, measured from the
//! client's side of [`EngineHandle`] the way an HTTP load generator measures llama-server.
//!
//! - **sweep**: for each concurrency C, C requests (`--prompt-tokens` prompt ids, exactly
//!   `--gen-tokens` new tokens, end-of-turn ignored) are submitted at once; aggregate output
//!   tok/s is all output tokens over the wall time from first submission to last token, TTFT is
//!   per request from its submission.
//! - **prefix**: TTFT of a request whose ~1,000-token system prompt is cold vs already cached.
//! - **overload**: plus-tier TTFT alone, then under a 10:1 free:plus flood beyond capacity;
//!   then the same with the flood on a second engine loop (another fleet's scheduler and KV
//!   cache) sharing the one compute pool, as `mini` and `flagship` do in a core.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chorus_engine::chat_template::ChatMessage;
use chorus_engine::constraint::Grammar;
use chorus_engine::engine::Engine;
use chorus_engine::sampler::SamplingParams;
use chorus_engine::serve::{EngineHandle, SeqEvent, SeqStream, ServeOptions};
use chorus_sched::Tier;
use clap::Args;

/// Flags of the serving benchmark.
#[derive(Args, Debug)]
pub struct ServeBench {
    /// Concurrency levels: requests submitted at once through the engine loop.
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Rounds per concurrency level (figures aggregate all rounds).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Skip the prefix-cache case.
    #[arg(long)]
    pub no_prefix: bool,
    /// Seconds of the 10:1 free:plus overload case (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub overload_secs: u64,
    /// Tokens per step (decodes, then prefill chunks).
    #[arg(long, default_value_t = ServeOptions::default().max_step_tokens)]
    pub max_step_tokens: usize,
    /// Sequences decoding at once.
    #[arg(long, default_value_t = ServeOptions::default().max_running)]
    pub max_running: usize,
    /// JSON schema files: the sweep runs each concurrency unconstrained and then with the
    /// first schema constraining every sequence, side by side; compile times (cold and
    /// cached) are reported for each.
    #[arg(long, value_delimiter = ',')]
    pub json_schema: Vec<PathBuf>,
    /// Write the sweep's prompts (JSON arrays of token ids) to this file, for running the same
    /// requests against a peer server, and exit.
    #[arg(long)]
    pub dump_prompts: Option<PathBuf>,
}

/// Client-side figures of one batch of requests.
struct Run {
    ttft_ms: Vec<f64>,
    output_tokens: usize,
    wall: Duration,
}

fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Reads a stream to its end; returns (TTFT, output tokens), or the reason it ended early.
fn drain(mut s: SeqStream, submitted: Instant) -> Result<(Option<Duration>, usize), String> {
    let mut first = None;
    let mut n = 0;
    while let Some(ev) = s.blocking_next() {
        match ev {
            SeqEvent::Token { .. } => {
                first.get_or_insert_with(|| submitted.elapsed());
                n += 1;
            }
            SeqEvent::Finished { .. } => return Ok((first, n)),
            SeqEvent::Started { .. } => {}
            SeqEvent::Rejected(e) => return Err(format!("rejected: {e}")),
            SeqEvent::Dropped(e) => return Err(format!("dropped: {e}")),
            SeqEvent::Failed(e) => return Err(format!("failed: {e}")),
        }
    }
    Err("stream ended without a final event".into())
}

fn params(max_tokens: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_tokens: max_tokens as u32, ignore_eos: true, ..SamplingParams::default() }
}

/// Submits every prompt at once (each under its own cache salt) and waits for all.
fn burst(h: &EngineHandle, prompts: &[Vec<u32>], new_tokens: usize, tier: Tier, salt: &str) -> Result<Run> {
    burst_with(h, prompts, new_tokens, tier, salt, None)
}

fn burst_with(
    h: &EngineHandle,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    tier: Tier,
    salt: &str,
    grammar: Option<&Grammar>,
) -> Result<Run> {
    let t0 = Instant::now();
    let mut streams = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let params = SamplingParams { grammar: grammar.cloned(), ..params(new_tokens) };
        let seq = h.validate(p.clone(), params, tier, format!("{salt}-{i}"))?;
        streams.push((h.submit(seq), Instant::now()));
    }
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = streams.into_iter().map(|(s, at)| scope.spawn(move || drain(s, at))).collect();
        handles.into_iter().map(|j| j.join().expect("collector thread")).collect()
    });
    let wall = t0.elapsed();
    let mut run = Run { ttft_ms: Vec::new(), output_tokens: 0, wall };
    for r in results {
        let (ttft, n) = r.map_err(anyhow::Error::msg)?;
        run.output_tokens += n;
        run.ttft_ms.extend(ttft.map(|d| d.as_secs_f64() * 1e3));
    }
    Ok(run)
}

/// Runs the serving benchmark and prints the figures.
pub fn run(e: Engine, prompt_tokens: usize, new_tokens: usize, json: bool, a: &ServeBench) -> Result<()> {
    let vocab = e.model.cfg.vocab;
    let prompts = |n: usize, round: usize| -> Vec<Vec<u32>> {
        (0..n).map(|i| crate::synthetic::tokens(prompt_tokens, 1000 * (round + 1) + i, vocab)).collect()
    };
    let max_c = a.concurrency.iter().copied().max().unwrap_or(1);
    if let Some(path) = &a.dump_prompts {
        let all = prompts(max_c, 0);
        std::fs::write(path, serde_json::to_string(&all)?).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} prompts of {prompt_tokens} tokens to {}", all.len(), path.display());
        return Ok(());
    }
    let threads = e.pool.n_threads();
    let e = Arc::new(e);
    let opts = ServeOptions {
        kv_tokens: (max_c + 4) * (prompt_tokens + new_tokens + 16).max(1200) + 4096,
        max_step_tokens: a.max_step_tokens,
        max_running: a.max_running,
        ..ServeOptions::default()
    };
    let h = EngineHandle::start(e.clone(), opts.clone())?;
    // Warm-up: faults the weights in and sizes the buffers.
    burst(&h, &prompts(2, 99), 8, Tier::Free, "warm")?;

    let schemas = a
        .json_schema
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Ok((p.display().to_string(), Grammar::JsonSchema(text)))
        })
        .collect::<Result<Vec<_>>>()?;
    let compile = schemas.iter().map(|(name, g)| compile_times(&e, name, g, json)).collect::<Result<Vec<_>>>()?;
    let mut sweep = Vec::new();
    for &c in &a.concurrency {
        let modes: Vec<Option<&Grammar>> = std::iter::once(None).chain(schemas.first().map(|(_, g)| Some(g))).collect();
        let mut plain_tps = None;
        for grammar in modes {
            let mut all = Run { ttft_ms: Vec::new(), output_tokens: 0, wall: Duration::ZERO };
            for round in 0..a.rounds.max(1) {
                let salt = format!("sweep-{c}-{round}-{}", grammar.is_some());
                let r = burst_with(&h, &prompts(c, round), new_tokens, Tier::Plus, &salt, grammar)?;
                all.ttft_ms.extend(r.ttft_ms);
                all.output_tokens += r.output_tokens;
                all.wall += r.wall;
            }
            let tps = all.output_tokens as f64 / all.wall.as_secs_f64();
            let (p50, p95) = (percentile(&all.ttft_ms, 0.5), percentile(&all.ttft_ms, 0.95));
            let label = if grammar.is_some() { "json-schema" } else { "" };
            let slower = plain_tps.map(|p: f64| (1.0 - tps / p) * 100.0);
            if !json {
                let vs = slower.map(|s| format!(", {s:+.1}% slower than unconstrained")).unwrap_or_default();
                println!(
                    "concurrency {c:>3}{label:>12}: {tps:>8.1} output tok/s aggregate, TTFT p50 {p50:>7.0} ms, p95 {p95:>7.0} ms ({} requests, {} tokens){vs}",
                    all.ttft_ms.len(),
                    all.output_tokens
                );
            }
            plain_tps.get_or_insert(tps);
            sweep.push(serde_json::json!({"concurrency": c, "constrained": grammar.is_some(), "output_tok_s": round1(tps), "ttft_p50_ms": round1(p50), "ttft_p95_ms": round1(p95), "output_tokens": all.output_tokens, "slower_pct": slower.map(round1)}));
        }
    }

    let prefix = if a.no_prefix { None } else { Some(prefix_case(&e, &h)?) };
    if let (Some((cold, warm, cached)), false) = (prefix, json) {
        println!(
            "prefix cache: 1,000-token system prompt TTFT cold {cold:.0} ms, cached {warm:.0} ms ({:.2}x; {cached} tokens reused)",
            warm / cold
        );
    }
    let (overload, across) = if a.overload_secs == 0 {
        (None, None)
    } else {
        let one = overload_case(&h, &h, &prompts, new_tokens, a.overload_secs, 0)?;
        // A second loop on the same engine: its own scheduler and KV cache, the same pool.
        let other = EngineHandle::start(e.clone(), opts.clone())?;
        burst(&other, &prompts(2, 98), 8, Tier::Free, "warm-other")?;
        let two = overload_case(&other, &h, &prompts, new_tokens, a.overload_secs, 1000)?;
        (Some(one), Some(two))
    };
    if !json {
        for (o, what) in [(&overload, "one loop"), (&across, "free on another loop, one pool")] {
            let Some(o) = o else { continue };
            println!(
                "overload 10:1 free:plus for {}s ({what}): plus TTFT p95 {:.0} ms (unloaded {:.0} ms, {:.2}x); free TTFT p95 {:.0} ms, {} free started, {} not started by the end",
                a.overload_secs,
                o.plus_p95,
                o.unloaded_p95,
                o.plus_p95 / o.unloaded_p95,
                o.free_p95,
                o.free_served,
                o.free_rejected
            );
        }
    }
    let m = h.metrics();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "threads": threads,
                "max_step_tokens": opts.max_step_tokens,
                "max_running": opts.max_running,
                "sweep": sweep,
                "compile": compile,
                "prefix": prefix.map(|(c, w, n)| serde_json::json!({"cold_ttft_ms": round1(c), "cached_ttft_ms": round1(w), "ratio": (w / c * 1000.0).round() / 1000.0, "cached_tokens": n})),
                "overload": overload.as_ref().map(Overload::json),
                "overload_across_loops": across.as_ref().map(Overload::json),
                "preemptions": m.sched.preemptions,
            })
        );
    } else {
        println!(
            "threads {threads}, max_step_tokens {}, max_running {}; preemptions {}",
            opts.max_step_tokens, opts.max_running, m.sched.preemptions
        );
    }
    Ok(())
}

/// Compile time of one schema: cold (the grammar compiled from scratch, the token trie already
/// built) and cached (a clone of the compiled matcher), p50 and p99 in milliseconds.
fn compile_times(e: &Engine, name: &str, g: &Grammar, json: bool) -> Result<serde_json::Value> {
    let c = &e.constraints;
    let t = Instant::now();
    c.compile_uncached(g)?;
    let first = t.elapsed().as_secs_f64() * 1e3;
    let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let cold = (0..20).map(|_| time(&|| Ok(c.compile_uncached(g).map(drop)?))).collect::<Result<Vec<_>>>()?;
    c.compile(g)?;
    let cached = (0..200).map(|_| time(&|| Ok(c.compile(g).map(drop)?))).collect::<Result<Vec<_>>>()?;
    let (c50, c99, h50, h99) =
        (percentile(&cold, 0.5), percentile(&cold, 0.99), percentile(&cached, 0.5), percentile(&cached, 0.99));
    if !json {
        println!(
            "compile {name}: cold p50 {c50:.2} ms, p99 {c99:.2} ms; cached p50 {h50:.3} ms, p99 {h99:.3} ms (first compile, with the token trie: {first:.1} ms)"
        );
    }
    Ok(
        serde_json::json!({"schema": name, "cold_p50_ms": c50, "cold_p99_ms": c99, "cached_p50_ms": h50, "cached_p99_ms": h99, "first_ms": first}),
    )
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// (cold TTFT ms, cached TTFT ms, cached tokens), medians of three.
fn prefix_case(e: &Engine, h: &EngineHandle) -> Result<(f64, f64, usize)> {
    let rule = "Answer politely, briefly and truthfully, and say so when you do not know. ";
    let mut system = String::new();
    let msg = |role: &str, content: &str| ChatMessage { role: role.into(), content: content.into() };
    let prompt = |system: &str, user: &str| e.chat_prompt(&[msg("system", system), msg("user", user)]);
    while prompt(&system, "")?.len() < 1000 {
        system.push_str(rule);
    }
    let questions = ["What is the capital of France?", "Name a prime number.", "Why is the sky blue?", "Say hello."];
    let one = |user: &str, salt: &str| -> Result<(f64, usize)> {
        let s = h.submit(h.validate(prompt(&system, user)?, params(1), Tier::Plus, salt)?);
        let at = Instant::now();
        let mut cached = 0;
        let mut s = s;
        let mut ttft = None;
        while let Some(ev) = s.blocking_next() {
            match ev {
                SeqEvent::Token { .. } => {
                    ttft.get_or_insert(at.elapsed());
                }
                SeqEvent::Finished { usage, .. } => cached = usage.cached_tokens,
                SeqEvent::Started { .. } => {}
                other => anyhow::bail!("prefix case: {other:?}"),
            }
        }
        Ok((ttft.context("no token")?.as_secs_f64() * 1e3, cached))
    };
    let mut cold = Vec::new();
    for (i, q) in questions.iter().take(3).enumerate() {
        cold.push(one(q, &format!("cold-{i}"))?.0);
    }
    one(questions[3], "warm")?;
    let mut warm = Vec::new();
    let mut cached = 0;
    for q in questions.iter().take(3) {
        let (t, c) = one(q, "warm")?;
        warm.push(t);
        cached = c;
    }
    Ok((percentile(&cold, 0.5), percentile(&warm, 0.5), cached))
}

struct Overload {
    unloaded_p95: f64,
    plus_p95: f64,
    free_p95: f64,
    free_served: usize,
    free_rejected: usize,
}

impl Overload {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({"plus_ttft_p95_ms": round1(self.plus_p95), "unloaded_plus_ttft_p95_ms": round1(self.unloaded_p95), "free_ttft_p95_ms": round1(self.free_p95), "free_served": self.free_served, "free_rejected": self.free_rejected})
    }
}

/// The flood of free requests goes to `free_h`, the plus requests to `plus_h` (the same
/// handle, or two loops sharing one engine's pool); `seed` picks prompts no earlier case
/// cached.
fn overload_case(
    free_h: &EngineHandle,
    plus_h: &EngineHandle,
    prompts: &dyn Fn(usize, usize) -> Vec<Vec<u32>>,
    new_tokens: usize,
    secs: u64,
    seed: usize,
) -> Result<Overload> {
    // Plus alone: one request at a time.
    let mut unloaded = Vec::new();
    for (i, p) in prompts(10, seed + 500).into_iter().enumerate() {
        let r = burst(plus_h, &[p], new_tokens / 2, Tier::Plus, &format!("alone-{i}"))?;
        unloaded.extend(r.ttft_ms);
    }
    // The flood: a free request every 100 ms and a plus request every second.
    let free_prompts = prompts(10 * secs as usize, seed + 600);
    let plus_prompts = prompts(secs as usize, seed + 700);
    let t0 = Instant::now();
    let (plus, free) = std::thread::scope(|scope| -> Result<_> {
        let mut plus = Vec::new();
        let mut free = Vec::new();
        let mut free_ids = Vec::new();
        for (k, p) in free_prompts.iter().enumerate() {
            let due = Duration::from_millis(100 * k as u64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            let s = free_h.submit(free_h.validate(p.clone(), params(new_tokens), Tier::Free, format!("flood-{k}"))?);
            let at = Instant::now();
            free_ids.push(s.id());
            free.push(scope.spawn(move || drain(s, at)));
            if k % 10 == 5 {
                let s = plus_h.submit(plus_h.validate(
                    plus_prompts[k / 10].clone(),
                    params(new_tokens / 2),
                    Tier::Plus,
                    format!("p-{k}"),
                )?);
                let at = Instant::now();
                plus.push(scope.spawn(move || drain(s, at)));
            }
        }
        let plus: Vec<_> = plus.into_iter().map(|j| j.join().expect("collector")).collect();
        // The flood is over: whatever free work is left is cancelled, not waited for.
        for id in free_ids {
            free_h.cancel(id);
        }
        let free: Vec<_> = free.into_iter().map(|j| j.join().expect("collector")).collect();
        Ok((plus, free))
    })?;
    let plus_ttft: Vec<f64> =
        plus.iter().filter_map(|r| r.as_ref().ok().and_then(|(t, _)| *t)).map(|d| d.as_secs_f64() * 1e3).collect();
    let free_ttft: Vec<f64> =
        free.iter().filter_map(|r| r.as_ref().ok().and_then(|(t, _)| *t)).map(|d| d.as_secs_f64() * 1e3).collect();
    anyhow::ensure!(
        plus_ttft.len() == plus.len(),
        "a plus request failed under load: {:?}",
        plus.iter().find(|r| r.is_err())
    );
    Ok(Overload {
        unloaded_p95: percentile(&unloaded, 0.95),
        plus_p95: percentile(&plus_ttft, 0.95),
        free_p95: percentile(&free_ttft, 0.95),
        free_served: free_ttft.len(),
        free_rejected: free.len() - free_ttft.len(),
    })
}
