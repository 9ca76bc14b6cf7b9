//! `chorus up`: the whole system on this machine with one command — a core (the pulled model,
//! the embedded conversation store) and an edge (the shipped signed filters, in-process state,
//! development certificates, the web chat), and a demo API key. `--redis URL` moves the edge's
//! state, the filters' counters and the core's hot tier to Redis; `--regions FILE` starts every
//! core and edge a region file describes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chorus_core::config::{CoreConfig, HotKind};
use chorus_edge::EdgeConfig;
use chorus_edge::config::ApiKey;
use chorus_edge::regions::{CoreSite, RegionFile};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the edge (API and web chat) listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Keep the edge's state, the filters' counters and the core's hot tier in this Redis.
    #[arg(long)]
    pub redis: Option<String>,
    /// Keep conversations in this PostgreSQL (a libpq-style string) instead of an embedded
    /// file per core; with `--regions`, every region's cores share it, so a conversation
    /// continues with its history in another region when its home region's core is gone.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Start the topology of this region file (every core and edge) on this machine.
    #[arg(long)]
    pub regions: Option<PathBuf>,
    /// The core's configuration (TOML; see core/server/README.md) instead of the defaults.
    #[arg(long)]
    pub core_config: Option<PathBuf>,
    /// The demo key's tier.
    #[arg(long, default_value = "plus")]
    pub tier: String,
    /// For load tests: the rate-limit filter still runs, with every tier's message, burst and
    /// token windows unlimited (`chorus bench load` then measures serving, not the limiter).
    #[arg(long)]
    pub no_rate_limits: bool,
    /// Where the core's fleets run: auto, cpu or cuda:N (default: the core config's `device`,
    /// which defaults to auto).
    #[arg(long)]
    pub device: Option<chorus_engine::device::DeviceSpec>,
    /// The flagship fleet's model (plus and enterprise): a known name (`chorus model list`) or
    /// a GGUF path. Default: the core config's (SmolLM2-135M-Instruct).
    #[arg(long)]
    pub flagship: Option<String>,
    /// The mini fleet's model (free and team), likewise.
    #[arg(long)]
    pub mini: Option<String>,
}

/// The demo API key, made once and kept beside the development certificates so the demo
/// user's conversations survive restarts.
fn demo_key(dev_dir: &Path) -> Result<String> {
    let path = dev_dir.parent().unwrap_or(dev_dir).join("demo-api-key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        let k = k.trim().to_owned();
        if k.starts_with("sk-") && k.len() > 20 {
            return Ok(k);
        }
    }
    let key = format!("sk-chorus-demo-{}", chorus_edge::random_hex(16));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// One API key per tier for load tests and `chorus eval` (user `demo-<tier>`), made once and
/// kept in `demo-keys.toml` beside the demo key; `chorus bench load` and `chorus eval` read it.
fn tier_keys(dev_dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = demo_keys_path(dev_dir);
    let mut keys: BTreeMap<String, String> =
        std::fs::read_to_string(&path).ok().and_then(|t| toml::from_str(&t).ok()).unwrap_or_default();
    let mut changed = false;
    for tier in ["free", "team", "plus", "enterprise"] {
        let ok = keys.get(tier).is_some_and(|k| k.starts_with("sk-") && k.len() > 20);
        if !ok {
            keys.insert(tier.into(), format!("sk-chorus-{tier}-{}", chorus_edge::random_hex(16)));
            changed = true;
        }
    }
    keys.retain(|t, _| ["free", "team", "plus", "enterprise"].contains(&t.as_str()));
    if changed {
        let text = keys.iter().map(|(t, k)| format!("{t} = \"{k}\"\n")).collect::<String>();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(keys)
}

/// Where `chorus up` keeps the per-tier demo keys.
pub fn demo_keys_path(dev_dir: &Path) -> PathBuf {
    dev_dir.parent().unwrap_or(dev_dir).join("demo-keys.toml")
}

fn core_config(args: &UpArgs) -> Result<CoreConfig> {
    let mut cfg = match &args.core_config {
        Some(p) => CoreConfig::load(p)?,
        None => CoreConfig::default(),
    };
    if let Some(d) = args.device {
        cfg.device = d;
    }
    for (fleet, model) in [("flagship", &args.flagship), ("mini", &args.mini)] {
        if let Some(model) = model {
            match cfg.fleets.get_mut(fleet) {
                Some(f) => f.model = model.clone(),
                None => bail!("--{fleet}: the core config has no fleet named {fleet:?}"),
            }
        }
    }
    if let Some(url) = &args.redis {
        cfg.store.hot = HotKind::Redis;
        cfg.store.redis.url = url.clone();
    }
    if let Some(url) = &args.postgres {
        cfg.store.durable = chorus_core::config::DurableKind::Postgres;
        cfg.store.postgres.url = url.clone();
    }
    Ok(cfg)
}

fn edge_config(args: &UpArgs, key: &str, tier_keys: &BTreeMap<String, String>) -> EdgeConfig {
    let mut cfg = EdgeConfig { listen: args.listen, ..EdgeConfig::default() };
    cfg.state.redis = args.redis.clone();
    cfg.filters.api_keys = vec![ApiKey {
        sha256: None,
        key: Some(key.into()),
        tenant: "demo".into(),
        user: "demo".into(),
        tier: args.tier.clone(),
    }];
    cfg.filters.api_keys.extend(tier_keys.iter().map(|(tier, key)| ApiKey {
        sha256: None,
        key: Some(key.clone()),
        tenant: "demo".into(),
        user: format!("demo-{tier}"),
        tier: tier.clone(),
    }));
    // A local development system: `chorus eval` may read the prompts the core builds.
    cfg.debug.echo_prompt = true;
    if args.no_rate_limits {
        let limits = cfg.filters.config.entry("ratelimit".into()).or_default();
        for tier in ["free", "team", "plus", "enterprise"] {
            for kind in ["messages", "burst", "tokens"] {
                limits.insert(format!("{kind}.{tier}"), "unlimited".into());
            }
        }
    }
    cfg
}

pub fn run(args: UpArgs) -> Result<()> {
    let dev_dir = chorus_proto::tls::dev_dir();
    let key = demo_key(&dev_dir)?;
    let tier_keys = tier_keys(&dev_dir)?;
    let base = core_config(&args)?;
    base.validate()?;
    let core_identity = chorus_core::identity_for(&base)?;
    let edge_base = edge_config(&args, &key, &tier_keys);
    let edge_identity = chorus_edge::identity_for(&edge_base)?;

    // Cores to start, and edges to start (each with its config).
    let mut cores: Vec<CoreConfig> = Vec::new();
    let mut edges: Vec<EdgeConfig> = Vec::new();
    match &args.regions {
        None => {
            cores.push(base.clone());
            let mut e = edge_base.clone();
            e.cores = vec![CoreSite {
                name: base.core_id.clone(),
                quic: base.listen,
                ops: Some(base.http),
                server_name: "localhost".into(),
            }];
            e.region = base.region.clone();
            edges.push(e);
        }
        Some(file) => {
            let topo = RegionFile::load(file)?;
            let data = chorus_core::config::data_dir();
            for r in &topo.regions {
                for c in &r.cores {
                    let mut cfg = base.clone();
                    cfg.core_id = c.name.clone();
                    cfg.region = r.name.clone();
                    cfg.listen = c.quic;
                    cfg.http = c.ops.unwrap_or_else(|| "127.0.0.1:0".parse().expect("literal address"));
                    // One embedded store file per core unless `--postgres` (a real deployment
                    // shares PostgreSQL within a region, and may across regions).
                    cfg.store.path = Some(data.join("regions").join(format!("{}.redb", c.name)));
                    cfg.store.redis.prefix = format!("{}:{}", cfg.store.redis.prefix, c.name);
                    cores.push(cfg);
                }
                if let Some(site) = &r.edge {
                    let mut e = edge_base.clone();
                    e.listen = site.listen;
                    e.region = r.name.clone();
                    e.edge_id = format!("edge-{}", r.name);
                    e.regions_file = Some(file.clone());
                    e.cores = vec![];
                    edges.push(e);
                }
            }
            anyhow::ensure!(!edges.is_empty(), "{}: no region has an `edge`", file.display());
        }
    }

    println!("loading the model (the first run fetches and verifies it)…");
    let mut loader = chorus_core::fleet::load_engines(base.threads, base.compute_priority, base.device);
    let mut fleets = Vec::new();
    for cfg in &cores {
        fleets.push(chorus_core::fleet::start_fleets(cfg, &mut loader)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let mut running_cores = Vec::new();
        for (cfg, fleets) in cores.into_iter().zip(fleets) {
            let store = chorus_core::open_store(&cfg).await?;
            let core = chorus_core::Core::new(cfg, fleets, store);
            running_cores.push(chorus_core::serve(core, &core_identity).await?);
        }
        let mut running_edges = Vec::new();
        for cfg in edges {
            let edge = chorus_edge::serve(cfg, edge_identity.clone()).await?;
            edge.state.pool.wait_healthy(Duration::from_secs(10)).await;
            running_edges.push(edge);
        }
        println!();
        for e in &running_edges {
            println!("Chorus is up ({}): http://{}/#key={key}", e.state.cfg.region, e.addr);
        }
        let first = running_edges[0].addr;
        println!("API key ({} tier): {key}", args.tier);
        println!(
            "try: curl -N http://{first}/v1/chat/completions -H 'Authorization: Bearer {key}' \\\n       -H 'Content-Type: application/json' \\\n       -d '{{\"model\":\"chorus\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'"
        );
        println!("OpenAI SDKs: base_url=http://{first}/v1 api_key={key}");
        println!(
            "one key per tier (for `chorus bench load` and `chorus eval`): {}",
            demo_keys_path(&dev_dir).display()
        );
        chorus_process::shutdown_signal().await;
        println!("stopping…");
        for e in running_edges {
            e.stop().await;
        }
        let drains: Vec<_> = running_cores
            .into_iter()
            .map(|c| {
                let secs = c.core.cfg.drain_secs;
                tokio::spawn(c.drain(Duration::from_secs(secs)))
            })
            .collect();
        for d in drains {
            let _ = d.await;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
