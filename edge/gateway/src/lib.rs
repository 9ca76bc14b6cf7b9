//! `chorus-edge` is the edge gateway (DESIGN §1): the OpenAI-compatible HTTP API with SSE and
//! WebSocket streaming, the web chat, the filter chain (through `chorus-filter-host`),
//! idempotency records, resumable streams and the upstream pool of QUIC connections to the
//! regions' cores.
//!
//! It never runs a model, never keeps conversations (the cores do) and reaches the core only
//! through `chorus-proto`. Every input is bounded and parsed before any other work; every error
//! leaves through [`error::ApiError`], the one place that maps errors to HTTP.
//!
//! This file is the composition root: the router ([`app`]), the server ([`serve`], [`run`]) and
//! the certificates. A request's walk: [`api`] (handler) → [`pipeline`] (parse, admit through
//! [`admission`], claim in [`idempotency`], start a [`run::Run`]) → [`driver`] (upstream, over
//! [`upstream`]) → [`render`] (JSON, SSE) or [`websocket`].

mod access_log;
pub mod admission;
pub mod api;
pub mod config;
pub mod driver;
pub mod error;
pub mod idempotency;
pub mod ids;
pub mod metrics;
pub mod openai;
pub mod pipeline;
pub mod provision;
pub mod regions;
pub mod render;
pub mod run;
pub mod shared;
pub mod state;
pub mod upstream;
mod web;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use chorus_proto::tls::{self, Identity};
use tracing::info;

pub use config::EdgeConfig;
pub use error::{ApiError, StartError};
pub use ids::random_hex;
pub use state::EdgeState;

/// The API and the web chat.
pub fn app(state: Arc<EdgeState>) -> Router {
    let mut r = Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/completions", post(api::completions))
        .route("/v1/responses", post(api::responses))
        .route("/v1/models", get(api::models))
        .route("/v1/me", get(api::me))
        .route("/v1/conversations", get(api::list_conversations).delete(api::erase))
        .route("/v1/conversations/export", get(api::export))
        .route("/v1/conversations/{id}", get(api::get_conversation).delete(api::delete_conversation))
        .route("/v1/feedback", post(api::feedback))
        .route("/v1/realtime", get(websocket::realtime))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz));
    if state.cfg.web {
        r = r.merge(web::routes());
    }
    r.fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), access_log::observe))
        .with_state(state)
}

/// An edge that is serving.
#[derive(Debug)]
pub struct RunningEdge {
    pub state: Arc<EdgeState>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl RunningEdge {
    /// Stops accepting, lets open responses finish briefly, closes upstream connections.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.state.pool.shutdown();
    }
}

/// Binds `cfg.listen` and serves. Call inside a tokio runtime.
pub async fn serve(cfg: EdgeConfig, identity: Identity) -> Result<RunningEdge, StartError> {
    let listen = cfg.listen;
    let state = EdgeState::new(cfg, identity)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Bind { addr: listen, why: e.to_string() })?;
    let addr = listener.local_addr().map_err(|e| StartError::Bind { addr: listen, why: e.to_string() })?;
    let app = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sweeper_state = state.clone();
    let task = tokio::spawn(async move {
        let sweep = tokio::spawn(async move {
            let window = Duration::from_secs(sweeper_state.cfg.resume.window_secs);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                sweeper_state.runs.sweep(window);
            }
        });
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "edge HTTP server stopped");
        }
        sweep.abort();
    });
    info!(%addr, edge = %state.cfg.edge_id, region = %state.cfg.region, "edge serving");
    Ok(RunningEdge { state, addr, task, stop })
}

/// The edge's client certificate: the configured files, or the development PKI in
/// [`tls::dev_dir`] (the core's too), minted there when missing.
pub fn identity_for(cfg: &EdgeConfig) -> Result<Identity, tls::TlsError> {
    match &cfg.tls {
        Some(files) => Identity::load(files),
        None => Ok(tls::dev_identity(&tls::dev_dir(), tls::Side::Edge)?.0),
    }
}

/// Serves until SIGTERM or Ctrl-C (the `chorus-edge` binary and `chorus edge`).
pub fn run(cfg: EdgeConfig) -> anyhow::Result<()> {
    let identity = identity_for(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let edge = serve(cfg, identity).await?;
        println!("chorus edge: http://{}", edge.addr);
        chorus_process::shutdown_signal().await;
        edge.stop().await;
        anyhow::Ok(())
    })
}
