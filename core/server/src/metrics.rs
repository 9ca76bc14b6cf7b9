//! The core's own counters (connections, streams, outcomes) and the Prometheus page that joins
//! them with every fleet's engine metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fleet::Fleet;

/// Counters of the QUIC side.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    pub streams_total: AtomicU64,
    pub streams_open: AtomicU64,
    pub degraded_total: AtomicU64,
    pub trimmed_total: AtomicU64,
    /// Refused connections by reason (`tls`, `version`, `hello`).
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Finished requests by (fleet, outcome): a finish reason or an error code.
    outcomes: Mutex<BTreeMap<(String, String), u64>>,
}

impl CoreMetrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(c: &AtomicU64) {
        c.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn refused(&self, reason: &'static str) {
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
    }

    pub fn outcome(&self, fleet: &str, outcome: &str) {
        *self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).entry((fleet.into(), outcome.into())).or_default() +=
            1;
    }

    /// Finished requests with `outcome` on `fleet` so far.
    pub fn outcomes(&self, fleet: &str, outcome: &str) -> u64 {
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(fleet.to_string(), outcome.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn render(&self, ready: bool, draining: bool, fleets: &[std::sync::Arc<Fleet>]) -> String {
        let mut o = String::new();
        let mut family = |name: &str, help: &str, kind: &str, rows: &[(String, u64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                if labels.is_empty() {
                    let _ = writeln!(o, "{name} {v}");
                } else {
                    let _ = writeln!(o, "{name}{{{labels}}} {v}");
                }
            }
        };
        let one = |c: &AtomicU64| vec![(String::new(), c.load(Ordering::Relaxed))];
        family("chorus_core_connections_total", "Edge connections accepted.", "counter", &one(&self.connections_total));
        family("chorus_core_connections_open", "Edge connections open.", "gauge", &one(&self.connections_open));
        let refused: Vec<_> = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, v)| (format!("reason=\"{r}\""), *v))
            .collect();
        family("chorus_core_connections_refused_total", "Connections refused, by reason.", "counter", &refused);
        family("chorus_core_streams_total", "Request streams opened.", "counter", &one(&self.streams_total));
        family("chorus_core_streams_open", "Request streams open.", "gauge", &one(&self.streams_open));
        family(
            "chorus_core_degraded_total",
            "Requests visibly routed to a smaller fleet.",
            "counter",
            &one(&self.degraded_total),
        );
        family(
            "chorus_core_trimmed_total",
            "Requests whose oldest turns were trimmed.",
            "counter",
            &one(&self.trimmed_total),
        );
        let outcomes: Vec<_> = self
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((f, r), v)| (format!("fleet=\"{f}\",outcome=\"{r}\""), *v))
            .collect();
        family("chorus_core_requests_total", "Finished requests by fleet and outcome.", "counter", &outcomes);
        let gauge = |b: bool| vec![(String::new(), u64::from(b))];
        family("chorus_core_ready", "1 when /readyz is ready.", "gauge", &gauge(ready));
        family("chorus_core_draining", "1 while draining.", "gauge", &gauge(draining));
        let in_flight: Vec<_> =
            fleets.iter().map(|f| (format!("fleet=\"{}\"", f.name), u64::from(f.in_flight()))).collect();
        family("chorus_core_in_flight", "Requests accepted and not finished, per fleet.", "gauge", &in_flight);
        let per_fleet = |v: &dyn Fn(&Fleet) -> u64| -> Vec<(String, u64)> {
            fleets.iter().map(|f| (format!("fleet=\"{}\"", f.name), v(f))).collect()
        };
        family(
            "chorus_engine_stalled",
            "1 while the fleet's engine has work and has completed no step for engine_stall_ms.",
            "gauge",
            &per_fleet(&|f| u64::from(f.stalled_for().is_some())),
        );
        family("chorus_engine_stalls_total", "Engine stalls seen, per fleet.", "counter", &per_fleet(&|f| f.stalls()));
        o
    }

    /// The whole page: these counters and each fleet's engine metrics, one family per name.
    pub fn page(&self, ready: bool, draining: bool, fleets: &[std::sync::Arc<Fleet>]) -> String {
        let mut parts = vec![self.render(ready, draining, fleets)];
        for f in fleets {
            parts.push(f.handle.metrics().render_labelled(&[("fleet", &f.name), ("model", &f.model)]));
        }
        merge_families(&parts)
    }
}

/// Joins Prometheus text pages so each metric family appears once (one `# HELP`/`# TYPE`,
/// then all its samples), as the exposition format requires.
pub fn merge_families(parts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut fams: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for part in parts {
        let mut current = String::new();
        for line in part.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
                current = rest.split(' ').next().unwrap_or("").to_string();
                let e = fams.entry(current.clone()).or_insert_with(|| {
                    order.push(current.clone());
                    Default::default()
                });
                if !e.0.iter().any(|l| l == line) {
                    e.0.push(line.to_string());
                }
            } else if !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                // Histogram samples carry suffixes of their family's name.
                let fam = if name.starts_with(current.as_str()) && !current.is_empty() {
                    current.clone()
                } else {
                    name.to_string()
                };
                fams.entry(fam.clone())
                    .or_insert_with(|| {
                        order.push(fam.clone());
                        Default::default()
                    })
                    .1
                    .push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let (head, body) = &fams[&name];
        for l in head.iter().chain(body) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn families_are_merged_once_each() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{f=\"a\"} 1\n# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_count 2\n";
        let b = "# HELP x_total X.\n# TYPE x_total counter\nx_total{f=\"b\"} 3\n# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_count 5\n";
        let m = super::merge_families(&[a.into(), b.into()]);
        assert_eq!(m.matches("# HELP x_total").count(), 1);
        assert_eq!(m.matches("# TYPE h histogram").count(), 1);
        let x = m.find("x_total{f=\"b\"}").unwrap();
        assert!(x < m.find("# HELP h").unwrap(), "{m}");
        assert!(m.ends_with("h_bucket{le=\"1\"} 2\nh_count 2\nh_bucket{le=\"1\"} 5\nh_count 5\n"), "{m}");
    }
}
