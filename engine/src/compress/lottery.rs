//! Lottery tickets (Frankle & Carbin, 2019, "The Lottery Ticket Hypothesis: Finding Sparse,
//! Trainable Neural Networks"): iterative magnitude pruning with rewinding. Each round trains
//! the network from its rewind point with the current mask, removes the smallest-magnitude
//! `rate` of the weights that are still alive, and resets the survivors to their values at the
//! rewind point: the initial weights (`"rewind": "init"`) or those after `k` training steps
//! from the initial weights (`"rewind": {"step": k}`, Frankle et al., 2020, "Linear Mode
//! Connectivity and the Lottery Ticket Hypothesis"). After the last round the final mask
//! (the "winning ticket") is trained once more from the rewind point.

use super::{PassCtx, Target, targets};
use crate::data::Dataset;
use crate::graph::Graph;
use crate::train::{Hooks, Masks, Progress, TrainConfig, train_with};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

/// Where survivors go back to after each round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rewind {
    /// The initial weights (`"init"`).
    #[default]
    Init,
    /// The weights after this many training steps from the initial weights, with the same
    /// training config (`{"step": k}`).
    Step(usize),
}

/// Which weights compete for removal in a round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Each target layer loses `rate` of its own surviving weights (the paper's choice).
    #[default]
    Layer,
    /// The smallest surviving weights over all target layers together.
    Global,
}

/// Knobs of the `lottery` pass: `{"pass": "lottery", "rate": 0.2, "rounds": 10, "rewind":
/// "init", ...TrainConfig}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LotterySpec {
    /// Fraction of the surviving weights removed per round, in `(0, 1)`.
    pub rate: f32,
    /// Prune-and-rewind rounds; the network is trained `rounds + 1` times (the first dense,
    /// the last the final ticket), keeping `(1 − rate)^rounds` of the weights.
    pub rounds: usize,
    /// Rewind point (default `"init"`).
    #[serde(default)]
    pub rewind: Rewind,
    /// Per-layer or global ranking (default per layer).
    #[serde(default)]
    pub scope: Scope,
    /// Rate for the last target layer (the output layer) with per-layer scope; the paper
    /// prunes it at half the rate. Default: `rate`.
    #[serde(default)]
    pub output_rate: Option<f32>,
    /// Name of a caller-supplied graph ([`PassCtx::graphs`]) holding the initial weights;
    /// default: rebuilt from the model's zoo metadata (`lithe.arch`, `lithe.seed`).
    #[serde(default)]
    pub init: Option<String>,
    /// How each round trains.
    #[serde(flatten)]
    pub train: TrainConfig,
}

impl LotterySpec {
    fn check(&self) -> Result<()> {
        for r in std::iter::once(self.rate).chain(self.output_rate) {
            if !(r > 0.0 && r < 1.0) {
                return Err(Error::Invalid(format!(
                    "lottery rate {r} must be strictly between 0 and 1"
                )));
            }
        }
        Ok(())
    }
}

/// One training run of the lottery procedure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// 0 = the dense run; round `r` trains after `r` pruning steps.
    pub round: usize,
    /// Target weights kept during this run.
    pub kept: usize,
    /// Target weights in all.
    pub total: usize,
    /// Mean training loss of the last epoch.
    pub final_loss: f32,
    /// Training accuracy of the last epoch.
    pub train_accuracy: f32,
    /// Accuracy on the evaluation set after training, when one was given.
    pub accuracy: Option<f32>,
}

/// Everything a lottery run produced.
#[derive(Clone, Debug)]
pub struct Lottery {
    /// The final ticket, trained.
    pub graph: Graph,
    /// The final ticket at its rewind point (untrained survivors, pruned weights zero).
    pub ticket: Graph,
    /// The final masks (one per target weight).
    pub masks: Masks,
    /// One entry per training run, dense first.
    pub rounds: Vec<Round>,
}

/// The initial weights of a zoo model, rebuilt from its metadata (`lithe.arch` and
/// `lithe.seed`, written by [`crate::zoo::build`] and kept through ONNX export and import).
/// Errors when the metadata is missing or the rebuilt graph's weights do not match `g`'s.
pub fn zoo_init(g: &Graph) -> Result<Graph> {
    let (Some(arch), Some(seed)) = (g.metadata.get("lithe.arch"), g.metadata.get("lithe.seed"))
    else {
        return Err(Error::Invalid(
            "the lottery pass needs initial weights: the model has no `lithe.arch`/`lithe.seed` \
             metadata, so supply an init graph (`\"init\": name`)"
                .into(),
        ));
    };
    let seed: u64 = seed
        .parse()
        .map_err(|_| Error::Invalid(format!("metadata `lithe.seed` = `{seed}` is not a seed")))?;
    let init = crate::zoo::build(crate::zoo::Arch::from_name(arch)?, seed)?;
    same_weights(g, &init)?;
    Ok(init)
}

fn same_weights(g: &Graph, init: &Graph) -> Result<()> {
    for (k, w) in &g.weights {
        match init.weights.get(k) {
            Some(i) if i.shape() == w.shape() => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "the initial weights have no `{k}` of shape {:?}",
                    w.shape()
                )));
            }
        }
    }
    Ok(())
}

/// `g`'s graph with the weights of `from`, masked.
fn rewound(g: &Graph, from: &Graph, masks: &Masks) -> Graph {
    let mut out = g.clone();
    for (k, w) in out.weights.iter_mut() {
        if let Some(v) = from.weights.get(k) {
            *w = v.clone();
        }
        if let Some(m) = masks.get(k) {
            w.iter_mut()
                .zip(m)
                .filter(|(_, keep)| !**keep)
                .for_each(|(v, _)| *v = 0.0);
        }
    }
    out
}

/// Removes `round(rate · alive)` of the surviving weights with the smallest magnitude (ties by
/// layer, then element order) and returns the new masks. Pruned weights never come back.
/// (Not [`super::prune::prune`]: its ratios count all weights, and a survivor that is exactly
/// zero would tie with the pruned ones.)
fn prune_survivors(g: &Graph, tg: &[Target], masks: &Masks, spec: &LotterySpec) -> Result<Masks> {
    /// A surviving weight: magnitude, layer, element.
    type Alive = (f32, usize, usize);
    let mut out = masks.clone();
    let alive = |li: usize| -> Vec<Alive> {
        let t = &tg[li];
        let w = &g.weights[&t.weight];
        let m = &masks[&t.weight];
        w.iter()
            .zip(m)
            .enumerate()
            .filter(|(_, (_, k))| **k)
            .map(|(i, (v, _))| (v.abs(), li, i))
            .collect()
    };
    let mut groups: Vec<(Vec<Alive>, f32)> = match spec.scope {
        Scope::Layer => (0..tg.len())
            .map(|li| {
                let r = if li + 1 == tg.len() {
                    spec.output_rate.unwrap_or(spec.rate)
                } else {
                    spec.rate
                };
                (alive(li), r)
            })
            .collect(),
        Scope::Global => vec![((0..tg.len()).flat_map(alive).collect(), spec.rate)],
    };
    for (all, rate) in groups.iter_mut() {
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let k = (*rate as f64 * all.len() as f64).round() as usize;
        for &(_, li, i) in &all[..k.min(all.len())] {
            if let Some(m) = out.get_mut(&tg[li].weight) {
                m[i] = false;
            }
        }
    }
    Ok(out)
}

fn kept(masks: &Masks) -> (usize, usize) {
    masks.values().fold((0, 0), |(k, t), m| {
        (k + m.iter().filter(|v| **v).count(), t + m.len())
    })
}

/// Runs the lottery procedure on `g`'s graph starting from `init`'s weights (same names and
/// shapes): optional rewind snapshot, then `rounds` × (train, prune, rewind) and a final
/// training of the ticket. `masks` (e.g. from an earlier prune) are kept: weights they remove
/// stay removed. `eval` gives each round an accuracy.
pub fn run(
    g: &Graph,
    init: &Graph,
    data: &Dataset,
    eval: Option<&Dataset>,
    spec: &LotterySpec,
    masks: &Masks,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Lottery> {
    spec.check()?;
    same_weights(g, init)?;
    let tg = targets(g);
    let mut masks: Masks = tg
        .iter()
        .map(|t| {
            let n = g.weights[&t.weight].len();
            let m = masks
                .get(&t.weight)
                .cloned()
                .unwrap_or_else(|| vec![true; n]);
            (t.weight.clone(), m)
        })
        .collect();
    for (name, m) in &masks {
        if m.len() != g.weights[name].len() {
            return Err(Error::Invalid(format!(
                "mask for `{name}` has {} flags, the weight has {} elements",
                m.len(),
                g.weights[name].len()
            )));
        }
    }
    let start = rewind_point(g, init, data, spec, &masks, on_progress)?;
    let mut rounds = Vec::with_capacity(spec.rounds + 1);
    for r in 0..=spec.rounds {
        let ticket = rewound(g, &start, &masks);
        let mut net = ticket.clone();
        let hooks = Hooks {
            masks: Some(&masks),
            ..Hooks::default()
        };
        let s = train_with(&mut net, data, None, &spec.train, hooks, on_progress)?;
        if s.cancelled {
            return Err(Error::Cancelled);
        }
        let accuracy = eval
            .map(|e| crate::metrics::evaluate(&net, e, 256).map(|r| r.accuracy))
            .transpose()?;
        let (k, total) = kept(&masks);
        rounds.push(Round {
            round: r,
            kept: k,
            total,
            final_loss: s.final_loss,
            train_accuracy: s.train_accuracy,
            accuracy,
        });
        if r == spec.rounds {
            return Ok(Lottery {
                graph: net,
                ticket,
                masks,
                rounds,
            });
        }
        masks = prune_survivors(&net, &tg, &masks, spec)?;
    }
    Err(Error::Invalid(
        "the lottery loop ended without a ticket".into(),
    ))
}

/// The weights survivors are reset to: `init` itself, or `init` trained `k` steps (dense
/// except for `masks`) with the round's config.
fn rewind_point(
    g: &Graph,
    init: &Graph,
    data: &Dataset,
    spec: &LotterySpec,
    masks: &Masks,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Graph> {
    let mut start = rewound(g, init, masks);
    let Rewind::Step(k) = spec.rewind else {
        return Ok(start);
    };
    if k == 0 {
        return Ok(start);
    }
    let cfg = TrainConfig {
        log_every: 1,
        ..spec.train.clone()
    };
    let (mut done, mut user_stop) = (0usize, false);
    let mut count = |p: &Progress| {
        done += 1;
        if on_progress(p).is_break() {
            user_stop = true;
            return ControlFlow::Break(());
        }
        if done >= k {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let hooks = Hooks {
        masks: Some(masks),
        ..Hooks::default()
    };
    train_with(&mut start, data, None, &cfg, hooks, &mut count)?;
    if user_stop {
        return Err(Error::Cancelled);
    }
    Ok(start)
}

/// The `lottery` pass: initial weights from `spec.init` (a graph in `ctx.graphs`) or the zoo
/// metadata; replaces `g` with the trained final ticket, `ctx.masks` with its masks, and
/// appends the rounds to `ctx.lottery`.
pub(crate) fn pass(g: &mut Graph, ctx: &mut PassCtx, spec: &LotterySpec) -> Result<()> {
    if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
        return Err(Error::Invalid(
            "lottery before quantize/share: training would discard the codes".into(),
        ));
    }
    let data = ctx
        .data
        .ok_or_else(|| Error::Invalid("the lottery pass needs training data".into()))?;
    let init = match &spec.init {
        Some(name) => ctx.graphs.get(name).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "no graph named `{name}` was supplied for the lottery's initial weights"
            ))
        })?,
        None => zoo_init(g)?,
    };
    let out = run(g, &init, data, ctx.eval, spec, &ctx.masks, ctx.on_progress)?;
    *g = out.graph;
    ctx.masks = out.masks;
    ctx.lottery.extend(out.rounds);
    Ok(())
}
