//! What the conversation store counts, rendered as Prometheus text for the core's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Bucket upper bounds of store operation latency, seconds (store calls are sub-millisecond
/// in-process and a few milliseconds over the network).
const STORE_BUCKETS_S: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0];

#[derive(Debug, Default, Clone)]
struct OpStats {
    buckets: [u64; STORE_BUCKETS_S.len() + 1],
    sum_s: f64,
    errors: u64,
}

/// What the conversation store counts: latency and errors per tier (`hot`, `durable`) and
/// operation, hot-tier lookups by result, commits by result, degraded answers by reason, and
/// conversations swept.
#[derive(Debug)]
pub struct StoreMetrics {
    durable: &'static str,
    hot: &'static str,
    ops: Mutex<BTreeMap<(&'static str, &'static str), OpStats>>,
    counters: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl StoreMetrics {
    pub fn new(durable: &'static str, hot: &'static str) -> Self {
        Self { durable, hot, ops: Mutex::default(), counters: Mutex::default() }
    }

    pub fn observe(&self, tier: &'static str, op: &'static str, took: std::time::Duration, failed: bool) {
        let s = took.as_secs_f64();
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let e = ops.entry((tier, op)).or_default();
        let i = STORE_BUCKETS_S.iter().position(|&b| s <= b).unwrap_or(STORE_BUCKETS_S.len());
        e.buckets[i] += 1;
        e.sum_s += s;
        e.errors += u64::from(failed);
    }

    fn count(&self, family: &'static str, label: &'static str, n: u64) {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner()).entry((family, label)).or_default() += n;
    }

    /// A counter's value (tests and the bench read them).
    pub fn counter(&self, family: &'static str, label: &str) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|((f, l), _)| *f == family && *l == label)
            .map_or(0, |(_, v)| *v)
    }

    /// Errors recorded for (tier, op).
    pub fn errors(&self, tier: &str, op: &str) -> u64 {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|((t, o), _)| *t == tier && *o == op)
            .map_or(0, |(_, s)| s.errors)
    }

    pub fn hot(&self, r: super::HotRead) {
        self.count("hot", r.as_str(), 1);
    }

    pub fn commit(&self, result: &'static str) {
        self.count("commit", result, 1);
    }

    pub fn degraded(&self, reason: &'static str) {
        self.count("degraded", reason, 1);
    }

    pub fn swept(&self, n: u64) {
        self.count("swept", "", n);
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let (d, h) = (self.durable, self.hot);
        let backend = |tier: &str| if tier == "hot" { h } else { d };
        let _ = writeln!(
            o,
            "# HELP chorus_store_op_seconds Conversation store operation latency by tier and operation.\n# TYPE chorus_store_op_seconds histogram"
        );
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ((tier, op), s) in &ops {
            let l = format!("tier=\"{tier}\",backend=\"{}\",op=\"{op}\"", backend(tier));
            let mut cum = 0;
            for (i, c) in s.buckets.iter().enumerate() {
                cum += c;
                let le = STORE_BUCKETS_S.get(i).map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(o, "chorus_store_op_seconds_bucket{{{l},le=\"{le}\"}} {cum}");
            }
            let _ = writeln!(o, "chorus_store_op_seconds_sum{{{l}}} {}", s.sum_s);
            let _ = writeln!(o, "chorus_store_op_seconds_count{{{l}}} {cum}");
        }
        let _ = writeln!(
            o,
            "# HELP chorus_store_errors_total Conversation store operations that failed (unreachable, timed out, corrupt).\n# TYPE chorus_store_errors_total counter"
        );
        for ((tier, op), s) in &ops {
            let _ = writeln!(
                o,
                "chorus_store_errors_total{{tier=\"{tier}\",backend=\"{}\",op=\"{op}\"}} {}",
                backend(tier),
                s.errors
            );
        }
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (family, label, name, help) in [
            (
                "hot",
                "result",
                "chorus_store_hot_lookups_total",
                "Hot-tier lookups by result (hit, miss, stale, error); hit rate = hit / all.",
            ),
            ("commit", "result", "chorus_store_commits_total", "Turn commits by result (committed, conflict, failed)."),
            (
                "degraded",
                "reason",
                "chorus_store_degraded_answers_total",
                "Answers served degraded by the store (hot_unavailable: history from the durable tier; unavailable: single-turn).",
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((f, l), v) in &counters {
                if *f == family {
                    let _ = writeln!(o, "{name}{{{label}=\"{l}\"}} {v}");
                }
            }
        }
        let swept = counters.get(&("swept", "")).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "# HELP chorus_store_swept_total Conversations deleted by the retention sweeper.\n# TYPE chorus_store_swept_total counter\nchorus_store_swept_total {swept}"
        );
        o
    }
}
