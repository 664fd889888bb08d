//! The SVG chart: four small panels, one per cost, connections on a log scale across.
//!
//! Hand-made SVG, so the chart needs nothing but this crate: lines and markers per target,
//! a legend, and a cross where a target stopped short of a level, with the reason below.

use std::fmt::Write as _;

use crate::record::Row;

const WIDTH: f64 = 1000.0;
const PANEL_W: f64 = 400.0;
const PANEL_H: f64 = 210.0;
const LEFT: [f64; 2] = [80.0, 580.0];
const TOP: [f64; 2] = [110.0, 400.0];

/// How a target is drawn: colour, marker, and whether its line is dashed (the programs
/// that are not ours).
fn style(target: &str) -> (&'static str, &'static str, bool) {
    match target {
        "process" => ("#c0392b", "circle", false),
        "thread" => ("#d68910", "square", false),
        "event" => ("#1f618d", "diamond", false),
        "node" => ("#1e8449", "triangle", true),
        "nginx" => ("#6c3483", "ring", true),
        _ => ("#555555", "circle", true),
    }
}

/// What a panel shows of a row.
type Value = fn(&Row) -> f64;

struct Panel {
    title: &'static str,
    log: bool,
    value: Value,
    /// A second value drawn dotted, for targets where it differs from the first by more
    /// than twice at the most connections: the PSS beside the RSS, for forked processes
    /// that share most of their pages.
    second: Option<(&'static str, Value)>,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "Requests per second (all connections busy)",
        log: false,
        value: |r| r.rps,
        second: None,
    },
    Panel {
        title: "Memory: RSS summed over its processes, MiB",
        log: true,
        value: |r| r.rss_mib,
        second: Some(("PSS", |r| r.pss_mib)),
    },
    Panel {
        title: "Context switches per request answered",
        log: true,
        value: |r| r.switches_per_request,
        second: None,
    },
    Panel {
        title: "A new client's wait for its first answer, ms",
        log: true,
        value: |r| r.fresh_ms,
        second: None,
    },
];

/// The chart for `rows`, as SVG text.
pub fn draw(rows: &[Row]) -> String {
    let mut targets: Vec<&str> = Vec::new();
    for row in rows {
        if !targets.contains(&row.target.as_str()) {
            targets.push(&row.target);
        }
    }
    let mut levels: Vec<usize> = rows.iter().map(|r| r.level).collect();
    levels.sort_unstable();
    levels.dedup();
    let stopped: Vec<&Row> = rows.iter().filter(|r| !r.ok()).collect();
    let legend_rows = targets.len().div_ceil(3) as f64;
    let height = TOP[1] + PANEL_H + 60.0 + 26.0 * legend_rows + 18.0 * stopped.len() as f64;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" font-family="DejaVu Sans, Verdana, Helvetica, Arial, sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    let (machine, date) = rows
        .first()
        .map_or(("", ""), |r| (r.machine.as_str(), r.date.as_str()));
    text(
        &mut svg,
        WIDTH / 2.0,
        32.0,
        20,
        "middle",
        "#222",
        "How each server model's cost grows with its connections",
    );
    text(
        &mut svg,
        WIDTH / 2.0,
        56.0,
        13,
        "middle",
        "#555",
        &format!("{machine}, {date}. Every point: a fresh server, all connections kept alive and busy (loadgen -k)."),
    );
    for (i, panel) in PANELS.iter().enumerate() {
        let (x, y) = (LEFT[i % 2], TOP[i / 2]);
        draw_panel(&mut svg, panel, x, y, rows, &targets, &levels);
    }
    // The legend, under the panels.
    let legend_y = TOP[1] + PANEL_H + 62.0;
    // Three to a row: room for the longest label ("process per connection"), centred.
    let step = 270.0;
    for (i, target) in targets.iter().enumerate() {
        let in_row = (targets.len() - i / 3 * 3).min(3) as f64;
        let x = (WIDTH - step * in_row) / 2.0 + 30.0 + step * (i % 3) as f64;
        let legend_y = legend_y + 26.0 * (i / 3) as f64;
        let (colour, marker, dashed) = style(target);
        line(
            &mut svg,
            x - 18.0,
            legend_y,
            x + 18.0,
            legend_y,
            colour,
            dashed,
        );
        draw_marker(&mut svg, marker, x, legend_y, colour);
        text(
            &mut svg,
            x + 26.0,
            legend_y + 4.5,
            14,
            "start",
            "#222",
            &label(target),
        );
    }
    // Why a target stopped where it did.
    let below = legend_y + 26.0 * legend_rows + 8.0;
    for (i, row) in stopped.iter().enumerate() {
        let y = below + 18.0 * i as f64;
        let (colour, _, _) = style(&row.target);
        text(
            &mut svg,
            80.0,
            y,
            13,
            "start",
            colour,
            &format!(
                "× {} at {}: {}",
                label(&row.target),
                thousands(row.level as f64),
                row.note
            ),
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// How a target is named in the legend.
fn label(target: &str) -> String {
    match target {
        "process" => "process per connection".into(),
        "thread" => "thread per connection".into(),
        "event" => "event loop (ours)".into(),
        "node" => "Node.js".into(),
        "nginx" => "nginx, 1 worker".into(),
        other => other.into(),
    }
}

fn draw_panel(
    svg: &mut String,
    panel: &Panel,
    left: f64,
    top: f64,
    rows: &[Row],
    targets: &[&str],
    levels: &[usize],
) {
    let mut values: Vec<f64> = rows.iter().filter(|r| r.ok()).map(panel.value).collect();
    if let Some((_, second)) = panel.second {
        values.extend(rows.iter().filter(|r| r.ok()).map(second));
    }
    let axis = Axis::new(&values, panel.log);
    let x_of = |level: usize| -> f64 {
        let (lo, hi) = (
            (*levels.first().unwrap_or(&1) as f64).log10(),
            (*levels.last().unwrap_or(&10) as f64).log10(),
        );
        let span = (hi - lo).max(1e-9);
        left + 20.0 + (PANEL_W - 40.0) * ((level as f64).log10() - lo) / span
    };
    let y_of = |v: f64| top + PANEL_H - PANEL_H * axis.fraction(v);
    text(svg, left, top - 14.0, 14, "start", "#222", panel.title);
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="#fbfbfb" stroke="#999"/>"##
    );
    for tick in axis.ticks() {
        let y = y_of(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e3e3e3"/>"##,
            left + PANEL_W
        );
        text(svg, left - 6.0, y + 4.5, 12, "end", "#444", &short(tick));
    }
    for &level in levels {
        let x = x_of(level);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#e3e3e3"/>"##,
            top + PANEL_H
        );
        text(
            svg,
            x,
            top + PANEL_H + 17.0,
            12,
            "middle",
            "#444",
            &thousands(level as f64),
        );
    }
    text(
        svg,
        left + PANEL_W / 2.0,
        top + PANEL_H + 34.0,
        12,
        "middle",
        "#666",
        "connections open at once",
    );
    for target in targets {
        let (colour, marker, dashed) = style(target);
        let mine: Vec<&Row> = rows.iter().filter(|r| r.target == *target).collect();
        let points: Vec<(f64, f64)> = mine
            .iter()
            .filter(|r| r.ok())
            .map(|r| (x_of(r.level), y_of((panel.value)(r))))
            .collect();
        if points.len() > 1 {
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let dash = if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
        }
        for &(x, y) in &points {
            draw_marker(svg, marker, x, y, colour);
        }
        if let Some((name, second)) = panel.second {
            let ok: Vec<&&Row> = mine.iter().filter(|r| r.ok()).collect();
            // Judged where it matters most, at the most connections.
            let apart = ok
                .last()
                .is_some_and(|r| (panel.value)(r) > 2.0 * second(r).max(f64::MIN_POSITIVE));
            if apart && ok.len() > 1 {
                let path: Vec<String> = ok
                    .iter()
                    .map(|r| format!("{:.1},{:.1}", x_of(r.level), y_of(second(r))))
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="2 3"/>"#,
                    path.join(" ")
                );
                if let Some(last) = ok.last() {
                    let (x, y) = (x_of(last.level), y_of(second(last)));
                    text(
                        svg,
                        x - 10.0,
                        y + 4.0,
                        12,
                        "end",
                        colour,
                        &format!("{} ({name})", target),
                    );
                }
            }
        }
        for row in mine.iter().filter(|r| !r.ok()) {
            let (x, y) = (x_of(row.level), top + PANEL_H - 12.0);
            text(svg, x, y + 5.0, 18, "middle", colour, "×");
        }
    }
}

fn draw_marker(svg: &mut String, marker: &str, x: f64, y: f64, colour: &str) {
    let _ = match marker {
        "square" => writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="{colour}"/>"#,
            x - 4.0,
            y - 4.0
        ),
        "diamond" => writeln!(
            svg,
            r#"<polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="{colour}"/>"#,
            y - 5.5,
            x + 5.5,
            y + 5.5,
            x - 5.5
        ),
        "triangle" => writeln!(
            svg,
            r#"<polygon points="{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{colour}"/>"#,
            y - 5.5,
            x + 5.0,
            y + 4.0,
            x - 5.0,
            y + 4.0
        ),
        "ring" => writeln!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="white" stroke="{colour}" stroke-width="2"/>"#
        ),
        _ => writeln!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{colour}"/>"#
        ),
    };
}

fn line(svg: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, colour: &str, dashed: bool) {
    let dash = if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{colour}" stroke-width="2"{dash}/>"#
    );
}

fn text(svg: &mut String, x: f64, y: f64, size: u32, anchor: &str, colour: &str, content: &str) {
    let content = content
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}" fill="{colour}">{content}</text>"#
    );
}

/// A vertical scale: linear from 0, or logarithmic over whole decades.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(values: &[f64], log: bool) -> Axis {
        let max = values.iter().copied().fold(0.0, f64::max);
        if log {
            let min = values
                .iter()
                .copied()
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min);
            let (min, max) = match min.is_finite() {
                true => (min, max),
                false => (1.0, 10.0),
            };
            let lo = 10f64.powf(min.log10().floor());
            let mut hi = 10f64.powf(max.log10().ceil());
            if hi <= lo {
                hi = lo * 10.0;
            }
            Axis { log, lo, hi }
        } else {
            let step = nice_step(max.max(1.0) / 4.0);
            Axis {
                log,
                lo: 0.0,
                hi: (max / step).ceil().max(1.0) * step,
            }
        }
    }

    /// Where `v` sits between the bottom (0) and the top (1) of the panel.
    fn fraction(&self, v: f64) -> f64 {
        match self.log {
            true => {
                (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
            }
            false => (v - self.lo) / (self.hi - self.lo),
        }
    }

    fn ticks(&self) -> Vec<f64> {
        match self.log {
            true => {
                let mut ticks = Vec::new();
                let mut t = self.lo;
                while t <= self.hi * 1.0001 {
                    ticks.push(t);
                    t *= 10.0;
                }
                ticks
            }
            false => {
                let step = nice_step(self.hi / 4.0);
                (0..)
                    .map(|i| i as f64 * step)
                    .take_while(|t| *t <= self.hi * 1.0001)
                    .collect()
            }
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

/// A tick label: 0.01, 0.5, 20, 5k, 1.2M.
fn short(v: f64) -> String {
    match v {
        v if v >= 1e6 => trim(v / 1e6) + "M",
        v if v >= 1e3 => trim(v / 1e3) + "k",
        v => trim(v),
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// 10000 -> 10,000.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_labels() {
        assert_eq!(nice_step(2300.0), 5000.0);
        assert_eq!(short(20_000.0), "20k");
        assert_eq!(short(0.05), "0.05");
        assert_eq!(thousands(10_000.0), "10,000");
        let axis = Axis::new(&[3.0, 450.0], true);
        assert_eq!((axis.lo, axis.hi), (1.0, 1000.0));
        assert_eq!(axis.ticks().len(), 4);
    }

    #[test]
    fn a_stopped_target_gets_a_cross_and_a_reason() {
        let mut rows = vec![
            Row::new("thread", 10),
            Row::stopped("thread", 100, "out of threads"),
        ];
        rows[0].rps = 100.0;
        rows[0].rss_mib = 5.0;
        let svg = draw(&rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("×") && svg.contains("out of threads"));
    }
}
