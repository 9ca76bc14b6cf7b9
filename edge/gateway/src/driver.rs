//! The upstream driver: one task per [`Run`] takes the pool's candidate cores in order, opens
//! a request stream, and turns the core's replies into run events. It retries on the next core
//! only before the first token reached the client, resets the upstream stream when the run is
//! cancelled, and on every ending reconciles the filters and records or releases the
//! idempotency key ([`Finisher`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_filter_host::{CompletionTicket, Outcome};
use chorus_proto::tools::{CallParser, Piece};
use chorus_proto::{ErrorCode, Generate, Reply, Stored};
use tracing::warn;

use crate::admission::filter_usage;
use crate::error::ApiError;
use crate::openai::TokenLogprob;
use crate::run::{Run, RunEvent};
use crate::state::EdgeState;

/// What to do when a run ends: reconcile the filters' reservations, record or release the
/// idempotency key.
pub(crate) struct Finisher {
    pub(crate) st: Arc<EdgeState>,
    pub(crate) run: Arc<Run>,
    pub(crate) ticket: Option<CompletionTicket>,
    /// (scope, key, body fingerprint) of a claimed `Idempotency-Key`.
    pub(crate) idem: Option<(String, String, String)>,
}

impl Finisher {
    /// `transcript`: every event of a completed answer (the driver's own copy, whatever the
    /// bounded buffer dropped), recorded for idempotent replay.
    async fn end(self, outcome: Outcome, usage: chorus_proto::Usage, transcript: Vec<RunEvent>) {
        self.st.complete(self.ticket, outcome, filter_usage(usage)).await;
        if outcome == Outcome::Completed {
            self.st.metrics.usage(
                self.run.tier.as_str(),
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.completion_tokens,
            );
        }
        if let Some((scope, key, fp)) = self.idem {
            match outcome {
                Outcome::Completed => {
                    self.st.idempotency.finish(&scope, &key, &fp, &self.st.cfg.edge_id, &self.run.id, transcript).await
                }
                _ => self.st.idempotency.release(&scope, &key).await,
            }
        }
    }

    /// Ends a run that did not complete: settles the filters and frees the key first, then
    /// publishes `error`, so a caller who retries as soon as they see it finds what was given
    /// back and the key free.
    async fn fail(self, outcome: Outcome, usage: chorus_proto::Usage, error: ApiError) {
        let run = self.run.clone();
        self.end(outcome, usage, vec![]).await;
        run.push(RunEvent::Error(error));
    }
}

/// How a run that ended with `error` went, for the filters: a failure that was not the
/// caller's, before any token reached them, is `Unavailable` (they are not charged for it);
/// anything else is `Failed`.
pub(crate) fn failure(error: &ApiError, first_token_sent: bool) -> Outcome {
    if first_token_sent || error.is_callers_fault() { Outcome::Failed } else { Outcome::Unavailable }
}

/// What an answer that ends early consumed, as far as the edge saw it: the prompt tokens the
/// core reported on accepting it and the tokens streamed since.
fn usage_so_far(accepted: Option<&chorus_proto::Accepted>, completion_tokens: u32) -> chorus_proto::Usage {
    chorus_proto::Usage { prompt_tokens: accepted.map_or(0, |a| a.prompt_tokens), completion_tokens, cached_tokens: 0 }
}

/// Codes another core may answer differently, before any token was sent: a core that is
/// leaving, full, or whose engine failed (it restarts; a sibling can answer now).
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Draining
            | ErrorCode::ShuttingDown
            | ErrorCode::OverCapacity
            | ErrorCode::EngineFailed
            | ErrorCode::Internal
    )
}

/// Ends the run with an error if its driver stops without doing so (a panic): readers never
/// wait on an answer nobody drives.
struct EndGuard(Arc<Run>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.0.is_done() {
            self.0.push(RunEvent::Error(ApiError::Unavailable("the edge lost this answer; retry".into())));
        }
    }
}

/// Drives one run against the upstream cores to its end: candidates in the pool's order,
/// the next core tried only before the first token, the upstream stream reset on cancel.
pub(crate) async fn drive(st: Arc<EdgeState>, run: Arc<Run>, g: Generate, key: String, fin: Finisher) {
    use std::sync::atomic::Ordering::Relaxed;
    let _guard = EndGuard(run.clone());
    let open_timeout = Duration::from_millis(st.cfg.upstream.connect_timeout_ms);
    // The core enforces the deadline; the edge stops waiting a little later in case it cannot.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(st.cfg.upstream.deadline_ms) + 5_000);
    let candidates = st.pool.candidates(&key);
    let mut last = ApiError::Unavailable("no core is reachable; retry shortly".into());
    let mut head_sent = false;
    let mut transcript = Vec::new();
    let push = |run: &Run, transcript: &mut Vec<RunEvent>, e: RunEvent| {
        transcript.push(e.clone());
        run.push(e);
    };
    let cancelled = |st: &EdgeState| {
        st.metrics.cancelled.fetch_add(1, Relaxed);
        ApiError::Upstream { code: ErrorCode::Cancelled, message: "the client went away".into(), retry_after_ms: None }
    };
    for (attempt, (slot, client)) in candidates.into_iter().take(st.cfg.upstream.max_attempts).enumerate() {
        if attempt > 0 {
            st.metrics.upstream_retries.fetch_add(1, Relaxed);
        }
        let sent = Instant::now();
        let opened = tokio::select! {
            r = tokio::time::timeout(open_timeout, client.generate(g.clone())) => r,
            _ = run.cancelled() => {
                // The caller's choice: charged, for what it consumed (nothing yet).
                fin.fail(Outcome::Cancelled, Default::default(), cancelled(&st)).await;
                return;
            }
        };
        let mut stream = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                warn!(core = %slot.site.name, error = %e, request_id = %g.request_id, "upstream open failed; trying the next core");
                last = ApiError::Unavailable(format!("core {} is unreachable", slot.site.name));
                continue;
            }
            Err(_) => {
                warn!(core = %slot.site.name, request_id = %g.request_id, "upstream open timed out; trying the next core");
                last = ApiError::Unavailable(format!("core {} did not take the request in time", slot.site.name));
                continue;
            }
        };
        let mut accepted = None;
        let mut streamed: u32 = 0;
        // With tools offered, the answer's text is read for calls (before the first token, so
        // a retry on the next core starts it afresh).
        let mut calls: Vec<Option<CallParser>> =
            (0..g.n.max(1)).map(|_| g.offers_tools().then(CallParser::new)).collect();
        loop {
            let reply = tokio::select! {
                r = stream.next() => r,
                _ = run.cancelled() => {
                    stream.reset();
                    fin.fail(Outcome::Cancelled, usage_so_far(accepted.as_ref(), streamed), cancelled(&st)).await;
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    stream.reset();
                    let message = format!("no answer within {} ms", st.cfg.upstream.deadline_ms);
                    let e = ApiError::Upstream { code: ErrorCode::DeadlineExceeded, message, retry_after_ms: None };
                    fin.fail(failure(&e, head_sent), usage_so_far(accepted.as_ref(), streamed), e).await;
                    return;
                }
            };
            match reply {
                Ok(Some(Reply::Accepted(a))) => accepted = Some(a),
                Ok(Some(Reply::Token(t))) => {
                    streamed = streamed.saturating_add(u32::try_from(t.ids.len()).unwrap_or(u32::MAX));
                    if !head_sent {
                        head_sent = true;
                        st.metrics.upstream_ttft.observe(sent.elapsed());
                        push(&run, &mut transcript, head(accepted.as_ref(), g.n));
                    }
                    let logprobs =
                        t.logprobs.as_ref().map(|(c, top)| vec![TokenLogprob::from_proto(c, top)]).unwrap_or_default();
                    // A choice the request did not ask for is the core's bug; it is dropped.
                    let Some(parser) = calls.get_mut(usize::from(t.choice)) else { continue };
                    let pieces = match parser {
                        Some(p) => p.push(&t.text),
                        None => vec![Piece::Content(t.text)],
                    };
                    for e in events(&g.request_id, u32::from(t.choice), pieces, logprobs) {
                        push(&run, &mut transcript, e);
                    }
                }
                Ok(Some(Reply::Done(d))) => {
                    if !head_sent {
                        push(&run, &mut transcript, head(accepted.as_ref(), g.n));
                    }
                    let mut called = Vec::with_capacity(calls.len());
                    for (choice, parser) in calls.iter_mut().enumerate() {
                        if let Some(p) = parser {
                            for e in events(&g.request_id, choice as u32, p.finish(), Vec::new()) {
                                push(&run, &mut transcript, e);
                            }
                        }
                        called.push(parser.as_ref().is_some_and(|p| p.calls() > 0));
                    }
                    let usage = d.usage;
                    let mut last = finish(d);
                    if let RunEvent::Finish { finish_reason, choices, .. } = &mut last {
                        // An answer that made calls ended `tool_calls`.
                        let tool = |called: bool, reason: &mut String| {
                            if called && reason == "stop" {
                                *reason = "tool_calls".into();
                            }
                        };
                        tool(called.first().copied().unwrap_or(false), finish_reason);
                        for (c, reason) in called.iter().zip(choices.iter_mut()) {
                            tool(*c, reason);
                        }
                    }
                    push(&run, &mut transcript, last);
                    fin.end(Outcome::Completed, usage, transcript).await;
                    return;
                }
                Ok(Some(Reply::Error(e))) => {
                    if !head_sent && retryable(e.code) {
                        last = e.into();
                        break;
                    }
                    let e = ApiError::from(e);
                    fin.fail(failure(&e, head_sent), usage_so_far(accepted.as_ref(), streamed), e).await;
                    return;
                }
                Ok(Some(Reply::Store(_))) | Ok(None) | Err(_) => {
                    if !head_sent {
                        warn!(core = %slot.site.name, request_id = %g.request_id, "upstream stream ended before the first token; trying the next core");
                        last = ApiError::Unavailable(format!("core {} failed before answering", slot.site.name));
                        break;
                    }
                    warn!(core = %slot.site.name, request_id = %g.request_id, "upstream failed mid-answer");
                    let e = ApiError::Upstream {
                        code: ErrorCode::EngineFailed,
                        message: "the core serving this answer failed mid-answer; retry the request (with the same Idempotency-Key, nothing is billed twice)".into(),
                        retry_after_ms: Some(1000),
                    };
                    fin.fail(Outcome::Failed, usage_so_far(accepted.as_ref(), streamed), e).await;
                    return;
                }
            }
        }
    }
    // No core took it: nothing reached the caller.
    fin.fail(failure(&last, false), Default::default(), last).await;
}

/// A token's pieces as run events: content as deltas (the token's logprobs on the first, or on
/// an empty delta when the token was all call syntax), calls as their start and argument chunks.
fn events(request_id: &str, choice: u32, pieces: Vec<Piece>, mut logprobs: Vec<TokenLogprob>) -> Vec<RunEvent> {
    let mut out = Vec::with_capacity(pieces.len() + 1);
    for p in pieces {
        match p {
            Piece::Content(text) => {
                out.push(RunEvent::Delta { text, logprobs: std::mem::take(&mut logprobs), choice });
            }
            Piece::CallStart { index, name } => {
                let id: String = format!("call_{choice}_{index}_{request_id}").chars().take(40).collect();
                out.push(RunEvent::ToolCall { index: index as u32, id, name, choice });
            }
            Piece::Arguments { index, text } => out.push(RunEvent::ToolArgs { index: index as u32, text, choice }),
        }
    }
    if !logprobs.is_empty() {
        out.push(RunEvent::Delta { text: String::new(), logprobs, choice });
    }
    out.retain(|e| !matches!(e, RunEvent::Delta { text, logprobs, .. } if text.is_empty() && logprobs.is_empty()));
    out
}

/// The run's last event for the core's `Done`.
fn finish(d: chorus_proto::Done) -> RunEvent {
    let (conversation_id, turn_version, store_error) = match d.stored {
        Stored::NotRequested => (None, None, None),
        Stored::Committed { conversation_id, version } => (Some(conversation_id), Some(version), None),
        Stored::Failed { code, message } => (None, None, Some(format!("{code}: {message}"))),
    };
    RunEvent::Finish {
        finish_reason: d.finish_reason.as_str().into(),
        usage: d.usage.into(),
        conversation_id,
        turn_version,
        store_error,
        choices: d.choices.iter().map(|c| c.finish_reason.as_str().to_string()).collect(),
    }
}

/// The run's first event, from the core's `Accepted` (when it came).
fn head(a: Option<&chorus_proto::Accepted>, n: u8) -> RunEvent {
    RunEvent::Head {
        model: a.map(|a| a.model.clone()).unwrap_or_default(),
        fleet: a.map(|a| a.fleet.clone()).unwrap_or_default(),
        prompt: a.and_then(|a| a.prompt.clone()),
        degraded_model: a.is_some_and(|a| a.degraded),
        degraded_store: a.is_some_and(|a| a.store.degraded()),
        conversation_id: a.and_then(|a| a.conversation_id.clone()),
        choices: u32::from(n.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_engine_or_a_full_core_is_retried_elsewhere_but_the_callers_errors_are_not() {
        for code in [ErrorCode::EngineFailed, ErrorCode::OverCapacity, ErrorCode::Draining, ErrorCode::Internal] {
            assert!(retryable(code), "{code:?}");
        }
        for code in
            [ErrorCode::PromptTooLong, ErrorCode::InvalidRequest, ErrorCode::Cancelled, ErrorCode::DeadlineExceeded]
        {
            assert!(!retryable(code), "{code:?}");
        }
    }

    #[test]
    fn only_failures_before_the_first_token_that_are_not_the_callers_go_unbilled() {
        let upstream = |code| ApiError::Upstream { code, message: String::new(), retry_after_ms: None };
        let no_core = ApiError::Unavailable("no core".into());
        for e in [&no_core, &upstream(ErrorCode::OverCapacity), &upstream(ErrorCode::EngineFailed)] {
            assert_eq!(failure(e, false), Outcome::Unavailable, "{e:?}");
            assert_eq!(failure(e, true), Outcome::Failed, "after a token: {e:?}");
        }
        for e in [upstream(ErrorCode::PromptTooLong), upstream(ErrorCode::InvalidRequest), ApiError::KeyReused] {
            assert_eq!(failure(&e, false), Outcome::Failed, "the caller's: {e:?}");
        }
    }
}
