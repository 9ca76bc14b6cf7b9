//! [`Core`]: what every connection and request of a core shares — the configuration, the
//! fleets and the router, the post-generation policy, the conversation store, metrics — and
//! where the core is in its life ([`Phase`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chorus_proto::{FleetLoad, LoadReport};
use tokio::sync::watch;

use crate::config::CoreConfig;
use crate::fleet::{Fleet, Router};
use crate::metrics::CoreMetrics;
use crate::safety::Policy;
use crate::store::ConversationStore;

/// Where the core is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// No new connections or requests; in-flight requests run on.
    Draining,
    /// In-flight requests are ended with `shutting_down`.
    Stopping,
}

/// Everything a connection or request needs; shared.
#[derive(Debug)]
pub struct Core {
    pub cfg: CoreConfig,
    pub fleets: Vec<Arc<Fleet>>,
    pub router: Router,
    pub policy: Policy,
    pub store: Arc<ConversationStore>,
    pub metrics: CoreMetrics,
    pub limits: chorus_proto::Limits,
    /// Per-tier scheduling limits (the config's, resolved once).
    pub tiers: [chorus_sched::TierConfig; 4],
    phase: watch::Sender<Phase>,
}

impl Core {
    /// A core over started fleets and an open store.
    pub fn new(cfg: CoreConfig, fleets: Vec<Arc<Fleet>>, store: Arc<ConversationStore>) -> Arc<Self> {
        let router = Router::new(&cfg, &fleets);
        let policy = Policy::new(&cfg.post_safety);
        Arc::new(Self {
            tiers: cfg.tier_configs(),
            cfg,
            fleets,
            router,
            policy,
            store,
            metrics: CoreMetrics::default(),
            limits: chorus_proto::Limits::default(),
            phase: watch::channel(Phase::Serving).0,
        })
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Follows phase changes (a request ends itself when the core stops).
    pub(crate) fn phases(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        self.phase.send_replace(p);
    }

    /// `Ok` when ready; else the reason: draining, or a fleet whose engine loop is restarting,
    /// down, restarted within the hold-down, or stalled (read at once, not at the watchdog's
    /// next look, except the stall, which takes a window to see).
    pub fn readiness(&self) -> Result<(), String> {
        if self.phase() != Phase::Serving {
            return Err("draining".into());
        }
        let holddown = Duration::from_millis(self.cfg.engine_restart_holddown_ms);
        let why: Vec<String> = self.fleets.iter().filter_map(|f| f.unready(holddown)).collect();
        if why.is_empty() { Ok(()) } else { Err(why.join("; ")) }
    }

    /// Requests accepted and not finished, all fleets.
    pub fn in_flight(&self) -> u32 {
        self.fleets.iter().map(|f| f.in_flight()).sum()
    }

    /// The Prometheus page.
    pub fn metrics_page(&self) -> String {
        let core = self.metrics.page(self.readiness().is_ok(), self.phase() != Phase::Serving, &self.fleets);
        crate::metrics::merge_families(&[core, self.store.metrics.render()])
    }

    /// Accepted requests and open streams: what a drain waits on.
    pub(crate) fn any_in_flight(&self) -> bool {
        self.in_flight() > 0 || self.metrics.streams_open.load(Ordering::Relaxed) > 0
    }

    /// The load report sent on every control stream.
    pub(crate) fn load_report(&self, seq: u64) -> LoadReport {
        LoadReport {
            seq,
            ready: self.readiness().is_ok(),
            draining: self.phase() != Phase::Serving,
            fleets: self
                .fleets
                .iter()
                .map(|f| {
                    let m = f.handle.metrics();
                    FleetLoad {
                        fleet: f.name.clone(),
                        waiting: chorus_proto::Tier::ALL.map(|t| f.waiting_tier(t)),
                        running: m.running as u32,
                        kv_blocks_used: m.kv_blocks_used as u32,
                        kv_blocks_total: m.kv_blocks_total as u32,
                    }
                })
                .collect(),
        }
    }
}
