//! Per-filter counters and latency histograms, kept across chain reloads and rendered as
//! Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Histogram bucket bounds in microseconds.
pub const DURATION_BUCKETS_US: [u64; 12] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000];
/// Custom metric names one filter may create.
pub const MAX_CUSTOM_METRICS: usize = 32;

/// How a call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Trap,
    Deadline,
    Memory,
    Oversized,
    InvalidVerdict,
    Instantiate,
}

impl FailureKind {
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Trap,
        FailureKind::Deadline,
        FailureKind::Memory,
        FailureKind::Oversized,
        FailureKind::InvalidVerdict,
        FailureKind::Instantiate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::Oversized => "oversized",
            FailureKind::InvalidVerdict => "invalid_verdict",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

#[derive(Debug, Default)]
pub struct FilterMetrics {
    pub allows: AtomicU64,
    pub denies: AtomicU64,
    pub rewrites: AtomicU64,
    pub completes: AtomicU64,
    failures: [AtomicU64; 6],
    buckets: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    pub logs_dropped: AtomicU64,
    log_window: Mutex<(u64, u32)>,
    max_logs_per_second: AtomicU64,
    custom: Mutex<BTreeMap<String, u64>>,
}

impl FilterMetrics {
    pub fn failure(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind as usize].load(Ordering::Relaxed)
    }

    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = DURATION_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(DURATION_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(crate) fn set_log_rate(&self, per_second: u32) {
        self.max_logs_per_second.store(u64::from(per_second), Ordering::Relaxed);
    }

    /// Whether one more log line fits this second's allowance.
    pub(crate) fn log_allowed(&self, now_ms: u64) -> bool {
        let mut w = self.log_window.lock().unwrap_or_else(|p| p.into_inner());
        let second = now_ms / 1000;
        if w.0 != second {
            *w = (second, 0);
        }
        if u64::from(w.1) >= self.max_logs_per_second.load(Ordering::Relaxed) {
            return false;
        }
        w.1 += 1;
        true
    }

    pub(crate) fn custom_add(&self, name: &str, value: u64) {
        let valid = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return;
        }
        let mut custom = self.custom.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = custom.get_mut(name) {
            *v = v.saturating_add(value);
        } else if custom.len() < MAX_CUSTOM_METRICS {
            custom.insert(name.to_owned(), value);
        }
    }

    pub fn custom(&self, name: &str) -> Option<u64> {
        self.custom.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied()
    }
}

/// All filters' metrics by name, and the host's own counters.
#[derive(Debug, Default)]
pub struct Registry {
    filters: Mutex<BTreeMap<String, Arc<FilterMetrics>>>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Registry {
    pub fn filter(&self, name: &str) -> Arc<FilterMetrics> {
        self.filters.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_owned()).or_default().clone()
    }

    /// Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let filters = self.filters.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE chorus_filter_verdicts_total counter");
        for (name, m) in &filters {
            for (verdict, v) in [("allow", &m.allows), ("deny", &m.denies), ("rewrite", &m.rewrites)] {
                let _ = writeln!(
                    out,
                    "chorus_filter_verdicts_total{{filter=\"{name}\",verdict=\"{verdict}\"}} {}",
                    v.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# TYPE chorus_filter_failures_total counter");
        for (name, m) in &filters {
            for kind in FailureKind::ALL {
                let _ = writeln!(
                    out,
                    "chorus_filter_failures_total{{filter=\"{name}\",kind=\"{}\"}} {}",
                    kind.as_str(),
                    m.failures(kind)
                );
            }
        }
        let _ = writeln!(out, "# TYPE chorus_filter_duration_seconds histogram");
        for (name, m) in &filters {
            let mut cumulative = 0;
            for (i, bound) in DURATION_BUCKETS_US.iter().enumerate() {
                cumulative += m.buckets[i].load(Ordering::Relaxed);
                let le = *bound as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "chorus_filter_duration_seconds_bucket{{filter=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += m.buckets[DURATION_BUCKETS_US.len()].load(Ordering::Relaxed);
            let _ =
                writeln!(out, "chorus_filter_duration_seconds_bucket{{filter=\"{name}\",le=\"+Inf\"}} {cumulative}");
            let sum = m.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "chorus_filter_duration_seconds_sum{{filter=\"{name}\"}} {sum}");
            let _ = writeln!(out, "chorus_filter_duration_seconds_count{{filter=\"{name}\"}} {cumulative}");
        }
        let _ = writeln!(out, "# TYPE chorus_filter_custom_total counter");
        for (name, m) in &filters {
            for (metric, v) in m.custom.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "chorus_filter_custom_total{{filter=\"{name}\",name=\"{metric}\"}} {v}");
            }
        }
        let _ = writeln!(out, "# TYPE chorus_filter_logs_dropped_total counter");
        for (name, m) in &filters {
            let _ = writeln!(
                out,
                "chorus_filter_logs_dropped_total{{filter=\"{name}\"}} {}",
                m.logs_dropped.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# TYPE chorus_filter_reloads_total counter");
        let _ = writeln!(out, "chorus_filter_reloads_total {}", self.reloads.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE chorus_filter_reload_failures_total counter");
        let _ = writeln!(out, "chorus_filter_reload_failures_total {}", self.reload_failures.load(Ordering::Relaxed));
        out
    }
}
