//! The compression card: every pass that needs no training data, each with a one-line hint —
//! global and per-layer prune ratios, unstructured or structured (filter) pruning, an SVD rank,
//! the weight format (linear symmetric/asymmetric, log2, ternary, binary, k-means) and Huffman
//! coding — applied to the model as loaded, with the resulting size, MACs, energy estimate,
//! kernels, weight histograms and timing. The test accuracy of the result appears in the
//! metrics card (the page re-evaluates after each run).

use crate::components::histogram::WeightHistograms;
use crate::format;
use crate::state::Phase;
use leptos::prelude::*;
use lithe_app::protocol::{CompressSummary, ExportFormat, FORMATS, Knobs, RANKS};

/// Compresses the loaded model without training; every change of a control runs the recipe.
#[component]
pub fn CompressPanel(
    /// The last compression's outcome, if any.
    #[prop(into)]
    result: Signal<Option<CompressSummary>>,
    /// What the worker is doing; buttons wait until it is idle.
    #[prop(into)]
    phase: Signal<Phase>,
    /// Every knob of the card (the page keeps them, and the URL says them).
    knobs: RwSignal<Knobs>,
    /// Prunable layers of the model as loaded (Gemm/Conv/MatMul nodes with weights).
    #[prop(into)]
    prunable: Signal<Vec<String>>,
    /// Milliseconds from the last change of a knob to the new accuracy on screen.
    #[prop(into)]
    live_millis: Signal<Option<f64>>,
    /// Called when the knobs changed and the recipe should run.
    on_apply: Callback<()>,
    /// Called when the user asks for the per-layer sensitivity.
    on_sensitivity: Callback<()>,
    /// Called with the file the user wants to download.
    on_download: Callback<ExportFormat>,
) -> impl IntoView {
    let busy = move || phase.with(|p| !matches!(p, Phase::Idle));
    let apply = move || on_apply.run(());
    let prune = move || knobs.with(|k| k.prune);
    let filters = move || knobs.with(|k| k.filters);
    let layer_rows = move || {
        prunable.get().into_iter().map(|name| {
            let id = format!("layer-prune-{}", name.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
            let n1 = name.clone();
            let n2 = name.clone();
            let value = move || knobs.with(|k| k.layers.get(&n1).map_or(String::new(), |p| p.to_string()));
            view! {
                <label for=id.clone()><code>{name.clone()}</code></label>
                <select
                    id=id
                    class="layer-prune"
                    data-layer=name.clone()
                    prop:disabled=filters
                    on:change=move |ev| {
                        let v = event_target_value(&ev);
                        knobs.update(|k| match v.parse::<u32>() {
                            Ok(p) => { k.layers.insert(n2.clone(), p.min(95)); }
                            Err(_) => { k.layers.remove(&n2); }
                        });
                        apply();
                    }
                >
                    <option value="" selected={ let value = value.clone(); move || value().is_empty() }>"global"</option>
                    {(0..=19u32).map(|i| i * 5).map(|p| {
                        let value = value.clone();
                        view! { <option value=p.to_string() selected=move || value() == p.to_string()>{format!("{p} %")}</option> }
                    }).collect_view()}
                </select>
            }
        }).collect_view()
    };
    view! {
        <section class="card compress" aria-labelledby="compress-title">
            <h2 id="compress-title">"Compress"</h2>
            <p class="hint">"Applied to the model as loaded, here in the worker, without retraining; the test accuracy above is measured again after each change."</p>
            <div class="tune-form">
                <label for="compress-prune">{move || format!("Prune {} %", prune())}</label>
                <input
                    id="compress-prune"
                    type="range"
                    min="0"
                    max="95"
                    step="5"
                    aria-describedby="compress-prune-hint"
                    prop:value=move || prune().to_string()
                    on:input=move |ev| knobs.update(|k| k.prune = event_target_value(&ev).parse().unwrap_or(0))
                    on:change=move |_| apply()
                />
                <span id="compress-prune-hint" class="hint">"Share of the weights removed, smallest magnitudes first, over all layers together (Han et al. 2015)."</span>
                <label for="compress-structure">"Pruning"</label>
                <select
                    id="compress-structure"
                    aria-describedby="compress-structure-hint"
                    on:change=move |ev| {
                        let f = event_target_value(&ev) == "filters";
                        knobs.update(|k| k.filters = f);
                        apply();
                    }
                >
                    <option value="weights" selected=move || !filters()>"unstructured (single weights)"</option>
                    <option value="filters" selected=filters>"structured (whole neurons / filters)"</option>
                </select>
                <span id="compress-structure-hint" class="hint">"Structured removes whole output channels by L1 norm (Li et al. 2017): the layers get thinner, so MACs drop without a sparse kernel."</span>
                <label for="compress-rank">"SVD rank"</label>
                <select
                    id="compress-rank"
                    aria-describedby="compress-rank-hint"
                    on:change=move |ev| {
                        let r = event_target_value(&ev).parse().unwrap_or(0);
                        knobs.update(|k| k.rank = r);
                        apply();
                    }
                >
                    {RANKS.iter().map(|&r| view! {
                        <option value=r.to_string() selected=move || knobs.with(|k| k.rank == r)>{if r == 0 { "off".to_string() } else { r.to_string() }}</option>
                    }).collect_view()}
                </select>
                <span id="compress-rank-hint" class="hint">"Factors each dense layer into two thin ones of this rank (truncated SVD); a layer that would not shrink is left alone."</span>
                <label for="compress-format">"Weights"</label>
                <select
                    id="compress-format"
                    aria-describedby="compress-format-hint"
                    on:change=move |ev| {
                        let f = event_target_value(&ev);
                        knobs.update(|k| k.weights = f);
                        apply();
                    }
                >
                    {FORMATS.iter().map(|(v, l)| view! { <option value=*v selected=move || knobs.with(|k| k.weights == *v)>{*l}</option> }).collect_view()}
                </select>
                <span id="compress-format-hint" class="hint">"How the kept weights are stored: symmetric centres the codes on zero, asymmetric fits [min, max]; log2 keeps powers of two, binary and ternary only signs, k-means a small shared codebook."</span>
                <label for="compress-huffman">"Huffman"</label>
                <input
                    id="compress-huffman"
                    type="checkbox"
                    aria-describedby="compress-huffman-hint"
                    prop:checked=move || knobs.with(|k| k.huffman)
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        knobs.update(|k| k.huffman = on);
                        apply();
                    }
                />
                <span id="compress-huffman-hint" class="hint">"Entropy-codes the .lithe file's code and gap streams (Deep Compression stage 3); off stores them at fixed width."</span>
            </div>
            <details class="per-layer">
                <summary>"Per-layer prune ratios"</summary>
                <p class="hint">"Override the global ratio for one layer; with any override set, every layer is pruned at its own ratio (unstructured pruning only)."</p>
                <div class="tune-form layer-form">{layer_rows}</div>
            </details>
            <div class="actions">
                <button id="compress-apply" type="button" on:click=move |_| apply() prop:disabled=busy>"Apply"</button>
                <button
                    id="compress-reset"
                    type="button"
                    prop:disabled=busy
                    on:click=move |_| {
                        knobs.set(Knobs::default());
                        apply();
                    }
                >"Reset"</button>
                <button id="sensitivity-start" type="button" class="ghost" prop:disabled=busy
                    title="Accuracy drop when only one layer is compressed with these settings"
                    on:click=move |_| on_sensitivity.run(())>"Layer sensitivity"</button>
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
                let histograms = r.histograms.clone();
                view! {
                    <dl class="facts" aria-live="polite">
                        <div><dt>"Weights"</dt><dd id="compress-bytes">{format!("{} → {} ({ratio:.1}× smaller)", format::bytes(r.bytes_before), format::bytes(r.bytes_after))}</dd></div>
                        <div><dt>{format!(".lithe file ({})", if r.huffman { "Huffman" } else { "fixed-width" })}</dt><dd id="compress-lithe">{format::bytes(r.lithe_bytes)}</dd></div>
                        <div><dt>"MACs per image"</dt><dd id="compress-macs">{format!("{} → {}", format::int(r.macs_before), format::int(r.macs_after))}</dd></div>
                        <div><dt>"Zero weights"</dt><dd id="compress-sparsity">{format::percent(r.sparsity)}</dd></div>
                        <div><dt>"Energy per image (45 nm estimate)"</dt><dd id="compress-energy">{format!("{:.2} µJ → {:.2} µJ", r.energy_before_pj / 1e6, r.energy_after_pj / 1e6)}</dd></div>
                        <div><dt>"Kernels"</dt><dd id="compress-kernels">{kernels}</dd></div>
                        <div><dt>"Recipe time"</dt><dd id="compress-time">{format!("{} + {} plan, sizes, histograms", format::millis(r.millis), format::millis(r.extra_millis))}</dd></div>
                        <div><dt>"Change → new accuracy"</dt><dd id="live-time">{move || live_millis.get().map_or("…".to_string(), format::millis)}</dd></div>
                    </dl>
                    <WeightHistograms histograms=histograms />
                }
            })}
        </section>
    }
}
