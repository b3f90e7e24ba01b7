//! Optimizers and learning-rate schedules.

use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Update rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd {
        /// Momentum coefficient (0 disables it).
        momentum: f32,
    },
    /// Adam (Kingma & Ba); weight decay is decoupled (AdamW) when set.
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator guard.
        eps: f32,
    },
}

impl Optimizer {
    /// Adam with the usual constants.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Learning rate as a function of progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Fixed rate.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f32,
    },
    /// Cosine decay from the base rate to `min_factor · base` over the whole run.
    Cosine {
        /// Final rate as a fraction of the base rate.
        min_factor: f32,
    },
}

impl Schedule {
    /// Rate at step `step` of `total` (epoch-based schedules use `epoch`).
    pub fn rate(&self, base: f32, epoch: usize, step: usize, total: usize) -> f32 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / (*every).max(1)) as i32),
            Schedule::Cosine { min_factor } => {
                let t = step as f32 / total.max(1) as f32;
                let f = min_factor
                    + (1.0 - min_factor) * 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
                base * f
            }
        }
    }
}

/// Per-parameter optimizer state.
#[derive(Default)]
pub struct State {
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    t: u32,
}

impl State {
    /// Applies one update to `w` with gradient `g`; `decay` is the weight decay for this tensor.
    pub fn step(
        &mut self,
        opt: &Optimizer,
        name: &str,
        w: &mut Tensor,
        g: &Tensor,
        lr: f32,
        decay: f32,
    ) {
        match opt {
            Optimizer::Sgd { momentum } => {
                let mut d = g.clone();
                if decay > 0.0 {
                    d.scaled_add(decay, w);
                }
                if *momentum > 0.0 {
                    let m = self
                        .m
                        .entry(name.to_string())
                        .or_insert_with(|| Tensor::zeros(w.raw_dim()));
                    m.zip_mut_with(&d, |m, &d| *m = *m * momentum + d);
                    w.scaled_add(-lr, m);
                } else {
                    w.scaled_add(-lr, &d);
                }
            }
            Optimizer::Adam { beta1, beta2, eps } => {
                let t = self.t.max(1) as i32;
                let m = self
                    .m
                    .entry(name.to_string())
                    .or_insert_with(|| Tensor::zeros(w.raw_dim()));
                m.zip_mut_with(g, |m, &g| *m = beta1 * *m + (1.0 - beta1) * g);
                let v = self
                    .v
                    .entry(name.to_string())
                    .or_insert_with(|| Tensor::zeros(w.raw_dim()));
                v.zip_mut_with(g, |v, &g| *v = beta2 * *v + (1.0 - beta2) * g * g);
                let c1 = 1.0 - beta1.powi(t);
                let c2 = 1.0 - beta2.powi(t);
                let m = &self.m[name];
                let v = &self.v[name];
                ndarray::Zip::from(w).and(m).and(v).for_each(|w, &m, &v| {
                    *w -= lr * ((m / c1) / ((v / c2).sqrt() + eps) + decay * *w);
                });
            }
        }
    }

    /// Marks the start of a new optimisation step (Adam's bias correction counts these).
    pub fn tick(&mut self) {
        self.t += 1;
    }
}
