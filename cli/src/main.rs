//! `chorus`: the command line for users, policy authors and operators.
//!
//! It runs the system (`up`, `edge`, `core`), drives the local engine (`chat`, `generate`,
//! `tokenize`, `model pull`), the edge filter tool chain (`filter new | build | keygen | sign |
//! verify | test | bench`), the benchmarks (`bench engine | quic | edge | load | compare`),
//! capacity planning (`plan`) and the level-1 evaluation (`eval`). It parses arguments and
//! prints; the work lives in the library crates.

mod bench;
mod bench_edge;
mod bench_quic;
mod bench_serve;
mod chat;
mod filter;
mod measure;
mod synthetic;
mod up;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chorus_engine::chat_template::ChatMessage;
use chorus_engine::device::DeviceSpec;
use chorus_engine::engine::{Engine, EngineOptions};
use chorus_engine::kernels::Isa;
use chorus_engine::model_store::{self, Progress};
use chorus_engine::sampler::SamplingParams;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "chorus", version, about = "Chorus: serve a chat assistant; local engine tools")]
struct Cli {
    /// How server commands (`up`, `edge`, `core`) log to stderr: `text` (coloured only on a
    /// terminal) or `json` (one object per line).
    #[arg(long, global = true, default_value = "text")]
    log_format: chorus_process::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Chat with the local model in the terminal (streaming).
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// A system prompt (otherwise the template's default).
        #[arg(long)]
        system: Option<String>,
    },
    /// Generate one answer for OpenAI-style messages in a JSON file.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// JSON file: an array of {"role", "content"} objects (or {"messages": [...]}).
        #[arg(long)]
        messages: PathBuf,
        /// Print one JSON object instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Print the token ids of TEXT (special tokens are parsed).
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        /// Print `{"ids": [...]}`.
        #[arg(long)]
        json: bool,
        /// Treat special-token text as plain text.
        #[arg(long)]
        no_special: bool,
        /// The text.
        text: String,
    },
    /// Model files: fetch, locate, list.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Edge filters: scaffold, build, sign, verify, test, benchmark.
    Filter {
        #[command(subcommand)]
        cmd: filter::FilterCmd,
    },
    /// Run the whole system here: a core and an edge with embedded defaults, the model, the
    /// shipped filters and the web chat; prints the URL and a demo API key.
    Up(up::UpArgs),
    /// Run an edge gateway (the OpenAI-compatible API and web chat) in front of cores.
    Edge {
        /// TOML configuration (see edge/gateway/README.md); defaults without one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a regional core: QUIC (mutual TLS) for edges, /metrics /healthz /readyz over HTTP.
    Core {
        /// TOML configuration (see core/server/README.md); defaults without one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Mint a development CA plus core and edge certificates (PEM) for local runs.
    Certs {
        /// Directory to write ca.pem, ca.key, core.pem, core.key, edge.pem, edge.key into.
        #[arg(long)]
        out: PathBuf,
        /// DNS names or IP addresses the core certificate is valid for (repeatable).
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
    },
    /// Region files: validate them, and render the Terraform variables of a provisioned one.
    Regions {
        #[command(subcommand)]
        cmd: RegionsCmd,
    },
    /// The feedback queue (ratings of answers, for reward-model training).
    Feedback {
        #[command(subcommand)]
        cmd: FeedbackCmd,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Capacity planning by Little's law from a measured `bench load` report: nodes,
    /// utilisation, requests in flight and cost per request for a target load.
    Plan(measure::PlanArgs),
    /// The level-1 checks of a running deployment (routing, prefix cache, safety gate,
    /// multi-turn context, refusal calibration); exits non-zero when one falls short.
    Eval(measure::EvalArgs),
}

#[derive(Subcommand, Debug)]
enum RegionsCmd {
    /// Validate a region file (provisioning tables included) and print its failover orders.
    Check { file: PathBuf },
    /// Write `chorus.auto.tfvars.json` for Terraform into OUT (e.g. terraform/envs/NAME).
    Render {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Compare with what OUT holds instead of writing; exit 1 when they differ.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FeedbackCmd {
    /// Append every rating not yet in OUT to it as JSONL (idempotent: a second run adds nothing).
    /// With the embedded store, run it while the core is stopped (the file has one writer).
    Export {
        /// The core's TOML configuration (its [store] section says where the queue is).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The JSONL file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// Fetch a known model into the cache and verify it.
    Pull {
        /// Model name.
        #[arg(default_value = model_store::DEFAULT_MODEL)]
        name: String,
    },
    /// Print the cached path of a model (fetching it if needed).
    Path {
        /// Model name.
        #[arg(default_value = model_store::DEFAULT_MODEL)]
        name: String,
    },
    /// List the known models, and those in the cache with their sizes.
    List,
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Prompt processing, single-stream decode and batched decode throughput.
    Engine(bench::EngineBench),
    /// Per-token latency the QUIC hop adds (engine emit → client decode), p50/p99.
    Quic(bench_quic::QuicBench),
    /// What the edge adds to TTFT (side by side with the core alone), and how fast it sheds
    /// rate-limited requests.
    Edge(bench_edge::EdgeBench),
    /// Load any OpenAI-compatible endpoint (open or closed loop, tier mix, multi-turn
    /// sessions): per-tier TTFT / inter-token / end-to-end percentiles, errors, SLO verdicts,
    /// JSON and an SVG chart.
    Load(Box<measure::LoadArgs>),
    /// Two `bench load` reports side by side, with ratios.
    Compare(measure::CompareArgs),
}

/// Which model and how to run it.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A local GGUF file, or the name of a known model (fetched and cached on first use).
    #[arg(long, default_value = model_store::DEFAULT_MODEL)]
    pub model: String,
    /// Compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Kernel instruction set: scalar, avx2, avx512vnni (default: the best available).
    #[arg(long)]
    pub isa: Option<String>,
    /// Where served and benchmarked steps run: auto (GPU 0 if the CUDA backend starts, else
    /// the CPU), cpu, or cuda:N. Needs a build with `--features cuda` for a GPU.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
}

impl ModelArgs {
    /// Resolves the model and loads it.
    pub fn load(&self) -> Result<Engine> {
        let path = resolve_model(&self.model)?;
        let mut opts = EngineOptions::default();
        if let Some(t) = self.threads {
            opts.threads = t;
        }
        if let Some(i) = &self.isa {
            opts.isa =
                Some(Isa::parse(i).with_context(|| format!("--isa {i:?}: expected scalar, avx2 or avx512vnni"))?);
        }
        opts.device = self.device;
        let e = Engine::load(&path, &opts).with_context(|| format!("loading {}", path.display()))?;
        if let Some(why) = &e.device_note
            && self.device == DeviceSpec::Auto
        {
            eprintln!("device auto: running on the CPU ({why})");
        }
        Ok(e)
    }
}

/// Sampling flags shared by `chat` and `generate`.
#[derive(Args, Debug, Clone)]
struct SamplingArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 512)]
    max_tokens: u32,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Alternatives to report per token (0..=20).
    #[arg(long, default_value_t = 0)]
    top_logprobs: u32,
}

impl SamplingArgs {
    fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            top_logprobs: self.top_logprobs,
            ignore_eos: false,
            logit_bias: Vec::new(),
            grammar: None,
        }
    }
}

/// A path if it names a file, else a known model name (fetched on first use).
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    let p = PathBuf::from(arg);
    if p.is_file() {
        return Ok(p);
    }
    if arg.contains('/') || arg.ends_with(".gguf") {
        bail!("--model {arg}: no such file");
    }
    Ok(model_store::ensure(arg, &mut progress_printer())?)
}

/// Prints pull progress to stderr: phases as lines; hashing as a live percentage on a terminal,
/// one line when done otherwise.
fn progress_printer() -> impl FnMut(Progress<'_>) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut last = u64::MAX;
    move |p| match p {
        Progress::Phase(phase) => eprintln!("chorus: {phase}…"),
        Progress::Hashing { done, total } => {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            if tty && pct != last {
                last = pct;
                eprint!("\rchorus: sha256 {pct:3}%");
            }
            if done == total {
                eprintln!("{}chorus: sha256 verified ({total} bytes)", if tty { "\r" } else { "" });
            }
        }
    }
}

fn read_messages(path: &PathBuf) -> Result<Vec<ChatMessage>> {
    /// A messages file larger than this is refused before it is read.
    const MAX_MESSAGES_FILE: u64 = 8 << 20;
    let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if len > MAX_MESSAGES_FILE {
        bail!("--messages {}: {len} bytes, above the limit of {MAX_MESSAGES_FILE}", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let arr = match v {
        serde_json::Value::Array(_) => v,
        serde_json::Value::Object(mut o) => {
            o.remove("messages").context("expected an array of messages or an object with \"messages\"")?
        }
        _ => bail!("{}: expected an array of messages", path.display()),
    };
    let msgs: Vec<ChatMessage> =
        serde_json::from_value(arr).context("messages[]: each needs string fields \"role\" and \"content\"")?;
    if msgs.is_empty() {
        bail!("messages: at least one message is required");
    }
    Ok(msgs)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Chat { model, sampling, system } => {
            let engine = model.load()?;
            chat::run(&engine, &sampling.params(), system)
        }
        Cmd::Generate { model, sampling, messages, json } => {
            let msgs = read_messages(&messages)?;
            let engine = model.load()?;
            let prompt = engine.chat_prompt(&msgs)?;
            let params = sampling.params();
            // Room for the prompt and the answer; the session refuses a prompt that leaves none.
            let mut session = engine.session(prompt.len() + params.max_tokens as usize)?;
            let stdout = std::io::stdout();
            let out_gen = if json {
                session.generate(&prompt, &params, &mut |_| {})?
            } else {
                let g = session.generate(&prompt, &params, &mut |s| {
                    let mut o = stdout.lock();
                    let _ = o.write_all(s.as_bytes());
                    let _ = o.flush();
                })?;
                println!();
                g
            };
            if json {
                let logprobs: Vec<_> = out_gen
                    .logprobs
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "id": s.id,
                            "logprob": s.logprob,
                            "top": s.top.iter().map(|t| serde_json::json!({"id": t.id, "logprob": t.logprob})).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let out = serde_json::json!({
                    "prompt_token_ids": out_gen.prompt_ids,
                    "token_ids": out_gen.token_ids,
                    "text": out_gen.text,
                    "finish_reason": out_gen.finish_reason.as_str(),
                    "logprobs": logprobs,
                });
                println!("{out}");
            }
            Ok(())
        }
        Cmd::Tokenize { model, json, no_special, text } => {
            let engine = model.load()?;
            let ids = engine.tokenizer.encode(&text, !no_special)?;
            if json {
                println!("{}", serde_json::json!({ "ids": ids }));
            } else {
                println!("{}", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
            }
            Ok(())
        }
        Cmd::Up(args) => {
            chorus_process::init_logging(cli.log_format);
            up::run(args)
        }
        Cmd::Edge { config } => {
            chorus_process::init_logging(cli.log_format);
            let cfg = match config {
                Some(p) => chorus_edge::EdgeConfig::load(&p)?,
                None => chorus_edge::EdgeConfig::default(),
            };
            chorus_edge::run(cfg)
        }
        Cmd::Core { config } => {
            chorus_process::init_logging(cli.log_format);
            let cfg = match config {
                Some(p) => chorus_core::config::CoreConfig::load(&p)?,
                None => chorus_core::CoreConfig::default(),
            };
            chorus_core::run(cfg)
        }
        Cmd::Certs { out, names } => {
            let pki = chorus_core::tls::mint_dev("chorus dev CA", &names)?;
            let (core, edge) = pki.write(&out).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "core: {} {} · edge: {} {} · CA: {}",
                core.cert.display(),
                core.key.display(),
                edge.cert.display(),
                edge.key.display(),
                core.ca.display()
            );
            Ok(())
        }
        Cmd::Regions { cmd: RegionsCmd::Check { file } } => {
            let f = chorus_edge::regions::RegionFile::load(&file)?;
            for r in &f.regions {
                let order: Vec<&str> = f.failover_order(&r.name).iter().map(|o| o.name.as_str()).collect();
                println!("{}: {} core(s); tries {}", r.name, r.cores.len(), order.join(" → "));
            }
            Ok(())
        }
        Cmd::Regions { cmd: RegionsCmd::Render { file, out, check } } => {
            use chorus_edge::provision;
            let json = provision::render_file(&file)?;
            let target = out.join(provision::TFVARS_FILE);
            if check {
                let have = std::fs::read_to_string(&target).unwrap_or_default();
                if have != json {
                    bail!("{} is not what {} renders; run without --check", target.display(), file.display());
                }
                println!("{}: up to date", target.display());
            } else {
                std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
                std::fs::write(&target, json).with_context(|| format!("writing {}", target.display()))?;
                println!("wrote {}", target.display());
            }
            Ok(())
        }
        Cmd::Model { cmd } => match cmd {
            ModelCmd::Pull { name } | ModelCmd::Path { name } => {
                let path = model_store::ensure(&name, &mut progress_printer())?;
                println!("{}", path.display());
                Ok(())
            }
            ModelCmd::List => {
                let cached = model_store::cached();
                println!("{:<14} {:>9}  {:<10} source", "model", "size", "cache");
                for m in model_store::KNOWN {
                    let state = match cached.iter().find(|c| c.0.name == m.name) {
                        Some((_, _, _, true)) => "verified",
                        Some(_) => "partial",
                        None => "-",
                    };
                    let source = match m.parts {
                        [one] => format!("{}=={}", one.package, one.version),
                        parts => format!(
                            "{} part packages{} ({}=={} …)",
                            parts.len(),
                            if m.manifest.is_some() { " + manifest" } else { "" },
                            parts[0].package,
                            parts[0].version
                        ),
                    };
                    println!("{:<14} {:>6} MB  {state:<10} {source}", m.name, m.bytes / 1_000_000);
                }
                for (m, path, len, _) in &cached {
                    println!("cached: {} {} ({} MB)", m.name, path.display(), len / 1_000_000);
                }
                Ok(())
            }
        },
        Cmd::Filter { cmd } => filter::run(cmd),
        Cmd::Feedback { cmd: FeedbackCmd::Export { config, out } } => {
            let cfg = match config {
                Some(p) => chorus_core::config::CoreConfig::load(&p)?,
                None => chorus_core::CoreConfig::default(),
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let stats = rt.block_on(async {
                let store = chorus_core::open_store(&cfg).await?;
                store.export_feedback(&out).await
            })?;
            println!("{}: {} new ratings written, {} already there", out.display(), stats.written, stats.present);
            Ok(())
        }
        Cmd::Bench { cmd } => match cmd {
            BenchCmd::Engine(b) => bench::engine(&b),
            BenchCmd::Quic(b) => bench_quic::run(&b),
            BenchCmd::Edge(b) => bench_edge::run(&b),
            BenchCmd::Load(b) => measure::load(&b),
            BenchCmd::Compare(b) => measure::compare(&b),
        },
        Cmd::Plan(p) => measure::plan(&p),
        Cmd::Eval(e) => measure::eval(&e),
    }
}
