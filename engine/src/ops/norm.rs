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
