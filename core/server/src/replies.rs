//! The reply half of a request stream: sending a reply, and what a failed send means.

use chorus_proto::quic::FramedSend;
use chorus_proto::{ErrorCode, ErrorReply, Reply};

/// The stream went away (reset, stopped, connection lost); nothing more can be sent.
#[derive(Debug)]
pub(crate) struct Gone;

/// Sends one reply; a failed write means the edge stopped reading (cancel).
pub(crate) async fn reply(send: &mut FramedSend, r: &Reply) -> Result<(), Gone> {
    send.send(r).await.map_err(|_| Gone)
}

/// An error reply.
pub(crate) fn error(code: ErrorCode, message: impl Into<String>, retry_after_ms: Option<u32>) -> Reply {
    Reply::Error(ErrorReply { code, message: message.into(), retry_after_ms, param: None })
}
