//! A loss curve as a standalone SVG: the raw per-step loss, its moving average, the
//! false-negative dose (the batch's mean share of softmax mass on known/judged
//! positives, its own scale, labelled at the left inside the plot) and, when the run
//! evaluated, the dev metric on a second axis.
//!
//! Written by hand rather than with plotters: one polyline and a few labels need no
//! font stack, and the file must be rewritten cheaply every time the log grows.

use std::fmt::Write as _;

const W: f64 = 800.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;

/// Moving-average window of the smoothed loss.
const SMOOTH: usize = 20;

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `losses`: (step, loss); `evals`: (step, metric); `dose`: (step, mean dose).
/// Returns the SVG document.
pub fn loss_svg(
    title: &str,
    losses: &[(u64, f64)],
    evals: &[(u64, f64)],
    metric: &str,
    dose: &[(u64, f64)],
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    let finite: Vec<(u64, f64)> = losses
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    if finite.is_empty() {
        s.push_str("</svg>");
        return s;
    }
    let frame = Frame::new(&finite, evals);
    frame.axes(&mut s);
    let raw: Vec<(f64, f64)> = finite
        .iter()
        .map(|&(st, l)| (frame.x(st as f64), frame.y(l, frame.lo, frame.hi)))
        .collect();
    s.push_str(&polyline(&raw, "#9ecae1", 1.0));
    let smooth: Vec<(f64, f64)> = smoothed(&finite)
        .map(|(st, m)| (frame.x(st as f64), frame.y(m, frame.lo, frame.hi)))
        .collect();
    s.push_str(&polyline(&smooth, "#08519c", 2.0));
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" fill="#08519c">loss ({SMOOTH}-step mean)</text>"##,
        LEFT + 8.0,
        TOP + 14.0
    );
    if dose.iter().any(|p| p.1 > 0.0) {
        frame.dose_series(&mut s, dose);
    }
    if !evals.is_empty() {
        frame.eval_series(&mut s, evals, metric);
    }
    s.push_str("</svg>\n");
    s
}

/// The mean of each point's last `SMOOTH` values, with its step.
fn smoothed(points: &[(u64, f64)]) -> impl Iterator<Item = (u64, f64)> + '_ {
    (0..points.len()).map(move |i| {
        let from = i.saturating_sub(SMOOTH - 1);
        let w = &points[from..=i];
        (
            points[i].0,
            w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
        )
    })
}

fn polyline(pts: &[(f64, f64)], colour: &str, width: f64) -> String {
    let mut d = String::new();
    for (i, (px, py)) in pts.iter().enumerate() {
        let _ = write!(d, "{}{px:.1},{py:.1}", if i == 0 { "M" } else { " L" });
    }
    format!(r#"<path d="{d}" stroke="{colour}" stroke-width="{width}" fill="none"/>"#)
}

/// The plot area: steps on x, the loss range on y.
struct Frame {
    max_step: f64,
    lo: f64,
    hi: f64,
    pw: f64,
    ph: f64,
}

impl Frame {
    fn new(finite: &[(u64, f64)], evals: &[(u64, f64)]) -> Self {
        let max_step = finite
            .iter()
            .map(|p| p.0)
            .chain(evals.iter().map(|p| p.0))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let lo = finite
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .min(0.0);
        let hi = finite
            .iter()
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max)
            .max(lo + 1e-9);
        Self {
            max_step,
            lo,
            hi,
            pw: W - LEFT - RIGHT,
            ph: H - TOP - BOTTOM,
        }
    }

    fn x(&self, step: f64) -> f64 {
        LEFT + self.pw * step / self.max_step
    }

    fn y(&self, v: f64, lo: f64, hi: f64) -> f64 {
        TOP + self.ph * (1.0 - (v - lo) / (hi - lo))
    }

    /// Axes, ticks and labels.
    fn axes(&self, s: &mut String) {
        let (lo, hi, pw, ph) = (self.lo, self.hi, self.pw, self.ph);
        let _ = write!(
            s,
            r##"<path d="M{LEFT},{TOP} V{} H{}" stroke="#333" fill="none"/>"##,
            TOP + ph,
            LEFT + pw
        );
        for k in 0..=4 {
            let v = lo + (hi - lo) * k as f64 / 4.0;
            let yy = self.y(v, lo, hi);
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy}" y2="{yy}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                yy + 4.0,
                fmt(v)
            );
            let st = self.max_step * k as f64 / 4.0;
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                self.x(st),
                TOP + ph + 16.0,
                st.round()
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">step</text><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">loss</text>"#,
            LEFT + pw / 2.0,
            H - 8.0,
            TOP + ph / 2.0,
            TOP + ph / 2.0
        );
    }

    /// The false-negative dose on its own scale (0 to its maximum).
    fn dose_series(&self, s: &mut String, dose: &[(u64, f64)]) {
        let dhi = dose.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05;
        let pts: Vec<(f64, f64)> = smoothed(dose)
            .map(|(st, m)| (self.x(st as f64), self.y(m, 0.0, dhi)))
            .collect();
        s.push_str(&polyline(&pts, "#1b9e77", 2.0));
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" fill="#1b9e77">false-negative dose, mean share of softmax mass ({SMOOTH}-step mean; top = {:.4})</text>"##,
            LEFT + 8.0,
            TOP + 30.0,
            dhi
        );
    }

    /// The dev metric on its own scale, with its range on the right.
    fn eval_series(&self, s: &mut String, evals: &[(u64, f64)], metric: &str) {
        let elo = evals.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let ehi = evals.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let (elo, ehi) = if ehi - elo < 1e-6 {
            (elo - 0.01, ehi + 0.01)
        } else {
            (elo, ehi)
        };
        let pts: Vec<(f64, f64)> = evals
            .iter()
            .map(|&(st, v)| (self.x(st as f64), self.y(v, elo, ehi)))
            .collect();
        s.push_str(&polyline(&pts, "#d95f02", 2.0));
        for (px, py) in &pts {
            let _ = write!(
                s,
                r##"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="#d95f02"/>"##
            );
        }
        for k in [0.0, 1.0] {
            let v = elo + (ehi - elo) * k;
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" fill="#d95f02">{:.4}</text>"##,
                LEFT + self.pw + 4.0,
                self.y(v, elo, ehi) + 4.0,
                v
            );
        }
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" fill="#d95f02" text-anchor="end">dev {}</text>"##,
            LEFT + self.pw - 8.0,
            TOP + 14.0,
            escape(metric)
        );
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_point_and_escapes_the_title() {
        let losses: Vec<(u64, f64)> = (1..=50).map(|s| (s, 3.0 / s as f64)).collect();
        let dose: Vec<(u64, f64)> = (1..=50).map(|s| (s, 0.01 * s as f64)).collect();
        let svg = loss_svg(
            "a <b> & c",
            &losses,
            &[(25, 0.6), (50, 0.65)],
            "ndcg_at_10",
            &dose,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        let raw = svg.split("<path d=\"").nth(2).unwrap();
        let points = raw.split('"').next().unwrap().matches(['M', 'L']).count();
        assert_eq!(points, 50);
        assert_eq!(svg.matches("<circle").count(), 2);
        let dose_path = svg.split("stroke=\"#1b9e77\"").next().unwrap();
        let dose_path = dose_path.rsplit("<path d=\"").next().unwrap();
        assert_eq!(
            dose_path.matches(['M', 'L']).count(),
            50,
            "one dose point per step"
        );
        assert!(svg.contains("false-negative dose"));
    }
}
