//! Model fleets (a model and its own engine loop and scheduler) and the router that picks one
//! for a request: the configured fleet for its tier, a visible downgrade when that fleet is
//! busy and the tier allows one, and a typed refusal past the hard bound. Never a silent
//! fallback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chorus_engine::device::DeviceSpec;
use chorus_engine::engine::{Engine, EngineOptions};
use chorus_engine::serve::{EngineHandle, LoopState, ServeOptions};
use chorus_engine::threadpool::{ComputePriority, ThreadPool};
use chorus_proto::{SamplingDefaults, Tier};

use crate::config::{CoreConfig, FleetConfig};

/// One fleet.
#[derive(Debug)]
pub struct Fleet {
    pub name: String,
    /// The model id reported to clients.
    pub model: String,
    /// Sampling for requests that leave it unset: the fleet's config, else the model card's.
    pub defaults: SamplingDefaults,
    pub engine: Arc<Engine>,
    pub handle: EngineHandle,
    /// Accepted and not yet started, per tier.
    waiting: [AtomicU32; 4],
    /// Accepted and not yet finished.
    in_flight: AtomicU32,
    /// How long the engine has had work and completed no step, past the stall window, as of
    /// the watchdog's last look (0: not stalled).
    stall_ms: AtomicU64,
    /// Stalls the watchdog has seen begin.
    stalls_total: AtomicU64,
}

impl Fleet {
    /// Requests waiting to start, all tiers.
    pub fn waiting(&self) -> u32 {
        self.waiting.iter().map(|w| w.load(Ordering::Relaxed)).sum()
    }

    /// Requests of `tier` waiting to start.
    pub fn waiting_tier(&self, tier: Tier) -> u32 {
        self.waiting[tier.index()].load(Ordering::Relaxed)
    }

    /// Requests accepted and not finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The engine's stall as the watchdog last saw it.
    pub fn stalled_for(&self) -> Option<Duration> {
        let ms = self.stall_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Stalls seen so far.
    pub fn stalls(&self) -> u64 {
        self.stalls_total.load(Ordering::Relaxed)
    }

    /// Records the watchdog's finding; `true` when a stall begins.
    pub(crate) fn set_stall(&self, d: Option<Duration>) -> bool {
        let ms = d.map_or(0, |d| (d.as_millis() as u64).max(1));
        let began = self.stall_ms.swap(ms, Ordering::Relaxed) == 0 && ms > 0;
        if began {
            self.stalls_total.fetch_add(1, Ordering::Relaxed);
        }
        began
    }

    /// Why this fleet keeps the core from being ready, if it does: its engine loop is
    /// restarting or down, restarted less than `holddown` ago, or stalled.
    pub fn unready(&self, holddown: Duration) -> Option<String> {
        let h = self.handle.health();
        let name = &self.name;
        let failure = h.last_failure.as_ref();
        let cause = failure.map_or_else(String::new, |f| format!(" after a {}: {}", f.failure.kind(), f.failure));
        match h.state {
            LoopState::Restarting => return Some(format!("fleet {name}: engine restarting{cause}")),
            LoopState::Down => return Some(format!("fleet {name}: engine down{cause}")),
            LoopState::Running => {}
        }
        if let Some(f) = failure {
            let ago = Instant::now().saturating_duration_since(f.at);
            if ago < holddown {
                return Some(format!("fleet {name}: engine restarted {:.1} s ago{cause}", ago.as_secs_f64()));
            }
        }
        self.stalled_for()
            .map(|d| format!("fleet {name}: engine has work and completed no step for {:.1} s", d.as_secs_f64()))
    }

    /// Counts a request in; the guard counts it out when dropped.
    pub fn enter(self: &Arc<Self>, tier: Tier) -> FleetGuard {
        self.waiting[tier.index()].fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        FleetGuard { fleet: self.clone(), tier, waiting: true }
    }
}

/// A request's place in a fleet's gauges.
#[derive(Debug)]
pub struct FleetGuard {
    fleet: Arc<Fleet>,
    tier: Tier,
    waiting: bool,
}

impl FleetGuard {
    /// The request started running.
    pub fn started(&mut self) {
        if std::mem::take(&mut self.waiting) {
            self.fleet.waiting[self.tier.index()].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for FleetGuard {
    fn drop(&mut self) {
        self.started();
        self.fleet.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the fleets could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleets.{fleet}.model = {model:?}: {why}")]
    Model { fleet: String, model: String, why: String },
    #[error("fleets.{fleet}: {why}")]
    Start { fleet: String, why: String },
}

/// Resolves a fleet's `model` to a file: a path to a GGUF, or a known model name (fetched and
/// verified into the cache on first use).
pub fn resolve_model(model: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(model);
    if p.is_file() {
        return Ok(p);
    }
    if model.contains('/') || model.ends_with(".gguf") {
        return Err("no such file".into());
    }
    chorus_engine::model_store::ensure(model, &mut |_| {}).map_err(|e| e.to_string())
}

/// Turns a fleet's name and config into a loaded engine.
pub type EngineLoader<'a> = dyn FnMut(&str, &FleetConfig) -> Result<Arc<Engine>, FleetError> + 'a;

/// Loads each distinct model once (memory-mapped, weights packed once) and starts one engine
/// loop per fleet. `load` turns a fleet's config into an engine; [`load_engines`] is the
/// default.
pub fn start_fleets(cfg: &CoreConfig, load: &mut EngineLoader<'_>) -> Result<Vec<Arc<Fleet>>, FleetError> {
    let tiers = cfg.tier_configs();
    let mut out = Vec::new();
    for (name, f) in &cfg.fleets {
        let engine = load(name, f)?;
        let model = std::path::Path::new(&f.model)
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|_| f.model.ends_with(".gguf"))
            .unwrap_or(&f.model)
            .to_string();
        let opts = ServeOptions {
            kv_tokens: f.kv_tokens,
            max_step_tokens: f.max_step_tokens,
            max_running: f.max_running,
            prefix_cache: f.prefix_cache,
            model_id: model.clone(),
            tiers: tiers.clone(),
            gpu_memory_fraction: f.gpu_memory_fraction,
        };
        let handle = EngineHandle::start(engine.clone(), opts)
            .map_err(|e| FleetError::Start { fleet: name.clone(), why: e.to_string() })?;
        crate::failpoint::arm_engine(handle.failpoints());
        let defaults = sampling_defaults(f);
        out.push(Arc::new(Fleet {
            name: name.clone(),
            model,
            defaults,
            engine,
            handle,
            waiting: Default::default(),
            in_flight: AtomicU32::new(0),
            stall_ms: AtomicU64::new(0),
            stalls_total: AtomicU64::new(0),
        }));
    }
    Ok(out)
}

/// A fleet's sampling for requests that leave it unset: each value from the fleet's config,
/// else the known model's card, else OpenAI's (temperature 1, no truncation).
pub fn sampling_defaults(f: &FleetConfig) -> SamplingDefaults {
    let card = chorus_engine::model_store::known_for(&f.model).map(|m| m.defaults);
    let base = SamplingDefaults::default();
    SamplingDefaults {
        temperature: f.temperature.or(card.map(|c| c.temperature)).unwrap_or(base.temperature),
        top_p: f.top_p.or(card.map(|c| c.top_p)).unwrap_or(base.top_p),
        top_k: f.top_k.or(card.map(|c| c.top_k)).unwrap_or(base.top_k),
    }
}

/// The default loader: resolve, then load each distinct file once, on `device`. Every model
/// computes on one pool of `threads` (the machine's cores are not multiplied by the number of
/// models), whose steps go to the fleets' loops by tier weight and wait
/// ([`chorus_engine::threadpool::ThreadPool::step`]).
pub fn load_engines(
    threads: usize,
    priority: ComputePriority,
    device: DeviceSpec,
) -> impl FnMut(&str, &FleetConfig) -> Result<Arc<Engine>, FleetError> {
    let mut loaded: HashMap<PathBuf, Arc<Engine>> = HashMap::new();
    let mut pool: Option<Arc<ThreadPool>> = None;
    move |fleet, f| {
        let err = |why: String| FleetError::Model { fleet: fleet.to_string(), model: f.model.clone(), why };
        let path = resolve_model(&f.model).map_err(err)?;
        let key = path.canonicalize().unwrap_or(path.clone());
        if let Some(e) = loaded.get(&key) {
            return Ok(e.clone());
        }
        let pool = match &pool {
            Some(p) => p.clone(),
            None => pool.insert(Engine::compute_pool(threads, priority).map_err(|e| err(e.to_string()))?).clone(),
        };
        let e = Arc::new(
            Engine::load_on(&path, &EngineOptions { threads, isa: None, device }, pool)
                .map_err(|e| err(e.to_string()))?,
        );
        match &e.device_note {
            Some(why) => tracing::info!(fleet, device = %e.device_name(), "device auto: running on the CPU ({why})"),
            None => tracing::info!(fleet, device = %e.device_name(), "model loaded"),
        }
        loaded.insert(key, e.clone());
        Ok(e)
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To `fleet` (an index into the fleets); `degraded` when not its tier's own fleet.
    Fleet { fleet: usize, degraded: bool },
    /// Its fleet is past the hard bound.
    OverCapacity { fleet: usize, waiting: u32, bound: u32, retry_after_ms: u32 },
}

/// Tier → fleet with overflow rules, resolved to fleet indices.
#[derive(Debug, Clone)]
pub struct Router {
    routes: [usize; 4],
    downgrade: [Option<usize>; 4],
    degrade_at: Vec<u32>,
    reject_at: Vec<u32>,
    retry_after_ms: u32,
}

impl Router {
    /// From a validated config and the fleets in the order [`start_fleets`] made them.
    pub fn new(cfg: &CoreConfig, fleets: &[Arc<Fleet>]) -> Self {
        let idx = |name: &str| fleets.iter().position(|f| f.name == name).expect("validated: fleet exists");
        let r = &cfg.router;
        Self {
            routes: Tier::ALL.map(|t| idx(&r.routes[t.as_str()])),
            downgrade: Tier::ALL.map(|t| r.downgrade.get(t.as_str()).map(|f| idx(f))),
            degrade_at: fleets.iter().map(|f| r.degrade_at.get(&f.name).copied().unwrap_or(u32::MAX)).collect(),
            reject_at: fleets.iter().map(|f| r.reject_at.get(&f.name).copied().unwrap_or(u32::MAX)).collect(),
            retry_after_ms: r.retry_after_ms,
        }
    }

    /// The fleet a tier is configured to use.
    pub fn home(&self, tier: Tier) -> usize {
        self.routes[tier.index()]
    }

    /// Picks the fleet for a request of `tier`, given each fleet's waiting count.
    pub fn route(&self, tier: Tier, waiting: impl Fn(usize) -> u32) -> Route {
        let home = self.routes[tier.index()];
        let w = waiting(home);
        if w >= self.reject_at[home] {
            return Route::OverCapacity {
                fleet: home,
                waiting: w,
                bound: self.reject_at[home],
                retry_after_ms: self.retry_after_ms,
            };
        }
        if w >= self.degrade_at[home]
            && let Some(alt) = self.downgrade[tier.index()].filter(|&a| a != home)
            && waiting(alt) < self.degrade_at[alt]
        {
            return Route::Fleet { fleet: alt, degraded: true };
        }
        Route::Fleet { fleet: home, degraded: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_sampling_takes_the_fleet_then_the_model_card() {
        let smol = FleetConfig::default();
        assert_eq!(sampling_defaults(&smol), SamplingDefaults { temperature: 0.2, top_p: 0.9, top_k: 0 });
        let gemma = FleetConfig { model: "gemma3-270m".into(), temperature: Some(0.7), ..FleetConfig::default() };
        assert_eq!(sampling_defaults(&gemma), SamplingDefaults { temperature: 0.7, top_p: 0.95, top_k: 64 });
        let file = FleetConfig { model: "/models/other.gguf".into(), ..FleetConfig::default() };
        assert_eq!(sampling_defaults(&file), SamplingDefaults::default());
        let cached = FleetConfig { model: "/cache/SmolLM2-135M-Instruct.Q4_1.gguf".into(), ..FleetConfig::default() };
        assert_eq!(sampling_defaults(&cached).temperature, 0.2, "a known model's file is recognised");
    }

    fn router(degrade: u32, reject: u32) -> Router {
        Router {
            routes: [0, 0, 1, 1],
            downgrade: [None, None, Some(0), None],
            degrade_at: vec![10, degrade],
            reject_at: vec![100, reject],
            retry_after_ms: 1500,
        }
    }

    #[test]
    fn tiers_go_home_while_there_is_room() {
        let r = router(4, 8);
        for (t, f) in [(Tier::Free, 0), (Tier::Team, 0), (Tier::Plus, 1), (Tier::Enterprise, 1)] {
            assert_eq!(r.route(t, |_| 3), Route::Fleet { fleet: f, degraded: false });
        }
    }

    #[test]
    fn plus_is_downgraded_visibly_and_enterprise_waits() {
        let r = router(4, 8);
        let w = |f: usize| if f == 1 { 5 } else { 0 };
        assert_eq!(r.route(Tier::Plus, w), Route::Fleet { fleet: 0, degraded: true });
        assert_eq!(r.route(Tier::Enterprise, w), Route::Fleet { fleet: 1, degraded: false });
        // The downgrade fleet is busy too: plus waits at home.
        assert_eq!(r.route(Tier::Plus, |f| if f == 1 { 5 } else { 10 }), Route::Fleet { fleet: 1, degraded: false });
    }

    #[test]
    fn past_the_hard_bound_is_over_capacity() {
        let r = router(4, 8);
        assert_eq!(
            r.route(Tier::Plus, |_| 8),
            Route::OverCapacity { fleet: 1, waiting: 8, bound: 8, retry_after_ms: 1500 }
        );
    }
}
