//! `GET /v1/realtime`: chat over a WebSocket. Each text message from the client is a
//! chat-completions request body (the same JSON as `POST /v1/chat/completions`; `stream` is
//! implied) or `{"type": "cancel"}`; the edge answers with the same `chat.completion.chunk`
//! objects an SSE stream carries, then `{"type": "done", "id": …}`, or an OpenAI error object.
//! Requests on one socket run one at a time. Credentials come from the upgrade request's
//! headers and every message passes the filter chain. Closing the socket cancels the answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::pipeline;
use crate::run::{Next, RunEvent};
use crate::state::{ClientIp, EdgeState};

/// Holds one of the edge's WebSocket places until the socket ends.
struct Slot(Arc<EdgeState>);
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn realtime(
    State(st): State<Arc<EdgeState>>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    ws: WebSocketUpgrade,
) -> Response {
    if st.websockets.fetch_add(1, Ordering::Relaxed) >= st.cfg.limits.max_websockets {
        st.websockets.fetch_sub(1, Ordering::Relaxed);
        return ApiError::Unavailable("too many open WebSocket connections".into()).into_response();
    }
    let slot = Slot(st.clone());
    // The upgrade itself must pass the filters (who is this?); each message passes them again.
    let mut caller = match st.admit(&headers, &ip, "GET", "/v1/realtime", None).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    st.complete(caller.ticket.take(), chorus_filter_host::Outcome::Completed, Default::default()).await;
    // Per-request headers of the upgrade do not apply to the messages that follow.
    let mut headers = headers;
    for h in ["idempotency-key", "last-event-id", "content-length", "content-type"] {
        headers.remove(h);
    }
    let max = st.cfg.limits.max_body_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            session(st, headers, ip, socket).await;
        })
        .into_response()
}

async fn send(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    socket.send(Message::Text(v.to_string().into())).await.is_ok()
}

fn is_cancel(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v["type"] == "cancel")
}

async fn session(st: Arc<EdgeState>, headers: HeaderMap, ip: String, mut socket: WebSocket) {
    let idle = std::time::Duration::from_secs(st.cfg.limits.client_timeout_secs.max(1) * 5);
    loop {
        let msg = match tokio::time::timeout(idle, socket.recv()).await {
            Ok(Some(Ok(m))) => m,
            // Idle too long, closed, or broken.
            _ => return,
        };
        let body = match msg {
            Message::Text(t) => t.as_str().as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => return,
            _ => continue,
        };
        if std::str::from_utf8(&body).is_ok_and(is_cancel) {
            continue; // nothing in flight between requests
        }
        let started = Instant::now();
        let s = match pipeline::start(&st, &headers, &ip, &body, pipeline::Api::Chat).await {
            Ok(s) => s,
            Err(e) => {
                let mut v = e.body();
                v["type"] = json!("error");
                if !send(&mut socket, v).await {
                    return;
                }
                continue;
            }
        };
        let model = match s.run.head() {
            Some(RunEvent::Head { model, .. }) => model,
            _ => String::new(),
        };
        let mut model = model;
        let mut i = 0;
        let mut first = true;
        loop {
            let next = tokio::select! {
                n = s.run.next(i) => n,
                m = socket.recv() => {
                    match m {
                        Some(Ok(Message::Text(t))) if is_cancel(t.as_str()) => {
                            s.run.cancel();
                            continue;
                        }
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                            let e = ApiError::invalid("type", "one request at a time: wait for `done`, or send {\"type\": \"cancel\"}");
                            let mut v = e.body();
                            v["type"] = json!("error");
                            if !send(&mut socket, v).await {
                                return;
                            }
                            continue;
                        }
                        Some(Ok(_)) => continue,
                        // The client went away: dropping the reader cancels the answer.
                        _ => return,
                    }
                }
            };
            let ev = match next {
                Next::Event(ev) => ev,
                Next::Pending => continue,
                Next::End => break,
                Next::Gone => {
                    RunEvent::Error(ApiError::ResumeGone("this socket fell behind the answer's buffer".into()))
                }
            };
            if let RunEvent::Head { model: m, .. } = &ev {
                model = m.clone();
            }
            if first && matches!(ev, RunEvent::Delta { .. }) {
                first = false;
                st.metrics.ttft(s.run.tier.as_str(), started.elapsed());
            }
            let last = ev.is_final();
            for mut v in crate::render::render(&s.run, &model, &ev, s.include_usage) {
                if matches!(ev, RunEvent::Error(_)) {
                    v["type"] = json!("error");
                }
                if !send(&mut socket, v).await {
                    return;
                }
            }
            if last {
                if matches!(ev, RunEvent::Finish { .. })
                    && !send(&mut socket, json!({"type": "done", "id": s.run.id})).await
                {
                    return;
                }
                break;
            }
            i += 1;
        }
        drop(s);
    }
}
