//! Sweeps: the prune ratios one click runs, and the geometry of the accuracy-vs-compression
//! chart (pure functions, unit-tested natively).

/// Prune ratios of a prune sweep, in percent.
pub const SWEEP_PRUNE: [u32; 11] = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95];

/// Weight formats of a bit-width sweep, 32 → 1 bit (keys of `protocol::FORMATS`).
pub const SWEEP_BITS: [&str; 5] = ["f32", "int8", "int4", "int2", "binary"];

/// Most points one sweep request may ask for.
pub const MAX_SWEEP_POINTS: usize = 16;

/// What a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepKind {
    /// The prune ratio, 0 → 95 %, at a fixed weight format.
    Prune,
    /// The weight format, 32 → 1 bit, at a fixed prune ratio.
    Bits,
}

/// The `(prune %, weight format)` points of a sweep from the card's current knobs.
pub fn points(kind: SweepKind, prune: u32, format: &str) -> Vec<(u32, String)> {
    match kind {
        SweepKind::Prune => SWEEP_PRUNE
            .iter()
            .map(|&p| (p, format.to_string()))
            .collect(),
        SweepKind::Bits => SWEEP_BITS.iter().map(|f| (prune, f.to_string())).collect(),
    }
}

/// One measured point of a sweep.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepPoint {
    /// Prune ratio in percent.
    pub prune: u32,
    /// Dense f32 weight bytes over the compressed weight bytes.
    pub ratio: f64,
    /// Test accuracy, 0–1.
    pub accuracy: f32,
}

/// Plot area of the chart, in SVG user units.
pub const WIDTH: f64 = 320.0;
/// Plot height.
pub const HEIGHT: f64 = 180.0;

/// Axis ranges that hold every point: x is `log2(ratio)` from 0 (1×) to at least 1 (2×); y is
/// the accuracy from a floor (rounded down to 10 %, at most 0.9) to 1.
pub fn ranges<'a>(points: impl Iterator<Item = &'a SweepPoint>) -> (f64, f64) {
    let (mut max_x, mut min_y) = (1.0f64, 0.9f64);
    for p in points {
        if p.ratio.is_finite() && p.ratio > 0.0 {
            max_x = max_x.max(p.ratio.log2());
        }
        if p.accuracy.is_finite() {
            min_y = min_y.min((p.accuracy as f64 * 10.0).floor() / 10.0);
        }
    }
    (max_x.ceil(), min_y.max(0.0))
}

/// SVG coordinates of a point for the ranges `(max_x, min_y)` of [`ranges`].
pub fn xy(p: &SweepPoint, (max_x, min_y): (f64, f64)) -> (f64, f64) {
    let lx = if p.ratio > 0.0 { p.ratio.log2() } else { 0.0 };
    let x = (lx.clamp(0.0, max_x) / max_x.max(1e-9)) * WIDTH;
    let span = (1.0 - min_y).max(1e-9);
    let y = (1.0 - ((p.accuracy as f64 - min_y) / span).clamp(0.0, 1.0)) * HEIGHT;
    (x, y)
}

/// The `points` attribute of an SVG polyline through `points` in order.
pub fn polyline(points: &[SweepPoint], r: (f64, f64)) -> String {
    points
        .iter()
        .map(|p| {
            let (x, y) = xy(p, r);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The points no other point beats on both axes (higher ratio and higher accuracy), by
/// ratio: the Pareto front of every sweep so far.
pub fn pareto(points: &[SweepPoint]) -> Vec<SweepPoint> {
    let mut v: Vec<SweepPoint> = points
        .iter()
        .filter(|p| {
            !points.iter().any(|q| {
                q.ratio >= p.ratio
                    && q.accuracy >= p.accuracy
                    && (q.ratio > p.ratio || q.accuracy > p.accuracy)
            })
        })
        .copied()
        .collect();
    v.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    v.dedup_by(|a, b| a.ratio == b.ratio && a.accuracy == b.accuracy);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(prune: u32, ratio: f64, accuracy: f32) -> SweepPoint {
        SweepPoint {
            prune,
            ratio,
            accuracy,
        }
    }

    #[test]
    fn chart_geometry() {
        let pts = [p(0, 1.0, 0.98), p(90, 8.0, 0.92), p(95, 16.0, 0.75)];
        let r = ranges(pts.iter());
        assert_eq!(r, (4.0, 0.7));
        let (x0, y0) = xy(&pts[0], r);
        assert!(x0 == 0.0 && (y0 - HEIGHT * (1.0 - (0.98 - 0.7) / 0.3)).abs() < 1e-3);
        let (x, y) = xy(&pts[2], r);
        assert!((x - WIDTH).abs() < 1e-9 && (y - HEIGHT * (1.0 - 0.05 / 0.3)).abs() < 1e-3);
        assert_eq!(polyline(&pts, r).split(' ').count(), 3);
        // Nothing measured yet: a sensible empty chart.
        assert_eq!(ranges([].iter()), (1.0, 0.9));
        // Out-of-range values stay inside the plot.
        let (x, y) = xy(&p(0, 0.0, -1.0), r);
        assert!((0.0..=WIDTH).contains(&x) && (0.0..=HEIGHT).contains(&y));
    }

    #[test]
    fn sweep_points_follow_the_knobs() {
        let p = points(SweepKind::Prune, 30, "int4");
        assert_eq!(p.len(), SWEEP_PRUNE.len());
        assert!(p.iter().all(|(_, f)| f == "int4") && p[10].0 == 95);
        let b = points(SweepKind::Bits, 30, "int4");
        assert_eq!(
            b.iter().map(|(_, f)| f.as_str()).collect::<Vec<_>>(),
            SWEEP_BITS
        );
        assert!(b.iter().all(|(pr, _)| *pr == 30));
        assert!(SWEEP_PRUNE.len() <= MAX_SWEEP_POINTS);
    }

    #[test]
    fn pareto_front_keeps_the_undominated_points() {
        let pts = [
            p(0, 1.0, 0.98),
            p(50, 2.0, 0.98),
            p(50, 1.5, 0.97),
            p(90, 8.0, 0.92),
            p(90, 6.0, 0.90),
        ];
        let front = pareto(&pts);
        assert_eq!(
            front.iter().map(|q| q.ratio).collect::<Vec<_>>(),
            vec![2.0, 8.0]
        );
    }
}
