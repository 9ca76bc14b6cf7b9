//! The model against llama.cpp's greedy continuations and logprobs on the same GGUF.

use chorus_engine::kernels::Isa;
use chorus_engine::kv::{BlockAllocator, KvCache};
use chorus_engine::model::{LogitsFor, Scratch, SeqStep};
use chorus_engine::threadpool::ThreadPool;

use crate::common::{fixture, reference};

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// Teacher-forced run: prompt in one step, then the reference tokens one by one. Returns the
/// logprob rows for each generated position.
fn teacher_forced(isa: Isa, prompt: &[u32], generated: &[u32]) -> Vec<Vec<f64>> {
    let f = fixture();
    let m = &f.model;
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(m.cfg.n_layers, m.cfg.n_kv_heads, m.cfg.head_dim, 16, 64).unwrap();
    let mut alloc = BlockAllocator::new(64, 16);
    let mut table = Vec::new();
    let mut scratch = Scratch::default();
    let mut logits = Vec::new();
    let mut rows = Vec::new();
    assert!(alloc.ensure(&mut table, prompt.len() + generated.len()));
    let step = SeqStep { tokens: prompt, pos: 0, blocks: &table, logits: LogitsFor::Last };
    m.forward(&pool, isa, &mut kv, &[step], &mut scratch, &mut logits).unwrap();
    rows.push(log_softmax(&logits));
    for (i, tok) in generated.iter().enumerate().take(generated.len().saturating_sub(1)) {
        let step = SeqStep {
            tokens: std::slice::from_ref(tok),
            pos: prompt.len() + i,
            blocks: &table,
            logits: LogitsFor::Last,
        };
        m.forward(&pool, isa, &mut kv, &[step], &mut scratch, &mut logits).unwrap();
        rows.push(log_softmax(&logits));
    }
    rows
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn greedy_and_logprobs_match_llama_cpp() {
    let refs = reference("smollm2_greedy.json");
    for case in refs["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_token_ids"]);
        let generated = ids(&case["generated_token_ids"]);
        let tol = if prompt.len() <= 60 { 0.05 } else { 0.3 };
        let stop_at =
            case["first_position_with_top1_margin_below_0.05"].as_u64().map(|v| v as usize).unwrap_or(usize::MAX);
        let isa = if std::env::var_os("CHORUS_REF_SCALAR").is_some() { Isa::Scalar } else { Isa::detect() };
        let rows = teacher_forced(isa, &prompt, &generated);
        for (i, (row, pos)) in rows.iter().zip(case["positions"].as_array().unwrap()).enumerate() {
            let want = pos["token_id"].as_u64().unwrap() as usize;
            let lp = row[want];
            let ref_lp = pos["logprob"].as_f64().unwrap();
            if std::env::var_os("CHORUS_REF_VERBOSE").is_some() {
                eprintln!("{name} {i}: {lp:.4} vs {ref_lp:.4} (margin {})", pos["top1_margin"]);
            }
            assert!(
                std::env::var_os("CHORUS_REF_VERBOSE").is_some() || (lp - ref_lp).abs() <= tol,
                "{name} position {i}: logprob {lp:.4} vs llama.cpp {ref_lp:.4}"
            );
            let argmax = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            if i < stop_at && std::env::var_os("CHORUS_REF_VERBOSE").is_none() {
                assert_eq!(argmax, want, "{name} position {i}: greedy token differs");
            }
        }
    }
}
