//! [`EdgeState`]: everything a request handler shares — the configuration, admission (the
//! filter chain), the upstream pool, idempotency records, resumable runs and metrics — and the
//! small per-request types handlers put in responses ([`RequestInfo`]) or take from them
//! ([`ClientIp`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::http::HeaderMap;
use chorus_filter_host::{CompletionTicket, Outcome};
use chorus_proto::Tier;
use chorus_proto::tls::Identity;

use crate::admission::{Admission, Attempt, Caller};
use crate::config::EdgeConfig;
use crate::error::{ApiError, StartError};
use crate::idempotency::IdempotencyStore;
use crate::metrics::EdgeMetrics;
use crate::openai::ValidChat;
use crate::run::Runs;
use crate::shared::SharedRuns;
use crate::upstream::UpstreamPool;

/// Everything a request handler needs.
pub struct EdgeState {
    pub cfg: EdgeConfig,
    pub admission: Admission,
    pub pool: Arc<UpstreamPool>,
    pub idempotency: IdempotencyStore,
    pub runs: Runs,
    /// With Redis: answers shared with the region's other edges (resume and attach anywhere).
    pub shared: Option<Arc<SharedRuns>>,
    pub metrics: EdgeMetrics,
    /// Open WebSocket connections (bounded by `limits.max_websockets`).
    pub(crate) websockets: AtomicUsize,
}

impl std::fmt::Debug for EdgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeState").field("edge_id", &self.cfg.edge_id).finish_non_exhaustive()
    }
}

/// Put in a response's extensions for the request log.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub tier: Tier,
    pub request_id: String,
}

/// The peer's IP address (empty when the server was not started with connection info, as in
/// tests that call the router directly).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl ClientIp {
    /// The peer address the server recorded for this request.
    pub fn of(parts: &axum::http::request::Parts) -> Self {
        ClientIp(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default(),
        )
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

impl EdgeState {
    /// Builds the state and starts the upstream pool. Call inside a tokio runtime.
    pub fn new(cfg: EdgeConfig, identity: Identity) -> Result<Arc<Self>, StartError> {
        cfg.validate()?;
        let admission = Admission::new(&cfg)?;
        let topology = cfg.topology()?;
        let pool = UpstreamPool::start(&topology, &cfg.region, identity, &cfg.edge_id, &cfg.upstream);
        let deadline = Duration::from_millis(u64::from(cfg.upstream.deadline_ms));
        let idempotency = IdempotencyStore::open(&cfg.state, deadline).map_err(|e| StartError::State(e.to_string()))?;
        let runs = Runs::new(cfg.limits.max_in_flight);
        let shared = match &cfg.state.redis {
            Some(url) => Some(Arc::new(
                SharedRuns::open(
                    url,
                    &cfg.state.prefix,
                    &cfg.edge_id,
                    Duration::from_secs(cfg.resume.window_secs),
                    deadline,
                )
                .map_err(|e| StartError::State(e.to_string()))?,
            )),
            None => None,
        };
        Ok(Arc::new(Self {
            cfg,
            admission,
            pool,
            idempotency,
            runs,
            shared,
            metrics: EdgeMetrics::default(),
            websockets: AtomicUsize::new(0),
        }))
    }

    /// `model` names something this edge serves: `chorus` (the tier's model), a fleet, or a
    /// model id a connected core announced.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == "chorus" || self.pool.models().iter().any(|f| f.fleet == model || f.model == model) {
            Ok(())
        } else {
            Err(ApiError::UnknownModel(model.chars().take(128).collect()))
        }
    }

    /// Runs the filter chain for a request; the caller's identity, or the refusal.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        client_ip: &str,
        method: &str,
        path: &str,
        chat: Option<&ValidChat>,
    ) -> Result<Caller, ApiError> {
        let attempt = Attempt { headers, client_ip, method, path, chat };
        self.admission.admit(attempt, &self.metrics.filter_chain).await
    }

    /// Tells the filters how an admitted request ended.
    pub async fn complete(&self, ticket: Option<CompletionTicket>, outcome: Outcome, usage: chorus_filter_host::Usage) {
        self.admission.complete(ticket, outcome, usage).await;
    }
}
