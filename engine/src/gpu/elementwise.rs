//! Elementwise ops on the GPU (`elementwise.wgsl`): activations, and add / sub / mul / div with
//! numpy broadcasting (a bias over channels, a scalar, a row) up to rank 6.

use super::context::{GpuContext, GpuTensor, Kernel, grid_1d, u32_of};
use crate::{Error, Result};

pub(crate) const WGSL: &str = include_str!("elementwise.wgsl");

/// Highest rank the broadcasting kernel handles.
pub const MAX_RANK: usize = 6;

/// A one-input activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)`.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x` for `x ≥ 0`, `alpha·x` otherwise.
    LeakyRelu {
        /// Slope of the negative part.
        alpha: f32,
    },
}

/// A two-input arithmetic op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
}

/// Applies an activation to every element.
pub fn unary(ctx: &GpuContext, op: Unary, x: &GpuTensor) -> Result<GpuTensor> {
    let out = ctx.alloc(x.shape().to_vec(), "elementwise output")?;
    let total = out.len();
    if total == 0 {
        return Ok(out);
    }
    let (code, alpha, beta) = match op {
        Unary::Relu => (0, 0.0, 0.0),
        Unary::Clip { min, max } => (1, min, max),
        Unary::Sigmoid => (2, 0.0, 0.0),
        Unary::Tanh => (3, 0.0, 0.0),
        Unary::LeakyRelu { alpha } => (4, alpha, 0.0),
    };
    let params = [
        code,
        u32_of(total, "size")?,
        f32::to_bits(alpha),
        f32::to_bits(beta),
    ];
    ctx.dispatch(
        Kernel::Unary,
        &[&x.buffer, &out.buffer],
        &params,
        grid_1d(total, 64)?,
    )?;
    Ok(out)
}

/// Row-major strides of `shape` read as broadcast to `out` (0 along broadcast axes), with
/// `shape` right-aligned to `out`'s rank.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Result<Vec<usize>> {
    let off = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let d = shape[i];
        if d != 1 && d != out[off + i] {
            return Err(Error::Invalid(format!(
                "shape {shape:?} does not broadcast to {out:?}"
            )));
        }
        strides[off + i] = if d == 1 { 0 } else { s };
        s *= d;
    }
    Ok(strides)
}

/// `a (op) b` with numpy broadcasting.
pub fn binary(ctx: &GpuContext, op: Binary, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    let shape = crate::ops::broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
        Error::Invalid(format!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        ))
    })?;
    if shape.len() > MAX_RANK {
        return Err(Error::Invalid(format!(
            "the GPU elementwise kernel handles rank up to {MAX_RANK}, got {}",
            shape.len()
        )));
    }
    let sa = broadcast_strides(a.shape(), &shape)?;
    let sb = broadcast_strides(b.shape(), &shape)?;
    let out = ctx.alloc(shape.clone(), "elementwise output")?;
    let total = out.len();
    if total == 0 {
        return Ok(out);
    }
    let mut params = vec![op as u32, u32_of(total, "size")?, shape.len() as u32, 0];
    for v in [&shape, &sa, &sb] {
        let mut words = [0u32; 8];
        for (w, &d) in words.iter_mut().zip(v.iter()) {
            *w = u32_of(d, "dimension")?;
        }
        params.extend_from_slice(&words);
    }
    ctx.dispatch(
        Kernel::Binary,
        &[&a.buffer, &b.buffer, &out.buffer],
        &params,
        grid_1d(total, 64)?,
    )?;
    Ok(out)
}
