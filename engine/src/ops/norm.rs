//! Batch normalisation: inference with running statistics, training with batch statistics.

use super::{Saved, get};
use crate::graph::Node;
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::IxDyn;

fn dims(node: &Node, x: &[usize]) -> Result<(usize, usize, usize)> {
    if x.len() < 2 {
        return Err(Error::shape(
            &node.name,
            "BatchNormalization",
            "input must have a channel axis",
            &[x],
        ));
    }
    Ok((x[0], x[1], x[2..].iter().product()))
}

pub(super) fn bn_shape(node: &Node, shapes: &[Option<&[usize]>]) -> Result<Vec<usize>> {
    let x = shapes
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Error::Graph(format!("node `{}` has no input", node.name)))?;
    let (_, c, _) = dims(node, x)?;
    for (i, s) in shapes.iter().enumerate().skip(1) {
        if let Some(s) = s
            && *s != [c]
        {
            return Err(Error::shape(
                &node.name,
                "BatchNormalization",
                format!("parameter #{i} must be [{c}]"),
                &[x, s],
            ));
        }
    }
    Ok(x.to_vec())
}

fn vec1(node: &Node, t: &Tensor, c: usize) -> Result<Vec<f32>> {
    if t.len() != c {
        return Err(Error::shape(
            &node.name,
            "BatchNormalization",
            format!("parameter must have {c} values"),
            &[t.shape()],
        ));
    }
    Ok(t.iter().copied().collect())
}

pub(super) fn bn_eval(
    node: &Node,
    eps: f32,
    x: &Tensor,
    s: &Tensor,
    b: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let (n, c, sp) = dims(node, x.shape())?;
    let (s, b, m, v) = (
        vec1(node, s, c)?,
        vec1(node, b, c)?,
        vec1(node, m, c)?,
        vec1(node, v, c)?,
    );
    let xs = crate::tensor::to_contiguous(x);
    let mut y = vec![0.0f32; xs.len()];
    for ni in 0..n {
        for ci in 0..c {
            let k = s[ci] / (v[ci] + eps).sqrt();
            let off = b[ci] - m[ci] * k;
            let r = (ni * c + ci) * sp..(ni * c + ci + 1) * sp;
            for (o, i) in y[r.clone()].iter_mut().zip(&xs[r]) {
                *o = i * k + off;
            }
        }
    }
    Tensor::from_shape_vec(IxDyn(x.shape()), y).map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn bn_train(
    node: &Node,
    eps: f32,
    x: &Tensor,
    s: &Tensor,
    b: &Tensor,
) -> Result<(Tensor, Saved)> {
    let (n, c, sp) = dims(node, x.shape())?;
    let (s, b) = (vec1(node, s, c)?, vec1(node, b, c)?);
    let xs = crate::tensor::to_contiguous(x);
    let cnt = (n * sp) as f64;
    let mut mean = vec![0.0f32; c];
    let mut var = vec![0.0f32; c];
    let mut inv_std = vec![0.0f32; c];
    let mut xhat = vec![0.0f32; xs.len()];
    let mut y = vec![0.0f32; xs.len()];
    for ci in 0..c {
        let mut sum = 0.0f64;
        for ni in 0..n {
            sum += xs[(ni * c + ci) * sp..][..sp]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
        }
        let mu = sum / cnt.max(1.0);
        let mut sq = 0.0f64;
        for ni in 0..n {
            sq += xs[(ni * c + ci) * sp..][..sp]
                .iter()
                .map(|&v| (v as f64 - mu).powi(2))
                .sum::<f64>();
        }
        let biased = sq / cnt.max(1.0);
        let is = 1.0 / (biased + eps as f64).sqrt();
        mean[ci] = mu as f32;
        var[ci] = if cnt > 1.0 {
            (sq / (cnt - 1.0)) as f32
        } else {
            biased as f32
        };
        inv_std[ci] = is as f32;
        for ni in 0..n {
            let r = (ni * c + ci) * sp..(ni * c + ci + 1) * sp;
            for k in r {
                let h = ((xs[k] as f64 - mu) * is) as f32;
                xhat[k] = h;
                y[k] = h * s[ci] + b[ci];
            }
        }
    }
    let shape = IxDyn(x.shape());
    let xhat =
        Tensor::from_shape_vec(shape.clone(), xhat).map_err(|e| Error::Invalid(e.to_string()))?;
    let y = Tensor::from_shape_vec(shape, y).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((
        y,
        Saved::BatchNorm {
            xhat,
            inv_std,
            mean,
            var,
        },
    ))
}

pub(super) fn bn_backward(
    node: &Node,
    eps: f32,
    inputs: &[Option<&Tensor>],
    saved: &Saved,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let x = get(node, inputs, 0)?;
    let (n, c, sp) = dims(node, x.shape())?;
    let s = vec1(node, get(node, inputs, 1)?, c)?;
    let dys = crate::tensor::to_contiguous(dy);
    let mut dx = vec![0.0f32; x.len()];
    let mut ds = vec![0.0f32; c];
    let mut dbias = vec![0.0f32; c];
    match saved {
        Saved::BatchNorm { xhat, inv_std, .. } => {
            let xh = crate::tensor::to_contiguous(xhat);
            let cnt = (n * sp) as f32;
            for ci in 0..c {
                let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
                for ni in 0..n {
                    let r = (ni * c + ci) * sp..(ni * c + ci + 1) * sp;
                    for k in r {
                        sdy += dys[k] as f64;
                        sdyx += (dys[k] * xh[k]) as f64;
                    }
                }
                ds[ci] = sdyx as f32;
                dbias[ci] = sdy as f32;
                let k1 = s[ci] * inv_std[ci] / cnt;
                for ni in 0..n {
                    let r = (ni * c + ci) * sp..(ni * c + ci + 1) * sp;
                    for k in r {
                        dx[k] = k1 * (cnt * dys[k] - sdy as f32 - xh[k] * sdyx as f32);
                    }
                }
            }
        }
        _ => {
            // Inference-mode backward: statistics are constants.
            let m = vec1(node, get(node, inputs, 3)?, c)?;
            let v = vec1(node, get(node, inputs, 4)?, c)?;
            let xs = crate::tensor::to_contiguous(x);
            for ci in 0..c {
                let is = 1.0 / (v[ci] + eps).sqrt();
                for ni in 0..n {
                    let r = (ni * c + ci) * sp..(ni * c + ci + 1) * sp;
                    for k in r {
                        dx[k] = dys[k] * s[ci] * is;
                        ds[ci] += dys[k] * (xs[k] - m[ci]) * is;
                        dbias[ci] += dys[k];
                    }
                }
            }
        }
    }
    let t = |v: Vec<f32>, sh: &[usize]| {
        Tensor::from_shape_vec(IxDyn(sh), v).map_err(|e| Error::Invalid(e.to_string()))
    };
    Ok(vec![
        Some(t(dx, x.shape())?),
        Some(t(ds, &[c])?),
        Some(t(dbias, &[c])?),
        None,
        None,
    ])
}

/// `(outer, inner)` of a layer norm: rows before `axis`, normalised elements per row.
fn ln_split(node: &Node, axis: i64, s: &[usize]) -> Result<(usize, usize, usize)> {
    let a = super::norm_axis(node, axis, s.len(), "axis")?;
    Ok((a, s[..a].iter().product(), s[a..].iter().product()))
}

/// Output shapes of a layer norm: `Y`, then `Mean` and `InvStdDev` (size 1 from `axis` on).
pub(super) fn ln_shape(
    node: &Node,
    axis: i64,
    shapes: &[Option<&[usize]>],
) -> Result<Vec<Vec<usize>>> {
    let x = shapes
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Error::Graph(format!("node `{}` has no input", node.name)))?;
    let (a, _, _) = ln_split(node, axis, x)?;
    for p in shapes.iter().skip(1).flatten() {
        if super::broadcast_shape(&x[a..], p).as_deref() != Some(&x[a..]) {
            return Err(Error::shape(
                &node.name,
                "LayerNormalization",
                format!(
                    "scale and bias must broadcast to the normalised dims {:?}",
                    &x[a..]
                ),
                &[x, p],
            ));
        }
    }
    let mut stat = x.to_vec();
    stat[a..].iter_mut().for_each(|d| *d = 1);
    Ok(vec![x.to_vec(), stat.clone(), stat])
}

/// A scale or bias broadcast to the normalised dims, flattened.
fn ln_param(node: &Node, t: &Tensor, dims: &[usize]) -> Result<Vec<f32>> {
    let b = t.broadcast(IxDyn(dims)).ok_or_else(|| {
        Error::shape(
            &node.name,
            "LayerNormalization",
            format!("scale and bias must broadcast to the normalised dims {dims:?}"),
            &[t.shape()],
        )
    })?;
    Ok(b.iter().copied().collect())
}

/// Normalised input and `1/σ` per row.
fn ln_stats(x: &[f32], outer: usize, inner: usize, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut xhat = vec![0.0f32; x.len()];
    let mut mean = Vec::with_capacity(outer);
    let mut inv = Vec::with_capacity(outer);
    for r in 0..outer {
        let row = &x[r * inner..(r + 1) * inner];
        let m = row.iter().map(|&v| f64::from(v)).sum::<f64>() / inner.max(1) as f64;
        let var =
            row.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / inner.max(1) as f64;
        let is = 1.0 / (var + f64::from(eps)).sqrt();
        for (o, &v) in xhat[r * inner..(r + 1) * inner].iter_mut().zip(row) {
            *o = ((f64::from(v) - m) * is) as f32;
        }
        mean.push(m as f32);
        inv.push(is as f32);
    }
    (xhat, mean, inv)
}

/// Layer normalisation: `Y`, `Mean`, `InvStdDev`.
pub(super) fn layer_norm(
    node: &Node,
    axis: i64,
    eps: f32,
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Vec<Tensor>> {
    let s = x.shape();
    let (a, outer, inner) = ln_split(node, axis, s)?;
    let g = ln_param(node, scale, &s[a..])?;
    let b = match bias {
        Some(b) => ln_param(node, b, &s[a..])?,
        None => vec![0.0; inner],
    };
    let xs = crate::tensor::to_contiguous(x);
    let (mut y, mean, inv) = ln_stats(&xs, outer, inner, eps);
    for row in y.chunks_mut(inner.max(1)) {
        for ((v, &gi), &bi) in row.iter_mut().zip(&g).zip(&b) {
            *v = *v * gi + bi;
        }
    }
    let mut stat = s.to_vec();
    stat[a..].iter_mut().for_each(|d| *d = 1);
    let mk = |shape: &[usize], v: Vec<f32>| {
        Tensor::from_shape_vec(IxDyn(shape), v).map_err(|e| Error::Invalid(e.to_string()))
    };
    Ok(vec![mk(s, y)?, mk(&stat, mean)?, mk(&stat, inv)?])
}

/// Gradients of `Y` for `[X, scale, bias?]` (statistics recomputed from `X`).
pub(super) fn layer_norm_backward(
    node: &Node,
    axis: i64,
    eps: f32,
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let s = x.shape();
    let (a, outer, inner) = ln_split(node, axis, s)?;
    let g = ln_param(node, scale, &s[a..])?;
    let xs = crate::tensor::to_contiguous(x);
    let gs = crate::tensor::to_contiguous(dy);
    let (xhat, _, inv) = ln_stats(&xs, outer, inner, eps);
    let mut dx = vec![0.0f32; xs.len()];
    let mut dxhat_x = vec![0.0f32; xs.len()];
    for (r, &is) in inv.iter().enumerate() {
        let span = r * inner..(r + 1) * inner;
        let (mut m1, mut m2) = (0.0f64, 0.0f64);
        for (k, i) in span.clone().enumerate() {
            let d = f64::from(gs[i] * g[k]);
            m1 += d;
            m2 += d * f64::from(xhat[i]);
        }
        m1 /= inner.max(1) as f64;
        m2 /= inner.max(1) as f64;
        for (k, i) in span.enumerate() {
            let d = f64::from(gs[i] * g[k]);
            dx[i] = (f64::from(is) * (d - m1 - f64::from(xhat[i]) * m2)) as f32;
            dxhat_x[i] = gs[i] * xhat[i];
        }
    }
    let mk = |v: Vec<f32>| {
        Tensor::from_shape_vec(IxDyn(s), v).map_err(|e| Error::Invalid(e.to_string()))
    };
    let dscale = super::reduce_to_shape(&mk(dxhat_x)?, scale.shape());
    let dbias = bias.map(|b| super::reduce_to_shape(dy, b.shape()));
    Ok(vec![Some(mk(dx)?), Some(dscale), dbias])
}
