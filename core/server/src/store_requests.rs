//! Store requests over the wire (list, get, delete, erase, export, feedback), each answered by
//! one `Reply::Store` (an export in pieces under the frame limit) or an error.

use chorus_proto::quic::FramedSend;
use chorus_proto::{ErrorCode, Reply, StoreOp, StoreReply, StoreRequest};

use crate::replies::{Gone, error, reply};
use crate::state::{Core, Phase};
use crate::store::{Owner, StoreError};

/// The operation's metric label.
pub(crate) fn op_name(op: &StoreOp) -> &'static str {
    match op {
        StoreOp::List { .. } => "list",
        StoreOp::Get { .. } => "get",
        StoreOp::Delete { .. } => "delete",
        StoreOp::Erase => "erase",
        StoreOp::Export => "export",
        StoreOp::Feedback { .. } => "feedback",
    }
}

/// The largest export piece, bytes (well under the frame limit).
const EXPORT_PIECE: usize = 256 * 1024;

/// Serves one store request; returns its final reply.
pub(crate) async fn serve(core: &Core, send: &mut FramedSend, r: StoreRequest) -> Result<Reply, Gone> {
    let max = core.cfg.max_frame;
    let answer = async {
        if core.phase() != Phase::Serving {
            return Err((ErrorCode::Draining, "the core is draining; retry on another core".to_string()));
        }
        r.check(&core.limits).map_err(|e| (ErrorCode::InvalidRequest, e.to_string()))?;
        let owner = Owner::new(&r.tenant, &r.user);
        let store = &core.store;
        let e = |e: StoreError| (e.code(), e.to_string());
        Ok(match r.op {
            StoreOp::List { limit } => {
                StoreReply::List(store.list(&owner, limit.clamp(1, 1000) as usize).await.map_err(e)?)
            }
            StoreOp::Get { conversation_id } => {
                StoreReply::Conversation(store.load(&owner, &conversation_id).await.map_err(e)?.0.view())
            }
            StoreOp::Delete { conversation_id } => {
                store.delete(&owner, &conversation_id).await.map_err(e)?;
                StoreReply::Deleted
            }
            StoreOp::Erase => StoreReply::Erased(store.erase(&owner).await.map_err(e)?),
            StoreOp::Export => {
                let doc = store.export(&owner).await.map_err(e)?;
                let json = serde_json::to_string(&doc).map_err(|x| (ErrorCode::Internal, x.to_string()))?;
                StoreReply::Export { data: json, last: true }
            }
            StoreOp::Feedback { conversation_id, version, rating, comment } => StoreReply::FeedbackRecorded {
                feedback_id: store.feedback(&owner, &conversation_id, version, rating, comment).await.map_err(e)?,
            },
        })
    }
    .await;
    let last = match answer {
        Ok(StoreReply::Export { data, .. }) => {
            let mut rest = data.as_str();
            while rest.len() > EXPORT_PIECE {
                let cut = rest.floor_char_boundary(EXPORT_PIECE);
                let piece = Reply::Store(StoreReply::Export { data: rest[..cut].to_string(), last: false });
                reply(send, &piece).await?;
                rest = &rest[cut..];
            }
            Reply::Store(StoreReply::Export { data: rest.to_string(), last: true })
        }
        Ok(a) => {
            let r = Reply::Store(a);
            match chorus_proto::encode_to_vec(&r, max) {
                Ok(_) => r,
                Err(_) => error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "the answer is larger than the frame limit of {max} bytes; use Export, which is sent in pieces"
                    ),
                    None,
                ),
            }
        }
        Err((code, message)) => error(code, message, None),
    };
    reply(send, &last).await?;
    Ok(last)
}
