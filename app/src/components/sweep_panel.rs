//! The sweep card: one click prunes the model as loaded at 0 → 95 % with the current weight
//! format, measures every point on the test set, and plots accuracy against the compression
//! ratio. Earlier sweeps stay on the chart, and the Pareto front over all of them is drawn on
//! top, with the current model marked.

use crate::format;
use crate::state::Phase;
use leptos::prelude::*;
use lithe_app::sweep::{self, HEIGHT, SweepKind, SweepPoint, WIDTH};

/// One sweep: what it ran and the points measured so far.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// What the sweep varied, for the legend.
    pub label: String,
    /// How many points it asked for.
    pub total: usize,
    /// Points in the order they arrived.
    pub points: Vec<SweepPoint>,
}

/// The sweep chart and its button.
#[component]
pub fn SweepPanel(
    /// Every sweep run on this model, oldest first.
    #[prop(into)]
    sweeps: Signal<Vec<Sweep>>,
    /// The current model's point (after the last compression), if measured.
    #[prop(into)]
    current: Signal<Option<SweepPoint>>,
    /// What the worker is doing; the button waits until it is idle.
    #[prop(into)]
    phase: Signal<Phase>,
    /// Called when the user starts a sweep of the prune ratio or of the bit width.
    on_sweep: Callback<SweepKind>,
) -> impl IntoView {
    let busy = move || phase.with(|p| !matches!(p, Phase::Idle));
    let ranges = move || {
        sweeps.with(|s| {
            let cur = current.get();
            sweep::ranges(s.iter().flat_map(|w| w.points.iter()).chain(cur.iter()))
        })
    };
    let status = move || {
        sweeps.with(|s| {
            s.last().map(|w| {
                let n = w.points.len();
                if n < w.total {
                    format!("Sweeping ({}): {n} of {} points", w.label, w.total)
                } else {
                    let best = w
                        .points
                        .iter()
                        .filter(|p| p.accuracy >= w.points[0].accuracy - 0.01)
                        .map(|p| p.ratio)
                        .fold(1.0f64, f64::max);
                    format!(
                        "Done ({}): {n} points; within 1 pp of the first point up to {best:.1}× smaller",
                        w.label
                    )
                }
            })
        })
    };
    view! {
        <section class="card sweep" aria-labelledby="sweep-title">
            <h2 id="sweep-title">"Sweep"</h2>
            <p class="hint">"Compresses the model as loaded at 0, 10, …, 90 and 95 % pruning with the weight format chosen above (or at float32, int8, int4, int2 and binary weights with the prune ratio chosen above), and measures each point on the 10,000 test images. Earlier sweeps stay for comparison; the dashed line is the best trade-off found so far."</p>
            <div class="actions">
                <button id="sweep-start" type="button" prop:disabled=busy on:click=move |_| on_sweep.run(SweepKind::Prune)>"Sweep prune 0 → 95 %"</button>
                <button id="sweep-bits" type="button" class="ghost" prop:disabled=busy on:click=move |_| on_sweep.run(SweepKind::Bits)>"Sweep bits 32 → 1"</button>
            </div>
            <p id="sweep-status" role="status">{status}</p>
            <svg
                class="sweep-chart"
                viewBox=format!("-40 -10 {} {}", WIDTH + 60.0, HEIGHT + 40.0)
                role="img"
                aria-label="Test accuracy against compression ratio"
            >
                {move || {
                    let r = ranges();
                    let (max_x, min_y) = r;
                    let ticks_x: Vec<_> = (0..=max_x as u32).map(|k| {
                        let x = k as f64 / max_x * WIDTH;
                        view! { <text x=x y=HEIGHT + 14.0 class="tick" text-anchor="middle">{format!("{}×", 1u64 << k)}</text> }
                    }).collect();
                    let steps = ((1.0 - min_y) * 10.0).round() as u32;
                    let ticks_y: Vec<_> = (0..=steps).map(|k| {
                        let a = min_y + k as f64 / 10.0;
                        let y = HEIGHT * (1.0 - (a - min_y) / (1.0 - min_y).max(1e-9));
                        view! { <text x=-6 y=y + 3.0 class="tick" text-anchor="end">{format!("{:.0} %", a * 100.0)}</text> }
                    }).collect();
                    let lines: Vec<_> = sweeps.with(|s| s.iter().enumerate().map(|(i, w)| {
                        let pts = sweep::polyline(&w.points, r);
                        let dots: Vec<_> = w.points.iter().map(|p| {
                            let (x, y) = sweep::xy(p, r);
                            view! { <circle cx=x cy=y r="2.5" class=format!("series-{}", i % 4)><title>{format!("{} · prune {} %: {} at {:.1}×", w.label, p.prune, format::percent(p.accuracy), p.ratio)}</title></circle> }
                        }).collect();
                        view! {
                            <polyline points=pts fill="none" class=format!("series-{}", i % 4) stroke-width="1.5"></polyline>
                            {dots}
                        }
                    }).collect());
                    let front = sweeps.with(|s| {
                        let all: Vec<SweepPoint> = s.iter().flat_map(|w| w.points.iter().copied()).collect();
                        sweep::polyline(&sweep::pareto(&all), r)
                    });
                    let cur = current.get().map(|p| {
                        let (x, y) = sweep::xy(&p, r);
                        view! { <circle id="sweep-current" cx=x cy=y r="5" class="current"><title>{format!("current model: {} at {:.1}×", format::percent(p.accuracy), p.ratio)}</title></circle> }
                    });
                    view! {
                        <rect x="0" y="0" width=WIDTH height=HEIGHT class="plot"></rect>
                        {ticks_x}
                        {ticks_y}
                        {lines}
                        <polyline points=front fill="none" class="front" stroke-dasharray="4 3"></polyline>
                        {cur}
                    }
                }}
            </svg>
            <ul class="legend">
                {move || sweeps.with(|s| s.iter().enumerate().map(|(i, w)| view! {
                    <li class=format!("series-{}", i % 4)>{format!("sweep {} · {}", i + 1, w.label)}</li>
                }).collect::<Vec<_>>())}
            </ul>
        </section>
    }
}
