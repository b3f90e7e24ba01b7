//! The compression card: a global prune ratio and a weight format, applied to the model as it
//! was loaded, with the resulting size, MACs, energy estimate, kernels and timing. The test
//! accuracy of the result appears in the metrics card (the page re-evaluates after each run).

use crate::format;
use crate::state::Phase;
use leptos::prelude::*;
use lithe_app::protocol::{CompressSummary, ExportFormat, FORMATS, recipe_json};

/// Compresses the loaded model without training; every change of a control runs the recipe.
#[component]
pub fn CompressPanel(
    /// The last compression's outcome, if any.
    #[prop(into)]
    result: Signal<Option<CompressSummary>>,
    /// What the worker is doing; controls wait until it is idle.
    #[prop(into)]
    phase: Signal<Phase>,
    /// Global prune ratio in percent (the page keeps it, and the URL says it).
    prune: RwSignal<u32>,
    /// Weight format, a key of [`FORMATS`].
    weights: RwSignal<String>,
    /// Called with the recipe JSON to run.
    on_apply: Callback<String>,
    /// Called with the file the user wants to download.
    on_download: Callback<ExportFormat>,
) -> impl IntoView {
    let fmt = weights;
    let busy = move || phase.with(|p| !matches!(p, Phase::Idle));
    let apply = move || on_apply.run(recipe_json(prune.get_untracked(), &fmt.get_untracked()));
    view! {
        <section class="card compress" aria-labelledby="compress-title">
            <h2 id="compress-title">"Compress"</h2>
            <p class="hint">"Applied to the model as loaded, here in the worker, without retraining; the test accuracy above is measured again after each change."</p>
            <div class="tune-form">
                <label for="compress-prune">{move || format!("Prune {} %", prune.get())}</label>
                <input
                    id="compress-prune"
                    type="range"
                    min="0"
                    max="95"
                    step="5"
                    aria-describedby="compress-prune-hint"
                    prop:value=move || prune.get().to_string()
                    on:input=move |ev| prune.set(event_target_value(&ev).parse().unwrap_or(0))
                    on:change=move |_| apply()
                />
                <span id="compress-prune-hint" class="hint">"Share of the weights removed, smallest magnitudes first, over all layers together (Han et al. 2015)."</span>
                <label for="compress-format">"Weights"</label>
                <select
                    id="compress-format"
                    aria-describedby="compress-format-hint"
                    on:change=move |ev| {
                        fmt.set(event_target_value(&ev));
                        apply();
                    }
                >
                    {FORMATS.iter().map(|(v, l)| view! { <option value=*v selected=move || fmt.get() == *v>{*l}</option> }).collect_view()}
                </select>
                <span id="compress-format-hint" class="hint">"How the kept weights are stored: fewer bits shrink the file; binary and ternary keep only signs."</span>
            </div>
            <div class="actions">
                <button id="compress-apply" type="button" on:click=move |_| apply() prop:disabled=busy>"Apply"</button>
                <button
                    id="compress-reset"
                    type="button"
                    prop:disabled=busy
                    on:click=move |_| {
                        prune.set(0);
                        fmt.set("f32".into());
                        apply();
                    }
                >"Reset"</button>
            </div>
            <div class="actions downloads" role="group" aria-label="Download the current model">
                {ExportFormat::ALL.iter().map(|&f| {
                    let id = match f {
                        ExportFormat::Onnx => "download-onnx",
                        ExportFormat::Lithe => "download-lithe",
                        ExportFormat::Report => "download-report",
                    };
                    view! {
                        <button id=id type="button" class="ghost" prop:disabled=busy on:click=move |_| on_download.run(f)>{f.label()}</button>
                    }
                }).collect_view()}
            </div>
            <p class="hint">".onnx runs in any ONNX runtime (compressed weights stored as f32); .lithe keeps the layers as they are encoded (codebooks, Huffman streams, packed bits, sparse rows) and opens here and in the JS API; the report lists every pass."</p>
            {move || result.get().map(|r| {
                let ratio = r.bytes_before as f64 / r.bytes_after.max(1) as f64;
                let kernels = r
                    .kernels
                    .iter()
                    .map(|(n, k)| format!("{n}: {k}"))
                    .collect::<Vec<_>>()
                    .join(" · ");
                view! {
                    <dl class="facts" aria-live="polite">
                        <div><dt>"Weights"</dt><dd id="compress-bytes">{format!("{} → {} ({ratio:.1}× smaller)", format::bytes(r.bytes_before), format::bytes(r.bytes_after))}</dd></div>
                        <div><dt>"MACs per image"</dt><dd id="compress-macs">{format!("{} → {}", format::int(r.macs_before), format::int(r.macs_after))}</dd></div>
                        <div><dt>"Zero weights"</dt><dd id="compress-sparsity">{format::percent(r.sparsity)}</dd></div>
                        <div><dt>"Energy per image (45 nm estimate)"</dt><dd id="compress-energy">{format!("{:.2} µJ → {:.2} µJ", r.energy_before_pj / 1e6, r.energy_after_pj / 1e6)}</dd></div>
                        <div><dt>"Kernels"</dt><dd id="compress-kernels">{kernels}</dd></div>
                        <div><dt>"Recipe time"</dt><dd id="compress-time">{format::millis(r.millis)}</dd></div>
                    </dl>
                }
            })}
        </section>
    }
}
