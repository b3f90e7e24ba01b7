//! 2-D convolution (NCHW) by im2col + GEMM, with groups (depthwise), stride, padding, dilation.

use crate::graph::{AutoPad, ConvAttrs, Node};
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2, IxDyn};

/// A sliding window over the two spatial axes (convolution or pooling).
pub(crate) struct Window {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

/// Resolves padding for spatial axis `axis` (0 = rows, 1 = columns) of an input of size
/// `input`: returns (pad_begin, pad_end, output size).
pub(crate) fn window_axis(
    node: &Node,
    op: &'static str,
    input: usize,
    win: &Window,
    axis: usize,
) -> Result<(usize, usize, usize)> {
    let (kernel, stride, dilation) = (win.kernel[axis], win.strides[axis], win.dilations[axis]);
    let pads = (win.pads[axis], win.pads[axis + 2]);
    let (auto, ceil_mode) = (win.auto_pad, win.ceil_mode);
    if stride == 0 || dilation == 0 || kernel == 0 {
        return Err(Error::Attribute {
            node: node.name.clone(),
            op,
            attr: "strides/dilations/kernel_shape",
            detail: "must be positive".into(),
        });
    }
    let eff = dilation * (kernel - 1) + 1;
    let (pb, pe) = match auto {
        AutoPad::NotSet => pads,
        AutoPad::Valid => (0, 0),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + eff).saturating_sub(input);
            if auto == AutoPad::SameUpper {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            }
        }
    };
    let padded = input + pb + pe;
    if padded < eff {
        return Err(Error::shape(
            &node.name,
            op,
            format!("window of extent {eff} does not fit padded input of size {padded}"),
            &[&[input], &[kernel]],
        ));
    }
    let mut out = if ceil_mode {
        (padded - eff).div_ceil(stride) + 1
    } else {
        (padded - eff) / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= input + pb {
        out -= 1;
    }
    Ok((pb, pe, out))
}

pub(crate) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub pt: usize,
    pub pl: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub groups: usize,
}

pub(crate) fn geometry(node: &Node, a: &ConvAttrs, sx: &[usize], sw: &[usize]) -> Result<Geometry> {
    if sx.len() != 4 || sw.len() != 4 {
        return Err(Error::shape(
            &node.name,
            "Conv",
            "input and weight must be 4-D (NCHW, MCkk)",
            &[sx, sw],
        ));
    }
    let (n, c, h, w) = (sx[0], sx[1], sx[2], sx[3]);
    let (m, cg, kh, kw) = (sw[0], sw[1], sw[2], sw[3]);
    let g = a.groups;
    if g == 0 || c % g != 0 || m % g != 0 || c / g != cg {
        return Err(Error::shape(
            &node.name,
            "Conv",
            format!("{c} input channels, {m} filters of {cg} channels and group={g} do not agree"),
            &[sx, sw],
        ));
    }
    if a.kernel != [kh, kw] {
        return Err(Error::shape(
            &node.name,
            "Conv",
            format!("kernel_shape {:?} differs from the weight", a.kernel),
            &[sx, sw],
        ));
    }
    let win = Window {
        kernel: [kh, kw],
        strides: a.strides,
        dilations: a.dilations,
        pads: a.pads,
        auto_pad: a.auto_pad,
        ceil_mode: false,
    };
    let (pt, _, oh) = window_axis(node, "Conv", h, &win, 0)?;
    let (pl, _, ow) = window_axis(node, "Conv", w, &win, 1)?;
    Ok(Geometry {
        n,
        c,
        h,
        w,
        m,
        kh,
        kw,
        oh,
        ow,
        pt,
        pl,
        sh: a.strides[0],
        sw: a.strides[1],
        dh: a.dilations[0],
        dw: a.dilations[1],
        groups: g,
    })
}

pub(crate) fn conv_shape(
    node: &Node,
    a: &ConvAttrs,
    sx: &[usize],
    sw: &[usize],
    sb: Option<&[usize]>,
) -> Result<Vec<usize>> {
    let g = geometry(node, a, sx, sw)?;
    if let Some(sb) = sb
        && sb != [g.m]
    {
        return Err(Error::shape(
            &node.name,
            "Conv",
            format!("bias must be [{}]", g.m),
            &[sx, sw, sb],
        ));
    }
    Ok(vec![g.n, g.m, g.oh, g.ow])
}

/// Fills `col` ([cg·kh·kw, n·oh·ow]) with the patches of channel group `grp`.
fn im2col(g: &Geometry, x: &[f32], grp: usize, col: &mut [f32]) {
    let cg = g.c / g.groups;
    let cols = g.n * g.oh * g.ow;
    for ci in 0..cg {
        let ch = grp * cg + ci;
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = (ci * g.kh + i) * g.kw + j;
                let dst = &mut col[row * cols..(row + 1) * cols];
                for n in 0..g.n {
                    let plane = &x[(n * g.c + ch) * g.h * g.w..][..g.h * g.w];
                    for oy in 0..g.oh {
                        let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
                        let out = &mut dst[(n * g.oh + oy) * g.ow..][..g.ow];
                        if iy < 0 || iy >= g.h as isize {
                            out.fill(0.0);
                            continue;
                        }
                        let src = &plane[iy as usize * g.w..][..g.w];
                        for (ox, o) in out.iter_mut().enumerate() {
                            let ix = (ox * g.sw + j * g.dw) as isize - g.pl as isize;
                            *o = if ix >= 0 && (ix as usize) < g.w {
                                src[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Adds the patches in `col` back into `dx` (the adjoint of [`im2col`]).
fn col2im(g: &Geometry, col: &[f32], grp: usize, dx: &mut [f32]) {
    let cg = g.c / g.groups;
    let cols = g.n * g.oh * g.ow;
    for ci in 0..cg {
        let ch = grp * cg + ci;
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = (ci * g.kh + i) * g.kw + j;
                let src = &col[row * cols..(row + 1) * cols];
                for n in 0..g.n {
                    let plane = &mut dx[(n * g.c + ch) * g.h * g.w..][..g.h * g.w];
                    for oy in 0..g.oh {
                        let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let s = &src[(n * g.oh + oy) * g.ow..][..g.ow];
                        for (ox, v) in s.iter().enumerate() {
                            let ix = (ox * g.sw + j * g.dw) as isize - g.pl as isize;
                            if ix >= 0 && (ix as usize) < g.w {
                                plane[iy as usize * g.w + ix as usize] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Size of the im2col patch matrix, refused above the tensor element limit.
pub(crate) fn check_elems(rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols)
        .filter(|&n| n <= crate::graph::limits::MAX_TENSOR_ELEMENTS)
        .ok_or(Error::Limit {
            what: "convolution patch matrix",
            got: (rows as u64).saturating_mul(cols as u64),
            limit: crate::graph::limits::MAX_TENSOR_ELEMENTS as u64,
        })
}

pub(super) fn conv(
    node: &Node,
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    conv_shape(node, a, x.shape(), w.shape(), b.map(|b| b.shape()))?;
    let g = geometry(node, a, x.shape(), w.shape())?;
    let xs = crate::tensor::to_contiguous(x);
    let ws = crate::tensor::to_contiguous(w);
    let cg = g.c / g.groups;
    let mg = g.m / g.groups;
    let krows = cg * g.kh * g.kw;
    let cols = g.n * g.oh * g.ow;
    let mut col = vec![0.0f32; check_elems(krows, cols)?];
    let mut y = vec![0.0f32; g.n * g.m * g.oh * g.ow];
    let plane = g.oh * g.ow;
    for grp in 0..g.groups {
        im2col(&g, &xs, grp, &mut col);
        let colv = ArrayView2::from_shape((krows, cols), &col)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let wg = ArrayView2::from_shape((mg, krows), &ws[grp * mg * krows..(grp + 1) * mg * krows])
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let yg: Array2<f32> = wg.dot(&colv);
        for mi in 0..mg {
            let oc = grp * mg + mi;
            let bias = b.map_or(0.0, |b| b[[oc]]);
            let row = yg.row(mi);
            let row = row.as_slice().unwrap_or(&[]);
            for n in 0..g.n {
                let dst = &mut y[(n * g.m + oc) * plane..][..plane];
                for (d, s) in dst.iter_mut().zip(&row[n * plane..(n + 1) * plane]) {
                    *d = s + bias;
                }
            }
        }
    }
    Tensor::from_shape_vec(IxDyn(&[g.n, g.m, g.oh, g.ow]), y)
        .map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn conv_backward(
    node: &Node,
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let g = geometry(node, a, x.shape(), w.shape())?;
    let xs = crate::tensor::to_contiguous(x);
    let ws = crate::tensor::to_contiguous(w);
    let dys = crate::tensor::to_contiguous(dy);
    let cg = g.c / g.groups;
    let mg = g.m / g.groups;
    let krows = cg * g.kh * g.kw;
    let cols = g.n * g.oh * g.ow;
    let plane = g.oh * g.ow;
    let mut col = vec![0.0f32; check_elems(krows, cols)?];
    let mut dx = vec![0.0f32; x.len()];
    let mut dw = vec![0.0f32; w.len()];
    let mut dyg = vec![0.0f32; mg * cols];
    for grp in 0..g.groups {
        // Gather dY of this group as [mg, n·oh·ow].
        for mi in 0..mg {
            let oc = grp * mg + mi;
            for n in 0..g.n {
                dyg[mi * cols + n * plane..][..plane]
                    .copy_from_slice(&dys[(n * g.m + oc) * plane..][..plane]);
            }
        }
        im2col(&g, &xs, grp, &mut col);
        let colv = ArrayView2::from_shape((krows, cols), &col)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let dyv =
            ArrayView2::from_shape((mg, cols), &dyg).map_err(|e| Error::Invalid(e.to_string()))?;
        let dwg = dyv.dot(&colv.t());
        dw[grp * mg * krows..(grp + 1) * mg * krows]
            .copy_from_slice(dwg.as_standard_layout().as_slice().unwrap_or(&[]));
        let wg = ArrayView2::from_shape((mg, krows), &ws[grp * mg * krows..(grp + 1) * mg * krows])
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let dcol = wg.t().dot(&dyv);
        col2im(
            &g,
            dcol.as_standard_layout().as_slice().unwrap_or(&[]),
            grp,
            &mut dx,
        );
    }
    let db = has_bias.then(|| {
        let mut db = vec![0.0f32; g.m];
        for n in 0..g.n {
            for (oc, acc) in db.iter_mut().enumerate() {
                *acc += dys[(n * g.m + oc) * plane..][..plane].iter().sum::<f32>();
            }
        }
        Tensor::from_shape_vec(IxDyn(&[g.m]), db).unwrap_or_else(|_| crate::tensor::zeros(&[g.m]))
    });
    Ok(vec![
        Some(
            Tensor::from_shape_vec(IxDyn(x.shape()), dx)
                .map_err(|e| Error::Invalid(e.to_string()))?,
        ),
        Some(
            Tensor::from_shape_vec(IxDyn(w.shape()), dw)
                .map_err(|e| Error::Invalid(e.to_string()))?,
        ),
        db,
    ])
}
