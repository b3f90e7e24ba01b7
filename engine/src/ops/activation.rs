//! Sigmoid, softmax and log-softmax.

use super::norm_axis;
use crate::graph::Node;
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::IxDyn;

pub(crate) fn sigmoid(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// Splits a shape into (outer, len, inner) for a reduction along `axis`, or along all trailing
/// dims from `axis` for opset < 13 semantics.
fn layout(
    node: &Node,
    shape: &[usize],
    axis: i64,
    coerce_2d: bool,
) -> Result<(usize, usize, usize)> {
    let a = norm_axis(node, axis, shape.len(), "axis")?;
    let outer: usize = shape[..a].iter().product();
    if coerce_2d {
        Ok((outer, shape[a..].iter().product(), 1))
    } else {
        Ok((outer, shape[a], shape[a + 1..].iter().product()))
    }
}

pub(super) fn softmax(
    node: &Node,
    x: &Tensor,
    axis: i64,
    coerce_2d: bool,
    log: bool,
) -> Result<Tensor> {
    let (outer, len, inner) = layout(node, x.shape(), axis, coerce_2d)?;
    let xs = crate::tensor::to_contiguous(x);
    let mut y = vec![0.0f32; xs.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let mx = (0..len)
                .map(|k| xs[at(k)])
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..len).map(|k| (xs[at(k)] - mx).exp()).sum();
            let lse = sum.ln();
            for k in 0..len {
                let z = xs[at(k)] - mx;
                y[at(k)] = if log { z - lse } else { z.exp() / sum };
            }
        }
    }
    Tensor::from_shape_vec(IxDyn(x.shape()), y).map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn softmax_backward(
    node: &Node,
    y: &Tensor,
    dy: &Tensor,
    axis: i64,
    coerce_2d: bool,
    log: bool,
) -> Result<Tensor> {
    let (outer, len, inner) = layout(node, y.shape(), axis, coerce_2d)?;
    let ys = crate::tensor::to_contiguous(y);
    let gs = crate::tensor::to_contiguous(dy);
    let mut dx = vec![0.0f32; ys.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            if log {
                let sg: f32 = (0..len).map(|k| gs[at(k)]).sum();
                for k in 0..len {
                    dx[at(k)] = gs[at(k)] - ys[at(k)].exp() * sg;
                }
            } else {
                let dot: f32 = (0..len).map(|k| gs[at(k)] * ys[at(k)]).sum();
                for k in 0..len {
                    dx[at(k)] = ys[at(k)] * (gs[at(k)] - dot);
                }
            }
        }
    }
    Tensor::from_shape_vec(IxDyn(y.shape()), dx).map_err(|e| Error::Invalid(e.to_string()))
}

/// `x` for `x ≥ 0`, `alpha·x` otherwise, and its derivative.
pub(crate) fn leaky_relu(alpha: f32, v: f32) -> (f32, f32) {
    if v >= 0.0 {
        (v, 1.0)
    } else {
        (alpha * v, alpha)
    }
}

/// `clamp(alpha·x + beta, 0, 1)` and its derivative (0 where clamped).
pub(super) fn hard_sigmoid(alpha: f32, beta: f32, v: f32) -> (f32, f32) {
    let z = alpha * v + beta;
    if z <= 0.0 {
        (0.0, 0.0)
    } else if z >= 1.0 {
        (1.0, 0.0)
    } else {
        (z, alpha)
    }
}

/// `x · clamp(x/6 + 1/2, 0, 1)` and its derivative.
pub(super) fn hard_swish(v: f32) -> (f32, f32) {
    let (h, dh) = hard_sigmoid(1.0 / 6.0, 0.5, v);
    (v * h, h + v * dh)
}

/// `sign(v)` (0 at 0, as ONNX `Sign`) and its straight-through derivative: 1 where `|v| ≤ 1`
/// (the derivative of hardtanh), 0 elsewhere.
pub(super) fn sign_ste(v: f32) -> (f32, f32) {
    let s = if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        v
    };
    (s, if v.abs() <= 1.0 { 1.0 } else { 0.0 })
}

/// `v` rounded half to even (as ONNX `Round`) and the straight-through derivative 1.
pub(super) fn round_ste(v: f32) -> (f32, f32) {
    (v.round_ties_even(), 1.0)
}

/// The error function, `|error| < 1.5e-7` (Abramowitz & Stegun 7.1.26, evaluated in f64).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let e = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 { e } else { -e }
}

/// GELU and its derivative: exact `x·Φ(x)` or the tanh approximation.
pub(super) fn gelu(tanh: bool, v: f32) -> (f32, f32) {
    let x = f64::from(v);
    let (y, d) = if tanh {
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let u = k * (x + 0.044_715 * x * x * x);
        let t = u.tanh();
        let du = k * (1.0 + 3.0 * 0.044_715 * x * x);
        (
            0.5 * x * (1.0 + t),
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du,
        )
    } else {
        let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        (x * cdf, cdf + x * pdf)
    };
    (y as f32, d as f32)
}
