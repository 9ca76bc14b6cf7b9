//! `chorus bench load`, `chorus bench compare`, `chorus plan` and `chorus eval`: flags to
//! [`chorus_bench`] and back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chorus_bench::client::Endpoint;
use chorus_bench::dist::Dist;
use chorus_bench::eval::{EvalConfig, EvalSpec};
use chorus_bench::load::{LoadSpec, TierKey};
use chorus_bench::plan::{NodeCapacity, PlanInput};
use chorus_bench::report::{Mode, Report, SloTarget};
use chorus_bench::workload::{MAX_OUTPUT_TOKENS, MAX_PROMPT_TOKENS, MAX_TURNS, Shape, load_prompts};

/// Which server and which keys.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The API's base URL (plain http).
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    pub url: String,
    /// The `model` field sent.
    #[arg(long, default_value = "chorus")]
    pub model: String,
    /// An API key for a tier: TIER=KEY (repeatable).
    #[arg(long = "key", value_name = "TIER=KEY")]
    pub keys: Vec<String>,
    /// A TOML file of `tier = "key"` lines (default: the per-tier keys `chorus up` made, when
    /// no --key is given and that file exists).
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

impl Target {
    fn endpoint(&self) -> Result<Endpoint> {
        Ok(Endpoint::parse("--url", &self.url)?)
    }

    /// Tier → key: `--key`s, then `--keys-file`, else `chorus up`'s demo keys if present.
    fn keys(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let file = match &self.keys_file {
            Some(f) => Some(f.clone()),
            None if self.keys.is_empty() => {
                Some(crate::up::demo_keys_path(&chorus_proto::tls::dev_dir())).filter(|p| p.is_file())
            }
            None => None,
        };
        if let Some(f) = file {
            let text = read_bounded(&f, 1 << 20, "--keys-file")?;
            let map: BTreeMap<String, String> = toml::from_str(&text)
                .with_context(|| format!("--keys-file {}: expected tier = \"key\" lines", f.display()))?;
            out.extend(map);
        }
        for k in &self.keys {
            let (tier, key) = k.split_once('=').with_context(|| format!("--key {k:?}: expected TIER=KEY"))?;
            anyhow::ensure!(!tier.is_empty() && !key.is_empty(), "--key {k:?}: expected TIER=KEY");
            out.insert(tier.to_owned(), key.to_owned());
        }
        Ok(out)
    }
}

/// `chorus bench load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub target: Target,
    /// What to call the server in reports (default: the URL).
    #[arg(long)]
    pub label: Option<String>,
    /// Open loop: Poisson arrivals at these requests/s (several: one run each, a sweep).
    #[arg(long, value_delimiter = ',', conflicts_with = "users")]
    pub rate: Vec<f64>,
    /// Closed loop: this many users, each sending its next request after its answer (several:
    /// a sweep).
    #[arg(long, value_delimiter = ',')]
    pub users: Vec<usize>,
    /// Closed loop: milliseconds a user thinks between an answer and its next request.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// Seconds each run sends for (answers in flight are then awaited).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Most requests each run sends (at most 10,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: usize,
    /// Open loop: most requests in flight; arrivals past it are counted as the generator's
    /// own errors (`client_max_in_flight`), not sent.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// The tier mix: TIER=WEIGHT,… (default: equal over the tiers with keys).
    #[arg(long, value_delimiter = ',')]
    pub mix: Vec<String>,
    /// Words of the system prompt every session shares (0: none).
    #[arg(long, default_value_t = 400)]
    pub system_words: u32,
    /// User turn length in words (≈ tokens): N, uniform:A-B, normal:MEAN,SD, lognormal:MEDIAN,SIGMA.
    #[arg(long, default_value = "uniform:16-64")]
    pub prompt_tokens: String,
    /// Answer length (`max_tokens`), same forms.
    #[arg(long, default_value = "uniform:32-96")]
    pub output_tokens: String,
    /// User turns per session, same forms.
    #[arg(long, default_value = "uniform:1-4")]
    pub turns: String,
    /// User turns from a file (JSON lines with "prompt", or plain lines) instead of generated text.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Ask the server to generate exactly `max_tokens` (`ignore_eos`).
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Wait out a 429's Retry-After and retry, at most this many times per request.
    #[arg(long, default_value_t = 0)]
    pub retry_429: u32,
    /// The server's Prometheus page (default: /metrics at the URL's origin, if it answers).
    #[arg(long)]
    pub metrics: Option<String>,
    /// An SLO target: TIER.STAT=MS, `*` for every tier (repeatable; overrides the defaults
    /// p50 ≤ 300 ms all tiers, p95 ≤ 1 s plus/enterprise, ≤ 2 s team, ≤ 3 s free).
    #[arg(long)]
    pub slo: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds between the runs of a sweep (queues drain).
    #[arg(long, default_value_t = 3)]
    pub pause: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the SVG chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Exit non-zero when an SLO target is missed.
    #[arg(long)]
    pub check_slo: bool,
}

fn parse_dist(flag: &str, spec: &str, max: u32) -> Result<Dist> {
    Ok(Dist::parse(flag, spec, max)?)
}

/// The runs a `LoadArgs` asks for.
fn modes(a: &LoadArgs) -> Result<Vec<Mode>> {
    let mut out = Vec::new();
    for &r in &a.rate {
        anyhow::ensure!(r.is_finite() && r > 0.0 && r <= 100_000.0, "--rate {r}: must be within (0, 100000]");
        out.push(Mode::Open { rate: r });
    }
    for &u in &a.users {
        anyhow::ensure!((1..=100_000).contains(&u), "--users {u}: must be within 1..=100000");
        out.push(Mode::Closed { users: u, think_ms: a.think_ms });
    }
    if out.is_empty() {
        bail!("give --rate R (open loop, requests/s) or --users N (closed loop)");
    }
    Ok(out)
}

/// Builds the spec of `chorus bench load` (also used by the tests through the library).
pub fn load_spec(a: &LoadArgs) -> Result<LoadSpec> {
    let endpoint = a.target.endpoint()?;
    let keys = a.target.keys()?;
    let mut weights: BTreeMap<String, f64> = BTreeMap::new();
    for m in &a.mix {
        let (t, w) = m.split_once('=').with_context(|| format!("--mix {m:?}: expected TIER=WEIGHT"))?;
        let w: f64 = w
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w >= 0.0)
            .with_context(|| format!("--mix {m:?}: the weight must be a number ≥ 0"))?;
        anyhow::ensure!(
            keys.contains_key(t) || keys.is_empty(),
            "--mix {m:?}: no key for tier {t:?} (give --key {t}=KEY)"
        );
        weights.insert(t.to_owned(), w);
    }
    anyhow::ensure!(a.mix.is_empty() || !keys.is_empty(), "--mix needs a key per tier (--key TIER=KEY)");
    anyhow::ensure!(a.system_words <= 100_000, "--system-words {}: at most 100000", a.system_words);
    anyhow::ensure!(a.think_ms <= 3_600_000, "--think-ms {}: at most 3600000", a.think_ms);
    anyhow::ensure!(a.pause <= 3600, "--pause {}: at most 3600 seconds", a.pause);
    anyhow::ensure!((1..=10_000_000).contains(&a.requests), "--requests {}: 1..=10000000", a.requests);
    anyhow::ensure!((1..=1_000_000).contains(&a.max_in_flight), "--max-in-flight {}: 1..=1000000", a.max_in_flight);
    anyhow::ensure!(
        a.temperature.is_finite() && (0.0..=2.0).contains(&a.temperature),
        "--temperature {}: 0..=2",
        a.temperature
    );
    let tiers: Vec<TierKey> = if keys.is_empty() {
        vec![TierKey { tier: "all".into(), key: None, weight: 1.0 }]
    } else {
        keys.iter()
            .map(|(t, k)| TierKey {
                tier: t.clone(),
                key: Some(k.clone()),
                weight: if a.mix.is_empty() { 1.0 } else { weights.get(t).copied().unwrap_or(0.0) },
            })
            .collect()
    };
    anyhow::ensure!(tiers.iter().any(|t| t.weight > 0.0), "--mix: every weight is 0");
    let shape = Shape {
        system_words: a.system_words,
        prompt_tokens: parse_dist("--prompt-tokens", &a.prompt_tokens, MAX_PROMPT_TOKENS)?,
        output_tokens: parse_dist("--output-tokens", &a.output_tokens, MAX_OUTPUT_TOKENS)?,
        turns: parse_dist("--turns", &a.turns, MAX_TURNS)?,
        prompts: match &a.prompts {
            Some(p) => load_prompts(p)?,
            None => vec![],
        },
    };
    let slo = a.slo.iter().map(|s| SloTarget::parse(s)).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!((1..=86_400).contains(&a.duration), "--duration {}: 1..=86400 seconds", a.duration);
    anyhow::ensure!((1..=3600).contains(&a.target.timeout), "--timeout {}: 1..=3600 seconds", a.target.timeout);
    Ok(LoadSpec {
        metrics: a.metrics.as_deref().map(|m| Endpoint::parse("--metrics", m)).transpose()?,
        endpoint,
        model: a.target.model.clone(),
        tiers,
        shape,
        duration: Duration::from_secs(a.duration),
        max_requests: a.requests,
        think: Duration::from_millis(a.think_ms),
        ignore_eos: a.ignore_eos,
        temperature: a.temperature,
        timeout: Duration::from_secs(a.target.timeout),
        retry_429: a.retry_429,
        seed: a.seed,
        progress: !a.no_progress,
        max_in_flight: a.max_in_flight,
        slo: chorus_bench::report::slo_with(slo),
    })
}

/// Reads a text file of at most `max` bytes, naming the flag in errors.
pub fn read_bounded(path: &Path, max: u64, flag: &str) -> Result<String> {
    let len = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?.len();
    anyhow::ensure!(len <= max, "{flag} {}: {len} bytes, over the {max}-byte limit", path.display());
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

pub fn load(a: &LoadArgs) -> Result<()> {
    let spec = load_spec(a)?;
    let modes = modes(a)?;
    let rt = runtime()?;
    let report = rt.block_on(async {
        // Who is answering: the label, and a clear error if nothing is.
        let probe = chorus_bench::client::get_text(
            &spec.endpoint,
            "/models",
            spec.tiers[0].key.as_deref(),
            Duration::from_secs(5),
        )
        .await;
        if probe.is_none() {
            bail!("{}: no answer (is the server up?)", a.target.url);
        }
        let mut runs = Vec::new();
        for (i, mode) in modes.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(a.pause)).await;
            }
            let mut s = spec.clone();
            s.seed = spec.seed.wrapping_add(i as u64);
            let run = chorus_bench::load::run(s, mode.clone()).await;
            print!("{}", chorus_bench::report::render_run(&run));
            runs.push(run);
        }
        anyhow::Ok(runs)
    })?;
    let label = a.label.clone().unwrap_or_else(|| a.target.url.clone());
    let report = Report {
        tool: format!("chorus bench load {}", env!("CARGO_PKG_VERSION")),
        label,
        url: a.target.url.clone(),
        model: a.target.model.clone(),
        workload: serde_json::json!({
            "system_words": a.system_words, "prompt_tokens": a.prompt_tokens, "output_tokens": a.output_tokens,
            "turns": a.turns, "prompts": a.prompts, "ignore_eos": a.ignore_eos, "temperature": a.temperature,
            "duration_s": a.duration, "requests": a.requests, "mix": a.mix, "tiers": spec.tiers.iter().map(|t| &t.tier).collect::<Vec<_>>(),
            "think_ms": a.think_ms, "retry_429": a.retry_429, "seed": a.seed, "timeout_s": a.target.timeout,
        }),
        slo_targets: spec.slo.clone(),
        runs: report,
    };
    if let Some(p) = &a.out {
        write(p, &serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(p) = &a.svg {
        write(p, &chorus_bench::chart::load_chart(&report))?;
        eprintln!("wrote {}", p.display());
    }
    if a.check_slo && !report.runs.iter().all(|r| r.slo_held()) {
        bail!("an SLO target was missed");
    }
    Ok(())
}

fn read_report(p: &Path) -> Result<Report> {
    let text = read_bounded(p, 1 << 30, "report")?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a `chorus bench load` JSON report", p.display()))
}

/// `chorus bench compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Write a chart of both (sweep and CDFs) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

pub fn compare(a: &CompareArgs) -> Result<()> {
    let (ra, rb) = (read_report(&a.a)?, read_report(&a.b)?);
    print!("{}", chorus_bench::report::compare(&ra, &rb));
    if let Some(p) = &a.svg {
        write(p, &chorus_bench::chart::compare_chart(&ra, &rb))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// `chorus plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// A `chorus bench load` report of one node (its best run within the SLO sets capacity).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Without --from: answers/s one node gives within the SLO…
    #[arg(long, conflicts_with = "from")]
    pub node_rps: Option<f64>,
    /// …its mean TTFT (ms)…
    #[arg(long, default_value_t = 200.0)]
    pub node_ttft_ms: f64,
    /// …and its time per output token (ms).
    #[arg(long, default_value_t = 30.0)]
    pub node_tpot_ms: f64,
    /// Target arrivals per second.
    #[arg(long)]
    pub qps: f64,
    /// Mean prompt tokens per request (default: as measured).
    #[arg(long)]
    pub prompt_tokens: Option<f64>,
    /// Mean output tokens per request (default: as measured).
    #[arg(long)]
    pub output_tokens: Option<f64>,
    /// Fraction of prompt tokens served from the prefix cache (default: as measured).
    #[arg(long)]
    pub cache_hit: Option<f64>,
    /// Plan nodes to at most this share of their SLO capacity.
    #[arg(long, default_value_t = 0.8)]
    pub max_utilisation: f64,
    /// An uncached prompt token's cost relative to an output token's.
    #[arg(long, default_value_t = 0.25)]
    pub prefill_cost: f64,
    /// Price of one node per hour (any currency).
    #[arg(long, default_value_t = 1.0)]
    pub node_price: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn plan(a: &PlanArgs) -> Result<()> {
    let node = match (&a.from, a.node_rps) {
        (Some(f), _) => chorus_bench::plan::capacity_from(&read_report(f)?, &f.display().to_string())?,
        (None, Some(rps)) => NodeCapacity {
            answers_per_s: rps,
            output_tokens: a.output_tokens.unwrap_or(200.0),
            prompt_tokens: a.prompt_tokens.unwrap_or(500.0),
            cache_hit: a.cache_hit.unwrap_or(0.0),
            ttft_mean_ms: a.node_ttft_ms,
            tpot_ms: a.node_tpot_ms,
            ttft_p95_ms: None,
            source: "--node-rps".into(),
            slo_held: true,
        },
        (None, None) => bail!("give --from BENCH.json (a `chorus bench load` report) or --node-rps"),
    };
    let input = PlanInput {
        qps: a.qps,
        prompt_tokens: a.prompt_tokens.unwrap_or(node.prompt_tokens),
        output_tokens: a.output_tokens.unwrap_or(node.output_tokens),
        cache_hit: a.cache_hit.unwrap_or(node.cache_hit),
        max_utilisation: a.max_utilisation,
        prefill_cost: a.prefill_cost,
        node_price_per_hour: a.node_price,
        node,
    };
    let p = chorus_bench::plan::plan(input)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{}", chorus_bench::plan::render(&p));
    }
    Ok(())
}

/// `chorus eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub target: Target,
    /// Thresholds, routes and sample sizes (TOML; see `chorus_bench::eval::EvalConfig`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The adversarial set: JSON lines of {"category", "prompt"} (default:
    /// ../shared/safety/adversarial.jsonl when present).
    #[arg(long)]
    pub adversarial: Option<PathBuf>,
    /// The benign set, same form (default: ../shared/safety/benign.jsonl when present).
    #[arg(long)]
    pub benign: Option<PathBuf>,
    /// Run only these checks (routing, prefix_cache, safety, multi_turn; repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn set_path(given: &Option<PathBuf>, name: &str, flag: &str) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let default = Path::new("../shared/safety").join(name);
    if default.is_file() {
        return Ok(default);
    }
    bail!("{flag}: give the set (JSON lines of {{\"category\", \"prompt\"}}); {} is not here", default.display())
}

pub fn eval(a: &EvalArgs) -> Result<()> {
    let mut config = match &a.config {
        Some(p) => EvalConfig::load(p)?,
        None => EvalConfig::default(),
    };
    if !a.only.is_empty() {
        if let Some(c) = a.only.iter().find(|c| !chorus_bench::eval::CHECKS.contains(&c.as_str())) {
            bail!("--only {c:?}: known checks are {}", chorus_bench::eval::CHECKS.join(", "));
        }
        config.checks = a.only.clone();
    }
    let spec = EvalSpec {
        endpoint: a.target.endpoint()?,
        model: a.target.model.clone(),
        keys: a.target.keys()?,
        adversarial: chorus_bench::eval::load_set(&set_path(&a.adversarial, "adversarial.jsonl", "--adversarial")?)?,
        benign: chorus_bench::eval::load_set(&set_path(&a.benign, "benign.jsonl", "--benign")?)?,
        config,
        timeout: Duration::from_secs(a.target.timeout),
    };
    anyhow::ensure!(!spec.keys.is_empty(), "no API keys: give --key TIER=KEY for each tier (or --keys-file)");
    anyhow::ensure!((1..=3600).contains(&a.target.timeout), "--timeout {}: 1..=3600 seconds", a.target.timeout);
    let report = runtime()?.block_on(chorus_bench::eval::run(spec));
    print!("{}", chorus_bench::eval::render(&report));
    if let Some(p) = &a.out {
        write(p, &serde_json::to_string_pretty(&report)?)?;
    }
    if !report.passed {
        bail!("{} of {} checks failed", report.checks.iter().filter(|c| !c.passed).count(), report.checks.len());
    }
    Ok(())
}
