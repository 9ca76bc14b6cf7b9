//! The model against llama.cpp on the same GGUF (`../shared/refs/smollm2_greedy.json`):
//! greedy continuations generated through the real sampler, and logprobs of those tokens.
//!
//! Two implementations that requantize activations to 8 bits before every matmul do not agree
//! bit for bit: a last-bit difference in one sum flips a rounding, and the flip propagates. On
//! these prompts our per-token logprobs differ from llama.cpp's by 0.02 on average; the bounds
//! below are what we hold ourselves to, and the figures are printed on every run.

use chorus_engine::chat_template::ChatMessage;
use chorus_engine::sampler::SamplingParams;

use crate::common::{engine, reference};

/// Greedy tokens must agree up to the first position where llama.cpp's own top-2 margin is
/// below this (short prompts / prompts over 60 tokens); from a near-tie on, either choice is
/// correct. On the 72-token prompt llama.cpp itself flips a token with margin 0.12 when only its
/// prompt batching changes (see the reference file's `llamacpp_self_sensitivity`).
const GREEDY_MARGIN_SHORT: f64 = 0.1;
const GREEDY_MARGIN_LONG: f64 = 0.3;
/// Logprob agreement on prompts of at most 60 tokens, and on longer ones.
const LOGPROB_TOL_SHORT: f64 = 0.2;
const LOGPROB_TOL_LONG: f64 = 0.3;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_and_logprobs_match_llama_cpp() {
    let e = engine();
    let refs = reference("smollm2_greedy.json");
    let mut failures = Vec::new();
    for case in refs["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let prompt = e.chat_prompt(&messages).unwrap();
        assert_eq!(prompt, ids(&case["prompt_token_ids"]), "{name}: prompt ids");
        let want = ids(&case["generated_token_ids"]);
        let params =
            SamplingParams { temperature: 0.0, max_tokens: want.len() as u32, top_logprobs: 3, ..Default::default() };
        let got = e.session(1024).unwrap().generate(&prompt, &params, &mut |_| {}).unwrap();
        let positions = case["positions"].as_array().unwrap();
        let short = prompt.len() <= 60;
        let tol = if short { LOGPROB_TOL_SHORT } else { LOGPROB_TOL_LONG };
        let margin = if short { GREEDY_MARGIN_SHORT } else { GREEDY_MARGIN_LONG };
        let (mut max_err, mut sum_err, mut n) = (0f64, 0f64, 0usize);
        // As the issue says: after llama.cpp's first near-tie (margin < 0.05) nothing more of the
        // case is compared; its logits there are as fragile as ours.
        let near_tie = positions.iter().position(|p| p["top1_margin"].as_f64().unwrap() < 0.05).unwrap_or(usize::MAX);
        for (i, pos) in positions.iter().enumerate().take(near_tie) {
            let Some(&ours) = got.token_ids.get(i) else { break };
            if ours != want[i] {
                // Only a divergence after a near-tie is allowed; past it nothing is compared.
                let first_fragile =
                    positions.iter().position(|p| p["top1_margin"].as_f64().unwrap() < margin).unwrap_or(usize::MAX);
                if i < first_fragile {
                    failures.push(format!("{name}: greedy token {i} is {ours}, llama.cpp {}", want[i]));
                }
                break;
            }
            let err = (f64::from(got.logprobs[i].logprob) - pos["logprob"].as_f64().unwrap()).abs();
            max_err = max_err.max(err);
            sum_err += err;
            n += 1;
            if err > tol {
                failures.push(format!("{name}: logprob at {i} differs by {err:.4} (bound {tol})"));
            }
        }
        eprintln!(
            "{name}: prompt {} tokens, {n} of {} positions compared, logprob |Δ| mean {:.4} max {max_err:.4}",
            prompt.len(),
            want.len(),
            sum_err / n.max(1) as f64
        );
        let text = e.tokenizer.decode(&want, true).unwrap();
        assert_eq!(text, case["generated_text"].as_str().unwrap(), "{name}: detokenized reference");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
