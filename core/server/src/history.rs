//! A request's place in its conversation: resolving the stored history it continues (or the
//! committed turn it replays) before generating, and committing the finished turn after.

use chorus_proto::quic::FramedSend;
use chorus_proto::{
    Accepted, ConversationRef, Done, ErrorCode, FinishReason, Generate, Message, Reply, StoreStatus, Stored, Token,
    Usage,
};
use tracing::warn;

use crate::replies::{Gone, error, reply};
use crate::state::Core;
use crate::store::{Commit, Context, Conversation, HotRead, Owner, StoreError};

/// Where a request's history comes from and where its turn goes.
pub(crate) struct Thread {
    pub(crate) owner: Owner,
    /// The conversation id when the turn is to be stored.
    pub(crate) id: Option<String>,
    /// The stored conversation it continues.
    pub(crate) prior: Option<Conversation>,
    pub(crate) status: StoreStatus,
}

impl Thread {
    pub(crate) fn history(&self) -> Vec<Message> {
        self.prior.as_ref().map(Conversation::messages).unwrap_or_default()
    }
}

/// What a Generate found in the store before generating.
pub(crate) enum Resolved {
    Go(Thread),
    /// The request already produced a committed turn: replay it.
    Replay(Conversation, u64),
    Fail(ErrorCode, String),
}

/// Finds the conversation a Generate continues (or replays the turn it already made).
pub(crate) async fn resolve(core: &Core, g: &Generate) -> Resolved {
    let owner = Owner::new(&g.tenant, &g.user);
    let store = &core.store;
    let unavailable = |owner: Owner, id: Option<String>, e: &StoreError| {
        warn!(request = %g.request_id, error = %e, "conversation store unavailable: answering single-turn");
        store.metrics.degraded("unavailable");
        Resolved::Go(Thread { owner, id, prior: None, status: StoreStatus::Unavailable })
    };
    if g.conversation == ConversationRef::Stateless {
        return Resolved::Go(Thread { owner, id: None, prior: None, status: StoreStatus::NotUsed });
    }
    match store.replay(&owner, &g.request_id).await {
        // A request id names one turn: reusing it for another conversation is refused.
        Ok(Some((c, version))) if g.conversation.id().is_none_or(|id| id == c.id) => {
            return Resolved::Replay(c, version);
        }
        Ok(Some((c, version))) => {
            return Resolved::Fail(
                ErrorCode::Conflict,
                format!("request_id {:?} already produced turn {version} of conversation {:?}", g.request_id, c.id),
            );
        }
        Ok(None) => {}
        Err(e @ StoreError::Unavailable { .. }) => {
            return unavailable(owner, g.conversation.id().map(String::from), &e);
        }
        Err(e) => return Resolved::Fail(e.code(), e.to_string()),
    }
    let id = match &g.conversation {
        ConversationRef::Continue(id) => id.clone(),
        _ => {
            return Resolved::Go(Thread {
                owner,
                id: Some(crate::store::new_id(&chorus_proto::conversation_prefix(&core.cfg.region))),
                prior: None,
                status: StoreStatus::Ok,
            });
        }
    };
    match store.load(&owner, &id).await {
        Ok((c, read)) => {
            if c.version >= store.cfg.max_turns {
                return Resolved::Fail(
                    ErrorCode::InvalidRequest,
                    format!(
                        "conversation: {} turns; the limit is {}; start a new conversation",
                        c.version, store.cfg.max_turns
                    ),
                );
            }
            let status = if read == HotRead::Down {
                store.metrics.degraded("hot_unavailable");
                StoreStatus::HotUnavailable
            } else {
                StoreStatus::Ok
            };
            Resolved::Go(Thread { owner, id: Some(id), prior: Some(c), status })
        }
        // Homed in another region whose store this core does not share, and routed here because
        // that region is unreachable: answer single-turn, flagged, and store nothing (a turn
        // kept here would split the conversation).
        Err(StoreError::NotFound)
            if chorus_proto::conversation_home(&id).is_some_and(|home| home != core.cfg.region) =>
        {
            let home = chorus_proto::conversation_home(&id).unwrap_or_default();
            warn!(request = %g.request_id, conversation = %id, home, "the conversation's home region is unreachable: answering single-turn");
            store.metrics.degraded("unavailable");
            Resolved::Go(Thread { owner, id: Some(id), prior: None, status: StoreStatus::Unavailable })
        }
        Err(StoreError::NotFound) => Resolved::Fail(ErrorCode::NotFound, format!("conversation {id:?} not found")),
        Err(e @ StoreError::Unavailable { .. }) => unavailable(owner, Some(id), &e),
        Err(e) => Resolved::Fail(e.code(), e.to_string()),
    }
}

/// Sends a committed turn again (a retry of a request whose turn is already stored: nothing is
/// generated or billed twice).
pub(crate) async fn replay(send: &mut FramedSend, c: &Conversation, version: u64) -> Result<Reply, Gone> {
    let Some(turn) = version.checked_sub(1).and_then(|i| c.turns.get(i as usize)) else {
        let r = error(ErrorCode::Internal, format!("conversation {} has no turn {version}", c.id), None);
        reply(send, &r).await?;
        return Ok(r);
    };
    let accepted = Accepted {
        model: turn.model.clone(),
        fleet: String::new(),
        degraded: false,
        queue_position: 0,
        prompt_tokens: turn.usage.prompt_tokens,
        trimmed_messages: 0,
        conversation_id: Some(c.id.clone()),
        history_messages: 0,
        store: StoreStatus::Ok,
        prompt: None,
    };
    reply(send, &Reply::Accepted(accepted)).await?;
    let token =
        Token { text: turn.answer.clone(), ids: vec![], logprobs: None, emitted_us: turn.created_ms * 1000, choice: 0 };
    reply(send, &Reply::Token(token)).await?;
    let r = Reply::Done(Done {
        finish_reason: turn.finish_reason,
        usage: turn.usage,
        filter_category: None,
        stored: Stored::Committed { conversation_id: c.id.clone(), version },
        choices: Vec::new(),
    });
    reply(send, &r).await?;
    Ok(r)
}

/// Stores a finished turn, durable tier first; says what became of it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn store_turn(
    core: &Core,
    g: &Generate,
    thread: &Thread,
    model: &str,
    answer: &str,
    finish_reason: FinishReason,
    usage: Usage,
    context: Option<Context>,
) -> Stored {
    if g.conversation == ConversationRef::Stateless {
        return Stored::NotRequested;
    }
    let (Some(id), false) = (&thread.id, thread.status == StoreStatus::Unavailable) else {
        return Stored::Failed {
            code: ErrorCode::StoreUnavailable,
            message: "the conversation store was unreachable: this turn was answered without history and is not stored"
                .into(),
        };
    };
    let now = crate::store::now_ms();
    let commit = Commit {
        owner: thread.owner.clone(),
        conversation_id: id.clone(),
        base: thread.prior.as_ref().map(|c| c.version),
        tier: g.tier,
        turn: chorus_proto::Turn {
            version: thread.prior.as_ref().map_or(1, |c| c.version + 1),
            request_id: g.request_id.clone(),
            created_ms: now,
            input: g.messages.clone(),
            answer: answer.to_string(),
            finish_reason,
            model: model.to_string(),
            usage,
        },
        context,
        now_ms: now,
    };
    match core.store.commit(&commit, thread.prior.clone()).await {
        Ok(version) => Stored::Committed { conversation_id: id.clone(), version },
        Err(e) => {
            warn!(request = %g.request_id, conversation = %id, error = %e, "turn not stored");
            Stored::Failed { code: e.code(), message: e.to_string() }
        }
    }
}
