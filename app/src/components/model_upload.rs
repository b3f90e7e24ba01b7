//! The button that opens a local `.onnx` or `.lithe` file.

use leptos::prelude::*;
use web_sys::HtmlInputElement;

/// A file input styled as a button; the chosen file goes to `on_file`.
#[component]
pub fn ModelUpload(
    /// Called with the file the user picked.
    on_file: Callback<web_sys::File>,
) -> impl IntoView {
    view! {
        <label class="button upload">
            <input type="file" accept=".onnx,.lithe" class="visually-hidden"
                on:change=move |ev| {
                    let input: HtmlInputElement = event_target(&ev);
                    if let Some(file) = input.files().and_then(|list| list.get(0)) {
                        on_file.run(file);
                    }
                    // Picking the same file again must fire `change` again.
                    input.set_value("");
                } />
            "Open an .onnx or .lithe model…"
        </label>
    }
}
