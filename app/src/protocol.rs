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
//! The worker handles requests one at a time, in order (except [`Request::Cancel`], which acts
//! on arrival). Every failure becomes a
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
    Ok(())
}

/// What the page asks the worker to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
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
    },
    /// Stop a running (or queued) fine-tuning after its current slice of steps; the weights
    /// trained so far are kept.
    Cancel,
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
        }
    }
}

/// What the worker tells the page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// The worker is running and listening.
    Ready,
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
    /// Probabilities for the digit of the last [`Request::Classify`].
    Classified {
        /// One probability per class, summing to 1.
        probs: Vec<f32>,
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
}

/// Weight formats the compression card offers, as `(value, label)`.
pub const FORMATS: [(&str, &str); 8] = [
    ("f32", "float32 (none)"),
    ("int8", "int8, linear symmetric per channel"),
    ("int4", "int4, linear symmetric per channel"),
    ("int2", "int2, linear symmetric per channel"),
    ("log2", "log2 (±2^k), 4 bits"),
    ("ternary", "ternary {−α, 0, α}"),
    ("binary", "binary ±α"),
    ("kmeans4", "k-means 4-bit codebook + Huffman"),
];

/// The recipe JSON for a global prune ratio in percent and a weight format from [`FORMATS`].
pub fn recipe_json(prune_percent: u32, format: &str) -> String {
    let mut passes = Vec::new();
    if prune_percent > 0 {
        passes.push(format!(
            r#"{{"pass": "prune", "by": "global", "ratio": {}}}"#,
            f64::from(prune_percent.min(99)) / 100.0
        ));
    }
    let quant = match format {
        "int8" => {
            Some(r#"{"pass": "quantize", "bits": 8, "symmetric": true, "per_channel": true}"#)
        }
        "int4" => {
            Some(r#"{"pass": "quantize", "bits": 4, "symmetric": true, "per_channel": true}"#)
        }
        "int2" => {
            Some(r#"{"pass": "quantize", "bits": 2, "symmetric": true, "per_channel": true}"#)
        }
        "log2" => Some(r#"{"pass": "lowbit", "scheme": "log2", "bits": 4}"#),
        "ternary" => Some(r#"{"pass": "lowbit", "scheme": "ternary"}"#),
        "binary" => Some(r#"{"pass": "lowbit", "scheme": "binary"}"#),
        "kmeans4" => Some(r#"{"pass": "share", "bits": 4}"#),
        _ => None,
    };
    passes.extend(quant.map(str::to_string));
    format!(r#"{{"passes": [{}]}}"#, passes.join(", "))
}

/// What a shared link restores: the zoo model and every knob of the compression card. It lives
/// in the URL's fragment, e.g. `#model=lenet-5&prune=90&weights=int4`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedState {
    /// A zoo model name (`lithe::zoo::Arch`).
    pub model: String,
    /// Global prune ratio in percent, 0–95 in steps of 5.
    pub prune: u32,
    /// A weight format of [`FORMATS`].
    pub weights: String,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState {
            model: DEFAULT_MODEL.into(),
            prune: 0,
            weights: "f32".into(),
        }
    }
}

impl SharedState {
    /// Reads a fragment (with or without the leading `#`). Unknown keys are ignored, and a
    /// value that is not valid (not a zoo name, a ratio off the slider, an unknown format)
    /// keeps its default, so a hand-edited or stale link still opens the page.
    pub fn from_fragment(fragment: &str) -> SharedState {
        let mut s = SharedState::default();
        for pair in fragment.trim_start_matches('#').split('&') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            match k {
                "model" if lithe::zoo::Arch::from_name(v).is_ok() => s.model = v.into(),
                "prune" => {
                    if let Ok(p) = v.parse::<u32>()
                        && p <= 95
                        && p % 5 == 0
                    {
                        s.prune = p;
                    }
                }
                "weights" if FORMATS.iter().any(|(f, _)| *f == v) => s.weights = v.into(),
                _ => {}
            }
        }
        s
    }

    /// The fragment for this state, `#model=…&prune=…&weights=…`.
    pub fn to_fragment(&self) -> String {
        format!(
            "#model={}&prune={}&weights={}",
            self.model, self.prune, self.weights
        )
    }

    /// Whether the knobs ask for any compression.
    pub fn compresses(&self) -> bool {
        self.prune > 0 || self.weights != "f32"
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
    /// Wall time of the recipe in milliseconds (the evaluation that follows is separate).
    pub millis: f64,
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
    fn shared_state_round_trips_and_ignores_bad_values() {
        let s = SharedState {
            model: "lenet-5".into(),
            prune: 90,
            weights: "int4".into(),
        };
        assert_eq!(s.to_fragment(), "#model=lenet-5&prune=90&weights=int4");
        assert_eq!(SharedState::from_fragment(&s.to_fragment()), s);
        assert!(s.compresses());
        assert_eq!(SharedState::from_fragment(""), SharedState::default());
        assert!(!SharedState::default().compresses());
        // Bad values keep their defaults; the good ones are still read.
        let bad = SharedState::from_fragment("#model=resnet&prune=93&weights=int3&x=1&prune");
        assert_eq!(bad, SharedState::default());
        let some = SharedState::from_fragment("weights=binary&prune=101&model=tiny-mlp");
        assert_eq!(
            (some.model.as_str(), some.prune, some.weights.as_str()),
            ("tiny-mlp", 0, "binary")
        );
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
        };
        assert!(check_distill(&d("lenet-5", 4.0, 0.5)).is_ok());
        assert!(check_distill(&d("resnet", 4.0, 0.5)).is_err());
        assert!(check_distill(&d("lenet-5", 0.0, 0.5)).is_err());
        assert!(check_distill(&d("lenet-5", f32::NAN, 0.5)).is_err());
        assert!(check_distill(&d("lenet-5", 4.0, 1.5)).is_err());
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
