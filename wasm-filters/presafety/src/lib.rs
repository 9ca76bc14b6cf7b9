//! `presafety`: the pre-model safety gate. Scores the prompt (the request's user turns, newest
//! last) with the learned classifier of `chorus-presafety-rules`, with its rules as
//! precision-checked evidence, and denies with 400 `content_policy` naming the category, before
//! any GPU time is spent. Allowed requests carry no annotation; denials are counted per
//! category.
//!
//! Configuration:
//! - `mode` = `enforce` (default) or `monitor` (log and count, never deny);
//! - `disabled_categories` = comma-separated category names to let through;
//! - `threshold` = the harm score (0..=1) at which every category blocks, replacing the trained
//!   defaults; `threshold_<category>` (e.g. `threshold_self_harm`) for one category. The
//!   calibration table in `presafety-rules/train/HELDOUT.md` gives block rate against benign
//!   false-positive rate for each threshold.
//!
//! A configuration value that does not parse or is out of range fails the request (the
//! filter's `on-error = deny` applies) and says which key is wrong: a typo must not silently
//! turn the gate off.

use chorus_filter_sdk::host::{self, Level};
use chorus_filter_sdk::{Filter, Request, Verdict, export_filter};
use chorus_presafety_rules::{Category, Limits, Policy, scan_with};

struct PreSafety;

/// The policy with this filter's configured thresholds.
fn policy() -> Result<Policy<'static>, String> {
    let mut policy = Policy::builtin();
    let parse = |key: &str| -> Result<Option<f32>, String> {
        let Some(text) = host::config(key) else { return Ok(None) };
        match text.trim().parse::<f32>() {
            Ok(t) if (0.0..=1.0).contains(&t) => Ok(Some(t)),
            _ => Err(format!("config `{key}` must be a number from 0 to 1, got {text:?}")),
        }
    };
    if let Some(t) = parse("threshold")? {
        policy.thresholds = [t; Category::ALL.len()];
    }
    for (k, c) in Category::ALL.iter().enumerate() {
        if let Some(t) = parse(&format!("threshold_{}", c.as_str()))? {
            policy.thresholds[k] = t;
        }
    }
    Ok(policy)
}

impl Filter for PreSafety {
    fn on_request(req: Request) -> Verdict {
        let policy = match policy() {
            Ok(p) => p,
            Err(e) => {
                host::log(Level::Error, &e);
                return Verdict::deny(500, "filter_misconfigured", "the safety filter is misconfigured");
            }
        };
        let Some(finding) = scan_with(&req.prompt_text, &Limits::default(), &policy) else { return Verdict::allow() };
        let category = finding.category.as_str();
        let disabled = host::config("disabled_categories").unwrap_or_default();
        if disabled.split(',').any(|c| c.trim() == category) {
            return Verdict::allow();
        }
        host::metric_add(&format!("blocked_{category}"), 1);
        if host::config("mode").is_some_and(|m| m.trim() == "monitor") {
            let score = finding.score;
            host::log(Level::Info, &format!("would block: category {category}, {} (score {score:.2})", finding.rule));
            return Verdict::allow();
        }
        Verdict::deny(
            400,
            "content_policy",
            format!("this request was blocked by the content policy (category: {category})"),
        )
    }
}

export_filter!(PreSafety);
