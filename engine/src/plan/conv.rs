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
use crate::kernels::depthwise::{DwPlane, OVERREAD};
use crate::kernels::prepacked::{PackedA, pack_panels_into};
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
        // A 1×1 convolution with stride 1 and no padding: each group's input channels already
        // are the `cg × plane` row-major `B`, packed straight into panels (or, for the scalar
        // twin, used as they are).
        let pointwise = g.kh == 1
            && g.kw == 1
            && g.sh == 1
            && g.sw == 1
            && g.pt == 0
            && g.pl == 0
            && g.oh == g.h
            && g.ow == g.w;
        let mut gather = if pointwise {
            None
        } else {
            Gather::new(&g).map(|gt| (gt, pool.take(0)))
        };
        for n in 0..g.n {
            for (grp, pa) in self.groups.iter().enumerate() {
                let out = &mut y[(n * g.m + grp * mg) * plane..][..mg * plane];
                if pointwise {
                    let src = &xs[(n * g.c + grp * cg) * plane..][..cg * plane];
                    match pa.nr() {
                        Some(nr) => {
                            panels.resize(pa.panels_len(plane), 0.0);
                            pack_panels_into(nr, cg, plane, src, &mut panels);
                            pa.matmul_panels(plane, &panels, out)?;
                        }
                        None => pa.matmul_panels(plane, src, out)?,
                    }
                    continue;
                }
                panels.resize(pa.panels_len(plane), 0.0);
                match (&mut gather, pa.nr()) {
                    (Some((gt, padded)), Some(8)) => {
                        gt.im2col::<8>(&g, &xs, n, grp, padded, &mut panels)
                    }
                    (Some((gt, padded)), Some(16)) => {
                        gt.im2col::<16>(&g, &xs, n, grp, padded, &mut panels)
                    }
                    _ => im2col_panels(&g, &xs, n, grp, pa.nr(), &mut panels),
                }
                pa.matmul_panels(plane, &panels, out)?;
            }
        }
        finish(&mut y, b, g.m, plane, act);
        pool.keep(panels);
        if let Some((_, padded)) = gather {
            pool.keep(padded);
        }
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
///
/// Each patch row is written output row by output row: at stride 1 the part of an output row
/// inside the image is one run of the input row, copied in at most `⌈len/nr⌉ + 1` pieces
/// where it crosses panels; the padding is zeros. No division per value or per panel.
fn im2col_panels(
    g: &Geometry,
    x: &[f32],
    n: usize,
    grp: usize,
    nr: Option<usize>,
    out: &mut [f32],
) {
    let plane = g.oh * g.ow;
    let cg = g.c / g.groups;
    let krows = cg * g.kh * g.kw;
    // Row-major is one "panel" as wide as the plane.
    let (nr, block) = match nr {
        Some(nr) => (nr, krows * nr),
        None => (plane, 0),
    };
    if nr == 0 {
        return;
    }
    let pad = plane.div_ceil(nr) * nr - plane;
    for ci in 0..cg {
        let ch = grp * cg + ci;
        let src = &x[(n * g.c + ch) * g.h * g.w..][..g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let r = (ci * g.kh + i) * g.kw + j;
                let (lo, hi) = valid_cols(g, j);
                let mut w = PanelWriter {
                    out: &mut *out,
                    at: r * nr,
                    t: 0,
                    nr,
                    block,
                };
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
                    if iy < 0 || iy as usize >= g.h {
                        w.zeros(g.ow);
                        continue;
                    }
                    let row = &src[iy as usize * g.w..][..g.w];
                    w.zeros(lo);
                    if lo < hi {
                        let first = lo * g.sw + j * g.dw - g.pl;
                        if g.sw == 1 {
                            w.copy(&row[first..first + (hi - lo)]);
                        } else {
                            for k in 0..hi - lo {
                                w.one(row[first + k * g.sw]);
                            }
                        }
                    }
                    w.zeros(g.ow - hi);
                }
                w.zeros(pad);
            }
        }
    }
}

const ZEROS: [f32; 64] = [0.0; 64];

/// im2col by gathering from a zero-padded copy of the image: every patch value of output
/// position `p` and patch row `(ci, i, j)` is `padded[off[p] + delta(ci, i, j)]`, so a panel
/// row of `NR` values is `NR` indexed loads with no bounds logic (the padding is in the copy).
/// Used when the padded image stays small (no huge pads); [`im2col_panels`] otherwise.
struct Gather {
    /// Rows and columns of the padded image (only those some patch reads).
    hp: usize,
    wp: usize,
    /// `(oy·sh)·wp + ox·sw` per output position.
    off: Vec<u32>,
}

impl Gather {
    fn new(g: &Geometry) -> Option<Gather> {
        if g.oh == 0 || g.ow == 0 || g.kh == 0 || g.kw == 0 {
            return None;
        }
        let hp = (g.oh - 1)
            .checked_mul(g.sh)?
            .checked_add((g.kh - 1).checked_mul(g.dh)?)?
            .checked_add(1)?;
        let wp = (g.ow - 1)
            .checked_mul(g.sw)?
            .checked_add((g.kw - 1).checked_mul(g.dw)?)?
            .checked_add(1)?;
        let cg = g.c / g.groups;
        let area = hp.checked_mul(wp)?;
        let size = area.checked_mul(cg)?;
        // Only when the copy is not much larger than the image (hostile pads would make it
        // huge; with no channels the image's dimensions are not backed by any memory).
        let bound = g.h.checked_mul(g.w)?.checked_mul(4)?.checked_add(1024)?;
        if cg == 0 || area > bound || size >= u32::MAX as usize {
            return None;
        }
        let mut off = Vec::with_capacity(g.oh * g.ow);
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                off.push((oy * g.sh * wp + ox * g.sw) as u32);
            }
        }
        Some(Gather { hp, wp, off })
    }

    /// [`im2col_panels`] for `NR`-wide panels through the padded copy (`padded` is scratch).
    fn im2col<const NR: usize>(
        &self,
        g: &Geometry,
        x: &[f32],
        n: usize,
        grp: usize,
        padded: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let (hp, wp) = (self.hp, self.wp);
        let cg = g.c / g.groups;
        let krows = cg * g.kh * g.kw;
        let plane = g.oh * g.ow;
        padded.clear();
        padded.resize(cg * hp * wp, 0.0);
        // Input columns ix = px − pl inside the image, for padded columns px < wp.
        let px0 = g.pl.min(wp);
        let px1 = (g.pl + g.w).min(wp);
        for ci in 0..cg {
            let src = &x[(n * g.c + grp * cg + ci) * g.h * g.w..][..g.h * g.w];
            let dst = &mut padded[ci * hp * wp..][..hp * wp];
            for py in 0..hp {
                let iy = py as isize - g.pt as isize;
                if iy < 0 || iy as usize >= g.h || px0 >= px1 {
                    continue;
                }
                let row = &src[iy as usize * g.w..][..g.w];
                copy_short(
                    &mut dst[py * wp + px0..py * wp + px1],
                    &row[px0 - g.pl..px1 - g.pl],
                );
            }
        }
        let block = krows * NR;
        let full = plane / NR;
        let rem = plane % NR;
        for ci in 0..cg {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let r = (ci * g.kh + i) * g.kw + j;
                    let delta = ci * hp * wp + i * g.dh * wp + j * g.dw;
                    let src = &padded[delta..];
                    for q in 0..full {
                        let at = q * block + r * NR;
                        let (Ok(d), Ok(o)) = (
                            <&mut [f32; NR]>::try_from(&mut out[at..at + NR]),
                            <&[u32; NR]>::try_from(&self.off[q * NR..q * NR + NR]),
                        ) else {
                            return;
                        };
                        // Offsets strictly increase with the output position, so a span of
                        // exactly `NR − 1` means `NR` consecutive values (stride 1, one output
                        // row): one block copy instead of `NR` indexed loads. The same values
                        // either way.
                        let o0 = o[0] as usize;
                        if (o[NR - 1] - o[0]) as usize == NR - 1
                            && let Some(run) = src.get(o0..o0 + NR)
                        {
                            d.copy_from_slice(run);
                            continue;
                        }
                        for l in 0..NR {
                            d[l] = src[o[l] as usize];
                        }
                    }
                    if rem > 0 {
                        let at = full * block + r * NR;
                        let d = &mut out[at..at + NR];
                        for l in 0..rem {
                            d[l] = src[self.off[full * NR + l] as usize];
                        }
                        d[rem..].fill(0.0);
                    }
                }
            }
        }
    }
}

/// Writes one patch row's values in order into panels `nr` wide, `block` values apart.
struct PanelWriter<'a> {
    out: &'a mut [f32],
    /// Lane 0 of the current panel's row.
    at: usize,
    /// Lane within the panel.
    t: usize,
    nr: usize,
    block: usize,
}

impl PanelWriter<'_> {
    #[inline(always)]
    fn advance(&mut self, k: usize) {
        self.t += k;
        if self.t == self.nr {
            self.t = 0;
            self.at += self.block;
        }
    }

    #[inline(always)]
    fn copy(&mut self, mut s: &[f32]) {
        while !s.is_empty() {
            let k = (self.nr - self.t).min(s.len());
            let d = self.at + self.t;
            copy_short(&mut self.out[d..d + k], &s[..k]);
            s = &s[k..];
            self.advance(k);
        }
    }

    #[inline(always)]
    fn zeros(&mut self, mut len: usize) {
        while len > 0 {
            let k = (self.nr - self.t).min(len);
            let d = self.at + self.t;
            // Short runs by fixed-size stores: a variable `fill` is a `memory.fill` call in wasm.
            if k <= ZEROS.len() {
                copy_short(&mut self.out[d..d + k], &ZEROS[..k]);
            } else {
                self.out[d..d + k].fill(0.0);
            }
            len -= k;
            self.advance(k);
        }
    }

    #[inline(always)]
    fn one(&mut self, v: f32) {
        self.out[self.at + self.t] = v;
        self.advance(1);
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

/// Largest stride for which the depthwise kernels split the input into column phases.
const MAX_SPLIT_STRIDE: usize = 4;

/// A depthwise convolution (one input channel per group): each input channel copied once into
/// a zero-padded buffer split into its column phases ([`DwLayout`]), then every output plane by
/// the vector kernel of [`crate::kernels::depthwise`] (taps in registers, several output columns
/// per vector, the bias added there). Geometries the layout refuses (strides above
/// [`MAX_SPLIT_STRIDE`], a buffer much larger than the image and the output) run the direct
/// loops of [`depthwise_direct`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise(
    node: &Node,
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<super::Act>,
    pool: &mut super::Pool,
) -> Result<Tensor> {
    depthwise_with(crate::kernels::kernels().kind, node, a, x, w, b, act, pool)
}

/// The checked geometry of a depthwise convolution (one input channel per group).
fn depthwise_geometry(
    node: &Node,
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Geometry> {
    conv_shape(node, a, x.shape(), w.shape(), b.map(|b| b.shape()))?;
    let g = geometry(node, a, x.shape(), w.shape())?;
    if g.c / g.groups != 1 {
        return Err(Error::Invalid(format!(
            "conv `{}`: the depthwise kernel needs one input channel per group",
            node.name
        )));
    }
    Ok(g)
}

/// [`depthwise`] on the plane kernel of `kind` ([`KernelKind::Scalar`]: the kernel's twin).
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise_with(
    kind: KernelKind,
    node: &Node,
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<super::Act>,
    pool: &mut super::Pool,
) -> Result<Tensor> {
    let g = depthwise_geometry(node, a, x, w, b)?;
    let Some(layout) = DwLayout::new(&g) else {
        return depthwise_direct(node, a, x, w, b, act, pool);
    };
    let xs = crate::tensor::to_contiguous(x);
    let ws = crate::tensor::to_contiguous(w);
    let bs = b.map(crate::tensor::to_contiguous);
    let plane = g.oh * g.ow;
    let mg = g.m / g.groups;
    let taps = g.kh * g.kw;
    let mut y = pool.take(check_elems(g.n * g.m, plane)?);
    let mut buf = pool.take(layout.len);
    for n in 0..g.n {
        for oc in 0..g.m {
            if oc % mg == 0 {
                let ch = oc / mg;
                layout.fill(&g, &xs[(n * g.c + ch) * g.h * g.w..][..g.h * g.w], &mut buf);
            }
            let out = &mut y[(n * g.m + oc) * plane..][..plane];
            let p = DwPlane {
                src: &buf,
                rows: &layout.rows,
                cols: &layout.cols,
                taps: &ws[oc * taps..(oc + 1) * taps],
                bias: bs.as_ref().and_then(|b| b.get(oc).copied()).unwrap_or(0.0),
                ow: g.ow,
            };
            crate::kernels::depthwise::plane_with(kind, &p, out)?;
            if let Some(act) = act {
                act.apply(out);
            }
        }
    }
    pool.keep(buf);
    Tensor::from_shape_vec(IxDyn(&[g.n, g.m, g.oh, g.ow]), y)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Where the depthwise plane kernel reads: one input channel as `sw` column phases of
/// `h + 1` rows (the last one zeros, read by the filter rows that fall into the padding) of `pw`
/// values. Phase `p`, column `c` holds padded column `c·sw + p`, i.e. input column
/// `c·sw + p − pl` (zero outside the image), so filter column `j` of output column `ox` is
/// column `ox + (j·dw) / sw` of phase `(j·dw) mod sw`: one contiguous run per output row and
/// tap. Rows are `⌈ow/8⌉·8` columns plus the taps' reach wide, so whole vectors can be read.
struct DwLayout {
    pw: usize,
    /// Length of the buffer (`sw · (h+1) · pw`).
    len: usize,
    /// Per output row and filter row, the start of that input row (the zero row outside).
    rows: Vec<usize>,
    /// Per filter column, its phase's offset plus its column shift.
    cols: Vec<usize>,
    /// Per phase, the columns `lo..hi` inside the image and the input column of `lo`.
    spans: Vec<(usize, usize, usize)>,
}

impl DwLayout {
    fn new(g: &Geometry) -> Option<DwLayout> {
        let (sw, dw) = (g.sw, g.dw);
        if !(1..=MAX_SPLIT_STRIDE).contains(&sw) || g.oh == 0 || g.ow == 0 || g.kh == 0 {
            return None;
        }
        if g.kw == 0 || g.h == 0 || g.w == 0 {
            return None;
        }
        let reach = (g.kw - 1).checked_mul(dw)? / sw;
        let pw =
            g.ow.div_ceil(OVERREAD)
                .checked_mul(OVERREAD)?
                .checked_add(reach)?;
        let phase = (g.h + 1).checked_mul(pw)?;
        let len = phase.checked_mul(sw)?;
        // Not much more than the image and the output plane (hostile pads or dilations would
        // make the padded rows huge): the direct loops then.
        let bound =
            g.h.checked_mul(g.w)?
                .checked_add(g.oh.checked_mul(g.ow)?)?
                .checked_mul(4)?
                .checked_add(4096)?;
        if len > bound {
            return None;
        }
        let mut rows = Vec::with_capacity(g.oh * g.kh);
        for oy in 0..g.oh {
            for i in 0..g.kh {
                let iy = (oy * g.sh + i * g.dh) as isize - g.pt as isize;
                let r = if iy < 0 || iy >= g.h as isize {
                    g.h
                } else {
                    iy as usize
                };
                rows.push(r * pw);
            }
        }
        let cols = (0..g.kw)
            .map(|j| (j * dw % sw) * phase + j * dw / sw)
            .collect();
        let spans = (0..sw)
            .map(|p| {
                // Columns c with pl ≤ c·sw + p < pl + w, capped at pw.
                let lo = g.pl.saturating_sub(p).div_ceil(sw).min(pw);
                let hi =
                    g.pl.saturating_add(g.w)
                        .checked_sub(p)
                        .map_or(0, |e| e.div_ceil(sw))
                        .min(pw);
                let hi = hi.max(lo);
                (lo, hi, (lo * sw + p).saturating_sub(g.pl))
            })
            .collect();
        Some(DwLayout {
            pw,
            len,
            rows,
            cols,
            spans,
        })
    }

    /// Copies one input channel (`h·w` values) in; the padding (the same places for every
    /// channel) stays as it was: zeros from the first fill on.
    fn fill(&self, g: &Geometry, src: &[f32], buf: &mut [f32]) {
        let phase = (g.h + 1) * self.pw;
        for (p, &(lo, hi, ix)) in self.spans.iter().enumerate() {
            if lo >= hi {
                continue;
            }
            for (iy, row) in src.chunks_exact(g.w).enumerate() {
                let dst = &mut buf[p * phase + iy * self.pw + lo..][..hi - lo];
                match g.sw {
                    1 => copy_short(dst, &row[ix..ix + (hi - lo)]),
                    // A constant stride, so the compiler can load whole vectors and shuffle.
                    2 => strided::<2>(dst, &row[ix..]),
                    3 => strided::<3>(dst, &row[ix..]),
                    4 => strided::<4>(dst, &row[ix..]),
                    s => dst
                        .iter_mut()
                        .zip(row[ix..].iter().step_by(s))
                        .for_each(|(d, v)| *d = *v),
                }
            }
        }
    }
}

/// `dst[t] = src[t·S]` for every `t` of `dst` (`src` holds them).
#[inline(always)]
fn strided<const S: usize>(dst: &mut [f32], src: &[f32]) {
    let mut chunks = src.chunks_exact(S);
    for (d, c) in dst.iter_mut().zip(&mut chunks) {
        *d = c[0];
    }
    // The last value may have fewer than `S` values after it.
    let done = src.len() / S;
    if done < dst.len()
        && let Some(&v) = src.get(done * S)
    {
        dst[done] = v;
    }
}

/// The direct loops over each filter tap (the reference twin of [`depthwise`] at the plan's
/// level, and its fallback): contiguous along the output row when the stride is 1, on the
/// input's column phases for strides up to [`MAX_SPLIT_STRIDE`].
pub(crate) fn depthwise_direct(
    node: &Node,
    a: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<super::Act>,
    pool: &mut super::Pool,
) -> Result<Tensor> {
    let g = depthwise_geometry(node, a, x, w, b)?;
    let xs = crate::tensor::to_contiguous(x);
    let ws = crate::tensor::to_contiguous(w);
    let plane = g.oh * g.ow;
    let mg = g.m / g.groups;
    let taps = g.kh * g.kw;
    let mut y = pool.take(check_elems(g.n * g.m, plane)?);
    // A strided depthwise conv reads every `sw`-th input column, which does not vectorize: each
    // input plane is split once into its `sw` column phases, so that every tap reads one
    // contiguous run of a phase (`x = first + t·sw` is column `first / sw + t` of phase
    // `first mod sw`). Small strides only (the split costs one plane; a huge stride would make
    // it mostly padding).
    let split = (2..=MAX_SPLIT_STRIDE).contains(&g.sw) && g.w > 0;
    let pw = g.w.div_ceil(g.sw.max(1));
    let mut phases = if split {
        vec![0f32; check_elems(g.sw * g.h, pw)?]
    } else {
        Vec::new()
    };
    for n in 0..g.n {
        for oc in 0..g.m {
            let ch = oc / mg;
            let src = &xs[(n * g.c + ch) * g.h * g.w..][..g.h * g.w];
            if split && oc % mg == 0 {
                for (iy, row) in src.chunks_exact(g.w).enumerate() {
                    for (x, &v) in row.iter().enumerate() {
                        phases[((x % g.sw) * g.h + iy) * pw + x / g.sw] = v;
                    }
                }
            }
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
                        } else if split {
                            let row = &phases[((first % g.sw) * g.h + iy as usize) * pw..][..pw];
                            let start = first / g.sw;
                            for (d, s) in o.iter_mut().zip(&row[start..start + (hi - lo)]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The depthwise plane kernels of every kind (and the twin) through [`DwLayout`] against
    /// the direct loops and the reference op, on odd geometries: strides 1–5 (5 falls back to
    /// the direct loops), dilations, one-sided and large pads, 1-wide and 1-high images,
    /// channel multipliers, 1×1 and 5×5 filters, fused activation.
    #[test]
    fn depthwise_kernels_agree_with_the_direct_loops_and_the_reference() {
        use crate::graph::Op;
        let mut rng = crate::rng::Rng::new(21);
        // (channels, multiplier, kernel, stride, pads, dilation, h, w)
        type Case = (
            usize,
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 4],
            [usize; 2],
            usize,
            usize,
        );
        let cases: &[Case] = &[
            (3, 1, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 28, 28),
            (2, 1, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 14, 14),
            (2, 1, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], 7, 7),
            (2, 2, [3, 3], [2, 3], [0, 1, 2, 0], [1, 1], 9, 11),
            (2, 1, [3, 3], [1, 4], [1, 2, 1, 3], [2, 2], 6, 17),
            (1, 3, [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 5, 9),
            (2, 1, [5, 5], [1, 1], [2, 2, 2, 2], [1, 1], 4, 3),
            (2, 1, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, 1),
            (2, 1, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1, 9),
            (2, 1, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 9, 1),
            (2, 1, [2, 3], [3, 2], [4, 0, 0, 5], [1, 3], 5, 8),
            (2, 1, [3, 3], [1, 5], [1, 1, 1, 1], [1, 1], 6, 12),
            (2, 1, [3, 3], [1, 1], [40, 40, 40, 40], [1, 1], 2, 2),
            (2, 1, [3, 1], [1, 1], [0, 0, 0, 0], [1, 1], 3, 16),
        ];
        for &(c, mult, kernel, strides, pads, dilations, h, w) in cases {
            let mut attrs = ConvAttrs::new(kernel);
            attrs.groups = c;
            attrs.strides = strides;
            attrs.pads = pads;
            attrs.dilations = dilations;
            let m = c * mult;
            let node = Node::new("y", Op::Conv(attrs.clone()), &["x", "w", "b"]);
            let wt: Vec<f32> = (0..m * kernel[0] * kernel[1])
                .map(|_| rng.normal())
                .collect();
            let wt = crate::tensor::from_vec(&[m, 1, kernel[0], kernel[1]], wt).unwrap();
            let bias: Vec<f32> = (0..m).map(|_| rng.normal()).collect();
            let bias = crate::tensor::from_vec(&[m], bias).unwrap();
            for batch in [1, 2] {
                let x: Vec<f32> = (0..batch * c * h * w).map(|_| rng.normal()).collect();
                let x = crate::tensor::from_vec(&[batch, c, h, w], x).unwrap();
                let ins = [Some(&x), Some(&wt), Some(&bias)];
                let want = crate::ops::forward(&node, &ins, crate::ops::Mode::Eval)
                    .unwrap()
                    .0
                    .remove(0);
                for act in [None, Some(super::super::Act::Clip(0.0, 6.0))] {
                    let mut pool = super::super::Pool::default();
                    let direct =
                        depthwise_direct(&node, &attrs, &x, &wt, Some(&bias), act, &mut pool)
                            .unwrap();
                    let mut kinds = crate::kernels::available();
                    kinds.push(KernelKind::Scalar);
                    for kind in kinds {
                        let got = depthwise_with(
                            kind,
                            &node,
                            &attrs,
                            &x,
                            &wt,
                            Some(&bias),
                            act,
                            &mut pool,
                        )
                        .unwrap();
                        assert_eq!(got.shape(), want.shape());
                        for ((r, d), g) in want.iter().zip(direct.iter()).zip(got.iter()) {
                            let r = act.map_or(*r, |a| a.one(*r));
                            for v in [d, g] {
                                assert!(
                                    (r - v).abs() <= 1e-4 * (1.0 + r.abs()),
                                    "{kind:?} {kernel:?} s{strides:?} p{pads:?} d{dilations:?} \
                                     {h}×{w}: {r} vs {v}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Time of the im2col and of the product for LeNet-5's second conv (figures only).
    #[test]
    #[ignore = "timing figures; run with --ignored --nocapture"]
    fn im2col_and_product_times() {
        let kind = crate::kernels::kernels().kind;
        let g = Geometry {
            n: 1,
            c: 6,
            h: 14,
            w: 14,
            m: 16,
            kh: 5,
            kw: 5,
            oh: 10,
            ow: 10,
            pt: 0,
            pl: 0,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            groups: 1,
        };
        let x: Vec<f32> = (0..6 * 14 * 14).map(|i| i as f32).collect();
        let a: Vec<f32> = (0..16 * 150).map(|i| i as f32).collect();
        let pa = PackedA::new(kind, 16, 150, &a).unwrap();
        let mut panels = vec![0.0; pa.panels_len(100)];
        let mut c = vec![0.0; 1600];
        let reps = 2000;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            im2col_panels(&g, &x, 0, 0, pa.nr(), &mut panels);
        }
        let t1 = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            pa.matmul_panels(100, &panels, &mut c).unwrap();
        }
        let t2 = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        let gt = Gather::new(&g).unwrap();
        let mut padded = Vec::new();
        let mut p2 = vec![0.0; panels.len()];
        let t = std::time::Instant::now();
        for _ in 0..reps {
            match pa.nr() {
                Some(8) => gt.im2col::<8>(&g, &x, 0, 0, &mut padded, &mut p2),
                _ => gt.im2col::<16>(&g, &x, 0, 0, &mut padded, &mut p2),
            }
        }
        let t3 = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        assert_eq!(panels, p2);
        eprintln!("{kind:?}: im2col {t1:.2} µs, gather {t3:.2} µs, product {t2:.2} µs");
    }
}
