//! The engine loop with the real model at temperature 0: output is the same batched or alone,
//! with or without the prefix cache, with or without preemption; a shared system prompt is
//! reported as cached; cancellation frees blocks.

use std::time::Duration;

use chorus_engine::chat_template::ChatMessage;
use chorus_engine::engine::FinishReason;
use chorus_engine::sampler::SamplingParams;
use chorus_engine::serve::{EngineFailure, EngineHandle, LoopState, SeqEvent, SeqStream, ServeOptions, Usage};
use chorus_sched::{AdmitError, Tier};

use crate::common::{engine, shared_engine};

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_tokens, ..SamplingParams::default() }
}

fn start(opts: ServeOptions) -> EngineHandle {
    EngineHandle::start(shared_engine().clone(), opts).expect("engine loop starts")
}

/// The tests here share one engine and its compute threads; run one at a time so they do not
/// fight over two cores with spinning workers.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads a stream to its end: token ids, text, usage, and how many tokens the cache supplied.
pub(crate) fn collect(mut s: SeqStream) -> (Vec<u32>, String, Usage, FinishReason) {
    let mut ids = Vec::new();
    let mut text = String::new();
    loop {
        match s.blocking_next().expect("a final event arrives") {
            SeqEvent::Started { .. } => {}
            SeqEvent::Token { token, text: t, .. } => {
                ids.push(token);
                text.push_str(&t);
            }
            SeqEvent::Finished { reason, text: t, usage } => {
                text.push_str(&t);
                assert_eq!(usage.completion_tokens, ids.len());
                return (ids, text, usage, reason);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn chat(system: &str, user: &str) -> Vec<u32> {
    let msg = |role: &str, content: &str| ChatMessage { role: role.into(), content: content.into() };
    let msgs = [msg("system", system), msg("user", user)];
    engine().chat_prompt(&msgs).unwrap()
}

/// The output of `prompt` generated alone by a single-sequence session.
fn alone(prompt: &[u32], max_tokens: u32) -> Vec<u32> {
    let mut s = engine().session(2048).unwrap();
    s.generate(prompt, &greedy(max_tokens), &mut |_| {}).unwrap().token_ids
}

const QUESTIONS: [&str; 6] = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "List three prime numbers.",
    "Why is the sky blue?",
    "Name a famous painter.",
    "How do plants make food?",
];

#[test]
fn batched_output_equals_output_alone() {
    let _serial = serial();
    let h = start(ServeOptions::default());
    let prompts: Vec<Vec<u32>> = QUESTIONS.iter().map(|q| chat("You are a helpful assistant.", q)).collect();
    let streams: Vec<SeqStream> =
        prompts.iter().map(|p| h.submit(h.validate(p.clone(), greedy(24), Tier::Free, "t").unwrap())).collect();
    // Collect everything before running anything alone: the engine's compute threads serve
    // one caller at a time, and the engine loop is one.
    let outs: Vec<_> = streams.into_iter().map(collect).collect();
    for (p, (ids, text, usage, _)) in prompts.iter().zip(outs) {
        assert_eq!(ids, alone(p, 24), "batched output differs for a prompt of {} tokens", p.len());
        assert!(!text.is_empty());
        assert_eq!(usage.prompt_tokens, p.len());
    }
    let m = h.metrics();
    assert_eq!(m.ttft.0[Tier::Free.index()].count(), QUESTIONS.len() as u64);
    assert_eq!(m.kv_blocks_used, 0);
    let text = h.render_metrics();
    assert!(text.contains("chorus_ttft_seconds_count{model=\"model\",tier=\"free\"} 6"), "{text}");
}

fn long_system_prompt() -> String {
    (0..40).map(|i| format!("Rule {i}: answer politely, briefly and truthfully. ")).collect()
}

#[test]
fn cached_system_prompt_is_reported_and_changes_nothing() {
    let _serial = serial();
    let system = long_system_prompt();
    let first = chat(&system, QUESTIONS[0]);
    let second = chat(&system, QUESTIONS[1]);
    assert!(first.len() > 400);
    let run = |prefix_cache: bool| {
        let h = start(ServeOptions { prefix_cache, ..ServeOptions::default() });
        let a = collect(h.submit(h.validate(first.clone(), greedy(12), Tier::Plus, "tenant-a").unwrap()));
        let b = collect(h.submit(h.validate(second.clone(), greedy(12), Tier::Plus, "tenant-a").unwrap()));
        let c = collect(h.submit(h.validate(second.clone(), greedy(12), Tier::Plus, "tenant-b").unwrap()));
        (a, b, c, h.metrics())
    };
    let (a, b, c, m) = run(true);
    assert_eq!(a.2.cached_tokens, 0);
    let shared = first.iter().zip(&second).take_while(|(x, y)| x == y).count();
    assert_eq!(b.2.cached_tokens, shared / 16 * 16, "every full block of the shared prefix is reused");
    assert!(b.2.cached_tokens >= 400, "the system prompt is reused: {:?}", b.2);
    assert_eq!(c.2.cached_tokens, 0, "another tenant's salt finds nothing");
    assert!(m.sched.prefix_hit_tokens >= b.2.cached_tokens as u64);

    let (a2, b2, c2, _) = run(false);
    assert_eq!(b2.2.cached_tokens, 0);
    assert_eq!((&a.0, &b.0, &c.0), (&a2.0, &b2.0, &c2.0), "prefix cache changes no output");
    assert_eq!(b.0, alone(&second, 12));
}

#[test]
fn preempted_sequences_resume_with_the_same_output() {
    let _serial = serial();
    // 24 blocks of 16 = 384 tokens for six prompts of ~100 tokens that grow by up to 64: the
    // cache runs out while they decode. No prefix cache, so every sequence needs its own blocks.
    let h = start(ServeOptions { kv_tokens: 384, max_running: 6, prefix_cache: false, ..ServeOptions::default() });
    let system = long_system_prompt()[..300].to_string();
    let prompts: Vec<Vec<u32>> = QUESTIONS.iter().map(|q| chat(&system, q)).collect();
    assert!(prompts.iter().all(|p| p.len() > 60 && p.len() < 200));
    let streams: Vec<SeqStream> =
        prompts.iter().map(|p| h.submit(h.validate(p.clone(), greedy(64), Tier::Team, "t").unwrap())).collect();
    let outs: Vec<_> = streams.into_iter().map(collect).collect();
    let m = h.metrics();
    assert!(m.sched.preemptions > 0, "the small cache forces preemption: {:?}", m.sched);
    for (p, o) in prompts.iter().zip(outs) {
        assert_eq!(o.0, alone(p, 64), "output after preemption differs");
    }
    assert_eq!(m.kv_blocks_used, 0);
}

#[test]
fn rejections_and_cancellation() {
    let _serial = serial();
    let h = start(ServeOptions { kv_tokens: 256, ..ServeOptions::default() });
    let p = chat("Be brief.", QUESTIONS[3]);
    // Prompt + max_tokens over the cache: rejected at once, typed.
    let mut s = h.submit(h.validate(p.clone(), greedy(400), Tier::Free, "t").unwrap());
    match s.blocking_next() {
        Some(SeqEvent::Rejected(AdmitError::NeverFits { limit: 256, what: "KV cache", .. })) => {}
        other => panic!("expected a never-fits rejection, got {other:?}"),
    }
    assert!(h.validate(vec![], greedy(4), Tier::Free, "t").is_err());
    assert!(h.validate(vec![u32::MAX], greedy(4), Tier::Free, "t").is_err());

    // Cancel mid-decode by dropping the stream: the blocks come back.
    let mut s = h.submit(h.validate(p, greedy(200), Tier::Free, "t").unwrap());
    let mut tokens = 0;
    while tokens < 3 {
        if let Some(SeqEvent::Token { .. }) = s.blocking_next() {
            tokens += 1;
        }
    }
    assert!(h.metrics().kv_blocks_used > 0);
    drop(s);
    let mut freed = false;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(10));
        let m = h.metrics();
        if m.kv_blocks_used == 0 && m.running == 0 {
            freed = true;
            break;
        }
    }
    assert!(freed, "a cancelled sequence's blocks are released");
}

/// Reads a stream to its final event.
fn final_event(s: &mut SeqStream) -> SeqEvent {
    loop {
        match s.blocking_next().expect("a final event arrives") {
            SeqEvent::Started { .. } | SeqEvent::Token { .. } => {}
            other => return other,
        }
    }
}

#[test]
fn a_panic_in_a_step_fails_every_sequence_and_a_fresh_loop_serves_the_same_output() {
    let _serial = serial();
    let h = start(ServeOptions { kv_tokens: 1024, ..ServeOptions::default() });
    let p = chat("Be brief.", QUESTIONS[0]);
    let before = collect(h.submit(h.validate(p.clone(), greedy(24), Tier::Free, "t").unwrap())).0;
    // One sequence decoding, one waiting behind it (max_running 1 keeps it queued).
    let h2 = start(ServeOptions { kv_tokens: 1024, max_running: 1, ..ServeOptions::default() });
    let mut running = h2.submit(h2.validate(p.clone(), greedy(200), Tier::Free, "t").unwrap());
    while !matches!(running.blocking_next(), Some(SeqEvent::Token { .. })) {}
    let mut waiting = h2.submit(h2.validate(p.clone(), greedy(8), Tier::Free, "t").unwrap());
    // Armed only once the loop holds both, so the panic finds them in its tables.
    for _ in 0..500 {
        if h2.metrics().waiting[Tier::Free.index()] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h2.metrics().waiting[Tier::Free.index()], 1);
    h2.failpoints().panic_in_step(1);
    for s in [&mut running, &mut waiting] {
        match final_event(s) {
            SeqEvent::Failed(EngineFailure::Panicked(why)) => assert!(why.contains("failpoint engine_panic"), "{why}"),
            other => panic!("expected the panic to fail the sequence, got {other:?}"),
        }
        assert!(s.blocking_next().is_none(), "nothing follows the final event");
    }
    let health = h2.health();
    assert_eq!(health.restarts, 1);
    assert_eq!(health.last_failure.map(|f| f.failure.kind()), Some("panic"));
    // The restarted loop has a fresh cache (nothing held) and the same output as before.
    let after = collect(h2.submit(h2.validate(p, greedy(24), Tier::Free, "t").unwrap()));
    assert_eq!(after.0, before);
    assert_eq!(after.2.cached_tokens, 0, "the prefix cache went with the old loop");
    let m = h2.metrics();
    assert_eq!((m.restarts, m.up, m.kv_blocks_used, m.running), (1, true, 0, 0));
    assert_eq!(h2.health().state, LoopState::Running);
}

#[test]
fn a_stalled_step_is_busy_with_no_progress_then_carries_on() {
    let _serial = serial();
    let h = start(ServeOptions { kv_tokens: 1024, ..ServeOptions::default() });
    assert!(!h.health().busy, "an idle loop is not busy");
    h.failpoints().stall_next_step(Duration::from_millis(600));
    let steps = h.health().steps;
    let s = h.submit(h.validate(chat("Be brief.", QUESTIONS[2]), greedy(4), Tier::Free, "t").unwrap());
    for _ in 0..500 {
        if h.health().busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mid = h.health();
    assert!(mid.busy && mid.steps == steps, "stalled: busy and no step completed ({mid:?})");
    let (ids, ..) = collect(s);
    assert_eq!(ids.len(), 4);
    let end = h.health();
    assert!(end.steps > steps && end.restarts == 0, "{end:?}");
}
