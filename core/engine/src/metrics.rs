//! What an engine loop measures ([`EngineMetrics`]) and its Prometheus text.

use chorus_sched::Tier;
use chorus_sched::metrics::{REJECT_REASONS, SchedCounters, TierHistograms};

/// What the engine loop has measured, per tier where it matters.
#[derive(Debug, Clone, Default)]
pub struct EngineMetrics {
    /// Submission to first token.
    pub ttft: TierHistograms,
    /// Between consecutive tokens of one sequence.
    pub inter_token: TierHistograms,
    /// Submission to start of prefill.
    pub queue: TierHistograms,
    /// The scheduler's counters (prefix cache, preemptions, rejections, tokens by tier).
    pub sched: SchedCounters,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    pub running: usize,
    pub waiting: [usize; 4],
    /// Steps the backend failed (each restarts the loop).
    pub failed_steps: u64,
    /// Steps run (a watchdog's sign of progress).
    pub steps: u64,
    /// Times the loop restarted after a panic or a failed step.
    pub restarts: u64,
    /// The loop is running (not restarting, not down).
    pub up: bool,
}

impl EngineMetrics {
    /// Prometheus text exposition, every series labelled with `model`.
    pub fn render(&self, model: &str) -> String {
        self.render_labelled(&[("model", model)])
    }

    /// Prometheus text exposition, every series carrying `labels`.
    pub fn render_labelled(&self, labels: &[(&str, &str)]) -> String {
        use std::fmt::Write as _;
        let m = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace(['"', '\\', '\n'], "_")))
            .collect::<Vec<_>>()
            .join(",");
        let mut o = String::new();
        self.ttft.render("chorus_ttft_seconds", "Time to first token.", &m, &mut o);
        self.inter_token.render("chorus_inter_token_seconds", "Time between output tokens.", &m, &mut o);
        self.queue.render("chorus_queue_seconds", "Time from submission to start of prefill.", &m, &mut o);
        let mut gauge = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let sep = if labels.is_empty() { "" } else { "," };
                let _ = writeln!(o, "{name}{{{m}{sep}{labels}}} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v)];
        gauge(
            "chorus_kv_blocks_used",
            "KV blocks held by running sequences.",
            "gauge",
            one(self.kv_blocks_used as u64),
        );
        gauge("chorus_kv_blocks_total", "KV blocks in the cache.", "gauge", one(self.kv_blocks_total as u64));
        gauge("chorus_running_sequences", "Sequences in the running batch.", "gauge", one(self.running as u64));
        let per_tier = |f: &dyn Fn(Tier) -> u64| Tier::ALL.iter().map(|&t| (format!("tier=\"{t}\""), f(t))).collect();
        gauge(
            "chorus_queue_depth",
            "Requests waiting, per tier.",
            "gauge",
            per_tier(&|t| self.waiting[t.index()] as u64),
        );
        gauge(
            "chorus_prefix_cache_query_tokens_total",
            "Prompt tokens looked up in the prefix cache.",
            "counter",
            one(self.sched.prefix_query_tokens),
        );
        gauge(
            "chorus_prefix_cache_hit_tokens_total",
            "Prompt tokens found in the prefix cache.",
            "counter",
            one(self.sched.prefix_hit_tokens),
        );
        gauge("chorus_preemptions_total", "Sequences preempted for recompute.", "counter", one(self.sched.preemptions));
        gauge(
            "chorus_rejections_total",
            "Requests refused or dropped by the scheduler, by reason.",
            "counter",
            REJECT_REASONS.iter().zip(self.sched.rejections).map(|(r, v)| (format!("reason=\"{r}\""), v)).collect(),
        );
        let mut tokens = Vec::new();
        for t in Tier::ALL {
            tokens.push((format!("tier=\"{t}\",kind=\"prompt\""), self.sched.prefill_tokens[t.index()]));
            tokens.push((format!("tier=\"{t}\",kind=\"output\""), self.sched.decode_tokens[t.index()]));
        }
        gauge("chorus_tokens_total", "Tokens computed, by tier and kind.", "counter", tokens);
        gauge("chorus_engine_failed_steps_total", "Steps the backend failed.", "counter", one(self.failed_steps));
        gauge("chorus_engine_steps_total", "Steps the engine loop ran.", "counter", one(self.steps));
        gauge(
            "chorus_engine_restarts_total",
            "Engine loop restarts after a panic or a failed step.",
            "counter",
            one(self.restarts),
        );
        gauge(
            "chorus_engine_up",
            "1 while the engine loop runs (not restarting or down).",
            "gauge",
            one(self.up.into()),
        );
        o
    }
}
