//! The throughput plot, drawn as SVG: small multiples, one panel per value size, throughput
//! (log scale) against concurrency.

use std::fmt::Write as _;

/// One line of a plot: a system's values at each x.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<f64>,
}

const COLOURS: [&str; 5] = ["#777777", "#e69f00", "#56b4e9", "#009e73", "#cc79a7"];

/// The geometry every panel shares: sizes, margins and the log scale's decades.
struct Frame<'a> {
    panel_w: f64,
    panel_h: f64,
    left: f64,
    top: f64,
    lo: f64,
    hi: f64,
    x_labels: &'a [String],
}

impl Frame<'_> {
    fn y(&self, v: f64) -> f64 {
        self.top + self.panel_h
            - (v.max(1.0).log10() - self.lo) / (self.hi - self.lo) * self.panel_h
    }

    fn x0(&self, panel: usize) -> f64 {
        self.left + panel as f64 * (self.panel_w + 20.0)
    }

    fn x(&self, panel: usize, i: usize) -> f64 {
        let steps = (self.x_labels.len().max(2) - 1) as f64;
        self.x0(panel) + 20.0 + i as f64 * (self.panel_w - 40.0) / steps
    }
}

/// The whole decades that hold every positive value of every panel (at least one).
fn decades(panels: &[(String, Vec<Series>)]) -> (f64, f64) {
    let all: Vec<f64> = panels
        .iter()
        .flat_map(|(_, s)| s.iter().flat_map(|s| s.points.iter().copied()))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lowest = all.iter().copied().fold(f64::INFINITY, f64::min);
    let lo = lowest.max(1.0).log10().floor();
    let hi = all.iter().copied().fold(1.0, f64::max).log10().ceil();
    (lo, hi.max(lo + 1.0))
}

/// Small multiples: one panel per value size, throughput (log scale) against concurrency.
pub(crate) fn svg(title: &str, x_labels: &[String], panels: &[(String, Vec<Series>)]) -> String {
    let (lo, hi) = decades(panels);
    let frame = Frame {
        panel_w: 300.0,
        panel_h: 220.0,
        left: 60.0,
        top: 40.0,
        lo,
        hi,
        x_labels,
    };
    let width =
        frame.left + frame.panel_w * panels.len() as f64 + 20.0 * panels.len() as f64 + 10.0;
    let height = frame.top + frame.panel_h + 50.0 + 30.0;
    let left = frame.left;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="18" font-size="14">{title}</text>
"#
    );
    for (p, (name, series)) in panels.iter().enumerate() {
        panel_axes(&mut out, &frame, p, name);
        for (s, line) in series.iter().enumerate() {
            polyline(
                &mut out,
                &frame,
                p,
                COLOURS[s % COLOURS.len()],
                &line.points,
            );
        }
    }
    if let Some((_, series)) = panels.first() {
        legend(&mut out, &frame, width, series);
    }
    out.push_str("</svg>\n");
    out
}

/// A panel's frame, title, decade lines (labelled on the first panel) and x labels.
fn panel_axes(out: &mut String, frame: &Frame<'_>, p: usize, name: &str) {
    let (x0, top, panel_w, panel_h) = (frame.x0(p), frame.top, frame.panel_w, frame.panel_h);
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{top}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#ccc"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="{}" text-anchor="middle">value {name}</text>"#,
        x0 + panel_w / 2.0,
        top - 6.0
    );
    for decade in frame.lo as i32..=frame.hi as i32 {
        let y = frame.y(10f64.powi(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" x2="{:.0}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/>"##,
            x0 + panel_w,
        );
        if p == 0 {
            let _ = writeln!(
                out,
                r#"<text x="{:.0}" y="{:.1}" text-anchor="end">1e{decade}</text>"#,
                x0 - 4.0,
                y + 4.0
            );
        }
    }
    for (i, label) in frame.x_labels.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{label}</text>"#,
            frame.x(p, i),
            top + panel_h + 15.0
        );
    }
}

/// One system's line and points in panel `p`.
fn polyline(out: &mut String, frame: &Frame<'_>, p: usize, colour: &str, values: &[f64]) {
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", frame.x(p, i), frame.y(*v)))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
        points.join(" ")
    );
    for (i, v) in values.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
            frame.x(p, i),
            frame.y(*v)
        );
    }
}

/// The systems' colours and the axes' meaning, under the panels.
fn legend(out: &mut String, frame: &Frame<'_>, width: f64, series: &[Series]) {
    let legend_y = frame.top + frame.panel_h + 38.0;
    for (s, line) in series.iter().enumerate() {
        let lx = frame.left + s as f64 * 130.0;
        let colour = COLOURS[s % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{:.0}" width="12" height="4" fill="{colour}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            legend_y - 4.0,
            lx + 16.0,
            legend_y,
            line.name
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="end">ops/s (log) against concurrent tasks</text>"#,
        width - 10.0,
        legend_y
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Vec<Series>)> {
        let series = |name: &str, k: f64| Series {
            name: name.into(),
            points: vec![10.0 * k, 250.0 * k, 4_000.0 * k, 90_000.0 * k],
        };
        vec![
            (
                "100 B".into(),
                vec![series("raw", 1.0), series("cached-redis", 0.8)],
            ),
            (
                "1 MB".into(),
                vec![series("raw", 0.1), series("cached-redis", 0.09)],
            ),
        ]
    }

    #[test]
    fn one_line_per_system_per_panel_on_a_shared_log_scale() {
        let labels: Vec<String> = ["1", "8", "64", "256"].map(String::from).to_vec();
        let plot = svg("t", &labels, &sample());
        assert_eq!(plot.matches("<polyline").count(), 4);
        assert_eq!(decades(&sample()), (0.0, 5.0));
        assert!(plot.contains(">1e5<") && plot.ends_with("</svg>\n"));
    }
}
