//! The step API's batching must not change results: a sequence computes the same logits
//! whether its prompt runs in one step or in chunks, alone or beside other sequences.

use chorus_engine::kernels::Isa;
use chorus_engine::kv::{BlockAllocator, KvCache};
use chorus_engine::model::{LogitsFor, Model, Scratch, SeqStep};
use chorus_engine::threadpool::ThreadPool;

use crate::common::{engine, gemma};

fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 7919 + seed * 104729) % 49000 + 17).collect()
}

/// Logits for the last token of `tokens`, fed in chunks of `chunk` tokens.
fn chunked(isa: Isa, tokens: &[u32], chunk: usize) -> Vec<f32> {
    chunked_on(&engine().model, isa, tokens, chunk)
}

fn chunked_on(m: &Model, isa: Isa, tokens: &[u32], chunk: usize) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let mut kv = KvCache::new(m.cfg.n_layers, m.cfg.n_kv_heads, m.cfg.head_dim, 16, 16).unwrap();
    let mut alloc = BlockAllocator::new(16, 16);
    let mut table = Vec::new();
    assert!(alloc.ensure(&mut table, tokens.len()));
    let (mut scratch, mut logits) = (Scratch::default(), Vec::new());
    for (i, c) in tokens.chunks(chunk).enumerate() {
        let step = SeqStep { tokens: c, pos: i * chunk, blocks: &table, logits: LogitsFor::Last };
        m.forward(&pool, isa, &mut kv, &[step], &mut scratch, &mut logits).unwrap();
    }
    logits
}

#[test]
fn chunked_prefill_equals_one_step() {
    let p = prompt(1, 40);
    let whole = chunked(Isa::detect(), &p, 40);
    assert_eq!(whole, chunked(Isa::detect(), &p, 1), "token by token");
    assert_eq!(whole, chunked(Isa::detect(), &p, 7), "chunks of 7");
}

#[test]
fn batched_sequences_equal_sequences_alone() {
    batched_equals_alone(&engine().model);
}

#[test]
fn gemma_batched_and_chunked_equal_alone() {
    let m = &gemma().model;
    batched_equals_alone(m);
    let p = prompt(3, 40);
    let whole = chunked_on(m, Isa::detect(), &p, 40);
    assert_eq!(whole, chunked_on(m, Isa::detect(), &p, 7), "chunks of 7");
}

fn batched_equals_alone(m: &Model) {
    let pool = ThreadPool::new(2);
    let prompts: Vec<Vec<u32>> = (0..5).map(|s| prompt(s, 5 + 9 * s as usize)).collect();
    let alone: Vec<Vec<f32>> = prompts.iter().map(|p| chunked_on(m, Isa::detect(), p, p.len())).collect();
    let mut kv = KvCache::new(m.cfg.n_layers, m.cfg.n_kv_heads, m.cfg.head_dim, 16, 32).unwrap();
    let mut alloc = BlockAllocator::new(32, 16);
    let tables: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut t = Vec::new();
            assert!(alloc.ensure(&mut t, p.len()));
            t
        })
        .collect();
    // Mixed step: three sequences prefill, then all decode their last token together.
    let steps: Vec<SeqStep<'_>> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| SeqStep { tokens: &p[..p.len() - 1], pos: 0, blocks: t, logits: LogitsFor::None })
        .collect();
    let (mut scratch, mut logits) = (Scratch::default(), Vec::new());
    m.forward(&pool, Isa::detect(), &mut kv, &steps, &mut scratch, &mut logits).unwrap();
    assert!(logits.is_empty());
    let steps: Vec<SeqStep<'_>> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| SeqStep { tokens: &p[p.len() - 1..], pos: p.len() - 1, blocks: t, logits: LogitsFor::Last })
        .collect();
    m.forward(&pool, Isa::detect(), &mut kv, &steps, &mut scratch, &mut logits).unwrap();
    for (i, want) in alone.iter().enumerate() {
        assert_eq!(&logits[i * m.cfg.vocab..][..m.cfg.vocab], &want[..], "sequence {i}");
    }
}

/// The scalar path is the reference for the SIMD kernels; on the whole model the two differ
/// only by activation-rounding noise, so they must agree on the clear choices.
#[test]
fn scalar_and_simd_agree_on_the_real_model() {
    let e = engine();
    let msgs = [chorus_engine::chat_template::ChatMessage {
        role: "user".into(),
        content: "What is the capital of Australia?".into(),
    }];
    let p = e.chat_prompt(&msgs).unwrap();
    let lp = |v: &[f32]| {
        let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = v.iter().map(|x| (x - m).exp()).sum();
        let top = v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        (top, -z.ln())
    };
    let (t_simd, l_simd) = lp(&chunked(Isa::detect(), &p, p.len()));
    let (t_scalar, l_scalar) = lp(&chunked(Isa::Scalar, &p, p.len()));
    assert_eq!(t_simd, t_scalar);
    assert!((l_simd - l_scalar).abs() < 0.05, "top-1 logprob {l_simd} vs {l_scalar}");
}
