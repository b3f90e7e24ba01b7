//! The model card: where the model came from, its layer table, and ways to change it.

use crate::components::layer_table::LayerTable;
use crate::components::model_upload::ModelUpload;
use crate::format;
use crate::state::LoadedModel;
use leptos::prelude::*;
use lithe_app::protocol::Sensitivity;

/// Shows the loaded model (or a placeholder) with buttons to open a file or go back to the
/// zoo model.
#[component]
pub fn ModelPanel(
    /// The model the worker holds, once one is loaded.
    #[prop(into)]
    model: Signal<Option<LoadedModel>>,
    /// Called with an `.onnx` or `.lithe` file the user picked or dropped on the card.
    on_file: Callback<web_sys::File>,
    /// Called when the user asks for the selected zoo model again.
    on_default: Callback<()>,
    /// The zoo model chosen in the picker.
    #[prop(into)]
    zoo: Signal<String>,
    /// Called with a zoo model name picked from the list.
    on_zoo: Callback<String>,
    /// Per-layer sensitivity, once measured (a heat strip column in the layer table).
    #[prop(into)]
    sensitivity: Signal<Option<Sensitivity>>,
) -> impl IntoView {
    view! {
        <section
            class="card model"
            aria-labelledby="model-title"
            // Dropping a file anywhere on the card opens it, like the button.
            on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default()
            on:drop=move |ev: web_sys::DragEvent| {
                ev.prevent_default();
                if let Some(f) = ev.data_transfer().and_then(|d| d.files()).and_then(|l| l.get(0)) {
                    on_file.run(f);
                }
            }
        >
            <div class="card-head">
                <h2 id="model-title">"Model"</h2>
                <div class="actions">
                    <label class="visually-hidden" for="zoo-picker">"Zoo model"</label>
                    <select
                        id="zoo-picker"
                        title="Models trained on MNIST that ship with the page"
                        on:change=move |ev| on_zoo.run(event_target_value(&ev))
                    >
                        {lithe::zoo::Arch::ALL.iter().map(|a| {
                            let name = a.name();
                            view! { <option value=name selected=move || zoo.get() == name>{name}</option> }
                        }).collect_view()}
                    </select>
                    <ModelUpload on_file=on_file />
                    <button type="button" class="ghost" on:click=move |_| on_default.run(())>
                        "Reload zoo model"
                    </button>
                </div>
            </div>
            {move || match model.get() {
                None => view! { <p class="placeholder">"Loading the model…"</p> }.into_any(),
                Some(m) => view! {
                    <p class="model-meta">
                        <strong id="model-source">{m.source}</strong>
                        <span>{format!("file {}", format::bytes(m.file_bytes))}</span>
                        <span>{format!("{} params", format::int(m.info.params as u64))}</span>
                        <span>{format!("{} MACs / image", format::int(m.info.macs))}</span>
                    </p>
                    <LayerTable info=m.info sensitivity=sensitivity />
                }
                .into_any(),
            }}
        </section>
    }
}
