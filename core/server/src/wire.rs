//! The one place the core converts between the wire's types (`chorus-proto`) and the engine's
//! and scheduler's. The crates cannot name each other (the scheduler and the engine know no
//! wire crate, and the wire knows no engine), so the conversions live here, once each.

use chorus_proto::{ErrorCode, FinishReason, Tier, Usage};

/// The scheduler's tier for a wire tier.
pub fn sched_tier(t: Tier) -> chorus_sched::Tier {
    chorus_sched::Tier::ALL[t.index()]
}

/// How the engine ended a sequence, as the wire says it.
pub fn finish_reason(r: chorus_engine::engine::FinishReason) -> FinishReason {
    match r {
        chorus_engine::engine::FinishReason::Stop => FinishReason::Stop,
        chorus_engine::engine::FinishReason::Length => FinishReason::Length,
    }
}

/// The engine's token counts, as the wire carries them.
pub fn usage(u: &chorus_engine::serve::Usage) -> Usage {
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens: n(u.prompt_tokens),
        completion_tokens: n(u.completion_tokens),
        cached_tokens: n(u.cached_tokens),
    }
}

/// The error code for a sequence the scheduler refused.
pub fn admit_error_code(e: &chorus_sched::AdmitError) -> ErrorCode {
    match e {
        _ if e.retry_after_ms().is_some() => ErrorCode::OverCapacity,
        chorus_sched::AdmitError::InputTooLong { .. } | chorus_sched::AdmitError::NeverFits { .. } => {
            ErrorCode::PromptTooLong
        }
        _ => ErrorCode::InvalidRequest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire tier and the scheduler's tier are separate types (the scheduler may not depend
    /// on a wire crate, and the edge may not depend on the scheduler); they must stay in step.
    #[test]
    fn wire_and_scheduler_tiers_line_up() {
        for t in Tier::ALL {
            assert_eq!(sched_tier(t).as_str(), t.as_str());
        }
        assert_eq!(Tier::ALL.len(), chorus_sched::Tier::ALL.len());
    }

    /// The edge bounds `max_tokens` by the protocol's limit and the core's engine by its own:
    /// they are one number, so a request the edge admits is never refused for its length.
    #[test]
    fn the_protocol_and_the_engine_bound_max_tokens_alike() {
        assert_eq!(chorus_proto::Limits::default().max_tokens, chorus_engine::sampler::MAX_MAX_TOKENS);
    }
}
