//! Per-layer weight histograms before and after compression: small inline SVGs, no chart
//! library.

use leptos::prelude::*;
use lithe_app::protocol::Histogram;

/// Plot width in SVG user units.
const W: f64 = 200.0;
/// Plot height.
const H: f64 = 48.0;

/// `(x, y, width, height)` of each bar for `counts` on a square-root scale up to `max` (so the
/// tails stay visible next to the peak).
pub fn bars(counts: &[u32], max: u32) -> Vec<(f64, f64, f64, f64)> {
    let n = counts.len().max(1) as f64;
    let top = f64::from(max.max(1)).sqrt();
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, &c)| {
            let h = f64::from(c).sqrt() / top * H;
            (i as f64 * W / n, H - h, W / n, h)
        })
        .collect()
}

/// One histogram per layer: the loaded weights as an outline, the compressed layer's nonzero
/// weights filled, on the same axis (`±limit`).
#[component]
pub fn WeightHistograms(
    /// One entry per prunable layer, from the worker.
    histograms: Vec<Histogram>,
) -> impl IntoView {
    let items = histograms
        .into_iter()
        .map(|h| {
            let max = h.before.iter().chain(&h.after).copied().max().unwrap_or(1);
            let before = bars(&h.before, max)
                .into_iter()
                .map(|(x, y, w, hh)| view! { <rect class="before" x=format!("{x:.2}") y=format!("{y:.2}") width=format!("{w:.2}") height=format!("{hh:.2}")></rect> })
                .collect_view();
            let after = bars(&h.after, max)
                .into_iter()
                .map(|(x, y, w, hh)| view! { <rect class="after" x=format!("{:.2}", x + w * 0.2) y=format!("{y:.2}") width=format!("{:.2}", w * 0.6) height=format!("{hh:.2}")></rect> })
                .collect_view();
            let caption = if h.after.is_empty() {
                format!("±{:.3} · rewritten (SVD factors)", h.limit)
            } else {
                format!("±{:.3} · {:.1} % zero after", h.limit, h.zeros * 100.0)
            };
            let layer = h.layer.clone();
            let label = format!("Weight histogram of {} before (outline) and after (filled) compression", h.layer);
            view! {
                <figure class="histogram" data-layer=layer>
                    <svg viewBox=format!("0 0 {W} {}", H + 1.0) role="img" aria-label=label>
                        <g>{before}</g>
                        <g>{after}</g>
                        <line class="axis" x1="0" y1=H.to_string() x2=W.to_string() y2=H.to_string()></line>
                        <line class="zero" x1=(W / 2.0).to_string() y1="0" x2=(W / 2.0).to_string() y2=H.to_string()></line>
                    </svg>
                    <figcaption><code>{h.layer}</code>" "{caption}</figcaption>
                </figure>
            }
        })
        .collect_view();
    view! {
        <div class="histograms" aria-label="Weight histograms">
            <h3>"Weights per layer: before (outline) and after (filled, zeros left out)"</h3>
            <div class="histogram-grid">{items}</div>
        </div>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bars_scale_by_square_root() {
        let b = super::bars(&[0, 4, 16], 16);
        assert_eq!(b.len(), 2);
        assert!((b[1].3 - super::H).abs() < 1e-9);
        assert!((b[0].3 - super::H / 2.0).abs() < 1e-9);
        assert!(super::bars(&[], 0).is_empty());
    }
}
