//! The wasmtime side: one `Engine` with a pooling allocator and epoch interruption, the
//! `bindgen!` of the filter world, the host imports, compiling (with a verified on-disk cache of
//! precompiled artifacts) and one bounded call into a fresh instance.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, UpdateDeadline,
};

use crate::limits::Limits;
use crate::metrics::FilterMetrics;
use crate::signing::{hex, sha256};
use crate::store::CounterStore;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wasm-filters/wit",
        world: "filter",
    });
}

pub(crate) use bindings::Filter as FilterBindings;
pub(crate) use bindings::FilterPre;
pub(crate) use bindings::chorus::filter::host::{self as wit_host, Level};
pub(crate) use bindings::chorus::filter::types as wit;

/// One epoch tick: how often a running filter's budget is checked.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// A call is stopped after this many times its budget in wall-clock time, whatever its CPU use.
pub const WALL_CAP_FACTOR: u32 = 20;
/// ... but never sooner than this.
pub const MIN_WALL_CAP: Duration = Duration::from_millis(100);

/// CPU time this thread has run.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Without a per-thread CPU clock, wall time stands in (budgets are then wall-clock).
#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// How the engine is built.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Instances alive at once across all requests (each filter call holds one).
    pub max_concurrent_instances: u32,
    /// The largest linear memory any filter may have (a manifest may ask for less).
    pub max_memory_bytes: usize,
    /// Wasm stack limit per call.
    pub max_wasm_stack: usize,
    /// Where precompiled artifacts are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Bytes at the start of each pooled linear memory kept mapped and reset by zeroing
    /// between instances; the rest is returned to the OS and faults back in on use.
    pub keep_resident_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_instances: 256,
            max_memory_bytes: crate::manifest::MAX_MEMORY_MIB as usize * 1024 * 1024,
            max_wasm_stack: 512 * 1024,
            cache_dir: None,
            keep_resident_bytes: 256 * 1024,
        }
    }
}

/// Why a module could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("module is {0} bytes; the limit is {1}")]
    TooLarge(usize, usize),
    #[error("not a valid component: {0}")]
    Invalid(String),
    #[error("imports `{0}`, which filters may not use (no sockets, HTTP or foreign interfaces)")]
    ForbiddenImport(String),
    #[error("does not implement chorus:filter@0.2.0: {0}")]
    WrongWorld(String),
}

/// The shared engine. Dropping it stops the epoch ticker.
pub struct FilterRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    cache_dir: Option<PathBuf>,
    compat: String,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FilterRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterRuntime").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

impl Drop for FilterRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Feeds `Hash` output into SHA-256, for a cache key stable across runs of one build.
struct DigestHasher(sha2::Sha256);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
}

/// Largest module accepted.
pub const MAX_MODULE_BYTES: usize = 16 * 1024 * 1024;

impl FilterRuntime {
    pub fn new(cfg: &RuntimeConfig) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let n = cfg.max_concurrent_instances.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .max_memory_size(cfg.max_memory_bytes)
            .linear_memory_keep_resident(cfg.keep_resident_bytes)
            // Reset only the pages an instance dirtied, without madvise, where the kernel can
            // say which (Linux 6.7+); otherwise amortize the madvise and TLB flushes.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(16)
            .table_keep_resident(16 * 1024);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .max_wasm_stack(cfg.max_wasm_stack)
            .wasm_component_model(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        FilterBindings::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("linking host imports: {e:#}"))?;

        let mut hasher = DigestHasher(sha2::Sha256::default());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let compat = hex(&sha2::Digest::finalize(hasher.0)[..8]);

        let stop = Arc::new(AtomicBool::new(false));
        let (weak, flag) = (engine.weak(), stop.clone());
        std::thread::Builder::new().name("chorus-filter-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(FilterRuntime { engine, linker, cache_dir: cfg.cache_dir.clone(), compat, stop })
    }

    /// Identifies the compiler settings; part of every cache key.
    pub fn compatibility_hash(&self) -> &str {
        &self.compat
    }

    fn cache_paths(&self, wasm: &[u8]) -> Option<(PathBuf, PathBuf)> {
        let dir = self.cache_dir.as_ref()?;
        let stem = format!("{}-{}", hex(&sha256(wasm)), self.compat);
        Some((dir.join(format!("{stem}.cwasm")), dir.join(format!("{stem}.sha256"))))
    }

    /// Compile (or fetch from the cache) and check the component's imports and exports.
    /// Callers verify the module's signature before this.
    pub(crate) fn prepare(&self, wasm: &[u8]) -> Result<FilterPre<CallState>, CompileError> {
        if wasm.len() > MAX_MODULE_BYTES {
            return Err(CompileError::TooLarge(wasm.len(), MAX_MODULE_BYTES));
        }
        let component = match self.cached(wasm) {
            Some(c) => c,
            None => {
                let component =
                    Component::new(&self.engine, wasm).map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
                self.store_cache(wasm, &component);
                component
            }
        };
        let mut linker = self.linker.clone();
        for (name, _) in component.component_type().imports(&self.engine) {
            match import_kind(name) {
                Import::Allowed => {}
                Import::OtherAbi => {
                    return Err(CompileError::WrongWorld(format!(
                        "it imports `{name}`; rebuild it with the current chorus-filter-sdk"
                    )));
                }
                Import::Forbidden => return Err(CompileError::ForbiddenImport(name.to_owned())),
            }
        }
        // What std links in for a wasip2 guest (stdio, clocks, random, environment) traps if
        // called: a filter has no I/O of its own.
        linker.define_unknown_imports_as_traps(&component).map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| CompileError::WrongWorld(format!("{e:#}")))?;
        FilterPre::new(pre).map_err(|e| CompileError::WrongWorld(format!("{e:#}")))
    }

    fn cached(&self, wasm: &[u8]) -> Option<Component> {
        let (artifact, digest) = self.cache_paths(wasm)?;
        let bytes = std::fs::read(&artifact).ok()?;
        let expected = std::fs::read_to_string(&digest).ok()?;
        if expected.trim() != hex(&sha256(&bytes)) {
            return None;
        }
        // SAFETY: `deserialize` trusts its input to be an artifact this wasmtime produced. The
        // bytes are in memory (no file can change under us), were found under the SHA-256 of a
        // module whose signature the caller verified, and match the digest we wrote beside
        // them when we compiled that module; wasmtime still checks its own version header.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &bytes) };
        component.ok()
    }

    fn store_cache(&self, wasm: &[u8], component: &Component) {
        let Some((artifact, digest)) = self.cache_paths(wasm) else { return };
        let Ok(bytes) = component.serialize() else { return };
        let write = |path: &Path, data: &[u8]| -> std::io::Result<()> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, path)
        };
        // Artifact first, digest last: a crash between leaves an artifact nobody trusts.
        let _ = write(&artifact, &bytes).and_then(|()| write(&digest, hex(&sha256(&bytes)).as_bytes()));
    }

    /// A fresh store for one call of one filter with a time budget of `budget`.
    ///
    /// The budget is CPU time on the calling thread: when the epoch deadline passes, a call that
    /// has not used its budget (the thread was descheduled, or waited in a host call) gets
    /// another tick, up to a wall-clock cap of [`WALL_CAP_FACTOR`] × the budget (at least
    /// [`MIN_WALL_CAP`]), so a loaded machine does not fail healthy filters and nothing holds a
    /// thread for long.
    pub(crate) fn store(&self, state: CallState, budget: Duration) -> Store<CallState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.mem);
        let ticks = budget.as_nanos().div_ceil(EPOCH_TICK.as_nanos()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let cpu_start = thread_cpu_time();
        let wall_stop = Instant::now() + (budget * WALL_CAP_FACTOR).max(MIN_WALL_CAP);
        store.epoch_deadline_callback(move |_| {
            let cpu_used = thread_cpu_time().saturating_sub(cpu_start);
            if cpu_used < budget && Instant::now() < wall_stop {
                Ok(UpdateDeadline::Continue(1))
            } else {
                Ok(UpdateDeadline::Interrupt)
            }
        });
        store
    }
}

enum Import {
    Allowed,
    /// The filter ABI, but a version this host does not implement.
    OtherAbi,
    Forbidden,
}

fn import_kind(name: &str) -> Import {
    if let Some(rest) = name.strip_prefix("chorus:filter/") {
        // Semver-compatible versions of this ABI: 0.2.x.
        let compatible = ["host@0.2.", "types@0.2."].iter().any(|p| rest.starts_with(p));
        return if compatible { Import::Allowed } else { Import::OtherAbi };
    }
    // Interfaces a Rust std guest links by default; they are trap-linked, never implemented.
    let std = ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/"];
    if std.iter().any(|p| name.starts_with(p)) { Import::Allowed } else { Import::Forbidden }
}

/// Per-filter data every call of that filter shares.
#[derive(Debug)]
pub(crate) struct FilterInfo {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub metrics: Arc<FilterMetrics>,
}

/// Services shared by all filters.
#[derive(Debug)]
pub(crate) struct HostServices {
    pub counters: CounterStore,
    pub kv: RwLock<Arc<BTreeMap<String, Vec<u8>>>>,
    pub limits: Limits,
}

/// The store data of one call.
pub(crate) struct CallState {
    pub filter: Arc<FilterInfo>,
    pub services: Arc<HostServices>,
    pub now_ms: u64,
    pub mem: MemLimiter,
    pub logs_left: u32,
    pub calls_left: u32,
}

/// Caps linear memory and table growth; remembers a refusal so the failure is reported as
/// "memory" rather than a bare trap.
pub(crate) struct MemLimiter {
    pub max_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_bytes;
        self.hit |= !ok;
        Ok(ok)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = desired <= 65_536;
        self.hit |= !ok;
        Ok(ok)
    }
}

impl CallState {
    fn spend_call(&mut self) -> Result<(), String> {
        if self.calls_left == 0 {
            return Err(format!("more than {} host calls in one request", self.services.limits.max_host_calls));
        }
        self.calls_left -= 1;
        Ok(())
    }

    fn key(&self, key: &str) -> Result<String, String> {
        let max = self.services.limits.max_key_bytes;
        if key.is_empty() || key.len() > max {
            return Err(format!("counter key must be 1..={max} bytes, got {}", key.len()));
        }
        Ok(format!("{}:{key}", self.filter.name))
    }
}

impl wit::Host for CallState {}

impl wit_host::Host for CallState {
    fn window_hit(&mut self, key: String, limit: u32, window_ms: u64) -> Result<wit_host::WindowStatus, String> {
        self.spend_call()?;
        let key = self.key(&key)?;
        let hit = self.services.counters.window_hit(&key, limit, window_ms, self.now_ms).map_err(|e| e.to_string())?;
        Ok(wit_host::WindowStatus { allowed: hit.allowed, count: hit.count, retry_after_ms: hit.retry_after_ms })
    }

    fn window_release(&mut self, key: String, at_ms: u64) -> Result<bool, String> {
        self.spend_call()?;
        let key = self.key(&key)?;
        self.services.counters.window_release(&key, at_ms).map_err(|e| e.to_string())
    }

    fn counter_add(&mut self, key: String, delta: i64, window_ms: u64) -> Result<i64, String> {
        self.spend_call()?;
        let key = self.key(&key)?;
        self.services.counters.counter_add(&key, delta, window_ms, self.now_ms).map_err(|e| e.to_string())
    }

    fn budget_reserve(
        &mut self,
        key: String,
        amount: i64,
        limit: i64,
        window_ms: u64,
    ) -> Result<wit_host::BudgetStatus, String> {
        self.spend_call()?;
        let key = self.key(&key)?;
        let r = self
            .services
            .counters
            .budget_reserve(&key, amount, limit, window_ms, self.now_ms)
            .map_err(|e| e.to_string())?;
        Ok(wit_host::BudgetStatus { granted: r.granted, used: r.used, retry_after_ms: r.retry_after_ms })
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        if key.len() > self.services.limits.max_key_bytes {
            return None;
        }
        let kv = self.services.kv.read().unwrap_or_else(|p| p.into_inner()).clone();
        kv.get(&key).cloned()
    }

    fn now_ms(&mut self) -> u64 {
        self.now_ms
    }

    fn config(&mut self, name: String) -> Option<String> {
        self.filter.config.get(&name).cloned()
    }

    fn token_count(&mut self, text: String) -> u32 {
        estimate_tokens(&text)
    }

    fn log(&mut self, level: Level, message: String) {
        if self.logs_left == 0 || !self.filter.metrics.log_allowed(self.now_ms) {
            self.filter.metrics.logs_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.logs_left -= 1;
        let message = crate::limits::truncate(&message, self.services.limits.max_log_bytes);
        let filter = self.filter.name.as_str();
        match level {
            Level::Debug => tracing::debug!(filter, "{message}"),
            Level::Info => tracing::info!(filter, "{message}"),
            Level::Warn => tracing::warn!(filter, "{message}"),
            Level::Error => tracing::error!(filter, "{message}"),
        }
    }

    fn metric_add(&mut self, name: String, value: u64) {
        self.filter.metrics.custom_add(&name, value);
    }
}

/// A conservative token estimate: runs of letters cost one token per six letters (at least
/// one), every digit, punctuation mark and non-ASCII character one token.
pub fn estimate_tokens(text: &str) -> u32 {
    let mut tokens: u64 = 0;
    let mut run = 0u64;
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            run += 1;
            continue;
        }
        if run > 0 {
            tokens += run.div_ceil(6);
            run = 0;
        }
        if !c.is_ascii_whitespace() {
            tokens += 1;
        }
    }
    tokens += run.div_ceil(6);
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_of_another_abi_version_are_told_apart_from_forbidden_ones() {
        assert!(matches!(import_kind("chorus:filter/host@0.2.0"), Import::Allowed));
        assert!(matches!(import_kind("chorus:filter/types@0.2.3"), Import::Allowed));
        assert!(matches!(import_kind("wasi:cli/environment@0.2.0"), Import::Allowed));
        assert!(matches!(import_kind("chorus:filter/host@0.1.0"), Import::OtherAbi));
        assert!(matches!(import_kind("wasi:sockets/tcp@0.2.0"), Import::Forbidden));
    }
}
