//! `ratelimit`: per-tier message windows (free 40 per 3 hours by default), a per-second burst
//! limit, and a daily token budget kept by reserve-then-reconcile: the estimate (prompt tokens
//! plus `max_tokens`) is reserved at admission and corrected with the real usage in
//! `on-complete`. Denials are 429 with the exact time until one more request is admitted.
//!
//! Every request counts towards the burst window; only requests that carry messages count
//! towards the message window and the token budget.
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

fn window(kind: &str, code: &str, tier: &str, key: &str) -> Result<Option<Verdict>, String> {
    let Some(r) = rate(kind, tier)? else { return Ok(None) };
    match host::window_hit(key, r.limit_u32(), r.window_ms) {
        Ok(s) if s.allowed => Ok(None),
        Ok(s) => {
            host::metric_add(&format!("denied_{kind}"), 1);
            let message = format!(
                "{tier} tier allows {} requests per {}; retry in {}",
                r.limit,
                limits::format_window(r.window_ms),
                human(s.retry_after_ms)
            );
            Ok(Some(Verdict::deny_retry(429, code, message, s.retry_after_ms.max(1))))
        }
        Err(e) => Ok(store_error(kind, &e)),
    }
}

struct RateLimit;

impl RateLimit {
    fn decide(req: &Request) -> Result<Verdict, String> {
        let tier = tier_of(req.tier.as_deref());
        let who = subject(req.tenant.as_deref(), req.user.as_deref(), &req.client_ip);
        // Bursts count attempts; the message window counts admitted requests.
        if let Some(v) = window("burst", "rate_limited_burst", tier, &format!("burst:{who}"))? {
            return Ok(v);
        }
        // Requests that carry no messages (listing conversations, feedback, …) spend no
        // message or token budget.
        if req.message_count == 0 {
            return Ok(Verdict::allow());
        }
        if let Some(v) = window("messages", "rate_limited", tier, &format!("msg:{who}"))? {
            return Ok(v);
        }
        let Some(budget) = rate("tokens", tier)? else { return Ok(Verdict::allow()) };
        let default_max = host::config_parse("default_max_tokens", 512u32)?;
        let estimate =
            i64::from(host::token_count(&req.prompt_text)) + i64::from(req.max_tokens.unwrap_or(default_max));
        match host::budget_reserve(&format!("tok:{who}"), estimate, budget.limit as i64, budget.window_ms) {
            Ok(s) if s.granted => Ok(Verdict::allow_with(vec![
                annotation(RESERVED, estimate.to_string()),
                annotation(RESERVED_AT, host::now_ms().to_string()),
                annotation(SUBJECT, who),
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

    fn reconcile(done: &Completion) -> Result<(), String> {
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
            Outcome::Denied => 0,
            _ => i64::from(done.usage.prompt_tokens) + i64::from(done.usage.completion_tokens),
        };
        let delta = used - reserved;
        if delta != 0
            && let Some(who) = done.annotation(SUBJECT)
        {
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
