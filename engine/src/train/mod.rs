//! Training: losses, optimizers, schedules and the mini-batch loop with progress and
//! cancellation.

pub mod distill;
pub mod loss;
pub mod optim;

pub use optim::{Optimizer, Schedule};

use crate::data::{Dataset, Preprocess};
use crate::exec;
use crate::graph::{Graph, Op};
use crate::ops::Saved;
use crate::rng::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

/// Pruning masks by weight name: one flag per element in logical (row-major) order, `true` =
/// kept, `false` = pruned (held at exactly zero by [`train_masked`]).
pub type Masks = BTreeMap<String, Vec<bool>>;

/// Everything that decides a training run. Same config + same data + same seed = same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f32,
    /// Update rule.
    pub optimizer: Optimizer,
    /// L2 weight decay on weight matrices and kernels (not biases or BatchNorm parameters).
    pub weight_decay: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed for shuffling and dropout.
    pub seed: u64,
    /// Pixel transform; `None` reads it from the graph metadata (default x/255).
    pub preprocess: Option<Preprocess>,
    /// Report progress every this many steps (and at each epoch end).
    pub log_every: usize,
    /// Data augmentation: shift each training image by up to this many pixels in x and y
    /// (uniform, seeded; 0 turns it off).
    pub augment_shift: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch_size: 64,
            lr: 1e-3,
            optimizer: Optimizer::adam(),
            weight_decay: 0.0,
            schedule: Schedule::Cosine { min_factor: 0.02 },
            seed: 1,
            preprocess: None,
            log_every: 50,
            augment_shift: 0,
        }
    }
}

/// A progress event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Total epochs.
    pub epochs: usize,
    /// Step within the epoch (1-based, counts finished steps).
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// Mean training loss since the last event.
    pub loss: f32,
    /// Training accuracy since the last event.
    pub accuracy: f32,
    /// Validation accuracy, at epoch ends when a validation set is given.
    pub val_accuracy: Option<f32>,
    /// Learning rate in use.
    pub lr: f32,
}

/// What a finished (or cancelled) run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Epochs fully completed.
    pub epochs_done: usize,
    /// Steps taken.
    pub steps: usize,
    /// Mean training loss of the last epoch.
    pub final_loss: f32,
    /// Training accuracy of the last epoch.
    pub train_accuracy: f32,
    /// Validation accuracy after each epoch.
    pub val_accuracy: Vec<f32>,
    /// True when the progress callback asked to stop.
    pub cancelled: bool,
}

/// One optimisation step on a batch: forward, cross-entropy, backward, update. Returns the loss,
/// the gradient of every trainable weight and how many predictions were right. Batch-norm running
/// statistics are updated in `g`.
pub fn step_gradients(
    g: &mut Graph,
    x: &crate::tensor::Tensor,
    y: &[u8],
    rng: &mut Rng,
) -> Result<(f32, HashMap<String, crate::tensor::Tensor>, usize)> {
    step_objective(g, None, x, y, rng, &mut CrossEntropy)
}

/// What a training step minimises, given the forward trace of a batch. The default is
/// [`CrossEntropy`]; distillation supplies its own. The seeds it returns are gradients of the
/// loss with respect to any values of the trace (the logits, and intermediate features for
/// feature losses); [`exec::backward`] accumulates them.
pub trait Objective {
    /// Loss of the batch, the seeds for the backward pass and how many predictions were right.
    /// `output` names the logits; `x` is the batch exactly as fed to the graph (preprocessed and
    /// augmented); `y` the labels.
    fn loss(
        &mut self,
        trace: &exec::Trace,
        output: &str,
        x: &crate::tensor::Tensor,
        y: &[u8],
    ) -> Result<(f32, HashMap<String, crate::tensor::Tensor>, usize)>;
}

/// Softmax cross-entropy on the labels.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossEntropy;

impl Objective for CrossEntropy {
    fn loss(
        &mut self,
        trace: &exec::Trace,
        output: &str,
        _x: &crate::tensor::Tensor,
        y: &[u8],
    ) -> Result<(f32, HashMap<String, crate::tensor::Tensor>, usize)> {
        let logits = trace.get(output)?;
        let (loss, dl, correct) = loss::cross_entropy(&flatten_logits(logits)?, y)?;
        let dl = dl
            .into_shape_with_order(logits.raw_dim())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok((loss, HashMap::from([(output.to_string(), dl)]), correct))
    }
}

/// Maps a float weight to the value the forward pass uses instead (`None` = unchanged). Used
/// for quantization-aware training: the forward pass sees fake-quantized weights and their
/// gradients go straight through (the straight-through estimator) to the float weights.
pub type WeightView<'a> =
    &'a dyn Fn(&str, &crate::tensor::Tensor) -> Result<Option<crate::tensor::Tensor>>;

/// Optional changes to the training loop. `Hooks::default()` is plain [`train`].
#[derive(Default)]
pub struct Hooks<'a> {
    /// Pruning masks kept at zero (see [`train_masked`]).
    pub masks: Option<&'a Masks>,
    /// The loss; `None` = [`CrossEntropy`].
    pub objective: Option<&'a mut dyn Objective>,
    /// Weights the forward pass sees; `None` = the float weights themselves.
    pub forward_weights: Option<WeightView<'a>>,
}

/// `g` with every weight replaced by its view (a copy), or `None` when there is no view.
fn viewed(g: &Graph, view: Option<WeightView>) -> Result<Option<Graph>> {
    let Some(view) = view else { return Ok(None) };
    let mut out = g.clone();
    for (k, w) in &g.weights {
        if let Some(v) = view(k, w)? {
            if v.shape() != w.shape() {
                return Err(Error::Invalid(format!(
                    "weight view of `{k}` changed its shape from {:?} to {:?}",
                    w.shape(),
                    v.shape()
                )));
            }
            out.weights.insert(k.clone(), v);
        }
    }
    Ok(Some(out))
}

/// One forward/backward on `fwd` (or `g` itself), minimising `objective`. Running statistics are
/// updated in `g`.
fn step_objective(
    g: &mut Graph,
    fwd: Option<&Graph>,
    x: &crate::tensor::Tensor,
    y: &[u8],
    rng: &mut Rng,
    objective: &mut dyn Objective,
) -> Result<(f32, HashMap<String, crate::tensor::Tensor>, usize)> {
    let run_on: &Graph = fwd.unwrap_or(g);
    let input = run_on
        .inputs
        .first()
        .map(|v| v.name.clone())
        .ok_or_else(|| Error::Graph("the graph has no input".into()))?;
    let output = run_on
        .outputs
        .first()
        .cloned()
        .ok_or_else(|| Error::Graph("the graph has no output".into()))?;
    let trace = exec::forward_train(run_on, &[(input.as_str(), x)], rng)?;
    let (loss, seeds, correct) = objective.loss(&trace, &output, x, y)?;
    let grads = exec::backward(run_on, &trace, seeds)?;
    update_running_stats(g, &trace);
    Ok((loss, grads, correct))
}

/// Views `[n, c, 1, 1]`-style logits as `[n, c]`.
pub(crate) fn flatten_logits(t: &crate::tensor::Tensor) -> Result<crate::tensor::Tensor> {
    let n = t.shape().first().copied().unwrap_or(0);
    let c = t.len() / n.max(1);
    crate::tensor::into_standard(t.clone())
        .into_shape_with_order(ndarray::IxDyn(&[n, c]))
        .map_err(|e| Error::Invalid(e.to_string()))
}

fn update_running_stats(g: &mut Graph, trace: &exec::Trace) {
    for (i, n) in g.nodes.iter().enumerate() {
        if let (Op::BatchNorm { momentum, .. }, Saved::BatchNorm { mean, var, .. }) =
            (&n.op, &trace.saved[i])
        {
            for (slot, batch) in [(3, mean), (4, var)] {
                if let Some(w) = n.inputs.get(slot).and_then(|k| g.weights.get_mut(k)) {
                    w.iter_mut()
                        .zip(batch)
                        .for_each(|(r, &b)| *r = *r * momentum + b * (1.0 - momentum));
                }
            }
        }
    }
}

/// Trains `g` in place on `data`. `on_progress` is called every `log_every` steps and at each
/// epoch end; returning `ControlFlow::Break(())` stops after the current step (the summary
/// then says `cancelled`).
pub fn train(
    g: &mut Graph,
    data: &Dataset,
    val: Option<&Dataset>,
    cfg: &TrainConfig,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<TrainSummary> {
    train_with(g, data, val, cfg, Hooks::default(), on_progress)
}

/// Like [`train`], but keeps pruned connections at zero: the gradient of every masked element is
/// zeroed before each optimizer step and the mask is re-applied to the weight after it. Masks
/// name weights of `g`; each must have exactly one flag per element.
pub fn train_masked(
    g: &mut Graph,
    data: &Dataset,
    val: Option<&Dataset>,
    cfg: &TrainConfig,
    masks: &Masks,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<TrainSummary> {
    train_with(
        g,
        data,
        val,
        cfg,
        Hooks {
            masks: Some(masks),
            ..Hooks::default()
        },
        on_progress,
    )
}

fn apply_mask(t: &mut crate::tensor::Tensor, mask: &[bool]) {
    t.iter_mut()
        .zip(mask)
        .filter(|(_, keep)| !**keep)
        .for_each(|(v, _)| *v = 0.0);
}

/// The training loop with [`Hooks`]: [`train`] and [`train_masked`] are special cases. Masks are
/// applied to the weights before the first step (as [`train_masked`] does) and after every
/// step; with a weight view, each step runs forward and backward on the viewed weights and
/// applies the gradients to the float weights, and validation uses the viewed weights too.
pub fn train_with(
    g: &mut Graph,
    data: &Dataset,
    val: Option<&Dataset>,
    cfg: &TrainConfig,
    hooks: Hooks,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<TrainSummary> {
    let Hooks {
        masks,
        objective,
        forward_weights,
    } = hooks;
    for (name, m) in masks.into_iter().flatten() {
        let w = g
            .weights
            .get_mut(name)
            .ok_or_else(|| Error::Invalid(format!("mask for unknown weight `{name}`")))?;
        if w.len() != m.len() {
            return Err(Error::Invalid(format!(
                "mask for `{name}` has {} flags, the weight has {} elements",
                m.len(),
                w.len()
            )));
        }
        apply_mask(w, m);
    }
    let mut ce = CrossEntropy;
    let objective: &mut dyn Objective = match objective {
        Some(o) => o,
        None => &mut ce,
    };
    if data.is_empty() {
        return Err(Error::Invalid("the training set is empty".into()));
    }
    g.validate()?;
    let pre = cfg
        .preprocess
        .or_else(|| Preprocess::from_metadata(&g.metadata))
        .unwrap_or_default();
    let trainable = g.trainable();
    let decays: HashMap<&str, f32> = trainable
        .iter()
        .map(|k| {
            (
                k.as_str(),
                if g.weights[k].ndim() >= 2 {
                    cfg.weight_decay
                } else {
                    0.0
                },
            )
        })
        .collect();
    let mut state = optim::State::default();
    let mut rng = Rng::new(cfg.seed).fork(0xd40);
    let mut aug_rng = Rng::new(cfg.seed).fork(0xa06);
    let steps = data.len().div_ceil(cfg.batch_size.max(1));
    let total = steps * cfg.epochs;
    let mut summary = TrainSummary {
        epochs_done: 0,
        steps: 0,
        final_loss: 0.0,
        train_accuracy: 0.0,
        val_accuracy: vec![],
        cancelled: false,
    };
    for epoch in 0..cfg.epochs {
        let batches = data.batches(
            cfg.batch_size,
            Some(cfg.seed.wrapping_mul(1000).wrapping_add(epoch as u64)),
        );
        let (mut win_loss, mut win_correct, mut win_n) = (0.0f64, 0usize, 0usize);
        let (mut ep_loss, mut ep_correct) = (0.0f64, 0usize);
        for (s, idx) in batches.iter().enumerate() {
            let lr = cfg.schedule.rate(cfg.lr, epoch, summary.steps, total);
            let (mut x, y) = data.batch(idx, &pre);
            if cfg.augment_shift > 0 {
                crate::data::random_shift(&mut x, cfg.augment_shift, pre.apply(0), &mut aug_rng);
            }
            let fwd = viewed(g, forward_weights)?;
            let (loss, mut grads, correct) =
                step_objective(g, fwd.as_ref(), &x, &y, &mut rng, objective)?;
            if !loss.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    step: s,
                    loss,
                });
            }
            state.tick();
            for name in &trainable {
                let mask = masks.and_then(|m| m.get(name));
                if let (Some(gr), Some(m)) = (grads.get_mut(name), mask) {
                    apply_mask(gr, m);
                }
                if let (Some(gr), Some(w)) = (grads.get(name), g.weights.get_mut(name)) {
                    state.step(&cfg.optimizer, name, w, gr, lr, decays[name.as_str()]);
                    if let Some(m) = mask {
                        apply_mask(w, m);
                    }
                }
            }
            summary.steps += 1;
            win_loss += loss as f64 * y.len() as f64;
            ep_loss += loss as f64 * y.len() as f64;
            win_correct += correct;
            ep_correct += correct;
            win_n += y.len();
            let last = s + 1 == batches.len();
            if (s + 1) % cfg.log_every.max(1) == 0 && !last {
                let p = Progress {
                    epoch,
                    epochs: cfg.epochs,
                    step: s + 1,
                    steps,
                    loss: (win_loss / win_n as f64) as f32,
                    accuracy: win_correct as f32 / win_n as f32,
                    val_accuracy: None,
                    lr,
                };
                (win_loss, win_correct, win_n) = (0.0, 0, 0);
                if on_progress(&p).is_break() {
                    summary.cancelled = true;
                    return Ok(summary);
                }
            }
            if last {
                summary.final_loss = (ep_loss / data.len() as f64) as f32;
                summary.train_accuracy = ep_correct as f32 / data.len() as f32;
                let va = match val {
                    Some(v) if !v.is_empty() => {
                        let fwd = viewed(g, forward_weights)?;
                        let on = fwd.as_ref().unwrap_or(g);
                        Some(crate::metrics::evaluate_with(on, v, 256, &pre)?.accuracy)
                    }
                    _ => None,
                };
                if let Some(a) = va {
                    summary.val_accuracy.push(a);
                }
                summary.epochs_done = epoch + 1;
                let p = Progress {
                    epoch,
                    epochs: cfg.epochs,
                    step: s + 1,
                    steps,
                    loss: if win_n > 0 {
                        (win_loss / win_n as f64) as f32
                    } else {
                        summary.final_loss
                    },
                    accuracy: if win_n > 0 {
                        win_correct as f32 / win_n as f32
                    } else {
                        summary.train_accuracy
                    },
                    val_accuracy: va,
                    lr,
                };
                if on_progress(&p).is_break() {
                    summary.cancelled = epoch + 1 < cfg.epochs;
                    return Ok(summary);
                }
            }
        }
    }
    Ok(summary)
}
