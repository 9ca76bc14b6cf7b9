//! Summary statistics of latency samples: percentiles (linear interpolation between closest
//! ranks, as numpy's default), the empirical CDF, and Little's law.

use serde::{Deserialize, Serialize};

/// The `q` quantile (0..=1) of ascending `sorted` values, interpolating linearly between the
/// two closest ranks; `None` for no values. A rank that is +∞ (a failure, in SLO terms) makes
/// any quantile it takes part in +∞.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
    let pos = q * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    if frac == 0.0 {
        return Some(sorted[lo]);
    }
    if sorted[lo].is_infinite() || sorted[hi].is_infinite() {
        return Some(f64::INFINITY);
    }
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Ascending copy of the finite values.
pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Count, mean and the usual percentiles of one measure (milliseconds for latencies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Summary {
    /// Summarises the finite values (any order).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let v = sorted(values);
        let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Self {
            count: v.len(),
            mean,
            min: v.first().copied(),
            p50: percentile(&v, 0.50),
            p90: percentile(&v, 0.90),
            p95: percentile(&v, 0.95),
            p99: percentile(&v, 0.99),
            max: v.last().copied(),
        }
    }

    /// The named percentile (`p50`, `p90`, `p95`, `p99`, `mean`, `max`).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "p50" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "mean" => self.mean,
            "max" => self.max,
            "min" => self.min,
            _ => None,
        }
    }
}

/// The empirical CDF of ascending `sorted` values as (value, fraction ≤ value), thinned to at
/// most `max_points` points (the first and last are always kept).
pub fn cdf(sorted: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 || max_points == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max_points.max(2) - 1).max(1);
    let mut out: Vec<(f64, f64)> = (0..n).step_by(step).map(|i| (sorted[i], (i + 1) as f64 / n as f64)).collect();
    if out.last().is_some_and(|&(_, f)| f < 1.0) {
        out.push((sorted[n - 1], 1.0));
    }
    out
}

/// Little's law, L = λW: the mean number in the system (requests in flight) at arrival rate
/// `rate_per_s` when each stays `time_in_system_s`.
pub fn littles_law_in_flight(rate_per_s: f64, time_in_system_s: f64) -> f64 {
    rate_per_s * time_in_system_s
}

/// Little's law solved for throughput: λ = L / W (a closed loop of `users`, each request taking
/// `response_s` and followed by `think_s`, completes users / (response + think) per second).
pub fn littles_law_throughput(users: f64, response_s: f64, think_s: f64) -> f64 {
    let w = response_s + think_s;
    if w > 0.0 { users / w } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert!((percentile(&v, 0.5).unwrap() - 50.5).abs() < 1e-9);
        assert!((percentile(&v, 0.95).unwrap() - 95.05).abs() < 1e-9);
        assert!((percentile(&v, 0.99).unwrap() - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        let failed = [1.0, 2.0, f64::INFINITY];
        assert_eq!(percentile(&failed, 0.5), Some(2.0));
        assert_eq!(percentile(&failed, 0.75), Some(f64::INFINITY));
        // Out-of-range q is clamped, NaN reads as the median.
        assert_eq!(percentile(&v, 2.0), Some(100.0));
        assert!((percentile(&v, f64::NAN).unwrap() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn summary_ignores_non_finite_values_and_any_order() {
        let s = Summary::of([5.0, f64::NAN, 1.0, 3.0, f64::INFINITY, 2.0, 4.0]);
        assert_eq!(s.count, 5);
        assert_eq!(s.mean, Some(3.0));
        assert_eq!((s.min, s.p50, s.max), (Some(1.0), Some(3.0), Some(5.0)));
        assert_eq!(Summary::of([]), Summary::default());
        assert_eq!(s.get("p50"), Some(3.0));
        assert_eq!(s.get("p42"), None);
    }

    #[test]
    fn cdf_is_monotone_thinned_and_ends_at_one() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        let c = cdf(&v, 50);
        assert!(c.len() <= 51, "{}", c.len());
        assert_eq!(c.last(), Some(&(999.0, 1.0)));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cdf(&[3.0], 10), vec![(3.0, 1.0)]);
        assert!(cdf(&[], 10).is_empty());
    }

    #[test]
    fn littles_law() {
        // 20 requests/s each taking 1.5 s: 30 in flight.
        assert!((littles_law_in_flight(20.0, 1.5) - 30.0).abs() < 1e-12);
        // 10 users, 2 s per answer, 3 s thinking: 2 requests/s.
        assert!((littles_law_throughput(10.0, 2.0, 3.0) - 2.0).abs() < 1e-12);
        assert_eq!(littles_law_throughput(10.0, 0.0, 0.0), 0.0);
        // The two forms agree: L = λW with λ from the closed loop and W = response + think.
        let lambda = littles_law_throughput(8.0, 0.5, 1.5);
        assert!((littles_law_in_flight(lambda, 2.0) - 8.0).abs() < 1e-12);
    }
}
