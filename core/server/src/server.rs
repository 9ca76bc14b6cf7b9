//! The QUIC side: [`Core`] (what every connection and request shares), the accept loop, and
//! per connection the control stream (version handshake, then load reports) and one task per
//! request stream ([`crate::request`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chorus_proto::quic::{ControlStream, RequestStream};
use chorus_proto::{Control, FleetInfo, FleetLoad, LoadReport, PROTOCOL_VERSION};
use quinn::Connection;
use tokio::sync::watch;
use tracing::{debug, info, warn};

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
    /// `None` when ready, else why not.
    unready: std::sync::Mutex<Option<String>>,
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
            unready: std::sync::Mutex::new(None),
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

    /// `Ok` when ready; else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if self.phase() != Phase::Serving {
            return Err("draining".into());
        }
        match &*self.unready.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    pub(crate) fn set_unready(&self, why: Option<String>) {
        *self.unready.lock().unwrap_or_else(|e| e.into_inner()) = why;
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

    fn load_report(&self, seq: u64) -> LoadReport {
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

/// Serves connections from `endpoint` until it is closed.
pub async fn accept_loop(core: Arc<Core>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        if core.phase() != Phase::Serving {
            incoming.refuse();
            continue;
        }
        let core = core.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    // Almost always TLS: no client certificate, or one from another CA.
                    core.metrics.refused("tls");
                    warn!(%remote, error = %e, "edge connection refused");
                    return;
                }
            };
            CoreMetrics::inc(&core.metrics.connections_total);
            CoreMetrics::inc(&core.metrics.connections_open);
            connection(&core, conn, remote).await;
            CoreMetrics::dec(&core.metrics.connections_open);
        });
    }
}

async fn connection(core: &Arc<Core>, conn: Connection, remote: SocketAddr) {
    let max = core.cfg.max_frame;
    let timeout = Duration::from_millis(core.cfg.handshake_timeout_ms);
    // The control stream is the first stream the edge opens; nothing else is served before
    // the versions agree.
    let hello = tokio::time::timeout(timeout, ControlStream::accept(&conn, max))
        .await
        .unwrap_or_else(|_| Err(format!("no Hello within {} ms", timeout.as_millis())));
    let (mut control, hello) = match hello {
        Ok(x) => x,
        Err(why) => {
            core.metrics.refused("hello");
            warn!(%remote, %why, "edge connection closed");
            conn.close(chorus_proto::CLOSE_PROTOCOL_ERROR.into(), why.as_bytes());
            return;
        }
    };
    let Some(version) = chorus_proto::negotiate(&hello, PROTOCOL_VERSION..=PROTOCOL_VERSION) else {
        let why = format!(
            "unsupported protocol version: the edge speaks {}..={}, this core speaks {PROTOCOL_VERSION}",
            hello.min_version, hello.max_version
        );
        core.metrics.refused("version");
        warn!(%remote, edge = %hello.edge_id, %why, "edge connection closed");
        conn.close(chorus_proto::CLOSE_UNSUPPORTED_VERSION.into(), why.as_bytes());
        return;
    };
    info!(%remote, edge = %hello.edge_id, version, "edge connected");
    let welcome = Control::Welcome {
        version,
        core_id: core.cfg.core_id.clone(),
        region: core.cfg.region.clone(),
        fleets: core.fleets.iter().map(|f| FleetInfo { fleet: f.name.clone(), model: f.model.clone() }).collect(),
    };
    if control.send(&welcome).await.is_err() {
        return;
    }
    let reports = {
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(core.cfg.load_report_ms));
            for seq in 0.. {
                tick.tick().await;
                if control.send(&Control::Load(core.load_report(seq))).await.is_err() {
                    break;
                }
            }
        })
    };
    loop {
        let stream = match RequestStream::accept(&conn, max).await {
            Ok(s) => s,
            Err(e) => {
                debug!(%remote, error = %e, "edge connection ended");
                break;
            }
        };
        let core = core.clone();
        tokio::spawn(async move {
            CoreMetrics::inc(&core.metrics.streams_total);
            CoreMetrics::inc(&core.metrics.streams_open);
            crate::request::serve(&core, stream).await;
            CoreMetrics::dec(&core.metrics.streams_open);
        });
    }
    reports.abort();
}
