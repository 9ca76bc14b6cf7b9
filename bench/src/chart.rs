//! The SVG charts of `chorus bench load` and `chorus bench compare`: TTFT percentiles per tier
//! over time, TTFT CDFs per tier, and (for a sweep) TTFT against offered load.

use crate::report::{Mode, Report, RunReport, SloTarget};
use crate::svg::{Panel, Series, render};

fn tier_group(tier: &str) -> usize {
    match tier {
        "free" => 0,
        "team" => 1,
        "plus" => 2,
        "enterprise" => 3,
        _ => 4,
    }
}

fn slo_lines(targets: &[SloTarget]) -> Vec<(f64, String)> {
    let mut lines: Vec<(f64, String)> = Vec::new();
    for t in targets {
        let label = format!("SLO {} {} {:.0} ms", t.tier, t.stat, t.max_ms);
        if !lines.iter().any(|(v, _)| (*v - t.max_ms).abs() < 1e-9) {
            lines.push((t.max_ms, label));
        }
    }
    lines
}

/// TTFT p50 (solid) and p95 (dashed) per tier over the run.
fn timeline_panel(run: &RunReport, label: &str, slo: &[SloTarget]) -> Panel {
    let mut series = Vec::new();
    for tier in run.tiers.keys() {
        let windows: Vec<_> = run.timeline.iter().filter(|w| &w.tier == tier).collect();
        for (dash, stat, pick) in [
            (0, "p50", (|w: &crate::report::Window| w.ttft_p50_ms) as fn(&crate::report::Window) -> Option<f64>),
            (1, "p95", |w| w.ttft_p95_ms),
        ] {
            series.push(Series {
                label: format!("{tier} {stat}"),
                points: windows.iter().map(|w| (w.t_s, pick(w).unwrap_or(f64::NAN))).collect(),
                group: tier_group(tier),
                dash,
            });
        }
    }
    Panel {
        title: format!("{label} — {}: TTFT per tier over time", run.name),
        x_label: "seconds into the run".into(),
        y_label: "TTFT (ms)".into(),
        series,
        log_y: true,
        hlines: slo_lines(slo),
        y_from_zero: false,
    }
}

/// The TTFT CDF per tier; `runs` are drawn with dash 0, 1, … (A solid, B dashed).
fn cdf_panel(title: String, runs: &[(&RunReport, &str)]) -> Panel {
    let mut series = Vec::new();
    for (dash, (run, label)) in runs.iter().enumerate() {
        for tier in run.tiers.keys() {
            let v = run.ttft_sorted(tier);
            series.push(Series {
                label: if runs.len() > 1 { format!("{label} {tier}") } else { tier.clone() },
                points: crate::stats::cdf(&v, 200).into_iter().map(|(x, f)| (x, f * 100.0)).collect(),
                group: tier_group(tier),
                dash,
            });
        }
    }
    Panel {
        title,
        x_label: "TTFT (ms)".into(),
        y_label: "% of answers".into(),
        series,
        log_y: false,
        hlines: vec![],
        y_from_zero: true,
    }
}

fn load_of(run: &RunReport) -> f64 {
    match run.mode {
        Mode::Open { rate } => rate,
        Mode::Closed { users, .. } => users as f64,
    }
}

/// TTFT p50 (solid) / p95 (dashed) per tier against offered load, for each report (named
/// by its short name in the legend: "A", "B", or nothing for one report).
fn sweep_panel(reports: &[(&Report, &str)], slo: &[SloTarget]) -> Panel {
    let mut series = Vec::new();
    for (ri, (rep, short)) in reports.iter().enumerate() {
        let tiers: std::collections::BTreeSet<&String> = rep.runs.iter().flat_map(|r| r.tiers.keys()).collect();
        for tier in tiers {
            for (stat, dash) in [("p50", 0), ("p95", 1)] {
                let points = rep
                    .runs
                    .iter()
                    .map(|r| (load_of(r), r.tiers.get(tier).and_then(|t| t.ttft_ms.get(stat)).unwrap_or(f64::NAN)))
                    .collect();
                series.push(Series {
                    label: format!("{short} {tier} {stat}").trim_start().to_owned(),
                    points,
                    group: tier_group(tier) + 5 * ri,
                    dash: dash + 2 * ri,
                });
            }
        }
    }
    let closed = reports.iter().flat_map(|(r, _)| &r.runs).any(|r| matches!(r.mode, Mode::Closed { .. }));
    Panel {
        title: "TTFT against offered load".into(),
        x_label: if closed { "users".into() } else { "offered requests/s".into() },
        y_label: "TTFT (ms)".into(),
        series,
        log_y: true,
        hlines: slo_lines(slo),
        y_from_zero: false,
    }
}

/// The chart of one `chorus bench load` report.
pub fn load_chart(report: &Report) -> String {
    let mut panels = Vec::new();
    if report.runs.len() > 1 {
        panels.push(sweep_panel(&[(report, "")], &report.slo_targets));
    }
    for run in &report.runs {
        panels.push(timeline_panel(run, &report.label, &report.slo_targets));
        panels.push(cdf_panel(format!("{} — {}: TTFT CDF per tier", report.label, run.name), &[(run, &report.label)]));
    }
    render(&format!("chorus bench load: {} ({})", report.label, report.url), &panels)
}

/// Two reports side by side: the sweep, then each pair of runs' CDFs (A solid, B dashed).
pub fn compare_chart(a: &Report, b: &Report) -> String {
    let mut panels = vec![sweep_panel(&[(a, "A"), (b, "B")], &a.slo_targets)];
    for (ra, rb) in a.runs.iter().zip(&b.runs) {
        panels.push(cdf_panel(format!("{}: TTFT CDF — A (solid) vs B (dashed)", ra.name), &[(ra, "A"), (rb, "B")]));
    }
    render(&format!("A = {} vs B = {}", a.label, b.label), &panels)
}
