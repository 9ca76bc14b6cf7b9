//! The filter host: configuration, loading and verifying modules into a chain, swapping chains
//! atomically, and watching a module directory for changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::chain::{Chain, DEFAULT_VISIBLE_HEADERS, LoadedFilter};
use crate::limits::Limits;
use crate::manifest::{Manifest, ManifestError, valid_name};
use crate::metrics::Registry;
use crate::runtime::{CompileError, FilterInfo, FilterRuntime, HostServices, RuntimeConfig};
use crate::signing::{Signature, SignatureError, TrustedKey, hex, sha256};
use crate::store::CounterStore;

/// Who may sign the modules this host runs.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    pub keys: Vec<TrustedKey>,
    /// Accept unsigned modules (and say so in every description). Never in production.
    pub dev_mode: bool,
}

/// Everything the host needs.
#[derive(Debug)]
pub struct HostConfig {
    pub trust: TrustPolicy,
    pub runtime: RuntimeConfig,
    pub limits: Limits,
    pub counters: CounterStore,
    /// Headers every filter sees (lower-case); credential headers are added by capability.
    pub visible_headers: Vec<String>,
    /// Operator configuration per filter name.
    pub filter_config: BTreeMap<String, BTreeMap<String, String>>,
    /// Read-only operator data shared by all filters.
    pub kv: BTreeMap<String, Vec<u8>>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            trust: TrustPolicy::default(),
            runtime: RuntimeConfig::default(),
            limits: Limits::default(),
            counters: CounterStore::in_process(1_000_000),
            visible_headers: DEFAULT_VISIBLE_HEADERS.iter().map(|h| h.to_string()).collect(),
            filter_config: BTreeMap::new(),
            kv: BTreeMap::new(),
        }
    }
}

/// One module as found on disk or embedded in the binary.
#[derive(Clone, Debug)]
pub struct ModuleSource {
    pub name: String,
    pub wasm: Vec<u8>,
    pub manifest: String,
    /// The `.sig` file's text.
    pub signature: Option<String>,
    /// Compiled into this binary: trusted as the binary itself is.
    pub builtin: bool,
}

/// Why a module or a chain could not be loaded. Loading is all-or-nothing.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("filter `{name}`: {source}")]
    Signature { name: String, source: SignatureError },
    #[error("filter `{name}`: {source}")]
    Manifest { name: String, source: ManifestError },
    #[error("filter `{name}`: manifest names `{found}`")]
    NameMismatch { name: String, found: String },
    #[error("filter `{name}`: {source}")]
    Compile { name: String, source: CompileError },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("chain: {0}")]
    Chain(String),
}

/// Most filters in one chain.
pub const MAX_CHAIN_LEN: usize = 16;

/// The host: owns the engine, the counters and the current chain.
pub struct FilterHost {
    runtime: Arc<FilterRuntime>,
    services: Arc<HostServices>,
    trust: TrustPolicy,
    visible_headers: Vec<String>,
    filter_config: RwLock<BTreeMap<String, BTreeMap<String, String>>>,
    current: RwLock<Arc<Chain>>,
    metrics: Arc<Registry>,
    last_reload_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for FilterHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterHost").field("chain", &self.chain()).finish_non_exhaustive()
    }
}

impl FilterHost {
    /// A host with an empty chain (everything is allowed until a chain is installed).
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        let runtime = Arc::new(FilterRuntime::new(&config.runtime)?);
        let services = Arc::new(HostServices {
            counters: config.counters,
            kv: RwLock::new(Arc::new(config.kv)),
            limits: config.limits,
        });
        let visible_headers: Vec<String> = config.visible_headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        let empty = Arc::new(Chain {
            runtime: runtime.clone(),
            services: services.clone(),
            filters: Vec::new(),
            visible_headers: visible_headers.clone(),
        });
        Ok(FilterHost {
            runtime,
            services,
            trust: config.trust,
            visible_headers,
            filter_config: RwLock::new(config.filter_config),
            current: RwLock::new(empty),
            metrics: Arc::new(Registry::default()),
            last_reload_error: Mutex::new(None),
        })
    }

    /// The chain requests run through now.
    pub fn chain(&self) -> Arc<Chain> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn metrics(&self) -> &Registry {
        &self.metrics
    }

    /// Replace the operator data filters read with `kv-get`.
    pub fn set_kv(&self, kv: BTreeMap<String, Vec<u8>>) {
        *self.services.kv.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(kv);
    }

    /// Replace one filter's operator configuration; takes effect at the next (re)load.
    pub fn set_filter_config(&self, name: &str, config: BTreeMap<String, String>) {
        self.filter_config.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), config);
    }

    /// Verify and compile modules into a chain without installing it.
    pub fn build(&self, sources: &[ModuleSource]) -> Result<Arc<Chain>, LoadError> {
        if sources.len() > MAX_CHAIN_LEN {
            return Err(LoadError::Chain(format!("{} filters; the limit is {MAX_CHAIN_LEN}", sources.len())));
        }
        let mut filters = Vec::with_capacity(sources.len());
        for src in sources {
            if filters.iter().any(|f: &LoadedFilter| f.info.name == src.name) {
                return Err(LoadError::Chain(format!("filter `{}` appears twice", src.name)));
            }
            filters.push(self.load_one(src)?);
        }
        Ok(Arc::new(Chain {
            runtime: self.runtime.clone(),
            services: self.services.clone(),
            filters,
            visible_headers: self.visible_headers.clone(),
        }))
    }

    fn load_one(&self, src: &ModuleSource) -> Result<LoadedFilter, LoadError> {
        let name = src.name.clone();
        // Verify before parsing or compiling anything the author controls.
        let signer = match (&src.signature, src.builtin) {
            (_, true) => "builtin".to_owned(),
            (Some(sig), false) => {
                let checked = Signature::from_file(sig)
                    .and_then(|s| s.verify(&src.wasm, src.manifest.as_bytes(), &self.trust.keys));
                match checked {
                    Ok(key) => key,
                    Err(SignatureError::UntrustedKey(_)) if self.trust.dev_mode => "unverified (dev mode)".to_owned(),
                    Err(source) => return Err(LoadError::Signature { name, source }),
                }
            }
            (None, false) if self.trust.dev_mode => "unsigned (dev mode)".to_owned(),
            (None, false) => return Err(LoadError::Signature { name, source: SignatureError::Unsigned }),
        };
        let manifest =
            Manifest::parse(&src.manifest).map_err(|source| LoadError::Manifest { name: name.clone(), source })?;
        if manifest.name != src.name {
            return Err(LoadError::NameMismatch { name, found: manifest.name });
        }
        let pre =
            self.runtime.prepare(&src.wasm).map_err(|source| LoadError::Compile { name: name.clone(), source })?;
        let metrics = self.metrics.filter(&name);
        metrics.set_log_rate(self.services.limits.max_logs_per_second);
        let config =
            self.filter_config.read().unwrap_or_else(|p| p.into_inner()).get(&name).cloned().unwrap_or_default();
        Ok(LoadedFilter {
            info: Arc::new(FilterInfo { name, config, metrics }),
            manifest,
            pre,
            digest: hex(&sha256(&src.wasm)),
            signer,
        })
    }

    /// Make `chain` the one new requests use. Requests already running keep theirs.
    pub fn install(&self, chain: Arc<Chain>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = chain;
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Build from `sources` and install; on any error the running chain stays.
    pub fn load(&self, sources: &[ModuleSource]) -> Result<Arc<Chain>, LoadError> {
        match self.build(sources) {
            Ok(chain) => {
                self.install(chain.clone());
                *self.last_reload_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(chain)
            }
            Err(e) => {
                self.record_load_failure(&e);
                Err(e)
            }
        }
    }

    /// Load the chain a module directory describes.
    pub fn load_dir(&self, dir: &Path) -> Result<Arc<Chain>, LoadError> {
        let sources = read_dir(dir).inspect_err(|e| self.record_load_failure(e))?;
        self.load(&sources)
    }

    fn record_load_failure(&self, e: &LoadError) {
        self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_reload_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// Why the last load failed, if it did.
    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Poll `dir` every `interval`; when its contents change, load it and swap the chain in.
    /// A directory that fails to load leaves the running chain untouched (and is retried when
    /// it changes again). Stops when the handle is dropped.
    pub fn watch(self: &Arc<Self>, dir: PathBuf, interval: Duration) -> std::io::Result<WatchHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let (host, flag) = (Arc::downgrade(self), stop.clone());
        let mut seen = fingerprint(&dir);
        let thread = std::thread::Builder::new().name("chorus-filter-watch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let now = fingerprint(&dir);
                if now == seen {
                    continue;
                }
                seen = now;
                let Some(host) = host.upgrade() else { break };
                match host.load_dir(&dir) {
                    Ok(chain) => tracing::info!(filters = ?chain.names(), "filter chain reloaded"),
                    Err(e) => tracing::error!(error = %e, "filter chain reload failed; keeping the running chain"),
                }
            }
        })?;
        Ok(WatchHandle { stop, thread: Some(thread) })
    }
}

/// Stops the directory watcher when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Names, sizes and modification times of a directory's files.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().take(1024) {
            if let Ok(meta) = e.metadata() {
                out.push((e.file_name().to_string_lossy().into_owned(), meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// The chain file of a module directory: `filters = ["auth", "ratelimit", "presafety"]`.
pub const CHAIN_FILE: &str = "chain.toml";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    filters: Vec<String>,
}

fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>, LoadError> {
    let io = |reason: String| LoadError::Io { path: path.to_owned(), reason };
    let meta = std::fs::metadata(path).map_err(|e| io(e.to_string()))?;
    if meta.len() > max as u64 {
        return Err(io(format!("{} bytes is over the {max}-byte limit", meta.len())));
    }
    let bytes = std::fs::read(path).map_err(|e| io(e.to_string()))?;
    if bytes.len() > max {
        return Err(io(format!("grew past the {max}-byte limit while being read")));
    }
    Ok(bytes)
}

fn read_text(path: &Path, max: usize) -> Result<String, LoadError> {
    String::from_utf8(read_limited(path, max)?)
        .map_err(|_| LoadError::Io { path: path.to_owned(), reason: "not UTF-8".into() })
}

/// Read a module directory: `chain.toml` names the filters in order; each has `NAME.wasm`,
/// `NAME.toml` (manifest) and, unless the host is in dev mode, `NAME.sig`.
pub fn read_dir(dir: &Path) -> Result<Vec<ModuleSource>, LoadError> {
    let chain_path = dir.join(CHAIN_FILE);
    let chain: ChainFile = toml::from_str(&read_text(&chain_path, 16 * 1024)?)
        .map_err(|e| LoadError::Io { path: chain_path.clone(), reason: e.message().to_owned() })?;
    if chain.filters.len() > MAX_CHAIN_LEN {
        return Err(LoadError::Chain(format!("{} filters; the limit is {MAX_CHAIN_LEN}", chain.filters.len())));
    }
    let mut sources = Vec::new();
    for name in chain.filters {
        if !valid_name(&name) {
            return Err(LoadError::Chain(format!("filter name {name:?} must be 1-32 of [a-z0-9-]")));
        }
        let sig_path = dir.join(format!("{name}.sig"));
        let signature = if sig_path.exists() { Some(read_text(&sig_path, 64 * 1024)?) } else { None };
        sources.push(ModuleSource {
            wasm: read_limited(&dir.join(format!("{name}.wasm")), crate::runtime::MAX_MODULE_BYTES)?,
            manifest: read_text(&dir.join(format!("{name}.toml")), crate::manifest::MAX_MANIFEST_BYTES)?,
            signature,
            builtin: false,
            name,
        });
    }
    Ok(sources)
}
