//! The Web Worker that owns the engine. It loads models, fetches the test set once, evaluates
//! and classifies, answering each [`Request`] from the page with [`Response`]s (see
//! `lithe_app::protocol` for the exchange). Requests are handled one at a time, in order.
//!
//! Nothing here may panic on a path a file or a click can reach: engine calls return
//! `Result`, and every failure becomes a [`Response::Error`]. Should a panic happen anyway,
//! the panic hook reports it (code [`PANIC`]) so the page can restart the worker.

use js_sys::Uint8Array;
use lithe::Session;
use lithe::data::Dataset;
use lithe::metrics::EvalReport;
use lithe::train::{Progress, Schedule, TrainConfig, TrainSummary};
use lithe_app::protocol::{
    Checkpoint, CompressSummary, DevicePref, DistillSettings, ExportFormat, Histogram, Knobs,
    LotteryRound, MAX_HANG_MS, MODELS_DIR, PANIC, PIXELS, Request, Response, Sensitivity, Stage,
    TEST_SET_URL, TRAIN_SET_URL, check_distill, check_fine_tune, check_lottery, check_sweep,
    histogram, pack_mask, recipe_json, unpack_mask,
};
use lithe_app::sweep::SweepPoint;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// Images per evaluation step; progress is reported after each.
const EVAL_CHUNK: usize = 1000;
/// Images per fine-tuning batch.
const BATCH: usize = 64;
/// Fine-tuning steps per slice: progress is reported and a `Cancel` can arrive after each.
const SLICE_STEPS: usize = 10;

/// What the worker holds between requests.
#[derive(Default)]
struct State {
    session: Option<Session>,
    /// The model as loaded, which every [`Request::Compress`] starts from.
    original: Option<Session>,
    /// Pruning masks of the current model (from its last compression): fine-tuning keeps the
    /// pruned weights at zero.
    masks: lithe::train::Masks,
    /// The last compression's result and recipe, for `.lithe` and report downloads (cleared
    /// when a model is loaded or fine-tuned, since the weights no longer match the codes).
    compressed: Option<(lithe::compress::Compressed, String)>,
    /// Huffman-code the `.lithe` download (the last `Compress` said).
    huffman: bool,
    /// The current weights were trained here (fine-tuning, distillation, a lottery ticket, or
    /// a restored [`Checkpoint`] of such weights): a new worker could not rebuild them from
    /// the model as loaded and the knobs, so a lottery job starts by sending them to the page.
    trained: bool,
    /// The last evaluation's accuracy, for the report.
    accuracy: Option<f32>,
    test_set: Option<Rc<Dataset>>,
    train_set: Option<Rc<Dataset>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
    static QUEUE: RefCell<VecDeque<Request>> = const { RefCell::new(VecDeque::new()) };
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// Set by [`Request::Cancel`] on arrival, cleared when a `FineTune` is queued.
    static CANCEL: Cell<bool> = const { Cell::new(false) };
    /// The next idle warm-up step for the loaded model ([`warm_up`]); `None` when there is
    /// none left.
    static WARM_NEXT: Cell<Option<usize>> = const { Cell::new(None) };
    /// A [`warm_up`] task is running (or waiting for the event loop).
    static WARMING: Cell<bool> = const { Cell::new(false) };
    /// The WebGPU device when [`Request::Device`] chose it.
    #[cfg(target_arch = "wasm32")]
    static GPU: RefCell<Option<std::sync::Arc<lithe::gpu::GpuContext>>> =
        const { RefCell::new(None) };
}

fn main() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post(&Response::error(
            PANIC,
            format!("the engine crashed: {info}"),
        ));
    }));
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(|ev: MessageEvent| {
        match serde_wasm_bindgen::from_value::<Request>(ev.data()) {
            Ok(req) => enqueue(req),
            Err(e) => post(&Response::error(
                "protocol",
                format!("unreadable request: {e}"),
            )),
        }
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    onmessage.forget();
    post(&Response::Ready);
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Sends a response to the page. A response that cannot be serialised becomes an error.
fn post(resp: &Response) {
    let sent = serde_wasm_bindgen::to_value(resp)
        .map_err(|e| e.to_string())
        .and_then(|v| scope().post_message(&v).map_err(js_text));
    if let Err(e) = sent {
        let fallback = Response::error("protocol", format!("cannot send a response: {e}"));
        if let Ok(v) = serde_wasm_bindgen::to_value(&fallback) {
            let _ = scope().post_message(&v);
        }
    }
}

fn enqueue(req: Request) {
    match req {
        // Acts at once: the running fine-tuning checks the flag between slices.
        Request::Cancel => {
            CANCEL.set(true);
            return;
        }
        // The heartbeat: answered whenever the event loop runs, even during a queued job.
        Request::Ping => {
            post(&Response::Pong);
            return;
        }
        Request::Hang { millis } => {
            hang(millis);
            return;
        }
        Request::FineTune { .. }
        | Request::Sweep { .. }
        | Request::Sensitivity { .. }
        | Request::Lottery { .. } => CANCEL.set(false),
        _ => {}
    }
    QUEUE.with_borrow_mut(|q| q.push_back(req));
    if !BUSY.replace(true) {
        wasm_bindgen_futures::spawn_local(drain());
    }
}

async fn drain() {
    while let Some(req) = QUEUE.with_borrow_mut(|q| q.pop_front()) {
        if let Err(resp) = handle(req).await {
            post(&resp);
        }
    }
    BUSY.set(false);
    let evaluated = STATE.with_borrow(|s| s.accuracy.is_some());
    if evaluated && WARM_NEXT.get().is_some() && !WARMING.replace(true) {
        wasm_bindgen_futures::spawn_local(warm_up());
    }
}

/// Runs the knobs' code paths while the worker is idle after a model was loaded and
/// evaluated, one short step at a time, and stops as soon as a request arrives (the rest waits
/// for the next idle moment).
///
/// The browser first runs wasm in a baseline compiler and moves a function to its optimizing
/// tier only after it has run for a while; a long call stays in the tier it started in. A first
/// prune after loading therefore ran its CSR kernels several times slower than later ones (in
/// Node: the first batch-1000 run of the pruned LeNet-300-100 12.3 ms, later ones 3.0–4.2; the
/// probe `first_knob_runs_in_node` in tests/tests/kernels_node.rs),
/// and the first rank change factored the model in baseline code. The steps compress a small
/// zoo MLP with each knob family as a `Compress` would and evaluate it on a few hundred test
/// images ([`warm_round`]); the last one factors the loaded model, leaving the SVDs of its
/// Gemm weights in the factorisation cache for the first rank change. Nothing a step computes
/// is kept otherwise, and the browser's log gets the steps' times.
async fn warm_up() {
    let t0 = now();
    let mut ran = 0;
    let mut times: Vec<String> = Vec::new();
    loop {
        // Lets queued messages arrive; a request means the user is waiting.
        yield_now().await;
        if BUSY.get() {
            break;
        }
        let Some(step) = WARM_NEXT.get() else {
            break;
        };
        let (original, data) = STATE.with_borrow(|s| (s.original.clone(), s.test_set.clone()));
        let (Some(original), Some(data)) = (original, data) else {
            break;
        };
        // Even steps compress, odd steps evaluate what the step before compressed.
        let Some((model, knobs)) = warm_round(&original, step / 2) else {
            WARM_NEXT.set(None);
            WARM_SESSION.with_borrow_mut(|s| *s = None);
            web_sys::console::log_1(
                &format!(
                    "warm-up: done; the last {ran} steps in {:.0} ms: {}",
                    now() - t0,
                    times.join(", ")
                )
                .into(),
            );
            break;
        };
        WARM_NEXT.set(Some(step + 1));
        let t = now();
        let _ = warm_step(&original, model, &data, &knobs, step % 2 == 1);
        times.push(format!("{:.0}", now() - t));
        ran += 1;
    }
    WARMING.set(false);
}

/// What a warm-up round compresses.
enum WarmModel {
    /// The model as loaded, the factorisation restricted to this layer (only the pass runs:
    /// it fills the factorisation cache).
    Loaded(String),
    /// A small zoo MLP (784-32-10, 25k weights) with this seed: the knobs' code runs in a
    /// few milliseconds on it, even before it has tiered up.
    Tiny(u64),
}

/// Warm-up round `round` for `original` (each round compresses, then evaluates): the model
/// and knob setting, `None` past the last round.
fn warm_round(original: &Session, round: usize) -> Option<(WarmModel, Knobs)> {
    let g = original.graph();
    let tiny = |f: &dyn Fn(&mut Knobs)| {
        let mut k = Knobs::default();
        f(&mut k);
        (WarmModel::Tiny(round as u64), k)
    };
    // The loaded model's Gemm weights, smallest first. The SVD costs about d³ for
    // d = min(rows, columns): only weights of modest size, all of which the factorisation
    // cache keeps.
    let mut gemms: Vec<(usize, String)> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, lithe::graph::Op::Gemm(_)))
        .filter_map(|n| {
            let w = g.weights.get(n.inputs.get(1)?)?;
            warm_factor(w.shape()).then(|| (w.len(), n.name.clone()))
        })
        .collect();
    gemms.sort();
    Some(match round {
        // The knobs' code paths, on the small model: short steps, so that a request never
        // waits long behind one, repeated so that the browser's budgets for tiering run out.
        0 | 4 => tiny(&|k| k.prune = 90),
        // Per-layer ratios take the per-layer ranking.
        1 => tiny(&|k| {
            k.prune = 90;
            k.layers.insert("fc1".into(), 95);
        }),
        2 => tiny(&|k| {
            k.prune = 50;
            k.filters = true;
        }),
        3 | 5 => tiny(&|k| {
            k.rank = 16;
            k.prune = 90;
        }),
        6 => tiny(&|k| k.weights = "int8".into()),
        // Last, the loaded model's SVDs into the factorisation cache, one Gemm per round,
        // smallest first: the largest (the one long step) is factored in tiered-up code.
        r => {
            let (_, name) = gemms.get(r - 7)?;
            (
                WarmModel::Loaded(name.clone()),
                Knobs {
                    rank: 16,
                    ..Knobs::default()
                },
            )
        }
    })
}

/// Whether the warm-up factors a Gemm weight of this shape: 2-D with `min(rows, cols) ≤ 512`
/// (the SVD costs about `d³`) and at most 2^20 elements (what the factorisation cache keeps).
fn warm_factor(shape: &[usize]) -> bool {
    shape.len() == 2 && shape[0].min(shape[1]) <= 512 && shape[0] * shape[1] <= 1 << 20
}

/// Images a warm-up step evaluates.
const WARM_IMAGES: usize = 256;

thread_local! {
    /// The session the last compressing warm-up step made, for the evaluating step after it.
    static WARM_SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// One warm-up step: `knobs` applied to `model` as a `Compress` would (the session is kept for
/// the next step), or, with `evaluate`, that session's plan run on [`WARM_IMAGES`] test
/// images. The results are dropped.
fn warm_step(
    loaded: &Session,
    model: WarmModel,
    data: &Dataset,
    knobs: &Knobs,
    evaluate: bool,
) -> Result<(), Response> {
    if evaluate {
        let Some(session) = WARM_SESSION.with_borrow_mut(|s| s.take()) else {
            return Ok(());
        };
        let idx: Vec<usize> = (0..WARM_IMAGES.min(data.len())).collect();
        // Not through the input cache: the small model's input shape or preprocessing may
        // differ from the loaded model's, which would evict its converted test set.
        evaluate_part(&session, data, &idx, false)?;
        return Ok(());
    }
    let tiny;
    let (original, only) = match model {
        WarmModel::Loaded(layer) => (loaded, Some(layer)),
        WarmModel::Tiny(seed) => {
            tiny = Session::from_graph(lithe::zoo::build(lithe::zoo::Arch::TinyMlp, seed)?)?;
            (&tiny, None)
        }
    };
    let prunable: Vec<String> = lithe::compress::targets(original.graph())
        .into_iter()
        .map(|t| t.node)
        .collect();
    let recipe =
        lithe::compress::Recipe::from_json(&knobs.recipe_json(&prunable, only.as_deref()))?;
    if only.is_some() {
        // Filling the factorisation cache needs only the pass.
        recipe.apply(original.graph(), None, None, &mut |_| {
            ControlFlow::Continue(())
        })?;
        return Ok(());
    }
    let (_, _, session, _) = compress_now(original, &recipe, None, knobs.huffman)?;
    WARM_SESSION.with_borrow_mut(|s| *s = Some(session));
    Ok(())
}

/// Handles one request; `Err` carries the [`Response::Error`] to send.
async fn handle(req: Request) -> Result<(), Response> {
    match req {
        Request::Device { prefer } => {
            let (kind, detail) = choose_device(prefer).await;
            post(&Response::Device { kind, detail });
            Ok(())
        }
        Request::LoadZoo { name } => {
            // Only known architectures: the name becomes part of a URL.
            let arch = lithe::zoo::Arch::from_name(&name)?;
            progress(Stage::FetchModel, 0, 1);
            let bytes = fetch_bytes(&format!("{MODELS_DIR}/{}.onnx", arch.name())).await?;
            load(&bytes)
        }
        Request::LoadOnnx { bytes } => load(&bytes.to_vec()),
        Request::Evaluate => {
            let (report, millis) = evaluate().await?;
            post(&Response::Evaluated { report, millis });
            Ok(())
        }
        Request::FineTune {
            epochs,
            lr,
            distill,
        } => fine_tune(epochs, lr, distill).await,
        Request::Compress { recipe, huffman } => compress(&recipe, huffman).await,
        Request::Sensitivity { knobs } => sensitivity(&knobs).await,
        Request::Lottery {
            rate,
            rounds,
            epochs,
        } => lottery(rate, rounds, epochs).await,
        // Handled on arrival (`enqueue`), never queued.
        Request::Cancel | Request::Ping | Request::Hang { .. } => Ok(()),
        Request::Sweep { points } => sweep(&points).await,
        Request::Restore(checkpoint) => restore(&checkpoint),
        Request::Export { format } => {
            let bytes = export(format)?;
            post(&Response::Exported {
                format,
                bytes: js_sys::Uint8Array::from(bytes.as_slice()),
            });
            Ok(())
        }
        Request::Classify { pixels } => {
            if pixels.len() != PIXELS {
                return Err(Response::error(
                    "input",
                    format!("expected {PIXELS} pixels, got {}", pixels.len()),
                ));
            }
            let (probs, device) = match classify_on_gpu(&pixels).await {
                Some(p) => (p, "webgpu"),
                None => (
                    STATE.with_borrow(|s| match &s.session {
                        Some(session) => session.classify(&pixels).map_err(Response::from),
                        None => Err(no_model()),
                    })?,
                    "cpu",
                ),
            };
            post(&Response::Classified {
                probs,
                device: device.into(),
            });
            Ok(())
        }
    }
}

/// Opens WebGPU unless the user asked for the CPU, and decides where inference runs:
/// `("webgpu", adapter)` or `("cpu", why not WebGPU)`. `Auto` does not take a software
/// adapter (SwiftShader, lavapipe), which is slower than the CPU kernels.
async fn choose_device(prefer: DevicePref) -> (String, String) {
    let cpu = |why: String| ("cpu".to_string(), why);
    if prefer == DevicePref::Cpu {
        set_gpu(None);
        return cpu("chosen in the URL (device=cpu)".into());
    }
    #[cfg(target_arch = "wasm32")]
    {
        match lithe::gpu::GpuContext::new().await {
            Ok(ctx) => {
                let a = ctx.adapter().clone();
                if a.is_fallback && prefer == DevicePref::Auto {
                    set_gpu(None);
                    return cpu(format!(
                        "only a software WebGPU adapter ({}) is available, slower than the CPU \
                         kernels (add &device=webgpu to the URL to use it anyway)",
                        a.name
                    ));
                }
                #[allow(clippy::arc_with_non_send_sync)] // one device per worker
                set_gpu(Some(std::sync::Arc::new(ctx)));
                let soft = if a.is_fallback { ", software" } else { "" };
                ("webgpu".into(), format!("{}{soft}", a.name))
            }
            Err(e) => {
                set_gpu(None);
                cpu(match e {
                    lithe::Error::Gpu(m) => m,
                    other => other.to_string(),
                })
            }
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        cpu("WebGPU runs in the browser build only".into())
    }
}

#[cfg(target_arch = "wasm32")]
fn set_gpu(ctx: Option<std::sync::Arc<lithe::gpu::GpuContext>>) {
    GPU.with_borrow_mut(|g| *g = ctx);
}

#[cfg(not(target_arch = "wasm32"))]
fn set_gpu(_: Option<()>) {}

/// The drawn digit's probabilities computed on WebGPU, when it was chosen; `None` runs it on
/// the CPU (no GPU chosen, no model, or the GPU failed: the CPU answers instead).
async fn classify_on_gpu(pixels: &[u8]) -> Option<Vec<f32>> {
    #[cfg(target_arch = "wasm32")]
    {
        let ctx = GPU.with_borrow(|g| g.clone())?;
        let (graph, x) = STATE.with_borrow(|s| {
            let session = s.session.as_ref()?;
            let x = session.input_from_pixels(pixels).ok()?;
            Some((session.graph().clone(), x))
        })?;
        let gpu = lithe::gpu::GpuSession::new(ctx, &graph).ok()?;
        let name = graph.inputs.first()?.name.clone();
        let run = gpu.run(&[(name.as_str(), &x)]).await.ok()?;
        Some(lithe::Session::probabilities(&run.outputs))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = pixels;
        None
    }
}

fn no_model() -> Response {
    Response::error("no_model", "no model is loaded yet")
}

fn progress(stage: Stage, done: usize, total: usize) {
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    post(&Response::Progress {
        stage,
        done: clamp(done),
        total: clamp(total),
    });
}

/// Imports a model; on success it replaces the current one.
fn load(bytes: &[u8]) -> Result<(), Response> {
    progress(Stage::Import, 0, 1);
    let session = Session::from_bytes(bytes)?;
    let info = session.info()?;
    STATE.with_borrow_mut(|s| {
        s.original = Some(session.clone());
        s.session = Some(session);
        s.masks.clear();
        s.compressed = None;
        s.trained = false;
        s.accuracy = None;
    });
    WARM_NEXT.set(Some(0));
    WARM_SESSION.with_borrow_mut(|s| *s = None);
    post(&Response::Loaded {
        info,
        file_bytes: bytes.len() as u64,
    });
    Ok(())
}

/// The test set, downloaded and decoded on first use.
async fn test_set() -> Result<Rc<Dataset>, Response> {
    if let Some(d) = STATE.with_borrow(|s| s.test_set.clone()) {
        return Ok(d);
    }
    progress(Stage::FetchData, 0, 1);
    let bytes = fetch_bytes(TEST_SET_URL).await?;
    let data = Rc::new(Dataset::decode(&bytes)?);
    STATE.with_borrow_mut(|s| s.test_set = Some(data.clone()));
    Ok(data)
}

/// Evaluates in chunks so that progress reaches the page; the chunk reports are merged.
/// Returns the report and the wall time in milliseconds.
async fn evaluate() -> Result<(EvalReport, f64), Response> {
    if STATE.with_borrow(|s| s.session.is_none()) {
        return Err(no_model());
    }
    let data = test_set().await?;
    let n = data.len();
    progress(Stage::Evaluate, 0, n);
    let t0 = now();
    let mut total = Merged::default();
    for start in (0..n).step_by(EVAL_CHUNK) {
        let idx: Vec<usize> = (start..(start + EVAL_CHUNK).min(n)).collect();
        let report = STATE.with_borrow(|s| match &s.session {
            Some(session) => evaluate_part(session, &data, &idx, true).map_err(Response::from),
            None => Err(no_model()),
        })?;
        total.add(&report);
        progress(Stage::Evaluate, start + idx.len(), n);
    }
    let report = total.finish();
    STATE.with_borrow_mut(|s| s.accuracy = Some(report.accuracy));
    Ok((report, now() - t0))
}

/// Accuracy of `session` on all of `data` (in chunks through [`evaluate_part`]).
fn evaluate_all(session: &Session, data: &Dataset) -> lithe::Result<f32> {
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut total = Merged::default();
    for part in idx.chunks(EVAL_CHUNK) {
        total.add(&evaluate_part(session, data, part, true)?);
    }
    Ok(total.finish().accuracy)
}

/// Which images, converted how, into which shape: the key of [`EVAL_INPUTS`].
type InputKey = (usize, usize, usize, lithe::data::Preprocess, Vec<usize>);

/// A chunk's model input and labels.
type Inputs = Rc<(lithe::tensor::Tensor, Vec<u8>)>;

thread_local! {
    /// Evaluation chunks already converted to model inputs. Every knob change evaluates the
    /// same 10k test images with the same preprocessing, and converting them to f32 (and
    /// copying them into the model's input shape) was a visible part of each evaluation.
    static EVAL_INPUTS: RefCell<Vec<(InputKey, Inputs)>> =
        const { RefCell::new(Vec::new()) };
}

/// The images at `idx` of `data` as a `shape` tensor preprocessed by `pre`, and their labels;
/// `None` if `shape` does not hold them. Kept for the next evaluation of the same chunk
/// (only consecutive chunks are kept, as evaluations make them: at most the whole test set),
/// unless `cache` is false (then the cache is neither read nor changed).
fn model_inputs(
    data: &Dataset,
    idx: &[usize],
    pre: &lithe::data::Preprocess,
    shape: &[usize],
    cache: bool,
) -> lithe::Result<Option<Inputs>> {
    let consecutive = cache && idx.windows(2).all(|w| w[1] == w[0] + 1);
    let key: InputKey = (
        std::ptr::from_ref(data) as usize,
        idx.first().copied().unwrap_or(0),
        idx.len(),
        *pre,
        shape.to_vec(),
    );
    if consecutive
        && let Some(hit) =
            EVAL_INPUTS.with_borrow(|c| c.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
    {
        return Ok(Some(hit));
    }
    let (x, y) = data.batch(idx, pre);
    if shape.iter().product::<usize>() != x.len() {
        return Ok(None);
    }
    let x = lithe::tensor::from_vec(shape, x.into_raw_vec_and_offset().0)?;
    let entry = Rc::new((x, y));
    if consecutive {
        EVAL_INPUTS.with_borrow_mut(|c| {
            // Another dataset or preprocessing: start over.
            c.retain(|(k, _)| k.0 == key.0 && k.3 == key.3 && k.4.get(1..) == key.4.get(1..));
            if c.iter().map(|(k, _)| k.2).sum::<usize>() + idx.len() <= data.len() {
                c.push((key, entry.clone()));
            }
        });
    }
    Ok(Some(entry))
}

/// The images at `idx` run through the session's execution plan — the kernels the card lists
/// (CSR for pruned layers, SIMD GEMM for dense ones), which is what makes a pruned model quick
/// to measure — scored like `metrics::evaluate` (outputs taken as logits). Graphs with a fixed
/// batch size go through `Session::evaluate` (the reference interpreter).
fn evaluate_part(
    session: &Session,
    data: &Dataset,
    idx: &[usize],
    cache: bool,
) -> lithe::Result<EvalReport> {
    let g = session.graph();
    let n = idx.len();
    let input = match g.inputs.first() {
        Some(i) if n > 0 && !matches!(i.shape.first(), Some(lithe::graph::Dim::Fixed(_))) => i,
        _ => return session.evaluate(&data.subset(idx)),
    };
    let shape = input.concrete(n);
    let Some(inputs) = model_inputs(data, idx, &session.preprocess(), &shape, cache)? else {
        return session.evaluate(&data.subset(idx));
    };
    let (x, y) = (&inputs.0, &inputs.1);
    let out = session.run(x)?;
    let logits: Vec<f32> = out
        .first()
        .map(|t| t.iter().copied().collect())
        .unwrap_or_default();
    let k = data.classes;
    let classes = logits.len() / n;
    if classes < k || classes * n != logits.len() {
        return Err(lithe::Error::Invalid(format!(
            "the model has {classes} outputs per image but the dataset has {k} classes"
        )));
    }
    let mut confusion = vec![vec![0u32; k]; k];
    let mut loss = 0f64;
    for (row, &label) in logits.chunks(classes).zip(y.iter()) {
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = mx as f64
            + row
                .iter()
                .map(|v| ((v - mx) as f64).exp())
                .sum::<f64>()
                .ln();
        let label = usize::from(label);
        loss += lse - f64::from(row.get(label).copied().unwrap_or(mx));
        let pred = row[..k]
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0;
        if let Some(r) = confusion.get_mut(label) {
            r[pred] += 1;
        }
    }
    Ok(EvalReport {
        count: n,
        accuracy: 0.0,
        loss: (loss / n as f64) as f32,
        per_class: vec![],
        confusion,
    })
}

/// The training images, downloaded and decoded on first use.
async fn train_set() -> Result<Rc<Dataset>, Response> {
    if let Some(d) = STATE.with_borrow(|s| s.train_set.clone()) {
        return Ok(d);
    }
    progress(Stage::FetchTrain, 0, 1);
    let bytes = fetch_bytes(TRAIN_SET_URL).await?;
    let data = Rc::new(Dataset::decode(&bytes)?);
    STATE.with_borrow_mut(|s| s.train_set = Some(data.clone()));
    Ok(data)
}

/// Fine-tunes the loaded model, then evaluates it on the test set.
///
/// The worker has one thread, so training runs in slices of [`SLICE_STEPS`] batches: each
/// slice is one `Session::train` call on those images, and between slices the worker yields
/// to its event loop, which is when a `Cancel` can arrive. Each epoch shuffles the images;
/// the learning rate follows a cosine decay over the whole run, computed here per slice
/// (each slice trains at a constant rate; Adam's moments start afresh in each slice).
///
/// With a teaching assistant, a first phase distills the TA (its zoo weights) from the teacher
/// with the same settings, and the second phase distills the student from the TA.
async fn fine_tune(epochs: u32, lr: f32, distill: Option<DistillSettings>) -> Result<(), Response> {
    check_fine_tune(epochs, lr).map_err(|m| Response::error("settings", m))?;
    if STATE.with_borrow(|s| s.session.is_none()) {
        return Err(no_model());
    }
    // The teacher (and the TA): zoo models, fetched and imported once per job.
    let (teacher, ta) = match &distill {
        Some(d) => {
            check_distill(d).map_err(|m| Response::error("settings", m))?;
            let params = lithe::train::distill::DistillParams {
                temperature: d.temperature,
                alpha: d.alpha,
                feature: None,
                standardize: true,
            };
            let teacher = zoo_session(&d.teacher).await?;
            let ta = match &d.ta {
                Some(name) => Some(zoo_session(name).await?),
                None => None,
            };
            (Some((teacher, params)), ta)
        }
        None => (None, None),
    };
    let data = train_set().await?;
    let phases = if ta.is_some() { 2 } else { 1 };
    let t0 = now();
    let mut plan = Phases {
        epochs: epochs as usize,
        lr,
        phases,
        phase: 0,
    };
    let run = match (ta, teacher) {
        (Some(mut ta), Some((t, params))) => {
            // Teacher → TA, then TA → student.
            let first = train_phase(&mut Some(&mut ta), Some((&t, &params)), &data, &plan).await?;
            if first.cancelled {
                first
            } else {
                plan.phase = 1;
                let mut second = train_phase(&mut None, Some((&ta, &params)), &data, &plan).await?;
                // The time covers both phases, so the steps do too.
                second.steps += first.steps;
                second
            }
        }
        (_, teacher) => {
            train_phase(
                &mut None,
                teacher.as_ref().map(|(t, p)| (t, p)),
                &data,
                &plan,
            )
            .await?
        }
    };
    let train_millis = now() - t0;
    if run.steps > 0 {
        STATE.with_borrow_mut(|s| s.trained = true);
    }
    let summary = run.summary();
    let (report, eval_millis) = evaluate().await?;
    post(&Response::TrainDone {
        summary: Box::new(summary),
        report: Box::new(report),
        train_millis,
        eval_millis,
    });
    Ok(())
}

/// A zoo model, downloaded and imported.
async fn zoo_session(name: &str) -> Result<Session, Response> {
    let arch = lithe::zoo::Arch::from_name(name)?;
    progress(Stage::FetchModel, 0, 1);
    let bytes = fetch_bytes(&format!("{MODELS_DIR}/{}.onnx", arch.name())).await?;
    Ok(Session::from_bytes(&bytes)?)
}

/// The shape of a training job: `phases` runs of `epochs` each; progress counts over all.
struct Phases {
    epochs: usize,
    lr: f32,
    phases: usize,
    phase: usize,
}

/// One training run in slices (see [`fine_tune`]): trains `local` when given (with no masks),
/// else the current model (keeping its pruning masks), from `teacher` when given.
async fn train_phase(
    local: &mut Option<&mut Session>,
    teacher: Option<(&Session, &lithe::train::distill::DistillParams)>,
    data: &Dataset,
    plan: &Phases,
) -> Result<Run, Response> {
    let n = data.len();
    let epochs = plan.epochs;
    let steps = n.div_ceil(BATCH);
    let total_steps = steps * epochs;
    let all_steps = total_steps * plan.phases;
    let offset = plan.phase * total_steps;
    progress(Stage::Train, offset, all_steps);
    let no_masks = lithe::train::Masks::new();
    let mut run = Run::default();
    'epochs: for epoch in 0..epochs {
        let order = shuffled(n, epoch as u64 + 1);
        let mut epoch_run = Run::default();
        for (slice, idx) in order.chunks(SLICE_STEPS * BATCH).enumerate() {
            yield_now().await;
            if CANCEL.get() {
                run.cancelled = true;
                run.steps += epoch_run.steps;
                if run.last.is_none() && epoch_run.images > 0 {
                    // Nothing complete yet: report the partial epoch.
                    run.last = Some(epoch_run.finish());
                }
                break 'epochs;
            }
            let first = slice * SLICE_STEPS;
            let done_before = epoch * steps + first;
            let cfg = TrainConfig {
                epochs: 1,
                lr: plan.lr * cosine(done_before, total_steps),
                batch_size: BATCH,
                log_every: SLICE_STEPS,
                schedule: Schedule::Constant,
                seed: (epoch * steps + first + 1) as u64,
                ..Default::default()
            };
            let part = data.subset(idx);
            let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
            let mut report = |p: &Progress| {
                post(&Response::TrainProgress {
                    epoch: clamp(plan.phase * epochs + epoch),
                    epochs: clamp(plan.phases * epochs),
                    step: clamp(first + p.step),
                    steps: clamp(steps),
                    loss: p.loss,
                    accuracy: p.accuracy,
                });
                progress(Stage::Train, offset + done_before + p.step, all_steps);
                ControlFlow::Continue(())
            };
            let s = match local {
                Some(session) => train_step(session, teacher, &part, &cfg, &no_masks, &mut report),
                None => STATE.with_borrow_mut(|st| match &mut st.session {
                    Some(session) => {
                        train_step(session, teacher, &part, &cfg, &st.masks, &mut report)
                    }
                    None => Err(no_model()),
                }),
            }?;
            epoch_run.add(&s, part.len());
        }
        run.steps += epoch_run.steps;
        run.last = Some(epoch_run.finish());
        run.epochs_done = epoch + 1;
    }
    Ok(run)
}

/// One slice of training: distillation when there is a teacher, else labels only.
fn train_step(
    session: &mut Session,
    teacher: Option<(&Session, &lithe::train::distill::DistillParams)>,
    part: &Dataset,
    cfg: &TrainConfig,
    masks: &lithe::train::Masks,
    report: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<TrainSummary, Response> {
    match teacher {
        Some((t, params)) => session.distill(t.graph(), params, part, cfg, masks, report),
        None => session.train_masked(part, None, cfg, masks, report),
    }
    .map_err(Response::from)
}

/// Weight histograms of every prunable layer of `before`, and of the same layer in `after`
/// when it kept its weight's name (SVD replaces it with two factors).
fn histograms(before: &lithe::graph::Graph, after: &lithe::graph::Graph) -> Vec<Histogram> {
    let now: Vec<_> = lithe::compress::targets(after);
    lithe::compress::targets(before)
        .into_iter()
        .filter_map(|t| {
            let w = before.weights.get(&t.weight)?;
            let limit = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let kept = now
                .iter()
                .find(|n| n.node == t.node && n.weight == t.weight)
                .and_then(|n| after.weights.get(&n.weight));
            let (after_bins, zeros) = match kept {
                Some(a) => (
                    histogram(a.iter().copied(), limit, true),
                    a.iter().filter(|v| **v == 0.0).count() as f32 / a.len().max(1) as f32,
                ),
                None => (Vec::new(), 0.0),
            };
            Some(Histogram {
                layer: t.node,
                limit,
                before: histogram(w.iter().copied(), limit, false),
                after: after_bins,
                zeros,
            })
        })
        .collect()
}

/// For each prunable layer of the model as loaded: the test accuracy when only that layer is
/// compressed with `knobs`. `Cancel` stops it between layers.
async fn sensitivity(knobs: &Knobs) -> Result<(), Response> {
    let Some(original) = STATE.with_borrow(|s| s.original.clone()) else {
        return Err(no_model());
    };
    let data = test_set().await?;
    let g = original.graph();
    let prunable: Vec<String> = lithe::compress::targets(g)
        .into_iter()
        .map(|t| t.node)
        .collect();
    let n = prunable.len() + 1;
    progress(Stage::Sensitivity, 0, n);
    yield_now().await;
    let base = evaluate_all(&original, &data)?;
    progress(Stage::Sensitivity, 1, n);
    let mut layers = Vec::new();
    let mut cancelled = false;
    for (k, name) in prunable.iter().enumerate() {
        yield_now().await;
        if CANCEL.get() {
            cancelled = true;
            break;
        }
        match one_layer(&original, knobs, &prunable, name, &data) {
            Ok(acc) => layers.push((name.clone(), Some(acc), String::new())),
            Err(e) => layers.push((name.clone(), None, e.to_string())),
        }
        progress(Stage::Sensitivity, k + 2, n);
    }
    post(&Response::Sensitivity(Sensitivity {
        base,
        layers,
        cancelled,
    }));
    Ok(())
}

/// Test accuracy of `original` with only layer `name` compressed by `knobs`: the pruning,
/// factorisation and filter passes are restricted to it, and every other weight the recipe
/// changed (quantization touches all layers) is restored where its shape is unchanged.
fn one_layer(
    original: &Session,
    knobs: &Knobs,
    prunable: &[String],
    name: &str,
    data: &Dataset,
) -> lithe::Result<f32> {
    let g = original.graph();
    let recipe = lithe::compress::Recipe::from_json(&knobs.recipe_json(prunable, Some(name)))?;
    let c = recipe.apply(g, None, None, &mut |_| ControlFlow::Continue(()))?;
    let mut out = c.graph;
    let own: Vec<String> = out
        .nodes
        .iter()
        .filter(|n| n.name == name || n.name.starts_with(&format!("{name}_lowrank")))
        .flat_map(|n| n.inputs.iter().cloned())
        .collect();
    for (w, t) in out.weights.iter_mut() {
        if own.contains(w) {
            continue;
        }
        if let Some(o) = g.weights.get(w)
            && o.shape() == t.shape()
        {
            *t = o.clone();
        }
    }
    let mut s = Session::from_graph(out)?;
    s.set_preprocess(original.preprocess());
    evaluate_all(&s, data)
}

/// Trains a lottery ticket from the loaded zoo model's initial weights on the 6,000 training
/// images (each run evaluated on the test set); the ticket becomes the current model.
///
/// `lottery::run` is one synchronous call: progress reaches the page as it goes, but a `Cancel`
/// could only arrive after it, so the page cancels the job by replacing the worker. Weights
/// trained here before the job are sent to the page first ([`Response::Checkpoint`]), for the
/// new worker to restore.
async fn lottery(rate: f32, rounds: u32, epochs: u32) -> Result<(), Response> {
    // The page cancels this job by replacing the worker: what it cannot rebuild goes to it
    // first, and it waits for this answer before it does.
    post(&Response::Checkpoint(checkpoint()?));
    check_lottery(rate, rounds, epochs).map_err(|m| Response::error("settings", m))?;
    let Some(original) = STATE.with_borrow(|s| s.original.clone()) else {
        return Err(no_model());
    };
    let init = lithe::compress::lottery::zoo_init(original.graph())?;
    let data = train_set().await?;
    let test = test_set().await?;
    let spec: lithe::compress::lottery::LotterySpec = serde_json::from_value(serde_json::json!({
        "rate": rate, "rounds": rounds, "epochs": epochs, "batch_size": BATCH,
        "lr": 0.001, "seed": 1, "log_every": SLICE_STEPS,
    }))
    .map_err(|e| Response::error("settings", e.to_string()))?;
    let steps = data.len().div_ceil(BATCH);
    let runs = rounds as usize + 1;
    let per_run = steps * epochs as usize;
    let total = per_run * runs;
    progress(Stage::Lottery, 0, total);
    yield_now().await;
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let (mut run, mut prev) = (0usize, (0usize, 0usize));
    let mut on_progress = |p: &Progress| {
        if (p.epoch, p.step) < prev {
            run += 1;
        }
        prev = (p.epoch, p.step);
        post(&Response::TrainProgress {
            epoch: clamp(run * epochs as usize + p.epoch),
            epochs: clamp(runs * epochs as usize),
            step: clamp(p.step),
            steps: clamp(p.steps),
            loss: p.loss,
            accuracy: p.accuracy,
        });
        progress(
            Stage::Lottery,
            run * per_run + p.epoch * p.steps + p.step,
            total,
        );
        ControlFlow::Continue(())
    };
    let t0 = now();
    let out = lithe::compress::lottery::run(
        original.graph(),
        &init,
        &data,
        Some(&test),
        &spec,
        &lithe::train::Masks::new(),
        &mut on_progress,
    )?;
    let train_millis = now() - t0;
    let rounds_out: Vec<LotteryRound> = out
        .rounds
        .iter()
        .map(|r| LotteryRound {
            round: clamp(r.round),
            kept: r.kept as f32 / r.total.max(1) as f32,
            accuracy: r.accuracy,
        })
        .collect();
    let last = out.rounds.last();
    let summary = TrainSummary {
        epochs_done: runs * epochs as usize,
        steps: total,
        final_loss: last.map_or(0.0, |r| r.final_loss),
        train_accuracy: last.map_or(0.0, |r| r.train_accuracy),
        val_accuracy: vec![],
        cancelled: false,
    };
    let mut session = Session::from_graph(out.graph)?;
    session.set_preprocess(original.preprocess());
    STATE.with_borrow_mut(|s| {
        s.session = Some(session);
        s.masks = out.masks;
        s.compressed = None;
        s.trained = true;
    });
    let (report, eval_millis) = evaluate().await?;
    post(&Response::LotteryRounds(rounds_out));
    post(&Response::TrainDone {
        summary: Box::new(summary),
        report: Box::new(report),
        train_millis,
        eval_millis,
    });
    Ok(())
}

/// The current model as a [`Checkpoint`] when its weights were trained here (see
/// [`State::trained`]); `None` when the model as loaded and the knobs rebuild it.
fn checkpoint() -> Result<Option<Checkpoint>, Response> {
    STATE.with_borrow(|s| {
        let Some(session) = s.session.as_ref().filter(|_| s.trained) else {
            return Ok(None);
        };
        let onnx = session.export_onnx()?;
        Ok(Some(Checkpoint {
            onnx: Uint8Array::from(onnx.as_slice()),
            masks: s
                .masks
                .iter()
                .map(|(k, m)| (k.clone(), pack_mask(m)))
                .collect(),
        }))
    })
}

/// Makes a [`Checkpoint`] the current model; the model as loaded stays.
fn restore(checkpoint: &Checkpoint) -> Result<(), Response> {
    let Some(original) = STATE.with_borrow(|s| s.original.clone()) else {
        return Err(no_model());
    };
    let mut session = Session::from_bytes(&checkpoint.onnx.to_vec())?;
    session.set_preprocess(original.preprocess());
    let g = session.graph();
    let mut masks = lithe::train::Masks::new();
    for (name, bits) in &checkpoint.masks {
        let mask = g
            .weights
            .get(name)
            .and_then(|w| unpack_mask(bits, w.len()))
            .ok_or_else(|| {
                Response::error(
                    "protocol",
                    format!("the checkpoint's mask of `{name}` does not fit"),
                )
            })?;
        masks.insert(name.clone(), mask);
    }
    STATE.with_borrow_mut(|s| {
        s.session = Some(session);
        s.masks = masks;
        s.compressed = None;
        s.trained = true;
    });
    Ok(())
}

/// The bytes of a download: the current model as ONNX or `.lithe`, or the JSON report of its
/// last compression.
fn export(format: ExportFormat) -> Result<Vec<u8>, Response> {
    use lithe::compress::kmeans::Coding;
    use lithe::format::lithe as container;
    STATE.with_borrow(|s| {
        let session = s.session.as_ref().ok_or_else(no_model)?;
        let coding = if s.huffman || s.compressed.is_none() {
            Coding::Huffman
        } else {
            Coding::Fixed
        };
        Ok(match format {
            ExportFormat::Onnx => match &s.compressed {
                // An int8 recipe exports as QDQ while its codes still describe the weights.
                Some((c, _)) if c.graph.weights == session.graph().weights => c.export_onnx()?,
                _ => session.export_onnx()?,
            },
            ExportFormat::Lithe => match &s.compressed {
                // The codes still describe the weights (no fine-tuning since).
                Some((c, _)) if c.graph.weights == session.graph().weights => {
                    container::encode_compressed(c, coding)?.0
                }
                _ => {
                    let layers = container::Layers::sparse_of(session.graph())?;
                    container::encode_layers(session.graph(), &layers, coding)?.0
                }
            },
            ExportFormat::Report => {
                let info = session.info()?;
                let (recipe, reports, lithe_bytes) = match &s.compressed {
                    Some((c, r)) => (
                        serde_json::from_str::<serde_json::Value>(r).unwrap_or_default(),
                        serde_json::to_value(&c.reports).unwrap_or_default(),
                        container::encode_compressed(c, coding)?.0.len(),
                    ),
                    None => (serde_json::Value::Null, serde_json::Value::Null, 0),
                };
                let report = serde_json::json!({
                    "tool": format!("Lithe {}", env!("CARGO_PKG_VERSION")),
                    "model": info.name,
                    "params": info.params,
                    "macs": info.macs,
                    "test_accuracy": s.accuracy,
                    "recipe": recipe,
                    "passes": reports,
                    "onnx_bytes": session.export_onnx()?.len(),
                    "lithe_bytes": lithe_bytes,
                    "layers": info.layers,
                });
                serde_json::to_vec_pretty(&report)
                    .map_err(|e| Response::error("report", e.to_string()))?
            }
        })
    })
}

/// Compresses the model as loaded at each `(prune %, format)` point, evaluates it on the test
/// set and posts it; the current model is not touched. `Cancel` stops it between points.
async fn sweep(points: &[(u32, String)]) -> Result<(), Response> {
    check_sweep(points).map_err(|m| Response::error("settings", m))?;
    let Some(original) = STATE.with_borrow(|s| s.original.clone()) else {
        return Err(no_model());
    };
    let data = test_set().await?;
    let n = points.len();
    progress(Stage::Sweep, 0, n);
    for (k, (prune, format)) in points.iter().enumerate() {
        let prune = *prune;
        yield_now().await;
        if CANCEL.get() {
            break;
        }
        let recipe = lithe::compress::Recipe::from_json(&recipe_json(prune, format))?;
        let c = recipe.apply(original.graph(), None, None, &mut |_| {
            ControlFlow::Continue(())
        })?;
        let ratio = match (c.reports.first(), c.reports.last()) {
            (Some(a), Some(b)) => a.bytes_before as f64 / b.bytes_after.max(1) as f64,
            _ => 1.0,
        };
        let mut s = Session::from_graph(c.graph)?;
        s.set_preprocess(original.preprocess());
        let accuracy = evaluate_all(&s, &data)?;
        post(&Response::SweepPoint(SweepPoint {
            prune,
            ratio,
            accuracy,
        }));
        progress(Stage::Sweep, k + 1, n);
    }
    post(&Response::SweepDone);
    Ok(())
}

/// Runs `recipe` on the model as loaded and makes the result the current model.
async fn compress(recipe: &str, huffman: bool) -> Result<(), Response> {
    let recipe_text = recipe.to_string();
    let recipe = lithe::compress::Recipe::from_json(recipe)?;
    let Some(original) = STATE.with_borrow(|s| s.original.clone()) else {
        return Err(no_model());
    };
    let train = if recipe.needs_data() {
        Some(train_set().await?)
    } else {
        None
    };
    progress(Stage::Compress, 0, 1);
    yield_now().await;
    let (summary, c, session, masks) = compress_now(&original, &recipe, train.as_deref(), huffman)?;
    STATE.with_borrow_mut(|s| {
        s.session = Some(session);
        s.masks = masks;
        s.compressed = Some((c, recipe_text));
        s.trained = false;
        s.huffman = huffman;
    });
    post(&Response::Compressed(Box::new(summary)));
    Ok(())
}

/// What a `Compress` computes: the recipe applied to the model as loaded, the card's summary
/// (sizes, MACs, energy, kernels, histograms, timings), the compressed result, its session and
/// its pruning masks.
#[allow(clippy::type_complexity)]
fn compress_now(
    original: &Session,
    recipe: &lithe::compress::Recipe,
    train: Option<&Dataset>,
    huffman: bool,
) -> Result<
    (
        CompressSummary,
        lithe::compress::Compressed,
        Session,
        lithe::train::Masks,
    ),
    Response,
> {
    let t0 = now();
    let c = recipe.apply(original.graph(), train, None, &mut |_| {
        ControlFlow::Continue(())
    })?;
    let millis = now() - t0;
    let table = lithe::compress::energy::EnergyTable::horowitz_45nm();
    let energy_before = lithe::compress::energy::estimate_dense(original.graph(), &table)?;
    let energy_after = c.energy(&table)?;
    let mut session = Session::from_graph(c.graph.clone())?;
    session.set_preprocess(original.preprocess());
    let info = session.info()?;
    let kernels = session
        .kernels()?
        .into_iter()
        .filter(|(n, _)| {
            info.layers
                .iter()
                .any(|l| &l.name == n && matches!(l.op.as_str(), "Gemm" | "Conv" | "MatMul"))
        })
        .map(|(n, k)| (n, k.to_string()))
        .collect();
    let dense = info.bytes as u64;
    let coding = if huffman {
        lithe::compress::kmeans::Coding::Huffman
    } else {
        lithe::compress::kmeans::Coding::Fixed
    };
    let lithe_bytes = lithe::format::lithe::encode_compressed(&c, coding)?.0.len() as u64;
    let histograms = histograms(original.graph(), &c.graph);
    let summary = CompressSummary {
        passes: c.reports.iter().map(|r| r.pass.clone()).collect(),
        bytes_before: c.reports.first().map_or(dense, |r| r.bytes_before as u64),
        bytes_after: c.reports.last().map_or(dense, |r| r.bytes_after as u64),
        macs_before: c.reports.first().map_or(info.macs, |r| r.macs_before),
        macs_after: c.reports.last().map_or(info.macs, |r| r.macs_after),
        sparsity: c.reports.last().map_or(0.0, |r| r.sparsity),
        energy_before_pj: energy_before.total_pj,
        energy_after_pj: energy_after.total_pj,
        kernels,
        info,
        lithe_bytes,
        huffman,
        histograms,
        millis,
        extra_millis: now() - t0 - millis,
    };
    // Layers that are binary or otherwise coded have no zeros to keep; only prune masks
    // constrain fine-tuning, and only while the weights they name still exist.
    let masks: lithe::train::Masks = c
        .masks
        .iter()
        .filter(|(k, m)| c.graph.weights.get(*k).is_some_and(|w| w.len() == m.len()))
        .map(|(k, m)| (k.clone(), m.clone()))
        .collect();
    Ok((summary, c, session, masks))
}

/// The cosine factor (1 → 0.02) at step `done` of `total`.
fn cosine(done: usize, total: usize) -> f32 {
    let t = done as f32 / total.max(1) as f32;
    0.02 + 0.98 * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
}

/// `0..n` in a seeded pseudo-random order (Fisher–Yates with a 64-bit LCG).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..n).rev() {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((x >> 33) as usize) % (i + 1);
        v.swap(i, j);
    }
    v
}

/// Sums slice summaries into one [`TrainSummary`].
#[derive(Default)]
struct Run {
    steps: usize,
    epochs_done: usize,
    cancelled: bool,
    /// Images, loss sum and correct predictions of the slices added so far.
    images: usize,
    loss_sum: f64,
    correct: f64,
    /// Loss and accuracy of the last complete epoch.
    last: Option<(f32, f32)>,
}

impl Run {
    fn add(&mut self, s: &TrainSummary, images: usize) {
        self.steps += s.steps;
        self.images += images;
        self.loss_sum += s.final_loss as f64 * images as f64;
        self.correct += s.train_accuracy as f64 * images as f64;
    }

    fn finish(&self) -> (f32, f32) {
        let n = self.images.max(1) as f64;
        ((self.loss_sum / n) as f32, (self.correct / n) as f32)
    }

    fn summary(&self) -> TrainSummary {
        let (final_loss, train_accuracy) = self.last.unwrap_or_default();
        TrainSummary {
            epochs_done: self.epochs_done,
            steps: self.steps,
            final_loss,
            train_accuracy,
            val_accuracy: vec![],
            cancelled: self.cancelled,
        }
    }
}

/// [`Request::Hang`]: spins for `millis` (capped at [`MAX_HANG_MS`]) without yielding or
/// posting anything, so the worker answers nothing, as a hung engine call would. A test hook
/// for the page's heartbeat, which terminates the worker long before the spin ends.
fn hang(millis: u32) {
    let end = now() + f64::from(millis.min(MAX_HANG_MS));
    while now() < end {
        std::hint::spin_loop();
    }
}

/// Lets the event loop run (a zero-delay `setTimeout`), so that messages can arrive.
async fn yield_now() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
    });
    let _ = JsFuture::from(promise).await;
}

/// Sums chunk reports: counts and confusion add up, loss is weighted by count.
#[derive(Default)]
struct Merged {
    count: usize,
    loss_sum: f64,
    confusion: Vec<Vec<u32>>,
}

impl Merged {
    fn add(&mut self, r: &EvalReport) {
        self.count += r.count;
        self.loss_sum += r.loss as f64 * r.count as f64;
        let k = r.confusion.len().max(self.confusion.len());
        self.confusion.resize(k, Vec::new());
        for (row, part) in self.confusion.iter_mut().zip(&r.confusion) {
            if row.len() < part.len() {
                row.resize(part.len(), 0);
            }
            for (a, b) in row.iter_mut().zip(part) {
                *a += b;
            }
        }
    }

    fn finish(self) -> EvalReport {
        let ratio = |a: u32, b: u32| if b == 0 { 0.0 } else { a as f32 / b as f32 };
        let diag = |i: usize, row: &[u32]| row.get(i).copied().unwrap_or(0);
        let correct: u32 = self
            .confusion
            .iter()
            .enumerate()
            .map(|(i, r)| diag(i, r))
            .sum();
        let per_class = self
            .confusion
            .iter()
            .enumerate()
            .map(|(i, r)| ratio(diag(i, r), r.iter().sum()))
            .collect();
        EvalReport {
            count: self.count,
            accuracy: ratio(correct, self.count as u32),
            loss: if self.count == 0 {
                0.0
            } else {
                (self.loss_sum / self.count as f64) as f32
            },
            per_class,
            confusion: self.confusion,
        }
    }
}

/// Milliseconds from the worker's clock (`performance.now()`).
fn now() -> f64 {
    scope()
        .performance()
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Downloads `url` (relative to the worker script, which sits beside the page).
async fn fetch_bytes(url: &str) -> Result<Vec<u8>, Response> {
    let fail =
        |detail: String| Response::error("fetch", format!("cannot download {url}: {detail}"));
    let resp = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| fail(js_text(e)))?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| fail("not a Response".into()))?;
    if !resp.ok() {
        return Err(fail(format!(
            "HTTP {} {}",
            resp.status(),
            resp.status_text()
        )));
    }
    let buf = resp.array_buffer().map_err(|e| fail(js_text(e)))?;
    let buf = JsFuture::from(buf).await.map_err(|e| fail(js_text(e)))?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// A readable text for a thrown JS value.
fn js_text(v: JsValue) -> String {
    if let Some(e) = v.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warm-up's schedule: seven rounds on the small MLP, then one `low_rank` round per
    /// Gemm of the loaded model, smallest first, and nothing after; Gemms too large to factor
    /// in a short step are left out.
    #[test]
    fn warm_up_rounds() {
        let names = |g: lithe::graph::Graph| {
            let s = Session::from_graph(g).unwrap();
            (0..20)
                .map_while(|r| warm_round(&s, r))
                .map(|(m, k)| match m {
                    WarmModel::Tiny(_) => format!("tiny {}", k.recipe_json(&[], None)),
                    WarmModel::Loaded(layer) => format!("loaded {layer} rank {}", k.rank),
                })
                .collect::<Vec<_>>()
        };
        let lenet = names(lithe::zoo::build(lithe::zoo::Arch::Lenet300100, 1).unwrap());
        assert_eq!(lenet.len(), 10, "{lenet:#?}");
        assert!(lenet[..7].iter().all(|r| r.starts_with("tiny")));
        assert!(lenet[3].contains("low_rank") && lenet[6].contains("quantize"));
        assert_eq!(
            lenet[7..],
            [
                "loaded fc3 rank 16",
                "loaded fc2 rank 16",
                "loaded fc1 rank 16"
            ]
        );
        // LeNet-5's fc1 is 800×500 (d = 500): factored, as is its fc2.
        let lenet5 = names(lithe::zoo::build(lithe::zoo::Arch::Lenet5, 1).unwrap());
        assert_eq!(lenet5.len(), 9, "{lenet5:#?}");
        assert!(warm_factor(&[800, 500]) && warm_factor(&[1, 1 << 20]));
        assert!(!warm_factor(&[600, 700]) && !warm_factor(&[2, 1 << 20]) && !warm_factor(&[9]));
    }

    fn report(count: usize, loss: f32, confusion: Vec<Vec<u32>>) -> EvalReport {
        EvalReport {
            count,
            accuracy: 0.0,
            loss,
            per_class: vec![],
            confusion,
        }
    }

    #[test]
    fn merged_chunks_equal_one_evaluation() {
        let mut m = Merged::default();
        m.add(&report(3, 1.0, vec![vec![2, 1], vec![0, 0]]));
        m.add(&report(1, 3.0, vec![vec![0, 0], vec![0, 1]]));
        let r = m.finish();
        assert_eq!(r.count, 4);
        assert_eq!(r.confusion, vec![vec![2, 1], vec![0, 1]]);
        assert!((r.accuracy - 0.75).abs() < 1e-6);
        assert!((r.loss - 1.5).abs() < 1e-6);
        assert_eq!(r.per_class, vec![2.0 / 3.0, 1.0]);
    }

    #[test]
    fn nothing_merged_is_zero() {
        let r = Merged::default().finish();
        assert_eq!((r.count, r.accuracy, r.loss), (0, 0.0, 0.0));
    }
}
