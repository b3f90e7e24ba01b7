//! The layer table of a model with its totals.

use crate::format;
use leptos::prelude::*;
use lithe::metrics::ModelInfo;

/// One row per node (name, op, output shape, parameters, f32 bytes) and a totals row.
#[component]
pub fn LayerTable(
    /// The model summary from the worker.
    info: ModelInfo,
) -> impl IntoView {
    let dash_or = |n: usize, f: fn(u64) -> String| {
        if n == 0 {
            "—".to_string()
        } else {
            f(n as u64)
        }
    };
    let rows = info
        .layers
        .into_iter()
        .map(|l| {
            view! {
                <tr>
                    <th scope="row"><code>{l.name}</code></th>
                    <td>{l.op}</td>
                    <td class="num">{format::shape(&l.shape)}</td>
                    <td class="num">{dash_or(l.params, format::int)}</td>
                    <td class="num">{dash_or(l.bytes, format::bytes)}</td>
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
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
                <tfoot>
                    <tr>
                        <th scope="row" colspan="3">"Total"</th>
                        <td class="num">{format::int(info.params as u64)}</td>
                        <td class="num">{format::bytes(info.bytes as u64)}</td>
                    </tr>
                </tfoot>
            </table>
        </div>
    }
}
