//! Max, average and global average pooling (NCHW).

use super::conv::{Window, window_axis};
use crate::graph::{Node, PoolAttrs};
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::IxDyn;

struct PoolGeo {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    pt: usize,
    pl: usize,
    pb: usize,
    pr: usize,
}

fn geo(node: &Node, a: &PoolAttrs, s: &[usize]) -> Result<PoolGeo> {
    let op = node.op.name();
    if s.len() != 4 {
        return Err(Error::shape(
            &node.name,
            op,
            "input must be 4-D (NCHW)",
            &[s],
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
    let (pt, pb, oh) = window_axis(node, op, s[2], &win, 0)?;
    let (pl, pr, ow) = window_axis(node, op, s[3], &win, 1)?;
    Ok(PoolGeo {
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
        oh,
        ow,
        pt,
        pl,
        pb,
        pr,
    })
}

pub(super) fn pool_shape(node: &Node, a: &PoolAttrs, s: &[usize]) -> Result<Vec<usize>> {
    let g = geo(node, a, s)?;
    Ok(vec![g.n, g.c, g.oh, g.ow])
}

pub(super) fn global_shape(node: &Node, s: &[usize]) -> Result<Vec<usize>> {
    if s.len() < 3 {
        return Err(Error::shape(
            &node.name,
            node.op.name(),
            "input must have spatial dims",
            &[s],
        ));
    }
    let mut o = s.to_vec();
    o[2..].iter_mut().for_each(|d| *d = 1);
    Ok(o)
}

/// Max pooling; also returns the flat input index chosen by each output (for the backward).
pub(super) fn max_pool(node: &Node, a: &PoolAttrs, x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let g = geo(node, a, x.shape())?;
    let xs = crate::tensor::to_contiguous(x);
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    let mut idx = Vec::with_capacity(y.capacity());
    for nc in 0..g.n * g.c {
        let base = nc * g.h * g.w;
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut best = f32::NEG_INFINITY;
                let mut bi = usize::MAX;
                for i in 0..a.kernel[0] {
                    let iy = (oy * a.strides[0] + i * a.dilations[0]) as isize - g.pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for j in 0..a.kernel[1] {
                        let ix = (ox * a.strides[1] + j * a.dilations[1]) as isize - g.pl as isize;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        let k = base + iy as usize * g.w + ix as usize;
                        if xs[k] > best || bi == usize::MAX {
                            best = xs[k];
                            bi = k;
                        }
                    }
                }
                y.push(if bi == usize::MAX { 0.0 } else { best });
                idx.push(bi);
            }
        }
    }
    let t = Tensor::from_shape_vec(IxDyn(&[g.n, g.c, g.oh, g.ow]), y)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((t, idx))
}

pub(super) fn max_pool_backward(x: &Tensor, idx: &[usize], dy: &Tensor) -> Tensor {
    let mut dx = vec![0.0f32; x.len()];
    for (&i, &g) in idx.iter().zip(dy.iter()) {
        if let Some(d) = dx.get_mut(i) {
            *d += g;
        }
    }
    Tensor::from_shape_vec(IxDyn(x.shape()), dx).unwrap_or_else(|_| crate::tensor::zeros(x.shape()))
}

/// For each output position, the window's rows/cols inside the input and the divisor.
fn avg_windows(
    a: &PoolAttrs,
    g: &PoolGeo,
    oy: usize,
    ox: usize,
) -> ((usize, usize), (usize, usize), f32) {
    let y0 = (oy * a.strides[0]) as isize - g.pt as isize;
    let x0 = (ox * a.strides[1]) as isize - g.pl as isize;
    let y1 = y0 + a.kernel[0] as isize;
    let x1 = x0 + a.kernel[1] as isize;
    let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
    let (ys, ye) = (clip(y0, g.h), clip(y1, g.h));
    let (xs, xe) = (clip(x0, g.w), clip(x1, g.w));
    let div = if a.count_include_pad {
        let ph = (y1.min((g.h + g.pb) as isize) - y0.max(-(g.pt as isize))).max(0);
        let pw = (x1.min((g.w + g.pr) as isize) - x0.max(-(g.pl as isize))).max(0);
        (ph * pw) as f32
    } else {
        ((ye - ys) * (xe - xs)) as f32
    };
    ((ys, ye), (xs, xe), div.max(1.0))
}

pub(super) fn avg_pool(node: &Node, a: &PoolAttrs, x: &Tensor) -> Result<Tensor> {
    let g = geo(node, a, x.shape())?;
    let xs = crate::tensor::to_contiguous(x);
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    for nc in 0..g.n * g.c {
        let base = nc * g.h * g.w;
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let ((ys, ye), (x0, x1), div) = avg_windows(a, &g, oy, ox);
                let mut s = 0.0;
                for iy in ys..ye {
                    s += xs[base + iy * g.w + x0..base + iy * g.w + x1]
                        .iter()
                        .sum::<f32>();
                }
                y.push(s / div);
            }
        }
    }
    Tensor::from_shape_vec(IxDyn(&[g.n, g.c, g.oh, g.ow]), y)
        .map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn avg_pool_backward(
    node: &Node,
    a: &PoolAttrs,
    x: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let g = geo(node, a, x.shape())?;
    let dys = crate::tensor::to_contiguous(dy);
    let mut dx = vec![0.0f32; x.len()];
    let mut k = 0;
    for nc in 0..g.n * g.c {
        let base = nc * g.h * g.w;
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let ((ys, ye), (x0, x1), div) = avg_windows(a, &g, oy, ox);
                let v = dys[k] / div;
                k += 1;
                for iy in ys..ye {
                    dx[base + iy * g.w + x0..base + iy * g.w + x1]
                        .iter_mut()
                        .for_each(|d| *d += v);
                }
            }
        }
    }
    Tensor::from_shape_vec(IxDyn(x.shape()), dx).map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn global_avg_pool(node: &Node, x: &Tensor) -> Result<Tensor> {
    let out = global_shape(node, x.shape())?;
    let (nc, hw) = (
        x.shape()[0] * x.shape()[1],
        x.len() / (x.shape()[0] * x.shape()[1]).max(1),
    );
    let xs = crate::tensor::to_contiguous(x);
    let y: Vec<f32> = (0..nc)
        .map(|i| xs[i * hw..(i + 1) * hw].iter().sum::<f32>() / hw.max(1) as f32)
        .collect();
    Tensor::from_shape_vec(IxDyn(&out), y).map_err(|e| Error::Invalid(e.to_string()))
}

pub(super) fn global_avg_pool_backward(x: &Tensor, dy: &Tensor) -> Tensor {
    let nc = x.shape()[0] * x.shape()[1];
    let hw = x.len() / nc.max(1);
    let mut dx = vec![0.0f32; x.len()];
    for (i, &g) in dy.iter().enumerate().take(nc) {
        dx[i * hw..(i + 1) * hw].fill(g / hw.max(1) as f32);
    }
    Tensor::from_shape_vec(IxDyn(x.shape()), dx).unwrap_or_else(|_| crate::tensor::zeros(x.shape()))
}

/// Global max pooling; also returns the flat input index of each maximum (for the backward).
pub(super) fn global_max_pool(node: &Node, x: &Tensor) -> Result<(Tensor, Vec<usize>)> {
    let out = global_shape(node, x.shape())?;
    let nc = x.shape()[0] * x.shape()[1];
    let hw = x.len() / nc.max(1);
    let xs = crate::tensor::to_contiguous(x);
    let mut y = Vec::with_capacity(nc);
    let mut idx = Vec::with_capacity(nc);
    for i in 0..nc {
        let (mut best, mut bi) = (f32::NEG_INFINITY, i * hw);
        for (k, &v) in xs[i * hw..(i + 1) * hw].iter().enumerate() {
            // NaN propagates, like NumPy's max.
            if v > best || (v.is_nan() && !best.is_nan()) {
                best = v;
                bi = i * hw + k;
            }
        }
        y.push(best);
        idx.push(bi);
    }
    let y = Tensor::from_shape_vec(IxDyn(&out), y).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok((y, idx))
}

/// Max pooling for inference: the reference's result (the first largest value of each window,
/// rows then columns; 0 for a window wholly in the padding) without recording the argmax, each
/// window's valid rows and columns computed once. `out` is a buffer to reuse.
pub(crate) fn max_pool_eval(
    node: &Node,
    a: &PoolAttrs,
    x: &Tensor,
    mut out: Vec<f32>,
) -> Result<Tensor> {
    let g = geo(node, a, x.shape())?;
    let xs = crate::tensor::to_contiguous(x);
    let (kh, kw) = (a.kernel[0], a.kernel[1]);
    let (sh, sw) = (a.strides[0], a.strides[1]);
    let (dh, dw) = (a.dilations[0], a.dilations[1]);
    // Taps `lo..hi` of a window starting at `start` (may be negative) that land in `0..size`.
    let taps = |start: isize, k: usize, d: usize, size: usize| -> (usize, usize) {
        let lo = if start >= 0 {
            0
        } else {
            ((-start) as usize).div_ceil(d)
        };
        let lim = size as isize - start;
        let hi = if lim <= 0 {
            0
        } else {
            (lim as usize).div_ceil(d).min(k)
        };
        (lo.min(hi), hi)
    };
    let cols: Vec<(isize, usize, usize)> = (0..g.ow)
        .map(|ox| {
            let x0 = (ox * sw) as isize - g.pl as isize;
            let (lo, hi) = taps(x0, kw, dw, g.w);
            (x0, lo, hi)
        })
        .collect();
    out.clear();
    out.reserve(g.n * g.c * g.oh * g.ow);
    let simple_2x2 = a.kernel == [2, 2]
        && a.strides == [2, 2]
        && a.dilations == [1, 1]
        && g.pt == 0
        && g.pl == 0
        && 2 * g.oh <= g.h
        && 2 * g.ow <= g.w;
    if simple_2x2 {
        // The common 2×2 / stride-2 window inside the image: four values, in the order above.
        for nc in 0..g.n * g.c {
            let plane = &xs[nc * g.h * g.w..][..g.h * g.w];
            for oy in 0..g.oh {
                let r0 = &plane[2 * oy * g.w..][..2 * g.ow];
                let r1 = &plane[(2 * oy + 1) * g.w..][..2 * g.ow];
                for (a, b) in r0.chunks_exact(2).zip(r1.chunks_exact(2)) {
                    let mut m = a[0];
                    for v in [a[1], b[0], b[1]] {
                        if v > m {
                            m = v;
                        }
                    }
                    out.push(m);
                }
            }
        }
        return Tensor::from_shape_vec(IxDyn(&[g.n, g.c, g.oh, g.ow]), out)
            .map_err(|e| Error::Invalid(e.to_string()));
    }
    for nc in 0..g.n * g.c {
        let plane = &xs[nc * g.h * g.w..][..g.h * g.w];
        for oy in 0..g.oh {
            let y0 = (oy * sh) as isize - g.pt as isize;
            let (ilo, ihi) = taps(y0, kh, dh, g.h);
            for &(x0, jlo, jhi) in &cols {
                let mut best: Option<f32> = None;
                if ilo < ihi && jlo < jhi {
                    let x_first = (x0 + (jlo * dw) as isize) as usize;
                    for i in ilo..ihi {
                        let start = (y0 + (i * dh) as isize) as usize * g.w + x_first;
                        let row = &plane[start..start + (jhi - jlo - 1) * dw + 1];
                        let mut b = best.unwrap_or(row[0]);
                        for &v in row.iter().step_by(dw) {
                            if v > b {
                                b = v;
                            }
                        }
                        best = Some(b);
                    }
                }
                out.push(best.unwrap_or(0.0));
            }
        }
    }
    Tensor::from_shape_vec(IxDyn(&[g.n, g.c, g.oh, g.ow]), out)
        .map_err(|e| Error::Invalid(e.to_string()))
}
