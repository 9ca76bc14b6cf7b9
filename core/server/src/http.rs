//! Operations over HTTP: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (the engines make progress and the core is not draining).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::Core;

/// The operations router.
pub fn app(core: Arc<Core>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(core)
}

async fn metrics(State(core): State<Arc<Core>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], core.metrics_page())
}

async fn readyz(State(core): State<Arc<Core>>) -> impl IntoResponse {
    match core.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}
