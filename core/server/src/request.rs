//! One request stream, from its first frame to its last: a `Generate` goes to
//! [`crate::generate`], a `Store` request to [`crate::store_requests`]; anything else is a
//! typed `protocol_error`. Every stream ends with exactly one final reply unless the edge
//! went away first.

use std::sync::Arc;
use std::time::Duration;

use chorus_proto::quic::{ReadError, RequestStream};
use chorus_proto::{ErrorCode, Reply, Request};

use crate::replies::{error, reply};
use crate::state::Core;

/// The outcome label of a final reply, for metrics.
fn outcome(r: &Reply) -> String {
    match r {
        Reply::Done(d) => d.finish_reason.as_str().to_string(),
        Reply::Error(e) => e.code.to_string(),
        Reply::Store(_) => "ok".into(),
        _ => "none".into(),
    }
}

/// Serves one request stream to its end.
pub(crate) async fn serve(core: &Arc<Core>, mut stream: RequestStream) {
    let first =
        tokio::time::timeout(Duration::from_millis(core.cfg.handshake_timeout_ms), stream.requests.next::<Request>())
            .await;
    let refusal = match first {
        Ok(Ok(Some(Request::Generate(g)))) => {
            if let Ok(end) = crate::generate::serve(core, &mut stream, *g).await {
                core.metrics.outcome(&end.fleet, &outcome(&end.last));
                stream.replies.finish();
            }
            return;
        }
        Ok(Ok(Some(Request::Store(r)))) => {
            let op = crate::store_requests::op_name(&r.op);
            if let Ok(last) = crate::store_requests::serve(core, &mut stream.replies, *r).await {
                core.metrics.outcome("store", &format!("{op}_{}", outcome(&last)));
                stream.replies.finish();
            }
            return;
        }
        Ok(Ok(Some(Request::Cancel)) | Ok(None)) => "a request stream must begin with Generate".to_string(),
        Ok(Err(ReadError::Frame(e))) => {
            core.metrics.outcome("-", "protocol_error");
            e.to_string()
        }
        Ok(Err(ReadError::Gone(_))) => return,
        Err(_) => "no Generate frame in time".to_string(),
    };
    let _ = reply(&mut stream.replies, &error(ErrorCode::Protocol, refusal, None)).await;
    stream.replies.finish();
}
