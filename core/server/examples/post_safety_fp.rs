//! False positives of the post-generation safety gate on answers to benign prompts:
//! `cargo run --release -p chorus-core --example post_safety_fp [PROMPTS] [MAX_TOKENS]`.
//!
//! Each prompt of `bench/data/benign_chat_500.txt` (one per line) is answered by the real model
//! with sampling (temperature 1, a fixed seed per prompt, as users get), the answer is fed to the
//! default post-safety gate piece by piece as it streams, and every answer the gate would cut is
//! printed with its rule. A benchmark, not a test: it prints the count.

use std::path::Path;

use chorus_core::config::PostSafetyConfig;
use chorus_core::safety::Policy;
use chorus_engine::chat_template::ChatMessage;
use chorus_engine::engine::{Engine, EngineOptions};
use chorus_engine::sampler::SamplingParams;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/data/benign_chat_500.txt");
    let prompts = std::fs::read_to_string(args.next().map(Into::into).unwrap_or(default))?;
    let max_tokens: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(128);
    let path = chorus_engine::model_store::ensure(chorus_engine::model_store::DEFAULT_MODEL, &mut |_| {})?;
    let engine = Engine::load(&path, &EngineOptions::default())?;
    let policy = Policy::new(&PostSafetyConfig::default());
    let mut session = engine.session(2048)?;
    let (mut total, mut flagged) = (0usize, 0usize);
    for (i, prompt) in prompts.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let ids = engine.chat_prompt(&[ChatMessage { role: "user".into(), content: prompt.into() }])?;
        let params = SamplingParams { temperature: 1.0, seed: Some(i as u64), max_tokens, ..Default::default() };
        let mut gate = policy.gate();
        let mut hit = None;
        let g = session.generate(&ids, &params, &mut |piece| {
            if hit.is_none() {
                hit = gate.push(piece);
            }
        })?;
        total += 1;
        if let Some(v) = hit {
            flagged += 1;
            println!("FLAGGED [{} / {}] {prompt:?}\n    answer: {:?}", v.category, v.rule, g.text);
        }
    }
    println!(
        "post-safety: {flagged} of {total} answers to benign prompts flagged ({:.1}%)",
        100.0 * flagged as f64 / total.max(1) as f64
    );
    Ok(())
}
