//! The access log: one log line and the request counter per request, labelled by route,
//! status and the caller's tier (from the [`RequestInfo`] a handler put in the response).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::info;

use crate::state::{EdgeState, RequestInfo};

/// One log line and the request counter per request.
pub(crate) async fn observe(State(st): State<Arc<EdgeState>>, req: Request, next: Next) -> Response {
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
