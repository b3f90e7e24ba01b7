//! Depthwise convolution planes: one output plane from one prepared input plane and its taps.
//!
//! The planned depthwise convolution ([`crate::plan`]'s `conv::depthwise`) copies each input
//! channel once into a zero-padded, column-phase-split buffer, so that every filter tap of
//! every output row reads one contiguous run of that buffer: output value `(oy, x)` is
//!
//! `bias + Σ_{i,j} taps[i·kw + j] · src[rows[oy·kh + i] + cols[j] + x]`
//!
//! ([`DwPlane`]). The kernels compute several output columns per vector with the taps held in
//! registers (splatted once per plane): the wasm `simd128` kernel four columns per `f32x4`
//! (`f32x4_relaxed_madd` in a [`super::RELAXED_SIMD`] build), the AVX2+FMA one eight per
//! 256-bit register, the portable one eight per `[f32; 8]` that the compiler vectorizes. 3×3
//! filters have a kernel with the nine taps unrolled; other sizes loop over the taps.
//!
//! The simd128 kernel keeps one partial sum per filter row and computes two vectors per step
//! (shorter chains of dependent adds).
//!
//! [`plane_scalar`] is the reference twin (plain loops, summed from the bias in tap order); the
//! property test compares every available kind with it over odd widths, tap counts and empty
//! planes, natively, in Node and in Chromium ([`super::check::selftest`]).

use super::{Features, KernelKind};
use crate::{Error, Result};

/// How many values past the end of each output row's source runs the caller must keep readable
/// (zeros): every row's runs are read in whole vectors of up to this many lanes.
pub(crate) const OVERREAD: usize = 8;

/// One output plane of a depthwise convolution, over a prepared source buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DwPlane<'a> {
    /// The prepared input channel (padded, split into column phases).
    pub src: &'a [f32],
    /// `oh·kh` starts: where in `src` the run for output row `oy`, filter row `i` begins.
    pub rows: &'a [usize],
    /// `kw` offsets, added to a row start, for filter column `j`.
    pub cols: &'a [usize],
    /// `kh·kw` filter taps, row-major.
    pub taps: &'a [f32],
    /// Added to every output value (before the taps).
    pub bias: f32,
    /// Output columns.
    pub ow: usize,
}

impl DwPlane<'_> {
    /// Filter rows and output rows, after checking that every read (with [`OVERREAD`] lanes
    /// of room) and the output length fit.
    fn check(&self, out_len: usize) -> Result<(usize, usize)> {
        let kw = self.cols.len();
        let bad = |why: &str| Err(Error::Invalid(format!("depthwise plane: {why}")));
        if kw == 0 || !self.taps.len().is_multiple_of(kw) {
            return bad("taps do not fill whole filter rows");
        }
        let kh = self.taps.len() / kw;
        if kh == 0 || !self.rows.len().is_multiple_of(kh) {
            return bad("row starts do not cover whole output rows");
        }
        let oh = self.rows.len() / kh;
        if oh.checked_mul(self.ow) != Some(out_len) {
            return bad("the output does not hold oh × ow values");
        }
        if out_len == 0 {
            return Ok((kh, oh));
        }
        let reach = self.ow.div_ceil(OVERREAD).checked_mul(OVERREAD);
        let max_row = self.rows.iter().copied().max().unwrap_or(0);
        let max_col = self.cols.iter().copied().max().unwrap_or(0);
        match reach
            .and_then(|r| r.checked_add(max_row))
            .and_then(|r| r.checked_add(max_col))
        {
            Some(end) if end <= self.src.len() => Ok((kh, oh)),
            _ => bad("a source run reaches past the buffer"),
        }
    }
}

/// The reference twin: `out[oy·ow + x] = bias + Σ taps[i·kw+j] · src[rows[oy·kh+i] + cols[j] + x]`,
/// summed from the bias in tap order.
pub(crate) fn plane_scalar(p: &DwPlane, out: &mut [f32]) -> Result<()> {
    let (kh, _) = p.check(out.len())?;
    let kw = p.cols.len();
    if p.ow == 0 {
        return Ok(());
    }
    for (oy, orow) in out.chunks_exact_mut(p.ow).enumerate() {
        for (x, o) in orow.iter_mut().enumerate() {
            let mut acc = p.bias;
            for i in 0..kh {
                let r = p.rows[oy * kh + i];
                for j in 0..kw {
                    acc += p.taps[i * kw + j] * p.src[r + p.cols[j] + x];
                }
            }
            *o = acc;
        }
    }
    Ok(())
}

/// The plane on the kernel of `kind` ([`KernelKind::Scalar`] is the twin, [`KernelKind::Packed`]
/// the portable vector code). Errors if the plane's reads or output do not fit, or if this
/// host cannot run `kind`.
pub(crate) fn plane_with(kind: KernelKind, p: &DwPlane, out: &mut [f32]) -> Result<()> {
    if !kind.supported(Features::detect()) {
        return Err(Error::Invalid(format!(
            "kernel `{}` is not available on this host",
            kind.name()
        )));
    }
    let (kh, _) = p.check(out.len())?;
    if out.is_empty() {
        return Ok(());
    }
    match kind {
        KernelKind::Scalar => plane_scalar(p, out),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        KernelKind::Simd128 => {
            match (kh, p.cols.len()) {
                (3, 3) => simd128::plane::<3, 3>(p, out),
                _ => portable_dyn::<4>(p, kh, out),
            }
            Ok(())
        }
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2Fma => {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { plane_avx2(p, kh, out) };
            } else {
                portable(p, kh, out);
            }
            Ok(())
        }
        _ => {
            portable(p, kh, out);
            Ok(())
        }
    }
}

#[inline(always)]
fn portable(p: &DwPlane, kh: usize, out: &mut [f32]) {
    match (kh, p.cols.len()) {
        (3, 3) => portable_fixed::<8, 3, 3>(p, out),
        _ => portable_dyn::<8>(p, kh, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn plane_avx2(p: &DwPlane, kh: usize, out: &mut [f32]) {
    portable(p, kh, out);
}

/// `L` output columns at a time with the `KH×KW` taps unrolled (the plane is checked: every run
/// of `L` values read here lies inside `src`, and `taps` holds `KH·KW` values).
#[inline(always)]
fn portable_fixed<const L: usize, const KH: usize, const KW: usize>(p: &DwPlane, out: &mut [f32]) {
    let taps: [[f32; KW]; KH] =
        std::array::from_fn(|i| std::array::from_fn(|j| p.taps[i * KW + j]));
    for (oy, orow) in out.chunks_exact_mut(p.ow).enumerate() {
        let base: [[usize; KW]; KH] =
            std::array::from_fn(|i| std::array::from_fn(|j| p.rows[oy * KH + i] + p.cols[j]));
        let mut x = 0;
        while x < p.ow {
            let mut acc = [p.bias; L];
            for i in 0..KH {
                for j in 0..KW {
                    let s = &p.src[base[i][j] + x..base[i][j] + x + L];
                    for l in 0..L {
                        acc[l] += taps[i][j] * s[l];
                    }
                }
            }
            // By values: a variable-length copy would be a `memcpy` call.
            for (o, &v) in orow[x..].iter_mut().zip(&acc) {
                *o = v;
            }
            x += L;
        }
    }
}

/// [`portable_fixed`] for any number of taps (looped, not unrolled).
#[inline(always)]
fn portable_dyn<const L: usize>(p: &DwPlane, kh: usize, out: &mut [f32]) {
    let kw = p.cols.len();
    let mut base = vec![0usize; p.taps.len()];
    for (oy, orow) in out.chunks_exact_mut(p.ow).enumerate() {
        for (brow, &r) in base
            .chunks_exact_mut(kw)
            .zip(&p.rows[oy * kh..(oy + 1) * kh])
        {
            for (b, &c) in brow.iter_mut().zip(p.cols) {
                *b = r + c;
            }
        }
        let mut x = 0;
        while x < p.ow {
            let mut acc = [p.bias; L];
            for (&b, &tap) in base.iter().zip(p.taps) {
                let s = &p.src[b + x..b + x + L];
                for l in 0..L {
                    acc[l] += tap * s[l];
                }
            }
            // By values: a variable-length copy would be a `memcpy` call.
            for (o, &v) in orow[x..].iter_mut().zip(&acc) {
                *o = v;
            }
            x += L;
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::DwPlane;
    use core::arch::wasm32::*;

    #[inline(always)]
    fn madd(acc: v128, w: v128, x: v128) -> v128 {
        #[cfg(target_feature = "relaxed-simd")]
        {
            f32x4_relaxed_madd(w, x, acc)
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            f32x4_add(acc, f32x4_mul(w, x))
        }
    }

    /// Four output columns per `f32x4`, the `KH×KW` taps splatted once per plane.
    pub(super) fn plane<const KH: usize, const KW: usize>(p: &DwPlane, out: &mut [f32]) {
        let w: [[v128; KW]; KH] =
            std::array::from_fn(|i| std::array::from_fn(|j| f32x4_splat(p.taps[i * KW + j])));
        let bias = f32x4_splat(p.bias);
        let src = p.src.as_ptr();
        let full = p.ow / 4 * 4;
        for (oy, orow) in out.chunks_exact_mut(p.ow).enumerate() {
            let base: [[usize; KW]; KH] =
                std::array::from_fn(|i| std::array::from_fn(|j| p.rows[oy * KH + i] + p.cols[j]));
            let o = orow.as_mut_ptr();
            let mut x = 0;
            // SAFETY: `DwPlane::check` bounds every run `base[i][j] + x .. + ⌈ow/8⌉·8` inside
            // `src`; stores stay below `ow` (whole vectors below `full`, the tail by lanes).
            // `v128_load`/`v128_store` have no alignment requirement.
            unsafe {
                // One sum per filter row (the bias in the first), added at the end: chains of
                // `KW` dependent adds rather than one of `KH·KW`.
                let dot = |x: usize| {
                    let mut acc: [v128; KH] = [f32x4_splat(0.0); KH];
                    acc[0] = bias;
                    for i in 0..KH {
                        for j in 0..KW {
                            let v = v128_load(src.add(base[i][j] + x) as *const v128);
                            acc[i] = madd(acc[i], w[i][j], v);
                        }
                    }
                    let mut sum = acc[0];
                    for a in &acc[1..] {
                        sum = f32x4_add(sum, *a);
                    }
                    sum
                };
                // Two vectors per step (independent sums for the CPU to overlap).
                while x + 8 <= full {
                    let (a, b) = (dot(x), dot(x + 4));
                    v128_store(o.add(x) as *mut v128, a);
                    v128_store(o.add(x + 4) as *mut v128, b);
                    x += 8;
                }
                while x < full {
                    v128_store(o.add(x) as *mut v128, dot(x));
                    x += 4;
                }
                if x < p.ow {
                    let mut tail = [0f32; 4];
                    v128_store(tail.as_mut_ptr() as *mut v128, dot(x));
                    for (l, &v) in tail.iter().enumerate().take(p.ow - x) {
                        *o.add(x + l) = v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn every_kind_agrees_with_the_twin() {
        let report = super::super::check::depthwise_selftest().unwrap();
        assert!(report > 0);
    }

    #[test]
    fn bad_planes_are_errors() {
        let mut rng = Rng::new(3);
        let src: Vec<f32> = (0..40).map(|_| rng.normal()).collect();
        let taps = [1.0f32; 9];
        let ok = DwPlane {
            src: &src,
            rows: &[0, 10, 20],
            cols: &[0, 1, 2],
            taps: &taps,
            bias: 0.0,
            ow: 5,
        };
        for kind in super::super::available() {
            let mut out = [0.0; 5];
            assert!(plane_with(kind, &ok, &mut out).is_ok());
            assert!(plane_with(kind, &ok, &mut [0.0; 4]).is_err());
            // A run past the end (with the over-read room).
            let far = DwPlane {
                rows: &[0, 10, 31],
                ..ok
            };
            assert!(plane_with(kind, &far, &mut out).is_err());
            let ragged = DwPlane {
                taps: &taps[..8],
                ..ok
            };
            assert!(plane_with(kind, &ragged, &mut out).is_err());
            let no_cols = DwPlane { cols: &[], ..ok };
            assert!(plane_with(kind, &no_cols, &mut out).is_err());
            let huge = DwPlane {
                rows: &[usize::MAX, 0, 0],
                ..ok
            };
            assert!(plane_with(kind, &huge, &mut out).is_err());
        }
    }
}
