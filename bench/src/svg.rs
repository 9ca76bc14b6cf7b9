//! Dependency-free SVG line charts for the load generator's reports.
//!
//! [`render`] stacks one or more [`Panel`]s vertically in a single standalone SVG 1.1 document:
//! latency percentiles per tier over time, latency CDFs per tier, and the like. Each panel has its
//! own axes with "nice" ticks, light grid lines, optional dashed reference lines (an SLO target)
//! and a legend to the right of the plot area.
//!
//! Rendering never panics: non-finite points, values beyond ±1e300, and values `<= 0` on a
//! logarithmic axis are skipped (they break the line like a gap in the data), and a panel without
//! any drawable point still shows its empty axes with the text "no data".

use std::fmt::{self, Display, Write as _};

/// Width of the document in pixels.
const WIDTH: f64 = 900.0;
/// Height of one panel in pixels.
const PANEL_HEIGHT: f64 = 360.0;
/// Height of the band at the top holding the document title.
const TITLE_HEIGHT: f64 = 40.0;
/// Empty space below the last panel.
const BOTTOM_PAD: f64 = 10.0;
/// Space left of the plot area for the y tick labels and the y axis label.
const PLOT_LEFT: f64 = 80.0;
/// Space right of the plot area reserved for the legend.
const LEGEND_WIDTH: f64 = 170.0;
/// Distance from the top of a panel to the top of its plot area (room for the panel title).
const PLOT_TOP: f64 = 36.0;
/// Distance from the bottom of a plot area to the bottom of its panel (x ticks and x label).
const PLOT_BOTTOM: f64 = 52.0;
/// Height of one legend row.
const LEGEND_ROW: f64 = 16.0;
/// Length of the line sample drawn in front of each legend label.
const LEGEND_SAMPLE: f64 = 26.0;
/// Legend labels longer than this many characters are cut and end in an ellipsis.
const LEGEND_MAX_CHARS: usize = 20;
/// Values whose magnitude exceeds this are skipped, so that ranges and spans stay finite.
const LIMIT: f64 = 1e300;
/// Fewest and most ticks an axis aims for.
const TICKS_MIN: usize = 4;
const TICKS_MAX: usize = 8;

/// Line colours, indexed by [`Series::group`] modulo the length (Tableau 10 without its grey,
/// which is kept for reference lines).
const PALETTE: [&str; 9] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"];

/// `stroke-dasharray` values indexed by [`Series::dash`] modulo the length: solid, dashed, dotted,
/// dash-dot.
const DASHES: [Option<&str>; 4] = [None, Some("8 4"), Some("2 3"), Some("8 3 2 3")];

/// One line on a panel.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Shown in the legend.
    pub label: String,
    /// (x, y) points in drawing order; non-finite points are skipped (they break the line).
    pub points: Vec<(f64, f64)>,
    /// Colour index: series with the same `group` share a colour (e.g. one colour per tier).
    pub group: usize,
    /// Dash style index: 0 solid, 1 dashed, 2 dotted, 3 dash-dot (e.g. p50 / p95 / p99).
    pub dash: usize,
}

/// One chart panel with its own axes.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    /// Shown centred above the plot area.
    pub title: String,
    /// Shown below the x axis.
    pub x_label: String,
    /// Shown rotated left of the y axis.
    pub y_label: String,
    /// The lines, drawn in order (later series on top) and listed in the legend in order.
    pub series: Vec<Series>,
    /// Logarithmic y axis (base 10); values <= 0 are skipped.
    pub log_y: bool,
    /// Optional horizontal reference lines: (y value, label), drawn dashed grey (e.g. an SLO target).
    pub hlines: Vec<(f64, String)>,
    /// Fix the y range to start at zero (ignored when log_y).
    pub y_from_zero: bool,
}

/// Renders panels stacked vertically in one SVG document (width 900 px, about 360 px per panel),
/// with a document title at the top.
///
/// With no panels the document holds just the title. The x axis is always linear and expanded to
/// nice tick values around the data; pass small relative numbers (seconds since the start, not
/// Unix timestamps) to keep its labels short.
pub fn render(title: &str, panels: &[Panel]) -> String {
    let mut out = String::with_capacity(8192 + panels.len() * 16384);
    // `fmt::Write` for `String` never fails, so the result carries no information.
    let _ = write_document(&mut out, title, panels);
    out
}

/// Writes the whole document into `out`.
fn write_document(out: &mut String, title: &str, panels: &[Panel]) -> fmt::Result {
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels.len() as f64 + BOTTOM_PAD;
    let (width, height) = (Px(WIDTH), Px(height));
    let title = escape(title);
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">"#
    )?;
    writeln!(out, "<title>{title}</title>")?;
    writeln!(out, r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##)?;
    writeln!(
        out,
        r##"<text x="{}" y="26" text-anchor="middle" font-size="16" font-weight="bold" fill="#222222">{title}</text>"##,
        Px(WIDTH / 2.0)
    )?;
    for (index, panel) in panels.iter().enumerate() {
        write_panel(out, panel, TITLE_HEIGHT + PANEL_HEIGHT * index as f64)?;
    }
    writeln!(out, "</svg>")
}

/// Whether `v` can be placed on an axis (logarithmic when `log`).
fn drawable(v: f64, log: bool) -> bool {
    v.is_finite() && v.abs() <= LIMIT && (!log || v > 0.0)
}

/// Smallest and largest of `values`, or `None` when there are none.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The rectangle of a plot area in document pixels.
#[derive(Debug, Clone, Copy)]
struct Frame {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    /// Maps a point in drawing space (see [`Axis::value`]) to document pixels.
    fn place(&self, xa: &Axis, ya: &Axis, x: f64, y: f64) -> (f64, f64) {
        (self.left + xa.frac(x) * (self.right - self.left), self.bottom - ya.frac(y) * (self.bottom - self.top))
    }
}

/// Writes one panel whose top edge is at `top`.
fn write_panel(out: &mut String, panel: &Panel, top: f64) -> fmt::Result {
    let frame = Frame {
        left: PLOT_LEFT,
        right: WIDTH - LEGEND_WIDTH,
        top: top + PLOT_TOP,
        bottom: top + PANEL_HEIGHT - PLOT_BOTTOM,
    };
    let log = panel.log_y;
    let points =
        || panel.series.iter().flat_map(|s| s.points.iter()).filter(|&&(x, y)| drawable(x, false) && drawable(y, log));
    let x_bounds = bounds(points().map(|p| p.0));
    let hline_ys = panel.hlines.iter().map(|h| h.0).filter(|&y| drawable(y, log));
    let y_bounds = bounds(points().map(|p| p.1).chain(hline_ys));
    let has_data = x_bounds.is_some();

    let (x_lo, x_hi) = x_bounds.unwrap_or((0.0, 1.0));
    let xa = Axis::linear(x_lo, x_hi, false);
    let ya = if log {
        let (lo, hi) = y_bounds.unwrap_or((1.0, 10.0));
        Axis::log(lo, hi)
    } else {
        let (lo, hi) = y_bounds.unwrap_or((0.0, 1.0));
        Axis::linear(lo, hi, panel.y_from_zero)
    };

    writeln!(out, "<g>")?;
    let mid_x = Px((frame.left + frame.right) / 2.0);
    writeln!(
        out,
        r##"<text x="{mid_x}" y="{}" text-anchor="middle" font-size="13" font-weight="bold" fill="#222222">{}</text>"##,
        Px(top + 22.0),
        escape(&panel.title)
    )?;
    write_grid_and_ticks(out, &frame, &xa, &ya)?;
    writeln!(
        out,
        r##"<text x="{mid_x}" y="{}" text-anchor="middle" font-size="12" fill="#333333">{}</text>"##,
        Px(frame.bottom + 38.0),
        escape(&panel.x_label)
    )?;
    let (label_x, label_y) = (Px(18.0), Px((frame.top + frame.bottom) / 2.0));
    writeln!(
        out,
        r##"<text x="{label_x}" y="{label_y}" transform="rotate(-90 {label_x} {label_y})" text-anchor="middle" font-size="12" fill="#333333">{}</text>"##,
        escape(&panel.y_label)
    )?;

    for (y, label) in &panel.hlines {
        let Some(ty) = ya.value(*y) else { continue };
        let (_, py) = frame.place(&xa, &ya, xa.lo, ty);
        let py = Px(py);
        writeln!(
            out,
            r##"<line x1="{}" y1="{py}" x2="{}" y2="{py}" stroke="#888888" stroke-width="1.2" stroke-dasharray="6 4"/>"##,
            Px(frame.left),
            Px(frame.right)
        )?;
        if !label.is_empty() {
            // Above the line, or below it when that would leave the plot area.
            let label_y = if py.0 - 4.0 < frame.top + 12.0 { py.0 + 12.0 } else { py.0 - 4.0 };
            writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end" font-size="10" fill="#666666">{}</text>"##,
                Px(frame.right - 4.0),
                Px(label_y),
                escape(label)
            )?;
        }
    }

    for series in &panel.series {
        write_series(out, series, &frame, &xa, &ya)?;
    }

    if !has_data {
        writeln!(
            out,
            r##"<text x="{mid_x}" y="{}" text-anchor="middle" font-size="14" fill="#999999">no data</text>"##,
            Px((frame.top + frame.bottom) / 2.0)
        )?;
    }

    write_legend(out, &panel.series, frame.right + 14.0, frame.top + 6.0, top + PANEL_HEIGHT - 10.0)?;
    writeln!(out, "</g>")
}

/// Writes grid lines, the plot frame, tick marks and tick labels.
fn write_grid_and_ticks(out: &mut String, frame: &Frame, xa: &Axis, ya: &Axis) -> fmt::Result {
    let (left, right, top, bottom) = (Px(frame.left), Px(frame.right), Px(frame.top), Px(frame.bottom));
    for tick in &xa.ticks {
        let (px, _) = frame.place(xa, ya, tick.at, ya.lo);
        let px = Px(px);
        writeln!(out, r##"<line x1="{px}" y1="{top}" x2="{px}" y2="{bottom}" stroke="#e6e6e6" stroke-width="1"/>"##)?;
    }
    for tick in &ya.ticks {
        let (_, py) = frame.place(xa, ya, xa.lo, tick.at);
        let py = Px(py);
        writeln!(out, r##"<line x1="{left}" y1="{py}" x2="{right}" y2="{py}" stroke="#e6e6e6" stroke-width="1"/>"##)?;
    }
    writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#444444" stroke-width="1"/>"##,
        Px(frame.right - frame.left),
        Px(frame.bottom - frame.top)
    )?;
    for tick in &xa.ticks {
        let (px, _) = frame.place(xa, ya, tick.at, ya.lo);
        let px = Px(px);
        writeln!(
            out,
            r##"<line x1="{px}" y1="{bottom}" x2="{px}" y2="{}" stroke="#444444" stroke-width="1"/>"##,
            Px(frame.bottom + 5.0)
        )?;
        writeln!(
            out,
            r##"<text x="{px}" y="{}" text-anchor="middle" font-size="11" fill="#444444">{}</text>"##,
            Px(frame.bottom + 18.0),
            escape(&tick.label)
        )?;
    }
    for tick in &ya.ticks {
        let (_, py) = frame.place(xa, ya, xa.lo, tick.at);
        let py = Px(py);
        writeln!(
            out,
            r##"<line x1="{}" y1="{py}" x2="{left}" y2="{py}" stroke="#444444" stroke-width="1"/>"##,
            Px(frame.left - 5.0)
        )?;
        writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" font-size="11" fill="#444444">{}</text>"##,
            Px(frame.left - 8.0),
            Px(py.0 + 4.0),
            escape(&tick.label)
        )?;
    }
    Ok(())
}

/// Writes one series as a single `<path>` (one subpath per unbroken run of drawable points) plus a
/// small circle for each point that has no drawable neighbour. Writes nothing for a series without
/// drawable points.
fn write_series(out: &mut String, series: &Series, frame: &Frame, xa: &Axis, ya: &Axis) -> fmt::Result {
    let mut d = String::new();
    let mut isolated = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mut any = false;
    let flush = |run: &mut Vec<(f64, f64)>, d: &mut String, isolated: &mut Vec<(f64, f64)>| -> fmt::Result {
        match run.as_slice() {
            [] => {}
            [(x, y)] => {
                write!(d, "M{} {}", Px(*x), Px(*y))?;
                isolated.push((*x, *y));
            }
            [(x, y), rest @ ..] => {
                write!(d, "M{} {}L", Px(*x), Px(*y))?;
                for (i, (x, y)) in rest.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    write!(d, "{sep}{} {}", Px(*x), Px(*y))?;
                }
            }
        }
        run.clear();
        Ok(())
    };
    for &(x, y) in &series.points {
        let placed = match (xa.value(x), ya.value(y)) {
            (Some(tx), Some(ty)) => Some(frame.place(xa, ya, tx, ty)),
            _ => None,
        };
        match placed {
            Some(p) => {
                any = true;
                // Consecutive points that land on the same written pixel add nothing but bytes.
                if run.last().is_none_or(|&last| Px(last.0) != Px(p.0) || Px(last.1) != Px(p.1)) {
                    run.push(p);
                }
            }
            None => flush(&mut run, &mut d, &mut isolated)?,
        }
    }
    flush(&mut run, &mut d, &mut isolated)?;
    if !any {
        return Ok(());
    }
    let stroke = colour(series.group);
    write!(
        out,
        r#"<path d="{d}" fill="none" stroke="{stroke}" stroke-width="1.8" stroke-linejoin="round" stroke-linecap="round""#
    )?;
    if let Some(dash) = dash(series.dash) {
        write!(out, r#" stroke-dasharray="{dash}""#)?;
    }
    writeln!(out, "/>")?;
    for (x, y) in isolated {
        writeln!(out, r#"<circle cx="{}" cy="{}" r="2.5" fill="{stroke}"/>"#, Px(x), Px(y))?;
    }
    Ok(())
}

/// Writes the legend rows starting at (`x`, `y`), with as many rows as fit above `max_y`; when
/// some do not fit, the last row says how many were left out.
fn write_legend(out: &mut String, series: &[Series], x: f64, y: f64, max_y: f64) -> fmt::Result {
    let fit = ((max_y - y) / LEGEND_ROW).floor().max(1.0) as usize;
    let shown = if series.len() > fit { fit - 1 } else { series.len() };
    for (row, s) in series.iter().take(shown).enumerate() {
        let cy = y + LEGEND_ROW * row as f64;
        let line_y = Px(cy);
        write!(
            out,
            r#"<line x1="{}" y1="{line_y}" x2="{}" y2="{line_y}" stroke="{}" stroke-width="2.5""#,
            Px(x),
            Px(x + LEGEND_SAMPLE),
            colour(s.group)
        )?;
        if let Some(dash) = dash(s.dash) {
            write!(out, r#" stroke-dasharray="{dash}""#)?;
        }
        writeln!(out, "/>")?;
        writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="11" fill="#222222">{}</text>"##,
            Px(x + LEGEND_SAMPLE + 6.0),
            Px(cy + 4.0),
            escape(&truncate(&s.label, LEGEND_MAX_CHARS))
        )?;
    }
    if shown < series.len() {
        writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="11" fill="#666666">+{} more</text>"##,
            Px(x),
            Px(y + LEGEND_ROW * shown as f64 + 4.0),
            series.len() - shown
        )?;
    }
    Ok(())
}

/// The palette colour of a series group.
fn colour(group: usize) -> &'static str {
    PALETTE[group % PALETTE.len()]
}

/// The `stroke-dasharray` of a dash style, `None` for solid.
fn dash(style: usize) -> Option<&'static str> {
    DASHES[style % DASHES.len()]
}

/// `s` cut to at most `max` characters, ending in an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Escapes text for XML character data and attribute values. Characters that XML 1.0 forbids
/// (most control characters) become U+FFFD so that the document stays well-formed.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A pixel coordinate written with at most one decimal.
#[derive(Debug, Clone, Copy)]
struct Px(f64);

impl Px {
    /// The coordinate in tenths of a pixel, as written; non-finite values count as zero.
    fn tenths(self) -> i64 {
        if self.0.is_finite() { (self.0 * 10.0).round() as i64 } else { 0 }
    }
}

impl PartialEq for Px {
    fn eq(&self, other: &Self) -> bool {
        self.tenths() == other.tenths()
    }
}

impl Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tenths();
        let sign = if t < 0 { "-" } else { "" };
        let (whole, tenth) = (t.unsigned_abs() / 10, t.unsigned_abs() % 10);
        if tenth == 0 { write!(f, "{sign}{whole}") } else { write!(f, "{sign}{whole}.{tenth}") }
    }
}

/// One tick: its place in drawing space and its label.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    at: f64,
    label: String,
}

/// A laid-out axis: its range in drawing space (the value itself on a linear axis, its base-10
/// logarithm on a log axis), always with `lo < hi`, and its ticks.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<Tick>,
}

impl Axis {
    /// A linear axis covering `lo..=hi` (finite, `lo <= hi`), widened to nice tick values. A
    /// degenerate range is padded around its centre. With `from_zero` the range includes zero.
    fn linear(lo: f64, hi: f64, from_zero: bool) -> Self {
        let (mut lo, mut hi) = if from_zero { (lo.min(0.0), hi.max(0.0)) } else { (lo, hi) };
        let magnitude = lo.abs().max(hi.abs());
        let span = hi - lo;
        if !(span > magnitude * 1e-6 && span > 1e-280) {
            let centre = lo / 2.0 + hi / 2.0;
            let pad = if centre.abs() > 1e-250 { centre.abs() * 0.1 } else { 1.0 };
            let all_non_negative = lo >= 0.0;
            lo = centre - pad;
            hi = centre + pad;
            if from_zero && all_non_negative {
                lo = 0.0;
            }
        }
        let (lo, hi, ticks) = linear_ticks(lo, hi);
        Axis { lo, hi, log: false, ticks }
    }

    /// A base-10 logarithmic axis covering `lo..=hi` (positive, finite, `lo <= hi`), widened to
    /// its outer ticks. A degenerate range is padded by half a decade on each side.
    fn log(lo: f64, hi: f64) -> Self {
        let (mut lo, mut hi) = (lo.log10(), hi.log10());
        // Both are finite: the caller passes only drawable values.
        if hi - lo <= 1e-9 {
            lo -= 0.5;
            hi += 0.5;
        }
        let (lo, hi, ticks) = log_ticks(lo, hi);
        Axis { lo, hi, log: true, ticks }
    }

    /// `v` in drawing space, or `None` when it cannot be drawn on this axis.
    fn value(&self, v: f64) -> Option<f64> {
        if !drawable(v, self.log) {
            None
        } else if self.log {
            Some(v.log10())
        } else {
            Some(v)
        }
    }

    /// Where drawing-space value `t` lies along the axis, 0 at `lo` and 1 at `hi`.
    fn frac(&self, t: f64) -> f64 {
        (t - self.lo) / (self.hi - self.lo)
    }
}

/// Nice ticks for a linear axis over `lo..hi` (finite, `lo < hi`): a step of 1, 2 or 5 × 10^k
/// giving between [`TICKS_MIN`] and [`TICKS_MAX`] ticks (as close to 6 as possible), with the
/// range widened to the outer ticks. Returns the widened range and the ticks.
fn linear_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<Tick>) {
    let span = hi - lo;
    let base = span.log10().floor() as i32;
    // (score, step, exponent of the step, first multiple, last multiple)
    let mut best: Option<(usize, f64, i32, i64, i64)> = None;
    for exp in base - 2..=base + 1 {
        for mantissa in [1.0, 2.0, 5.0] {
            let step = mantissa * 10f64.powi(exp);
            if !(step.is_finite() && step > 0.0) {
                continue;
            }
            let first = (lo / step).floor();
            let last = (hi / step).ceil();
            let count = last - first + 1.0;
            if !(count.is_finite() && (2.0..=50.0).contains(&count)) {
                continue;
            }
            let count = count as usize;
            let score =
                if (TICKS_MIN..=TICKS_MAX).contains(&count) { count.abs_diff(6) } else { 100 + count.abs_diff(6) };
            if best.is_none_or(|b| score < b.0) {
                best = Some((score, step, exp, first as i64, last as i64));
            }
        }
    }
    let Some((_, step, step_exp, first, last)) = best else {
        // Unreachable for the ranges `Axis::linear` passes; keep the range and label its ends.
        let ticks = [lo, hi].into_iter().map(|at| Tick { at, label: format_number(at) }).collect();
        return (lo, hi, ticks);
    };
    let values: Vec<f64> = (first..=last).map(|i| i as f64 * step).collect();
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // Ticks are multiples of a one-digit step, so they need the digits from the largest tick's
    // leading digit down to the step's digit, and no more: this drops float noise such as
    // 0.30000000000000004.
    let digits = if largest > 0.0 { largest.log10().floor() as i32 - step_exp + 1 } else { 1 };
    let digits = digits.clamp(1, 15) as usize;
    let ticks = values.iter().map(|&at| Tick { at, label: format_significant(at, digits) }).collect();
    let (lo, hi) = (first as f64 * step, last as f64 * step);
    (lo, hi, ticks)
}

/// Ticks for a log axis over `lo..hi`, given as base-10 exponents (finite, `lo < hi`). Returns
/// the widened range (as exponents) and the ticks, placed at their exponents.
///
/// Over a few decades the ticks are 1, 2 and 5 × 10^k; over more, decades (every n-th decade when
/// there would be more than [`TICKS_MAX`]); within a narrow range, where 1-2-5 values give too
/// few ticks, linear nice ticks placed logarithmically.
fn log_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<Tick>) {
    const EPS: f64 = 1e-9;
    // 1-2-5 values from the largest at or below `lo` to the smallest at or above `hi`.
    // (position, value, tick); the value is parsed from its decimal form, so it is exact.
    let mut candidates: Vec<(f64, f64, Tick)> = Vec::new();
    let (first_decade, last_decade) = (lo.floor() as i64 - 1, hi.ceil() as i64 + 1);
    if last_decade - first_decade <= 8 {
        for decade in first_decade..=last_decade {
            for mantissa in [1u8, 2, 5] {
                let at = decade as f64 + f64::from(mantissa).log10();
                let raw = format!("{mantissa}e{decade}").parse::<f64>().unwrap_or(f64::NAN);
                let label = compose(false, &mantissa.to_string(), decade as i32);
                candidates.push((at, raw, Tick { at, label }));
            }
        }
        let start = candidates.iter().rposition(|c| c.0 <= lo + EPS).unwrap_or(0);
        let end = candidates.iter().position(|c| c.0 >= hi - EPS).unwrap_or(candidates.len().saturating_sub(1));
        let chosen = candidates.get(start..=end.max(start)).unwrap_or_default();
        if let (Some(first), Some(last)) = (chosen.first(), chosen.last())
            && chosen.len() <= TICKS_MAX
        {
            let (a, b, raw_lo, raw_hi) = (first.0, last.0, first.1, last.1);
            let ticks: Vec<Tick> = chosen.iter().map(|c| c.2.clone()).collect();
            if ticks.len() >= TICKS_MIN || a >= b {
                return (a, b, ticks);
            }
            // A narrow range: linear ticks between the 1-2-5 bounds, where those are normal floats.
            if raw_lo.is_normal() && raw_hi.is_normal() && raw_lo < raw_hi {
                let (_, _, linear) = linear_ticks(raw_lo, raw_hi);
                let linear: Vec<Tick> = linear
                    .into_iter()
                    .filter(|t| t.at > 0.0)
                    .map(|t| Tick { at: t.at.log10(), label: t.label })
                    .collect();
                if let (Some(first), Some(last)) = (linear.first(), linear.last())
                    && linear.len() >= TICKS_MIN
                {
                    return (a.min(first.at), b.max(last.at), linear);
                }
            }
            return (a, b, ticks);
        }
    }
    // Decades, every `stride`-th one, from the decade at or below `lo`.
    let (first, last) = ((lo + EPS).floor() as i64, (hi - EPS).ceil() as i64);
    let decades = (last - first).max(1);
    let stride = (decades + TICKS_MAX as i64 - 2) / (TICKS_MAX as i64 - 1);
    let stride = stride.max(1);
    let last = first + stride * ((decades + stride - 1) / stride);
    let ticks = (first..=last)
        .step_by(stride as usize)
        .map(|decade| Tick { at: decade as f64, label: compose(false, "1", decade as i32) })
        .collect();
    (first as f64, last as f64, ticks)
}

/// `v` formatted compactly with up to 4 significant digits: `0.5`, `250`, `1.2k`, `3M`, `1e-7`.
fn format_number(v: f64) -> String {
    format_significant(v, 4)
}

/// `v` rounded to `digits` significant digits and formatted compactly: plain decimals from 1e-4,
/// SI suffixes k, M, G, T from a thousand, scientific notation (`2.5e-7`, `1e15`) beyond those,
/// trailing zeros dropped.
fn format_significant(v: f64, digits: usize) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let digits = digits.clamp(1, 17);
    // Rust's `{:e}` rounds correctly, so the mantissa's digits hold no float noise.
    let sci = format!("{:.*e}", digits - 1, v.abs());
    let Some((mantissa, exponent)) = sci.split_once('e') else { return format!("{v}") };
    let Ok(exponent) = exponent.parse::<i32>() else { return format!("{v}") };
    let mantissa: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    compose(v < 0.0, &mantissa, exponent)
}

/// Formats the number `d1.d2d3… × 10^exponent` whose significant decimal `digits` are given
/// (the first non-zero), negated when `negative`; see [`format_significant`] for the notation.
fn compose(negative: bool, digits: &str, exponent: i32) -> String {
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let sign = if negative { "-" } else { "" };
    if !(-4..15).contains(&exponent) {
        let (lead, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        return format!("{sign}{lead}{point}{rest}e{exponent}");
    }
    let (shift, suffix) = match exponent {
        12.. => (12, "T"),
        9.. => (9, "G"),
        6.. => (6, "M"),
        3.. => (3, "k"),
        _ => (0, ""),
    };
    let e = exponent - shift;
    let body = if e >= 0 {
        let int_len = e as usize + 1;
        if digits.len() <= int_len {
            format!("{digits}{}", "0".repeat(int_len - digits.len()))
        } else {
            let (int, frac) = digits.split_at(int_len);
            format!("{int}.{frac}")
        }
    } else {
        format!("0.{}{digits}", "0".repeat((-e - 1) as usize))
    };
    format!("{sign}{body}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `doc` is well-formed XML as far as this module writes it: an optional
    /// declaration, comments, elements with double-quoted attributes, text; balanced tags, one
    /// root, no raw `<` or stray `&` in text or attribute values, no duplicate attributes.
    fn check_well_formed(doc: &str) -> Result<(), String> {
        fn check_text(text: &str) -> Result<(), String> {
            if text.contains('<') {
                return Err(format!("raw '<' in {text:?}"));
            }
            let mut rest = text;
            while let Some(i) = rest.find('&') {
                rest = &rest[i + 1..];
                let end = rest.find(';').ok_or_else(|| format!("unterminated entity in {text:?}"))?;
                let entity = &rest[..end];
                let numeric =
                    entity.strip_prefix('#').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !numeric && !["amp", "lt", "gt", "quot", "apos"].contains(&entity) {
                    return Err(format!("bad entity &{entity}; in {text:?}"));
                }
                rest = &rest[end + 1..];
            }
            Ok(())
        }
        fn is_name(name: &str) -> bool {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
                && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        }
        fn check_attributes(mut attrs: &str) -> Result<(), String> {
            let mut seen = Vec::new();
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    return Ok(());
                }
                let eq = attrs.find('=').ok_or_else(|| format!("attribute without value: {attrs:?}"))?;
                let name = &attrs[..eq];
                if !is_name(name) || seen.contains(&name) {
                    return Err(format!("bad or duplicate attribute name {name:?}"));
                }
                seen.push(name);
                let value = attrs[eq + 1..].strip_prefix('"').ok_or_else(|| format!("unquoted value of {name}"))?;
                let close = value.find('"').ok_or_else(|| format!("unterminated value of {name}"))?;
                check_text(&value[..close])?;
                attrs = &value[close + 1..];
                if !(attrs.is_empty() || attrs.starts_with(char::is_whitespace)) {
                    return Err(format!("no space after attribute {name}"));
                }
            }
        }

        let mut rest = doc;
        if let Some(after) = rest.strip_prefix("<?xml") {
            let end = after.find("?>").ok_or("unterminated declaration")?;
            rest = &after[end + 2..];
        }
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        loop {
            let next = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..next];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            check_text(text)?;
            rest = &rest[next..];
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix("<!--") {
                let end = after.find("-->").ok_or("unterminated comment")?;
                rest = &after[end + 3..];
            } else if let Some(after) = rest.strip_prefix("</") {
                let end = after.find('>').ok_or("unterminated end tag")?;
                let name = after[..end].trim_end();
                match stack.pop() {
                    Some(open) if open == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
                rest = &after[end + 1..];
            } else {
                let after = &rest[1..];
                let end = after.find('>').ok_or("unterminated start tag")?;
                let (body, self_closing) = match after[..end].strip_suffix('/') {
                    Some(body) => (body, true),
                    None => (&after[..end], false),
                };
                let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
                let name = &body[..name_end];
                if !is_name(name) {
                    return Err(format!("bad element name {name:?}"));
                }
                check_attributes(&body[name_end..])?;
                if stack.is_empty() {
                    roots += 1;
                }
                if !self_closing {
                    stack.push(name);
                }
                rest = &after[end + 1..];
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    fn labels(ticks: &[Tick]) -> Vec<&str> {
        ticks.iter().map(|t| t.label.as_str()).collect()
    }

    fn series(label: &str, points: Vec<(f64, f64)>, group: usize, dash: usize) -> Series {
        Series { label: label.to_owned(), points, group, dash }
    }

    fn panel(series: Vec<Series>) -> Panel {
        Panel { title: "Latency".into(), x_label: "time (s)".into(), y_label: "ms".into(), series, ..Panel::default() }
    }

    /// Asserts the invariants every rendered document must hold.
    fn assert_sane(doc: &str) {
        check_well_formed(doc).unwrap_or_else(|e| panic!("not well-formed: {e}\n{doc}"));
        assert!(doc.starts_with("<?xml"));
        assert!(doc.contains(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        for bad in ["NaN", "inf"] {
            assert!(!doc.contains(bad), "output contains {bad:?}:\n{doc}");
        }
        // No number in an attribute (coordinates, sizes) written with more than one decimal.
        for value in doc.split("=\"").skip(1).filter_map(|rest| rest.split('"').next()) {
            for number in value.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                let decimals = number.split_once('.').map_or(0, |(_, frac)| frac.len());
                assert!(decimals <= 1, "{number:?} in attribute value {value:?}");
            }
        }
    }

    fn count(doc: &str, needle: &str) -> usize {
        doc.matches(needle).count()
    }

    fn attribute<'a>(doc: &'a str, element: &str, name: &str) -> Option<&'a str> {
        let start = doc.find(&format!("<{element} "))?;
        let tag = &doc[start..start + doc[start..].find('>')?];
        let value = &tag[tag.find(&format!(" {name}=\""))? + name.len() + 3..];
        Some(&value[..value.find('"')?])
    }

    #[test]
    fn linear_ticks_on_simple_ranges() {
        let (lo, hi, ticks) = linear_ticks(0.0, 1.0);
        assert_eq!(labels(&ticks), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!((lo, hi), (0.0, 1.0));

        let (lo, hi, ticks) = linear_ticks(0.0, 97.0);
        assert_eq!(labels(&ticks), ["0", "20", "40", "60", "80", "100"]);
        assert_eq!((lo, hi), (0.0, 100.0));

        let (_, _, ticks) = linear_ticks(-3.0, 7.5);
        assert_eq!(labels(&ticks), ["-4", "-2", "0", "2", "4", "6", "8"]);

        let (_, _, ticks) = linear_ticks(0.1, 0.7);
        assert_eq!(labels(&ticks), ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]);

        let (_, _, ticks) = linear_ticks(1000.0, 3500.0);
        assert_eq!(labels(&ticks), ["1k", "1.5k", "2k", "2.5k", "3k", "3.5k"]);
    }

    #[test]
    fn linear_ticks_are_nice_on_many_ranges() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..5000 {
            let scale = 10f64.powf(next() * 24.0 - 12.0);
            let a = (next() - 0.3) * scale;
            let b = a + next().max(1e-3) * scale;
            let axis = Axis::linear(a, b, false);
            let n = axis.ticks.len();
            assert!((TICKS_MIN..=TICKS_MAX).contains(&n), "{n} ticks for {a}..{b}");
            assert!(axis.lo <= a && axis.hi >= b, "range {}..{} misses {a}..{b}", axis.lo, axis.hi);
            let step = axis.ticks[1].at - axis.ticks[0].at;
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!([1.0, 2.0, 5.0, 10.0].iter().any(|m| (mantissa - m).abs() < 1e-6), "step {step} for {a}..{b}");
            let mut seen = labels(&axis.ticks);
            assert!(seen.iter().all(|l| l.len() <= 9), "long label in {seen:?} for {a}..{b}");
            seen.dedup();
            assert_eq!(seen.len(), n, "repeated label for {a}..{b}");
        }
    }

    #[test]
    fn degenerate_linear_ranges_are_padded() {
        for v in [0.0, 5.0, -5.0, 1e-300, 1e300, 123_456.789] {
            let axis = Axis::linear(v, v, false);
            assert!(axis.lo < v && v < axis.hi, "{v} not inside {}..{}", axis.lo, axis.hi);
            assert!((TICKS_MIN..=TICKS_MAX).contains(&axis.ticks.len()), "{v}: {:?}", axis.ticks);
        }
        let axis = Axis::linear(0.0, 0.0, true);
        assert_eq!(axis.lo, 0.0);
        assert!(axis.hi > 0.0);
        let axis = Axis::linear(3.0, 8.0, true);
        assert_eq!(axis.lo, 0.0);
    }

    #[test]
    fn log_ticks_by_span() {
        let axis = Axis::log(1.0, 10.0);
        assert_eq!(labels(&axis.ticks), ["1", "2", "5", "10"]);

        let axis = Axis::log(3.0, 40.0);
        assert_eq!(labels(&axis.ticks), ["2", "5", "10", "20", "50"]);

        let axis = Axis::log(1.0, 1000.0);
        assert_eq!(labels(&axis.ticks), ["1", "10", "100", "1k"]);
        assert_eq!((axis.lo, axis.hi), (0.0, 3.0));

        let axis = Axis::log(0.01, 1e6);
        assert_eq!(labels(&axis.ticks), ["0.01", "1", "100", "10k", "1M"]);

        // Within one 1-2-5 step: linear ticks, placed logarithmically.
        let axis = Axis::log(100.0, 150.0);
        assert_eq!(labels(&axis.ticks), ["100", "120", "140", "160", "180", "200"]);
        assert!((axis.ticks[0].at - 2.0).abs() < 1e-12);
    }

    #[test]
    fn log_ticks_stay_within_bounds_on_extreme_ranges() {
        for (lo, hi) in [(1e-300, 1e300), (5e-324, 1e-300), (5e-324, 5e-324), (1e300, 1e300), (1.0, 1.0), (0.5, 0.5)] {
            let axis = Axis::log(lo, hi);
            let n = axis.ticks.len();
            assert!((2..=TICKS_MAX).contains(&n), "{n} ticks for {lo}..{hi}: {:?}", axis.ticks);
            assert!(axis.lo < axis.hi && axis.lo <= lo.log10() && axis.hi >= hi.log10(), "{lo}..{hi}: {axis:?}");
            assert!(axis.ticks.windows(2).all(|w| w[0].at < w[1].at));
        }
        assert_eq!(labels(&Axis::log(1e-300, 1e300).ticks)[0], "1e-300");
    }

    #[test]
    fn numbers_format_compactly() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (1.0, "1"),
            (250.0, "250"),
            (1200.0, "1.2k"),
            (-2500.0, "-2.5k"),
            (3e6, "3M"),
            (4.5e9, "4.5G"),
            (7e12, "7T"),
            (2.5e18, "2.5e18"),
            (1e15, "1e15"),
            (0.0001, "0.0001"),
            (1e-7, "1e-7"),
            (0.1 + 0.2, "0.3"),
            (999_999.9, "1M"),
            (1234.5678, "1.235k"),
            (12.0, "12"),
            (0.047, "0.047"),
        ];
        for (v, want) in cases {
            assert_eq!(format_number(v), want, "formatting {v}");
        }
        assert_eq!(format_significant(1_000_000.2, 8), "1.0000002M");
        assert_eq!(format_significant(0.6000000000000001, 2), "0.6");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(compose(false, "5", -2), "0.05");
        assert_eq!(compose(true, "1", 4), "-10k");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape(r#"a<b & "c" 'd' > e"#), "a&lt;b &amp; &quot;c&quot; &apos;d&apos; &gt; e");
        assert_eq!(escape("bell\u{7}\u{FFFF}tab\t"), "bell\u{FFFD}\u{FFFD}tab\t");
        assert_eq!(escape("tier→p99 µs"), "tier→p99 µs");
        let doc = render("<&>", &[Panel { title: "\"q\" & 'a'".into(), ..panel(Vec::new()) }]);
        assert_sane(&doc);
        assert!(doc.contains("&lt;&amp;&gt;"));
        assert!(doc.contains("&quot;q&quot; &amp; &apos;a&apos;"));
    }

    #[test]
    fn well_formedness_check_rejects_broken_documents() {
        assert!(check_well_formed(r#"<a x="1"><b/>t</a>"#).is_ok());
        for bad in [
            "<a><b></a></b>",
            "<a>",
            "<a/><b/>",
            "<a>x < y</a>",
            "<a>fish & chips</a>",
            r#"<a x="1" x="2"/>"#,
            "<a x=1/>",
            r#"<a x="<"/>"#,
            "text<a/>",
        ] {
            assert!(check_well_formed(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn no_panels_renders_just_the_title() {
        let doc = render("Load report", &[]);
        assert_sane(&doc);
        assert!(doc.contains(">Load report</text>"));
        assert!(!doc.contains("<path") && !doc.contains("<line"));
        assert_eq!(attribute(&doc, "svg", "height"), Some("50"));
    }

    #[test]
    fn empty_panel_shows_axes_and_no_data() {
        for log_y in [false, true] {
            let doc = render("t", &[Panel { log_y, ..panel(Vec::new()) }]);
            assert_sane(&doc);
            assert!(doc.contains(">no data</text>"));
            assert!(!doc.contains("<path"));
            assert!(count(&doc, "<text") >= 4 + 4 + 3, "ticks, title and labels expected:\n{doc}");
        }
        // A series without points counts as no data but keeps its legend entry.
        let doc = render("t", &[panel(vec![series("p50", Vec::new(), 0, 0)])]);
        assert_sane(&doc);
        assert!(doc.contains(">no data</text>") && doc.contains(">p50</text>"));
    }

    #[test]
    fn unusable_values_never_panic() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let junk = vec![(nan, 1.0), (1.0, nan), (inf, 2.0), (3.0, -inf), (nan, nan)];
        for log_y in [false, true] {
            let doc = render("nan", &[Panel { log_y, ..panel(vec![series("junk", junk.clone(), 0, 0)]) }]);
            assert_sane(&doc);
            assert!(doc.contains(">no data</text>"));
            assert!(!doc.contains("<path"));
        }
        // Non-positive values on a log axis are skipped, the rest drawn.
        let points = vec![(0.0, -1.0), (1.0, 0.0), (2.0, 10.0), (3.0, 100.0)];
        let doc = render("log", &[Panel { log_y: true, ..panel(vec![series("s", points, 0, 0)]) }]);
        assert_sane(&doc);
        assert_eq!(count(&doc, "<path"), 1);
        assert!(!doc.contains("no data"));

        let extremes = vec![(0.0, 1e308), (1.0, -1e308), (2.0, 5e-324), (1e300, 1.0), (-1e300, f64::MIN_POSITIVE)];
        for log_y in [false, true] {
            for y_from_zero in [false, true] {
                let p = Panel {
                    log_y,
                    y_from_zero,
                    hlines: vec![(nan, "nan".into()), (1e299, "big".into())],
                    ..panel(vec![series("x", extremes.clone(), 3, 2)])
                };
                assert_sane(&render("extremes", &[p]));
            }
        }
    }

    #[test]
    fn random_inputs_render_sanely() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        /// A special value, a value of random magnitude and sign, or a small whole number.
        fn value(next: &mut dyn FnMut() -> u64) -> f64 {
            const SPECIALS: [f64; 11] =
                [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 5e-324, 1e-300, 1e300, -1e300, f64::MAX, 1.0];
            let r = next();
            match r % 4 {
                0 => SPECIALS[(r >> 8) as usize % SPECIALS.len()],
                1 => ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 10f64.powi((r >> 3) as i32 % 40 - 20),
                _ => ((r >> 11) % 1000) as f64,
            }
        }
        for round in 0..300 {
            let panels: Vec<Panel> = (0..next() % 3)
                .map(|p| {
                    let series = (0..next() % 5)
                        .map(|i| {
                            let points = (0..next() % 12).map(|_| (value(&mut next), value(&mut next))).collect();
                            series(&format!("s{round}.{p}.{i}"), points, next() as usize, next() as usize)
                        })
                        .collect();
                    let hlines = (0..next() % 3).map(|_| (value(&mut next), "h".to_owned())).collect();
                    Panel { log_y: next() % 2 == 0, y_from_zero: next() % 2 == 0, hlines, ..panel(series) }
                })
                .collect();
            let doc = render("random", &panels);
            assert_sane(&doc);
            let drawn = panels.iter().flat_map(|p| {
                p.series.iter().filter(|s| s.points.iter().any(|&(x, y)| drawable(x, false) && drawable(y, p.log_y)))
            });
            assert_eq!(count(&doc, "<path"), drawn.count());
        }
    }

    #[test]
    fn multi_series_render() {
        let tiers = ["interactive", "batch"];
        let mut all = Vec::new();
        for (group, tier) in tiers.iter().enumerate() {
            for (dash, pct) in ["p50", "p95", "p99"].iter().enumerate() {
                let points = (0..60)
                    .map(|t| (t as f64, (group + 1) as f64 * (dash + 1) as f64 * 10.0 + (t % 7) as f64))
                    .collect();
                all.push(series(&format!("{tier} {pct}"), points, group, dash));
            }
        }
        all.push(series("empty <tier>", Vec::new(), 2, 0));
        all.push(series("only nan", vec![(f64::NAN, 1.0)], 3, 1));
        let p = Panel { hlines: vec![(250.0, "SLO 250 ms".into())], y_from_zero: true, ..panel(all) };
        let doc = render("Percentiles", &[p.clone(), Panel { log_y: true, ..p }]);
        assert_sane(&doc);
        assert_eq!(count(&doc, "<path"), 2 * 6, "one path per non-empty series");
        for label in ["interactive p50", "batch p99", "empty &lt;tier&gt;", "only nan", "SLO 250 ms"] {
            assert_eq!(count(&doc, &format!(">{label}</text>")), 2, "{label}");
        }
        assert!(doc.contains(r#"stroke-dasharray="8 4""#) && doc.contains(r#"stroke-dasharray="2 3""#));
        assert!(doc.contains(PALETTE[0]) && doc.contains(PALETTE[1]));
        assert_eq!(attribute(&doc, "svg", "height"), Some("770"));
        assert_eq!(attribute(&doc, "svg", "viewBox"), Some("0 0 900 770"));
        // SLO line included in the y range: its tick at or above 250 exists.
        assert!(doc.contains(">250</text>") || doc.contains(">300</text>"));
    }

    #[test]
    fn gaps_break_lines_and_lone_points_get_markers() {
        let points =
            vec![(0.0, 1.0), (1.0, 2.0), (f64::NAN, 0.0), (2.0, 3.0), (3.0, 4.0), (f64::INFINITY, 0.0), (4.0, 2.0)];
        let doc = render("gaps", &[panel(vec![series("s", points, 0, 0)])]);
        assert_sane(&doc);
        let d = attribute(&doc, "path", "d").unwrap_or_default();
        assert_eq!(d.matches('M').count(), 3, "{d}");
        assert_eq!(count(&doc, "<circle"), 1);

        // A single point: degenerate ranges on both axes, still drawn.
        let doc = render("one", &[panel(vec![series("s", vec![(5.0, 42.0)], 1, 0)])]);
        assert_sane(&doc);
        assert_eq!(count(&doc, "<circle"), 1);
        assert!(!doc.contains("no data"));
    }

    #[test]
    fn long_legends_are_cut() {
        let many: Vec<Series> = (0..40)
            .map(|i| {
                series(
                    &format!("series number {i} with a long name"),
                    vec![(0.0, i as f64), (1.0, i as f64 + 1.0)],
                    i,
                    i,
                )
            })
            .collect();
        let doc = render("many", &[panel(many)]);
        assert_sane(&doc);
        assert_eq!(count(&doc, "<path"), 40);
        assert!(doc.contains("more</text>"));
        assert!(doc.contains(">series number 0 wit…</text>"));
    }

    #[test]
    fn pixels_are_written_compactly() {
        let shown: Vec<String> =
            [0.0, 12.34, -0.04, -3.25, 899.96, f64::NAN].iter().map(|&v| Px(v).to_string()).collect();
        assert_eq!(shown, ["0", "12.3", "0", "-3.3", "900", "0"]);
    }
}
