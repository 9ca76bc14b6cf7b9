//! Randomness for workloads: a small seeded generator (runs are repeatable), the Poisson
//! arrival schedule of an open loop, and length distributions given on the command line.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// SplitMix64: tiny, fast, and good enough for workload shapes (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `ln` is finite.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// An index drawn with probability proportional to `weights` (non-positive weights never win).
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
        if total <= 0.0 {
            return 0;
        }
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if *w > 0.0 {
                if x <= *w {
                    return i;
                }
                x -= w;
            }
        }
        weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
    }
}

/// The arrival times of a Poisson process at `rate` per second, from time zero, drawn as they
/// are needed: exponential gaps with mean 1/rate. Ends past `horizon`, or at once for a rate
/// that is not a positive number.
#[derive(Debug, Clone)]
pub struct Poisson {
    mean_gap: f64,
    t: f64,
    end: f64,
    rng: Rng,
}

impl Poisson {
    pub fn new(rate: f64, horizon: Duration, rng: Rng) -> Self {
        let ok = rate.is_finite() && rate > 0.0;
        Self {
            mean_gap: if ok { 1.0 / rate } else { 0.0 },
            t: 0.0,
            end: if ok { horizon.as_secs_f64() } else { 0.0 },
            rng,
        }
    }
}

impl Iterator for Poisson {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.t += self.rng.exponential(self.mean_gap);
        (self.t < self.end).then(|| Duration::from_secs_f64(self.t))
    }
}

/// The first `limit` arrival times of [`Poisson`] within `horizon`.
pub fn poisson_schedule(rate: f64, horizon: Duration, limit: usize, rng: Rng) -> Vec<Duration> {
    Poisson::new(rate, horizon, rng).take(limit).collect()
}

/// A bad distribution spec, naming the flag.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{flag} {spec:?}: {why} (forms: N, uniform:A-B, normal:MEAN,SD, lognormal:MEDIAN,SIGMA; values 1..={max})")]
pub struct DistError {
    pub flag: String,
    pub spec: String,
    pub why: String,
    pub max: u32,
}

/// A distribution of whole numbers (token or turn counts), always within `1..=max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dist {
    Fixed { value: u32 },
    Uniform { lo: u32, hi: u32 },
    Normal { mean: f64, sd: f64 },
    LogNormal { median: f64, sigma: f64 },
}

impl Dist {
    /// Parses `N`, `uniform:A-B`, `normal:MEAN,SD` or `lognormal:MEDIAN,SIGMA`; `flag` and `max`
    /// go into the error.
    pub fn parse(flag: &str, spec: &str, max: u32) -> Result<Self, DistError> {
        let err = |why: &str| DistError { flag: flag.into(), spec: spec.into(), why: why.into(), max };
        let num = |s: &str| s.trim().parse::<f64>().ok().filter(|x| x.is_finite());
        let in_range = |x: f64| x >= 1.0 && x <= f64::from(max);
        let d = match spec.split_once(':') {
            None => {
                let v = spec.trim().parse::<u32>().map_err(|_| err("not a whole number"))?;
                Dist::Fixed { value: v }
            }
            Some(("uniform", r)) => {
                let (a, b) = r.split_once('-').ok_or_else(|| err("expected A-B"))?;
                let (lo, hi) = (a.trim().parse::<u32>(), b.trim().parse::<u32>());
                let (Ok(lo), Ok(hi)) = (lo, hi) else { return Err(err("bounds must be whole numbers")) };
                if lo > hi {
                    return Err(err("the lower bound is above the upper"));
                }
                Dist::Uniform { lo, hi }
            }
            Some(("normal", r)) => {
                let (m, s) = r.split_once(',').ok_or_else(|| err("expected MEAN,SD"))?;
                let (Some(mean), Some(sd)) = (num(m), num(s)) else { return Err(err("not numbers")) };
                if !in_range(mean) || sd < 0.0 {
                    return Err(err("the mean is out of range or the deviation negative"));
                }
                Dist::Normal { mean, sd }
            }
            Some(("lognormal", r)) => {
                let (m, s) = r.split_once(',').ok_or_else(|| err("expected MEDIAN,SIGMA"))?;
                let (Some(median), Some(sigma)) = (num(m), num(s)) else { return Err(err("not numbers")) };
                if !in_range(median) || !(0.0..=4.0).contains(&sigma) {
                    return Err(err("the median is out of range or sigma not in 0..=4"));
                }
                Dist::LogNormal { median, sigma }
            }
            Some((kind, _)) => return Err(err(&format!("unknown distribution {kind:?}"))),
        };
        let (lo, hi) = match d {
            Dist::Fixed { value } => (value, value),
            Dist::Uniform { lo, hi } => (lo, hi),
            _ => (1, 1),
        };
        if lo < 1 || hi > max {
            return Err(err("out of range"));
        }
        Ok(d)
    }

    /// One draw, clamped to `1..=max`.
    pub fn sample(&self, rng: &mut Rng, max: u32) -> u32 {
        let x = match *self {
            Dist::Fixed { value } => f64::from(value),
            Dist::Uniform { lo, hi } => f64::from(lo) + rng.below((hi - lo) as usize + 1) as f64,
            Dist::Normal { mean, sd } => mean + sd * rng.normal(),
            Dist::LogNormal { median, sigma } => median * (sigma * rng.normal()).exp(),
        };
        x.round().clamp(1.0, f64::from(max.max(1))) as u32
    }

    /// The distribution's mean before clamping (planning, reports).
    pub fn mean(&self) -> f64 {
        match *self {
            Dist::Fixed { value } => f64::from(value),
            Dist::Uniform { lo, hi } => (f64::from(lo) + f64::from(hi)) / 2.0,
            Dist::Normal { mean, .. } => mean,
            Dist::LogNormal { median, sigma } => median * (sigma * sigma / 2.0).exp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_schedule_has_the_rate_and_exponential_gaps() {
        let rate = 50.0;
        let s = poisson_schedule(rate, Duration::from_secs(200), usize::MAX, Rng::new(7));
        // 10,000 expected; a Poisson count's sd is 100.
        assert!((s.len() as f64 - 10_000.0).abs() < 400.0, "{}", s.len());
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.iter().all(|t| *t < Duration::from_secs(200)));
        let gaps: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.02).abs() < 0.001, "mean gap {mean}");
        // Exponential: the coefficient of variation is 1 (a fixed-interval schedule has 0).
        let cv = var.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.05, "cv {cv}");
        // Memoryless: P(gap > mean) = e^-1.
        let over = gaps.iter().filter(|g| **g > 0.02).count() as f64 / gaps.len() as f64;
        assert!((over - (-1.0f64).exp()).abs() < 0.02, "{over}");
    }

    #[test]
    fn poisson_schedule_is_bounded_and_repeatable() {
        let a = poisson_schedule(100.0, Duration::from_secs(10), 25, Rng::new(1));
        let b = poisson_schedule(100.0, Duration::from_secs(10), 25, Rng::new(1));
        assert_eq!(a.len(), 25);
        assert_eq!(a, b);
        assert!(poisson_schedule(0.0, Duration::from_secs(10), 25, Rng::new(1)).is_empty());
        assert!(poisson_schedule(f64::NAN, Duration::from_secs(10), 25, Rng::new(1)).is_empty());
    }

    #[test]
    fn distributions_parse_sample_within_bounds_and_name_the_flag() {
        let mut rng = Rng::new(3);
        let u = Dist::parse("--prompt-tokens", "uniform:10-20", 100).unwrap();
        let draws: Vec<u32> = (0..2000).map(|_| u.sample(&mut rng, 100)).collect();
        assert!(draws.iter().all(|d| (10..=20).contains(d)));
        assert!(draws.contains(&10) && draws.contains(&20));
        let n = Dist::parse("--output-tokens", "normal:64,16", 4096).unwrap();
        let mean = (0..5000).map(|_| f64::from(n.sample(&mut rng, 4096))).sum::<f64>() / 5000.0;
        assert!((mean - 64.0).abs() < 1.5, "{mean}");
        let l = Dist::parse("--output-tokens", "lognormal:100,0.5", 4096).unwrap();
        let mut v: Vec<u32> = (0..5001).map(|_| l.sample(&mut rng, 4096)).collect();
        v.sort();
        assert!((f64::from(v[2500]) - 100.0).abs() < 6.0, "median {}", v[2500]);
        assert_eq!(Dist::parse("x", "7", 9).unwrap().sample(&mut rng, 9), 7);
        // Clamped to 1..=max whatever the tails do.
        let wide = Dist::parse("x", "normal:2,50", 10).unwrap();
        assert!((0..1000).map(|_| wide.sample(&mut rng, 10)).all(|d| (1..=10).contains(&d)));

        for bad in ["0", "abc", "uniform:5", "uniform:9-3", "normal:1", "lognormal:10,9", "zipf:1", "200"] {
            let e = Dist::parse("--prompt-tokens", bad, 100).unwrap_err();
            assert!(e.to_string().starts_with("--prompt-tokens"), "{e}");
        }
        assert!((u.mean() - 15.0).abs() < 1e-9);
    }

    #[test]
    fn weighted_choice_follows_the_weights() {
        let mut rng = Rng::new(11);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[rng.weighted(&[1.0, 0.0, 3.0])] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((counts[2] as f64 / 10_000.0 - 0.75).abs() < 0.02, "{counts:?}");
        assert_eq!(rng.weighted(&[]), 0);
        assert_eq!(rng.weighted(&[0.0, -1.0]), 0);
    }
}
