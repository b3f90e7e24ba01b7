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

/// Flags the `k` smallest magnitudes of `values` (all of them when `k ≥ len`), ties broken by
/// position: the first `k` of a sort by `(|v|, position)`, found by selection (linear) instead.
/// A non-negative float's bits order as `f32::total_cmp` orders it (`abs` clears the sign bit,
/// NaN included), so one integer key per element says both.
fn smallest(values: impl Iterator<Item = f32>, k: usize) -> Vec<bool> {
    let mut keys: Vec<u128> = values
        .enumerate()
        .map(|(i, v)| (u128::from(v.abs().to_bits()) << 64) | i as u128)
        .collect();
    let mut flags = vec![false; keys.len()];
    let k = k.min(keys.len());
    if k == 0 {
        return flags;
    }
    if k < keys.len() {
        keys.select_nth_unstable(k - 1);
    }
    for &key in &keys[..k] {
        flags[key as u64 as usize] = true;
    }
    flags
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
            let total: usize = targets.iter().map(|t| g.weights[&t.weight].len()).sum();
            let k = (*ratio as f64 * total as f64).round() as usize;
            let all = targets
                .iter()
                .flat_map(|t| g.weights[&t.weight].iter().copied());
            let mut flags = smallest(all, k).into_iter();
            for t in targets {
                let n = g.weights[&t.weight].len();
                remove.insert(&t.weight, flags.by_ref().take(n).collect());
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
                let k = (*r as f64 * w.len() as f64).round() as usize;
                let rm = smallest(w.iter().copied(), k);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// What `smallest` replaces: a full sort by `(|v| total order, position)`.
    fn by_sorting(values: &[f32], k: usize) -> Vec<bool> {
        let mut order: Vec<(f32, usize)> = values.iter().map(|v| v.abs()).zip(0..).collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut flags = vec![false; values.len()];
        order[..k.min(values.len())]
            .iter()
            .for_each(|&(_, i)| flags[i] = true);
        flags
    }

    #[test]
    fn selection_flags_what_a_full_sort_would() {
        let mut rng = Rng::new(7);
        for n in [0usize, 1, 2, 17, 1000] {
            // Few distinct magnitudes of both signs, zeros of both signs, NaN and infinities:
            // ties everywhere, broken by position.
            let values: Vec<f32> = (0..n)
                .map(|i| match i % 11 {
                    0 => -0.0,
                    1 => 0.0,
                    2 => f32::NAN,
                    3 => f32::NEG_INFINITY,
                    _ => (rng.below(5) as f32 - 2.0) * 0.5,
                })
                .collect();
            for k in [0, 1, n / 3, n / 2, n.saturating_sub(1), n, n + 3] {
                assert_eq!(
                    smallest(values.iter().copied(), k),
                    by_sorting(&values, k),
                    "n = {n}, k = {k}"
                );
            }
        }
    }
}
