//! Knowledge distillation: a student learns from a teacher's softened outputs (Hinton, Vinyals &
//! Dean, 2015, "Distilling the Knowledge in a Neural Network"), optionally also from the
//! pairwise similarities of an intermediate layer (Tung & Mori, 2019, "Similarity-Preserving
//! Knowledge Distillation"), and through a teaching-assistant chain (Mirzadeh et al., 2020).
//!
//! [`Distill`] is a training [`Objective`]: for every batch it runs the teacher in inference
//! mode on the same (already preprocessed) input the student sees and returns
//!
//! ```text
//! loss = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1−α)·CE(z_s, y) + β·SP(F_s, F_t)
//! ```
//!
//! with exact gradients seeded at the student's logits and, for the feature term, at the
//! student's intermediate value `F_s`.

use super::{Hooks, Masks, Objective, Progress, TrainConfig, TrainSummary, flatten_logits};
use crate::data::{Dataset, Preprocess};
use crate::exec;
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;

fn default_temperature() -> f32 {
    4.0
}

fn default_alpha() -> f32 {
    0.9
}

fn default_beta() -> f32 {
    1.0
}

/// A feature (similarity-preserving) loss on one layer pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Name of the student's value (an activation of its graph, e.g. `relu1`).
    pub student: String,
    /// Name of the teacher's value it should mimic (e.g. `relu3`); the widths may differ.
    pub teacher: String,
    /// Weight β of the term (default 1).
    #[serde(default = "default_beta")]
    pub beta: f32,
}

/// Knobs of the distillation loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillParams {
    /// Softmax temperature T (> 0; default 4).
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Weight α of the soft (teacher) term, `0..=1`; `1 − α` weighs the label cross-entropy
    /// (default 0.9).
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// Optional feature loss on a layer pair.
    #[serde(default)]
    pub feature: Option<FeatureSpec>,
    /// Standardise both rows of logits (subtract the mean, divide by the standard deviation)
    /// before the tempered softmax of the soft term (logit standardisation, Sun et al. 2024):
    /// the student then matches the teacher's relative logits, not their scale, which a much
    /// smaller student cannot reach. Default off (plain Hinton KD).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standardize: bool,
}

impl Default for DistillParams {
    fn default() -> Self {
        DistillParams {
            temperature: default_temperature(),
            alpha: default_alpha(),
            feature: None,
            standardize: false,
        }
    }
}

impl DistillParams {
    /// Checks the knobs' ranges.
    pub fn check(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature <= 0.0 {
            return Err(Error::Invalid(format!(
                "distillation temperature {} must be a positive number",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::Invalid(format!(
                "distillation alpha {} is outside 0..=1",
                self.alpha
            )));
        }
        if let Some(f) = &self.feature
            && (!f.beta.is_finite() || f.beta < 0.0)
        {
            return Err(Error::Invalid(format!(
                "feature-loss weight beta {} must be ≥ 0",
                f.beta
            )));
        }
        Ok(())
    }
}

/// Row-wise log-softmax of `z / t` in f64.
fn log_softmax(row: &[f32], t: f64) -> Vec<f64> {
    let s: Vec<f64> = row.iter().map(|&v| v as f64 / t).collect();
    let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = mx + s.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
    s.into_iter().map(|v| v - lse).collect()
}

fn as_matrix(t: &Tensor, what: &str) -> Result<(usize, usize, Vec<f32>)> {
    let s = t.shape();
    if s.len() != 2 {
        return Err(Error::Invalid(format!(
            "{what} must be a [n, k] matrix, got {s:?}"
        )));
    }
    Ok((s[0], s[1], crate::tensor::to_contiguous(t).to_vec()))
}

fn matrix(n: usize, k: usize, v: Vec<f32>) -> Result<Tensor> {
    Tensor::from_shape_vec(ndarray::IxDyn(&[n, k]), v).map_err(|e| Error::Invalid(e.to_string()))
}

/// The Hinton loss of student logits `zs` (`[n, c]`) against teacher logits `zt` and labels:
/// `α·T²·mean_i KL(softmax(zt_i/T) ‖ softmax(zs_i/T)) + (1−α)·CE(zs, y)`. Returns the loss, its
/// exact gradient w.r.t. `zs` (the soft part is `α·T·(softmax(zs/T) − softmax(zt/T)) / n`) and
/// how many rows of `zs` predict their label. With `α = 0` the result is exactly
/// [`super::loss::cross_entropy`]'s.
pub fn hinton(
    zs: &Tensor,
    zt: &Tensor,
    labels: &[u8],
    temperature: f32,
    alpha: f32,
) -> Result<(f32, Tensor, usize)> {
    soft_loss(
        zs,
        zt,
        labels,
        &DistillParams {
            temperature,
            alpha,
            feature: None,
            standardize: false,
        },
    )
}

/// Mean and standard deviation (population, plus 1e-7 under the root) of a row, in f64.
fn row_stats(row: &[f32]) -> (f64, f64) {
    let c = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / c;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c;
    (mean, (var + 1e-7).sqrt())
}

/// [`hinton`] with every knob of `p` (the feature term aside): with `p.standardize` each row of
/// both logit matrices is z-scored before the tempered softmax, and the gradient goes back
/// through the standardisation exactly: `dz = (g − mean(g) − ŷ·mean(g·ŷ)) / σ` for the gradient
/// `g` w.r.t. the standardised row `ŷ`.
pub fn soft_loss(
    zs: &Tensor,
    zt: &Tensor,
    labels: &[u8],
    p: &DistillParams,
) -> Result<(f32, Tensor, usize)> {
    DistillParams {
        feature: None,
        ..p.clone()
    }
    .check()?;
    if zs.shape() != zt.shape() {
        return Err(Error::Invalid(format!(
            "student logits {:?} and teacher logits {:?} differ in shape",
            zs.shape(),
            zt.shape()
        )));
    }
    let (ce, ce_grad, correct) = super::loss::cross_entropy(zs, labels)?;
    if p.alpha == 0.0 {
        return Ok((ce, ce_grad, correct));
    }
    let (n, c, mut s) = as_matrix(zs, "student logits")?;
    let (_, _, mut t) = as_matrix(zt, "teacher logits")?;
    let mut sigma = vec![1.0f64; n];
    if p.standardize {
        for i in 0..n {
            let (m, sd) = row_stats(&s[i * c..(i + 1) * c]);
            sigma[i] = sd;
            s[i * c..(i + 1) * c]
                .iter_mut()
                .for_each(|v| *v = ((*v as f64 - m) / sd) as f32);
            let (m, sd) = row_stats(&t[i * c..(i + 1) * c]);
            t[i * c..(i + 1) * c]
                .iter_mut()
                .for_each(|v| *v = ((*v as f64 - m) / sd) as f32);
        }
    }
    let temp = p.temperature as f64;
    let a = p.alpha as f64;
    let mut kl = 0.0f64;
    let mut grad = vec![0.0f32; n * c];
    let ce_grad = crate::tensor::to_contiguous(&ce_grad).to_vec();
    let mut soft = vec![0.0f64; c];
    for i in 0..n {
        let ls = log_softmax(&s[i * c..(i + 1) * c], temp);
        let lt = log_softmax(&t[i * c..(i + 1) * c], temp);
        for k in 0..c {
            let (ps, pt) = (ls[k].exp(), lt[k].exp());
            kl += pt * (lt[k] - ls[k]);
            soft[k] = a * temp * (ps - pt) / n as f64;
        }
        if p.standardize {
            let y = &s[i * c..(i + 1) * c];
            let mg = soft.iter().sum::<f64>() / c as f64;
            let mgy = soft.iter().zip(y).map(|(g, &y)| g * y as f64).sum::<f64>() / c as f64;
            for k in 0..c {
                soft[k] = (soft[k] - mg - y[k] as f64 * mgy) / sigma[i];
            }
        }
        for k in 0..c {
            grad[i * c + k] = (soft[k] + (1.0 - a) * ce_grad[i * c + k] as f64) as f32;
        }
    }
    let loss = a * temp * temp * kl / n.max(1) as f64 + (1.0 - a) * ce as f64;
    Ok((loss as f32, matrix(n, c, grad)?, correct))
}

/// Row-normalised Gram matrix `Ĝ = norm_rows(F Fᵀ)` of `[n, d]` features, with the row norms
/// (rows whose norm is 0 stay 0).
fn normalised_gram(f: &[f32], n: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut g = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let v: f64 = f[i * d..(i + 1) * d]
                .iter()
                .zip(&f[j * d..(j + 1) * d])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            g[i * n + j] = v;
            g[j * n + i] = v;
        }
    }
    let mut norms = vec![0.0f64; n];
    for i in 0..n {
        let r = g[i * n..(i + 1) * n]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        norms[i] = r;
        g[i * n..(i + 1) * n]
            .iter_mut()
            .for_each(|v| *v = if r > 0.0 { *v / r } else { 0.0 });
    }
    (g, norms)
}

/// Similarity-preserving feature loss (Tung & Mori, 2019) between student features `fs`
/// (`[n, ds]`) and teacher features `ft` (`[n, dt]`; the widths may differ):
/// `‖norm_rows(fs fsᵀ) − norm_rows(ft ftᵀ)‖²_F / n²`, where `norm_rows` divides each row of the
/// `n × n` Gram matrix by its L2 norm. It compares how the batch's images relate to each other,
/// not the features themselves, so it needs no projection between layers of different sizes.
/// Returns the loss and its exact gradient w.r.t. `fs`.
pub fn similarity(fs: &Tensor, ft: &Tensor) -> Result<(f32, Tensor)> {
    let (n, ds, s) = as_matrix(fs, "student features")?;
    let (nt, dt, t) = as_matrix(ft, "teacher features")?;
    if n != nt {
        return Err(Error::Invalid(format!(
            "student features have {n} rows, teacher features {nt}"
        )));
    }
    let (gs, norms) = normalised_gram(&s, n, ds);
    let (gt, _) = normalised_gram(&t, n, dt);
    let nn = (n * n).max(1) as f64;
    let loss: f64 = gs
        .iter()
        .zip(&gt)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / nn;
    // dL/dĜ, then back through the row normalisation: dA_i = (D_i − Ĝ_i (Ĝ_i·D_i)) / r_i.
    let mut da = vec![0.0f64; n * n];
    for i in 0..n {
        if norms[i] == 0.0 {
            continue;
        }
        let row = i * n..(i + 1) * n;
        let d: Vec<f64> = gs[row.clone()]
            .iter()
            .zip(&gt[row.clone()])
            .map(|(a, b)| 2.0 * (a - b) / nn)
            .collect();
        let dot: f64 = gs[row.clone()].iter().zip(&d).map(|(g, d)| g * d).sum();
        for j in 0..n {
            da[i * n + j] = (d[j] - gs[i * n + j] * dot) / norms[i];
        }
    }
    // A = F Fᵀ  ⇒  dF = (dA + dAᵀ) F.
    let mut grad = vec![0.0f32; n * ds];
    for i in 0..n {
        let mut acc = vec![0.0f64; ds];
        for j in 0..n {
            let w = da[i * n + j] + da[j * n + i];
            if w != 0.0 {
                acc.iter_mut()
                    .zip(&s[j * ds..(j + 1) * ds])
                    .for_each(|(a, &f)| *a += w * f as f64);
            }
        }
        grad[i * ds..(i + 1) * ds]
            .iter_mut()
            .zip(acc)
            .for_each(|(g, a)| *g = a as f32);
    }
    Ok((loss as f32, matrix(n, ds, grad)?))
}

/// Views any `[n, ...]` tensor as `[n, rest]`.
fn rows(t: &Tensor) -> Result<Tensor> {
    flatten_logits(t)
}

/// Teacher outputs computed once per training image, looked up by the exact content of the
/// preprocessed image: a hash of its f32 bits picks candidates, which are then compared pixel by
/// pixel with the dataset image, so a hit returns exactly what the teacher computes for that
/// image and anything else (augmented or unknown images) falls back to running the teacher.
struct Cache<'a> {
    data: &'a Dataset,
    pre: Preprocess,
    index: HashMap<u64, Vec<usize>>,
    /// One `[len, k]` matrix per teacher output, flattened.
    outputs: Vec<(usize, Vec<f32>)>,
}

fn row_hash(row: impl Iterator<Item = f32>) -> u64 {
    row.fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ v.to_bits() as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Cache<'_> {
    fn lookup(&self, x: &[f32], px: usize) -> Option<usize> {
        let cands = self.index.get(&row_hash(x.iter().copied()))?;
        cands.iter().copied().find(|&j| {
            self.data.images[j * px..(j + 1) * px]
                .iter()
                .zip(x)
                .all(|(&p, v)| self.pre.apply(p).to_bits() == v.to_bits())
        })
    }
}

/// The distillation [`Objective`]: Hinton loss on the logits plus an optional feature loss.
pub struct Distill<'a> {
    teacher: Graph,
    input: String,
    params: DistillParams,
    /// Which teacher output is the feature value (1, or 0 when it is the logits).
    feature_at: usize,
    cache: Option<Cache<'a>>,
}

impl<'a> Distill<'a> {
    /// An objective that distils from `teacher`. The teacher runs on exactly the batch the
    /// student gets (so both must expect the same preprocessing); with a feature loss, the
    /// teacher's value `feature.teacher` is added to its outputs.
    pub fn new(teacher: &Graph, params: DistillParams) -> Result<Self> {
        params.check()?;
        let mut t = teacher.clone();
        t.validate()?;
        let input = t
            .inputs
            .first()
            .map(|v| v.name.clone())
            .ok_or_else(|| Error::Graph("the teacher has no input".into()))?;
        t.outputs.truncate(1);
        if t.outputs.is_empty() {
            return Err(Error::Graph("the teacher has no output".into()));
        }
        let mut feature_at = 1;
        if let Some(f) = &params.feature
            && f.teacher == t.outputs[0]
        {
            feature_at = 0;
        } else if let Some(f) = &params.feature {
            let produced = t.nodes.iter().any(|n| n.outputs.contains(&f.teacher));
            if !produced {
                return Err(Error::Invalid(format!(
                    "the teacher computes no value `{}` for the feature loss",
                    f.teacher
                )));
            }
            t.outputs.push(f.teacher.clone());
        }
        Ok(Distill {
            teacher: t,
            input,
            params,
            feature_at,
            cache: None,
        })
    }

    /// Precomputes the teacher's outputs for every image of `data` (preprocessed with `pre`,
    /// run in batches of `batch`). Later batches whose images are found in `data` (exact
    /// pixel comparison) reuse them instead of running the teacher again: the loss and
    /// gradients are the same as without the cache as long as the teacher's per-image outputs
    /// do not depend on the batch they are computed in (true of the reference kernels; the
    /// tests check training bytes with and without the cache).
    pub fn cache(&mut self, data: &'a Dataset, pre: &Preprocess, batch: usize) -> Result<()> {
        let px = data.pixels();
        let mut outputs: Vec<(usize, Vec<f32>)> = Vec::new();
        let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
        let all: Vec<usize> = (0..data.len()).collect();
        for idx in all.chunks(batch.max(1)) {
            let (x, _) = data.batch(idx, pre);
            let outs = exec::run(&self.teacher, &[(self.input.as_str(), &x)])?;
            if outputs.is_empty() {
                outputs = outs
                    .iter()
                    .map(|o| {
                        let k = o.len() / idx.len().max(1);
                        (k, Vec::with_capacity(k * data.len()))
                    })
                    .collect();
            }
            for ((k, buf), o) in outputs.iter_mut().zip(&outs) {
                if o.len() != *k * idx.len() {
                    return Err(Error::Graph(
                        "teacher output size changed with the batch".into(),
                    ));
                }
                buf.extend(crate::tensor::to_contiguous(o).iter());
            }
            let xs = crate::tensor::to_contiguous(&x);
            for (r, &i) in idx.iter().enumerate() {
                index
                    .entry(row_hash(xs[r * px..(r + 1) * px].iter().copied()))
                    .or_default()
                    .push(i);
            }
        }
        self.cache = Some(Cache {
            data,
            pre: *pre,
            index,
            outputs,
        });
        Ok(())
    }

    /// Changes the temperature and α (the teacher, the feature loss and the cache stay): one
    /// cached teacher serves a sweep over temperatures.
    pub fn set_temperature_alpha(&mut self, temperature: f32, alpha: f32) -> Result<()> {
        let p = DistillParams {
            temperature,
            alpha,
            ..self.params.clone()
        };
        p.check()?;
        self.params = p;
        Ok(())
    }

    /// Turns logit standardisation ([`DistillParams::standardize`]) on or off.
    pub fn set_standardize(&mut self, on: bool) {
        self.params.standardize = on;
    }

    /// The teacher's outputs (logits, then the feature value if any) for the batch `x`, as
    /// `[n, k]` matrices.
    fn teacher_outputs(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let n = x.shape().first().copied().unwrap_or(0);
        if let Some(c) = &self.cache {
            let px = x.len() / n.max(1);
            if px == c.data.pixels() {
                let xs = crate::tensor::to_contiguous(x);
                let hits: Option<Vec<usize>> = (0..n)
                    .map(|r| c.lookup(&xs[r * px..(r + 1) * px], px))
                    .collect();
                if let Some(hits) = hits {
                    return c
                        .outputs
                        .iter()
                        .map(|(k, buf)| {
                            let mut v = Vec::with_capacity(n * k);
                            hits.iter()
                                .for_each(|&j| v.extend_from_slice(&buf[j * k..(j + 1) * k]));
                            matrix(n, *k, v)
                        })
                        .collect();
                }
            }
        }
        exec::run(&self.teacher, &[(self.input.as_str(), x)])?
            .iter()
            .map(rows)
            .collect()
    }
}

impl Objective for Distill<'_> {
    fn loss(
        &mut self,
        trace: &exec::Trace,
        output: &str,
        x: &Tensor,
        y: &[u8],
    ) -> Result<(f32, HashMap<String, Tensor>, usize)> {
        let logits = trace.get(output)?;
        let zs = flatten_logits(logits)?;
        let p = &self.params;
        let needs_teacher = p.alpha > 0.0 || p.feature.as_ref().is_some_and(|f| f.beta > 0.0);
        if !needs_teacher {
            let (loss, dl, correct) = super::loss::cross_entropy(&zs, y)?;
            let dl = dl
                .into_shape_with_order(logits.raw_dim())
                .map_err(|e| Error::Invalid(e.to_string()))?;
            return Ok((loss, HashMap::from([(output.to_string(), dl)]), correct));
        }
        let t = self.teacher_outputs(x)?;
        let (mut loss, dl, correct) = soft_loss(&zs, &t[0], y, p)?;
        let dl = dl
            .into_shape_with_order(logits.raw_dim())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let mut seeds = HashMap::from([(output.to_string(), dl)]);
        if let (Some(f), Some(ft)) = (&p.feature, t.get(self.feature_at))
            && f.beta > 0.0
        {
            let fs = trace.get(&f.student)?;
            let (lf, gf) = similarity(&rows(fs)?, ft)?;
            loss += f.beta * lf;
            let gf = (gf * f.beta)
                .into_shape_with_order(fs.raw_dim())
                .map_err(|e| Error::Invalid(e.to_string()))?;
            match seeds.get_mut(&f.student) {
                Some(s) => *s += &gf,
                None => {
                    seeds.insert(f.student.clone(), gf);
                }
            }
        }
        Ok((loss, seeds, correct))
    }
}

/// Distils `teacher` into `student` in place: [`super::train_with`] with a [`Distill`]
/// objective and `masks` held at zero. When `cfg` does not augment, the teacher's outputs on
/// `data` are computed once up front (see [`Distill::cache`]). The teacher must expect the
/// student's preprocessing (`cfg.preprocess`, else the student's metadata); a teacher whose
/// metadata records a different one is an error.
#[allow(clippy::too_many_arguments)]
pub fn distill(
    student: &mut Graph,
    teacher: &Graph,
    data: &Dataset,
    val: Option<&Dataset>,
    params: &DistillParams,
    cfg: &TrainConfig,
    masks: Option<&Masks>,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<TrainSummary> {
    let pre = cfg
        .preprocess
        .or_else(|| Preprocess::from_metadata(&student.metadata))
        .unwrap_or_default();
    if let Some(tp) = Preprocess::from_metadata(&teacher.metadata)
        && tp != pre
    {
        return Err(Error::Invalid(format!(
            "the teacher expects inputs {tp}, the student is trained on {pre}: distillation \
             runs both on the same batch"
        )));
    }
    let mut obj = Distill::new(teacher, params.clone())?;
    if cfg.augment_shift == 0 && params.alpha > 0.0 {
        obj.cache(data, &pre, 256)?;
    }
    let hooks = Hooks {
        masks,
        objective: Some(&mut obj),
        forward_weights: None,
    };
    super::train_with(student, data, val, cfg, hooks, on_progress)
}

/// A teaching-assistant chain (Mirzadeh et al., 2020, "Improved Knowledge Distillation via
/// Teacher Assistant"): `students[0]` is distilled from `teacher`, then each `students[i]`
/// from the freshly trained `students[i − 1]` (teacher → TA → … → student). `params` and
/// `cfgs` give each link's knobs (one per student). Returns one summary per link.
pub fn chain(
    teacher: &Graph,
    students: &mut [Graph],
    data: &Dataset,
    val: Option<&Dataset>,
    params: &[DistillParams],
    cfgs: &[TrainConfig],
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Vec<TrainSummary>> {
    if params.len() != students.len() || cfgs.len() != students.len() {
        return Err(Error::Invalid(format!(
            "a distillation chain of {} students needs as many params ({}) and configs ({})",
            students.len(),
            params.len(),
            cfgs.len()
        )));
    }
    let mut out = Vec::with_capacity(students.len());
    for i in 0..students.len() {
        let (done, rest) = students.split_at_mut(i);
        let t = done.last().unwrap_or(teacher);
        let s = distill(
            &mut rest[0],
            t,
            data,
            val,
            &params[i],
            &cfgs[i],
            None,
            on_progress,
        )?;
        if s.cancelled {
            return Err(Error::Cancelled);
        }
        out.push(s);
    }
    Ok(out)
}

/// Knobs of the `distill` recipe pass: `{"pass": "distill", "teacher": "original",
/// "temperature": 4, "alpha": 0.9, "feature": {"student": "relu1", "teacher": "relu3",
/// "beta": 1}, ...TrainConfig fields}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillPass {
    /// `"original"`: the graph the recipe started from (distilling a pruned model from its
    /// unpruned self); any other name: a graph the caller supplied in
    /// [`crate::compress::PassCtx::graphs`] (e.g. the CLI's `--teacher`).
    pub teacher: String,
    /// Restart the student from its initial weights (rebuilt from its zoo metadata
    /// `lithe.arch`/`lithe.seed`, see [`crate::compress::lottery::zoo_init`]) before
    /// training: a student trained from scratch by distillation (default false: fine-tune the
    /// weights it has).
    #[serde(default)]
    pub from_init: bool,
    /// Temperature, α and the optional feature loss.
    #[serde(flatten)]
    pub params: DistillParams,
    /// How the student trains.
    #[serde(flatten)]
    pub train: TrainConfig,
}

/// The `distill` pass: trains `g` against the teacher with `ctx.masks` held at zero.
pub(crate) fn pass(
    g: &mut Graph,
    ctx: &mut crate::compress::PassCtx,
    spec: &DistillPass,
) -> Result<()> {
    if !ctx.quantized.is_empty() || !ctx.shared.is_empty() || !ctx.lowbit.is_empty() {
        return Err(Error::Invalid(
            "distill before quantize/share: training would discard the codes".into(),
        ));
    }
    let data = ctx
        .data
        .ok_or_else(|| Error::Invalid("the distill pass needs training data".into()))?;
    let teacher = match spec.teacher.as_str() {
        "original" => ctx.original.cloned().ok_or_else(|| {
            Error::Invalid("the distill pass has no original graph to use as teacher".into())
        })?,
        name => ctx.graphs.get(name).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "no teacher named `{name}`: use \"original\" or one of [{}]",
                ctx.graphs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?,
    };
    if spec.from_init {
        let init = crate::compress::lottery::zoo_init(g)?;
        for (k, w) in g.weights.iter_mut() {
            if let Some(v) = init.weights.get(k) {
                *w = v.clone();
            }
        }
    }
    let s = distill(
        g,
        &teacher,
        data,
        None,
        &spec.params,
        &spec.train,
        Some(&ctx.masks),
        ctx.on_progress,
    )?;
    if s.cancelled {
        return Err(Error::Cancelled);
    }
    ctx.finetune.push(s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        crate::tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn hinton_matches_its_definition_on_a_hand_case() {
        let zs = t(&[1, 2], vec![1.0, 0.0]);
        let zt = t(&[1, 2], vec![0.0, 2.0]);
        let (l, _, c) = hinton(&zs, &zt, &[0], 2.0, 0.5).unwrap();
        let sm = |a: f64, b: f64| (a.exp() / (a.exp() + b.exp()), b.exp() / (a.exp() + b.exp()));
        let (ps0, ps1) = sm(0.5, 0.0);
        let (pt0, pt1) = sm(0.0, 1.0);
        let kl = pt0 * (pt0 / ps0).ln() + pt1 * (pt1 / ps1).ln();
        let ce = -(1f64.exp() / (1f64.exp() + 1.0)).ln();
        assert!((l as f64 - (0.5 * 4.0 * kl + 0.5 * ce)).abs() < 1e-6);
        assert_eq!(c, 1);
    }
}
