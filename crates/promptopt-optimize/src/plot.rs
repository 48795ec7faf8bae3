//! The trajectory of a run (score per trial), recorded from its events, and its plot as a
//! standalone SVG.

use std::sync::{Arc, Mutex};

use crate::{Event, EventSink, TrialKind, TrialPoint};

/// An event subscriber that records every scored trial of a run, numbered across the run's
/// optimizer runs, with the best full-evaluation score so far.
///
/// ```
/// use promptopt_optimize::plot::TrajectoryRecorder;
/// use promptopt_optimize::{Event, EventSink, TrialKind};
///
/// let recorder = TrajectoryRecorder::new();
/// recorder.emit(&Event::TrialScored { trial: 1, score: 0.4, best_so_far: 0.4, kind: TrialKind::Full });
/// recorder.emit(&Event::TrialScored { trial: 1, score: 0.9, best_so_far: 0.9, kind: TrialKind::Minibatch });
/// recorder.emit(&Event::TrialScored { trial: 2, score: 0.6, best_so_far: 0.6, kind: TrialKind::Full });
/// let points = recorder.points();
/// assert_eq!(points.iter().map(|p| p.trial).collect::<Vec<_>>(), [1, 2, 3]);
/// assert_eq!(points.iter().map(|p| p.best_so_far).collect::<Vec<_>>(), [0.4, 0.4, 0.6]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TrajectoryRecorder(Arc<Mutex<Vec<TrialPoint>>>);

impl TrajectoryRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trials recorded so far.
    pub fn points(&self) -> Vec<TrialPoint> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for TrajectoryRecorder {
    fn emit(&self, event: &Event) {
        let Event::TrialScored { score, kind, .. } = event else {
            return;
        };
        let mut points = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = points.last().map_or(f64::NAN, |p| p.best_so_far);
        let best_so_far = if *kind == TrialKind::Full && (previous.is_nan() || *score > previous) {
            *score
        } else {
            previous
        };
        let trial = points.len() + 1;
        points.push(TrialPoint {
            trial,
            score: *score,
            best_so_far,
            kind: *kind,
        });
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG line chart of `points`: full evaluations as filled dots, minibatch scores as hollow
/// ones, the best-so-far score as a step line; the y axis spans 0–1.
///
/// ```
/// use promptopt_optimize::{plot::trajectory_svg, TrialKind, TrialPoint};
///
/// let svg = trajectory_svg("sst2", &[TrialPoint { trial: 1, score: 0.5, best_so_far: 0.5, kind: TrialKind::Full }]);
/// assert!(svg.starts_with("<svg") && svg.contains("<circle"));
/// ```
pub fn trajectory_svg(title: &str, points: &[TrialPoint]) -> String {
    let (w, h) = (640.0, 360.0);
    let (left, right, top, bottom) = (56.0, 20.0, 36.0, 44.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let n = points.len().max(1) as f64;
    let x = |trial: usize| {
        if n <= 1.0 {
            left + pw / 2.0
        } else {
            left + pw * (trial.saturating_sub(1)) as f64 / (n - 1.0)
        }
    };
    let y = |score: f64| top + ph * (1.0 - score.clamp(0.0, 1.0));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        w / 2.0,
        esc(title)
    );
    for i in 0..=4 {
        let v = i as f64 / 4.0;
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n",
            left + pw,
            left - 6.0,
            y(v) + 4.0,
            yy = y(v)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">trial</text>\n<text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">score</text>\n",
        left + pw / 2.0,
        h - 10.0,
        top + ph / 2.0,
        top + ph / 2.0
    ));
    let best: Vec<String> = points
        .iter()
        .filter(|p| !p.best_so_far.is_nan())
        .map(|p| format!("{:.1},{:.1}", x(p.trial), y(p.best_so_far)))
        .collect();
    if !best.is_empty() {
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#2b7\" stroke-width=\"2\" points=\"{}\"/>\n",
            best.join(" ")
        ));
    }
    for p in points.iter().filter(|p| !p.score.is_nan()) {
        let fill = match p.kind {
            TrialKind::Full => "#26c",
            TrialKind::Minibatch => "white",
        };
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{fill}\" stroke=\"#26c\"><title>trial {}: {:.4}</title></circle>\n",
            x(p.trial),
            y(p.score),
            p.trial,
            p.score
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#2b7\">best so far</text>\n</svg>\n",
        left + pw,
        top - 6.0
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trajectory_svg_snapshot() {
        let points = [
            TrialPoint {
                trial: 1,
                score: 0.4,
                best_so_far: 0.4,
                kind: TrialKind::Full,
            },
            TrialPoint {
                trial: 2,
                score: 0.7,
                best_so_far: 0.4,
                kind: TrialKind::Minibatch,
            },
            TrialPoint {
                trial: 3,
                score: 0.65,
                best_so_far: 0.65,
                kind: TrialKind::Full,
            },
        ];
        insta::assert_snapshot!(trajectory_svg("sst2 <bootstrap>", &points));
    }
}
