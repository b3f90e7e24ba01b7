//! Planned convolutions (NCHW, f32): the filters packed once.
//!
//! - [`PackedConv`]: per image and channel group, an im2col that writes the patches straight
//!   into the GEMM's column panels, then the filters (packed once as `A`, [`PackedA`]) times the
//!   panels, written in place into the output (`C = W · col` is already `[M, oh·ow]`, NCHW).
//! - [`depthwise`]: one input channel per group (MobileNet's 3×3): a direct loop over each
//!   filter tap, contiguous along the output row when the stride is 1, so it vectorizes.
//!
//! Both give the reference ([`crate::ops`]'s im2col + GEMM) up to summation order; the plan's
//! tests compare them on every zoo model and on odd geometries.

use crate::graph::{ConvAttrs, Node};
use crate::kernels::prepacked::PackedA;
use crate::kernels::{KernelKind, copy_short};
use crate::ops::conv::{Geometry, check_elems, conv_shape, geometry};
use crate::tensor::Tensor;
use crate::{Error, Result};
use ndarray::IxDyn;

/// A convolution's filters packed once, one [`PackedA`] per channel group.
#[derive(Clone, Debug)]
pub(crate) struct PackedConv {
    groups: Vec<PackedA>,
}

impl PackedConv {
    /// Packs the `[M, C/g, kh, kw]` filters `w` for `kind`.
    pub(crate) fn new(kind: KernelKind, groups: usize, w: &Tensor) -> Result<PackedConv> {
        let s = w.shape();
        if s.len() != 4 || groups == 0 || !s[0].is_multiple_of(groups) {
            return Err(Error::Invalid(format!(
                "conv: filters of shape {s:?} do not split into {groups} groups"
            )));
        }
        let mg = s[0] / groups;
        let krows = s[1] * s[2] * s[3];
        let data = crate::tensor::to_contiguous(w);
        let groups = (0..groups)
            .map(|g| PackedA::new(kind, mg, krows, &data[g * mg * krows..(g + 1) * mg * krows]))
            .collect::<Result<Vec<_>>>()?;
        Ok(PackedConv { groups })
    }

    /// `Conv(x, W, b)` with the packed `W` (`w` is the same tensor, for its shape checks), then
    /// the fused activation.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        node: &Node,
        a: &ConvAttrs,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        act: Option<super::Act>,
        pool: &mut super::Pool,
    ) -> Result<Tensor> {
        conv_shape(node, a, x.shape(), w.shape(), b.map(|b| b.shape()))?;
        let g = geometry(node, a, x.shape(), w.shape())?;
        if g.groups != self.groups.len() {
            return Err(Error::Invalid(format!(
                "conv `{}`: planned for {} groups, the node has {}",
                node.name,
                self.groups.len(),
                g.groups
            )));
        }
        let xs = crate::tensor::to_contiguous(x);
        let plane = g.oh * g.ow;
        let cg = g.c / g.groups;
        let mg = g.m / g.groups;
        let krows = cg * g.kh * g.kw;
        check_elems(krows, plane)?;
        let mut y = pool.take(check_elems(g.n * g.m, plane)?);
        let mut panels = pool.take(0);
        for n in 0..g.n {
            for (grp, pa) in self.groups.iter().enumerate() {
                panels.resize(pa.panels_len(plane), 0.0);
                im2col_panels(&g, &xs, n, grp, pa.nr(), &mut panels);
                let out = &mut y[(n * g.m + grp * mg) * plane..][..mg * plane];
                pa.matmul_panels(plane, &panels, out)?;
            }
        }
        finish(&mut y, b, g.m, plane, act);
        pool.keep(panels);
        Tensor::from_shape_vec(IxDyn(&[g.n, g.m, g.oh, g.ow]), y)
            .map_err(|e| Error::Invalid(e.to_string()))
    }
}

/// Adds the per-channel bias and applies the fused activation, one output plane at a time
/// (while the plane is in cache).
fn finish(y: &mut [f32], b: Option<&Tensor>, m: usize, plane: usize, act: Option<super::Act>) {
    if plane == 0 || m == 0 {
        return;
    }
    let b = b.map(crate::tensor::to_contiguous);
    for (i, out) in y.chunks_exact_mut(plane).enumerate() {
        if let Some(b) = &b
            && let Some(&v) = b.get(i % m)
        {
            out.iter_mut().for_each(|o| *o += v);
        }
        if let Some(act) = act {
            act.apply(out);
        }
    }
}

/// The patches of image `n`, group `grp`, as `krows × plane` (row `(ci·kh + i)·kw + j`,
/// column `oy·ow + ox`) — in panels of width `nr` (`ceil(plane/nr)` blocks of `krows` rows of
/// `nr` values, zero-padded), or row-major when `nr` is `None`. `out` has the right length.
fn im2col_panels(
    g: &Geometry,
    x: &[f32],
    n: usize,
    grp: usize,
    nr: Option<usize>,
    out: &mut [f32],
) {
    match nr {
        Some(8) => im2col_fixed::<8>(g, x, n, grp, out),
        Some(16) => im2col_fixed::<16>(g, x, n, grp, out),
        Some(nr) => im2col_any(g, x, n, grp, nr, g.c / g.groups * g.kh * g.kw * nr, nr, out),
        // Row-major is one "panel" as wide as the plane.
        None => {
            let plane = g.oh * g.ow;
            im2col_any(g, x, n, grp, plane.max(1), 0, plane, out)
        }
    }
}

/// The patch value of row `(ci, i, j)` at output position `(oy, ox)` (0 in the padding).
#[inline(always)]
fn patch(g: &Geometry, src: &[f32], i: usize, j: usize, oy: usize, ox: usize) -> f32 {
    let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
    let ix = (ox * g.sw + j * g.dw) as isize - g.pl as isize;
    if iy >= 0 && (iy as usize) < g.h && ix >= 0 && (ix as usize) < g.w {
        src[iy as usize * g.w + ix as usize]
    } else {
        0.0
    }
}

/// [`im2col_panels`] for `NR`-wide panels. A panel whose `NR` positions lie in one output row
/// and, at stride 1, in one input row inside the image is one fixed-size copy (vector loads and
/// stores; no `memory.copy` in wasm); the others are gathered value by value.
fn im2col_fixed<const NR: usize>(g: &Geometry, x: &[f32], n: usize, grp: usize, out: &mut [f32]) {
    let cg = g.c / g.groups;
    let krows = cg * g.kh * g.kw;
    let plane = g.oh * g.ow;
    let panels = plane.div_ceil(NR);
    for ci in 0..cg {
        let ch = grp * cg + ci;
        let src = &x[(n * g.c + ch) * g.h * g.w..][..g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let r = (ci * g.kh + i) * g.kw + j;
                for q in 0..panels {
                    let p0 = q * NR;
                    let (oy, ox0) = (p0 / g.ow, p0 % g.ow);
                    let at = q * krows * NR + r * NR;
                    let dst: &mut [f32; NR] = match (&mut out[at..at + NR]).try_into() {
                        Ok(d) => d,
                        Err(_) => return,
                    };
                    let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
                    let ix0 = (ox0 + j * g.dw) as isize - g.pl as isize;
                    if g.sw == 1
                        && ox0 + NR <= g.ow
                        && iy >= 0
                        && (iy as usize) < g.h
                        && ix0 >= 0
                        && ix0 as usize + NR <= g.w
                    {
                        let s = iy as usize * g.w + ix0 as usize;
                        if let Ok(v) = <&[f32; NR]>::try_from(&src[s..s + NR]) {
                            *dst = *v;
                        }
                        continue;
                    }
                    fill_panel(g, src, i, j, p0, dst);
                }
            }
        }
    }
}

/// The `dst.len()` patch values of row `(·, i, j)` from output position `p0` on, one output row
/// segment at a time: inside the image at stride 1 a segment is one copy, the padding zeros.
fn fill_panel(g: &Geometry, src: &[f32], i: usize, j: usize, p0: usize, dst: &mut [f32]) {
    let plane = g.oh * g.ow;
    let (lo, hi) = valid_cols(g, j);
    let mut t = 0;
    while t < dst.len() {
        let p = p0 + t;
        if p >= plane {
            dst[t..].fill(0.0);
            return;
        }
        let (oy, ox) = (p / g.ow, p % g.ow);
        let len = (dst.len() - t).min(g.ow - ox);
        let seg = &mut dst[t..t + len];
        let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
        if iy < 0 || iy as usize >= g.h {
            seg.fill(0.0);
        } else if g.sw == 1 {
            // Output columns ox..ox+len; those in lo..hi read the image.
            let a = lo.clamp(ox, ox + len);
            let b = hi.clamp(a, ox + len);
            seg[..a - ox].fill(0.0);
            seg[b - ox..].fill(0.0);
            if a < b {
                let first = iy as usize * g.w + a + j * g.dw - g.pl;
                copy_short(&mut seg[a - ox..b - ox], &src[first..first + (b - a)]);
            }
        } else {
            for (k, d) in seg.iter_mut().enumerate() {
                *d = patch(g, src, i, j, oy, ox + k);
            }
        }
        t += len;
    }
}

/// [`im2col_panels`] value by value: panels of width `nr`, `block` values apart, each patch
/// row `row_stride` values apart within a panel.
#[allow(clippy::too_many_arguments)]
fn im2col_any(
    g: &Geometry,
    x: &[f32],
    n: usize,
    grp: usize,
    nr: usize,
    block: usize,
    row_stride: usize,
    out: &mut [f32],
) {
    let cg = g.c / g.groups;
    for ci in 0..cg {
        let ch = grp * cg + ci;
        let src = &x[(n * g.c + ch) * g.h * g.w..][..g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let base = ((ci * g.kh + i) * g.kw + j) * row_stride;
                let (mut q, mut t) = (0usize, 0usize);
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        out[q * block + base + t] = patch(g, src, i, j, oy, ox);
                        t += 1;
                        if t == nr {
                            t = 0;
                            q += 1;
                        }
                    }
                }
            }
        }
    }
}

/// The output columns `lo..hi` whose input column `ox·sw + j·dw − pl` lies inside the image.
fn valid_cols(g: &Geometry, j: usize) -> (usize, usize) {
    let off = (j * g.dw) as isize - g.pl as isize;
    let lo = if off >= 0 { 0 } else { (-off) as usize }.div_ceil(g.sw);
    let lim = g.w as isize - off; // need ox·sw < lim
    let hi = if lim <= 0 {
        0
    } else {
        (lim as usize).div_ceil(g.sw).min(g.ow)
    };
    (lo.min(hi), hi)
}

/// Whether a convolution with filters of shape `w` and `groups` has one input channel per group
/// (depthwise, with any channel multiplier).
pub(crate) fn is_depthwise(w: &[usize], groups: usize) -> bool {
    w.len() == 4 && w[1] == 1 && groups > 1
}

/// A depthwise convolution (one input channel per group) by direct loops.
pub(crate) fn depthwise(
    node: &Node,
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<super::Act>,
    pool: &mut super::Pool,
) -> Result<Tensor> {
    conv_shape(node, a, x.shape(), w.shape(), b.map(|b| b.shape()))?;
    let g = geometry(node, a, x.shape(), w.shape())?;
    if g.c / g.groups != 1 {
        return Err(Error::Invalid(format!(
            "conv `{}`: the depthwise kernel needs one input channel per group",
            node.name
        )));
    }
    let xs = crate::tensor::to_contiguous(x);
    let ws = crate::tensor::to_contiguous(w);
    let plane = g.oh * g.ow;
    let mg = g.m / g.groups;
    let taps = g.kh * g.kw;
    let mut y = pool.take(check_elems(g.n * g.m, plane)?);
    for n in 0..g.n {
        for oc in 0..g.m {
            let ch = oc / mg;
            let src = &xs[(n * g.c + ch) * g.h * g.w..][..g.h * g.w];
            let out = &mut y[(n * g.m + oc) * plane..][..plane];
            let wk = &ws[oc * taps..(oc + 1) * taps];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let wv = wk[i * g.kw + j];
                    let (lo, hi) = valid_cols(&g, j);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..g.oh {
                        let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let in_row = &src[iy as usize * g.w..][..g.w];
                        let o = &mut out[oy * g.ow + lo..oy * g.ow + hi];
                        let first = lo * g.sw + j * g.dw - g.pl;
                        if g.sw == 1 {
                            for (d, s) in o.iter_mut().zip(&in_row[first..first + (hi - lo)]) {
                                *d += wv * s;
                            }
                        } else {
                            for (t, d) in o.iter_mut().enumerate() {
                                *d += wv * in_row[first + t * g.sw];
                            }
                        }
                    }
                }
            }
        }
    }
    finish(&mut y, b, g.m, plane, act);
    Tensor::from_shape_vec(IxDyn(&[g.n, g.m, g.oh, g.ow]), y)
        .map_err(|e| Error::Invalid(e.to_string()))
}
