//! `chorus filter …`: scaffold, build, sign, verify, test and benchmark edge filters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use chorus_filter_host::builtin;
use chorus_filter_host::{
    ChainOutcome, FilterHost, FilterRequest, HostConfig, Manifest, ModuleSource, SigningKey, Step, TrustPolicy,
    TrustedKey,
};
use clap::{Args, Subcommand};
use serde::Deserialize;

#[derive(Subcommand, Debug)]
pub enum FilterCmd {
    /// Scaffold a new filter crate in DIR (its name is DIR's last component).
    New {
        dir: PathBuf,
        /// Path to chorus-filter-sdk (default: this checkout's wasm-filters/sdk).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the filter crate in DIR for wasm32-wasip2 (adding the target if missing) and
    /// write NAME.wasm and NAME.toml to --out (default DIR/dist).
    Build {
        dir: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Create a signing key: writes FILE (secret, mode 0600) and FILE.pub (a trusted-keys line).
    Keygen { file: PathBuf },
    /// Sign MODULE.wasm and its manifest (default: NAME.toml beside it) into NAME.sig.
    Sign {
        module: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Check MODULE.wasm's signature against trusted keys and that the host would load it.
    Verify {
        module: PathBuf,
        /// Trusted-keys file (lines of `KEY_ID ed25519 PUBLIC_KEY_HEX`).
        #[arg(long)]
        trusted: PathBuf,
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Run MODULE.wasm on JSON request fixtures or a JSONL file of prompts, showing each verdict.
    Test(TestArgs),
    /// Measure per-request latency of a chain (default: the shipped one) in fresh instances.
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct HostArgs {
    /// Filter configuration, `KEY=VALUE` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Operator key-value data, `KEY=VALUE` (repeatable).
    #[arg(long = "kv", value_name = "KEY=VALUE")]
    kv: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    module: PathBuf,
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Fixture files: a JSON object, an array of them, or JSON lines.
    #[arg(long = "fixtures", num_args = 1..)]
    fixtures: Vec<PathBuf>,
    /// JSON lines, each with a `prompt` field: every prompt becomes one request.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Print one JSON object: {"total", "denied", "results": [{"verdict", "code"}]}.
    #[arg(long)]
    json: bool,
    /// Require a signature by one of these keys instead of running the module unverified.
    #[arg(long)]
    trusted: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Bench a module directory (chain.toml + modules) instead of the shipped chain.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Size of the prompt in bytes.
    #[arg(long, default_value_t = 1024)]
    prompt_bytes: usize,
    #[arg(long)]
    json: bool,
    /// Bytes of each pooled linear memory kept resident between instances.
    #[arg(long)]
    keep_resident: Option<usize>,
}

/// Largest fixtures or prompts file read.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

pub fn run(cmd: FilterCmd) -> Result<()> {
    match cmd {
        FilterCmd::New { dir, sdk } => new(&dir, sdk),
        FilterCmd::Build { dir, out } => {
            let out = out.unwrap_or_else(|| dir.join("dist"));
            let path = build(&dir, &out)?;
            println!("{}", path.display());
            Ok(())
        }
        FilterCmd::Keygen { file } => keygen(&file),
        FilterCmd::Sign { module, key, manifest } => {
            let key = SigningKey::from_file(&read_text(&key)?).with_context(|| format!("{}", key.display()))?;
            let manifest = manifest.unwrap_or_else(|| module.with_extension("toml"));
            let wasm = std::fs::read(&module).with_context(|| format!("{}", module.display()))?;
            let manifest_text = read_text(&manifest)?;
            Manifest::parse(&manifest_text).with_context(|| format!("{}", manifest.display()))?;
            let sig_path = module.with_extension("sig");
            std::fs::write(&sig_path, key.sign(&wasm, manifest_text.as_bytes()).to_file())?;
            println!("{} (key {})", sig_path.display(), key.id());
            Ok(())
        }
        FilterCmd::Verify { module, trusted, manifest } => {
            let keys =
                TrustedKey::parse_file(&read_text(&trusted)?).with_context(|| format!("{}", trusted.display()))?;
            let src = source(&module, manifest.as_deref(), true)?;
            let host =
                FilterHost::new(HostConfig { trust: TrustPolicy { keys, dev_mode: false }, ..HostConfig::default() })?;
            let chain = host.build(std::slice::from_ref(&src))?;
            let d = &chain.describe()[0];
            println!("ok: {} {} signed by {} (module sha256 {})", d.name, d.version, d.signer, d.digest);
            Ok(())
        }
        FilterCmd::Test(args) => test(&args),
        FilterCmd::Bench(args) => bench(&args),
    }
}

fn read_text(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.len() > MAX_INPUT_BYTES {
        bail!("{}: {} bytes is over the {MAX_INPUT_BYTES}-byte limit", path.display(), meta.len());
    }
    std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
}

/// `chorus_filter_foo_bar` → `foo-bar`.
fn name_from_stem(stem: &str) -> String {
    stem.strip_prefix("chorus_filter_").unwrap_or(stem).replace('_', "-").to_ascii_lowercase()
}

/// A module and its manifest (beside it as NAME.toml, or the crate's filter.toml when the
/// module sits in a cargo target directory). Without a manifest a dev manifest granting every
/// capability is used, and said so.
fn source(module: &Path, manifest: Option<&Path>, require_sig: bool) -> Result<ModuleSource> {
    let wasm = std::fs::read(module).with_context(|| format!("{}", module.display()))?;
    let stem = module.file_stem().and_then(|s| s.to_str()).unwrap_or("filter");
    let name = name_from_stem(stem);
    let manifest_path = manifest.map(Path::to_path_buf).or_else(|| {
        let beside = module.with_extension("toml");
        beside.exists().then_some(beside)
    });
    let manifest = match &manifest_path {
        Some(p) => read_text(p)?,
        None => {
            eprintln!(
                "chorus: no manifest for {}; using a dev manifest granting all capabilities and the largest time and memory budgets",
                module.display()
            );
            format!(
                "name = \"{name}\"\nversion = \"0.0.0-dev\"\ncapabilities = [\"credentials\", \"identity\"]\nbudget-ms = {}\nmemory-mib = {}\n",
                chorus_filter_host::manifest::MAX_BUDGET_MS,
                chorus_filter_host::manifest::MAX_MEMORY_MIB
            )
        }
    };
    let parsed = Manifest::parse(&manifest)?;
    let sig_path = module.with_extension("sig");
    let signature = if sig_path.exists() { Some(read_text(&sig_path)?) } else { None };
    if require_sig && signature.is_none() {
        bail!("{}: not signed (no {})", module.display(), sig_path.display());
    }
    Ok(ModuleSource { name: parsed.name, wasm, manifest, signature, builtin: false })
}

fn pairs(list: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    list.iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').with_context(|| format!("--{what} {kv:?}: expected KEY=VALUE"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FixtureRequest {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    client_ip: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    message_count: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Expect {
    verdict: String,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    request: FixtureRequest,
    #[serde(default)]
    now_ms: Option<u64>,
    #[serde(default)]
    expect: Option<Expect>,
}

fn parse_fixtures(path: &Path) -> Result<Vec<Fixture>> {
    let text = read_text(path)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(&text).with_context(|| format!("{}", path.display()));
    }
    if let Ok(one) = serde_json::from_str::<Fixture>(&text) {
        return Ok(vec![one]);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

fn to_request(r: &FixtureRequest, n: usize) -> FilterRequest {
    FilterRequest {
        id: format!("test-{n}"),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: r.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        client_ip: r.client_ip.clone().unwrap_or_else(|| "192.0.2.1".into()),
        region: "local".into(),
        model: r.model.clone(),
        prompt_text: r.prompt.clone(),
        message_count: r.message_count.unwrap_or(1),
        max_tokens: r.max_tokens,
    }
}

fn verdict(out: &ChainOutcome) -> &'static str {
    if out.denial.is_some() {
        "deny"
    } else if out.steps.iter().any(|s| s.step == Step::Rewrite) {
        "rewrite"
    } else {
        "allow"
    }
}

fn test(args: &TestArgs) -> Result<()> {
    let trust = match &args.trusted {
        Some(p) => TrustPolicy { keys: TrustedKey::parse_file(&read_text(p)?)?, dev_mode: false },
        None => TrustPolicy { keys: Vec::new(), dev_mode: true },
    };
    let src = source(&args.module, args.manifest.as_deref(), args.trusted.is_some())?;
    let config = HostConfig {
        trust,
        filter_config: BTreeMap::from([(src.name.clone(), pairs(&args.host.config, "config")?)]),
        kv: pairs(&args.host.kv, "kv")?.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
        ..HostConfig::default()
    };
    let host = FilterHost::new(config)?;
    let chain = host.load(std::slice::from_ref(&src))?;

    let mut cases: Vec<(String, FixtureRequest, Option<u64>, Option<Expect>)> = Vec::new();
    if let Some(p) = &args.prompts {
        #[derive(Deserialize)]
        struct Line {
            prompt: String,
        }
        for (i, line) in read_text(p)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let l: Line = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: expected {{\"prompt\": ...}}", p.display(), i + 1))?;
            cases.push((
                format!("{}:{}", p.display(), i + 1),
                FixtureRequest { prompt: l.prompt, ..Default::default() },
                None,
                None,
            ));
        }
    }
    for p in &args.fixtures {
        for (i, f) in parse_fixtures(p)?.into_iter().enumerate() {
            let name = f.name.unwrap_or_else(|| format!("{}#{}", p.display(), i + 1));
            cases.push((name, f.request, f.now_ms, f.expect));
        }
    }
    if cases.is_empty() {
        bail!("nothing to run: give --fixtures FILE... or --prompts FILE.jsonl");
    }

    let (mut denied, mut mismatches) = (0usize, 0usize);
    let mut results = Vec::with_capacity(cases.len());
    for (n, (name, req, now, expect)) in cases.iter().enumerate() {
        let started = Instant::now();
        let out = chain.run(&to_request(req, n), now.unwrap_or_else(now_ms));
        let elapsed = started.elapsed();
        let v = verdict(&out);
        let code = out.denial.as_ref().map(|d| d.code.clone());
        denied += usize::from(out.denial.is_some());
        let ok = expect.as_ref().is_none_or(|e| e.verdict == v && (e.code.is_none() || e.code == code));
        mismatches += usize::from(!ok);
        if args.json {
            // Written by hand to keep the documented field order: {"verdict", "code"}.
            let code = code.as_deref().map_or_else(|| "null".to_owned(), |c| serde_json::Value::from(c).to_string());
            results.push(format!("{{\"verdict\":\"{v}\",\"code\":{code}}}"));
        } else {
            let detail = match &out.denial {
                Some(d) => format!(
                    "{} {} {:?}{}",
                    d.status,
                    d.code,
                    d.message,
                    d.retry_after_ms.map(|ms| format!(" retry-after {ms} ms")).unwrap_or_default()
                ),
                None => out.annotations.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            };
            let failed = out.steps.iter().find_map(|s| match &s.step {
                Step::Failed { kind, detail, .. } => Some(format!(" [failed: {} {detail}]", kind.as_str())),
                _ => None,
            });
            let mark = if expect.is_none() {
                ""
            } else if ok {
                "ok   "
            } else {
                "FAIL "
            };
            println!("{mark}{name}: {v} {detail}{} ({} µs)", failed.unwrap_or_default(), elapsed.as_micros());
        }
    }
    if args.json {
        println!("{{\"total\":{},\"denied\":{denied},\"results\":[{}]}}", cases.len(), results.join(","));
    } else {
        println!("{} requests, {denied} denied, {mismatches} not as expected", cases.len());
    }
    if mismatches > 0 {
        bail!("{mismatches} fixture(s) did not get the expected verdict");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustc").args(["--print", "target-libdir", "--target", "wasm32-wasip2"]).output();
    let present = out.ok().filter(|o| o.status.success()).is_some_and(|o| {
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        std::fs::read_dir(dir)
            .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-"))))
            .unwrap_or(false)
    });
    if !present {
        eprintln!("chorus: adding the wasm32-wasip2 target with rustup");
        let ok = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status().is_ok_and(|s| s.success());
        if !ok {
            bail!("`rustup target add wasm32-wasip2` failed; add the target and retry");
        }
    }
    Ok(())
}

fn build(dir: &Path, out: &Path) -> Result<PathBuf> {
    ensure_wasm_target()?;
    let manifest_path = dir.join("filter.toml");
    let manifest_text = read_text(&manifest_path)?;
    let manifest = Manifest::parse(&manifest_text).with_context(|| format!("{}", manifest_path.display()))?;
    let output = Command::new("cargo")
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("cargo build failed in {}", dir.display());
    }
    let crate_manifest = dir.join("Cargo.toml").canonicalize()?;
    let mut wasm = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact"
            || msg["manifest_path"].as_str().map(PathBuf::from) != Some(crate_manifest.clone())
        {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            wasm = files.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".wasm")).map(PathBuf::from).or(wasm);
        }
    }
    let wasm = wasm.with_context(|| format!("cargo built no .wasm for {} (is crate-type cdylib?)", dir.display()))?;
    std::fs::create_dir_all(out)?;
    let dest = out.join(format!("{}.wasm", manifest.name));
    std::fs::copy(&wasm, &dest)?;
    std::fs::write(out.join(format!("{}.toml", manifest.name)), manifest_text)?;
    // A signature of the previous build no longer applies.
    let _ = std::fs::remove_file(out.join(format!("{}.sig", manifest.name)));
    Ok(dest)
}

fn keygen(file: &Path) -> Result<()> {
    if file.exists() {
        bail!("{} exists; refusing to overwrite a key", file.display());
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no secure randomness: {e}"))?;
    let key = SigningKey::from_seed(seed);
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(file)?.write_all(key.to_file().as_bytes())?;
    }
    let public = PathBuf::from(format!("{}.pub", file.display()));
    std::fs::write(&public, format!("{}\n", key.public().to_line()))?;
    println!("key {} written to {} (secret) and {} (trusted-keys line)", key.id(), file.display(), public.display());
    Ok(())
}

fn new(dir: &Path, sdk: Option<PathBuf>) -> Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).context("DIR needs a final component")?.to_owned();
    if !chorus_filter_host::manifest::valid_name(&name) {
        bail!("filter name {name:?} must be 1-32 of [a-z0-9-], starting with a letter");
    }
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = match sdk {
        Some(p) => p,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-filters/sdk"),
    };
    let sdk = sdk.canonicalize().with_context(|| format!("chorus-filter-sdk not found at {}", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    std::fs::create_dir_all(dir.join("fixtures"))?;
    let crate_name = format!("chorus-filter-{name}");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nchorus-filter-sdk = {{ path = {:?} }}\n\n\
             # A standalone workspace: build with `chorus filter build {}`.\n[workspace]\n\n\
             [profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\npanic = \"abort\"\nstrip = true\n",
            sdk.display().to_string(),
            dir.display()
        ),
    )?;
    std::fs::write(
        dir.join(".cargo/config.toml"),
        "[build]\ntarget = \"wasm32-wasip2\"\n\n[target.wasm32-wasip2]\nrustflags = [\"-C\", \"link-arg=-zstack-size=65536\"]\n",
    )?;
    std::fs::write(
        dir.join("filter.toml"),
        format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\ndescription = \"\"\n# capabilities = [\"credentials\", \"identity\"]\nbudget-ms = 5\nmemory-mib = 16\non-error = \"deny\"\n"
        ),
    )?;
    std::fs::write(dir.join("src/lib.rs"), TEMPLATE.replace("NAME", &name))?;
    std::fs::write(
        dir.join("fixtures/requests.jsonl"),
        "{\"name\": \"plain request\", \"request\": {\"prompt\": \"Hello!\"}, \"expect\": {\"verdict\": \"allow\"}}\n\
         {\"name\": \"blocked word\", \"request\": {\"prompt\": \"please say forbidden\"}, \"expect\": {\"verdict\": \"deny\", \"code\": \"forbidden_word\"}}\n",
    )?;
    println!(
        "created {}: build with `chorus filter build {0}`, then `chorus filter test {0}/dist/{name}.wasm --fixtures {0}/fixtures/requests.jsonl`",
        dir.display()
    );
    Ok(())
}

const TEMPLATE: &str = r#"//! The NAME filter.

use chorus_filter_sdk::{Filter, Request, Verdict, annotation, export_filter, host};

struct Policy;

impl Filter for Policy {
    fn on_request(req: Request) -> Verdict {
        let word = host::config("forbidden_word").unwrap_or_else(|| "forbidden".into());
        if req.prompt_text.to_lowercase().contains(&word) {
            return Verdict::deny(400, "forbidden_word", format!("prompts may not contain {word:?}"));
        }
        Verdict::allow_with(vec![annotation("NAME.checked", "1")])
    }
}

export_filter!(Policy);
"#;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Ordinary prose of about `bytes` bytes: a real 4 KB support request (no repeated
/// sentences, which the safety gate counts once), repeated only beyond that.
fn prose(bytes: usize) -> String {
    const TEXT: &str = include_str!("../../wasm-filters/presafety-rules/tests/data/benign_4k.txt");
    let mut s = String::with_capacity(bytes + TEXT.len());
    while s.len() < bytes {
        s.push_str(TEXT);
        s.push('\n');
    }
    chorus_filter_host::limits::truncate(&s, bytes).to_owned()
}

fn bench(args: &BenchArgs) -> Result<()> {
    const KEY: &str = "sk-chorus-bench-key";
    let kv = BTreeMap::from([(
        format!("apikey:{}", hex_sha256(KEY)),
        br#"{"tenant":"bench","user":"bench","tier":"enterprise"}"#.to_vec(),
    )]);
    // Limits high enough that every request takes the full allow path.
    let ratelimit = BTreeMap::from([
        ("burst.enterprise".to_owned(), "100000/1s".to_owned()),
        ("messages.enterprise".to_owned(), "unlimited".to_owned()),
        ("tokens.enterprise".to_owned(), "unlimited".to_owned()),
    ]);
    let mut runtime = chorus_filter_host::RuntimeConfig::default();
    if let Some(bytes) = args.keep_resident {
        runtime.keep_resident_bytes = bytes;
    }
    let host = Arc::new(FilterHost::new(HostConfig {
        trust: TrustPolicy { keys: Vec::new(), dev_mode: true },
        runtime,
        filter_config: BTreeMap::from([("ratelimit".to_owned(), ratelimit)]),
        kv,
        ..HostConfig::default()
    })?);
    let sources = match &args.dir {
        Some(d) => chorus_filter_host::read_dir(d)?,
        None => builtin::default_chain(),
    };
    let chain = host.load(&sources)?;
    let req = FilterRequest {
        id: "bench".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![("x-api-key".into(), KEY.into()), ("content-type".into(), "application/json".into())],
        client_ip: "198.51.100.4".into(),
        region: "bench".into(),
        model: None,
        prompt_text: prose(args.prompt_bytes),
        message_count: 1,
        max_tokens: Some(256),
    };
    let mut results = Vec::new();
    let mut measure = |label: String, chain: &Arc<chorus_filter_host::Chain>, req: &FilterRequest| -> Result<()> {
        let warmup = (args.requests / 10).max(100);
        let mut chain_us = Vec::with_capacity(args.requests);
        let mut per_filter: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut t = 1_800_000_000_000u64;
        for i in 0..warmup + args.requests {
            t += 1;
            let started = Instant::now();
            let out = chain.run(req, t);
            let ns = started.elapsed().as_nanos() as u64;
            if let Some(d) = &out.denial {
                let failure = out.steps.iter().find_map(|s| match &s.step {
                    Step::Failed { kind, detail, .. } => Some(format!(" ({}: {detail})", kind.as_str())),
                    _ => None,
                });
                bail!(
                    "{label}: request {i} was denied by {}: {} {}{}",
                    d.filter,
                    d.code,
                    d.message,
                    failure.unwrap_or_default()
                );
            }
            if i >= warmup {
                chain_us.push(ns);
                for s in &out.steps {
                    per_filter.entry(s.filter.clone()).or_default().push(s.elapsed.as_nanos() as u64);
                }
            }
            if let Some(ticket) = out.ticket {
                ticket.complete(chorus_filter_host::Outcome::Completed, Default::default(), t);
            }
        }
        let mut rows = vec![(label.clone(), chain_us)];
        rows.extend(per_filter.into_iter().map(|(k, v)| (format!("{label} / {k}"), v)));
        for (name, mut v) in rows {
            v.sort_unstable();
            let (p50, p99, p999) = (percentile(&v, 0.5), percentile(&v, 0.99), percentile(&v, 0.999));
            results.push(serde_json::json!({"name": name, "requests": v.len(), "p50_us": p50 as f64 / 1e3, "p99_us": p99 as f64 / 1e3, "p999_us": p999 as f64 / 1e3}));
        }
        Ok(())
    };
    measure(format!("chain {} ({} B prompt)", chain.names().join(" -> "), args.prompt_bytes), &chain, &req)?;
    if let Some(pre) = sources.iter().find(|s| s.name == "presafety") {
        let alone = host.build(std::slice::from_ref(pre))?;
        let long = FilterRequest { prompt_text: prose(4096), ..req.clone() };
        measure("presafety alone (4096 B prompt)".into(), &alone, &long)?;
    }
    if args.json {
        println!("{}", serde_json::Value::Array(results));
    } else {
        println!("{:<60} {:>10} {:>10} {:>10}", "measurement (µs per request)", "p50", "p99", "p99.9");
        for r in &results {
            println!(
                "{:<60} {:>10.1} {:>10.1} {:>10.1}",
                r["name"].as_str().unwrap_or(""),
                r["p50_us"].as_f64().unwrap_or(0.0),
                r["p99_us"].as_f64().unwrap_or(0.0),
                r["p999_us"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

fn hex_sha256(text: &str) -> String {
    chorus_filter_host::signing::hex(&chorus_filter_host::signing::sha256(text.as_bytes()))
}
