//! Edge metrics, rendered as Prometheus text at `/metrics` next to the filter host's: requests
//! by route, status and tier; the filter chain's time; the upstream's time to first token; TTFT
//! as the client sees it (request arrival to the first token written); retries, replays,
//! resumes and upstream health.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds in seconds.
const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| s <= b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
    }
}

const TIERS: [&str; 5] = ["free", "team", "plus", "enterprise", "none"];

fn tier_index(tier: &str) -> usize {
    TIERS.iter().position(|t| *t == tier).unwrap_or(TIERS.len() - 1)
}

/// Everything the edge counts.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    /// (route, status, tier) → count.
    requests: Mutex<BTreeMap<(&'static str, u16, &'static str), u64>>,
    pub filter_chain: Histogram,
    pub upstream_ttft: Histogram,
    ttft: [Histogram; TIERS.len()],
    /// Per tier: prompt, cached prompt and completion tokens of finished answers.
    tokens: [[AtomicU64; 3]; TIERS.len()],
    pub upstream_retries: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub idempotent_attaches: AtomicU64,
    pub resumes: AtomicU64,
    pub cancelled: AtomicU64,
}

impl EdgeMetrics {
    pub fn request(&self, route: &'static str, status: u16, tier: &str) {
        let tier = TIERS[tier_index(tier)];
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route, status, tier)).or_insert(0) += 1;
    }

    pub fn ttft(&self, tier: &str, d: Duration) {
        self.ttft[tier_index(tier)].observe(d);
    }

    /// The usage of a finished answer (the prefix-cache hit rate is cached over prompt).
    pub fn usage(&self, tier: &str, prompt: u32, cached: u32, completion: u32) {
        let t = &self.tokens[tier_index(tier)];
        for (c, n) in t.iter().zip([prompt, cached, completion]) {
            c.fetch_add(u64::from(n), Ordering::Relaxed);
        }
    }

    /// Prometheus text; `health` is (region, healthy cores, cores), `loads` each connected
    /// core's latest load report.
    pub fn render(
        &self,
        health: &[(String, usize, usize)],
        loads: &[(String, chorus_proto::LoadReport)],
        runs: usize,
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP chorus_edge_requests_total Requests answered, by route, HTTP status and tier.\n");
        out.push_str("# TYPE chorus_edge_requests_total counter\n");
        for ((route, status, tier), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "chorus_edge_requests_total{{route=\"{route}\",status=\"{status}\",tier=\"{tier}\"}} {n}"
            );
        }
        out.push_str("# HELP chorus_edge_filter_chain_seconds Time in the filter chain per request.\n");
        out.push_str("# TYPE chorus_edge_filter_chain_seconds histogram\n");
        self.filter_chain.render(&mut out, "chorus_edge_filter_chain_seconds", "");
        out.push_str("# HELP chorus_edge_upstream_ttft_seconds From sending Generate to the core's first token.\n");
        out.push_str("# TYPE chorus_edge_upstream_ttft_seconds histogram\n");
        self.upstream_ttft.render(&mut out, "chorus_edge_upstream_ttft_seconds", "");
        out.push_str(
            "# HELP chorus_edge_ttft_seconds From the request's arrival to its first token written to the client.\n",
        );
        out.push_str("# TYPE chorus_edge_ttft_seconds histogram\n");
        for (i, t) in TIERS.iter().enumerate() {
            self.ttft[i].render(&mut out, "chorus_edge_ttft_seconds", &format!("tier=\"{t}\""));
        }
        for (name, help, v) in [
            (
                "chorus_edge_upstream_retries_total",
                "Requests retried on another core before their first token.",
                &self.upstream_retries,
            ),
            (
                "chorus_edge_idempotent_replays_total",
                "Finished answers replayed for a repeated Idempotency-Key.",
                &self.idempotent_replays,
            ),
            (
                "chorus_edge_idempotent_attaches_total",
                "Repeated Idempotency-Keys attached to the answer in flight.",
                &self.idempotent_attaches,
            ),
            ("chorus_edge_resumes_total", "Streams resumed with Last-Event-ID.", &self.resumes),
            ("chorus_edge_cancelled_total", "Answers cancelled because their client went away.", &self.cancelled),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        out.push_str("# HELP chorus_edge_upstream_healthy_cores Cores connected and ready, by region.\n");
        out.push_str("# TYPE chorus_edge_upstream_healthy_cores gauge\n");
        for (region, healthy, _) in health {
            let _ = writeln!(out, "chorus_edge_upstream_healthy_cores{{region=\"{region}\"}} {healthy}");
        }
        out.push_str("# HELP chorus_edge_upstream_cores Cores in the topology, by region.\n");
        out.push_str("# TYPE chorus_edge_upstream_cores gauge\n");
        for (region, _, total) in health {
            let _ = writeln!(out, "chorus_edge_upstream_cores{{region=\"{region}\"}} {total}");
        }
        out.push_str(
            "# HELP chorus_edge_tokens_total Tokens of finished answers by tier and kind (prompt, cached prompt, completion).\n# TYPE chorus_edge_tokens_total counter\n",
        );
        for (i, t) in TIERS.iter().enumerate() {
            for (kind, c) in ["prompt", "cached", "completion"].iter().zip(&self.tokens[i]) {
                // Zeros too (a scraper's baseline), but for the catch-all tier.
                let n = c.load(Ordering::Relaxed);
                if n > 0 || *t != "none" {
                    let _ = writeln!(out, "chorus_edge_tokens_total{{tier=\"{t}\",kind=\"{kind}\"}} {n}");
                }
            }
        }
        out.push_str(
            "# HELP chorus_edge_upstream_waiting Requests waiting to start, by core, fleet and tier (the cores' load reports).\n# TYPE chorus_edge_upstream_waiting gauge\n",
        );
        for (core, r) in loads {
            for f in &r.fleets {
                for t in chorus_proto::Tier::ALL {
                    let _ = writeln!(
                        out,
                        "chorus_edge_upstream_waiting{{core=\"{core}\",fleet=\"{}\",tier=\"{}\"}} {}",
                        f.fleet,
                        t.as_str(),
                        f.waiting[t.index()]
                    );
                }
            }
        }
        out.push_str(
            "# HELP chorus_edge_upstream_running Sequences running, by core and fleet (the cores' load reports).\n# TYPE chorus_edge_upstream_running gauge\n",
        );
        for (core, r) in loads {
            for f in &r.fleets {
                let _ = writeln!(
                    out,
                    "chorus_edge_upstream_running{{core=\"{core}\",fleet=\"{}\"}} {}",
                    f.fleet, f.running
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP chorus_edge_runs Answers held (in flight or resumable).\n# TYPE chorus_edge_runs gauge\nchorus_edge_runs {runs}"
        );
        out
    }
}
