//! A streamed answer as server-sent events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::{Position, Started, head_headers, model_of};
use crate::error::ApiError;
use crate::run::{Next, RunEvent};
use crate::state::EdgeState;

/// How often an idle stream sends an SSE comment (keeps proxies from timing it out).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The run as `text/event-stream`, from `from` on: one `data:` frame per chunk, each with its
/// own id so a resume continues after any of them, `[DONE]` at the end.
pub fn stream(st: Arc<EdgeState>, s: Started, from: Position, started: Instant) -> Response {
    let head = s.run.head();
    let model = model_of(&head);
    let mut headers = HeaderMap::new();
    if let Some(h) = &head {
        head_headers(&mut headers, h, &s.run, &s.request_id);
    }
    struct St {
        st: Arc<EdgeState>,
        s: Started,
        model: String,
        i: usize,
        skip: usize,
        ended: bool,
        first_token: bool,
        started: Instant,
    }
    let state = St { st, s, model, i: from.0, skip: from.1, ended: false, first_token: from == (0, 0), started };
    let stream = futures_util::stream::unfold(state, |mut x| async move {
        if x.ended {
            return None;
        }
        let next = match tokio::time::timeout(KEEPALIVE, x.s.run.next(x.i)).await {
            Ok(n) => n,
            Err(_) => return Some((Ok::<_, std::convert::Infallible>(Bytes::from_static(b": keep-alive\n\n")), x)),
        };
        let ev = match next {
            Next::Event(ev) => ev,
            Next::End => return None,
            Next::Pending => return Some((Ok(Bytes::new()), x)),
            Next::Gone => RunEvent::Error(ApiError::ResumeGone("this reader fell behind the buffer".into())),
        };
        if x.first_token && matches!(ev, RunEvent::Delta { .. }) {
            x.first_token = false;
            x.st.metrics.ttft(x.s.run.tier.as_str(), x.started.elapsed());
        }
        // Each frame has its own id (`<answer>.<event>` or `<answer>.<event>.<frame>`), so a
        // resume after any frame continues with the next one.
        let mut frames: Vec<String> =
            super::render(&x.s.run, &x.model, &ev, x.s.include_usage).iter().map(|v| v.to_string()).collect();
        match ev {
            RunEvent::Finish { .. } => {
                frames.push("[DONE]".into());
                x.ended = true;
            }
            RunEvent::Error(_) => x.ended = true,
            _ => {}
        }
        let mut out = String::new();
        for (k, data) in frames.iter().enumerate().skip(x.skip) {
            let id = if k == 0 { format!("{}.{}", x.s.run.id, x.i) } else { format!("{}.{}.{k}", x.s.run.id, x.i) };
            out.push_str(&format!("id: {id}\ndata: {data}\n\n"));
        }
        x.skip = 0;
        x.i += 1;
        Some((Ok(Bytes::from(out)), x))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.extend(headers);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
