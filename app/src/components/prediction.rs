//! The model's answer for the drawn digit, as ten bars.

use leptos::prelude::*;

/// Ten bars, one per digit, with the most likely one highlighted.
#[component]
pub fn Prediction(
    /// Class probabilities of the current drawing; `None` when the pad is empty.
    #[prop(into)]
    probs: Signal<Option<Vec<f32>>>,
    /// Where they were computed (`webgpu` or `cpu`), if known.
    #[prop(optional, into)]
    device: Signal<Option<String>>,
    /// The drawing changed since the shown answer, whose update is on its way (`aria-busy`).
    #[prop(optional, into)]
    busy: Signal<bool>,
) -> impl IntoView {
    let best = move || {
        probs.with(|p| {
            p.as_ref().and_then(|p| {
                p.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, &v)| (i, v))
            })
        })
    };
    let prob = move |digit: usize| {
        probs.with(|p| {
            p.as_ref()
                .and_then(|p| p.get(digit).copied())
                .unwrap_or(0.0)
        })
    };
    view! {
        <div class="prediction" aria-busy=move || busy.get().to_string()>
            <p class="verdict" aria-live="polite">
                {move || match best() {
                    Some((d, p)) => view! {
                        "Looks like a " <strong class="answer">{d}</strong>
                        <span class="muted">{format!(" ({:.1} % sure)", p * 100.0)}</span>
                    }.into_any(),
                    None => view! { <span class="muted">"Draw a digit, 0 to 9."</span> }.into_any(),
                }}
            </p>
            {move || probs.with(Option::is_some).then(|| device.get()).flatten().map(|d| view! {
                <p id="classified-on" class="hint" data-device=d.clone()>
                    {if d == "webgpu" { "Computed on WebGPU" } else { "Computed on the CPU" }}
                </p>
            })}
            <ol class="bars" aria-label="Probability of each digit">
                {(0..10usize).map(|d| view! {
                    // The exact probability, for tests and tools.
                    <li class:best=move || best().is_some_and(|(b, _)| b == d) data-p=move || prob(d).to_string()>
                        <span class="digit">{d}</span>
                        <span class="bar" aria-hidden="true">
                            <span class="fill" style:width=move || format!("{:.1}%", prob(d) * 100.0)></span>
                        </span>
                        <span class="pct">{move || format!("{:.1} %", prob(d) * 100.0)}</span>
                    </li>
                }).collect_view()}
            </ol>
        </div>
    }
}
