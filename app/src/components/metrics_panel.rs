//! Test-set accuracy, evaluation time and per-class accuracy.

use crate::format;
use crate::state::{Evaluation, Phase};
use leptos::prelude::*;
use lithe_app::protocol::Stage;

/// The evaluation of the loaded model on the MNIST test set, or its progress.
///
/// `#accuracy` holds only the percentage (e.g. `98.37 %`) once known, and never a percentage
/// before: an end-to-end test polls it.
#[component]
pub fn MetricsPanel(
    /// The last finished evaluation of the current model.
    #[prop(into)]
    eval: Signal<Option<Evaluation>>,
    /// What the worker is doing; drives the progress bar.
    #[prop(into)]
    phase: Signal<Phase>,
    /// The test accuracy before the last fine-tuning or compression of this model, to show the
    /// change.
    #[prop(into)]
    before: Signal<Option<f32>>,
    /// Where the worker runs inference, `(kind, detail)`, once it has said.
    #[prop(into)]
    device: Signal<Option<(String, String)>>,
) -> impl IntoView {
    let device_text = move || {
        device.get().map(|(kind, detail)| match kind.as_str() {
            "webgpu" => format!("WebGPU: {detail}"),
            _ => format!("CPU — {detail}"),
        })
    };
    let change = move || {
        let after = eval.with(|e| e.as_ref().map(|e| e.report.accuracy))?;
        let b = before.get()?;
        Some(format!(
            "{} vs {} before",
            format::points(b, after),
            format::percent(b)
        ))
    };
    let accuracy = move || {
        eval.with(|e| {
            e.as_ref()
                .map_or_else(|| "—".to_string(), |e| format::percent(e.report.accuracy))
        })
    };
    let progress = move || match phase.get() {
        Phase::Busy {
            stage: Stage::Evaluate,
            done,
            total,
        } => Some((done, total)),
        _ => None,
    };
    view! {
        <section class="card metrics" aria-labelledby="metrics-title">
            <h2 id="metrics-title">"Test accuracy"</h2>
            <p class="big" aria-live="polite"><span id="accuracy">{accuracy}</span></p>
            {move || change().map(|c| view! { <p id="accuracy-change" class="change">{c}</p> })}
            {move || device_text().map(|d| view! {
                <p class="device" title="Where the drawn digit is classified; add &amp;device=webgpu or &amp;device=cpu to the URL to choose">
                    "Inference: " <span id="device">{d}</span>
                </p>
            })}
            {move || progress().map(|(done, total)| view! {
                <div class="progress">
                    <progress max=total value=done aria-label="Evaluation progress"></progress>
                    <span>{format!("{} / {} images", format::int(done as u64), format::int(total as u64))}</span>
                </div>
            })}
            {move || eval.get().map(|e| {
                let count = e.report.count.max(1) as f64;
                let rate = if e.millis > 0.0 { count * 1000.0 / e.millis } else { 0.0 };
                view! {
                    <dl class="facts">
                        <div><dt>"Test images"</dt><dd>{format::int(e.report.count as u64)}</dd></div>
                        <div>
                            <dt>"Evaluation time"</dt>
                            <dd id="eval-time">{format::millis(e.millis)}</dd>
                        </div>
                        <div><dt>"Throughput"</dt><dd>{format!("{} images/s", format::int(rate as u64))}</dd></div>
                        <div><dt>"Mean loss"</dt><dd>{format!("{:.4}", e.report.loss)}</dd></div>
                    </dl>
                    <h3>"Per digit"</h3>
                    <ol class="per-class">
                        {e.report.per_class.iter().enumerate().map(|(digit, acc)| view! {
                            <li>
                                <span class="digit">{digit}</span>
                                <span class="pct">{format!("{:.1}", acc * 100.0)}</span>
                            </li>
                        }).collect_view()}
                    </ol>
                }
            })}
        </section>
    }
}
