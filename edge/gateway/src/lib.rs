//! `chorus-edge` is the edge gateway (DESIGN §1): the OpenAI-compatible HTTP API with SSE and
//! WebSocket streaming, the web chat, the filter chain (through `chorus-filter-host`),
//! idempotency records, resumable streams and the upstream pool of QUIC connections to the
//! regions' cores.
//!
//! It never runs a model, never keeps conversations (the cores do) and shares only
//! `chorus-proto` with the core. Every input is bounded and parsed before any other work;
//! every error leaves through [`error::ApiError`], the one place that maps errors to HTTP.

pub mod api;
pub mod chat;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod regions;
pub mod run;
pub mod state;
pub mod upstream;
mod web;
mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use chorus_filter_host::{
    CompletionTicket, CounterStore, FilterHost, FilterRequest, HostConfig, Outcome, TrustPolicy, TrustedKey,
    WatchHandle,
};
use chorus_proto::Tier;
use chorus_proto::tls::Identity;
use tracing::info;

pub use config::EdgeConfig;
pub use error::ApiError;

use crate::metrics::EdgeMetrics;
use crate::openai::ValidChat;
use crate::run::Runs;
use crate::state::StateStore;
use crate::upstream::UpstreamPool;

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("filters: {0}")]
    Filters(String),
    #[error("state store: {0}")]
    State(String),
    #[error("binding {addr}: {why}")]
    Bind { addr: SocketAddr, why: String },
}

/// Everything a request handler needs.
pub struct EdgeState {
    pub cfg: EdgeConfig,
    pub filters: Arc<FilterHost>,
    /// The filters' counters are in Redis: run the chain off the async workers.
    filters_block: bool,
    pub pool: Arc<UpstreamPool>,
    pub state: StateStore,
    pub runs: Runs,
    pub metrics: EdgeMetrics,
    /// Open WebSocket connections (bounded by `limits.max_websockets`).
    websockets: std::sync::atomic::AtomicUsize,
    _watch: Option<WatchHandle>,
}

impl std::fmt::Debug for EdgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeState").field("edge_id", &self.cfg.edge_id).finish_non_exhaustive()
    }
}

/// Who a request is, as the filter chain established it.
#[derive(Debug)]
pub struct Caller {
    pub tenant: String,
    pub user: String,
    pub tier: Tier,
    pub tier_name: String,
    /// Hand the usage back when the answer ends.
    pub ticket: Option<CompletionTicket>,
}

/// Put in a response's extensions for the request log.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub tier: String,
    pub request_id: String,
}

/// The peer's IP address (empty when the server was not started with connection info, as in
/// tests that call the router directly).
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default(),
        ))
    }
}

/// `n` random bytes, hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn parse_tier(t: &str) -> Option<Tier> {
    Some(match t {
        "free" => Tier::Free,
        "team" => Tier::Team,
        "plus" => Tier::Plus,
        "enterprise" => Tier::Enterprise,
        _ => return None,
    })
}

/// The filter host the configuration describes: trusted keys, operator config, API keys as
/// the auth filter's data, counters in-process or in Redis, and the module directory (watched)
/// or the shipped chain.
pub fn filter_host(cfg: &EdgeConfig) -> Result<(Arc<FilterHost>, Option<WatchHandle>), StartError> {
    let f = &cfg.filters;
    let keys = match &f.trusted_keys {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| StartError::Filters(format!("{}: {e}", p.display())))?;
            TrustedKey::parse_file(&text).map_err(|e| StartError::Filters(format!("{}: {e}", p.display())))?
        }
        None => vec![],
    };
    let counters = match &cfg.state.redis {
        Some(url) => CounterStore::redis(url, &format!("{}:filters", cfg.state.prefix))
            .map_err(|e| StartError::Filters(format!("counter store: {e}")))?,
        None => CounterStore::in_process(1_000_000),
    };
    let mut kv = BTreeMap::new();
    for k in &f.api_keys {
        let hash = match (&k.sha256, &k.key) {
            (Some(h), _) => h.to_ascii_lowercase(),
            (None, Some(key)) => chorus_auth_core::api_key_hash(key),
            (None, None) => continue,
        };
        let record = serde_json::json!({"tenant": k.tenant, "user": k.user, "tier": k.tier});
        kv.insert(format!("apikey:{hash}"), record.to_string().into_bytes());
    }
    let host = FilterHost::new(HostConfig {
        trust: TrustPolicy { keys, dev_mode: f.dev_mode },
        counters,
        filter_config: f.config.clone(),
        kv,
        ..HostConfig::default()
    })
    .map_err(|e| StartError::Filters(format!("{e:#}")))?;
    let host = Arc::new(host);
    let watch = match &f.dir {
        Some(dir) => {
            host.load_dir(dir).map_err(|e| StartError::Filters(e.to_string()))?;
            Some(host.watch(dir.clone(), Duration::from_secs(1)).map_err(|e| StartError::Filters(e.to_string()))?)
        }
        None => {
            host.load(&chorus_filter_host::builtin::default_chain()).map_err(|e| StartError::Filters(e.to_string()))?;
            None
        }
    };
    Ok((host, watch))
}

impl EdgeState {
    /// Builds the state and starts the upstream pool. Call inside a tokio runtime.
    pub fn new(cfg: EdgeConfig, identity: Identity) -> Result<Arc<Self>, StartError> {
        cfg.validate()?;
        let (filters, watch) = filter_host(&cfg)?;
        let topology = cfg.topology()?;
        let pool = UpstreamPool::start(&topology, &cfg.region, identity, &cfg.edge_id, &cfg.upstream);
        let deadline = Duration::from_millis(u64::from(cfg.upstream.deadline_ms));
        let state = StateStore::open(&cfg.state, deadline).map_err(|e| StartError::State(e.to_string()))?;
        let cfg_max_in_flight = cfg.limits.max_in_flight;
        Ok(Arc::new(Self {
            filters_block: cfg.state.redis.is_some(),
            cfg,
            filters,
            pool,
            state,
            runs: Runs::new(cfg_max_in_flight),
            metrics: EdgeMetrics::default(),
            websockets: Default::default(),
            _watch: watch,
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

    /// Runs the filter chain; the caller's identity, or the refusal.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        client_ip: &str,
        method: &str,
        path: &str,
        chat: Option<&ValidChat>,
    ) -> Result<Caller, ApiError> {
        let req = FilterRequest {
            id: random_hex(8),
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            client_ip: client_ip.into(),
            region: self.cfg.region.clone(),
            model: chat.map(|c| c.model.clone()),
            prompt_text: chat.map(ValidChat::prompt_text).unwrap_or_default(),
            message_count: chat.map_or(0, |c| c.messages.len() as u32),
            max_tokens: chat.map(|c| c.max_tokens),
        };
        let start = Instant::now();
        let chain = self.filters.chain();
        let outcome = if self.filters_block {
            tokio::task::spawn_blocking(move || chain.run(&req, now_ms()))
                .await
                .map_err(|e| ApiError::Unavailable(format!("filter chain: {e}")))?
        } else {
            chain.run(&req, now_ms())
        };
        self.metrics.filter_chain.observe(start.elapsed());
        if let Some(d) = outcome.denial {
            return Err(ApiError::Denied {
                status: d.status,
                code: d.code,
                message: d.message,
                retry_after_ms: d.retry_after_ms,
            });
        }
        let id = outcome.identity;
        let (Some(tenant), Some(user)) = (id.tenant, id.user) else {
            self.complete(outcome.ticket, Outcome::Denied, Default::default());
            return Err(ApiError::Denied {
                status: 401,
                code: "unauthenticated".into(),
                message: "no identity was established: send an API key (Authorization: Bearer …)".into(),
                retry_after_ms: None,
            });
        };
        let tier_name = id.tier.unwrap_or_else(|| "free".into());
        let tier =
            parse_tier(&tier_name).ok_or_else(|| ApiError::Unavailable(format!("unknown tier {tier_name:?}")))?;
        Ok(Caller { tenant, user, tier, tier_name, ticket: outcome.ticket })
    }

    /// Tells the filters how an admitted request ended.
    pub fn complete(&self, ticket: Option<CompletionTicket>, outcome: Outcome, usage: chorus_filter_host::Usage) {
        let Some(t) = ticket else { return };
        if self.filters_block {
            tokio::task::spawn_blocking(move || t.complete(outcome, usage, now_ms()));
        } else {
            t.complete(outcome, usage, now_ms());
        }
    }
}

/// The API and the web chat.
pub fn app(state: Arc<EdgeState>) -> Router {
    let mut r = Router::new()
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/models", get(api::models))
        .route("/v1/me", get(api::me))
        .route("/v1/conversations", get(api::list_conversations).delete(api::erase))
        .route("/v1/conversations/export", get(api::export))
        .route("/v1/conversations/{id}", get(api::get_conversation).delete(api::delete_conversation))
        .route("/v1/feedback", post(api::feedback))
        .route("/v1/realtime", get(ws::realtime))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz));
    if state.cfg.web {
        r = r.merge(web::routes());
    }
    r.fallback(api::not_found).layer(axum::middleware::from_fn_with_state(state.clone(), observe)).with_state(state)
}

/// One log line and the request counter per request.
async fn observe(State(st): State<Arc<EdgeState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route: &'static str = match req.extensions().get::<MatchedPath>().map(|m| m.as_str()) {
        Some("/v1/chat/completions") => "chat",
        Some("/v1/models") => "models",
        Some("/v1/me") => "me",
        Some("/v1/conversations") | Some("/v1/conversations/{id}") | Some("/v1/conversations/export") => {
            "conversations"
        }
        Some("/v1/feedback") => "feedback",
        Some("/v1/realtime") => "realtime",
        Some("/metrics") | Some("/healthz") | Some("/readyz") => "ops",
        Some(_) => "web",
        None => "unmatched",
    };
    let method = req.method().clone();
    let path = req.uri().path().chars().take(128).collect::<String>();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let info = resp.extensions().get::<RequestInfo>().cloned();
    let tier = info.as_ref().map_or("none", |i| i.tier.as_str());
    st.metrics.request(route, status, tier);
    if route != "ops" && route != "web" {
        info!(
            target: "chorus_edge::request",
            %method, %path, route, status, tier,
            request_id = info.as_ref().map_or("", |i| i.request_id.as_str()),
            ms = start.elapsed().as_secs_f64() * 1e3,
            "request"
        );
    }
    resp
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

/// The edge's client certificate: the configured files, or the development PKI in `dir`
/// (minted there when missing — the same directory the core uses).
pub fn identity_for(cfg: &EdgeConfig, dev_dir: &Path) -> Result<Identity, chorus_proto::tls::TlsError> {
    use chorus_proto::tls::{self, TlsFiles};
    if let Some(files) = &cfg.tls {
        return Identity::load(files);
    }
    let files = TlsFiles { ca: dev_dir.join("ca.pem"), cert: dev_dir.join("edge.pem"), key: dev_dir.join("edge.key") };
    if !files.key.exists() {
        let pki = tls::mint_dev("chorus dev CA", &["localhost".into(), "127.0.0.1".into()])?;
        pki.write(dev_dir).map_err(|e| tls::TlsError::File { path: dev_dir.into(), why: e.to_string() })?;
    }
    Identity::load(&files)
}

/// Serves until SIGTERM or Ctrl-C (the `chorus-edge` binary and `chorus edge`).
pub fn run(cfg: EdgeConfig) -> anyhow::Result<()> {
    init_logging();
    let dev_dir = dev_cert_dir();
    let identity = identity_for(&cfg, &dev_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let edge = serve(cfg, identity).await?;
        println!("chorus edge: http://{}", edge.addr);
        shutdown_signal().await;
        edge.stop().await;
        anyhow::Ok(())
    })
}

/// Where development certificates live when none are configured (shared with the core:
/// `$XDG_CACHE_HOME/chorus/certs` or `~/.cache/chorus/certs`).
pub fn dev_cert_dir() -> std::path::PathBuf {
    if let Ok(home) = std::env::var("CHORUS_HOME") {
        return std::path::PathBuf::from(home).join("certs");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| ".".into());
    base.join("chorus").join("certs")
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
