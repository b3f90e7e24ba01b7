//! The fine-tuning card: epochs and learning rate, optionally a teacher to distill from (with
//! its temperature and weight), Start / Cancel, a progress bar, live loss and training accuracy
//! with a small loss curve, and the outcome of the last job.

use crate::format;
use crate::state::{Phase, Training};
use leptos::prelude::*;
use lithe_app::protocol::{DistillSettings, MAX_EPOCHS, MAX_LOTTERY_ROUNDS, TrainKnobs};

/// Fine-tunes the loaded model on 6,000 MNIST training images.
#[component]
pub fn FineTunePanel(
    /// The job's state: running, progress, losses, last outcome.
    #[prop(into)]
    training: Signal<Training>,
    /// What the worker is doing; Start waits until it is idle.
    #[prop(into)]
    phase: Signal<Phase>,
    /// Called with (epochs, learning rate, distillation) when the user starts a job. Values
    /// that do not parse arrive as 0 / NaN and are rejected (the error banner explains).
    on_start: Callback<(u32, f32, Option<DistillSettings>)>,
    /// Called when the user cancels the running job.
    on_cancel: Callback<()>,
    /// Called with (prune rate per round, rounds, epochs per run) to train a lottery ticket.
    /// Values that do not parse arrive as NaN / 0 and are rejected.
    on_lottery: Callback<(f32, u32, u32)>,
    /// The card's knobs as the URL keeps them: read at start, written back on every change.
    knobs: RwSignal<TrainKnobs>,
) -> impl IntoView {
    let init = knobs.get_untracked();
    let epochs = RwSignal::new(init.epochs);
    let lr = RwSignal::new(init.lr);
    let teacher = RwSignal::new(init.teacher);
    let temperature = RwSignal::new(init.temperature);
    let alpha = RwSignal::new(init.alpha);
    let ta = RwSignal::new(init.ta);
    let rate = RwSignal::new(init.rate);
    let rounds = RwSignal::new(init.rounds);
    Effect::new(move |_| {
        knobs.set(TrainKnobs {
            epochs: epochs.get(),
            lr: lr.get(),
            teacher: teacher.get(),
            temperature: temperature.get(),
            alpha: alpha.get(),
            ta: ta.get(),
            rate: rate.get(),
            rounds: rounds.get(),
        })
    });
    let running = move || training.with(|t| t.running);
    let start_disabled = move || running() || phase.with(|p| !matches!(p, Phase::Idle));
    let start = move |_| {
        let e = epochs.with(|s| s.trim().parse::<u32>().unwrap_or(0));
        let r = lr.with(|s| s.trim().parse::<f32>().unwrap_or(f32::NAN));
        let t = teacher.get_untracked();
        let d = (!t.is_empty()).then(|| DistillSettings {
            teacher: t,
            temperature: temperature.with(|s| s.trim().parse().unwrap_or(f32::NAN)),
            alpha: alpha.with(|s| s.trim().parse().unwrap_or(f32::NAN)),
            ta: Some(ta.get_untracked()).filter(|t| !t.is_empty()),
        });
        on_start.run((e, r, d));
    };
    let live = move || {
        training.with(|t| {
            t.last.map(|p| {
                let (done, total) = p.overall();
                (p, done, total, format::polyline(&t.losses, 200.0, 40.0))
            })
        })
    };
    view! {
        <section class="card tune" aria-labelledby="tune-title">
            <h2 id="tune-title">"Fine-tune"</h2>
            <p class="hint">"Train the loaded model further on 6,000 MNIST training images, here in the worker; the test accuracy is measured again afterwards."</p>
            <div class="tune-form">
                <label for="tune-epochs">"Epochs"</label>
                <input
                    id="tune-epochs"
                    type="number"
                    min="1"
                    max=MAX_EPOCHS.to_string()
                    step="1"
                    aria-describedby="tune-epochs-hint"
                    prop:value=move || epochs.get()
                    on:input=move |ev| epochs.set(event_target_value(&ev))
                    prop:disabled=running
                />
                <span id="tune-epochs-hint" class="hint">{format!("Passes over the 6,000 images, 1 to {MAX_EPOCHS} (94 steps of 64 each).")}</span>
                <label for="tune-lr">"Learning rate"</label>
                <input
                    id="tune-lr"
                    type="number"
                    min="0.000001"
                    max="1"
                    step="any"
                    aria-describedby="tune-lr-hint"
                    prop:value=move || lr.get()
                    on:input=move |ev| lr.set(event_target_value(&ev))
                    prop:disabled=running
                />
                <span id="tune-lr-hint" class="hint">"Adam's starting rate, decayed along a cosine; 0.0001 nudges a trained model, 0.001 moves it a lot."</span>
                <label for="tune-teacher">"Teacher"</label>
                <select
                    id="tune-teacher"
                    aria-describedby="tune-teacher-hint"
                    on:change=move |ev| teacher.set(event_target_value(&ev))
                    prop:disabled=running
                >
                    <option value="" selected=move || teacher.get().is_empty()>"none (labels only)"</option>
                    {lithe::zoo::Arch::ALL.iter().map(|a| {
                        let name = a.name();
                        view! { <option value=name selected=move || teacher.get() == name>{name}</option> }
                    }).collect_view()}
                </select>
                <span id="tune-teacher-hint" class="hint">"Knowledge distillation: the model also learns to match a zoo model's softened outputs (a bigger teacher such as lenet-5 helps a small model)."</span>
                {move || (!teacher.get().is_empty()).then(|| view! {
                    <label for="tune-temperature">"Temperature T"</label>
                    <input
                        id="tune-temperature"
                        type="number"
                        min="0.1"
                        max="100"
                        step="any"
                        aria-describedby="tune-temperature-hint"
                        prop:value=move || temperature.get()
                        on:input=move |ev| temperature.set(event_target_value(&ev))
                        prop:disabled=running
                    />
                    <span id="tune-temperature-hint" class="hint">"Softens both models' outputs before they are compared (logits standardised first); 1–20 all work, 4 is a good start."</span>
                    <label for="tune-alpha">"Teacher weight α"</label>
                    <input
                        id="tune-alpha"
                        type="number"
                        min="0"
                        max="1"
                        step="0.05"
                        aria-describedby="tune-alpha-hint"
                        prop:value=move || alpha.get()
                        on:input=move |ev| alpha.set(event_target_value(&ev))
                        prop:disabled=running
                    />
                    <span id="tune-alpha-hint" class="hint">"Share of the loss that comes from the teacher; the rest comes from the labels."</span>
                    <label for="tune-ta">"Teaching assistant"</label>
                    <select
                        id="tune-ta"
                        aria-describedby="tune-ta-hint"
                        on:change=move |ev| ta.set(event_target_value(&ev))
                        prop:disabled=running
                    >
                        <option value="" selected=move || ta.get().is_empty()>"none (teacher → model)"</option>
                        {lithe::zoo::Arch::ALL.iter().map(|a| {
                            let name = a.name();
                            view! { <option value=name selected=move || ta.get() == name>{name}</option> }
                        }).collect_view()}
                    </select>
                    <span id="tune-ta-hint" class="hint">"Teacher → assistant → model (Mirzadeh et al. 2020): a mid-sized zoo model first learns from the teacher, then teaches; twice the training time."</span>
                })}
            </div>
            <div class="actions">
                <button id="tune-start" type="button" on:click=start prop:disabled=start_disabled>"Start"</button>
                {move || running().then(|| {
                    let cancelling = move || training.with(|t| t.cancelling);
                    view! {
                        <button
                            id="tune-cancel"
                            type="button"
                            on:click=move |_| on_cancel.run(())
                            prop:disabled=cancelling
                        >
                            {move || if cancelling() { "Cancelling…" } else { "Cancel" }}
                        </button>
                    }
                })}
            </div>
            <details class="lottery">
                <summary>"Lottery ticket"</summary>
                <p class="hint">"Frankle & Carbin 2019: train from the zoo model's initial weights, remove the smallest weights of each layer, rewind the rest to their initial values, repeat; then train the ticket. Replaces the current model (zoo models only). Cancel stops it by restarting the engine's worker, which reloads the model as loaded with the compression settings."</p>
                <div class="tune-form">
                    <label for="lottery-rate">"Prune per round"</label>
                    <input id="lottery-rate" type="number" min="0.05" max="0.9" step="0.05"
                        aria-describedby="lottery-rate-hint"
                        prop:value=move || rate.get()
                        on:input=move |ev| rate.set(event_target_value(&ev))
                        prop:disabled=running />
                    <span id="lottery-rate-hint" class="hint">"Share of the surviving weights removed after each run."</span>
                    <label for="lottery-rounds">"Rounds"</label>
                    <input id="lottery-rounds" type="number" min="1" max=MAX_LOTTERY_ROUNDS.to_string() step="1"
                        aria-describedby="lottery-rounds-hint"
                        prop:value=move || rounds.get()
                        on:input=move |ev| rounds.set(event_target_value(&ev))
                        prop:disabled=running />
                    <span id="lottery-rounds-hint" class="hint">"Prune-and-rewind rounds; each trains for the epochs above (rounds + 1 runs in all)."</span>
                </div>
                <button id="lottery-start" type="button" prop:disabled=start_disabled
                    on:click=move |_| {
                        let e = epochs.with(|s| s.trim().parse::<u32>().unwrap_or(0));
                        let r = rate.with(|s| s.trim().parse::<f32>().unwrap_or(f32::NAN));
                        let n = rounds.with(|s| s.trim().parse::<u32>().unwrap_or(0));
                        on_lottery.run((r, n, e));
                    }>"Train a ticket"</button>
            </details>
            {move || live().map(|(p, done, total, points)| view! {
                <div class="progress">
                    <progress id="tune-progress" max=total value=done aria-label="Fine-tuning progress"></progress>
                    <span>{format!("epoch {} / {} · step {} / {}", p.epoch + 1, p.epochs, p.step, p.steps)}</span>
                </div>
                <dl class="facts" aria-live="polite">
                    <div><dt>"Training loss"</dt><dd id="tune-loss">{format!("{:.4}", p.loss)}</dd></div>
                    <div><dt>"Training accuracy"</dt><dd id="tune-acc">{format::percent(p.accuracy)}</dd></div>
                </dl>
                <svg class="loss-curve" viewBox="-2 -2 204 44" preserveAspectRatio="none" role="img" aria-label="Training loss per report">
                    <polyline points=points fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke"></polyline>
                </svg>
            })}
            {move || training.with(|t| (!t.rounds.is_empty()).then(|| t.rounds.clone())).map(|rounds| view! {
                <ol id="lottery-rounds-list" class="rounds" aria-label="Lottery runs">
                    {rounds.into_iter().map(|r| view! {
                        <li>{format!("run {}: {:.1} % of the weights kept → {}", r.round, r.kept * 100.0, r.accuracy.map_or("—".to_string(), format::percent))}</li>
                    }).collect_view()}
                </ol>
            })}
            {move || training.with(|t| t.result.clone()).map(|r| {
                let plural = if r.epochs_done == 1 { "" } else { "s" };
                let what = if r.cancelled {
                    format!("Cancelled after {} steps ({} full epoch{plural})", r.steps, r.epochs_done)
                } else {
                    format!("Done: {} epoch{plural}, {} steps", r.epochs_done, r.steps)
                };
                let change = r.before.zip(r.after).map(|(b, a)| format!(" · test accuracy {} → {} ({})", format::percent(b), format::percent(a), format::points(b, a)));
                let restarted = match (r.restarted, r.restored) {
                    (false, _) => None,
                    (true, false) => Some(" · the engine's worker was restarted to stop it: the model is back as loaded, with the compression settings re-applied"),
                    (true, true) => Some(" · the engine's worker was restarted to stop it: the model is back as it was before the job, its trained weights restored"),
                };
                view! {
                    <p id="tune-result" class="tune-result" role="status">
                        {what}
                        {format!(" in {}", format::millis(r.millis))}
                        {r.millis_per_epoch.map(|m| format!(" ({} per epoch)", format::millis(m)))}
                        {change}
                        {restarted}
                    </p>
                }
            })}
        </section>
    }
}
