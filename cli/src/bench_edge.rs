//! `chorus bench edge`: what the edge adds, measured side by side with the core alone.
//!
//! A core (the real model) and an edge run in this process on loopback. For `--requests`
//! rounds, one streamed request goes straight to the core over QUIC (the edge's own client)
//! and one through the edge over HTTP (SSE, a kept-alive connection): filters, idempotency
//! bookkeeping, QUIC, SSE. TTFT is request written → first token read, on the same clock; the
//! edge's overhead is the difference. Then load shedding: a client whose rate limit is spent
//! hammers the edge from many connections, and every answer is the filter chain's 429; the
//! figure is those answers per second — from `wrk` when it is installed, and from a built-in
//! generator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chorus_edge::EdgeConfig;
use chorus_edge::config::ApiKey;
use chorus_edge::regions::CoreSite;
use chorus_proto::quic::CoreClient;
use chorus_proto::{Generate, Message, Reply, Role, Sampling, Tier};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bench_quic::bench_core_config;

#[derive(Args, Debug)]
pub struct EdgeBench {
    /// TTFT rounds (each: one request direct, one through the edge).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Seconds of load shedding.
    #[arg(long, default_value_t = 5)]
    shed_secs: u64,
    /// Connections hammering the edge while shedding.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Engine compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = chorus_engine::model_store::DEFAULT_MODEL)]
    model: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

const KEY: &str = "sk-bench-0123456789abcdef";
const SHED_KEY: &str = "sk-bench-abusive-0123456789";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * p).round() as usize] }
}

fn prompt(i: usize) -> String {
    format!("Reply with one word. Round {i}.")
}

/// One streamed request straight to the core: TTFT in ms.
async fn direct(client: &CoreClient, i: usize) -> Result<f64> {
    let g = Generate {
        request_id: format!("direct-{i}"),
        tenant: "bench".into(),
        user: "bench".into(),
        tier: Tier::Enterprise,
        messages: vec![Message { role: Role::User, content: prompt(i) }],
        sampling: Sampling { temperature: Some(0.0), ..Sampling::default() },
        max_tokens: 2,
        ..Generate::default()
    };
    let t = Instant::now();
    let mut s = client.generate(g).await?;
    let mut ttft = None;
    while let Some(r) = s.next().await? {
        match r {
            Reply::Token(_) if ttft.is_none() => ttft = Some(t.elapsed().as_secs_f64() * 1e3),
            Reply::Error(e) => bail!("direct: {} {}", e.code, e.message),
            Reply::Done(_) => break,
            _ => {}
        }
    }
    ttft.context("no token")
}

/// One streamed request through the edge on a kept-alive connection: TTFT in ms.
async fn through_edge(conn: &mut TcpStream, addr: SocketAddr, i: usize) -> Result<f64> {
    let body = serde_json::json!({
        "model": "chorus", "stream": true, "temperature": 0, "max_tokens": 2,
        "messages": [{"role": "user", "content": prompt(i)}],
    })
    .to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let t = Instant::now();
    conn.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut ttft = None;
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            bail!("the edge closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if ttft.is_none() && buf.windows(6).any(|w| w == b"data: ") {
            ttft = Some(t.elapsed().as_secs_f64() * 1e3);
        }
        if buf.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        bail!("edge: {}", String::from_utf8_lossy(&buf[..buf.len().min(300)]));
    }
    ttft.context("no token")
}

/// The built-in load generator: kept-alive connections, each sending the next request as soon
/// as the previous answer is read. Returns (answers, 429s).
async fn shed(addr: SocketAddr, connections: usize, secs: u64) -> Result<(u64, u64)> {
    let total = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let body = r#"{"model":"chorus","messages":[{"role":"user","content":"hi"}]}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {SHED_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (total, limited, req) = (total.clone(), limited.clone(), req.clone());
            tokio::spawn(async move {
                let mut conn = TcpStream::connect(addr).await?;
                conn.set_nodelay(true)?;
                let mut buf = vec![0u8; 16 * 1024];
                while Instant::now() < deadline {
                    conn.write_all(req.as_bytes()).await?;
                    // Each answer is a small JSON body with a Content-Length.
                    let mut got = Vec::new();
                    loop {
                        let n = conn.read(&mut buf).await?;
                        if n == 0 {
                            bail!("closed");
                        }
                        got.extend_from_slice(&buf[..n]);
                        if let Some(end) = complete(&got) {
                            if got.starts_with(b"HTTP/1.1 429") {
                                limited.fetch_add(1, Ordering::Relaxed);
                            }
                            total.fetch_add(1, Ordering::Relaxed);
                            got.drain(..end);
                            break;
                        }
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok((total.load(Ordering::Relaxed), limited.load(Ordering::Relaxed)))
}

/// The length of the first complete response in `b` (Content-Length bodies only).
fn complete(b: &[u8]) -> Option<usize> {
    let head = b.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&b[..head]).to_ascii_lowercase();
    let len: usize =
        text.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok())?;
    (b.len() >= head + 4 + len).then_some(head + 4 + len)
}

/// Runs `wrk` against the edge when it is installed: (requests/s, non-2xx answers, total).
fn wrk(addr: SocketAddr, connections: usize, secs: u64) -> Option<(f64, u64, u64)> {
    let script = std::env::temp_dir().join(format!("chorus-bench-wrk-{}.lua", std::process::id()));
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = '{{\"model\":\"chorus\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {SHED_KEY}\"\n"
    );
    std::fs::write(&script, lua).ok()?;
    let out = std::process::Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string(), "-d", &format!("{secs}s"), "-s"])
        .arg(&script)
        .arg(format!("http://{addr}/v1/chat/completions"))
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok())?;
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let total = text.lines().find_map(|l| l.split(" requests in ").next()?.trim().parse().ok()).unwrap_or(0);
    Some((rps, non2xx, total))
}

pub fn run(b: &EdgeBench) -> Result<()> {
    if b.requests == 0 || b.connections == 0 {
        bail!("--requests and --connections must be at least 1");
    }
    let (cfg, scratch) = bench_core_config("edge", b.threads, &b.model, 8)?;
    let fleets = chorus_core::fleet::start_fleets(
        &cfg,
        &mut chorus_core::fleet::load_engines(cfg.threads, cfg.compute_priority, cfg.device),
    )?;
    let pki = chorus_proto::tls::mint_dev("bench CA", &["localhost".into()])?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        let store = chorus_core::open_store(&cfg).await?;
        let core = chorus_core::Core::new(cfg, fleets, store);
        let running = chorus_core::serve(core, &pki.core_identity()?).await?;
        let mut ecfg = EdgeConfig {
            listen: "127.0.0.1:0".parse()?,
            cores: vec![CoreSite {
                name: "core-1".into(),
                quic: running.quic_addr,
                ops: Some(running.http_addr),
                server_name: "localhost".into(),
            }],
            ..EdgeConfig::default()
        };
        let key = |k: &str, user: &str, tier: &str| ApiKey {
            sha256: None,
            key: Some(k.into()),
            tenant: "bench".into(),
            user: user.into(),
            tier: tier.into(),
        };
        ecfg.filters.api_keys = vec![key(KEY, "bench", "enterprise"), key(SHED_KEY, "abuser", "free")];
        ecfg.filters.config.insert(
            "ratelimit".into(),
            [("burst.enterprise".to_string(), "unlimited".to_string()), ("burst.free".to_string(), "1/1h".to_string())]
                .into(),
        );
        let edge = chorus_edge::serve(ecfg, pki.edge_identity()?).await?;
        anyhow::ensure!(edge.state.pool.wait_healthy(Duration::from_secs(10)).await, "the edge reaches the core");
        let client = CoreClient::connect(running.quic_addr, "localhost", &pki.edge_identity()?).await?;
        let mut conn = TcpStream::connect(edge.addr).await?;
        conn.set_nodelay(true)?;
        for i in 0..10 {
            direct(&client, 1_000_000 + i).await?;
            through_edge(&mut conn, edge.addr, 2_000_000 + i).await?;
        }
        let (mut d, mut e, mut diff) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..b.requests {
            // Alternate which goes first; both see the same prompt (and the same cached prefix).
            let (a, c) = if i % 2 == 0 {
                let a = direct(&client, i).await?;
                (a, through_edge(&mut conn, edge.addr, i).await?)
            } else {
                let c = through_edge(&mut conn, edge.addr, i).await?;
                (direct(&client, i).await?, c)
            };
            d.push(a);
            e.push(c);
            diff.push(c - a);
        }
        // Spend the abusive key's allowance (one request an hour), then shed.
        let spend = r#"{"model":"chorus","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
        let mut c = TcpStream::connect(edge.addr).await?;
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {SHED_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{spend}",
            edge.addr,
            spend.len()
        );
        c.write_all(req.as_bytes()).await?;
        let mut sink = Vec::new();
        c.read_to_end(&mut sink).await?;
        anyhow::ensure!(sink.starts_with(b"HTTP/1.1 200"), "the first request is admitted");
        let (total, limited) = shed(edge.addr, b.connections, b.shed_secs).await?;
        let wrk = wrk(edge.addr, b.connections, b.shed_secs);
        edge.stop().await;
        running.drain(Duration::from_secs(1)).await;
        anyhow::Ok((d, e, diff, total, limited, wrk))
    });
    let _ = std::fs::remove_file(&scratch);
    let (mut d, mut e, mut diff, total, limited, wrk) = result?;
    let secs = b.shed_secs as f64;
    let (d50, d99) = (pct(&mut d, 0.5), pct(&mut d, 0.99));
    let (e50, e99) = (pct(&mut e, 0.5), pct(&mut e, 0.99));
    let (x50, x90) = (pct(&mut diff, 0.5), pct(&mut diff, 0.9));
    let builtin_rps = limited as f64 / secs;
    if b.json {
        let wrk_json =
            wrk.map(|(rps, non2xx, total)| serde_json::json!({"rps": rps, "non_2xx": non2xx, "requests": total}));
        println!(
            "{}",
            serde_json::json!({
                "requests": b.requests,
                "ttft_ms": {"direct": {"p50": d50, "p99": d99}, "edge": {"p50": e50, "p99": e99}},
                "edge_overhead_ms": {"p50_of_differences": x50, "p90_of_differences": x90, "difference_of_p50": e50 - d50},
                "shedding": {"connections": b.connections, "seconds": secs, "answers": total, "rate_limited": limited,
                             "builtin_rps": builtin_rps, "wrk": wrk_json},
            })
        );
    } else {
        println!("TTFT over {} rounds (request written → first token read, ms):", b.requests);
        println!("  straight to the core (QUIC) p50 {d50:.2} · p99 {d99:.2}");
        println!("  through the edge (HTTP/SSE) p50 {e50:.2} · p99 {e99:.2}");
        println!(
            "  edge overhead: p50 of per-round differences {x50:.2} ms (p90 {x90:.2}); difference of p50s {:.2} ms",
            e50 - d50
        );
        println!(
            "load shedding, {} connections for {secs:.0} s (built-in generator): {builtin_rps:.0} rate-limited answers/s ({limited} of {total})",
            b.connections
        );
        match wrk {
            Some((rps, non2xx, total)) => {
                println!("  wrk -t2 -c{}: {rps:.0} requests/s ({non2xx} of {total} were non-2xx)", b.connections)
            }
            None => println!("  (wrk is not installed: `apt-get install wrk` for a second opinion)"),
        }
    }
    Ok(())
}
