//! Low-rank factorisation of dense layers by truncated SVD.
//!
//! A Gemm weight `W` (`N` outputs × `M` inputs, read as `[out, in]` whatever its `trans_b`) is
//! replaced by two Gemms `in → r → out`: `W ≈ U_r Σ_r V_rᵀ`, the first Gemm holding
//! `Σ_r^{1/2} V_rᵀ` (`[r, M]`, no bias) and the second `U_r Σ_r^{1/2}` (`[N, r]`) with the
//! original bias, `alpha` and `beta`. The SVD is computed in f64 from the symmetric
//! eigendecomposition (nalgebra) of the smaller Gram matrix, see [`gram_svd`].
//!
//! Storage gain `S_g = N·M / (r·(N + M))`: weight elements of the dense layer over those of its
//! two factors (biases excluded). A layer where `r·(N + M) ≥ N·M` gains nothing and is left as
//! it is, and its report says so.

use super::{PassCtx, PassReport, sparse};
use crate::graph::{ConvAttrs, GemmAttrs, Graph, Node, Op};
use crate::tensor::Tensor;
use crate::{Error, Result};
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;

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

/// The nodes that `spec` selects, as indices into `g.nodes`: every Gemm with a stored 2-D
/// weight when `layers` is `None`; named Gemms and ungrouped Convs otherwise.
fn select(g: &Graph, spec: &LowRankSpec) -> Result<Vec<usize>> {
    let is_dense = |n: &Node| {
        matches!(n.op, Op::Gemm(_))
            && n.inputs
                .get(1)
                .and_then(|w| g.weights.get(w))
                .is_some_and(|w| w.ndim() == 2)
    };
    let is_conv = |n: &Node| {
        matches!(&n.op, Op::Conv(a) if a.groups == 1)
            && n.inputs
                .get(1)
                .and_then(|w| g.weights.get(w))
                .is_some_and(|w| w.ndim() == 4)
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
                if !is_dense(&g.nodes[i]) && !is_conv(&g.nodes[i]) {
                    return Err(Error::Invalid(format!(
                        "low_rank: `{name}` is neither a Gemm with a stored 2-D weight nor an \
                         ungrouped Conv with a stored 4-D weight"
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

/// A thin SVD `W = U Σ Vᵀ` of an `[n, m]` matrix with `d = min(n, m)` singular values in
/// descending order, kept as the eigenvectors of the smaller Gram matrix (see [`gram_svd`]);
/// [`Svd::pair`] forms the singular vectors of one value when a factor needs them.
struct Svd {
    /// `σ` descending (ties by position): square roots of the Gram matrix's eigenvalues.
    sigma: Vec<f64>,
    /// `W` is tall (`n > m`): `X = Wᵀ`, else `X = W`.
    tall: bool,
    /// `X`, `[d, e]` row-major, in f64.
    x: Vec<f64>,
    /// The eigenvectors of `X Xᵀ`, `[d, d]` row-major: column `k` belongs to `sigma[k]`.
    q: Vec<f64>,
}

impl Svd {
    fn d(&self) -> usize {
        self.sigma.len()
    }

    fn e(&self) -> usize {
        self.x.len().checked_div(self.d()).unwrap_or(0)
    }

    /// The `k`-th singular triple `(u, σ, v)` (`u` of length `n`, `v` of `m`): with `q` the
    /// eigenvector, `p = qᵀ X` is the projection of `X` on it, `|p|` the singular value and
    /// `p / |p|` the other side's vector. So the truncated factors multiply to the projection
    /// of `W` on its top directions even where a singular value is tiny. A zero projection
    /// gives a zero vector.
    fn pair(&self, k: usize) -> (Vec<f64>, f64, Vec<f64>) {
        let (d, e) = (self.d(), self.e());
        let q: Vec<f64> = (0..d).map(|i| self.q[i * d + k]).collect();
        let mut p = vec![0f64; e];
        for (i, &qi) in q.iter().enumerate() {
            if qi != 0.0 {
                for (pj, xj) in p.iter_mut().zip(&self.x[i * e..(i + 1) * e]) {
                    *pj += qi * xj;
                }
            }
        }
        let s = dot(&p, &p).sqrt();
        if s > 0.0 {
            p.iter_mut().for_each(|v| *v /= s);
        }
        if self.tall { (p, s, q) } else { (q, s, p) }
    }
}

/// Matrices of at least this many elements keep their SVD in [`SVDS`] (smaller ones are
/// quick to factor)...
const SVD_CACHE_MIN: usize = 4096;
/// ... and of at most this many (a 1024×1024 matrix keeps about 20 MB: `U`, `Vᵀ` in f64 and
/// its values), so the cache stays small next to the model.
const SVD_CACHE_MAX: usize = 1 << 20;
/// How many SVDs [`SVDS`] keeps.
const SVD_CACHE_LEN: usize = 4;

/// A cached SVD: rows, columns, the matrix's exact values (f32 bits) and its SVD.
type CachedSvd = (usize, usize, Vec<u32>, Rc<Svd>);

thread_local! {
    /// The SVDs of the last few large matrices factored, keyed by their exact values: the
    /// playground's rank knob factors the same weights of the model as loaded at every
    /// change, and the SVD does not depend on the rank. A hit returns what the computation
    /// would, so results do not change.
    static SVDS: RefCell<Vec<CachedSvd>> =
        const { RefCell::new(Vec::new()) };
}

/// The SVD of the `[n, m]` row-major matrix `w` (finite values), from [`SVDS`] when it holds it.
fn svd(w: &[f32], n: usize, m: usize) -> Result<Rc<Svd>> {
    let cache = (SVD_CACHE_MIN..=SVD_CACHE_MAX).contains(&w.len());
    let bits: Vec<u32> = if cache {
        w.iter().map(|x| x.to_bits()).collect()
    } else {
        Vec::new()
    };
    if cache
        && let Some(hit) = SVDS.with_borrow(|c| {
            c.iter()
                .find(|e| e.0 == n && e.1 == m && e.2 == bits)
                .map(|e| e.3.clone())
        })
    {
        return Ok(hit);
    }
    let out = Rc::new(gram_svd(w, n, m)?);
    if cache {
        SVDS.with_borrow_mut(|c| {
            if c.len() >= SVD_CACHE_LEN {
                c.remove(0);
            }
            c.push((n, m, bits, out.clone()));
        });
    }
    Ok(out)
}

/// A thin SVD through the symmetric eigendecomposition of the smaller Gram matrix: with `X`
/// the orientation of `w` with `d = min(n, m)` rows (`W` or `Wᵀ`) and `e` columns,
/// `X Xᵀ = Q Λ Qᵀ` (nalgebra's `SymmetricEigen`, `d × d`) and `σ = √λ`. The singular vectors
/// of the other side are formed only for the values a factor keeps ([`Svd::pair`]).
///
/// This is several times quicker than a Golub–Kahan SVD of the whole matrix, which rotates
/// both sides' vectors at every QR sweep: the playground's first rank change waited on it.
/// Singular values well apart from zero come out to f64 rounding; tiny ones to about
/// `√ε · σ_max`, far below the f32 weights' own precision.
fn gram_svd(w: &[f32], n: usize, m: usize) -> Result<Svd> {
    let tall = n > m;
    let (d, e) = if tall { (m, n) } else { (n, m) };
    let mut x = vec![0f64; d * e];
    for r in 0..n {
        for c in 0..m {
            let v = f64::from(w[r * m + c]);
            if tall {
                x[c * e + r] = v;
            } else {
                x[r * e + c] = v;
            }
        }
    }
    if d == 0 {
        return Ok(Svd {
            sigma: Vec::new(),
            tall,
            x: Vec::new(),
            q: Vec::new(),
        });
    }
    let mut gram = DMatrix::<f64>::zeros(d, d);
    for i in 0..d {
        let xi = &x[i * e..(i + 1) * e];
        for j in 0..=i {
            let s = dot(xi, &x[j * e..(j + 1) * e]);
            gram[(i, j)] = s;
            gram[(j, i)] = s;
        }
    }
    let eig = nalgebra::SymmetricEigen::try_new(gram, f64::EPSILON, 100_000)
        .ok_or_else(|| Error::Invalid("low_rank: the SVD did not converge".into()))?;
    let lambda = &eig.eigenvalues;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| lambda[b].total_cmp(&lambda[a]).then(a.cmp(&b)));
    let sigma: Vec<f64> = order.iter().map(|&i| lambda[i].max(0.0).sqrt()).collect();
    let mut q = vec![0f64; d * d];
    for (k, &col) in order.iter().enumerate() {
        for i in 0..d {
            q[i * d + k] = eig.eigenvectors[(i, col)];
        }
    }
    Ok(Svd { sigma, tall, x, q })
}

/// `Σ a_i b_i` with four partial sums (a fixed order, so the same inputs give the same bits).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
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
    let svd = svd(w, n, m)?;
    let sigma = &svd.sigma;
    let d = sigma.len();
    let r = pick(sigma).clamp(1, d.max(1));
    let total: f64 = sigma.iter().map(|s| s * s).sum();
    let kept: f64 = sigma[..r.min(d)].iter().map(|s| s * s).sum();
    let energy = if total > 0.0 { kept / total } else { 1.0 };
    let mut a = vec![0f32; n * r];
    let mut b = vec![0f32; r * m];
    for k in 0..r.min(d) {
        let (u, s, v) = svd.pair(k);
        let s = s.sqrt();
        for (row, uv) in u.iter().enumerate() {
            a[row * r + k] = (uv * s) as f32;
        }
        for (col, vv) in v.iter().enumerate() {
            b[k * m + col] = (vv * s) as f32;
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
        let wname = node.inputs[1].clone();
        let w = &g.weights[&wname];
        // As [out, in] = [N, M]; a Conv weight [O, I, kh, kw] reads as [O, I·kh·kw].
        let (n, m, w_nm): (usize, usize, Vec<f32>) = match &node.op {
            Op::Gemm(a) if a.trans_b => (w.shape()[0], w.shape()[1], w.iter().copied().collect()),
            Op::Gemm(_) => (w.shape()[1], w.shape()[0], w.t().iter().copied().collect()),
            Op::Conv(_) => (
                w.shape()[0],
                w.shape()[1..].iter().product(),
                w.iter().copied().collect(),
            ),
            _ => continue,
        };
        let bytes_before = sparse::best_len(w)?.1;
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
        let (tv, tu, first_node, second) = match &node.op {
            Op::Gemm(attrs) => {
                let tv = tensor(&[r, m], b)?;
                let tu = tensor(&[n, r], a)?;
                let first_node = Node::new(
                    first.clone(),
                    Op::Gemm(GemmAttrs {
                        alpha: 1.0,
                        beta: 1.0,
                        trans_a: attrs.trans_a,
                        trans_b: true,
                    }),
                    &[&node.inputs[0], &wv],
                );
                let mut second = node.clone();
                second.op = Op::Gemm(GemmAttrs {
                    alpha: attrs.alpha,
                    beta: attrs.beta,
                    trans_a: false,
                    trans_b: true,
                });
                (tv, tu, first_node, second)
            }
            Op::Conv(attrs) => {
                // First: the same window with r filters and no bias; second: 1×1 conv r → O
                // with the original bias.
                let mut shape_v = w.shape().to_vec();
                shape_v[0] = r;
                let tv = tensor(&shape_v, b)?;
                let tu = tensor(&[n, r, 1, 1], a)?;
                let first_node = Node::new(
                    first.clone(),
                    Op::Conv(attrs.clone()),
                    &[&node.inputs[0], &wv],
                );
                let mut second = node.clone();
                second.op = Op::Conv(ConvAttrs::new([1, 1]));
                (tv, tu, first_node, second)
            }
            _ => continue,
        };
        let bytes_after = sparse::best_len(&tv)?.1 + sparse::best_len(&tu)?.1;
        let mut second = second;
        second.inputs[0] = first_node.name.clone();
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
    super::pass_report("low_rank", g, ctx, layers, bytes_before, macs_before)
}

/// Knobs of the `separable` pass: rewrite standard convolutions as depthwise + pointwise
/// (MobileNet), each named layer once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeparableSpec {
    /// Conv nodes (by node or weight name) to rewrite; each must be ungrouped with a window
    /// larger than 1×1.
    pub layers: Vec<String>,
    /// Depth multiplier `m`: depthwise filters per input channel (clamped to
    /// `min(O, kh·kw)`, where the rewrite is exact). Default 1.
    #[serde(default = "one")]
    pub multiplier: usize,
}

fn one() -> usize {
    1
}

/// What happened to one rewritten Conv.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeparableLayer {
    /// Conv node name (the pointwise conv keeps it).
    pub node: String,
    /// Original weight name.
    pub weight: String,
    /// Output channels `O`.
    pub out_channels: usize,
    /// Input channels `I`.
    pub in_channels: usize,
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Depth multiplier used.
    pub multiplier: usize,
    /// Relative Frobenius error `‖W − Ŵ‖ / ‖W‖` of the separable approximation.
    pub rel_error: f64,
    /// Weight elements before (`O·I·kh·kw`).
    pub params_before: usize,
    /// Weight elements after (`I·m·kh·kw + O·I·m`).
    pub params_after: usize,
    /// Shortest exact encoding of the weight before.
    pub bytes_before: usize,
    /// Shortest exact encodings of both new weights.
    pub bytes_after: usize,
    /// Multiply-accumulates per output position before (`O·I·kh·kw`).
    pub macs_before: u64,
    /// Multiply-accumulates per output position after (`I·m·kh·kw + O·I·m`).
    pub macs_after: u64,
}

/// Rewrites each Conv of `spec.layers` (`W`: `[O, I, kh, kw]`) as a depthwise Conv
/// (`[I·m, 1, kh, kw]`, `groups = I`, same strides, pads and dilations, no bias) followed by a
/// pointwise 1×1 Conv (`[O, I·m, 1, 1]`, the original bias). The factors are the best
/// least-squares choice: for every input channel `i`, the `O × kh·kw` slice `W[:, i]` is replaced
/// by its rank-`m` truncated SVD, split as pointwise columns `U_m Σ^{1/2}` and depthwise filters
/// `Σ^{1/2} V_mᵀ`. With `m = min(O, kh·kw)` the rewrite is exact.
pub fn separable(g: &mut Graph, spec: &SeparableSpec) -> Result<Vec<SeparableLayer>> {
    if spec.multiplier == 0 {
        return Err(Error::Invalid(
            "separable: multiplier must be at least 1".into(),
        ));
    }
    if spec.layers.is_empty() {
        return Err(Error::Invalid(
            "separable: name at least one Conv layer".into(),
        ));
    }
    g.validate()?;
    let mut rows = Vec::with_capacity(spec.layers.len());
    for name in &spec.layers {
        let i = g
            .nodes
            .iter()
            .position(|n| &n.name == name || n.inputs.get(1) == Some(name))
            .ok_or_else(|| Error::Invalid(format!("separable: unknown layer `{name}`")))?;
        let node = g.nodes[i].clone();
        let wname = node.inputs.get(1).cloned().unwrap_or_default();
        let attrs = match (&node.op, g.weights.get(&wname)) {
            (Op::Conv(a), Some(w)) if a.groups == 1 && w.ndim() == 4 => a.clone(),
            _ => {
                return Err(Error::Invalid(format!(
                    "separable: `{name}` is not an ungrouped Conv with a stored 4-D weight"
                )));
            }
        };
        let w = &g.weights[&wname];
        let (o, ci, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
        let kk = kh * kw;
        if kk <= 1 {
            return Err(Error::Invalid(format!(
                "separable: `{name}` is already a 1×1 (pointwise) convolution"
            )));
        }
        if w.iter().any(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "separable: the weight of `{name}` holds NaN or infinity"
            )));
        }
        let m = spec.multiplier.min(o.min(kk));
        let data: Vec<f32> = w.iter().copied().collect();
        let mut dw = vec![0f32; ci * m * kk];
        let mut pw = vec![0f32; o * ci * m];
        let (mut kept, mut total) = (0f64, 0f64);
        for c in 0..ci {
            // W[:, c, :, :] as [O, kh·kw].
            let slice: Vec<f32> = (0..o)
                .flat_map(|oo| {
                    let base = (oo * ci + c) * kk;
                    data[base..base + kk].iter().copied()
                })
                .collect();
            let norm2: f64 = slice.iter().map(|v| f64::from(*v).powi(2)).sum();
            let (r, energy, a, b) = factor(&slice, o, kk, |_| m)?;
            kept += energy * norm2;
            total += norm2;
            for j in 0..r {
                dw[(c * m + j) * kk..(c * m + j + 1) * kk]
                    .copy_from_slice(&b[j * kk..(j + 1) * kk]);
                for oo in 0..o {
                    pw[oo * ci * m + c * m + j] = a[oo * r + j];
                }
            }
        }
        let rel_error = if total > 0.0 {
            (1.0 - kept / total).max(0.0).sqrt()
        } else {
            0.0
        };
        let dw_node = fresh(g, format!("{}_dw", node.name))?;
        let dw_w = fresh(g, format!("{wname}_dw"))?;
        let pw_w = fresh(g, format!("{wname}_pw"))?;
        let t_dw = tensor(&[ci * m, 1, kh, kw], dw)?;
        let t_pw = tensor(&[o, ci * m, 1, 1], pw)?;
        let bytes_before = sparse::best_len(w)?.1;
        let bytes_after = sparse::best_len(&t_dw)?.1 + sparse::best_len(&t_pw)?.1;
        let depthwise = Node::new(
            dw_node.clone(),
            Op::Conv(ConvAttrs {
                groups: ci,
                ..attrs
            }),
            &[&node.inputs[0], &dw_w],
        );
        let mut point = node.clone();
        point.op = Op::Conv(ConvAttrs::new([1, 1]));
        point.inputs[0] = dw_node;
        point.inputs[1] = pw_w.clone();
        g.nodes[i] = point;
        g.nodes.insert(i, depthwise);
        g.weights.insert(dw_w, t_dw);
        g.weights.insert(pw_w, t_pw);
        if readers(g, &wname) == 0 {
            g.weights.remove(&wname);
        }
        let before = o * ci * kk;
        let after = ci * m * kk + o * ci * m;
        rows.push(SeparableLayer {
            node: node.name.clone(),
            weight: wname,
            out_channels: o,
            in_channels: ci,
            kernel: [kh, kw],
            multiplier: m,
            rel_error,
            params_before: before,
            params_after: after,
            bytes_before,
            bytes_after,
            macs_before: before as u64,
            macs_after: after as u64,
        });
    }
    g.validate()?;
    Ok(rows)
}

/// The `separable` pass: [`separable`] plus a [`PassReport`].
pub(super) fn separable_pass(
    g: &mut Graph,
    ctx: &mut PassCtx,
    spec: &SeparableSpec,
    bytes_before: usize,
    macs_before: u64,
) -> Result<PassReport> {
    if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
        return Err(Error::Invalid(
            "separable runs on float weights (before quantize, share, lowbit and qat)".into(),
        ));
    }
    for name in &spec.layers {
        if let Some(n) = g
            .nodes
            .iter()
            .find(|n| &n.name == name || n.inputs.get(1) == Some(name))
            && n.inputs.get(1).is_some_and(|w| ctx.masks.contains_key(w))
        {
            return Err(Error::Invalid(format!(
                "separable: `{}` is pruned; rewrite before pruning",
                n.name
            )));
        }
    }
    let rows = separable(g, spec)?;
    let layers = rows
        .iter()
        .map(|l| {
            let nonzero = [format!("{}_dw", l.weight), format!("{}_pw", l.weight)]
                .iter()
                .filter_map(|k| g.weights.get(k))
                .map(|t| t.iter().filter(|v| **v != 0.0).count())
                .sum();
            super::LayerReport {
                name: l.weight.clone(),
                node: l.node.clone(),
                params: l.params_after,
                nonzero,
                bits: 32,
                bytes_before: l.bytes_before,
                bytes_after: l.bytes_after,
                encoding: format!(
                    "depthwise {}x{} x{} + pointwise (params {} -> {}, rel. error {:.4})",
                    l.kernel[0],
                    l.kernel[1],
                    l.multiplier,
                    l.params_before,
                    l.params_after,
                    l.rel_error
                ),
            }
        })
        .collect();
    super::pass_report("separable", g, ctx, layers, bytes_before, macs_before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_svd_gives_the_same_factors() {
        let (n, m) = (90, 70);
        let mut rng = crate::rng::Rng::new(3);
        let w: Vec<f32> = (0..n * m).map(|_| rng.normal()).collect();
        SVDS.with_borrow_mut(|c| c.clear());
        let first = factor(&w, n, m, |_| 12).unwrap();
        assert_eq!(SVDS.with_borrow(|c| c.len()), 1);
        // Another rank reads the cached SVD; the same rank gives the same bits.
        let other = factor(&w, n, m, |_| 5).unwrap();
        assert_eq!(SVDS.with_borrow(|c| c.len()), 1);
        assert_eq!(other.0, 5);
        assert_eq!(factor(&w, n, m, |_| 12).unwrap(), first);
        // The first 5 columns of A are the same with either rank.
        for row in 0..n {
            assert_eq!(
                first.2[row * 12..row * 12 + 5],
                other.2[row * 5..row * 5 + 5]
            );
        }
        // A different matrix is not mistaken for it.
        let mut w2 = w.clone();
        w2[17] += 1.0;
        assert_ne!(factor(&w2, n, m, |_| 12).unwrap(), first);
        assert_eq!(SVDS.with_borrow(|c| c.len()), 2);
    }

    /// The Gram-matrix SVD against nalgebra's Golub–Kahan SVD: the same singular values, an
    /// exact reconstruction, orthonormal vectors, and the truncation error Eckart–Young
    /// predicts — on wide, tall, square, rank-deficient, zero and one-element matrices.
    #[test]
    fn gram_svd_matches_a_golub_kahan_svd() {
        let mut rng = crate::rng::Rng::new(7);
        let mut cases: Vec<(usize, usize, Vec<f32>)> = Vec::new();
        for &(n, m) in &[(1, 1), (1, 5), (6, 1), (7, 7), (13, 40), (40, 13), (30, 78)] {
            cases.push((n, m, (0..n * m).map(|_| rng.normal()).collect()));
        }
        // Rank 3 (an outer-product sum), and all zeros.
        let (n, m) = (20, 30);
        let mut low = vec![0f32; n * m];
        for _ in 0..3 {
            let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
            for r in 0..n {
                for c in 0..m {
                    low[r * m + c] += a[r] * b[c];
                }
            }
        }
        cases.push((n, m, low));
        cases.push((9, 4, vec![0.0; 36]));
        for (n, m, w) in cases {
            let ours = gram_svd(&w, n, m).unwrap();
            let d = n.min(m);
            let theirs = DMatrix::<f64>::from_row_iterator(n, m, w.iter().map(|&x| f64::from(x)))
                .try_svd(false, false, f64::EPSILON, 100_000)
                .unwrap();
            let mut want: Vec<f64> = theirs.singular_values.iter().copied().collect();
            want.sort_by(|a, b| b.total_cmp(a));
            let top = want.first().copied().unwrap_or(0.0).max(1e-30);
            assert_eq!(ours.sigma.len(), d);
            assert!(ours.sigma.windows(2).all(|p| p[0] >= p[1]));
            let pairs: Vec<(Vec<f64>, f64, Vec<f64>)> = (0..d).map(|k| ours.pair(k)).collect();
            for (k, t) in want.iter().enumerate() {
                // Both estimates of σ: √λ and the projection's norm.
                for s in [ours.sigma[k], pairs[k].1] {
                    assert!((s - t).abs() <= 1e-6 * top, "{n}×{m}: σ {s} vs {t}");
                    if *t > 1e-3 * top {
                        assert!((s - t).abs() <= 1e-10 * t, "{n}×{m}: σ {s} vs {t}");
                    }
                }
            }
            // U Σ Vᵀ = W, with the projections' σ.
            for r in 0..n {
                for c in 0..m {
                    let x: f64 = pairs.iter().map(|(u, s, v)| u[r] * s * v[c]).sum();
                    assert!((x - f64::from(w[r * m + c])).abs() <= 1e-9 * (1.0 + top));
                }
            }
            // Orthonormal vectors where σ is not negligible.
            let live: Vec<usize> = (0..d).filter(|&k| ours.sigma[k] > 1e-6 * top).collect();
            for &i in &live {
                for &j in &live {
                    let uu: f64 = (0..n).map(|r| pairs[i].0[r] * pairs[j].0[r]).sum();
                    let vv: f64 = (0..m).map(|c| pairs[i].2[c] * pairs[j].2[c]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((uu - want).abs() < 1e-8, "{n}×{m} u{i}·u{j} = {uu}");
                    assert!((vv - want).abs() < 1e-8, "{n}×{m} v{i}·v{j} = {vv}");
                }
            }
            // Truncation error² = Σ of the dropped σ² (Eckart–Young).
            let r = d.div_ceil(2).max(1).min(d);
            if d > 0 {
                let (_, _, a, b) = factor(&w, n, m, |_| r).unwrap();
                let mut err = 0f64;
                for row in 0..n {
                    for c in 0..m {
                        let x: f64 = (0..r)
                            .map(|k| f64::from(a[row * r + k]) * f64::from(b[k * m + c]))
                            .sum();
                        err += (x - f64::from(w[row * m + c])).powi(2);
                    }
                }
                let tail: f64 = want[r..].iter().map(|s| s * s).sum();
                assert!(
                    (err - tail).abs() <= 1e-5 * (1.0 + top * top),
                    "{n}×{m} rank {r}: error² {err} vs {tail}"
                );
            }
        }
    }

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
