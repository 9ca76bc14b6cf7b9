//! `presafety`: the pre-model safety gate. Runs the rule engine of `chorus-presafety-rules`
//! over the prompt and denies with 400 `content_policy` naming the category, before any GPU
//! time is spent. Allowed requests carry no annotation; denials are counted per category.
//!
//! Configuration: `mode` = `enforce` (default) or `monitor` (log and count, never deny);
//! `disabled_categories` = comma-separated category names to let through.

use chorus_filter_sdk::host::{self, Level};
use chorus_filter_sdk::{Filter, Request, Verdict, export_filter};
use chorus_presafety_rules::scan;

struct PreSafety;

impl Filter for PreSafety {
    fn on_request(req: Request) -> Verdict {
        let Some(finding) = scan(&req.prompt_text) else { return Verdict::allow() };
        let category = finding.category.as_str();
        let disabled = host::config("disabled_categories").unwrap_or_default();
        if disabled.split(',').any(|c| c.trim() == category) {
            return Verdict::allow();
        }
        host::metric_add(&format!("blocked_{category}"), 1);
        if host::config("mode").is_some_and(|m| m.trim() == "monitor") {
            host::log(Level::Info, &format!("would block: category {category}, rule {}", finding.rule));
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
