//! The messages between the page and the worker: the only types both sides share.
//!
//! Both directions go through `postMessage` as JS values made by `serde-wasm-bindgen`
//! (externally tagged enums: `{ "Classify": { "pixels": [...] } }`, `"Evaluate"`).
//!
//! The exchange:
//!
//! 1. The worker starts and answers [`Response::Ready`]. Messages posted before that could be
//!    lost while its WebAssembly instantiates, so the page queues its requests until then.
//! 2. The page asks for a model ([`Request::LoadZoo`] or [`Request::LoadOnnx`]); the worker
//!    answers [`Response::Loaded`] with the layer table, or [`Response::Error`].
//! 3. After each `Loaded` the page sends [`Request::Evaluate`]; the worker fetches the test set
//!    once, reports [`Response::Progress`] and answers [`Response::Evaluated`].
//! 4. Drawing sends [`Request::Classify`]; the worker answers [`Response::Classified`].
//!
//! 5. [`Request::FineTune`] trains the loaded model on [`TRAIN_SET_URL`]; the worker reports
//!    [`Response::TrainProgress`] and finishes with [`Response::TrainDone`] (which carries a
//!    fresh test-set evaluation). [`Request::Cancel`] stops it early.
//!
//! 6. [`Request::Compress`] runs a compression recipe on the model as it was loaded (not on the
//!    result of an earlier compression) and makes the result the current model; the worker
//!    answers [`Response::Compressed`], and the page then asks for a fresh evaluation.
//!
//! 7. Every few seconds of silence the page sends [`Request::Ping`]; the worker answers
//!    [`Response::Pong`] as soon as its event loop runs. Any message counts as a sign of life;
//!    a worker silent for too long is treated as dead (see [`crate::heartbeat`]).
//!
//! The worker handles requests one at a time, in order (except [`Request::Cancel`],
//! [`Request::Ping`] and [`Request::Hang`], which act on arrival). Every failure becomes a
//! [`Response::Error`]; a panic is reported as one with code [`PANIC`] before the instance
//! dies, and the page then restarts the worker.

use lithe::metrics::{EvalReport, ModelInfo};
use lithe::train::TrainSummary;
use serde::{Deserialize, Serialize};

/// The zoo model loaded at start.
pub const DEFAULT_MODEL: &str = "lenet-300-100";
/// Where zoo models live, relative to the page: `models/{name}.onnx`.
pub const MODELS_DIR: &str = "models";
/// The MNIST test set (10,000 images), gzip-compressed Lithe dataset format.
pub const TEST_SET_URL: &str = "data/mnist-test.lmn.gz";
/// 6,000 MNIST training images for fine-tuning, gzip-compressed Lithe dataset format.
pub const TRAIN_SET_URL: &str = "data/mnist-train-6k.lmn.gz";
/// Most epochs a [`Request::FineTune`] may ask for.
pub const MAX_EPOCHS: u32 = 5;
/// Side of the images the models take.
pub const SIDE: usize = 28;
/// Pixels in one image (`SIDE * SIDE`).
pub const PIXELS: usize = SIDE * SIDE;
/// Error code of a panic inside the worker: the worker is dead and must be restarted.
pub const PANIC: &str = "panic";

/// Checks the settings of a [`Request::FineTune`]; `Err` says what is wrong, readably.
pub fn check_fine_tune(epochs: u32, lr: f32) -> Result<(), String> {
    if !(1..=MAX_EPOCHS).contains(&epochs) {
        return Err(format!("choose 1 to {MAX_EPOCHS} epochs (not {epochs})"));
    }
    if !(lr.is_finite() && lr > 0.0 && lr <= 1.0) {
        return Err("choose a learning rate above 0 and at most 1, e.g. 0.0001".into());
    }
    Ok(())
}

/// Distillation settings of a fine-tuning job: the student (the loaded model) learns from a
/// zoo teacher's softened outputs as well as from the labels (Hinton et al. 2015, with logit
/// standardisation; see docs/COMPRESSION.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillSettings {
    /// A zoo model name.
    pub teacher: String,
    /// Softmax temperature, above 0 and at most 100.
    pub temperature: f32,
    /// Weight of the teacher's term, 0 to 1 (the rest goes to the labels).
    pub alpha: f32,
    /// A teaching assistant (Mirzadeh et al. 2020): a zoo model that first learns from the
    /// teacher (its zoo weights fine-tuned by distillation), then teaches the student.
    #[serde(default)]
    pub ta: Option<String>,
}

fn yes() -> bool {
    true
}

/// Most rounds a [`Request::Lottery`] may ask for.
pub const MAX_LOTTERY_ROUNDS: u32 = 5;

/// Longest [`Request::Hang`] the worker obeys, in milliseconds.
pub const MAX_HANG_MS: u32 = 120_000;

/// Checks the settings of a [`Request::Lottery`] (on both sides).
pub fn check_lottery(rate: f32, rounds: u32, epochs: u32) -> Result<(), String> {
    if !(rate.is_finite() && (0.05..=0.9).contains(&rate)) {
        return Err("choose a lottery prune rate per round from 0.05 to 0.9, e.g. 0.5".into());
    }
    if !(1..=MAX_LOTTERY_ROUNDS).contains(&rounds) {
        return Err(format!(
            "choose 1 to {MAX_LOTTERY_ROUNDS} rounds (not {rounds})"
        ));
    }
    check_fine_tune(epochs, 0.001)
}

/// Checks distillation settings (on both sides, like [`check_fine_tune`]).
pub fn check_distill(d: &DistillSettings) -> Result<(), String> {
    if lithe::zoo::Arch::from_name(&d.teacher).is_err() {
        return Err(format!("`{}` is not a zoo model", d.teacher));
    }
    if !(d.temperature.is_finite() && d.temperature > 0.0 && d.temperature <= 100.0) {
        return Err("choose a temperature above 0 and at most 100, e.g. 4".into());
    }
    if !(0.0..=1.0).contains(&d.alpha) {
        return Err("choose a teacher weight α from 0 to 1, e.g. 0.5".into());
    }
    if let Some(ta) = &d.ta
        && lithe::zoo::Arch::from_name(ta).is_err()
    {
        return Err(format!("teaching assistant `{ta}` is not a zoo model"));
    }
    Ok(())
}

/// Where the worker runs inference (`device=` in the URL fragment; default `auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DevicePref {
    /// WebGPU on a hardware adapter, else the CPU (a software adapter such as SwiftShader is
    /// slower than the CPU kernels).
    #[default]
    Auto,
    /// WebGPU on any adapter, software ones included; the CPU when there is none.
    WebGpu,
    /// The CPU.
    Cpu,
}

impl DevicePref {
    /// The fragment value (`auto`, `webgpu`, `cpu`).
    pub fn name(self) -> &'static str {
        match self {
            DevicePref::Auto => "auto",
            DevicePref::WebGpu => "webgpu",
            DevicePref::Cpu => "cpu",
        }
    }

    /// Parses a fragment value.
    pub fn from_name(v: &str) -> Option<DevicePref> {
        [DevicePref::Auto, DevicePref::WebGpu, DevicePref::Cpu]
            .into_iter()
            .find(|d| d.name() == v)
    }
}

/// What the page asks the worker to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Choose where inference runs; answered by [`Response::Device`].
    Device {
        /// The user's preference.
        prefer: DevicePref,
    },
    /// Load `models/{name}.onnx` from the zoo shipped with the page.
    LoadZoo {
        /// Zoo architecture name, e.g. [`DEFAULT_MODEL`].
        name: String,
    },
    /// Load a model file chosen by the user. The page transfers the buffer (no copy); it is
    /// unusable on the page afterwards.
    LoadOnnx {
        /// The `.onnx` file's bytes.
        #[serde(with = "serde_wasm_bindgen::preserve")]
        bytes: js_sys::Uint8Array,
    },
    /// Evaluate the loaded model on the MNIST test set.
    Evaluate,
    /// Class probabilities of one drawn digit.
    Classify {
        /// [`PIXELS`] grey values, row-major, 0 = background, 255 = ink.
        pixels: Vec<u8>,
    },
    /// Fine-tune the loaded model on the 6,000 training images, then evaluate it again.
    FineTune {
        /// Passes over the training images, 1 to [`MAX_EPOCHS`].
        epochs: u32,
        /// Adam's base learning rate (cosine decay over the run); positive and finite.
        lr: f32,
        /// Learn from a teacher too (knowledge distillation); `None` = labels only.
        #[serde(default)]
        distill: Option<DistillSettings>,
    },
    /// Compress the model as it was loaded with a recipe (`lithe::compress::Recipe` JSON); the
    /// result becomes the current model. An empty recipe restores the loaded model.
    Compress {
        /// The recipe as JSON, e.g. `{"passes": [{"pass": "prune", "by": "global", "ratio": 0.9}]}`.
        recipe: String,
        /// Huffman-code the `.lithe` container (its size is reported; downloads use it).
        #[serde(default = "yes")]
        huffman: bool,
    },
    /// For each prunable layer, the test accuracy when only that layer is compressed with
    /// these knobs (the model as loaded, untouched otherwise). Answered with
    /// [`Response::Sensitivity`]; `Cancel` stops it between layers.
    Sensitivity {
        /// The compression card's knobs.
        knobs: Knobs,
    },
    /// A lottery ticket (Frankle & Carbin 2019): train from the zoo initial weights, prune the
    /// smallest `rate` of the survivors of every layer, rewind, repeat `rounds` times, then
    /// train the ticket; the result becomes the current model. Only zoo models (their initial
    /// weights are rebuilt from the metadata).
    Lottery {
        /// Fraction of the surviving weights removed per round, 0.05–0.9.
        rate: f32,
        /// Prune-and-rewind rounds, 1–[`MAX_LOTTERY_ROUNDS`].
        rounds: u32,
        /// Epochs of each training run over the 6,000 images, 1–[`MAX_EPOCHS`].
        epochs: u32,
    },
    /// Stop a running (or queued) fine-tuning after its current slice of steps; the weights
    /// trained so far are kept. (A lottery job is one engine call that no message can reach:
    /// the page cancels it by replacing the worker, then hands the new worker the
    /// [`Checkpoint`] the old one sent as the job started, with [`Request::Restore`].)
    Cancel,
    /// Make a [`Checkpoint`] the current model (the model as loaded stays what `Compress`
    /// starts from); sent to a restarted worker after the model is loaded again.
    Restore(Checkpoint),
    /// Are you there? Answered with [`Response::Pong`] on arrival, not in queue order (so not
    /// while a synchronous engine call runs).
    Ping,
    /// A test hook (`window.__litheHangWorker()`): on arrival, the worker stops answering by
    /// spinning for `millis` (at most [`MAX_HANG_MS`]) without yielding, as a hung engine
    /// call would; the page's heartbeat is expected to notice and replace it.
    Hang {
        /// How long to spin, in milliseconds.
        millis: u32,
    },
    /// Compress the model as loaded at each point and measure it on the test set (the current
    /// model stays); see [`crate::sweep::points`].
    Sweep {
        /// `(prune %, weight format)` pairs: 0–95 and a key of [`FORMATS`], at most
        /// [`crate::sweep::MAX_SWEEP_POINTS`].
        points: Vec<(u32, String)>,
    },
    /// Write the current model (or the report of its last compression) as a file to download.
    Export {
        /// What to write.
        format: ExportFormat,
    },
}

/// The files the page offers for download.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportFormat {
    /// The current model as dense f32 ONNX (compressed weights decoded): runs anywhere.
    Onnx,
    /// The current model as a `.lithe` container: its layers as they are encoded.
    Lithe,
    /// A JSON report: the recipe, one report per pass, sizes, energy and the test accuracy.
    Report,
}

impl ExportFormat {
    /// Every format, in the order the page lists them.
    pub const ALL: [ExportFormat; 3] = [
        ExportFormat::Onnx,
        ExportFormat::Lithe,
        ExportFormat::Report,
    ];

    /// The file name for a model called `model`, e.g. `lenet-5.compressed.lithe`.
    pub fn file_name(self, model: &str) -> String {
        let stem: String = model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let stem = if stem.is_empty() {
            "model".into()
        } else {
            stem
        };
        match self {
            ExportFormat::Onnx => format!("{stem}.compressed.onnx"),
            ExportFormat::Lithe => format!("{stem}.compressed.lithe"),
            ExportFormat::Report => format!("{stem}.report.json"),
        }
    }

    /// The MIME type of the file.
    pub fn mime(self) -> &'static str {
        match self {
            ExportFormat::Report => "application/json",
            _ => "application/octet-stream",
        }
    }

    /// Button label.
    pub fn label(self) -> &'static str {
        match self {
            ExportFormat::Onnx => "Download .onnx",
            ExportFormat::Lithe => "Download .lithe",
            ExportFormat::Report => "Download report",
        }
    }
}

/// Where a long job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Downloading a model file.
    FetchModel,
    /// Parsing a model file into a graph.
    Import,
    /// Downloading and decoding the test set.
    FetchData,
    /// Running the model on the test set.
    Evaluate,
    /// Downloading and decoding the training images.
    FetchTrain,
    /// Fine-tuning (units are optimisation steps over all epochs).
    Train,
    /// Running a compression recipe.
    Compress,
    /// Running a sweep (units are points).
    Sweep,
    /// Measuring per-layer sensitivity (units are layers).
    Sensitivity,
    /// Training a lottery ticket (units are optimisation steps over all runs).
    Lottery,
}

impl Stage {
    /// A short label for the UI.
    pub fn label(self) -> &'static str {
        match self {
            Stage::FetchModel => "Downloading the model",
            Stage::Import => "Importing the model",
            Stage::FetchData => "Downloading the test set",
            Stage::Evaluate => "Evaluating",
            Stage::FetchTrain => "Downloading the training images",
            Stage::Train => "Fine-tuning",
            Stage::Compress => "Compressing",
            Stage::Sweep => "Sweeping",
            Stage::Sensitivity => "Measuring layer sensitivity",
            Stage::Lottery => "Training a lottery ticket",
        }
    }
}

/// What the worker tells the page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// The worker is running and listening.
    Ready,
    /// The answer to a [`Request::Ping`].
    Pong,
    /// A long job advanced; `done` of `total` units (images when evaluating, else 0 of 1).
    Progress {
        /// What the job is doing.
        stage: Stage,
        /// Units finished.
        done: u32,
        /// Units in all.
        total: u32,
    },
    /// A model was loaded and replaces the previous one.
    Loaded {
        /// Layer table and totals.
        info: ModelInfo,
        /// Size of the model file in bytes.
        file_bytes: u64,
    },
    /// The loaded model was evaluated on the test set.
    Evaluated {
        /// Accuracy, loss, per-class accuracy and confusion matrix.
        report: EvalReport,
        /// Wall time of the evaluation in milliseconds (excluding the download).
        millis: f64,
    },
    /// Fine-tuning advanced.
    TrainProgress {
        /// Current epoch, 0-based.
        epoch: u32,
        /// Epochs in all.
        epochs: u32,
        /// Steps finished in this epoch.
        step: u32,
        /// Steps per epoch.
        steps: u32,
        /// Mean training loss since the previous report.
        loss: f32,
        /// Training accuracy since the previous report.
        accuracy: f32,
    },
    /// Fine-tuning finished (or was cancelled) and the model was evaluated again.
    TrainDone {
        /// Epochs and steps done, last epoch's loss and accuracy, whether it was cancelled.
        /// (Boxed, like `report`, to keep every `Response` small.)
        summary: Box<TrainSummary>,
        /// The fine-tuned model on the test set.
        report: Box<EvalReport>,
        /// Wall time of the training alone, in milliseconds.
        train_millis: f64,
        /// Wall time of the evaluation, in milliseconds.
        eval_millis: f64,
    },
    /// A [`Request::Compress`] finished; the compressed model is now the current one.
    Compressed(Box<CompressSummary>),
    /// Where inference (the drawn digit's classification) runs, and why.
    Device {
        /// `"webgpu"` or `"cpu"`.
        kind: String,
        /// The adapter (WebGPU), or why not WebGPU (CPU).
        detail: String,
    },
    /// Probabilities for the digit of the last [`Request::Classify`].
    Classified {
        /// One probability per class, summing to 1.
        probs: Vec<f32>,
        /// Where they were computed: `"webgpu"`, or `"cpu"` (also when WebGPU was chosen but
        /// failed on this digit, and the CPU answered instead).
        device: String,
    },
    /// A request failed; the worker keeps running (unless `code` is [`PANIC`]).
    Error {
        /// A short stable code: an engine code (`decode`, `unsupported_ops`…) or `fetch`,
        /// `protocol`, `no_model`, [`PANIC`].
        code: String,
        /// What went wrong, readable as it is.
        message: String,
    },
    /// The file asked for by [`Request::Export`].
    Exported {
        /// Which file.
        format: ExportFormat,
        /// Its bytes.
        #[serde(with = "serde_wasm_bindgen::preserve")]
        bytes: js_sys::Uint8Array,
    },
    /// One point of a running sweep.
    SweepPoint(crate::sweep::SweepPoint),
    /// The sweep has measured all its points (or was cancelled).
    SweepDone,
    /// Per-layer sensitivity (the answer to [`Request::Sensitivity`]).
    Sensitivity(Sensitivity),
    /// The rounds of a finished lottery job (sent just before its [`Response::TrainDone`]).
    LotteryRounds(Vec<LotteryRound>),
    /// The first answer to [`Request::Lottery`], before the job can block the worker: the
    /// current model when its weights were trained in the worker (fine-tuning, distillation,
    /// an earlier ticket), which a new worker could not rebuild from the model as loaded and
    /// the knobs; `None` when it could. The page keeps it until the job ends and hands it back
    /// with [`Request::Restore`] if it cancels the job by replacing the worker (a Cancel
    /// clicked before it arrives waits for it).
    Checkpoint(Option<Checkpoint>),
}

/// The current model of a worker, enough to make it current again in another one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The graph and its weights as ONNX.
    #[serde(with = "serde_wasm_bindgen::preserve")]
    pub onnx: js_sys::Uint8Array,
    /// Pruning masks by weight name, one bit per element (element `i` kept = bit `i % 8` of
    /// byte `i / 8`, see [`pack_mask`]), so fine-tuning after a restore keeps the zeros.
    pub masks: Vec<(String, Vec<u8>)>,
}

/// `mask` as bits, element `i` in bit `i % 8` of byte `i / 8`.
pub fn pack_mask(mask: &[bool]) -> Vec<u8> {
    let mut bits = vec![0u8; mask.len().div_ceil(8)];
    for (i, _) in mask.iter().enumerate().filter(|(_, k)| **k) {
        bits[i / 8] |= 1 << (i % 8);
    }
    bits
}

/// The first `len` flags of a mask packed by [`pack_mask`]; `None` when `bits` holds a
/// different number of bytes.
pub fn unpack_mask(bits: &[u8], len: usize) -> Option<Vec<bool>> {
    (bits.len() == len.div_ceil(8))
        .then(|| (0..len).map(|i| bits[i / 8] >> (i % 8) & 1 == 1).collect())
}

/// Test accuracy of the model as loaded and with one layer compressed at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// Accuracy of the model as loaded.
    pub base: f32,
    /// `(layer, accuracy with only that layer compressed)`, in graph order; `None` when the
    /// knobs cannot compress that layer alone (the error, e.g. a layer whose channels cannot
    /// be thinned, is in the second string).
    pub layers: Vec<(String, Option<f32>, String)>,
    /// Whether a `Cancel` stopped it early.
    pub cancelled: bool,
}

/// One training run of a lottery job.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LotteryRound {
    /// 0 = the dense run.
    pub round: u32,
    /// Share of the prunable weights kept, 0–1.
    pub kept: f32,
    /// Test accuracy after this run.
    pub accuracy: Option<f32>,
}

/// Weight histogram of one layer before and after compression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Node name.
    pub layer: String,
    /// The bins cover `[-limit, limit]` (the largest magnitude before compression).
    pub limit: f32,
    /// Counts of the loaded weights per bin ([`HISTOGRAM_BINS`] bins).
    pub before: Vec<u32>,
    /// Counts of the compressed layer's nonzero weights per bin (values outside the range go
    /// to the end bins); empty when the layer was rewritten (SVD factors).
    pub after: Vec<u32>,
    /// Share of the compressed layer's weights that are exactly zero.
    pub zeros: f32,
}

/// Bins of a [`Histogram`].
pub const HISTOGRAM_BINS: usize = 41;

/// Bins `values` into [`HISTOGRAM_BINS`] bins over `[-limit, limit]`, skipping exact zeros
/// when `skip_zeros`.
pub fn histogram(values: impl Iterator<Item = f32>, limit: f32, skip_zeros: bool) -> Vec<u32> {
    let mut bins = vec![0u32; HISTOGRAM_BINS];
    let limit = if limit.is_finite() && limit > 0.0 {
        limit
    } else {
        1.0
    };
    for v in values {
        if !v.is_finite() || (skip_zeros && v == 0.0) {
            continue;
        }
        let t = ((v / limit + 1.0) * 0.5 * HISTOGRAM_BINS as f32).floor();
        let i = (t.max(0.0) as usize).min(HISTOGRAM_BINS - 1);
        bins[i] = bins[i].saturating_add(1);
    }
    bins
}

/// Weight formats the compression card offers, as `(value, label)`.
pub const FORMATS: [(&str, &str); 12] = [
    ("f32", "float32 (none)"),
    ("int8", "int8, linear symmetric per channel"),
    ("int4", "int4, linear symmetric per channel"),
    ("int2", "int2, linear symmetric per channel"),
    ("uint8", "int8, linear asymmetric per channel"),
    ("uint4", "int4, linear asymmetric per channel"),
    ("uint2", "int2, linear asymmetric per channel"),
    ("log2", "log2 (±2^k), 4 bits"),
    ("ternary", "ternary {−α, 0, α}"),
    ("binary", "binary ±α"),
    ("kmeans4", "k-means 4-bit codebook"),
    ("kmeans2", "k-means 2-bit codebook"),
];

/// SVD ranks the compression card offers (0 = no factorisation).
pub const RANKS: [u32; 7] = [0, 128, 64, 32, 16, 8, 4];

/// The recipe JSON for a global prune ratio in percent and a weight format from [`FORMATS`].
pub fn recipe_json(prune_percent: u32, format: &str) -> String {
    Knobs {
        prune: prune_percent,
        weights: format.into(),
        ..Knobs::default()
    }
    .recipe_json(&[], None)
}

/// The quantization pass of a weight format of [`FORMATS`], if any.
fn quant_pass(format: &str) -> Option<&'static str> {
    Some(match format {
        "int8" => r#"{"pass": "quantize", "bits": 8, "symmetric": true, "per_channel": true}"#,
        "int4" => r#"{"pass": "quantize", "bits": 4, "symmetric": true, "per_channel": true}"#,
        "int2" => r#"{"pass": "quantize", "bits": 2, "symmetric": true, "per_channel": true}"#,
        "uint8" => r#"{"pass": "quantize", "bits": 8, "symmetric": false, "per_channel": true}"#,
        "uint4" => r#"{"pass": "quantize", "bits": 4, "symmetric": false, "per_channel": true}"#,
        "uint2" => r#"{"pass": "quantize", "bits": 2, "symmetric": false, "per_channel": true}"#,
        "log2" => r#"{"pass": "lowbit", "scheme": "log2", "bits": 4}"#,
        "ternary" => r#"{"pass": "lowbit", "scheme": "ternary"}"#,
        "binary" => r#"{"pass": "lowbit", "scheme": "binary"}"#,
        "kmeans4" => r#"{"pass": "share", "bits": 4}"#,
        "kmeans2" => r#"{"pass": "share", "bits": 2}"#,
        _ => return None,
    })
}

/// Whether `name` can travel in a URL fragment and a recipe as it is (node names of the zoo
/// and of most exported models).
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
}

/// Every knob of the compression card: what a recipe is built from, and what a shared link
/// restores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knobs {
    /// Prune ratio in percent, 0–95 in steps of 5 (the global ratio).
    pub prune: u32,
    /// Per-layer prune ratios in percent (node name → 0–95) that override [`Knobs::prune`];
    /// unstructured pruning only.
    pub layers: std::collections::BTreeMap<String, u32>,
    /// Structured pruning: remove whole neurons/filters (the `prune_filters` pass, L1 norm)
    /// instead of single weights.
    pub filters: bool,
    /// SVD rank of every Gemm (`low_rank` pass), 0 = off; one of [`RANKS`].
    pub rank: u32,
    /// A weight format of [`FORMATS`].
    pub weights: String,
    /// Huffman-code the `.lithe` container's streams (else fixed-width codes).
    pub huffman: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            prune: 0,
            layers: Default::default(),
            filters: false,
            rank: 0,
            weights: "f32".into(),
            huffman: true,
        }
    }
}

impl Knobs {
    /// Whether the knobs ask for any compression (Huffman alone changes no weight).
    pub fn compresses(&self) -> bool {
        self.prune > 0
            || self.weights != "f32"
            || self.rank > 0
            || (!self.filters && self.layers.values().any(|&r| r > 0))
    }

    /// The recipe JSON. `prunable` lists the model's prunable layers (Gemm/Conv/MatMul nodes
    /// with stored weights); per-layer ratios apply only to those (others are dropped) and, when
    /// any is set, every prunable layer is pruned at its own ratio (the override or the global
    /// ratio) instead of one global ranking. `only` restricts the pruning, factorisation and
    /// structured passes to one layer (for the sensitivity of that layer).
    pub fn recipe_json(&self, prunable: &[String], only: Option<&str>) -> String {
        let pct = |p: u32| f64::from(p.min(95)) / 100.0;
        let json = |n: &str| serde_json::Value::from(n).to_string();
        let names = |v: &[&str]| v.iter().map(|n| json(n)).collect::<Vec<_>>().join(", ");
        let mut passes = Vec::new();
        if self.filters {
            let ratio = only
                .and_then(|o| self.layers.get(o))
                .copied()
                .unwrap_or(self.prune);
            if ratio > 0 {
                let layers = only
                    .map(|o| format!(r#", "layers": [{}]"#, names(&[o])))
                    .unwrap_or_default();
                passes.push(format!(
                    r#"{{"pass": "prune_filters", "criterion": "l1", "ratio": {}{layers}}}"#,
                    pct(ratio)
                ));
            }
        }
        if self.rank > 0 {
            let layers = only
                .map(|o| format!(r#", "layers": [{}]"#, names(&[o])))
                .unwrap_or_default();
            passes.push(format!(
                r#"{{"pass": "low_rank", "rank": {}{layers}}}"#,
                self.rank
            ));
        }
        if !self.filters {
            let overrides: Vec<(&String, u32)> = prunable
                .iter()
                .filter_map(|n| self.layers.get(n).map(|&r| (n, r)))
                .collect();
            if overrides.is_empty() && only.is_none() {
                if self.prune > 0 {
                    passes.push(format!(
                        r#"{{"pass": "prune", "by": "global", "ratio": {}}}"#,
                        pct(self.prune)
                    ));
                }
            } else {
                let ratios: Vec<String> = prunable
                    .iter()
                    .filter(|n| only.is_none_or(|o| o == n.as_str()))
                    .map(|n| (n, self.layers.get(n).copied().unwrap_or(self.prune)))
                    .filter(|(_, r)| *r > 0)
                    .map(|(n, r)| format!("{}: {}", json(n), pct(r)))
                    .collect();
                if !ratios.is_empty() {
                    passes.push(format!(
                        r#"{{"pass": "prune", "by": "per_layer", "ratios": {{{}}}}}"#,
                        ratios.join(", ")
                    ));
                }
            }
        }
        passes.extend(quant_pass(&self.weights).map(str::to_string));
        format!(r#"{{"passes": [{}]}}"#, passes.join(", "))
    }
}

/// The fine-tune card's knobs, as text (as the inputs hold them; checked when a job starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainKnobs {
    /// Epochs per run.
    pub epochs: String,
    /// Learning rate.
    pub lr: String,
    /// Teacher (zoo name) or empty for labels only.
    pub teacher: String,
    /// Distillation temperature.
    pub temperature: String,
    /// Teacher weight α.
    pub alpha: String,
    /// Teaching assistant (zoo name) or empty.
    pub ta: String,
    /// Lottery prune rate per round.
    pub rate: String,
    /// Lottery rounds.
    pub rounds: String,
}

impl Default for TrainKnobs {
    fn default() -> Self {
        TrainKnobs {
            epochs: "1".into(),
            lr: "0.0001".into(),
            teacher: String::new(),
            temperature: "4".into(),
            alpha: "0.5".into(),
            ta: String::new(),
            rate: "0.5".into(),
            rounds: "2".into(),
        }
    }
}

impl TrainKnobs {
    /// `(URL key, value)` of every knob.
    fn fields(&self) -> [(&'static str, &String); 8] {
        [
            ("epochs", &self.epochs),
            ("lr", &self.lr),
            ("teacher", &self.teacher),
            ("T", &self.temperature),
            ("alpha", &self.alpha),
            ("ta", &self.ta),
            ("rate", &self.rate),
            ("rounds", &self.rounds),
        ]
    }

    /// Sets the knob for URL key `key` when `v` is a plausible value (a zoo name for the
    /// models, a short number otherwise); returns whether `key` is one of them.
    fn set(&mut self, key: &str, v: &str) -> bool {
        let number = v.len() <= 12 && !v.is_empty() && v.parse::<f64>().is_ok_and(f64::is_finite);
        let zoo = v.is_empty() || lithe::zoo::Arch::from_name(v).is_ok();
        let slot = match key {
            "epochs" if number => &mut self.epochs,
            "lr" if number => &mut self.lr,
            "T" if number => &mut self.temperature,
            "alpha" if number => &mut self.alpha,
            "rate" if number => &mut self.rate,
            "rounds" if number => &mut self.rounds,
            "teacher" if zoo => &mut self.teacher,
            "ta" if zoo => &mut self.ta,
            "epochs" | "lr" | "T" | "alpha" | "rate" | "rounds" | "teacher" | "ta" => return true,
            _ => return false,
        };
        *slot = v.to_string();
        true
    }
}

/// What a shared link restores: the zoo model, every knob of the compression card and of the
/// fine-tune card. It lives in the URL's fragment, e.g.
/// `#model=lenet-5&prune=90&weights=int4&rank=32&layer.fc1=95&teacher=lenet-5`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedState {
    /// A zoo model name (`lithe::zoo::Arch`); empty = the default model.
    pub model: String,
    /// The compression card.
    pub knobs: Knobs,
    /// The fine-tune card.
    pub train: TrainKnobs,
    /// Where inference runs.
    pub device: DevicePref,
}

/// Whether `p` is a prune ratio the sliders offer (0–95 in steps of 5).
fn slider_percent(v: &str) -> Option<u32> {
    v.parse::<u32>().ok().filter(|p| *p <= 95 && p % 5 == 0)
}

impl SharedState {
    /// Reads a fragment (with or without the leading `#`). Unknown keys are ignored, and a
    /// value that is not valid (not a zoo name, a ratio off the slider, an unknown format)
    /// keeps its default, so a hand-edited or stale link still opens the page.
    pub fn from_fragment(fragment: &str) -> SharedState {
        let mut s = SharedState {
            model: DEFAULT_MODEL.into(),
            ..SharedState::default()
        };
        let k = &mut s.knobs;
        let train = &mut s.train;
        for pair in fragment.trim_start_matches('#').split('&') {
            let Some((key, v)) = pair.split_once('=') else {
                continue;
            };
            match key {
                "model" if lithe::zoo::Arch::from_name(v).is_ok() => s.model = v.into(),
                "prune" => k.prune = slider_percent(v).unwrap_or(k.prune),
                "weights" if FORMATS.iter().any(|(f, _)| *f == v) => k.weights = v.into(),
                "structure" => k.filters = v == "filters",
                "rank" => {
                    if let Some(r) = v.parse().ok().filter(|r| RANKS.contains(r)) {
                        k.rank = r;
                    }
                }
                "huffman" => k.huffman = v != "off",
                "device" => s.device = DevicePref::from_name(v).unwrap_or_default(),
                _ if train.set(key, v) => {}
                _ => {
                    if let (Some(name), Some(p)) = (key.strip_prefix("layer."), slider_percent(v))
                        && plain_name(name)
                    {
                        k.layers.insert(name.into(), p);
                    }
                }
            }
        }
        s
    }

    /// The fragment for this state, `#model=…&prune=…&weights=…` and the knobs that differ
    /// from their defaults.
    pub fn to_fragment(&self) -> String {
        let k = &self.knobs;
        let mut f = format!(
            "#model={}&prune={}&weights={}",
            if self.model.is_empty() {
                DEFAULT_MODEL
            } else {
                &self.model
            },
            k.prune,
            k.weights
        );
        if k.filters {
            f.push_str("&structure=filters");
        }
        if k.rank > 0 {
            f.push_str(&format!("&rank={}", k.rank));
        }
        if !k.huffman {
            f.push_str("&huffman=off");
        }
        for (name, p) in &k.layers {
            if plain_name(name) {
                f.push_str(&format!("&layer.{name}={p}"));
            }
        }
        if self.device != DevicePref::Auto {
            f.push_str(&format!("&device={}", self.device.name()));
        }
        let defaults = TrainKnobs::default();
        for ((key, v), (_, d)) in self.train.fields().into_iter().zip(defaults.fields()) {
            let mut probe = TrainKnobs::default();
            // Only values a link can carry back (the same check as on reading).
            if v != d
                && probe.set(key, v)
                && probe.fields().iter().any(|(k, x)| *k == key && *x == v)
            {
                f.push_str(&format!("&{key}={v}"));
            }
        }
        f
    }

    /// Whether the knobs ask for any compression.
    pub fn compresses(&self) -> bool {
        self.knobs.compresses()
    }
}

/// Checks a sweep request's points (on both sides).
pub fn check_sweep(points: &[(u32, String)]) -> Result<(), String> {
    if points.is_empty() || points.len() > crate::sweep::MAX_SWEEP_POINTS {
        return Err(format!(
            "a sweep has 1 to {} points, not {}",
            crate::sweep::MAX_SWEEP_POINTS,
            points.len()
        ));
    }
    for (p, f) in points {
        if *p > 95 {
            return Err(format!("prune ratio {p} % is above 95 %"));
        }
        if !FORMATS.iter().any(|(k, _)| k == f) {
            return Err(format!("unknown weight format `{f}`"));
        }
    }
    Ok(())
}

/// What a compression did, for the metrics the page shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressSummary {
    /// Pass names, in order.
    pub passes: Vec<String>,
    /// Weight bytes of the loaded model (dense f32 with headers, as the reports count them).
    pub bytes_before: u64,
    /// Weight bytes after the recipe (lengths of the real encodings).
    pub bytes_after: u64,
    /// Multiply-accumulates per image before.
    pub macs_before: u64,
    /// Multiply-accumulates per image after (zero weights skipped).
    pub macs_after: u64,
    /// Fraction of prunable weights that are zero.
    pub sparsity: f32,
    /// Estimated energy per image of the loaded model, picojoules (45 nm table).
    pub energy_before_pj: f64,
    /// The same for the compressed model.
    pub energy_after_pj: f64,
    /// `(layer, kernel)` for every Gemm/Conv of the compressed model's execution plan.
    pub kernels: Vec<(String, String)>,
    /// Layer table of the compressed model.
    pub info: ModelInfo,
    /// Length of the `.lithe` container of the result (Huffman or fixed-width codes, as
    /// asked).
    pub lithe_bytes: u64,
    /// Whether that container is Huffman-coded.
    pub huffman: bool,
    /// Per-layer weight histograms before and after.
    pub histograms: Vec<Histogram>,
    /// Wall time of the recipe in milliseconds (the evaluation that follows is separate).
    pub millis: f64,
    /// Wall time of what the worker did after the recipe (execution plan, sizes, `.lithe`
    /// encoding, histograms), in milliseconds.
    pub extra_millis: f64,
}

impl Response {
    /// An error response.
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Response::Error {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<lithe::Error> for Response {
    fn from(e: lithe::Error) -> Self {
        Response::error(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_pack_into_bits_and_back() {
        for len in [0usize, 1, 7, 8, 9, 235_200] {
            let mask: Vec<bool> = (0..len).map(|i| (i * 7919) % 13 < 4).collect();
            let bits = super::pack_mask(&mask);
            assert_eq!(bits.len(), len.div_ceil(8));
            assert_eq!(super::unpack_mask(&bits, len), Some(mask));
        }
        assert_eq!(super::unpack_mask(&[0xff], 9), None);
        assert_eq!(super::unpack_mask(&[0xff, 0], 8), None);
    }

    #[test]
    fn shared_state_round_trips_and_ignores_bad_values() {
        let s = SharedState {
            model: "lenet-5".into(),
            train: TrainKnobs::default(),
            device: DevicePref::Auto,
            knobs: Knobs {
                prune: 90,
                weights: "int4".into(),
                ..Knobs::default()
            },
        };
        assert_eq!(s.to_fragment(), "#model=lenet-5&prune=90&weights=int4");
        assert_eq!(SharedState::from_fragment(&s.to_fragment()), s);
        assert!(s.compresses());
        let gpu = SharedState {
            device: DevicePref::WebGpu,
            ..s.clone()
        };
        assert_eq!(
            gpu.to_fragment(),
            "#model=lenet-5&prune=90&weights=int4&device=webgpu"
        );
        assert_eq!(SharedState::from_fragment(&gpu.to_fragment()), gpu);
        assert_eq!(
            SharedState::from_fragment("device=gpu").device,
            DevicePref::Auto,
            "an unknown device keeps the default"
        );
        let default = SharedState::from_fragment("");
        assert_eq!(default.model, DEFAULT_MODEL);
        assert_eq!(default.knobs, Knobs::default());
        assert!(!default.compresses());
        // Bad values keep their defaults; the good ones are still read.
        let bad = SharedState::from_fragment(
            "#model=resnet&prune=93&weights=int3&x=1&prune&rank=7&layer.fc1=97&layer.a%20b=5",
        );
        assert_eq!(bad, default);
        let some = SharedState::from_fragment("weights=binary&prune=101&model=tiny-mlp");
        assert_eq!(
            (
                some.model.as_str(),
                some.knobs.prune,
                some.knobs.weights.as_str()
            ),
            ("tiny-mlp", 0, "binary")
        );
    }

    #[test]
    fn every_knob_round_trips_through_the_url() {
        let mut layers = std::collections::BTreeMap::new();
        layers.insert("fc1".to_string(), 95);
        layers.insert("conv_2".to_string(), 0);
        let s = SharedState {
            model: "tiny-mlp".into(),
            train: TrainKnobs::default(),
            device: DevicePref::Cpu,
            knobs: Knobs {
                prune: 40,
                layers,
                filters: true,
                rank: 32,
                weights: "uint4".into(),
                huffman: false,
            },
        };
        let f = s.to_fragment();
        assert_eq!(
            f,
            "#model=tiny-mlp&prune=40&weights=uint4&structure=filters&rank=32&huffman=off&layer.conv_2=0&layer.fc1=95&device=cpu"
        );
        assert_eq!(SharedState::from_fragment(&f), s);
        // The fine-tune card's knobs too; values a link cannot carry are left out.
        let mut t = s.clone();
        t.train.teacher = "lenet-5".into();
        t.train.ta = "lenet-300-100".into();
        t.train.lr = "0.001".into();
        t.train.rounds = "3".into();
        let f = t.to_fragment();
        assert!(
            f.ends_with("&lr=0.001&teacher=lenet-5&ta=lenet-300-100&rounds=3"),
            "{f}"
        );
        assert_eq!(SharedState::from_fragment(&f), t);
        t.train.alpha = "a&b=c".into();
        assert!(!t.to_fragment().contains("alpha"));
        let odd = SharedState::from_fragment("#teacher=vgg&epochs=lots&T=2");
        assert_eq!(odd.train.teacher, "");
        assert_eq!(odd.train.epochs, "1");
        assert_eq!(odd.train.temperature, "2");
        // Only Huffman off compresses nothing.
        let h = Knobs {
            huffman: false,
            ..Knobs::default()
        };
        assert!(!h.compresses());
        let l = Knobs {
            layers: [("fc2".to_string(), 50)].into(),
            ..Knobs::default()
        };
        assert!(l.compresses());
    }

    fn pass_names(json: &str) -> Vec<String> {
        let r = lithe::compress::Recipe::from_json(json).unwrap();
        assert!(!r.needs_data(), "{json}");
        r.passes.iter().map(|p| p.name().to_string()).collect()
    }

    #[test]
    fn knobs_make_recipes_in_pass_order() {
        let prunable: Vec<String> = ["fc1", "fc2", "fc3"].map(String::from).into();
        let mut k = Knobs {
            prune: 50,
            rank: 16,
            weights: "kmeans2".into(),
            ..Knobs::default()
        };
        assert_eq!(
            pass_names(&k.recipe_json(&prunable, None)),
            ["low_rank", "prune", "share"]
        );
        // A per-layer ratio turns the global ranking into one ratio per layer.
        k.layers.insert("fc1".into(), 90);
        k.layers.insert("gone".into(), 90);
        let j = k.recipe_json(&prunable, None);
        assert!(j.contains(r#""by": "per_layer""#), "{j}");
        assert!(
            j.contains(r#""fc1": 0.9"#) && j.contains(r#""fc3": 0.5"#),
            "{j}"
        );
        assert!(!j.contains("gone"), "{j}");
        // One layer alone: that layer's ratio and rank only.
        let j = k.recipe_json(&prunable, Some("fc2"));
        assert!(j.contains(r#""ratios": {"fc2": 0.5}"#), "{j}");
        assert!(j.contains(r#""layers": ["fc2"]"#), "{j}");
        // Structured: filters instead of weights; per-layer ratios do not apply.
        k.filters = true;
        assert_eq!(
            pass_names(&k.recipe_json(&prunable, None)),
            ["prune_filters", "low_rank", "share"]
        );
        let asym = Knobs {
            weights: "uint8".into(),
            ..Knobs::default()
        };
        assert!(
            asym.recipe_json(&[], None)
                .contains(r#""symmetric": false"#)
        );
        assert_eq!(
            Knobs::default().recipe_json(&prunable, None),
            r#"{"passes": []}"#
        );
    }

    #[test]
    fn histograms_bin_symmetrically() {
        let h = histogram([-1.0, 0.0, 1.0, 0.5, 7.0, f32::NAN].into_iter(), 1.0, false);
        assert_eq!(h.len(), HISTOGRAM_BINS);
        assert_eq!(h.iter().sum::<u32>(), 5);
        assert_eq!(h[0], 1);
        assert_eq!(h[HISTOGRAM_BINS / 2], 1);
        assert_eq!(h[HISTOGRAM_BINS - 1], 2);
        let nz = histogram([0.0, 0.0, 0.25].into_iter(), 0.0, true);
        assert_eq!(nz.iter().sum::<u32>(), 1);
        assert!(check_lottery(0.5, 2, 1).is_ok());
        assert!(check_lottery(0.95, 2, 1).is_err());
        assert!(check_lottery(0.5, 0, 1).is_err());
        assert!(check_lottery(0.5, 2, 9).is_err());
    }

    use super::*;

    #[test]
    fn fine_tune_settings() {
        assert!(check_fine_tune(1, 1e-4).is_ok());
        assert!(check_fine_tune(MAX_EPOCHS, 1.0).is_ok());
        assert!(check_fine_tune(0, 1e-4).is_err());
        assert!(check_fine_tune(MAX_EPOCHS + 1, 1e-4).is_err());
        assert!(check_fine_tune(1, 0.0).is_err());
        assert!(check_fine_tune(1, f32::NAN).is_err());
        assert!(check_fine_tune(1, 2.0).is_err());
        let d = |t: &str, temperature, alpha| DistillSettings {
            teacher: t.into(),
            temperature,
            alpha,
            ta: None,
        };
        assert!(check_distill(&d("lenet-5", 4.0, 0.5)).is_ok());
        assert!(check_distill(&d("resnet", 4.0, 0.5)).is_err());
        assert!(check_distill(&d("lenet-5", 0.0, 0.5)).is_err());
        assert!(check_distill(&d("lenet-5", f32::NAN, 0.5)).is_err());
        assert!(check_distill(&d("lenet-5", 4.0, 1.5)).is_err());
        let mut with_ta = d("lenet-5", 4.0, 0.5);
        with_ta.ta = Some("lenet-300-100".into());
        assert!(check_distill(&with_ta).is_ok());
        with_ta.ta = Some("vgg".into());
        assert!(check_distill(&with_ta).is_err());
    }

    #[test]
    fn recipes_parse_and_say_what_the_controls_say() {
        for (pct, f) in [
            (0, "f32"),
            (90, "int8"),
            (50, "binary"),
            (95, "kmeans4"),
            (99, "log2"),
        ] {
            let r = lithe::compress::Recipe::from_json(&recipe_json(pct, f)).unwrap();
            let names: Vec<&str> = r.passes.iter().map(|p| p.name()).collect();
            let mut want = Vec::new();
            if pct > 0 {
                want.push("prune");
            }
            match f {
                "f32" => {}
                "int8" => want.push("quantize"),
                "kmeans4" => want.push("share"),
                _ => want.push("lowbit"),
            }
            assert_eq!(names, want, "{pct} {f}");
            assert!(!r.needs_data());
        }
    }
}
