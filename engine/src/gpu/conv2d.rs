//! 2-D convolution on the GPU (`conv2d.wgsl`): NCHW, stride, padding, dilation, groups
//! (depthwise included), optional bias and fused ReLU.

use super::context::{GpuContext, GpuTensor, Kernel, grid_1d, u32_of};
use crate::{Error, Result};

pub(crate) const WGSL: &str = include_str!("conv2d.wgsl");

/// The geometry of one convolution, padding already resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels (filters).
    pub m: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Padding before the first row and column (the end padding only shows in `out`).
    pub pads: [usize; 2],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
    /// Groups; `groups == c` is depthwise.
    pub groups: usize,
    /// Output height and width.
    pub out: [usize; 2],
    /// Apply `max(·, 0)` to the result.
    pub relu: bool,
}

impl ConvSpec {
    /// The geometry of [`crate::graph::ConvAttrs`] on an input and a weight shape (padding
    /// and output size as the CPU reference computes them).
    pub fn from_attrs(
        node: &crate::graph::Node,
        a: &crate::graph::ConvAttrs,
        x: &[usize],
        w: &[usize],
    ) -> Result<ConvSpec> {
        let g = crate::ops::conv::geometry(node, a, x, w)?;
        Ok(ConvSpec {
            n: g.n,
            c: g.c,
            h: g.h,
            w: g.w,
            m: g.m,
            kernel: [g.kh, g.kw],
            strides: [g.sh, g.sw],
            pads: [g.pt, g.pl],
            dilations: [g.dh, g.dw],
            groups: g.groups,
            out: [g.oh, g.ow],
            relu: false,
        })
    }
}

/// Convolves `x` (`[n, c, h, w]`) with `weight` (`[m, c/groups, kh, kw]`) plus `bias` (`[m]`).
pub fn conv2d(
    ctx: &GpuContext,
    s: &ConvSpec,
    x: &GpuTensor,
    weight: &GpuTensor,
    bias: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    if s.groups == 0 || !s.c.is_multiple_of(s.groups) || !s.m.is_multiple_of(s.groups) {
        return Err(Error::Invalid(format!(
            "{} channels and {} filters do not split into {} groups",
            s.c, s.m, s.groups
        )));
    }
    let want_w = [s.m, s.c / s.groups, s.kernel[0], s.kernel[1]];
    if x.shape() != [s.n, s.c, s.h, s.w] || weight.shape() != want_w {
        return Err(Error::Invalid(format!(
            "conv2d expects input {:?} and weight {want_w:?}, got {:?} and {:?}",
            [s.n, s.c, s.h, s.w],
            x.shape(),
            weight.shape()
        )));
    }
    if let Some(b) = bias
        && b.len() != s.m
    {
        return Err(Error::Invalid(format!(
            "conv2d bias must hold {} values, got {}",
            s.m,
            b.len()
        )));
    }
    let out = ctx.alloc(vec![s.n, s.m, s.out[0], s.out[1]], "conv2d output")?;
    let total = out.len();
    if total == 0 {
        return Ok(out);
    }
    let bias_buf = match bias {
        Some(t) => t.buffer.clone(),
        None => ctx.storage(1, "no bias")?,
    };
    let params = [
        u32_of(s.n, "batch")?,
        u32_of(s.c, "channels")?,
        u32_of(s.h, "height")?,
        u32_of(s.w, "width")?,
        u32_of(s.m, "filters")?,
        u32_of(s.kernel[0], "kernel")?,
        u32_of(s.kernel[1], "kernel")?,
        u32_of(s.out[0], "output height")?,
        u32_of(s.out[1], "output width")?,
        u32_of(s.pads[0], "padding")?,
        u32_of(s.pads[1], "padding")?,
        u32_of(s.strides[0], "stride")?,
        u32_of(s.strides[1], "stride")?,
        u32_of(s.dilations[0], "dilation")?,
        u32_of(s.dilations[1], "dilation")?,
        u32_of(s.groups, "groups")?,
        bias.is_some() as u32,
        s.relu as u32,
        u32_of(total, "output size")?,
    ];
    u32_of(x.len(), "input size")?;
    // Indices into the input are formed with i32 arithmetic in the shader.
    let reach = |o: usize, st: usize, k: usize, d: usize| (o * st + k * d) as u64;
    if reach(s.out[0], s.strides[0], s.kernel[0], s.dilations[0]) > i32::MAX as u64
        || reach(s.out[1], s.strides[1], s.kernel[1], s.dilations[1]) > i32::MAX as u64
    {
        return Err(Error::Invalid(
            "conv2d window reaches too far for the GPU kernel".into(),
        ));
    }
    ctx.dispatch(
        Kernel::Conv2d,
        &[&x.buffer, &weight.buffer, &bias_buf, &out.buffer],
        &params,
        grid_1d(total, 64)?,
    )?;
    Ok(out)
}
