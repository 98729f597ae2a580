//! Statistics over rounds, markdown tables and a plot drawn as SVG.

use std::fmt::Write as _;

/// The value at quantile `q` (0..=1) of `sorted`.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Median and range of one figure over the rounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: quantile(&sorted, 0.5),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// `12.3 (11.9–13.0)`, with `digits` decimals.
    pub(crate) fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            return format!("{:.digits$}", self.median);
        }
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            self.median, self.min, self.max
        )
    }
}

/// Formats a ratio to a baseline as `1.02×`.
pub(crate) fn ratio(value: f64, baseline: f64) -> String {
    if baseline > 0.0 && value.is_finite() {
        format!("{:.2}×", value / baseline)
    } else {
        "–".to_owned()
    }
}

/// A markdown table.
pub(crate) struct Table {
    pub(crate) title: String,
    pub(crate) headers: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) note: String,
}

impl Table {
    pub(crate) fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.to_owned(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            note: String::new(),
        }
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        let _ = writeln!(out, "| {} |", self.headers.join(" | "));
        let _ = writeln!(out, "|{}", " --- |".repeat(self.headers.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if !self.note.is_empty() {
            let _ = write!(out, "\n{}\n", self.note);
        }
        out
    }
}

/// One line of a plot: a system's values at each x.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<f64>,
}

const COLOURS: [&str; 4] = ["#777777", "#e69f00", "#56b4e9", "#009e73"];

/// Small multiples: one panel per value size, throughput (log scale) against concurrency.
pub(crate) fn svg(title: &str, x_labels: &[String], panels: &[(String, Vec<Series>)]) -> String {
    let (panel_w, panel_h, left, top, bottom) = (300.0, 220.0, 60.0, 40.0, 50.0);
    let width = left + panel_w * panels.len() as f64 + 20.0 * panels.len() as f64 + 10.0;
    let height = top + panel_h + bottom + 30.0;
    let all: Vec<f64> = panels
        .iter()
        .flat_map(|(_, s)| s.iter().flat_map(|s| s.points.iter().copied()))
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = all
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let hi = all
        .iter()
        .copied()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let y = |v: f64| top + panel_h - (v.max(1.0).log10() - lo) / (hi - lo) * panel_h;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="18" font-size="14">{title}</text>
"#
    );
    for (p, (name, series)) in panels.iter().enumerate() {
        let x0 = left + p as f64 * (panel_w + 20.0);
        let x =
            |i: usize| x0 + 20.0 + i as f64 * (panel_w - 40.0) / (x_labels.len().max(2) - 1) as f64;
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
        for decade in lo as i32..=hi as i32 {
            let v = 10f64.powi(decade);
            let _ = writeln!(
                out,
                r##"<line x1="{x0}" x2="{:.0}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
                x0 + panel_w,
                y(v),
                y(v)
            );
            if p == 0 {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.0}" y="{:.1}" text-anchor="end">1e{decade}</text>"#,
                    x0 - 4.0,
                    y(v) + 4.0
                );
            }
        }
        for (i, label) in x_labels.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{label}</text>"#,
                x(i),
                top + panel_h + 15.0
            );
        }
        for (s, line) in series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let points: Vec<String> = line
                .points
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                points.join(" ")
            );
            for (i, v) in line.points.iter().enumerate() {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                    x(i),
                    y(*v)
                );
            }
        }
    }
    let legend_y = top + panel_h + 38.0;
    if let Some((_, series)) = panels.first() {
        for (s, line) in series.iter().enumerate() {
            let lx = left + s as f64 * 130.0;
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
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_spreads() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        assert_eq!(ratio(105.0, 100.0), "1.05×");
    }
}
