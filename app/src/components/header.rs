//! The page header with the engine's status.

use crate::state::Phase;
use leptos::prelude::*;

/// Title, one line on what the page does, and what the engine is doing.
#[component]
pub fn Header(
    /// What the worker is doing; shown as a status line.
    #[prop(into)]
    phase: Signal<Phase>,
) -> impl IntoView {
    view! {
        <header class="top">
            <div class="brand">
                <h1>"Lithe"</h1>
                <p class="tagline">"Make neural networks lightweight, right in your browser."</p>
            </div>
            <p class="status" class:busy=move || phase.get().is_busy() class:dead=move || phase.get() == Phase::Dead
                role="status" aria-live="polite">
                <span class="dot" aria-hidden="true"></span>
                {move || phase.get().label()}
            </p>
        </header>
    }
}
