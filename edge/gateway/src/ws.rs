//! `GET /v1/realtime`: chat over a WebSocket. Each text message from the client is a
//! chat-completions request body (the same JSON as `POST /v1/chat/completions`; `stream` is
//! implied) or `{"type": "cancel"}`; the edge answers with the same `chat.completion.chunk`
//! objects an SSE stream carries, then `{"type": "done", "id": …}`, or an OpenAI error object.
//! Requests on one socket run one at a time. Credentials come from the upgrade request's
//! headers and every message passes the filter chain. Closing the socket cancels the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::chat;
use crate::error::ApiError;
use crate::run::{Next, RunEvent};
use crate::{ClientIp, EdgeState};

static OPEN: AtomicUsize = AtomicUsize::new(0);

struct Slot;
impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

pub async fn realtime(
    State(st): State<Arc<EdgeState>>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    ws: WebSocketUpgrade,
) -> Response {
    if OPEN.fetch_add(1, Ordering::Relaxed) >= st.cfg.limits.max_websockets {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return ApiError::Unavailable("too many open WebSocket connections".into()).into_response();
    }
    let slot = Slot;
    ws.max_message_size(st.cfg.limits.max_body_bytes)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            session(st, headers, ip, socket).await;
        })
        .into_response()
}

async fn send(socket: &mut WebSocket, v: serde_json::Value) -> bool {
    socket.send(Message::Text(v.to_string().into())).await.is_ok()
}

async fn session(st: Arc<EdgeState>, headers: HeaderMap, ip: String, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let body = match msg {
            Message::Text(t) => t.as_str().as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => return,
            _ => continue,
        };
        if serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["type"] == "cancel") {
            continue; // nothing in flight between requests
        }
        let started = Instant::now();
        let s = match chat::start(&st, &headers, &ip, &body).await {
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
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"cancel\"") => {
                            s.run.cancel();
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
                Next::End | Next::Gone => break,
            };
            if let RunEvent::Head { model: m, .. } = &ev {
                model = m.clone();
            }
            if first && matches!(ev, RunEvent::Delta { .. }) {
                first = false;
                st.metrics.ttft(&s.tier, started.elapsed());
            }
            let last = ev.is_final();
            for mut v in chat::render(&s.run, &model, &ev, s.include_usage) {
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
