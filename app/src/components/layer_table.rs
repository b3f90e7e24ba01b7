//! The layer table of a model with its totals and, once measured, a sensitivity heat strip.

use crate::format;
use leptos::prelude::*;
use lithe::metrics::ModelInfo;
use lithe_app::protocol::Sensitivity;

/// Accuracy drop (percentage points) that shows as the hottest colour.
const HOT_PP: f32 = 5.0;

/// The heat strip cell of one layer: its accuracy drop in points and a CSS colour (green for
/// no drop, red at [`HOT_PP`] or more), or the reason it could not be measured.
pub fn heat(base: f32, accuracy: Option<f32>) -> Option<(f32, String)> {
    let acc = accuracy?;
    let drop = ((base - acc) * 100.0).max(0.0);
    let t = (drop / HOT_PP).clamp(0.0, 1.0);
    Some((drop, format!("hsl({:.0} 70% 45%)", 140.0 * (1.0 - t))))
}

/// One row per node (name, op, output shape, parameters, f32 bytes) and a totals row; a
/// "Sensitivity" column appears once a measurement exists.
#[component]
pub fn LayerTable(
    /// The model summary from the worker.
    info: ModelInfo,
    /// Per-layer accuracy with only that layer compressed, when measured.
    #[prop(into)]
    sensitivity: Signal<Option<Sensitivity>>,
) -> impl IntoView {
    let dash_or = |n: usize, f: fn(u64) -> String| {
        if n == 0 {
            "—".to_string()
        } else {
            f(n as u64)
        }
    };
    let shown = move || sensitivity.with(Option::is_some);
    let rows = info
        .layers
        .into_iter()
        .map(|l| {
            let name = l.name.clone();
            let cell = move || {
                sensitivity.with(|s| {
                    let s = s.as_ref()?;
                    let (_, acc, why) = s.layers.iter().find(|(n, _, _)| *n == name)?;
                    Some(match heat(s.base, *acc) {
                        Some((drop, colour)) => view! {
                            <td class="num sens" data-layer=name.clone()>
                                <span class="heat" style=format!("background:{colour}") aria-hidden="true"></span>
                                {format!("−{drop:.2} pp")}
                            </td>
                        }
                        .into_any(),
                        None => view! { <td class="num sens" title=why.clone()>"n/a"</td> }.into_any(),
                    })
                })
            };
            view! {
                <tr>
                    <th scope="row"><code>{l.name}</code></th>
                    <td>{l.op}</td>
                    <td class="num">{format::shape(&l.shape)}</td>
                    <td class="num">{dash_or(l.params, format::int)}</td>
                    <td class="num">{dash_or(l.bytes, format::bytes)}</td>
                    {move || if shown() { cell().or_else(|| Some(view! { <td></td> }.into_any())) } else { None }}
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="Layers">
            <table class="layers">
                <thead>
                    <tr>
                        <th scope="col">"Layer"</th>
                        <th scope="col">"Op"</th>
                        <th scope="col" class="num">"Output"</th>
                        <th scope="col" class="num">"Params"</th>
                        <th scope="col" class="num">"Size (f32)"</th>
                        {move || shown().then(|| view! {
                            <th scope="col" class="num" title="Test accuracy lost when only this layer is compressed with the card's settings">"Sensitivity"</th>
                        })}
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
                <tfoot>
                    <tr>
                        <th scope="row" colspan="3">"Total"</th>
                        <td class="num">{format::int(info.params as u64)}</td>
                        <td class="num">{format::bytes(info.bytes as u64)}</td>
                        {move || shown().then(|| view! { <td></td> })}
                    </tr>
                </tfoot>
            </table>
        </div>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn heat_goes_from_green_to_red() {
        assert_eq!(super::heat(0.98, None), None);
        let (d, c) = super::heat(0.98, Some(0.98)).unwrap();
        assert_eq!((d, c.as_str()), (0.0, "hsl(140 70% 45%)"));
        let (d, c) = super::heat(0.98, Some(0.90)).unwrap();
        assert!((d - 8.0).abs() < 1e-3);
        assert_eq!(c, "hsl(0 70% 45%)");
        // A layer that gains accuracy shows no drop.
        assert_eq!(super::heat(0.9, Some(0.95)).unwrap().0, 0.0);
    }
}
