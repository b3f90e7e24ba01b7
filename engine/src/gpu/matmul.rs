//! f32 matrix products on the GPU (`matmul.wgsl`): Gemm (transposes, alpha, beta, a bias that
//! broadcasts to `[M, N]`) and batched MatMul, with an optional fused ReLU.

use super::context::{GpuContext, GpuTensor, Kernel, u32_of};
use crate::{Error, Result};

pub(crate) const WGSL: &str = include_str!("matmul.wgsl");

/// Output tile edge of one workgroup (see the shader).
const TILE: usize = 64;

/// How one product is formed: `alpha · op(A) · op(B) + beta · bias`, then ReLU if asked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulSpec {
    /// Rows of `op(A)` and of the result.
    pub m: usize,
    /// Columns of `op(B)` and of the result.
    pub n: usize,
    /// The shared dimension.
    pub k: usize,
    /// Number of independent products (batch); the result is `[batch, m, n]` row-major.
    pub batch: usize,
    /// A is stored `[K, M]`.
    pub trans_a: bool,
    /// B is stored `[N, K]`.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the bias.
    pub beta: f32,
    /// A is one matrix shared by every batch.
    pub broadcast_a: bool,
    /// B is one matrix shared by every batch.
    pub broadcast_b: bool,
    /// Apply `max(·, 0)` to the result.
    pub relu: bool,
}

impl MatmulSpec {
    /// A plain `[m, k] × [k, n]` product.
    pub fn new(m: usize, k: usize, n: usize) -> Self {
        MatmulSpec {
            m,
            n,
            k,
            batch: 1,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
            broadcast_a: false,
            broadcast_b: false,
            relu: false,
        }
    }
}

/// Strides that read a bias of `shape` broadcast to `[m, n]`: `(row stride, column stride)`.
pub(crate) fn bias_strides(shape: &[usize], m: usize, n: usize) -> Result<(usize, usize)> {
    let bad = || {
        Error::Invalid(format!(
            "a bias of shape {shape:?} does not broadcast to [{m}, {n}]"
        ))
    };
    let (r, c) = match shape {
        [] => (1, 1),
        [c] => (1, *c),
        [r, c] => (*r, *c),
        _ => return Err(bad()),
    };
    if (r != 1 && r != m) || (c != 1 && c != n) {
        return Err(bad());
    }
    Ok((if r == 1 { 0 } else { c }, if c == 1 { 0 } else { 1 }))
}

/// Runs one (batched) product. `a` holds `batch` (or one, if broadcast) matrices stored as
/// `spec` says, `b` likewise; `bias` broadcasts to `[m, n]`. The result has shape `out_shape`
/// (whose element count must be `batch · m · n`).
pub fn matmul(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    out_shape: Vec<usize>,
) -> Result<GpuTensor> {
    let MatmulSpec { m, n, k, batch, .. } = *spec;
    let per_a = m * k;
    let per_b = k * n;
    let want_a = if spec.broadcast_a {
        per_a
    } else {
        per_a * batch
    };
    let want_b = if spec.broadcast_b {
        per_b
    } else {
        per_b * batch
    };
    if a.len() != want_a || b.len() != want_b {
        return Err(Error::Invalid(format!(
            "matmul {m}x{k}x{n} (batch {batch}) needs {want_a} and {want_b} values, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    let total = batch
        .checked_mul(m)
        .and_then(|v| v.checked_mul(n))
        .ok_or_else(|| Error::Invalid("matmul result too large".into()))?;
    if crate::tensor::checked_numel(&out_shape)? != total {
        return Err(Error::Invalid(format!(
            "matmul result shape {out_shape:?} does not hold {batch}x{m}x{n}"
        )));
    }
    let (rs, cs) = match bias {
        Some(t) => bias_strides(t.shape(), m, n)?,
        None => (0, 0),
    };
    let out = ctx.alloc(out_shape, "matmul output")?;
    if total == 0 {
        return Ok(out);
    }
    let params = [
        u32_of(m, "M")?,
        u32_of(n, "N")?,
        u32_of(k, "K")?,
        spec.trans_a as u32,
        spec.trans_b as u32,
        spec.alpha.to_bits(),
        spec.beta.to_bits(),
        bias.is_some() as u32,
        u32_of(rs, "bias stride")?,
        u32_of(cs, "bias stride")?,
        if spec.broadcast_a {
            0
        } else {
            u32_of(per_a, "A size")?
        },
        if spec.broadcast_b {
            0
        } else {
            u32_of(per_b, "B size")?
        },
        spec.relu as u32,
    ];
    u32_of(total, "result size")?;
    // The bias binding must exist even when unused (K = 0 leaves only the bias, or zeros).
    let bias_buf = match bias {
        Some(t) => t.buffer.clone(),
        None => ctx.storage(1, "no bias")?,
    };
    ctx.dispatch(
        Kernel::Matmul,
        &[&a.buffer, &b.buffer, &bias_buf, &out.buffer],
        &params,
        [
            u32_of(n.div_ceil(TILE), "column tiles")?,
            u32_of(m.div_ceil(TILE), "row tiles")?,
            u32_of(batch, "batch")?,
        ],
    )?;
    Ok(out)
}
