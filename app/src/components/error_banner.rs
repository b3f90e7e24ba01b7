//! A dismissible banner for errors reported by the worker or the page.

use crate::state::Notice;
use leptos::prelude::*;

/// Shows the current notice, if any, with a button that dismisses it.
#[component]
pub fn ErrorBanner(
    /// The notice to show; dismissing sets it to `None`.
    notice: RwSignal<Option<Notice>>,
) -> impl IntoView {
    move || {
        notice.get().map(|n| {
            view! {
                <div class="banner" role="alert">
                    <div class="banner-text">
                        <strong>{n.title}</strong>
                        <p>{n.message}</p>
                        <p class="code">"code: " <code>{n.code}</code></p>
                    </div>
                    <button type="button" class="ghost" aria-label="Dismiss this message"
                        on:click=move |_| notice.set(None)>"×"</button>
                </div>
            }
        })
    }
}
