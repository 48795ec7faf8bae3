//! Charts as SVG rendered on the server: no script and no network needed to draw them, and the
//! same markup in every browser. Each chart carries a title and a description for screen
//! readers; the pages show the same figures in tables.

use std::fmt::Write as _;

use maud::{html, Markup, PreEscaped};

/// Width and height of the drawing, in SVG units (it scales to its container).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
/// Room for the axes' labels.
const LEFT: f64 = 52.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

/// Colours for series, in order: dark enough on white for text and lines (contrast above 4.5).
pub(crate) const PALETTE: [&str; 5] = ["#1f5fa8", "#b4441b", "#2d7a3a", "#7b3fa0", "#5c5c5c"];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Points joined by straight lines.
    Line,
    /// A staircase: the value holds until the next point (a best-so-far curve).
    Step,
    /// Points only.
    Dots,
}

/// One series of `(x, y)` points.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Its name in the legend.
    pub(crate) label: String,
    /// Its points, in order of `x`.
    pub(crate) points: Vec<(f64, f64)>,
    /// How it is drawn.
    pub(crate) style: Style,
}

/// A vertical mark at `x` (a drift alarm, a deployment).
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    /// Where.
    pub(crate) x: f64,
    /// What, shown on hover and in the description.
    pub(crate) label: String,
    /// Red for alarms, grey otherwise.
    pub(crate) alarm: bool,
}

/// How the x axis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XAxis {
    /// Plain numbers (trials, outcomes).
    Number,
    /// Seconds since the epoch, shown as UTC times.
    Time,
}

/// A line chart.
#[derive(Debug, Clone)]
pub(crate) struct LineChart {
    /// The chart's accessible title.
    pub(crate) title: String,
    /// What the x axis counts.
    pub(crate) x_label: String,
    /// What the y axis measures.
    pub(crate) y_label: String,
    /// How x values read.
    pub(crate) x_axis: XAxis,
    /// The series.
    pub(crate) series: Vec<Series>,
    /// Vertical marks.
    pub(crate) markers: Vec<Marker>,
    /// A dashed horizontal reference line and its label (a significance level).
    pub(crate) reference: Option<(f64, String)>,
    /// The y range to show at least (it grows to fit the data).
    pub(crate) y_range: (f64, f64),
    /// The x range to show at least (a known number of trials).
    pub(crate) x_min_range: Option<(f64, f64)>,
}

impl LineChart {
    /// A chart with no data yet.
    pub(crate) fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_axis: XAxis::Number,
            series: Vec::new(),
            markers: Vec::new(),
            reference: None,
            y_range: (0.0, 1.0),
            x_min_range: None,
        }
    }

    fn bounds(&self) -> ((f64, f64), (f64, f64)) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.markers.iter().map(|m| m.x))
            .filter(|x| x.is_finite());
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(self.reference.iter().map(|r| r.0))
            .filter(|y| y.is_finite());
        let (mut x0, mut x1) = self
            .x_min_range
            .unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
        for x in xs {
            x0 = x0.min(x);
            x1 = x1.max(x);
        }
        if !x0.is_finite() || !x1.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        let (mut y0, mut y1) = self.y_range;
        for y in ys {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if y1 - y0 < 1e-9 {
            y1 = y0 + 1.0;
        }
        ((x0, x1), (y0, y1))
    }

    /// The chart as an `<svg>` element.
    pub(crate) fn render(&self) -> Markup {
        let ((x0, x1), (y0, y1)) = self.bounds();
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
        let sy = |y: f64| HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);
        let id = slug(&self.title);
        let description = self.describe();
        let mut body = String::new();
        // Grid and axis labels.
        for i in 0..=4 {
            let y = y0 + (y1 - y0) * f64::from(i) / 4.0;
            let _ = write!(
                body,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#d0d0d0" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="#333">{}</text>"##,
                WIDTH - RIGHT,
                sy(y),
                sy(y),
                LEFT - 6.0,
                sy(y) + 4.0,
                number(y)
            );
        }
        // Whole numbers (trials, outcomes) get whole ticks; times show the time of day when the
        // span is under a day, the date otherwise.
        let whole = self.x_axis == XAxis::Number
            && self
                .series
                .iter()
                .flat_map(|s| s.points.iter())
                .all(|p| p.0.fract() == 0.0);
        let mut shown = Vec::new();
        for i in 0..=4 {
            let mut x = x0 + (x1 - x0) * f64::from(i) / 4.0;
            if whole {
                x = x.round();
                if shown.contains(&x) {
                    continue;
                }
                shown.push(x);
            }
            let text = match self.x_axis {
                XAxis::Number => number(x),
                XAxis::Time if x1 - x0 < 86_400.0 => clock(x)[11..].to_string(),
                XAxis::Time => clock(x)[..10].to_string(),
            };
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let _ = write!(
                body,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#333">{}</text>"##,
                sx(x),
                HEIGHT - BOTTOM + 16.0,
                escape(&text)
            );
        }
        let _ = write!(
            body,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#333">{}</text><text x="12" y="{:.1}" text-anchor="middle" font-size="11" fill="#333" transform="rotate(-90 12 {:.1})">{}</text>"##,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 4.0,
            escape(&self.x_label),
            (TOP + HEIGHT - BOTTOM) / 2.0,
            (TOP + HEIGHT - BOTTOM) / 2.0,
            escape(&self.y_label)
        );
        if let Some((y, label)) = &self.reference {
            let _ = write!(
                body,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#8a1c1c" stroke-dasharray="5 4" stroke-width="1.5"><title>{}</title></line>"##,
                WIDTH - RIGHT,
                sy(*y),
                sy(*y),
                escape(label)
            );
        }
        for m in &self.markers {
            let colour = if m.alarm { "#b3261e" } else { "#6b6b6b" };
            let _ = write!(
                body,
                r##"<line class="marker" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{}"><title>{}</title></line>"##,
                HEIGHT - BOTTOM,
                if m.alarm { "none" } else { "3 3" },
                escape(&m.label),
                x = sx(m.x),
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| (sx(x), sy(y)))
                .collect();
            match s.style {
                Style::Line | Style::Step if pts.len() > 1 => {
                    let mut path = String::new();
                    for (j, (x, y)) in pts.iter().enumerate() {
                        if j == 0 {
                            let _ = write!(path, "M{x:.1},{y:.1}");
                        } else if s.style == Style::Step {
                            let _ = write!(path, " H{x:.1} V{y:.1}");
                        } else {
                            let _ = write!(path, " L{x:.1},{y:.1}");
                        }
                    }
                    let _ = write!(
                        body,
                        r##"<path class="series" d="{path}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></path>"##,
                        escape(&s.label)
                    );
                }
                _ => {
                    for (x, y) in &pts {
                        let _ = write!(
                            body,
                            r##"<circle class="point" cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"##
                        );
                    }
                }
            }
        }
        html! {
            figure.chart {
                svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
                    aria-labelledby=(format!("{id}-title {id}-desc")) {
                    title id=(format!("{id}-title")) { (self.title) }
                    desc id=(format!("{id}-desc")) { (description) }
                    (PreEscaped(body))
                }
                @if self.series.len() > 1 || !self.markers.is_empty() {
                    figcaption.legend {
                        @for (i, s) in self.series.iter().enumerate() {
                            span.key { span.swatch style=(format!("background:{}", PALETTE[i % PALETTE.len()])) {} (s.label) }
                        }
                        @if self.markers.iter().any(|m| m.alarm) {
                            span.key { span.swatch.alarm {} "drift alarm" }
                        }
                        @if self.markers.iter().any(|m| !m.alarm) {
                            span.key { span.swatch.event {} "deployment or rollback" }
                        }
                    }
                }
            }
        }
    }

    /// The data in words, for screen readers.
    fn describe(&self) -> String {
        let mut out = String::new();
        for s in &self.series {
            match s.points.last() {
                Some((x, y)) => {
                    let _ = write!(
                        out,
                        "{}: {} points, last {} at {} {}. ",
                        s.label,
                        s.points.len(),
                        number(*y),
                        self.x_label,
                        match self.x_axis {
                            XAxis::Number => number(*x),
                            XAxis::Time => clock(*x),
                        }
                    );
                }
                None => {
                    let _ = write!(out, "{}: no data yet. ", s.label);
                }
            }
        }
        for m in &self.markers {
            let _ = write!(out, "{}. ", m.label);
        }
        out.trim_end().to_string()
    }
}

/// One row of an interval chart: a label, a point estimate and its interval.
#[derive(Debug, Clone)]
pub(crate) struct Interval {
    /// The row's name.
    pub(crate) label: String,
    /// The estimate.
    pub(crate) value: f64,
    /// The interval `[low, high]`.
    pub(crate) range: [f64; 2],
}

/// Estimates with their intervals on one axis, one row each (a forest plot); `zero` draws a
/// reference line (0 for differences).
pub(crate) fn intervals(title: &str, rows: &[Interval], zero: Option<f64>) -> Markup {
    let row_height = 30.0;
    let height = TOP + BOTTOM + row_height * rows.len().max(1) as f64;
    let left = 150.0;
    let mut lo = zero.unwrap_or(f64::INFINITY);
    let mut hi = zero.unwrap_or(f64::NEG_INFINITY);
    for r in rows {
        for v in [r.range[0], r.range[1], r.value] {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let sx = |x: f64| left + (x - lo) / (hi - lo) * (WIDTH - left - RIGHT);
    let id = slug(title);
    let mut body = String::new();
    for i in 0..=4 {
        let x = lo + (hi - lo) * f64::from(i) / 4.0;
        let _ = write!(
            body,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{TOP}" y2="{:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#333">{}</text>"##,
            sx(x),
            sx(x),
            height - BOTTOM,
            sx(x),
            height - BOTTOM + 16.0,
            number(x)
        );
    }
    if let Some(z) = zero {
        let _ = write!(
            body,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#333" stroke-dasharray="4 3"/>"##,
            height - BOTTOM,
            x = sx(z)
        );
    }
    let mut description = String::new();
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + row_height * (i as f64 + 0.5);
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            description,
            "{}: {} ({} to {}). ",
            r.label,
            number(r.value),
            number(r.range[0]),
            number(r.range[1])
        );
        let _ = write!(
            body,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12" fill="#222">{}</text><line class="interval" x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3"/><circle cx="{:.1}" cy="{y:.1}" r="5" fill="{colour}"/>"##,
            left - 8.0,
            y + 4.0,
            escape(&r.label),
            sx(r.range[0]),
            sx(r.range[1]),
            sx(r.value)
        );
    }
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {height}")) role="img"
                aria-labelledby=(format!("{id}-title {id}-desc")) {
                title id=(format!("{id}-title")) { (title) }
                desc id=(format!("{id}-desc")) { (description.trim_end()) }
                (PreEscaped(body))
            }
        }
    }
}

/// A number in a few significant digits.
pub(crate) fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let text = if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(crate) fn clock(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "–".into();
    }
    promptopt_registry::rfc3339(seconds as u64)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

fn slug(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.insert_str(0, "chart-");
    out
}

/// `text` escaped for HTML (and SVG) by maud.
fn escape(text: &str) -> String {
    html! { (text) }.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_best_so_far_chart_renders_as_a_staircase() {
        let mut chart = LineChart::new("Best score so far", "trial", "score");
        chart.x_min_range = Some((1.0, 4.0));
        chart.series.push(Series {
            label: "best so far".into(),
            points: vec![(1.0, 0.5), (2.0, 0.5), (3.0, 0.75)],
            style: Style::Step,
        });
        chart.series.push(Series {
            label: "trial <score>".into(),
            points: vec![(1.0, 0.5), (2.0, 0.25), (3.0, 0.75)],
            style: Style::Dots,
        });
        insta::assert_snapshot!(chart.render().into_string());
    }

    #[test]
    fn markers_and_references_are_drawn_and_described() {
        let mut chart = LineChart::new("Live metric", "time", "mean score");
        chart.x_axis = XAxis::Time;
        chart.series.push(Series {
            label: "m@1.0.0".into(),
            points: vec![(1_700_000_000.0, 0.9), (1_700_000_600.0, 0.4)],
            style: Style::Line,
        });
        chart.markers.push(Marker {
            x: 1_700_000_300.0,
            label: "drift at 2023-11-14 22:18:20".into(),
            alarm: true,
        });
        chart.reference = Some((0.05, "alpha".into()));
        let svg = chart.render().into_string();
        assert!(svg.contains("class=\"marker\""), "{svg}");
        assert!(svg.contains("stroke-dasharray=\"5 4\""), "{svg}");
        assert!(svg.contains("drift alarm"), "{svg}");
        assert!(svg.contains("m@1.0.0: 2 points, last 0.4"), "{svg}");
        assert!(svg.contains(">22:13:20<"), "{svg}");
    }

    #[test]
    fn intervals_put_every_row_on_one_axis() {
        let rows = [
            Interval {
                label: "control".into(),
                value: 0.7,
                range: [0.6, 0.8],
            },
            Interval {
                label: "treatment".into(),
                value: 0.8,
                range: [0.72, 0.88],
            },
        ];
        let svg = intervals("Success rate by variant", &rows, None).into_string();
        assert_eq!(svg.matches("class=\"interval\"").count(), 2, "{svg}");
        assert!(svg.contains("treatment: 0.8 (0.72 to 0.88)"), "{svg}");
    }

    #[test]
    fn numbers_and_clocks_read_well() {
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1234.0), "1234");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.00001), "1.00e-5");
        assert_eq!(number(f64::NAN), "–");
        assert_eq!(clock(0.0), "1970-01-01 00:00:00");
        assert_eq!(clock(1_700_000_000.0), "2023-11-14 22:13:20");
        assert_eq!(clock(951_782_400.0), "2000-02-29 00:00:00");
    }
}
