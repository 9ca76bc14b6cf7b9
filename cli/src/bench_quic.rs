//! `chorus bench quic`: what the edge ↔ core hop adds per token. A core runs in this process on
//! loopback with the real model; a client opens N concurrent streams over one QUIC connection
//! (mutual TLS) and, for every token, subtracts the instant the engine emitted it (carried in
//! the `Token` frame) from the instant the client decoded it. Same host, same clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use chorus_core::config::CoreConfig;
use chorus_proto::quic::CoreClient;
use chorus_proto::{Generate, Message, Reply, Role, Sampling, Tier};
use clap::Args;

#[derive(Args, Debug)]
pub struct QuicBench {
    /// Concurrent streams on one connection.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// Tokens to measure in all (split evenly over the streams).
    #[arg(long, default_value_t = 10_000)]
    tokens: usize,
    /// Engine compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// A local GGUF file or a known model name.
    #[arg(long, default_value = chorus_engine::model_store::DEFAULT_MODEL)]
    model: String,
    /// Turn the post-generation safety gate off (to see its share of the cost).
    #[arg(long)]
    no_post_safety: bool,
    /// Run the compute threads under Linux SCHED_IDLE (`compute_priority = "background"`).
    #[arg(long)]
    background_compute: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub fn run(b: &QuicBench) -> Result<()> {
    if b.streams == 0 || b.tokens < b.streams {
        bail!("--streams must be at least 1 and --tokens at least --streams");
    }
    if std::env::var_os("RUST_LOG").is_some() {
        chorus_process::init_logging(chorus_process::LogFormat::Text);
    }
    let (mut cfg, scratch) = bench_core_config("quic", b.threads, &b.model, b.streams)?;
    cfg.post_safety.enabled = !b.no_post_safety;
    if b.background_compute {
        cfg.compute_priority = chorus_engine::threadpool::ComputePriority::Background;
    }
    let fleets = chorus_core::fleet::start_fleets(
        &cfg,
        &mut chorus_core::fleet::load_engines(cfg.threads, cfg.compute_priority, cfg.device),
    )?;
    let pki = chorus_core::tls::mint_dev("bench CA", &["localhost".into()])?;
    let per_stream = b.tokens.div_ceil(b.streams) as u32;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        let store = chorus_core::open_store(&cfg).await?;
        let core = chorus_core::Core::new(cfg, fleets, store);
        let running = chorus_core::serve(core, &pki.core_identity()?).await?;
        let client = Arc::new(CoreClient::connect(running.quic_addr, "localhost", &pki.edge_identity()?).await?);
        let start = Instant::now();
        let tasks: Vec<_> = (0..b.streams)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let g = Generate {
                        request_id: format!("bench-{i}"),
                        tenant: "bench".into(),
                        user: format!("u{i}"),
                        tier: Tier::Plus,
                        conversation: chorus_proto::ConversationRef::Stateless,
                        messages: vec![Message {
                            role: Role::User,
                            content: format!("Write a long story about robot number {i}."),
                        }],
                        sampling: Sampling {
                            temperature: Some(0.8),
                            seed: Some(i as u64),
                            ignore_eos: true,
                            ..Sampling::default()
                        },
                        max_tokens: per_stream,
                        stop: vec![],
                        deadline_ms: None,
                        trace: None,
                        echo_prompt: false,
                        constraint: None,
                        tools: Vec::new(),
                        tool_choice: chorus_proto::ToolChoice::None,
                        parallel_tool_calls: false,
                        prompt: None,
                        n: 1,
                    };
                    let mut s = client.generate(g).await?;
                    let mut lat = Vec::with_capacity(per_stream as usize);
                    while let Some(r) = s.next().await? {
                        match r {
                            Reply::Token(t) if !t.ids.is_empty() => lat.push(now_us().saturating_sub(t.emitted_us)),
                            Reply::Error(e) => bail!("stream {i}: {} {}", e.code, e.message),
                            Reply::Done(d) => {
                                return anyhow::Ok((
                                    lat,
                                    format!(
                                        "{}{}",
                                        d.finish_reason.as_str(),
                                        d.filter_category.map(|c| format!(": {c}")).unwrap_or_default()
                                    ),
                                ));
                            }
                            _ => {}
                        }
                    }
                    bail!("stream {i} ended without Done")
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let (lat, reason) = t.await??;
            all.extend(lat);
            if reason != "length" {
                eprintln!("note: a stream ended early ({reason})");
            }
        }
        let wall = start.elapsed();
        running.drain(Duration::from_secs(1)).await;
        anyhow::Ok((all, wall))
    });
    let _ = std::fs::remove_file(&scratch);
    let (mut lat_us, wall) = result?;
    lat_us.sort_unstable();
    let pct = |p: f64| lat_us[((lat_us.len() - 1) as f64 * p).round() as usize];
    let (p50, p90, p99, max) = (pct(0.5), pct(0.9), pct(0.99), *lat_us.last().unwrap_or(&0));
    let rate = lat_us.len() as f64 / wall.as_secs_f64();
    if b.json {
        println!(
            "{{\"streams\":{},\"tokens\":{},\"hop_us\":{{\"p50\":{p50},\"p90\":{p90},\"p99\":{p99},\"max\":{max}}},\"tokens_per_s\":{rate:.1}}}",
            b.streams,
            lat_us.len()
        );
    } else {
        println!(
            "engine emit → client decode, {} tokens over {} streams on one QUIC connection:",
            lat_us.len(),
            b.streams
        );
        println!("  p50 {p50} µs · p90 {p90} µs · p99 {p99} µs · max {max} µs   ({rate:.0} tok/s aggregate)");
    }
    Ok(())
}

/// A core for benchmarks: one `mini` fleet serving every tier on `model`, room for `running`
/// sequences, free ports, and a scratch store file (returned, to remove afterwards).
pub fn bench_core_config(
    tag: &str,
    threads: Option<usize>,
    model: &str,
    running: usize,
) -> Result<(CoreConfig, std::path::PathBuf)> {
    let mut cfg = CoreConfig {
        listen: "127.0.0.1:0".parse()?,
        http: "127.0.0.1:0".parse()?,
        threads: threads.unwrap_or(CoreConfig::default().threads),
        ..CoreConfig::default()
    };
    cfg.fleets.retain(|name, _| name == "mini");
    for r in cfg.router.routes.values_mut() {
        *r = "mini".into();
    }
    cfg.router.downgrade.clear();
    cfg.router.degrade_at.retain(|f, _| f == "mini");
    cfg.router.reject_at.retain(|f, _| f == "mini");
    let mini = cfg.fleets.get_mut("mini").context("mini fleet")?;
    mini.model = model.to_owned();
    mini.max_running = running.max(mini.max_running);
    let scratch = std::env::temp_dir().join(format!("chorus-bench-{tag}-{}.redb", std::process::id()));
    cfg.store.path = Some(scratch.clone());
    cfg.validate()?;
    Ok((cfg, scratch))
}
