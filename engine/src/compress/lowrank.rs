//! Low-rank factorisation of dense layers by truncated SVD.
//!
//! A Gemm weight `W` (`N` outputs × `M` inputs, read as `[out, in]` whatever its `trans_b`) is
//! replaced by two Gemms `in → r → out`: `W ≈ U_r Σ_r V_rᵀ`, the first Gemm holding
//! `Σ_r^{1/2} V_rᵀ` (`[r, M]`, no bias) and the second `U_r Σ_r^{1/2}` (`[N, r]`) with the
//! original bias, `alpha` and `beta`. The SVD is nalgebra's, computed in f64.
//!
//! Storage gain `S_g = N·M / (r·(N + M))`: weight elements of the dense layer over those of its
//! two factors (biases excluded). A layer where `r·(N + M) ≥ N·M` gains nothing and is left as
//! it is, and its report says so.

use super::{PassCtx, PassReport, Target, sparse};
use crate::graph::{GemmAttrs, Graph, Node, Op};
use crate::tensor::Tensor;
use crate::{Error, Result};
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// Knobs of the `low_rank` pass. Exactly one of `rank` and `energy` must be given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowRankSpec {
    /// Gemm nodes (by node or weight name) to factor; `None` means every Gemm with a stored
    /// 2-D weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<String>>,
    /// Fixed rank `r` (clamped to `min(N, M)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Smallest `r` whose `Σ_{i≤r} σ_i² / Σ σ_i²` is at least `energy` (in `(0, 1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<f32>,
}

impl LowRankSpec {
    /// Checks the knobs.
    pub fn check(&self) -> Result<()> {
        match (self.rank, self.energy) {
            (Some(0), None) => Err(Error::Invalid("low_rank: rank must be at least 1".into())),
            (Some(_), None) => Ok(()),
            (None, Some(e)) if e > 0.0 && e <= 1.0 => Ok(()),
            (None, Some(e)) => Err(Error::Invalid(format!(
                "low_rank: energy must be in (0, 1], got {e}"
            ))),
            _ => Err(Error::Invalid(
                "low_rank: give exactly one of `rank` and `energy`".into(),
            )),
        }
    }
}

/// What happened to one Gemm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LowRankLayer {
    /// Gemm node name (the second factor keeps it).
    pub node: String,
    /// Original weight name.
    pub weight: String,
    /// Outputs `N`.
    pub n: usize,
    /// Inputs `M`.
    pub m: usize,
    /// Rank chosen (also when skipped).
    pub rank: usize,
    /// Fraction of `Σ σ_i²` kept by the first `rank` singular values.
    pub energy: f64,
    /// `N·M / (r·(N + M))`.
    pub storage_gain: f64,
    /// `false` when `r·(N + M) ≥ N·M`: the layer was left unchanged.
    pub factored: bool,
    /// Weight elements before (`N·M`) and after (`r·(N + M)`, or `N·M` when skipped).
    pub params_before: usize,
    /// See `params_before`.
    pub params_after: usize,
    /// Length of the weight's shortest exact encoding before ([`sparse::encode_best`]).
    pub bytes_before: usize,
    /// Sum of the lengths of both factors' shortest exact encodings (or `bytes_before`).
    pub bytes_after: usize,
    /// Multiply-accumulates per input row before (`N·M`).
    pub macs_before: u64,
    /// Multiply-accumulates per input row after (`r·(N + M)`, or `N·M` when skipped).
    pub macs_after: u64,
}

fn readers(g: &Graph, value: &str) -> usize {
    g.nodes
        .iter()
        .filter(|n| n.inputs.iter().any(|i| i == value))
        .count()
}

fn fresh(g: &Graph, base: String) -> Result<String> {
    let taken = g.weights.contains_key(&base)
        || g.nodes
            .iter()
            .any(|n| n.name == base || n.outputs.contains(&base))
        || g.inputs.iter().any(|i| i.name == base);
    if taken {
        return Err(Error::Invalid(format!(
            "low_rank: name `{base}` already exists in the graph"
        )));
    }
    Ok(base)
}

/// The Gemm nodes that `spec` selects, as indices into `g.nodes`.
fn select(g: &Graph, spec: &LowRankSpec) -> Result<Vec<usize>> {
    let is_dense = |n: &Node| {
        matches!(n.op, Op::Gemm(_))
            && n.inputs
                .get(1)
                .and_then(|w| g.weights.get(w))
                .is_some_and(|w| w.ndim() == 2)
    };
    match &spec.layers {
        None => Ok((0..g.nodes.len())
            .filter(|&i| is_dense(&g.nodes[i]))
            .collect()),
        Some(names) => {
            let mut out = Vec::new();
            for name in names {
                let i = g
                    .nodes
                    .iter()
                    .position(|n| &n.name == name || n.inputs.get(1) == Some(name))
                    .ok_or_else(|| Error::Invalid(format!("low_rank: unknown layer `{name}`")))?;
                if !is_dense(&g.nodes[i]) {
                    return Err(Error::Invalid(format!(
                        "low_rank: `{name}` is not a Gemm with a stored 2-D weight"
                    )));
                }
                if !out.contains(&i) {
                    out.push(i);
                }
            }
            out.sort_unstable();
            Ok(out)
        }
    }
}

/// Truncated SVD of an `[n, m]` row-major matrix: returns `(A, B, energy)` with `A = U_r Σ^{1/2}`
/// (`[n, r]`) and `B = Σ^{1/2} V_rᵀ` (`[r, m]`), where `r` comes from `pick(σ)` (σ descending).
/// `pick` returns the rank to use.
fn factor(
    w: &[f32],
    n: usize,
    m: usize,
    pick: impl FnOnce(&[f64]) -> usize,
) -> Result<(usize, f64, Vec<f32>, Vec<f32>)> {
    if w.iter().any(|x| !x.is_finite()) {
        return Err(Error::Invalid(
            "low_rank: the weight holds NaN or infinity".into(),
        ));
    }
    let mat = DMatrix::<f64>::from_row_iterator(n, m, w.iter().map(|&x| f64::from(x)));
    let svd = mat
        .try_svd(true, true, f64::EPSILON, 100_000)
        .ok_or_else(|| Error::Invalid("low_rank: the SVD did not converge".into()))?;
    let (u, vt) = match (&svd.u, &svd.v_t) {
        (Some(u), Some(vt)) => (u, vt),
        _ => {
            return Err(Error::Invalid(
                "low_rank: the SVD returned no vectors".into(),
            ));
        }
    };
    let sv = &svd.singular_values;
    let mut order: Vec<usize> = (0..sv.len()).collect();
    order.sort_by(|&a, &b| sv[b].total_cmp(&sv[a]).then(a.cmp(&b)));
    let sigma: Vec<f64> = order.iter().map(|&i| sv[i].max(0.0)).collect();
    let r = pick(&sigma).clamp(1, sigma.len().max(1));
    let total: f64 = sigma.iter().map(|s| s * s).sum();
    let kept: f64 = sigma[..r.min(sigma.len())].iter().map(|s| s * s).sum();
    let energy = if total > 0.0 { kept / total } else { 1.0 };
    let mut a = vec![0f32; n * r];
    let mut b = vec![0f32; r * m];
    for (k, &i) in order.iter().take(r).enumerate() {
        let s = sigma[k].sqrt();
        for row in 0..n {
            a[row * r + k] = (u[(row, i)] * s) as f32;
        }
        for col in 0..m {
            b[k * m + col] = (vt[(i, col)] * s) as f32;
        }
    }
    Ok((r, energy, a, b))
}

fn rank_for_energy(sigma: &[f64], energy: f64) -> usize {
    let total: f64 = sigma.iter().map(|s| s * s).sum();
    if total <= 0.0 {
        return 1;
    }
    let mut acc = 0.0;
    for (i, s) in sigma.iter().enumerate() {
        acc += s * s;
        // A hair of slack so `energy = 1.0` is not defeated by rounding.
        if acc / total >= energy - 1e-12 {
            return i + 1;
        }
    }
    sigma.len()
}

fn tensor(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
    Tensor::from_shape_vec(shape.to_vec(), data)
        .map_err(|e| Error::Invalid(format!("low_rank: factor shape: {e}")))
}

/// Factors the Gemms that `spec` selects, rewriting `g` in place (two Gemms per factored layer,
/// the original weight removed when nothing else reads it; `g.validate()` after). Returns one
/// row per selected layer, skipped ones included.
pub fn factorize(g: &mut Graph, spec: &LowRankSpec) -> Result<Vec<LowRankLayer>> {
    spec.check()?;
    g.validate()?;
    let selected = select(g, spec)?;
    let mut rows = Vec::with_capacity(selected.len());
    let mut inserted = 0;
    for idx in selected {
        let i = idx + inserted;
        let node = g.nodes[i].clone();
        let Op::Gemm(attrs) = &node.op else {
            continue;
        };
        let wname = node.inputs[1].clone();
        let w = &g.weights[&wname];
        // As [out, in] = [N, M].
        let w_nm: Vec<f32> = if attrs.trans_b {
            w.iter().copied().collect()
        } else {
            w.t().iter().copied().collect()
        };
        let (n, m) = if attrs.trans_b {
            (w.shape()[0], w.shape()[1])
        } else {
            (w.shape()[1], w.shape()[0])
        };
        let bytes_before = sparse::encode_best(w)?.1.len();
        let nm = n * m;
        let (r, energy, a, b) = match (spec.rank, spec.energy) {
            (Some(r), _) => factor(&w_nm, n, m, |_| r)?,
            (None, Some(e)) => factor(&w_nm, n, m, |s| rank_for_energy(s, f64::from(e)))?,
            (None, None) => return Err(Error::Invalid("low_rank: no rank or energy".into())),
        };
        let lr_params = r * (n + m);
        let gain = nm as f64 / lr_params.max(1) as f64;
        if lr_params >= nm {
            rows.push(LowRankLayer {
                node: node.name.clone(),
                weight: wname,
                n,
                m,
                rank: r,
                energy,
                storage_gain: gain,
                factored: false,
                params_before: nm,
                params_after: nm,
                bytes_before,
                bytes_after: bytes_before,
                macs_before: nm as u64,
                macs_after: nm as u64,
            });
            continue;
        }
        let first = fresh(g, format!("{}_lowrank_v", node.name))?;
        let wv = fresh(g, format!("{wname}_lowrank_v"))?;
        let wu = fresh(g, format!("{wname}_lowrank_u"))?;
        let tv = tensor(&[r, m], b)?;
        let tu = tensor(&[n, r], a)?;
        let bytes_after = sparse::encode_best(&tv)?.1.len() + sparse::encode_best(&tu)?.1.len();
        let x = node.inputs[0].clone();
        let first_node = Node::new(
            first.clone(),
            Op::Gemm(GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: attrs.trans_a,
                trans_b: true,
            }),
            &[&x, &wv],
        );
        let mut second = node.clone();
        second.op = Op::Gemm(GemmAttrs {
            alpha: attrs.alpha,
            beta: attrs.beta,
            trans_a: false,
            trans_b: true,
        });
        second.inputs[0] = first;
        second.inputs[1] = wu.clone();
        g.nodes[i] = second;
        g.nodes.insert(i, first_node);
        inserted += 1;
        g.weights.insert(wv, tv);
        g.weights.insert(wu, tu);
        if readers(g, &wname) == 0 {
            g.weights.remove(&wname);
        }
        rows.push(LowRankLayer {
            node: node.name.clone(),
            weight: wname,
            n,
            m,
            rank: r,
            energy,
            storage_gain: gain,
            factored: true,
            params_before: nm,
            params_after: lr_params,
            bytes_before,
            bytes_after,
            macs_before: nm as u64,
            macs_after: lr_params as u64,
        });
    }
    g.validate()?;
    Ok(rows)
}

/// The `low_rank` pass: [`factorize`] plus a [`PassReport`] whose layer rows describe each
/// selected Gemm (`params`/`bytes` of the original weight before and of both factors after; the
/// `encoding` says the rank, `S_g`, kept energy and MACs, or why the layer was skipped).
pub(super) fn pass(
    g: &mut Graph,
    ctx: &mut PassCtx,
    spec: &LowRankSpec,
    bytes_before: usize,
    macs_before: u64,
) -> Result<PassReport> {
    spec.check()?;
    if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
        return Err(Error::Invalid(
            "low_rank runs on float weights (before quantize, share and lowbit)".into(),
        ));
    }
    g.validate()?;
    for i in select(g, spec)? {
        if ctx.masks.contains_key(&g.nodes[i].inputs[1]) {
            return Err(Error::Invalid(format!(
                "low_rank: `{}` is pruned; factor before pruning",
                g.nodes[i].name
            )));
        }
    }
    let rows = factorize(g, spec)?;
    let layers = rows
        .iter()
        .map(|l| {
            let w = |name: &str| g.weights.get(name);
            let nonzero = if l.factored {
                [
                    format!("{}_lowrank_v", l.weight),
                    format!("{}_lowrank_u", l.weight),
                ]
                .iter()
                .filter_map(|k| w(k))
                .map(|t| t.iter().filter(|v| **v != 0.0).count())
                .sum()
            } else {
                w(&l.weight).map_or(0, |t| t.iter().filter(|v| **v != 0.0).count())
            };
            let encoding = if l.factored {
                format!(
                    "low-rank r={} (S_g {:.2}x, energy {:.4}, MACs/row {} -> {})",
                    l.rank, l.storage_gain, l.energy, l.macs_before, l.macs_after
                )
            } else {
                format!(
                    "skipped: rank {} gives r(N+M) = {} >= NM = {} (no gain)",
                    l.rank,
                    l.rank * (l.n + l.m),
                    l.n * l.m
                )
            };
            super::LayerReport {
                name: l.weight.clone(),
                node: l.node.clone(),
                params: l.params_after,
                nonzero,
                bits: 32,
                bytes_before: l.bytes_before,
                bytes_after: l.bytes_after,
                encoding,
            }
        })
        .collect();
    let tg: Vec<Target> = super::targets(g);
    let (mut zeros, mut total) = (0usize, 0usize);
    for t in &tg {
        let w = &g.weights[&t.weight];
        zeros += w.iter().filter(|v| **v == 0.0).count();
        total += w.len();
    }
    Ok(PassReport {
        pass: "low_rank".into(),
        layers,
        bytes_before,
        bytes_after: super::model_bytes(g, ctx)?,
        macs_before,
        macs_after: super::effective_macs(g, &tg)?,
        sparsity: if total == 0 {
            0.0
        } else {
            zeros as f32 / total as f32
        },
        accuracy_before: None,
        accuracy_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_rank_rule() {
        let s = [3.0, 2.0, 1.0, 0.0];
        // squares 9, 4, 1: total 14
        assert_eq!(rank_for_energy(&s, 0.5), 1);
        assert_eq!(rank_for_energy(&s, 9.0 / 14.0), 1);
        assert_eq!(rank_for_energy(&s, 0.65), 2);
        assert_eq!(rank_for_energy(&s, 1.0), 3);
    }

    #[test]
    fn spec_check() {
        let s = |rank, energy| LowRankSpec {
            layers: None,
            rank,
            energy,
        };
        assert!(s(Some(4), None).check().is_ok());
        assert!(s(None, Some(0.9)).check().is_ok());
        assert!(s(Some(0), None).check().is_err());
        assert!(s(None, Some(0.0)).check().is_err());
        assert!(s(None, Some(1.5)).check().is_err());
        assert!(s(None, None).check().is_err());
        assert!(s(Some(2), Some(0.9)).check().is_err());
    }
}
