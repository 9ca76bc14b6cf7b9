//! `ratelimit`: per-tier message windows (free 40 per 3 hours by default), a per-second burst
//! limit, and a daily token budget kept by reserve-then-reconcile: the estimate (prompt tokens
//! plus `max_tokens`) is reserved at admission and corrected with the real usage in
//! `on-complete`. Denials are 429 with the exact time until one more request is admitted.
//!
//! Every request counts towards the burst window; only requests that carry messages count
//! towards the message window and the token budget.
//!
//! What was not the caller's doing is given back in `on-complete`: a request that ended
//! `unavailable` (it failed before its first token because no core could take it, its fleet
//! was over capacity, the engine failed, …) or `replayed` (an idempotent repeat answered from
//! the earlier request's record) gets its message back (`window-release`) and its whole token
//! reservation. Every other ending keeps the message charged. Tokens are reconciled with the
//! usage the edge reports for a completed answer and for one the caller cancelled (prompt plus
//! completion tokens as far as they were streamed); a failed or denied request is charged no
//! tokens. A request this filter refuses for tokens gets its message back at once. The burst
//! window is never refunded: it counts attempts.
//!
//! Counters live in the host (in-process or Redis, shared by every edge); the filter keeps no
//! state. Keys are per tenant and user, or per client IP when no identity was established.
//!
//! Configuration (all optional; `<tier>` is free, team, plus or enterprise):
//! - `messages.<tier>` = `40/3h` — a sliding window; `unlimited` turns it off.
//! - `burst.<tier>` = `2/1s` — a sliding window of requests.
//! - `tokens.<tier>` = `200000/1d` — a fixed window aligned to UTC days (or the given length).
//! - `default_max_tokens` = `512` — assumed for the reservation when the client sets none.
//! - `on_store_error` = `allow` | `deny` — when the counter store cannot answer.

use chorus_filter_sdk::host::{self, Level};
use chorus_filter_sdk::{Completion, Filter, Outcome, Request, Verdict, annotation, export_filter};

mod limits;
pub use limits::{Rate, parse_rate};

/// Annotation holding the tokens reserved for this request.
pub const RESERVED: &str = "ratelimit.reserved_tokens";
/// Annotation holding the frozen request time, to reconcile in the same budget window.
pub const RESERVED_AT: &str = "ratelimit.reserved_at_ms";
/// Annotation holding whose budget the reservation came from.
pub const SUBJECT: &str = "ratelimit.subject";
/// Annotation holding the time the request's message was recorded, to give it back.
pub const MESSAGE_AT: &str = "ratelimit.message_at_ms";

const TIERS: [&str; 4] = ["free", "team", "plus", "enterprise"];

/// The defaults of DESIGN §6, overridable per tier in config.
fn default_rate(kind: &str, tier: &str) -> Option<Rate> {
    const H3: u64 = 3 * 3_600_000;
    const DAY: u64 = 86_400_000;
    let (limit, window_ms) = match (kind, tier) {
        ("messages", "free") => (40, H3),
        ("messages", "team" | "plus") => (200, H3),
        ("messages", _) => return None,
        ("burst", "free") => (2, 1_000),
        ("burst", "team" | "plus") => (5, 1_000),
        ("burst", _) => (20, 1_000),
        ("tokens", "free") => (200_000, DAY),
        ("tokens", "team" | "plus") => (2_000_000, DAY),
        ("tokens", _) => return None,
        _ => return None,
    };
    Some(Rate { limit, window_ms })
}

fn rate(kind: &str, tier: &str) -> Result<Option<Rate>, String> {
    match host::config(&format!("{kind}.{tier}")) {
        None => Ok(default_rate(kind, tier)),
        Some(text) => parse_rate(&text).map_err(|e| format!("config `{kind}.{tier}`: {e}")),
    }
}

fn fail_open() -> bool {
    host::config("on_store_error").is_none_or(|v| v.trim() != "deny")
}

/// The tier the limits apply to: what auth established, else the most restrictive.
fn tier_of(tier: Option<&str>) -> &'static str {
    tier.and_then(|t| TIERS.iter().copied().find(|k| *k == t)).unwrap_or("free")
}

fn subject(tenant: Option<&str>, user: Option<&str>, client_ip: &str) -> String {
    match (tenant, user) {
        (Some(t), Some(u)) => format!("u:{t}:{u}"),
        (Some(t), None) => format!("t:{t}"),
        _ => format!("ip:{client_ip}"),
    }
}

fn human(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s.div_ceil(60)),
        _ => format!("{} h {} min", s / 3600, (s % 3600).div_ceil(60)),
    }
}

fn store_error(what: &str, err: &str) -> Option<Verdict> {
    host::log(Level::Warn, &format!("counter store failed on {what}: {err}"));
    host::metric_add("store_errors", 1);
    if fail_open() { None } else { Some(Verdict::deny(503, "rate_limit_unavailable", "rate limiting is unavailable")) }
}

/// What a sliding window made of one request.
enum Window {
    /// Admitted and recorded.
    Recorded,
    /// Let through without a record: the window is unlimited, or the store failed open.
    Open,
    /// Refused (over the limit, or the store failed closed).
    Refused(Verdict),
}

fn window(kind: &str, code: &str, tier: &str, key: &str) -> Result<Window, String> {
    let Some(r) = rate(kind, tier)? else { return Ok(Window::Open) };
    match host::window_hit(key, r.limit_u32(), r.window_ms) {
        Ok(s) if s.allowed => Ok(Window::Recorded),
        Ok(s) => {
            host::metric_add(&format!("denied_{kind}"), 1);
            let message = format!(
                "{tier} tier allows {} requests per {}; retry in {}",
                r.limit,
                limits::format_window(r.window_ms),
                human(s.retry_after_ms)
            );
            Ok(Window::Refused(Verdict::deny_retry(429, code, message, s.retry_after_ms.max(1))))
        }
        Err(e) => Ok(store_error(kind, &e).map_or(Window::Open, Window::Refused)),
    }
}

/// Gives back the message `who` was charged at `at_ms`.
fn release_message(who: &str, at_ms: u64) -> Result<(), String> {
    if host::window_release(&format!("msg:{who}"), at_ms)? {
        host::metric_add("refunded_messages", 1);
    }
    Ok(())
}

struct RateLimit;

impl RateLimit {
    fn decide(req: &Request) -> Result<Verdict, String> {
        let tier = tier_of(req.tier.as_deref());
        let who = subject(req.tenant.as_deref(), req.user.as_deref(), &req.client_ip);
        // Bursts count attempts; the message window counts admitted requests.
        if let Window::Refused(v) = window("burst", "rate_limited_burst", tier, &format!("burst:{who}"))? {
            return Ok(v);
        }
        // Requests that carry no messages (listing conversations, feedback, …) spend no
        // message or token budget.
        if req.message_count == 0 {
            return Ok(Verdict::allow());
        }
        let now = host::now_ms();
        let message = match window("messages", "rate_limited", tier, &format!("msg:{who}"))? {
            Window::Refused(v) => return Ok(v),
            Window::Recorded => true,
            Window::Open => false,
        };
        match Self::reserve_tokens(req, tier, &who, now) {
            Ok(Verdict::Allow(mut charged)) => {
                if message {
                    charged.push(annotation(MESSAGE_AT, now.to_string()));
                }
                if !charged.is_empty() {
                    charged.push(annotation(SUBJECT, who));
                }
                Ok(Verdict::allow_with(charged))
            }
            refused => {
                // A request this filter refuses is not admitted: its message does not count.
                if message && let Err(e) = release_message(&who, now) {
                    host::log(Level::Warn, &format!("could not give back a refused request's message: {e}"));
                }
                refused
            }
        }
    }

    /// Reserves the request's token estimate: allows with the reservation's annotations (none
    /// when tokens are unlimited or the store failed open), or refuses.
    fn reserve_tokens(req: &Request, tier: &str, who: &str, now: u64) -> Result<Verdict, String> {
        let Some(budget) = rate("tokens", tier)? else { return Ok(Verdict::allow()) };
        let default_max = host::config_parse("default_max_tokens", 512u32)?;
        let estimate =
            i64::from(host::token_count(&req.prompt_text)) + i64::from(req.max_tokens.unwrap_or(default_max));
        match host::budget_reserve(&format!("tok:{who}"), estimate, budget.limit as i64, budget.window_ms) {
            Ok(s) if s.granted => Ok(Verdict::allow_with(vec![
                annotation(RESERVED, estimate.to_string()),
                annotation(RESERVED_AT, now.to_string()),
            ])),
            Ok(s) => {
                host::metric_add("denied_tokens", 1);
                let message = format!(
                    "{tier} tier token budget of {} per {} is spent; it resets in {}",
                    budget.limit,
                    limits::format_window(budget.window_ms),
                    human(s.retry_after_ms)
                );
                Ok(Verdict::deny_retry(429, "token_budget_exhausted", message, s.retry_after_ms.max(1)))
            }
            Err(e) => Ok(store_error("tokens", &e).unwrap_or_else(Verdict::allow)),
        }
    }

    /// Whether a request that ended so keeps its message charged: not after a failure before
    /// the first token that was not the caller's, nor as a repeat of a request already charged.
    fn keeps_message(outcome: Outcome) -> bool {
        match outcome {
            Outcome::Completed | Outcome::Failed | Outcome::Cancelled | Outcome::Denied => true,
            Outcome::Unavailable | Outcome::Replayed => false,
        }
    }

    fn reconcile(done: &Completion) -> Result<(), String> {
        let Some(who) = done.annotation(SUBJECT) else { return Ok(()) };
        // Both halves run even when one fails: a store error in one must not cost the other.
        let message = match done.annotation(MESSAGE_AT).and_then(|v| v.parse::<u64>().ok()) {
            Some(at) if !Self::keeps_message(done.outcome) => release_message(who, at),
            _ => Ok(()),
        };
        let tokens = Self::reconcile_tokens(done, who);
        message.and(tokens)
    }

    fn reconcile_tokens(done: &Completion, who: &str) -> Result<(), String> {
        let Some(reserved) = done.annotation(RESERVED).and_then(|v| v.parse::<i64>().ok()) else { return Ok(()) };
        let at = done.annotation(RESERVED_AT).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let tier = tier_of(done.tier.as_deref());
        let Some(budget) = rate("tokens", tier)? else { return Ok(()) };
        let now = host::now_ms();
        if budget.window_ms == 0 || at / budget.window_ms != now / budget.window_ms {
            // The window the reservation was taken from is over; a new one starts clean.
            return Ok(());
        }
        let used = match done.outcome {
            // What the caller got, or chose to stop: its tokens as far as they were streamed.
            Outcome::Completed | Outcome::Cancelled => {
                i64::from(done.usage.prompt_tokens) + i64::from(done.usage.completion_tokens)
            }
            // The caller's own failures come before any token; a failure after one is the
            // core's, and the retry it calls for is billed in full. Denied, unavailable and
            // replayed requests generated nothing.
            Outcome::Failed | Outcome::Denied | Outcome::Unavailable | Outcome::Replayed => 0,
        };
        let delta = used - reserved;
        if delta != 0 {
            host::counter_add(&format!("tok:{who}"), delta, budget.window_ms)?;
        }
        Ok(())
    }
}

impl Filter for RateLimit {
    fn on_request(req: Request) -> Verdict {
        RateLimit::decide(&req).unwrap_or_else(|e| {
            host::log(Level::Error, &e);
            Verdict::deny(500, "filter_misconfigured", "rate limit configuration is invalid")
        })
    }

    fn on_complete(done: Completion) {
        if let Err(e) = RateLimit::reconcile(&done) {
            host::log(Level::Warn, &format!("reconcile failed: {e}"));
        }
    }
}

export_filter!(RateLimit);
