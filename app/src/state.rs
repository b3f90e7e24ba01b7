//! What the UI knows, as plain data the components render.

use lithe::metrics::{EvalReport, ModelInfo};
use lithe_app::protocol::Stage;

/// What the worker is doing, as far as the page knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// The worker is starting (or restarting).
    Starting,
    /// A long job is running.
    Busy {
        /// Its current stage.
        stage: Stage,
        /// Units done.
        done: u32,
        /// Units in all.
        total: u32,
    },
    /// Waiting for the user.
    Idle,
    /// The worker died too often; the page gave up restarting it.
    Dead,
}

impl Phase {
    /// A short status line.
    pub fn label(&self) -> String {
        match self {
            Phase::Starting => "Starting the engine…".into(),
            Phase::Busy { stage, done, total } if *total > 1 => {
                format!("{}… {done} / {total}", stage.label())
            }
            Phase::Busy { stage, .. } => format!("{}…", stage.label()),
            Phase::Idle => "Ready".into(),
            Phase::Dead => "Engine stopped".into(),
        }
    }

    /// Whether a job is running.
    pub fn is_busy(&self) -> bool {
        matches!(self, Phase::Starting | Phase::Busy { .. })
    }
}

/// The model the worker holds.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedModel {
    /// Layer table and totals.
    pub info: ModelInfo,
    /// Size of the model file.
    pub file_bytes: u64,
    /// Where it came from, for the user (`lenet-300-100 (zoo)`, a file name).
    pub source: String,
}

/// The last evaluation on the test set.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// What the engine measured.
    pub report: EvalReport,
    /// How long it took, in milliseconds.
    pub millis: f64,
}

/// An error shown to the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// One line saying what failed.
    pub title: String,
    /// The error's stable code.
    pub code: String,
    /// The details, as the engine or the browser said them.
    pub message: String,
}

impl Notice {
    /// A notice for an error `code` with its `message`; the title follows from the code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        let title = match code {
            "decode" => "This file could not be read as an ONNX model",
            "unsupported_ops" => "This model uses operators Lithe cannot run yet",
            "limit" => "This file is too large",
            "shape" | "input" => "This model does not fit 28×28 MNIST digits",
            "graph" | "attribute" => "This model's graph is not valid",
            "fetch" => "A download failed",
            "settings" => "These settings cannot be used",
            "diverged" => "Training diverged (the loss is no longer a number)",
            "no_model" => "No model is loaded",
            "panic" => "The engine crashed",
            "worker" => "The engine's worker stopped",
            "recovered" => "The engine's worker stopped and was restarted",
            "read" => "The file could not be read",
            "protocol" => "The page and the engine misunderstood each other",
            _ => "Something went wrong",
        };
        Notice {
            title: title.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The fine-tuning job, as the page sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Training {
    /// A job was sent and has not finished.
    pub running: bool,
    /// The user asked to cancel the running job.
    pub cancelling: bool,
    /// Epochs asked for.
    pub epochs: u32,
    /// The latest progress report, if any.
    pub last: Option<TrainStep>,
    /// Training loss of every progress report, oldest first (for the curve).
    pub losses: Vec<f32>,
    /// The last finished job.
    pub result: Option<TrainResult>,
    /// The running or last job is a lottery ticket (else fine-tuning / distillation).
    pub lottery: bool,
    /// The runs of the last lottery job.
    pub rounds: Vec<lithe_app::protocol::LotteryRound>,
}

/// One progress report of a fine-tuning job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainStep {
    /// Current epoch, 0-based.
    pub epoch: u32,
    /// Epochs in all.
    pub epochs: u32,
    /// Steps finished in this epoch.
    pub step: u32,
    /// Steps per epoch.
    pub steps: u32,
    /// Mean training loss since the previous report.
    pub loss: f32,
    /// Training accuracy since the previous report.
    pub accuracy: f32,
}

impl TrainStep {
    /// Steps finished over all epochs, and steps in all.
    pub fn overall(&self) -> (u32, u32) {
        (
            self.epoch * self.steps + self.step,
            self.epochs * self.steps,
        )
    }
}

/// What a finished fine-tuning job achieved.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainResult {
    /// Epochs fully completed.
    pub epochs_done: u32,
    /// Optimisation steps taken.
    pub steps: u32,
    /// Whether the user cancelled it.
    pub cancelled: bool,
    /// Wall time of the training, in milliseconds.
    pub millis: f64,
    /// Milliseconds per epoch (from the time per step), if any step ran.
    pub millis_per_epoch: Option<f64>,
    /// Test accuracy before the job, if it was known.
    pub before: Option<f32>,
    /// Test accuracy after it (`None` when the job was cancelled by restarting the worker).
    pub after: Option<f32>,
    /// The job was cancelled by terminating the worker (a lottery ticket, one engine call that
    /// no message can interrupt): the model is back as loaded, with the card's knobs, unless
    /// `restored`.
    pub restarted: bool,
    /// With `restarted`: the weights trained before the job (fine-tuning, distillation, an
    /// earlier ticket) were handed to the new worker, so the model is back as it was.
    pub restored: bool,
}
