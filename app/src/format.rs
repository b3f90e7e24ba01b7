//! Number formatting for tables and metrics.

/// `1234567` → `1,234,567`.
pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Decimal units: `1070000` → `1.07 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {unit}")
}

/// `[1, 300]` → `1×300`.
pub fn shape(dims: &[usize]) -> String {
    if dims.is_empty() {
        return "scalar".into();
    }
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// `412.3` → `412 ms`, `2310.0` → `2.31 s`.
pub fn millis(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A fraction as a percentage with two decimals: `0.98372` → `98.37 %`.
pub fn percent(fraction: f32) -> String {
    format!("{:.2} %", fraction * 100.0)
}

/// A change between two fractions in percentage points: `+0.12 pp`, `−0.30 pp`, `±0.00 pp`.
pub fn points(before: f32, after: f32) -> String {
    let d = (after - before) * 100.0;
    let text = format!("{:.2}", d.abs());
    if text == "0.00" {
        "±0.00 pp".into()
    } else if d > 0.0 {
        format!("+{text} pp")
    } else {
        format!("−{text} pp")
    }
}

/// SVG `points` of a polyline through `values` in a `width`×`height` box: x evenly spaced,
/// y scaled so that the smallest value touches the bottom and the largest the top.
pub fn polyline(values: &[f32], width: f32, height: f32) -> String {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f32::INFINITY, f32::min);
    let hi = finite.fold(f32::NEG_INFINITY, f32::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let last = values.len().saturating_sub(1).max(1) as f32;
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| {
            let x = i as f32 / last * width;
            let y = height - (v - lo) / span * height;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::int(0), "0");
        assert_eq!(super::int(266_610), "266,610");
        assert_eq!(super::int(1_234_567), "1,234,567");
        assert_eq!(super::bytes(999), "999 B");
        assert_eq!(super::bytes(1_066_440), "1.07 MB");
        assert_eq!(super::bytes(266_610), "267 kB");
        assert_eq!(super::shape(&[1, 300]), "1×300");
        assert_eq!(super::millis(412.3), "412 ms");
        assert_eq!(super::millis(2310.0), "2.31 s");
        assert_eq!(super::percent(0.98372), "98.37 %");
        assert_eq!(super::points(0.9827, 0.9839), "+0.12 pp");
        assert_eq!(super::points(0.9839, 0.9809), "−0.30 pp");
        assert_eq!(super::points(0.5, 0.5), "±0.00 pp");
    }

    #[test]
    fn polylines() {
        assert_eq!(super::polyline(&[], 100.0, 10.0), "");
        assert_eq!(
            super::polyline(&[2.0, 1.0, 0.0], 100.0, 10.0),
            "0.0,0.0 50.0,5.0 100.0,10.0"
        );
        assert_eq!(super::polyline(&[1.0], 100.0, 10.0), "0.0,10.0");
    }
}
