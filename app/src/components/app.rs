//! The root component: owns the UI state and the link to the worker, and lays out the cards.

use crate::bridge::{LinkEvent, WorkerLink, js_text, now_ms};
use crate::components::compress_panel::CompressPanel;
use crate::components::draw_pad::DrawPad;
use crate::components::error_banner::ErrorBanner;
use crate::components::fine_tune_panel::FineTunePanel;
use crate::components::header::Header;
use crate::components::metrics_panel::MetricsPanel;
use crate::components::model_panel::ModelPanel;
use crate::components::prediction::Prediction;
use crate::components::sweep_panel::{Sweep, SweepPanel};
use crate::state::{Evaluation, LoadedModel, Notice, Phase, TrainResult, TrainStep, Training};
use leptos::prelude::*;
use lithe::metrics::ModelInfo;
use lithe_app::heartbeat::stall_timeout;
use lithe_app::protocol::{
    Checkpoint, CompressSummary, DistillSettings, ExportFormat, Knobs, PANIC, Request, Response,
    Sensitivity, SharedState, Stage, check_distill, check_fine_tune, check_lottery,
};
use lithe_app::sweep::{self, SweepKind, SweepPoint};
use wasm_bindgen_futures::JsFuture;

/// Restarts allowed in a row (without a successful evaluation in between) before giving up.
const MAX_RESTARTS: u32 = 3;
/// Largest model file the page accepts.
const MAX_UPLOAD_BYTES: f64 = 512.0 * 1024.0 * 1024.0;

/// Bookkeeping that does not drive rendering.
#[derive(Default)]
struct Control {
    /// What the user asked to load last, shown once it is loaded.
    requested: String,
    /// The current drawing, if any.
    digit: Option<Vec<u8>>,
    /// A `Classify` is on its way; newer drawings wait for its answer.
    classifying: bool,
    /// The drawing changed while a `Classify` was on its way.
    dirty: bool,
    /// Restarts since the last successful evaluation.
    restarts: u32,
    /// The link asked for a compression: run it once the model is evaluated.
    pending_compress: bool,
    /// When (page clock, ms) the last knob change sent its `Compress`; cleared when the new
    /// accuracy arrives.
    live_t0: Option<f64>,
    /// The worker is being restarted: load the current model again once it is ready.
    recovering: bool,
    /// When (page clock, ms) the running training job started.
    job_t0: f64,
    /// The restart cancelled a lottery job: keep its "cancelled" result over the reload.
    keep_training: bool,
    /// A lottery job was sent and its [`Response::Checkpoint`] has not arrived yet.
    awaiting_checkpoint: bool,
    /// Cancel was clicked before that checkpoint arrived: cancel once it does.
    cancel_on_checkpoint: bool,
}

/// What a running lottery job would take with it if the page cancelled it by replacing the
/// worker: the worker's [`Checkpoint`] (`None` when the model as loaded and the knobs rebuild
/// the current model) and the card's figures at the start of the job.
struct Saved {
    checkpoint: Option<Checkpoint>,
    compressed: Option<CompressSummary>,
    before: Option<f32>,
}

/// The playground.
#[component]
pub fn App() -> impl IntoView {
    let phase = RwSignal::new(Phase::Starting);
    let model = RwSignal::new(None::<LoadedModel>);
    let eval = RwSignal::new(None::<Evaluation>);
    let probs = RwSignal::new(None::<Vec<f32>>);
    // Where the shown probabilities were computed (`webgpu` or `cpu`).
    let classified_on = RwSignal::new(None::<String>);
    // The shown answer is not yet the current drawing's.
    let classify_pending = RwSignal::new(false);
    let notice = RwSignal::new(None::<Notice>);
    let training = RwSignal::new(Training::default());
    let compressed = RwSignal::new(None::<CompressSummary>);
    let sweeps = RwSignal::new(Vec::<Sweep>::new());
    // Test accuracy before the last finished fine-tuning of the current model.
    let before = RwSignal::new(None::<f32>);
    // What a shared link asked for: the zoo model and the compression knobs.
    let shared = SharedState::from_fragment(&location_hash());
    let zoo = RwSignal::new(shared.model.clone());
    let knobs = RwSignal::new(shared.knobs.clone());
    let train_knobs = RwSignal::new(shared.train.clone());
    let device_pref = shared.device;
    // Where the worker runs inference: `(kind, detail)` once it has answered.
    let device = RwSignal::new(None::<(String, String)>);
    // The model as loaded (the per-layer knobs and the sensitivity name its layers).
    let loaded_info = RwSignal::new(None::<ModelInfo>);
    let prunable = Memo::new(move |_| {
        loaded_info.with(|i| {
            i.as_ref().map_or_else(Vec::new, |i| {
                i.layers
                    .iter()
                    .filter(|l| l.params > 0 && matches!(l.op.as_str(), "Gemm" | "Conv" | "MatMul"))
                    .map(|l| l.name.clone())
                    .collect()
            })
        })
    });
    let sensitivity = RwSignal::new(None::<Sensitivity>);
    let live_millis = RwSignal::new(None::<f64>);
    // An uploaded file, kept (as a handle, not its bytes) to load it again after a restart.
    let file = StoredValue::new_local(None::<web_sys::File>);
    let ctl = StoredValue::new(Control {
        pending_compress: shared.compresses(),
        ..Control::default()
    });
    // The URL always says what is on screen, so it can be copied and shared.
    Effect::new(move |_| {
        let s = SharedState {
            model: zoo.get(),
            knobs: knobs.get(),
            train: train_knobs.get(),
            device: device_pref,
        };
        set_location_hash(&s.to_fragment());
    });
    let link = StoredValue::new_local(None::<WorkerLink>);
    // Kept from a lottery job's start to its end (see `Saved`).
    let saved = StoredValue::new_local(None::<Saved>);

    let send = move |req: Request| {
        if let Some(l) = link.get_value() {
            l.send(req);
        }
    };
    // Sends the current drawing unless a classification is already on its way.
    let classify = move || {
        let next = ctl
            .try_update_value(|c| {
                if c.classifying {
                    c.dirty = true;
                    return None;
                }
                c.dirty = false;
                let d = c.digit.clone();
                c.classifying = d.is_some();
                d
            })
            .flatten();
        classify_pending.set(ctl.with_value(|c| c.classifying || c.dirty));
        if let Some(pixels) = next {
            send(Request::Classify { pixels });
        }
    };
    let load = move |req: Request, source: String| {
        ctl.update_value(|c| c.requested = source);
        phase.set(Phase::Busy {
            stage: Stage::Import,
            done: 0,
            total: 1,
        });
        send(req);
    };
    let load_default = move || {
        file.set_value(None);
        let name = zoo.get_untracked();
        load(
            Request::LoadZoo { name: name.clone() },
            format!("{name} (zoo)"),
        )
    };
    let load_file = move |f: web_sys::File| {
        let name = f.name();
        file.set_value(Some(f.clone()));
        wasm_bindgen_futures::spawn_local(async move {
            match JsFuture::from(f.array_buffer()).await {
                Ok(buf) => load(
                    Request::LoadOnnx {
                        bytes: js_sys::Uint8Array::new(&buf),
                    },
                    name,
                ),
                Err(e) => notice.set(Some(Notice::new(
                    "read",
                    format!("{name}: {}", js_text(&e)),
                ))),
            }
        });
    };
    // The current model again (after a restart): the file it came from, or the zoo.
    let reload = move || match file.get_value() {
        Some(f) => load_file(f),
        None => load_default(),
    };
    let recipe = move || {
        let names = prunable.get_untracked();
        knobs.with_untracked(|k| k.recipe_json(&names, None))
    };
    let send_compress = move || {
        phase.set(Phase::Busy {
            stage: Stage::Compress,
            done: 0,
            total: 1,
        });
        send(Request::Compress {
            recipe: recipe(),
            huffman: knobs.with_untracked(|k| k.huffman),
        });
    };

    let on_response = move |resp: Response| match resp {
        Response::Ready => {
            send(Request::Device {
                prefer: device_pref,
            });
            let recovering = ctl
                .try_update_value(|c| std::mem::take(&mut c.recovering))
                .unwrap_or_default();
            if recovering {
                reload();
            } else {
                load_default();
            }
        }
        Response::Progress { stage, done, total } => phase.set(Phase::Busy { stage, done, total }),
        Response::Loaded { info, file_bytes } => {
            let source = ctl.with_value(|c| c.requested.clone());
            loaded_info.set(Some(info.clone()));
            model.set(Some(LoadedModel {
                info,
                file_bytes,
                source,
            }));
            sensitivity.set(None);
            live_millis.set(None);
            eval.set(None);
            before.set(None);
            compressed.set(None);
            sweeps.set(Vec::new());
            // A lottery job cancelled by restarting the worker keeps its outcome on the card.
            let keep = ctl
                .try_update_value(|c| std::mem::take(&mut c.keep_training))
                .unwrap_or_default();
            if !keep {
                training.set(Training::default());
            }
            // A new worker after a lottery job stopped midway (cancelled or crashed): the job
            // ends no other way, so the weights trained before it go back in, with the card's
            // figures of that moment, instead of the knobs being applied again.
            let back = saved.try_update_value(Option::take).flatten();
            if let Some(Saved {
                checkpoint: Some(checkpoint),
                compressed: summary,
                before: prior,
            }) = back
            {
                ctl.update_value(|c| c.pending_compress = false);
                if let Some(info) = summary.as_ref().map(|s| s.info.clone()) {
                    model.update(|m| {
                        if let Some(m) = m {
                            m.info = info;
                        }
                    });
                }
                compressed.set(summary);
                before.set(prior);
                send(Request::Restore(checkpoint));
            }
            // The drawing's answer is quick; the evaluation follows it.
            ctl.update_value(|c| c.classifying = false);
            classify();
            send(Request::Evaluate);
        }
        Response::Evaluated { report, millis } => {
            let (pending, t0) = ctl
                .try_update_value(|c| {
                    c.restarts = 0;
                    (std::mem::take(&mut c.pending_compress), c.live_t0.take())
                })
                .unwrap_or_default();
            eval.set(Some(Evaluation { report, millis }));
            if let Some(t0) = t0 {
                live_millis.set(Some(now_ms() - t0));
            }
            phase.set(Phase::Idle);
            if pending {
                // A shared link's knobs (or the knobs kept over a restart), applied to the
                // freshly loaded model.
                send_compress();
            }
        }
        Response::TrainProgress {
            epoch,
            epochs,
            step,
            steps,
            loss,
            accuracy,
        } => training.update(|t| {
            t.last = Some(TrainStep {
                epoch,
                epochs,
                step,
                steps,
                loss,
                accuracy,
            });
            t.losses.push(loss);
        }),
        Response::TrainDone {
            summary,
            report,
            train_millis,
            eval_millis,
        } => {
            let prior = eval.with_untracked(|e| e.as_ref().map(|e| e.report.accuracy));
            let steps_per_epoch = training.with_untracked(|t| t.last.map_or(0, |p| p.steps));
            let millis_per_epoch = (summary.steps > 0 && steps_per_epoch > 0)
                .then(|| train_millis / summary.steps as f64 * f64::from(steps_per_epoch));
            let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            end_lottery(ctl, saved);
            training.update(|t| {
                t.running = false;
                t.cancelling = false;
                t.result = Some(TrainResult {
                    epochs_done: clamp(summary.epochs_done),
                    steps: clamp(summary.steps),
                    cancelled: summary.cancelled,
                    millis: train_millis,
                    millis_per_epoch,
                    before: prior,
                    after: Some(report.accuracy),
                    restarted: false,
                    restored: false,
                });
            });
            before.set(prior);
            ctl.update_value(|c| c.restarts = 0);
            eval.set(Some(Evaluation {
                report: *report,
                millis: eval_millis,
            }));
            phase.set(Phase::Idle);
            // The weights changed: classify the drawing again.
            classify();
        }
        Response::Compressed(summary) => {
            // The change is shown against the model as loaded (the first compression's prior).
            if before.get_untracked().is_none() {
                before.set(eval.with_untracked(|e| e.as_ref().map(|e| e.report.accuracy)));
            }
            model.update(|m| {
                if let Some(m) = m {
                    m.info = summary.info.clone();
                }
            });
            compressed.set(Some(*summary));
            // The weights changed: evaluate and classify the drawing again.
            ctl.update_value(|c| c.classifying = false);
            classify();
            send(Request::Evaluate);
        }
        Response::SweepPoint(p) => sweeps.update(|s| {
            if let Some(w) = s.last_mut() {
                w.points.push(p);
            }
        }),
        Response::SweepDone => phase.set(Phase::Idle),
        Response::Sensitivity(s) => {
            sensitivity.set(Some(s));
            phase.set(Phase::Idle);
        }
        Response::LotteryRounds(r) => training.update(|t| t.rounds = r),
        Response::Checkpoint(checkpoint) => {
            saved.set_value(Some(Saved {
                checkpoint,
                compressed: compressed.get_untracked(),
                before: before.get_untracked(),
            }));
            let cancel = ctl
                .try_update_value(|c| {
                    c.awaiting_checkpoint = false;
                    std::mem::take(&mut c.cancel_on_checkpoint)
                })
                .unwrap_or_default();
            if cancel && training.with_untracked(|t| t.running && t.lottery) {
                cancel_by_restart(link, ctl, phase, training, knobs, saved);
            }
        }
        Response::Exported { format, bytes } => {
            let name = model.with_untracked(|m| {
                m.as_ref()
                    .map_or("model".to_string(), |m| m.info.name.clone())
            });
            if let Err(e) = save_file(&bytes, &format.file_name(&name), format.mime()) {
                notice.set(Some(Notice::new("download", e)));
            }
            phase.set(Phase::Idle);
        }
        Response::Device { kind, detail } => device.set(Some((kind, detail))),
        // The link consumes pongs (the heartbeat); none reaches the page.
        Response::Pong => {}
        Response::Classified { probs: p, device } => {
            let (has_digit, dirty) = ctl
                .try_update_value(|c| {
                    c.classifying = false;
                    (c.digit.is_some(), c.dirty)
                })
                .unwrap_or_default();
            probs.set(has_digit.then_some(p));
            classified_on.set(has_digit.then_some(device));
            classify_pending.set(false);
            if dirty {
                classify();
            }
        }
        Response::Error { code, message } => {
            ctl.update_value(|c| c.classifying = false);
            classify_pending.set(false);
            training.update(|t| {
                t.running = false;
                t.cancelling = false;
            });
            if code == PANIC {
                // The instance is unusable after a panic; its error event may not follow.
                restart(link, ctl, phase, notice, Notice::new(PANIC, message));
            } else {
                // A failed job has ended (the worker handles one request at a time).
                end_lottery(ctl, saved);
                notice.set(Some(Notice::new(&code, message)));
                phase.set(Phase::Idle);
            }
        }
    };
    let on_event = move |ev: LinkEvent| match ev {
        LinkEvent::Response(r) => on_response(r),
        LinkEvent::Died(why) => {
            training.update(|t| {
                t.running = false;
                t.cancelling = false;
            });
            let compresses = knobs.with_untracked(Knobs::compresses);
            ctl.update_value(|c| {
                c.pending_compress = compresses;
                c.live_t0 = None;
            });
            restart(link, ctl, phase, notice, Notice::new("recovered", why));
        }
    };
    link.set_value(Some(WorkerLink::start(on_event)));
    install_debug_hooks(link);
    // The heartbeat's patience follows what the worker is doing.
    Effect::new(move |_| {
        let stage = phase.with(|p| match p {
            Phase::Busy { stage, .. } => Some(*stage),
            _ => None,
        });
        if let Some(l) = link.get_value() {
            l.set_stall_timeout(stall_timeout(stage));
        }
    });

    let on_file = Callback::new(move |f: web_sys::File| {
        if f.size() > MAX_UPLOAD_BYTES {
            notice.set(Some(Notice::new(
                "limit",
                format!("{} is larger than 512 MiB", f.name()),
            )));
            return;
        }
        load_file(f);
    });
    let on_default = Callback::new(move |()| load_default());
    let on_zoo = Callback::new(move |name: String| {
        // A new model starts uncompressed.
        zoo.set(name);
        knobs.set(Knobs::default());
        load_default();
    });
    // A training job starts: clear the last run's curve and result, show the progress bar.
    let start_job = move |epochs: u32, lottery: bool| {
        let t0 = now_ms();
        ctl.update_value(|c| c.job_t0 = t0);
        training.update(|t| {
            t.running = true;
            t.cancelling = false;
            t.epochs = epochs;
            t.last = None;
            t.losses.clear();
            t.result = None;
            t.lottery = lottery;
            t.rounds.clear();
        });
        phase.set(Phase::Busy {
            stage: if lottery {
                Stage::Lottery
            } else {
                Stage::Train
            },
            done: 0,
            total: 1,
        });
    };
    let on_train = Callback::new(
        move |(epochs, lr, distill): (u32, f32, Option<DistillSettings>)| {
            if let Err(m) = check_fine_tune(epochs, lr) {
                notice.set(Some(Notice::new("settings", m)));
                return;
            }
            if let Some(Err(m)) = distill.as_ref().map(check_distill) {
                notice.set(Some(Notice::new("settings", m)));
                return;
            }
            start_job(epochs, false);
            send(Request::FineTune {
                epochs,
                lr,
                distill,
            });
        },
    );
    let on_compress = Callback::new(move |()| {
        let t0 = now_ms();
        ctl.update_value(|c| c.live_t0 = Some(t0));
        live_millis.set(None);
        send_compress();
    });
    let on_sensitivity = Callback::new(move |()| {
        phase.set(Phase::Busy {
            stage: Stage::Sensitivity,
            done: 0,
            total: 1,
        });
        send(Request::Sensitivity {
            knobs: knobs.get_untracked(),
        });
    });
    let on_lottery = Callback::new(move |(rate, rounds, epochs): (f32, u32, u32)| {
        if let Err(m) = check_lottery(rate, rounds, epochs) {
            notice.set(Some(Notice::new("settings", m)));
            return;
        }
        start_job(epochs, true);
        saved.set_value(None);
        ctl.update_value(|c| {
            c.awaiting_checkpoint = true;
            c.cancel_on_checkpoint = false;
        });
        send(Request::Lottery {
            rate,
            rounds,
            epochs,
        });
    });
    let on_sweep = Callback::new(move |kind: SweepKind| {
        let (p, format) = knobs.with_untracked(|k| (k.prune, k.weights.clone()));
        let points = sweep::points(kind, p, &format);
        let label = match kind {
            SweepKind::Prune => format!("prune 0 → 95 %, {format}"),
            SweepKind::Bits => format!("32 → 1 bit, prune {p} %"),
        };
        sweeps.update(|s| {
            s.push(Sweep {
                label,
                total: points.len(),
                points: Vec::new(),
            })
        });
        phase.set(Phase::Busy {
            stage: Stage::Sweep,
            done: 0,
            total: points.len() as u32,
        });
        send(Request::Sweep { points });
    });
    // The current model on the sweep chart: its weight ratio and its last test accuracy.
    let current = Signal::derive(move || {
        let acc = eval.with(|e| e.as_ref().map(|e| e.report.accuracy))?;
        let ratio = compressed.with(|c| {
            c.as_ref()
                .map_or(1.0, |c| c.bytes_before as f64 / c.bytes_after.max(1) as f64)
        });
        Some(SweepPoint {
            prune: knobs.with(|k| k.prune),
            ratio,
            accuracy: acc,
        })
    });
    let on_download = Callback::new(move |format: ExportFormat| send(Request::Export { format }));
    let on_cancel = Callback::new(move |()| {
        if training.with_untracked(|t| t.running && t.lottery) {
            // One engine call that no message can reach: replace the worker instead, once it
            // has sent what the new one needs to restore.
            let wait = ctl
                .try_update_value(|c| {
                    c.cancel_on_checkpoint = c.awaiting_checkpoint;
                    c.awaiting_checkpoint
                })
                .unwrap_or_default();
            if wait {
                training.update(|t| t.cancelling = true);
            } else {
                cancel_by_restart(link, ctl, phase, training, knobs, saved);
            }
        } else {
            training.update(|t| t.cancelling = true);
            send(Request::Cancel);
        }
    });
    let on_digit = Callback::new(move |d: Option<Vec<u8>>| {
        let drawing = d.is_some();
        ctl.update_value(|c| c.digit = d);
        if drawing {
            classify();
        } else {
            probs.set(None);
        }
    });

    view! {
        <Header phase=phase />
        <main class="layout">
            <ErrorBanner notice=notice />
            <ModelPanel model=model zoo=zoo on_file=on_file on_default=on_default on_zoo=on_zoo sensitivity=sensitivity />
            <MetricsPanel eval=eval phase=phase before=before device=device />
            <CompressPanel result=compressed phase=phase knobs=knobs prunable=prunable live_millis=live_millis on_apply=on_compress on_sensitivity=on_sensitivity on_download=on_download />
            <SweepPanel sweeps=sweeps current=current phase=phase on_sweep=on_sweep />
            <FineTunePanel training=training phase=phase on_start=on_train on_cancel=on_cancel on_lottery=on_lottery knobs=train_knobs />
            <section class="card try" aria-labelledby="try-title">
                <h2 id="try-title">"Try it"</h2>
                <DrawPad on_digit=on_digit />
                <Prediction probs=probs device=classified_on busy=classify_pending />
            </section>
        </main>
        <footer class="foot">
            <p>"Everything runs on this device: the model is evaluated and fine-tuned in a Web Worker, nothing is uploaded."</p>
        </footer>
    }
}

/// Shows why the worker stopped and starts a new one, unless it keeps dying.
fn restart(
    link: StoredValue<Option<WorkerLink>, LocalStorage>,
    ctl: StoredValue<Control>,
    phase: RwSignal<Phase>,
    notice: RwSignal<Option<Notice>>,
    mut why: Notice,
) {
    let attempts = ctl
        .try_update_value(|c| {
            c.restarts += 1;
            c.classifying = false;
            c.recovering = true;
            c.restarts
        })
        .unwrap_or(u32::MAX);
    if attempts > MAX_RESTARTS {
        why.message = format!(
            "{} — it stopped {MAX_RESTARTS} times in a row, so it was not restarted. Reload the page to try again.",
            why.message
        );
        phase.set(Phase::Dead);
        if let Some(l) = link.get_value() {
            // A hung or crashed worker must not be reported again and again.
            l.stop();
        }
    } else {
        why.message = format!(
            "{} — a new worker was started and the current model is being loaded again; your settings are kept.",
            why.message
        );
        phase.set(Phase::Starting);
        if let Some(l) = link.get_value() {
            l.restart();
        }
    }
    notice.set(Some(why));
}

/// A lottery job has ended (done or failed): nothing is to be restored or awaited.
fn end_lottery(ctl: StoredValue<Control>, saved: StoredValue<Option<Saved>, LocalStorage>) {
    saved.set_value(None);
    ctl.update_value(|c| {
        c.awaiting_checkpoint = false;
        c.cancel_on_checkpoint = false;
    });
}

/// Cancels a running lottery job, which is one synchronous engine call that a `Cancel` message
/// cannot reach, by terminating the worker and starting a new one through the recovery path:
/// the current model is loaded again, as after a crash but without an error, and then either
/// the job's [`Checkpoint`] is restored (weights trained before the job) or the card's knobs
/// are applied again; the fine-tune card says the job was cancelled and which.
fn cancel_by_restart(
    link: StoredValue<Option<WorkerLink>, LocalStorage>,
    ctl: StoredValue<Control>,
    phase: RwSignal<Phase>,
    training: RwSignal<Training>,
    knobs: RwSignal<Knobs>,
    saved: StoredValue<Option<Saved>, LocalStorage>,
) {
    let restored = saved.with_value(|s| s.as_ref().is_some_and(|s| s.checkpoint.is_some()));
    // The `Loaded` handler restores the checkpoint instead (and clears this).
    let compresses = knobs.with_untracked(Knobs::compresses);
    let t0 = ctl
        .try_update_value(|c| {
            c.classifying = false;
            c.recovering = true;
            c.keep_training = true;
            c.pending_compress = compresses;
            c.live_t0 = None;
            c.job_t0
        })
        .unwrap_or_else(now_ms);
    training.update(|t| {
        let (done, _) = t.last.map_or((0, 0), |p| p.overall());
        let per_epoch = t.last.map_or(0, |p| p.steps);
        t.running = false;
        t.cancelling = false;
        t.result = Some(TrainResult {
            epochs_done: done.checked_div(per_epoch).unwrap_or(0),
            steps: done,
            cancelled: true,
            millis: now_ms() - t0,
            millis_per_epoch: None,
            before: None,
            after: None,
            restarted: true,
            restored,
        });
    });
    phase.set(Phase::Starting);
    if let Some(l) = link.get_value() {
        l.restart();
    }
}

/// Test hooks, harmless for a user (who gets the same recovery):
/// - `window.__litheKillWorker()` terminates the worker as if it had died;
/// - `window.__litheHangWorker(patienceMs)` makes the worker stop answering (it spins without
///   yielding) and lowers the page's patience with that worker to `patienceMs` (default: the
///   usual 20 s), so that the heartbeat notices the hang and replaces it. Returns false when
///   no ready worker was there to hang.
fn install_debug_hooks(link: StoredValue<Option<WorkerLink>, LocalStorage>) {
    use wasm_bindgen::prelude::*;
    let kill = Closure::<dyn Fn()>::new(move || {
        if let Some(l) = link.get_value() {
            l.kill("the worker was terminated");
        }
    });
    let hang = Closure::<dyn Fn(JsValue) -> bool>::new(move |patience: JsValue| {
        let ms = patience
            .as_f64()
            .filter(|m| m.is_finite() && *m > 0.0)
            .unwrap_or(lithe_app::heartbeat::STALL_MS);
        link.get_value().is_some_and(|l| l.hang(ms))
    });
    for (name, f) in [
        ("__litheKillWorker", kill.as_ref()),
        ("__litheHangWorker", hang.as_ref()),
    ] {
        let _ = js_sys::Reflect::set(&window(), &JsValue::from_str(name), f);
    }
    // The hooks live as long as the page.
    kill.forget();
    hang.forget();
}

/// Offers `bytes` to the user as a download called `name` (a Blob URL on a temporary link).
fn save_file(bytes: &js_sys::Uint8Array, name: &str, mime: &str) -> Result<(), String> {
    use wasm_bindgen::JsCast;
    let parts = js_sys::Array::of1(bytes);
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts)
        .map_err(|e| js_text(&e))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| js_text(&e))?;
    let doc = document();
    let a: web_sys::HtmlAnchorElement = doc
        .create_element("a")
        .map_err(|e| js_text(&e))?
        .dyn_into()
        .map_err(|_| "not an anchor".to_string())?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    // The click has started the download; the URL is no longer needed.
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

/// The page URL's fragment (`#…`), or an empty string.
fn location_hash() -> String {
    window().location().hash().unwrap_or_default()
}

/// Replaces the URL's fragment without a new history entry or a reload.
fn set_location_hash(fragment: &str) {
    if let Ok(h) = window().history() {
        let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(fragment));
    }
}
