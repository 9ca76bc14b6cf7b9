//! The results of a load run: per-request records, per-tier statistics, the timeline, the SLO
//! verdicts, the JSON document, the terminal table, and `compare` of two documents.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::stats::{Summary, sorted};

/// One request as the client saw it (times in milliseconds; `t_s` from the run's start).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub tier: String,
    pub t_s: f64,
    /// HTTP status of the last attempt; 0 when no response came.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    pub e2e_ms: f64,
    pub output_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// The session's turn (0 first).
    pub turn: u32,
    /// Attempts after a 429 that waited out its Retry-After.
    #[serde(default)]
    pub retries: u32,
    /// 429 answers this request got, and how many named a Retry-After.
    #[serde(default)]
    pub rate_limited: u32,
    #[serde(default)]
    pub retry_after_given: u32,
    /// Gaps between content deliveries (inter-token latency; chunks that arrive in one read
    /// count once); not kept in the JSON.
    #[serde(skip)]
    pub itl_ms: Vec<f64>,
}

impl Record {
    pub fn answered(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }

    /// Time per output token after the first (vLLM's TPOT).
    pub fn tpot_ms(&self) -> Option<f64> {
        let ttft = self.ttft_ms?;
        (self.output_tokens > 1).then(|| (self.e2e_ms - ttft) / f64::from(self.output_tokens - 1))
    }
}

/// Statistics of one tier (or of all).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TierStats {
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub ttft_ms: Summary,
    pub itl_ms: Summary,
    pub tpot_ms: Summary,
    pub e2e_ms: Summary,
    pub output_tokens: u64,
    /// Output tokens of answered requests per second of the run.
    pub output_tok_s: f64,
    pub answered_per_s: f64,
    pub prompt_tokens_mean: Option<f64>,
    /// Cached over prompt tokens, from the answers' own `usage` where they report it.
    pub cached_fraction: Option<f64>,
    /// Answers by the fleet that gave them (Chorus's `x-chorus-fleet`).
    pub fleets: BTreeMap<String, u64>,
}

impl TierStats {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>, wall_s: f64) -> Self {
        let records: Vec<&Record> = records.into_iter().collect();
        let ok: Vec<&Record> = records.iter().copied().filter(|r| r.answered()).collect();
        let sent = records.len() as u64;
        let answered = ok.len() as u64;
        let output_tokens: u64 = ok.iter().map(|r| u64::from(r.output_tokens)).sum();
        let prompts: Vec<f64> = ok.iter().filter_map(|r| r.prompt_tokens).map(f64::from).collect();
        let cached: Vec<(u32, u32)> = ok.iter().filter_map(|r| Some((r.cached_tokens?, r.prompt_tokens?))).collect();
        let cached_total: u64 = cached.iter().map(|c| u64::from(c.1)).sum();
        let mut fleets = BTreeMap::new();
        for f in ok.iter().filter_map(|r| r.fleet.as_ref()) {
            *fleets.entry(f.clone()).or_insert(0) += 1;
        }
        let per_s = |x: f64| if wall_s > 0.0 { x / wall_s } else { 0.0 };
        Self {
            sent,
            answered,
            errors: sent - answered,
            error_rate: if sent > 0 { (sent - answered) as f64 / sent as f64 } else { 0.0 },
            ttft_ms: Summary::of(ok.iter().filter_map(|r| r.ttft_ms)),
            itl_ms: Summary::of(ok.iter().flat_map(|r| r.itl_ms.iter().copied())),
            tpot_ms: Summary::of(ok.iter().filter_map(|r| r.tpot_ms())),
            e2e_ms: Summary::of(ok.iter().map(|r| r.e2e_ms)),
            output_tokens,
            output_tok_s: per_s(output_tokens as f64),
            answered_per_s: per_s(answered as f64),
            prompt_tokens_mean: (!prompts.is_empty()).then(|| prompts.iter().sum::<f64>() / prompts.len() as f64),
            cached_fraction: (cached_total > 0)
                .then(|| cached.iter().map(|c| f64::from(c.0)).sum::<f64>() / cached_total as f64),
            fleets,
        }
    }
}

/// An SLO target: a TTFT statistic of a tier (`*`: every tier) at most `max_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloTarget {
    pub tier: String,
    pub stat: String,
    pub max_ms: f64,
}

/// The seeds' targets: p50 TTFT ≤ 300 ms for every tier; p95 ≤ 1 s for plus and enterprise;
/// the free tier's own p95 target (and team's between them).
pub fn default_slo() -> Vec<SloTarget> {
    let t = |tier: &str, stat: &str, max_ms: f64| SloTarget { tier: tier.into(), stat: stat.into(), max_ms };
    vec![
        t("*", "p50", 300.0),
        t("enterprise", "p95", 1000.0),
        t("plus", "p95", 1000.0),
        t("team", "p95", 2000.0),
        t("free", "p95", 3000.0),
    ]
}

/// A bad `--slo` spec.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "--slo {spec:?}: {why} (form: TIER.STAT=MS, e.g. plus.p95=1000 or *.p50=300ms; STAT is p50, p90, p95, p99 or mean)"
)]
pub struct SloError {
    pub spec: String,
    pub why: String,
}

impl SloTarget {
    pub fn parse(spec: &str) -> Result<Self, SloError> {
        let err = |why: &str| SloError { spec: spec.into(), why: why.into() };
        let (lhs, ms) = spec.split_once('=').ok_or_else(|| err("no '='"))?;
        let (tier, stat) = lhs.split_once('.').ok_or_else(|| err("no '.' between tier and statistic"))?;
        if !["p50", "p90", "p95", "p99", "mean"].contains(&stat) {
            return Err(err("unknown statistic"));
        }
        if tier.is_empty() || tier.len() > 64 {
            return Err(err("no tier"));
        }
        let max_ms = ms
            .trim()
            .trim_end_matches("ms")
            .parse::<f64>()
            .ok()
            .filter(|m| m.is_finite() && *m > 0.0)
            .ok_or_else(|| err("the limit is not a positive number of milliseconds"))?;
        Ok(Self { tier: tier.into(), stat: stat.into(), max_ms })
    }
}

/// Merges `--slo` overrides into the defaults (same tier and statistic replaces).
pub fn slo_with(overrides: Vec<SloTarget>) -> Vec<SloTarget> {
    let mut out = default_slo();
    for o in overrides {
        out.retain(|t| !(t.tier == o.tier && t.stat == o.stat));
        out.push(o);
    }
    out
}

/// Whether one target held in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SloResult {
    pub tier: String,
    pub stat: String,
    pub target_ms: f64,
    /// The statistic over every request of the tier, a failed one counting as a first token
    /// that never came; `None` when failures reach that percentile (the target did not hold).
    pub measured_ms: Option<f64>,
    pub held: bool,
    /// Target minus measured: positive is headroom, negative the miss.
    pub margin_ms: Option<f64>,
    /// Requests of the tier that got no answer.
    #[serde(default)]
    pub failed: u64,
}

/// The `stat` of a tier's TTFTs where each failed request counts as an infinite TTFT (a user
/// who got an error or a 429 did not get a first token in time); `None` when that lands on a
/// failure.
pub fn slo_ttft(records: &[Record], tier: &str, stat: &str) -> Option<f64> {
    let mine = records.iter().filter(|r| r.tier == tier);
    let mut v: Vec<f64> =
        mine.map(|r| if r.answered() { r.ttft_ms.unwrap_or(f64::INFINITY) } else { f64::INFINITY }).collect();
    v.sort_by(f64::total_cmp);
    let x = match stat {
        "mean" => v.iter().sum::<f64>() / v.len() as f64,
        _ => crate::stats::percentile(&v, stat.strip_prefix('p')?.parse::<f64>().ok()? / 100.0)?,
    };
    x.is_finite().then_some(x)
}

/// Checks every target against each tier that sent requests (`*` expands to them). A target
/// naming a tier that sent nothing is a miss (a typo, or a tier left out of the mix).
pub fn evaluate_slo(targets: &[SloTarget], tiers: &BTreeMap<String, TierStats>, records: &[Record]) -> Vec<SloResult> {
    let mut out = Vec::new();
    for t in targets {
        let names: Vec<&String> = tiers.keys().filter(|n| t.tier == "*" || **n == t.tier).collect();
        let known = ["*", "free", "team", "plus", "enterprise"].contains(&t.tier.as_str());
        if names.is_empty() && !known {
            out.push(SloResult {
                tier: t.tier.clone(),
                stat: t.stat.clone(),
                target_ms: t.max_ms,
                measured_ms: None,
                held: false,
                margin_ms: None,
                failed: 0,
            });
        }
        for name in names {
            let stats = &tiers[name];
            if stats.sent == 0 {
                continue;
            }
            let measured = slo_ttft(records, name, &t.stat);
            out.push(SloResult {
                tier: name.clone(),
                stat: t.stat.clone(),
                target_ms: t.max_ms,
                measured_ms: measured,
                held: measured.is_some_and(|m| m <= t.max_ms),
                margin_ms: measured.map(|m| t.max_ms - m),
                failed: stats.errors,
            });
        }
    }
    out
}

/// One window of the timeline: a tier's TTFT percentiles over requests sent in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub t_s: f64,
    pub tier: String,
    pub sent: u64,
    pub errors: u64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
}

/// The timeline of `records` in windows of `width_s`.
pub fn timeline(records: &[Record], width_s: f64) -> Vec<Window> {
    let width = if width_s > 0.0 { width_s } else { 1.0 };
    let mut groups: BTreeMap<(u64, &str), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry(((r.t_s / width).floor().max(0.0) as u64, r.tier.as_str())).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((w, tier), rs)| {
            let s = Summary::of(rs.iter().filter(|r| r.answered()).filter_map(|r| r.ttft_ms));
            Window {
                t_s: (w as f64 + 0.5) * width,
                tier: tier.to_owned(),
                sent: rs.len() as u64,
                errors: rs.iter().filter(|r| !r.answered()).count() as u64,
                ttft_p50_ms: s.p50,
                ttft_p95_ms: s.p95,
                ttft_p99_ms: s.p99,
            }
        })
        .collect()
}

/// How the run drove the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mode {
    /// Poisson arrivals at `rate` requests per second, whatever the answers do.
    Open { rate: f64 },
    /// `users` each sending the next request `think_ms` after the last answer.
    Closed { users: usize, think_ms: u64 },
}

impl Mode {
    pub fn name(&self) -> String {
        match self {
            Mode::Open { rate } => format!("rate {rate}/s"),
            Mode::Closed { users, .. } => format!("{users} users"),
        }
    }
}

/// 429 refusals and what the client did about them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateLimited {
    pub responses: u64,
    pub with_retry_after: u64,
    /// Whether the client's policy was to wait out Retry-After and retry (`--retry-429`).
    pub honoured: bool,
    /// Retries made after waiting, and requests answered after at least one.
    pub retries: u64,
    #[serde(default)]
    pub answered_after_retry: u64,
}

/// Figures read from the server's own `/metrics` during the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerSide {
    /// Cached over prompt tokens over the run (counter deltas).
    pub prefix_cache_hit_rate: Option<f64>,
    /// Requests waiting to start, sampled about once a second.
    pub queue_depth: Option<Summary>,
    pub scrapes: u64,
}

/// One run (one rate or one user count).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub name: String,
    pub mode: Mode,
    /// From the first send to the last answer.
    pub wall_s: f64,
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    /// Failed requests by HTTP status (`0`: no response).
    pub errors_by_status: BTreeMap<String, u64>,
    /// Failed requests by the API's error code or the transport's reason.
    pub errors_by_code: BTreeMap<String, u64>,
    pub rate_limited: RateLimited,
    pub overall: TierStats,
    pub tiers: BTreeMap<String, TierStats>,
    pub server: ServerSide,
    pub slo: Vec<SloResult>,
    pub timeline: Vec<Window>,
    pub records: Vec<Record>,
}

impl RunReport {
    /// Builds every figure from the records.
    pub fn build(
        mode: Mode,
        wall_s: f64,
        records: Vec<Record>,
        server: ServerSide,
        slo: &[SloTarget],
        honoured: bool,
    ) -> Self {
        let mut by_tier: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
        for r in &records {
            by_tier.entry(r.tier.clone()).or_default().push(r);
        }
        let tiers: BTreeMap<String, TierStats> =
            by_tier.into_iter().map(|(t, rs)| (t, TierStats::of(rs, wall_s))).collect();
        let overall = TierStats::of(&records, wall_s);
        let mut errors_by_status = BTreeMap::new();
        let mut errors_by_code = BTreeMap::new();
        for r in records.iter().filter(|r| !r.answered()) {
            *errors_by_status.entry(r.status.to_string()).or_insert(0) += 1;
            *errors_by_code.entry(r.error.clone().unwrap_or_else(|| "unknown".into())).or_insert(0) += 1;
        }
        let rate_limited = RateLimited {
            responses: records.iter().map(|r| u64::from(r.rate_limited)).sum(),
            with_retry_after: records.iter().map(|r| u64::from(r.retry_after_given)).sum(),
            honoured,
            retries: records.iter().map(|r| u64::from(r.retries)).sum(),
            answered_after_retry: records.iter().filter(|r| r.retries > 0 && r.answered()).count() as u64,
        };
        let width = (wall_s / 30.0).max(1.0);
        Self {
            name: mode.name(),
            mode,
            wall_s,
            sent: overall.sent,
            answered: overall.answered,
            errors: overall.errors,
            errors_by_status,
            errors_by_code,
            rate_limited,
            slo: evaluate_slo(slo, &tiers, &records),
            timeline: timeline(&records, width),
            overall,
            tiers,
            server,
            records,
        }
    }

    /// TTFT values (ms) of answered requests of one tier, ascending.
    pub fn ttft_sorted(&self, tier: &str) -> Vec<f64> {
        sorted(self.records.iter().filter(|r| r.tier == tier && r.answered()).filter_map(|r| r.ttft_ms))
    }

    /// Every verdict held, and there was at least one (a run that sent nothing held nothing).
    pub fn slo_held(&self) -> bool {
        !self.slo.is_empty() && self.slo.iter().all(|s| s.held)
    }
}

/// The whole JSON document of `chorus bench load`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The tool and its version.
    pub tool: String,
    /// What was measured: a label (`--label`, else the URL) and the URL.
    pub label: String,
    pub url: String,
    pub model: String,
    /// The workload flags, as given.
    pub workload: serde_json::Value,
    pub slo_targets: Vec<SloTarget>,
    pub runs: Vec<RunReport>,
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") })
}

/// The terminal table of one run: per tier, then the SLO verdicts.
pub fn render_run(r: &RunReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}: {} sent, {} answered, {} errors in {:.1} s; {:.1} output tok/s; {:.2} answers/s",
        r.name, r.sent, r.answered, r.errors, r.wall_s, r.overall.output_tok_s, r.overall.answered_per_s
    );
    let _ = writeln!(
        o,
        "  {:<11} {:>5} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8}",
        "tier", "sent", "err%", "ttft p50", "p95", "p99", "itl p50", "p95", "e2e p50", "p95", "tok/s"
    );
    let rows = r.tiers.iter().map(|(n, t)| (n.as_str(), t)).chain(std::iter::once(("all", &r.overall)));
    for (name, t) in rows {
        let _ = writeln!(
            o,
            "  {:<11} {:>5} {:>6.1} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8.1}",
            name,
            t.sent,
            t.error_rate * 100.0,
            ms(t.ttft_ms.p50),
            ms(t.ttft_ms.p95),
            ms(t.ttft_ms.p99),
            ms(t.itl_ms.p50),
            ms(t.itl_ms.p95),
            ms(t.e2e_ms.p50),
            ms(t.e2e_ms.p95),
            t.output_tok_s
        );
    }
    if !r.errors_by_status.is_empty() {
        let by: Vec<String> = r.errors_by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let codes: Vec<String> = r.errors_by_code.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let _ = writeln!(o, "  errors by status {{{}}}; by code {{{}}}", by.join(", "), codes.join(", "));
    }
    if r.rate_limited.responses > 0 {
        let _ = writeln!(
            o,
            "  429s: {} ({} with Retry-After); Retry-After {} ({} retries, {} answered after waiting)",
            r.rate_limited.responses,
            r.rate_limited.with_retry_after,
            if r.rate_limited.honoured { "honoured" } else { "not honoured" },
            r.rate_limited.retries,
            r.rate_limited.answered_after_retry
        );
    }
    let cache = r.server.prefix_cache_hit_rate.map(|h| format!("{:.1}%", h * 100.0));
    let client_cache = r.overall.cached_fraction.map(|h| format!("{:.1}%", h * 100.0));
    let queue = r.server.queue_depth.and_then(|q| Some(format!("mean {:.1}, max {:.0}", q.mean?, q.max?)));
    let _ = writeln!(
        o,
        "  prefix cache hit: {} (server /metrics), {} (answers' usage); queue depth: {}",
        cache.as_deref().unwrap_or("n/a"),
        client_cache.as_deref().unwrap_or("n/a"),
        queue.as_deref().unwrap_or("n/a")
    );
    if !r.slo.is_empty() {
        let _ = writeln!(o, "  SLO (TTFT):");
        for s in &r.slo {
            let verdict = match (s.held, s.margin_ms) {
                (true, Some(m)) => format!("held, {m:.0} ms to spare"),
                (false, Some(m)) => format!("MISSED by {:.0} ms", -m),
                _ if s.failed > 0 => format!("MISSED: {} requests failed, reaching {}", s.failed, s.stat),
                _ => "MISSED: no such tier in the run".into(),
            };
            let _ = writeln!(
                o,
                "    {:<11} {} ≤ {:>5.0} ms: {:>6} ms  {verdict}",
                s.tier,
                s.stat,
                s.target_ms,
                ms(s.measured_ms)
            );
        }
    }
    o
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}×", b / a),
        _ => "-".into(),
    }
}

/// Side by side: each run of `a` with the run of `b` at the same position, per tier, with
/// B/A ratios (below 1 means B is lower: better for latencies, worse for throughput).
pub fn compare(a: &Report, b: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "A = {} ({})\nB = {} ({})\n", a.label, a.url, b.label, b.url);
    for (ra, rb) in a.runs.iter().zip(&b.runs) {
        let _ = writeln!(o, "{} | {}", ra.name, rb.name);
        let _ = writeln!(
            o,
            "  {:<11} {:>22} {:>22} {:>22} {:>20} {:>16}",
            "tier", "ttft p50 A/B (B/A)", "ttft p95 A/B (B/A)", "e2e p50 A/B (B/A)", "tok/s A/B (B/A)", "err% A/B"
        );
        let mut names: Vec<&String> = ra.tiers.keys().chain(rb.tiers.keys()).collect();
        names.sort();
        names.dedup();
        let all = "all".to_string();
        names.push(&all);
        for n in names {
            let pick = |r: &RunReport| if *n == "all" { Some(r.overall.clone()) } else { r.tiers.get(n).cloned() };
            let (ta, tb) = (pick(ra).unwrap_or_default(), pick(rb).unwrap_or_default());
            let pair = |x: Option<f64>, y: Option<f64>| format!("{}/{} ({})", ms(x), ms(y), ratio(x, y));
            let _ = writeln!(
                o,
                "  {:<11} {:>22} {:>22} {:>22} {:>20} {:>16}",
                n,
                pair(ta.ttft_ms.p50, tb.ttft_ms.p50),
                pair(ta.ttft_ms.p95, tb.ttft_ms.p95),
                pair(ta.e2e_ms.p50, tb.e2e_ms.p50),
                format!(
                    "{:.0}/{:.0} ({})",
                    ta.output_tok_s,
                    tb.output_tok_s,
                    ratio(Some(ta.output_tok_s), Some(tb.output_tok_s))
                ),
                format!("{:.1}/{:.1}", ta.error_rate * 100.0, tb.error_rate * 100.0)
            );
        }
        let _ = writeln!(
            o,
            "  SLO held: A {}/{}, B {}/{}\n",
            ra.slo.iter().filter(|s| s.held).count(),
            ra.slo.len(),
            rb.slo.iter().filter(|s| s.held).count(),
            rb.slo.len()
        );
    }
    if a.runs.len() != b.runs.len() {
        let _ = writeln!(
            o,
            "(A has {} runs, B {}; compared the first {})",
            a.runs.len(),
            b.runs.len(),
            a.runs.len().min(b.runs.len())
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tier: &str, t_s: f64, status: u16, ttft: f64, out: u32) -> Record {
        Record {
            tier: tier.into(),
            t_s,
            status,
            error: (status != 200).then(|| format!("http_{status}")),
            ttft_ms: (status == 200).then_some(ttft),
            e2e_ms: ttft + 10.0 * f64::from(out.saturating_sub(1)),
            output_tokens: out,
            prompt_tokens: Some(100),
            cached_tokens: Some(50),
            fleet: Some(if tier == "free" { "mini" } else { "flagship" }.into()),
            itl_ms: vec![10.0; out.saturating_sub(1) as usize],
            ..Default::default()
        }
    }

    fn run() -> RunReport {
        let mut records = Vec::new();
        for i in 0..100 {
            records.push(rec(
                "free",
                f64::from(i) * 0.1,
                if i % 10 == 0 { 429 } else { 200 },
                100.0 + f64::from(i),
                11,
            ));
            records.push(rec("plus", f64::from(i) * 0.1, 200, 50.0, 11));
        }
        records[0].rate_limited = 1;
        records[0].retry_after_given = 1;
        RunReport::build(Mode::Open { rate: 20.0 }, 10.0, records, ServerSide::default(), &default_slo(), false)
    }

    #[test]
    fn runs_are_consistent_per_tier_and_overall() {
        let r = run();
        assert_eq!(r.sent, 200);
        assert_eq!(r.sent, r.answered + r.errors);
        assert_eq!(r.errors, 10);
        assert_eq!(r.errors_by_status.get("429"), Some(&10));
        assert_eq!(r.tiers["free"].sent + r.tiers["plus"].sent, r.sent);
        assert_eq!(r.tiers["free"].answered, 90);
        assert!((r.tiers["free"].error_rate - 0.1).abs() < 1e-12);
        // 190 answers × 11 tokens over 10 s.
        assert!((r.overall.output_tok_s - 209.0).abs() < 1e-9);
        assert_eq!(r.tiers["plus"].ttft_ms.p95, Some(50.0));
        assert_eq!(r.tiers["plus"].itl_ms.p50, Some(10.0));
        assert!((r.tiers["plus"].tpot_ms.p50.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(r.tiers["free"].cached_fraction, Some(0.5));
        assert_eq!(r.tiers["free"].fleets.get("mini"), Some(&90));
        assert_eq!(r.rate_limited.responses, 1);
        // The timeline covers every request once.
        assert_eq!(r.timeline.iter().map(|w| w.sent).sum::<u64>(), 200);
        let text = render_run(&r);
        assert!(text.contains("free") && text.contains("SLO"), "{text}");
    }

    #[test]
    fn slo_verdicts_say_which_held_and_by_how_much() {
        let r = run();
        let find = |tier: &str, stat: &str| r.slo.iter().find(|s| s.tier == tier && s.stat == stat).unwrap().clone();
        let plus50 = find("plus", "p50");
        assert!(plus50.held);
        assert_eq!(plus50.margin_ms, Some(250.0));
        assert!(find("plus", "p95").held);
        assert!(find("free", "p50").held);
        // Tiers without traffic get no verdict.
        assert!(r.slo.iter().all(|s| s.tier == "free" || s.tier == "plus"));
        let tight = evaluate_slo(&[SloTarget::parse("plus.p95=40ms").unwrap()], &r.tiers, &r.records);
        assert_eq!(tight.len(), 1);
        assert!(!tight[0].held);
        assert!(tight[0].margin_ms.unwrap() < 0.0);
        // Failures count as first tokens that never came: 10% of free failed, so its p95 is
        // a failure and the target cannot hold however fast the answers were.
        let free95 = find("free", "p95");
        assert!(!free95.held && free95.measured_ms.is_none() && free95.failed == 10, "{free95:?}");
        assert!(find("free", "p50").held, "p50 lands on an answer");
        assert!(!r.slo_held());
        // A target for a tier that is not in the run is a miss, not a silent pass.
        let typo = evaluate_slo(&[SloTarget::parse("plsu.p50=300").unwrap()], &r.tiers, &r.records);
        assert!(typo.len() == 1 && !typo[0].held);
    }

    #[test]
    fn slo_specs_parse_override_and_name_the_problem() {
        assert_eq!(
            SloTarget::parse("plus.p95=800").unwrap(),
            SloTarget { tier: "plus".into(), stat: "p95".into(), max_ms: 800.0 }
        );
        assert_eq!(SloTarget::parse("*.p50=250ms").unwrap().max_ms, 250.0);
        for bad in ["plus.p95", "plus=3", "plus.p42=3", "plus.p95=-1", ".p95=3", "plus.p95=abc"] {
            let e = SloTarget::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("--slo"), "{e}");
        }
        let merged = slo_with(vec![SloTarget::parse("plus.p95=800").unwrap()]);
        assert_eq!(merged.iter().filter(|t| t.tier == "plus" && t.stat == "p95").count(), 1);
        assert_eq!(merged.len(), default_slo().len());
    }

    #[test]
    fn compare_prints_ratios_side_by_side() {
        let a = Report {
            tool: "t".into(),
            label: "A".into(),
            url: "http://a/v1".into(),
            model: "m".into(),
            workload: serde_json::Value::Null,
            slo_targets: default_slo(),
            runs: vec![run()],
        };
        let mut b = a.clone();
        b.label = "B".into();
        for r in &mut b.runs[0].records {
            r.ttft_ms = r.ttft_ms.map(|t| t * 2.0);
        }
        let r0 = b.runs[0].clone();
        b.runs[0] = RunReport::build(r0.mode, r0.wall_s, r0.records, r0.server, &default_slo(), false);
        let text = compare(&a, &b);
        assert!(text.contains("2.00×"), "{text}");
        assert!(text.contains("A = A") && text.contains("B = B"));
        // The JSON round-trips.
        let back: Report = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back.runs[0].sent, 200);
    }
}
