//! `chorus bench engine`: throughput of the engine on its device (`--device cpu|cuda:N|auto`), measured the way llama-bench and
//! llama-batched-bench measure llama.cpp, so the figures can be set side by side.
//!
//! - `ppN`: N prompt tokens of one sequence in one step, from an empty cache (llama-bench `-p N`).
//! - `tg128`: 128 single-token decode steps of one sequence from an empty cache (`-n 128`).
//! - batched decode with B sequences: each sequence first gets a prompt (untimed), then B tokens
//!   are decoded per step for `--gen-tokens` steps; the figure is B × steps / time
//!   (llama-batched-bench's S_TG).
//!
//! With `--concurrency`, the serving benchmark in [`crate::bench_serve`] runs instead.

use std::time::Instant;

use anyhow::{Result, bail};
use chorus_engine::engine::{BLOCK_SIZE, Engine};
use chorus_engine::exec::{Executor, KvPlan};
use chorus_engine::kv::BlockAllocator;
use chorus_engine::model::{LogitsFor, MAX_STEP_TOKENS, SeqStep};
use clap::Args;

use crate::ModelArgs;
use crate::synthetic::tokens;

/// Flags of `chorus bench engine`.
#[derive(Args, Debug)]
pub struct EngineBench {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Prompt tokens per sequence before batched decoding (llama-batched-bench -npp).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Decode steps (tg and batched; llama-bench -n, llama-batched-bench -ntg).
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Batch sizes for batched decode.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16,32")]
    batch: Vec<usize>,
    /// Serving benchmark through the engine loop (runs instead of the kernel figures when
    /// `--concurrency` is given).
    #[command(flatten)]
    serve: crate::bench_serve::ServeBench,
}

struct Bench<'e> {
    e: &'e Engine,
    exec: Executor,
    alloc: BlockAllocator,
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

impl Bench<'_> {
    fn tables(&mut self, n: usize, len: usize) -> Result<Vec<Vec<u32>>> {
        (0..n)
            .map(|_| {
                let mut t = Vec::new();
                if !self.alloc.ensure(&mut t, len) {
                    bail!("KV cache too small for {n} sequences of {len} tokens");
                }
                Ok(t)
            })
            .collect()
    }

    fn release(&mut self, tables: Vec<Vec<u32>>) {
        for mut t in tables {
            self.alloc.release(&mut t);
        }
    }

    fn step(&mut self, steps: &[SeqStep<'_>]) -> Result<()> {
        // Greedy on the device where there is one: only ids come back, as in serving.
        self.exec.forward(self.e, steps, &|_| false)?;
        Ok(())
    }

    /// The greedy choice of sampled row `i` of the last step.
    fn next_token(&self, i: usize) -> u32 {
        let r = self.exec.row(i);
        match (r.greedy, r.logits) {
            (Some((id, _)), _) => id,
            (None, Some(l)) => argmax(l),
            (None, None) => 0,
        }
    }

    /// Seconds to prefill `n` tokens.
    fn prefill(&mut self, n: usize) -> Result<f64> {
        let tables = self.tables(1, n)?;
        let toks = tokens(n, 1, self.e.model.cfg.vocab);
        let t0 = Instant::now();
        self.step(&[SeqStep { tokens: &toks, pos: 0, blocks: &tables[0], logits: LogitsFor::Last }])?;
        let dt = t0.elapsed().as_secs_f64();
        self.release(tables);
        Ok(dt)
    }

    /// Seconds to decode `steps` tokens for each of `b` sequences after a `prompt`-token prefill.
    fn decode(&mut self, b: usize, prompt: usize, steps: usize) -> Result<f64> {
        let tables = self.tables(b, prompt + steps)?;
        let vocab = self.e.model.cfg.vocab;
        let mut next: Vec<u32> = Vec::with_capacity(b);
        if b > MAX_STEP_TOKENS {
            bail!("batch of {b} is above the engine's {MAX_STEP_TOKENS} tokens per step");
        }
        if prompt > 0 {
            for (i, t) in tables.iter().enumerate() {
                let toks = tokens(prompt, i + 2, vocab);
                self.step(&[SeqStep { tokens: &toks, pos: 0, blocks: t, logits: LogitsFor::Last }])?;
                next.push(self.next_token(0));
            }
        } else {
            next = (0..b).map(|i| tokens(1, i + 2, vocab)[0]).collect();
        }
        let t0 = Instant::now();
        for s in 0..steps {
            let cur = next.clone();
            let batch: Vec<SeqStep<'_>> = tables
                .iter()
                .zip(&cur)
                .map(|(t, tok)| SeqStep {
                    tokens: std::slice::from_ref(tok),
                    pos: prompt + s,
                    blocks: t,
                    logits: LogitsFor::Last,
                })
                .collect();
            self.step(&batch)?;
            for (i, n) in next.iter_mut().enumerate() {
                *n = self.next_token(i);
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        self.release(tables);
        Ok(dt)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the engine benchmark and prints the figures.
pub fn engine(args: &EngineBench) -> Result<()> {
    let e = args.model.load()?;
    if !args.serve.concurrency.is_empty() {
        return crate::bench_serve::run(e, args.prompt_tokens, args.gen_tokens, args.json, &args.serve);
    }
    let c = &e.model.cfg;
    let max_batch = args.batch.iter().copied().max().unwrap_or(1);
    let per_seq = (args.prompt_tokens + args.gen_tokens).max(512).div_ceil(BLOCK_SIZE);
    let blocks = per_seq * max_batch.max(1) + per_seq;
    let plan = KvPlan {
        block_size: BLOCK_SIZE,
        max_blocks: blocks,
        max_step_tokens: max_batch.max(512),
        gpu_memory_fraction: 0.9,
    };
    let exec = Executor::new(&e, plan)?;
    if exec.num_blocks() < blocks {
        bail!("the device holds {} KV blocks; this run needs {blocks}", exec.num_blocks());
    }
    let device = exec.describe(&e);
    let mut b = Bench { e: &e, exec, alloc: BlockAllocator::new(blocks, BLOCK_SIZE) };
    let reps = args.reps.max(1);
    // One untimed pass faults the weights in and sizes the buffers.
    b.prefill(64)?;
    let pp = |b: &mut Bench<'_>, n: usize| -> Result<f64> {
        Ok(n as f64 / median((0..reps).map(|_| b.prefill(n)).collect::<Result<_>>()?))
    };
    let pp128 = pp(&mut b, 128)?;
    let pp512 = pp(&mut b, 512)?;
    let g = args.gen_tokens;
    let tg = g as f64 / median((0..reps).map(|_| b.decode(1, 0, g)).collect::<Result<_>>()?);
    let mut batched = Vec::new();
    for &n in &args.batch {
        let dt = b.decode(n, args.prompt_tokens, g)?;
        batched.push((n, (n * g) as f64 / dt));
    }
    if args.json {
        let bd: serde_json::Map<String, serde_json::Value> =
            batched.iter().map(|(n, v)| (n.to_string(), serde_json::json!(round2(*v)))).collect();
        println!(
            "{}",
            serde_json::json!({
                "device": device,
                "pp128": round2(pp128),
                "pp512": round2(pp512),
                format!("tg{g}"): round2(tg),
                "batched_decode": bd,
            })
        );
    } else {
        println!("model: {} layers, dim {}, vocab {}; device {device}", c.n_layers, c.dim, c.vocab);
        println!("{:<28} {:>10}", "test", "tok/s");
        println!("{:<28} {:>10.1}", "pp128", pp128);
        println!("{:<28} {:>10.1}", "pp512", pp512);
        println!("{:<28} {:>10.1}", format!("tg{g}"), tg);
        for (n, v) in &batched {
            println!("{:<28} {:>10.1}", format!("batched decode x{n} (npp {})", args.prompt_tokens), v);
        }
    }
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
