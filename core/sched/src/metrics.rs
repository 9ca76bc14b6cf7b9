//! What the scheduler counts, and the latency histogram the engine loop fills per tier.

use std::fmt::Write as _;

use crate::config::Tier;

/// Counters the scheduler keeps as it runs. Token counts are per tier, indexed by
/// [`Tier::index`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedCounters {
    /// Steps planned.
    pub steps: u64,
    /// Prompt tokens looked up in the prefix cache (full blocks of new or resumed sequences).
    pub prefix_query_tokens: u64,
    /// Of those, tokens found cached.
    pub prefix_hit_tokens: u64,
    /// Sequences preempted (blocks given back, queued for recompute).
    pub preemptions: u64,
    /// Requests rejected at `add`, by reason ([`crate::AdmitError::reason`] order: see
    /// [`REJECT_REASONS`]).
    pub rejections: [u64; REJECT_REASONS.len()],
    /// Prompt tokens computed (prefill and recompute), per tier.
    pub prefill_tokens: [u64; 4],
    /// Output tokens produced, per tier.
    pub decode_tokens: [u64; 4],
}

impl SchedCounters {
    /// Adds `other`'s counts to these (a restarted engine loop keeps its predecessors' totals).
    pub fn add(&mut self, other: &SchedCounters) {
        let SchedCounters {
            steps,
            prefix_query_tokens,
            prefix_hit_tokens,
            preemptions,
            rejections,
            prefill_tokens,
            decode_tokens,
        } = other;
        self.steps += steps;
        self.prefix_query_tokens += prefix_query_tokens;
        self.prefix_hit_tokens += prefix_hit_tokens;
        self.preemptions += preemptions;
        for (a, b) in self.rejections.iter_mut().zip(rejections) {
            *a += b;
        }
        for (a, b) in self.prefill_tokens.iter_mut().zip(prefill_tokens) {
            *a += b;
        }
        for (a, b) in self.decode_tokens.iter_mut().zip(decode_tokens) {
            *a += b;
        }
    }
}

/// Labels of [`SchedCounters::rejections`], in order.
pub const REJECT_REASONS: [&str; 7] = [
    "invalid",
    "never_fits",
    "input_too_long",
    "queue_full",
    "queue_tokens_full",
    "queue_timeout",
    "would_miss_deadline",
];

/// Bucket upper bounds, in milliseconds, of [`Histogram`].
pub const BUCKETS_MS: [f64; 15] =
    [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 20000.0, 30000.0, 60000.0, 120000.0];

/// A fixed-bucket latency histogram (Prometheus style: cumulative on output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: [u64; BUCKETS_MS.len() + 1],
    sum_ms: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        let i = BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(BUCKETS_MS.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations, in milliseconds.
    pub fn sum_ms(&self) -> f64 {
        self.sum_ms
    }

    /// Upper bound of the bucket holding quantile `q` (an estimate, as Prometheus gives).
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }

    /// Appends Prometheus text lines for this histogram (seconds, as Prometheus prefers).
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let mut cum = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cum += c;
            let le = BUCKETS_MS.get(i).map_or_else(|| "+Inf".to_string(), |b| format!("{}", b / 1000.0));
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_ms / 1000.0);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// One histogram per tier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierHistograms(pub [Histogram; 4]);

impl TierHistograms {
    /// The histogram of `tier`.
    pub fn get(&mut self, tier: Tier) -> &mut Histogram {
        &mut self.0[tier.index()]
    }

    /// Appends every tier's lines under `name`, with `labels` (may be empty) before the tier.
    pub fn render(&self, name: &str, help: &str, labels: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for t in Tier::ALL {
            let l = if labels.is_empty() { format!("tier=\"{t}\"") } else { format!("{labels},tier=\"{t}\"") };
            self.0[t.index()].render(name, &l, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_field_by_field() {
        let mut a = SchedCounters { steps: 1, preemptions: 2, ..Default::default() };
        a.rejections[3] = 4;
        a.decode_tokens[1] = 5;
        let b = a.clone();
        a.add(&b);
        assert_eq!((a.steps, a.preemptions, a.rejections[3], a.decode_tokens[1]), (2, 4, 8, 10));
    }

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_bound(0.5), None);
        for ms in [1.0, 7.0, 7.0, 300.0, 1e9, f64::NAN] {
            h.observe(ms);
        }
        assert_eq!(h.count(), 6);
        assert_eq!(h.quantile_bound(0.5), Some(10.0));
        assert_eq!(h.quantile_bound(0.99), Some(f64::INFINITY));
        let mut s = String::new();
        h.render("x", "tier=\"free\"", &mut s);
        assert!(s.contains("x_bucket{tier=\"free\",le=\"0.005\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{tier=\"free\",le=\"+Inf\"} 6\n"), "{s}");
        assert!(s.contains("x_count{tier=\"free\"} 6\n"));
    }
}
