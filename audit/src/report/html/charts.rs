//! Inline SVG charts, hand-written: a horizontal bar chart (denials by edge,
//! external traffic by destination) and a stacked column chart over time
//! (decisions per bucket). Each `<svg>` has `role="img"`, a `<title>` and a
//! `<desc>` for screen readers, an axis with labelled ticks, and its values as
//! text; every bar carries a `<title>` with its exact figures (a tooltip on
//! screen). Sizes are in a fixed `viewBox` and the CSS scales the chart to the
//! page, so it fits an A4 page when printed.

use std::fmt::{self, Write};

use super::Esc;
use crate::report::model::Timeline;
use crate::report::text::{clock, Count};

/// The width of every chart's `viewBox`.
const WIDTH: u64 = 760;
const TITLE_Y: u64 = 22;
const LEGEND_Y: u64 = 44;
const TOP: u64 = 62;

/// A colour and what it means.
#[derive(Debug, Clone, Copy)]
pub(super) struct Series {
    pub(super) name: &'static str,
    pub(super) color: &'static str,
}

/// One bar of a horizontal bar chart: a label and one value per series.
#[derive(Debug)]
pub(super) struct Bar {
    pub(super) label: String,
    pub(super) values: Vec<(Series, u64)>,
}

/// What every chart has: an id for its title, a title, a one-sentence summary.
#[derive(Debug)]
pub(super) struct Heading<'a> {
    pub(super) id: &'a str,
    pub(super) title: &'a str,
    pub(super) summary: String,
}

/// Horizontal bars, one per row, the label above its bar and the value after it.
pub(super) fn horizontal_bars(
    out: &mut String,
    heading: &Heading<'_>,
    x_label: &str,
    y_label: &str,
    legend: &[Series],
    bars: &[Bar],
) -> fmt::Result {
    const ROW: u64 = 38;
    const LEFT: u64 = 34;
    const PLOT: u64 = 640;
    let max = bars
        .iter()
        .map(|bar| bar.values.iter().map(|(_, n)| n).sum::<u64>())
        .max()
        .unwrap_or(0);
    let (axis_max, step) = nice_axis(max);
    let rows = u64::try_from(bars.len()).unwrap_or(0).max(1);
    let axis_y = TOP + rows * ROW + 6;
    let height = axis_y + 44;
    open(out, heading, height)?;
    legend_row(out, legend)?;
    let scale = |n: u64| scaled(n, axis_max, PLOT);
    let mid = TOP + rows * ROW / 2;
    writeln!(
        out,
        r#"<text class="axis-label" x="12" y="{mid}" transform="rotate(-90 12 {mid})" text-anchor="middle">{}</text>"#,
        Esc(y_label)
    )?;
    for tick in (0..=axis_max).step_by(usize::try_from(step).unwrap_or(1).max(1)) {
        let x = LEFT + scale(tick);
        writeln!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{axis_y}" stroke="#e4e9f0"/>"##
        )?;
        let y = axis_y + 16;
        writeln!(
            out,
            r#"<text class="tick" x="{x}" y="{y}" text-anchor="middle">{}</text>"#,
            Count(tick)
        )?;
    }
    if bars.is_empty() {
        let y = TOP + ROW / 2 + 4;
        writeln!(
            out,
            r#"<text class="empty" x="{}" y="{y}">Nothing in this window.</text>"#,
            LEFT + 8
        )?;
    }
    for (bar, row) in bars.iter().zip(0_u64..) {
        let top = TOP + row * ROW;
        writeln!(
            out,
            r#"<text class="bar-label" x="{LEFT}" y="{}">{}</text>"#,
            top + 12,
            Esc(&bar.label)
        )?;
        let mut x = LEFT;
        for (series, value) in &bar.values {
            let width = scale(*value);
            if width > 0 {
                writeln!(
                    out,
                    r#"<rect x="{x}" y="{}" width="{width}" height="14" fill="{}"><title>{}: {} {}</title></rect>"#,
                    top + 17,
                    series.color,
                    Esc(&bar.label),
                    Count(*value),
                    series.name
                )?;
            }
            x += width;
        }
        let total: u64 = bar.values.iter().map(|(_, n)| n).sum();
        writeln!(
            out,
            r#"<text class="value" x="{}" y="{}">{}</text>"#,
            x + 6,
            top + 29,
            Count(total)
        )?;
    }
    writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#9aa5b1"/>"##,
        LEFT + PLOT
    )?;
    let label_x = LEFT + PLOT / 2;
    let label_y = axis_y + 36;
    writeln!(
        out,
        r#"<text class="axis-label" x="{label_x}" y="{label_y}" text-anchor="middle">{}</text>"#,
        Esc(x_label)
    )?;
    out.write_str("</svg>\n")
}

/// Stacked columns per time bucket: allow at the bottom, then dry-run deny, then
/// deny on top.
pub(super) fn timeline(
    out: &mut String,
    heading: &Heading<'_>,
    series: [Series; 3],
    timeline: &Timeline,
) -> fmt::Result {
    const LEFT: u64 = 64;
    const PLOT_W: u64 = 676;
    const PLOT_H: u64 = 190;
    let columns = |bucket: &crate::report::model::TimeBucket| [bucket.allow, bucket.dry_run_deny, bucket.deny];
    let max = timeline
        .buckets
        .iter()
        .map(|b| columns(b).iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let (axis_max, step) = nice_axis(max);
    let base = TOP + PLOT_H;
    let [Series { color: allow_color, .. }, Series { color: dry_color, .. }, Series { color: deny_color, .. }] = series;
    open(out, heading, base + 56)?;
    legend_row(out, &series)?;
    let mid = TOP + PLOT_H / 2;
    writeln!(
        out,
        r#"<text class="axis-label" x="14" y="{mid}" transform="rotate(-90 14 {mid})" text-anchor="middle">decisions</text>"#
    )?;
    for tick in (0..=axis_max).step_by(usize::try_from(step).unwrap_or(1).max(1)) {
        let y = base - scaled(tick, axis_max, PLOT_H);
        writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#e4e9f0"/>"##,
            LEFT + PLOT_W
        )?;
        writeln!(
            out,
            r#"<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6,
            y + 4,
            Count(tick)
        )?;
    }
    let n = u64::try_from(timeline.buckets.len()).unwrap_or(0).max(1);
    let slot = PLOT_W as f64 / n as f64;
    let bar_w = slot * 0.7;
    let label_every = n.div_ceil(8).max(1);
    let span_days = timeline
        .bucket_micros
        .saturating_mul(i64::try_from(n).unwrap_or(i64::MAX))
        > 86_400_000_000;
    for (bucket, i) in timeline.buckets.iter().zip(0_u64..) {
        let x = LEFT as f64 + i as f64 * slot + (slot - bar_w) / 2.0;
        let (x, bar_w) = (format!("{x:.1}"), format!("{bar_w:.1}"));
        let mut top = base;
        let [allow, dry, deny] = columns(bucket);
        let tip = format!(
            "{} (UTC): {} allow, {} deny, {} dry-run deny",
            bucket.start,
            Count(allow),
            Count(deny),
            Count(dry)
        );
        for (value, color) in [(allow, allow_color), (dry, dry_color), (deny, deny_color)] {
            let h = scaled(value, axis_max, PLOT_H);
            if h > 0 {
                top -= h;
                writeln!(
                    out,
                    r#"<rect x="{x}" y="{top}" width="{bar_w}" height="{h}" fill="{color}"><title>{tip}</title></rect>"#
                )?;
            }
        }
        if i % label_every == 0 {
            let label = clock(bucket.start.0, span_days);
            let cx = format!("{:.1}", LEFT as f64 + (i as f64 + 0.5) * slot);
            writeln!(
                out,
                r##"<line x1="{cx}" y1="{base}" x2="{cx}" y2="{}" stroke="#9aa5b1"/>"##,
                base + 4
            )?;
            writeln!(
                out,
                r#"<text class="tick" x="{cx}" y="{}" text-anchor="middle">{label}</text>"#,
                base + 18
            )?;
        }
    }
    if timeline.buckets.iter().all(|b| columns(b).iter().all(|n| *n == 0)) {
        let y = TOP + PLOT_H / 2;
        writeln!(
            out,
            r#"<text class="empty" x="{}" y="{y}" text-anchor="middle">No decisions in this window.</text>"#,
            LEFT + PLOT_W / 2
        )?;
    }
    writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="#9aa5b1"/>"##,
        LEFT + PLOT_W
    )?;
    let label_x = LEFT + PLOT_W / 2;
    writeln!(
        out,
        r#"<text class="axis-label" x="{label_x}" y="{}" text-anchor="middle">time (UTC)</text>"#,
        base + 44
    )?;
    out.write_str("</svg>\n")
}

/// `<svg …>` with its title and description, and the chart's title as text.
fn open(out: &mut String, heading: &Heading<'_>, height: u64) -> fmt::Result {
    let id = heading.id;
    writeln!(
        out,
        r#"<svg class="chart" role="img" aria-labelledby="{id}-title {id}-desc" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}">"#
    )?;
    writeln!(out, r#"<title id="{id}-title">{}</title>"#, Esc(heading.title))?;
    writeln!(out, r#"<desc id="{id}-desc">{}</desc>"#, Esc(&heading.summary))?;
    writeln!(
        out,
        r#"<text class="chart-title" x="0" y="{TITLE_Y}">{}</text>"#,
        Esc(heading.title)
    )
}

/// Colour swatches and their names, in one row under the title.
fn legend_row(out: &mut String, legend: &[Series]) -> fmt::Result {
    let mut x = 0;
    for series in legend {
        writeln!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" rx="2" fill="{}"/>"#,
            LEGEND_Y - 10,
            series.color
        )?;
        writeln!(
            out,
            r#"<text class="legend" x="{}" y="{LEGEND_Y}">{}</text>"#,
            x + 18,
            Esc(series.name)
        )?;
        x += 30 + 7 * u64::try_from(series.name.chars().count()).unwrap_or(0);
    }
    Ok(())
}

/// `value / max × length`, rounded; 0 when `max` is 0.
fn scaled(value: u64, max: u64, length: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let scaled = (u128::from(value) * u128::from(length) + u128::from(max) / 2) / u128::from(max);
    u64::try_from(scaled).unwrap_or(length).min(length)
}

/// A round axis maximum at or above `max`, and a round step that cuts it into at
/// most 5 intervals: steps are 1, 2 or 5 times a power of ten.
fn nice_axis(max: u64) -> (u64, u64) {
    let mut magnitude: u64 = 1;
    loop {
        for factor in [1, 2, 5] {
            let step = magnitude.saturating_mul(factor);
            if step.saturating_mul(5) >= max || step == u64::MAX {
                return (max.div_ceil(step).max(1).saturating_mul(step), step);
            }
        }
        if magnitude > u64::MAX / 10 {
            return (max, max.max(1));
        }
        magnitude *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(nice_axis(0), (1, 1));
        assert_eq!(nice_axis(4), (4, 1));
        assert_eq!(nice_axis(7), (8, 2));
        assert_eq!(nice_axis(23), (25, 5));
        assert_eq!(nice_axis(1_234), (1_500, 500));
        assert_eq!(nice_axis(u64::MAX).0, u64::MAX);
    }

    #[test]
    fn bars_scale_to_the_plot() {
        assert_eq!(scaled(5, 10, 640), 320);
        assert_eq!(scaled(10, 10, 640), 640);
        assert_eq!(scaled(1, 0, 640), 0);
        assert_eq!(scaled(u64::MAX, u64::MAX, 640), 640);
    }
}
