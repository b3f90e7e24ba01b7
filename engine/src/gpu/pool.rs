//! Max and average pooling on the GPU (`pool.wgsl`), with the CPU reference's padding,
//! `ceil_mode` and `count_include_pad` rules; GlobalAveragePool is the whole-image window.

use super::context::{GpuContext, GpuTensor, Kernel, grid_1d, u32_of};
use crate::graph::{Node, PoolAttrs};
use crate::ops::conv::{Window, window_axis};
use crate::{Error, Result};

pub(crate) const WGSL: &str = include_str!("pool.wgsl");

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Largest value of the window.
    Max,
    /// Mean of the window.
    Average {
        /// Divide by the window size inside the padded input, not only inside the input.
        count_include_pad: bool,
    },
}

/// The geometry of one pooling, padding resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// Max or average.
    pub kind: PoolKind,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Vertical and horizontal dilation (max pooling only, as in the reference).
    pub dilations: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Output height and width.
    pub out: [usize; 2],
}

impl PoolSpec {
    /// The geometry of a MaxPool or AveragePool node on an NCHW input shape.
    pub fn from_attrs(node: &Node, a: &PoolAttrs, kind: PoolKind, x: &[usize]) -> Result<Self> {
        if x.len() != 4 {
            return Err(Error::shape(
                &node.name,
                node.op.name(),
                "input must be 4-D (NCHW)",
                &[x],
            ));
        }
        let win = Window {
            kernel: a.kernel,
            strides: a.strides,
            dilations: a.dilations,
            pads: a.pads,
            auto_pad: a.auto_pad,
            ceil_mode: a.ceil_mode,
        };
        let (pt, pb, oh) = window_axis(node, node.op.name(), x[2], &win, 0)?;
        let (pl, pr, ow) = window_axis(node, node.op.name(), x[3], &win, 1)?;
        Ok(PoolSpec {
            kind,
            kernel: a.kernel,
            strides: a.strides,
            dilations: a.dilations,
            pads: [pt, pl, pb, pr],
            out: [oh, ow],
        })
    }

    /// GlobalAveragePool of an `[n, c, h, w]` input.
    pub fn global_average(x: &[usize]) -> Self {
        let (h, w) = (
            x.get(2).copied().unwrap_or(1),
            x.get(3).copied().unwrap_or(1),
        );
        PoolSpec {
            kind: PoolKind::Average {
                count_include_pad: false,
            },
            kernel: [h, w],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [0; 4],
            out: [1, 1],
        }
    }
}

/// Pools `x` (`[n, c, h, w]`) into `[n, c, out_h, out_w]`.
pub fn pool(ctx: &GpuContext, s: &PoolSpec, x: &GpuTensor) -> Result<GpuTensor> {
    let [n, c, h, w] = match x.shape() {
        [n, c, h, w] => [*n, *c, *h, *w],
        other => {
            return Err(Error::Invalid(format!(
                "pooling needs a 4-D NCHW input, got {other:?}"
            )));
        }
    };
    if s.kernel.contains(&0) || s.strides.contains(&0) || s.dilations.contains(&0) {
        return Err(Error::Invalid(
            "pooling kernel, strides and dilations must be positive".into(),
        ));
    }
    let out = ctx.alloc(vec![n, c, s.out[0], s.out[1]], "pool output")?;
    let total = out.len();
    if total == 0 {
        return Ok(out);
    }
    let (is_max, cip) = match s.kind {
        PoolKind::Max => (1, 0),
        PoolKind::Average { count_include_pad } => (0, count_include_pad as u32),
    };
    let params = [
        u32_of(n * c, "batch x channels")?,
        u32_of(h, "height")?,
        u32_of(w, "width")?,
        u32_of(s.out[0], "output height")?,
        u32_of(s.out[1], "output width")?,
        u32_of(s.kernel[0], "kernel")?,
        u32_of(s.kernel[1], "kernel")?,
        u32_of(s.strides[0], "stride")?,
        u32_of(s.strides[1], "stride")?,
        u32_of(s.dilations[0], "dilation")?,
        u32_of(s.dilations[1], "dilation")?,
        u32_of(s.pads[0], "padding")?,
        u32_of(s.pads[1], "padding")?,
        u32_of(s.pads[2], "padding")?,
        u32_of(s.pads[3], "padding")?,
        is_max,
        cip,
        u32_of(total, "output size")?,
    ];
    let reach = |o: usize, st: usize, k: usize, d: usize, p: usize| (o * st + k * d + p) as u64;
    if reach(
        s.out[0],
        s.strides[0],
        s.kernel[0],
        s.dilations[0],
        h + s.pads[2],
    ) > i32::MAX as u64
        || reach(
            s.out[1],
            s.strides[1],
            s.kernel[1],
            s.dilations[1],
            w + s.pads[3],
        ) > i32::MAX as u64
    {
        return Err(Error::Invalid(
            "pooling window reaches too far for the GPU kernel".into(),
        ));
    }
    u32_of(x.len(), "input size")?;
    ctx.dispatch(
        Kernel::Pool,
        &[&x.buffer, &out.buffer],
        &params,
        grid_1d(total, 64)?,
    )?;
    Ok(out)
}
