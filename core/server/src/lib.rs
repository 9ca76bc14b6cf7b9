//! `chorus-core`: the regional core as a service. It owns the QUIC endpoint edges connect to
//! (mutual TLS, ALPN `chorus/1`, the `chorus-proto` frames), the model fleets and the router
//! that maps tiers to them, the conversation store (durable tier first, then hot), prompt
//! building, the post-generation safety gate, the operations endpoints and the drain on
//! shutdown.
//!
//! It never parses HTTP requests from users or runs filters (the edge does), and it never
//! decides which sequences share a step (the `chorus-sched` scheduler inside each fleet's
//! engine loop does).

pub mod config;
mod failpoint;
pub mod fleet;
mod generate;
mod history;
pub mod http;
pub mod metrics;
pub mod prompt;
mod replies;
mod request;
pub mod safety;
pub mod server;
pub mod state;
pub mod store;
mod store_requests;
pub mod watchdog;
pub mod wire;
pub use chorus_proto::tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::CoreConfig;
pub use state::{Core, Phase};
use tracing::{info, warn};

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("conversation store: {0}")]
    Store(#[from] store::StoreError),
    #[error("binding {what} {addr}: {why}")]
    Bind { what: &'static str, addr: SocketAddr, why: String },
}

/// A core that is serving.
#[derive(Debug)]
pub struct RunningCore {
    pub core: Arc<Core>,
    /// Where edges connect (QUIC).
    pub quic_addr: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the QUIC and HTTP listeners and serves. Call inside a tokio runtime.
pub async fn serve(core: Arc<Core>, identity: &tls::Identity) -> Result<RunningCore, StartError> {
    let cfg = &core.cfg;
    let server_cfg = tls::server_config(identity)?;
    let endpoint = quinn::Endpoint::server(server_cfg, cfg.listen).map_err(|e| StartError::Bind {
        what: "QUIC",
        addr: cfg.listen,
        why: e.to_string(),
    })?;
    let quic_addr =
        endpoint.local_addr().map_err(|e| StartError::Bind { what: "QUIC", addr: cfg.listen, why: e.to_string() })?;
    let listener = tokio::net::TcpListener::bind(cfg.http).await.map_err(|e| StartError::Bind {
        what: "HTTP",
        addr: cfg.http,
        why: e.to_string(),
    })?;
    let http_addr =
        listener.local_addr().map_err(|e| StartError::Bind { what: "HTTP", addr: cfg.http, why: e.to_string() })?;
    let app = http::app(core.clone());
    let tasks = vec![
        tokio::spawn(server::accept_loop(core.clone(), endpoint.clone())),
        tokio::spawn(watchdog::watchdog(core.clone())),
        tokio::spawn(store::sweeper(core.store.clone())),
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(error = %e, "operations HTTP server stopped");
            }
        }),
    ];
    info!(%quic_addr, %http_addr, core = %cfg.core_id, region = %cfg.region, "core serving");
    Ok(RunningCore { core, quic_addr, http_addr, endpoint, tasks })
}

impl RunningCore {
    /// Drains: refuse new connections and requests, let in-flight requests finish for up to
    /// `deadline`, then end the rest with `shutting_down`, close every connection and stop.
    pub async fn drain(self, deadline: Duration) {
        let core = &self.core;
        core.set_phase(Phase::Draining);
        self.endpoint.set_server_config(None);
        let start = Instant::now();
        info!(in_flight = core.in_flight(), deadline_s = deadline.as_secs_f64(), "draining");
        while core.any_in_flight() && start.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if core.any_in_flight() {
            warn!(in_flight = core.in_flight(), "drain deadline passed; ending the remaining requests");
        }
        core.set_phase(Phase::Stopping);
        // Give the request tasks a moment to write their final frame.
        let grace = Instant::now();
        while core.metrics.streams_open.load(std::sync::atomic::Ordering::Relaxed) > 0
            && grace.elapsed() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.endpoint.close(chorus_proto::CLOSE_SHUTDOWN.into(), b"core shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        for t in self.tasks {
            t.abort();
        }
        info!("core stopped");
    }
}

/// The certificates a core uses: the configured files, or the development PKI in
/// [`tls::dev_dir`] (the edge's too), minted there once when missing.
pub fn identity_for(cfg: &CoreConfig) -> Result<tls::Identity, StartError> {
    if let Some(files) = &cfg.tls {
        return Ok(tls::Identity::load(files)?);
    }
    let dir = tls::dev_dir();
    let (identity, minted) = tls::dev_identity(&dir, tls::Side::Core)?;
    if minted {
        warn!(dir = %dir.display(), "no [tls] configured: minted a development CA and certificates");
    } else {
        warn!(dir = %dir.display(), "no [tls] configured: using the development certificates");
    }
    Ok(identity)
}

/// Opens the conversation store `cfg` describes.
pub async fn open_store(cfg: &CoreConfig) -> Result<Arc<store::ConversationStore>, StartError> {
    let s = store::ConversationStore::open(&cfg.store).await?;
    info!(durable = ?cfg.store.durable, hot = ?cfg.store.hot, "conversation store open");
    Ok(Arc::new(s))
}

/// Loads the models, serves, and drains on SIGTERM or Ctrl-C. The `chorus core` command and
/// the `chorus-core` binary.
pub fn run(cfg: CoreConfig) -> anyhow::Result<()> {
    cfg.validate()?;
    let identity = identity_for(&cfg)?;
    info!(fleets = cfg.fleets.len(), "loading models");
    let fleets = fleet::start_fleets(&cfg, &mut fleet::load_engines(cfg.threads, cfg.compute_priority, cfg.device))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let store = open_store(&cfg).await?;
        let core = Core::new(cfg, fleets, store);
        let running = serve(core.clone(), &identity).await?;
        println!("chorus core: QUIC {} · metrics http://{}/metrics", running.quic_addr, running.http_addr);
        chorus_process::shutdown_signal().await;
        running.drain(Duration::from_secs(core.cfg.drain_secs)).await;
        anyhow::Ok(())
    })
}
