//! Magnitude pruning of connections (Han et al., 2015, "Learning both Weights and Connections
//! for Efficient Neural Networks"): the smallest-magnitude weights of Gemm, Conv and MatMul
//! weight tensors are set to zero and recorded in a mask; biases and BatchNorm are never pruned.

use super::Target;
use crate::graph::Graph;
use crate::train::Masks;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which weights to remove.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum PruneSpec {
    /// Remove exactly `round(ratio · total)` weights, the smallest in magnitude over all
    /// prunable layers together (ties broken by layer, then element order).
    Global {
        /// Fraction of weights removed, `0..=1`.
        ratio: f32,
    },
    /// Remove exactly `round(ratio · n)` weights of each named layer (node name or weight name);
    /// layers not named are left alone.
    PerLayer {
        /// Fraction removed per layer.
        ratios: BTreeMap<String, f32>,
    },
    /// Remove every weight with `|w| < q · std(layer)` (the paper's rule), per layer.
    Threshold {
        /// Quality parameter `q ≥ 0`.
        q: f32,
    },
}

fn check_ratio(r: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&r) {
        return Err(Error::Invalid(format!(
            "pruning ratio {r} is outside 0..=1"
        )));
    }
    Ok(())
}

/// Prunes `g` in place; returns the new masks (combined with `masks` already present, so a
/// weight pruned earlier stays pruned).
pub(crate) fn prune(
    g: &mut Graph,
    targets: &[Target],
    spec: &PruneSpec,
    masks: &Masks,
) -> Result<Masks> {
    let mut out = Masks::new();
    let mut remove: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    match spec {
        PruneSpec::Global { ratio } => {
            check_ratio(*ratio)?;
            let mut all: Vec<(f32, usize, usize)> = Vec::new();
            for (li, t) in targets.iter().enumerate() {
                let w = &g.weights[&t.weight];
                all.extend(w.iter().enumerate().map(|(i, v)| (v.abs(), li, i)));
            }
            let k = (*ratio as f64 * all.len() as f64).round() as usize;
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            for t in targets {
                remove.insert(&t.weight, vec![false; g.weights[&t.weight].len()]);
            }
            for &(_, li, i) in &all[..k.min(all.len())] {
                if let Some(r) = remove.get_mut(targets[li].weight.as_str()) {
                    r[i] = true;
                }
            }
        }
        PruneSpec::PerLayer { ratios } => {
            for (name, r) in ratios {
                check_ratio(*r)?;
                if !targets.iter().any(|t| &t.node == name || &t.weight == name) {
                    return Err(Error::Invalid(format!(
                        "`{name}` is not a prunable layer (Gemm, Conv or MatMul weight)"
                    )));
                }
            }
            for t in targets {
                let Some(r) = ratios.get(&t.node).or_else(|| ratios.get(&t.weight)) else {
                    continue;
                };
                let w = &g.weights[&t.weight];
                let mut order: Vec<(f32, usize)> =
                    w.iter().enumerate().map(|(i, v)| (v.abs(), i)).collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let k = (*r as f64 * order.len() as f64).round() as usize;
                let mut rm = vec![false; order.len()];
                order[..k].iter().for_each(|&(_, i)| rm[i] = true);
                remove.insert(&t.weight, rm);
            }
        }
        PruneSpec::Threshold { q } => {
            if !q.is_finite() || *q < 0.0 {
                return Err(Error::Invalid(format!(
                    "threshold factor q = {q} must be ≥ 0"
                )));
            }
            for t in targets {
                let w = &g.weights[&t.weight];
                let n = w.len().max(1) as f64;
                let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                let th = *q as f64 * var.sqrt();
                remove.insert(
                    &t.weight,
                    w.iter().map(|&v| (v.abs() as f64) < th).collect(),
                );
            }
        }
    }
    for (name, rm) in remove {
        let old = masks.get(name);
        if let Some(m) = old.filter(|m| m.len() != rm.len()) {
            return Err(Error::Invalid(format!(
                "mask for `{name}` has {} flags, the weight has {} elements",
                m.len(),
                rm.len()
            )));
        }
        let keep: Vec<bool> = rm
            .iter()
            .enumerate()
            .map(|(i, r)| !r && old.is_none_or(|m| m[i]))
            .collect();
        if let Some(w) = g.weights.get_mut(name) {
            w.iter_mut()
                .zip(&keep)
                .filter(|(_, k)| !**k)
                .for_each(|(v, _)| *v = 0.0);
        }
        out.insert(name.to_string(), keep);
    }
    Ok(out)
}
