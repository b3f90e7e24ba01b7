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
    }
}
