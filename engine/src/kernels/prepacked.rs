//! f32 GEMM with one operand packed once: the weights of a planned layer.
//!
//! [`kernels::gemm`](super::gemm()) packs `B` into column panels on every call, which at batch 1
//! costs as much as the product itself. A layer's weight does not change between calls, so the
//! plan packs it once:
//!
//! - [`PackedB`] holds `B` (`k×n`, a Gemm's `op(B)`) in the panels of one kernel kind; each call
//!   packs only `A`, `MR` rows at a time. Row strips shorter than `MR` (batch 1, the tail of a
//!   batch) run a one-row kernel over the same panels instead of a zero-padded tile.
//! - [`PackedA`] holds `A` (`m×k`, a convolution's filters) in the row strips of one kind; each
//!   call takes `B` (the patches) either row-major or already in panels ([`PackedA::nr`]), so
//!   an im2col can write the panels directly.
//!
//! Both run the micro-kernels of the [`KernelKind`] they were packed for (the relaxed-SIMD one in
//! a [`super::RELAXED_SIMD`] build), and [`KernelKind::Scalar`] keeps the operand plain and runs
//! the reference loop. The property tests compare every available kind with
//! [`super::gemm::scalar`] over odd sizes, tails, 1-element and empty dimensions.

use super::KernelKind;
use crate::{Error, Result};

/// `tile[r·NR + j] = Σ_p ap[p·MR + r] · bp[p·NR + j]` for one `MR×NR` tile.
type MicroFn = fn(usize, &[f32], &[f32], &mut [f32]);

/// The same tile stored straight into `C`, rows `ldc` apart (`c` holds `(MR−1)·ldc + NR`).
type DirectFn = fn(usize, &[f32], &[f32], &mut [f32], usize);

/// A kind's micro-kernel and its tile.
#[derive(Clone, Copy)]
struct Micro {
    mr: usize,
    nr: usize,
    f: MicroFn,
    /// For whole tiles inside `C`: no round trip through the tile buffer (wasm kernels, where
    /// that copy cost as much as a small-`k` product).
    direct: Option<DirectFn>,
}

impl std::fmt::Debug for Micro {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Micro({}×{})", self.mr, self.nr)
    }
}

/// The micro-kernel of `kind` in this build, `None` for the scalar twin (which packs nothing).
/// Errors when this build or CPU cannot run `kind`.
fn micro_for(kind: KernelKind) -> Result<Option<Micro>> {
    if !kind.supported(super::Features::detect()) {
        return Err(Error::Invalid(format!(
            "kernel `{}` is not available on this host",
            kind.name()
        )));
    }
    let portable = Micro {
        mr: super::gemm::P_MR,
        nr: super::gemm::P_NR,
        f: super::gemm::micro_portable,
        direct: None,
    };
    Ok(match kind {
        KernelKind::Scalar => None,
        KernelKind::Packed => Some(portable),
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        KernelKind::Simd128 => Some(Micro {
            mr: 4,
            nr: 8,
            f: super::gemm_relaxed::micro,
            direct: Some(super::gemm_relaxed::micro_to),
        }),
        #[cfg(all(
            target_arch = "wasm32",
            target_feature = "simd128",
            not(target_feature = "relaxed-simd")
        ))]
        KernelKind::Simd128 => Some(Micro {
            mr: 4,
            nr: 8,
            f: super::gemm_simd128::micro,
            direct: Some(super::gemm_simd128::micro_to),
        }),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2Fma => Some(Micro {
            mr: super::gemm_x86::MR,
            nr: super::gemm_x86::NR,
            f: super::gemm_x86::micro_entry,
            direct: None,
        }),
        // `supported` refused the kinds this build lacks.
        #[allow(unreachable_patterns)]
        _ => Some(portable),
    })
}

/// One row of `A` times one panel: `out[j] = Σ_p a[p] · panel[p·NR + j]`, written for the
/// compiler to keep the sums in vector registers (simd128 / SSE). Four independent partial sums
/// over `p mod 4`: with one, every step waits for the previous add (the latency of a vector add
/// is 3–4 cycles), which made batch-1 layers latency-bound rather than load-bound.
#[inline(always)]
fn row_panel<const NR: usize>(a: &[f32], panel: &[f32], out: &mut [f32]) {
    let mut acc = [[0.0f32; NR]; 4];
    let a4 = a.chunks_exact(4);
    let a_rest = a4.remainder();
    let b4 = panel.chunks_exact(4 * NR);
    let b_rest = b4.remainder();
    for (av, bv) in a4.zip(b4) {
        for (u, sum) in acc.iter_mut().enumerate() {
            let x = av[u];
            let row = &bv[u * NR..(u + 1) * NR];
            for j in 0..NR {
                sum[j] += x * row[j];
            }
        }
    }
    for (&x, row) in a_rest.iter().zip(b_rest.chunks_exact(NR)) {
        for j in 0..NR {
            acc[0][j] += x * row[j];
        }
    }
    for j in 0..NR {
        out[j] = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
    }
}

fn row_panel_dyn(nr: usize, a: &[f32], panel: &[f32], out: &mut [f32]) {
    match nr {
        8 => row_panel::<8>(a, panel, out),
        16 => row_panel::<16>(a, panel, out),
        _ => {
            out[..nr].fill(0.0);
            for (&av, bv) in a.iter().zip(panel.chunks_exact(nr)) {
                for (o, b) in out.iter_mut().zip(bv) {
                    *o += av * b;
                }
            }
        }
    }
}

/// `B` (`k×n`, row-major) as `ceil(n/nr)` panels of `k` rows of `nr` values, zero-padded.
pub(crate) fn pack_panels(nr: usize, k: usize, n: usize, b: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.resize(n.div_ceil(nr) * k * nr, 0.0);
    if k == 0 {
        return;
    }
    for (q, panel) in out.chunks_exact_mut(k * nr).enumerate() {
        let j0 = q * nr;
        let w = nr.min(n - j0);
        for p in 0..k {
            super::copy_short(
                &mut panel[p * nr..p * nr + w],
                &b[p * n + j0..p * n + j0 + w],
            );
        }
    }
}

/// [`pack_panels`] into a slice already `ceil(n/nr)·k·nr` long: every value written (the
/// padding lanes of the last panel with zeros), so `out` needs no clearing first. Does nothing
/// if `out` has another length or `b` is shorter than `k·n`.
pub(crate) fn pack_panels_into(nr: usize, k: usize, n: usize, b: &[f32], out: &mut [f32]) {
    if nr == 0 || k == 0 || out.len() != n.div_ceil(nr) * k * nr || b.len() < k * n {
        return;
    }
    for (q, panel) in out.chunks_exact_mut(k * nr).enumerate() {
        let j0 = q * nr;
        let w = nr.min(n - j0);
        for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
            super::copy_short(&mut dst[..w], &b[p * n + j0..p * n + j0 + w]);
            dst[w..].fill(0.0);
        }
    }
}

/// Rows `i0..i0+h` of `A` (`·×k`, row-major), interleaved so step `p` holds their `mr` values
/// together, zero-padded to `mr` rows.
pub(crate) fn pack_strip(mr: usize, i0: usize, h: usize, k: usize, a: &[f32], out: &mut [f32]) {
    if mr == 4 && h == 4 {
        pack_strip4(&a[i0 * k..(i0 + 4) * k], k, &mut out[..4 * k]);
        return;
    }
    if h < mr {
        out.fill(0.0);
    }
    for r in 0..h {
        let row = &a[(i0 + r) * k..(i0 + r + 1) * k];
        for (p, &v) in row.iter().enumerate() {
            out[p * mr + r] = v;
        }
    }
}

/// [`pack_strip`] of four whole rows (`rows` holds them, `4·k` values) into `out` (`4·k`):
/// 4×4 blocks transposed with shuffles in wasm `simd128` builds, four zipped rows elsewhere
/// (the compiler vectorizes that). In V8 the generic strided loop packed a 64×784 batch in
/// 60–106 µs and the shuffles in 6–12 µs (Node, 2026-11-30, a scratch probe): about a third of
/// tiny-mlp's `fc1` (784 → 32) at batch 64 had been this packing.
fn pack_strip4(rows: &[f32], k: usize, out: &mut [f32]) {
    let (r0, rest) = rows.split_at(k);
    let (r1, rest) = rest.split_at(k);
    let (r2, r3) = rest.split_at(k);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let done = {
        use core::arch::wasm32::*;
        let blocks = k / 4;
        let quads = r0
            .chunks_exact(4)
            .zip(r1.chunks_exact(4))
            .zip(r2.chunks_exact(4).zip(r3.chunks_exact(4)));
        for (o, ((x0, x1), (x2, x3))) in out.chunks_exact_mut(16).zip(quads) {
            // SAFETY: every chunk holds exactly 4 values (16 bytes) and `o` 16; `v128_load` and
            // `v128_store` have no alignment requirement.
            unsafe {
                let ld = |x: &[f32]| v128_load(x.as_ptr() as *const v128);
                let (x0, x1, x2, x3) = (ld(x0), ld(x1), ld(x2), ld(x3));
                let t0 = i32x4_shuffle::<0, 4, 1, 5>(x0, x1);
                let t1 = i32x4_shuffle::<2, 6, 3, 7>(x0, x1);
                let t2 = i32x4_shuffle::<0, 4, 1, 5>(x2, x3);
                let t3 = i32x4_shuffle::<2, 6, 3, 7>(x2, x3);
                let o = o.as_mut_ptr() as *mut v128;
                v128_store(o, i32x4_shuffle::<0, 1, 4, 5>(t0, t2));
                v128_store(o.add(1), i32x4_shuffle::<2, 3, 6, 7>(t0, t2));
                v128_store(o.add(2), i32x4_shuffle::<0, 1, 4, 5>(t1, t3));
                v128_store(o.add(3), i32x4_shuffle::<2, 3, 6, 7>(t1, t3));
            }
        }
        blocks * 4
    };
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let done = 0;
    let tail = r0[done..]
        .iter()
        .zip(&r1[done..])
        .zip(r2[done..].iter().zip(&r3[done..]));
    for (o, ((&x0, &x1), (&x2, &x3))) in out[4 * done..].chunks_exact_mut(4).zip(tail) {
        o.copy_from_slice(&[x0, x1, x2, x3]);
    }
}

/// Writes rows `0..h` of an `mr×nr` tile into `C` (`·×n`) at row `i0`, column `j0`, clipped
/// at the right edge.
#[inline(always)]
fn store_tile(c: &mut [f32], n: usize, tile: &[f32], nr: usize, i0: usize, h: usize, j0: usize) {
    let w = nr.min(n - j0);
    for r in 0..h {
        let dst = (i0 + r) * n + j0;
        super::copy_short(&mut c[dst..dst + w], &tile[r * nr..r * nr + w]);
    }
}

/// One `mr×nr` tile of `C = A·B` (strip `ap`, panel `bp`) into `C` (`·×n`) at row `i0`,
/// column `j0`: straight into `C` when the kind can and the tile lies wholly inside it, else
/// through `tile` and [`store_tile`] (clipped at the bottom and right edges).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile_into(
    mc: &Micro,
    k: usize,
    ap: &[f32],
    bp: &[f32],
    tile: &mut [f32],
    c: &mut [f32],
    n: usize,
    i0: usize,
    h: usize,
    j0: usize,
) {
    match mc.direct {
        Some(direct) if h == mc.mr && j0 + mc.nr <= n => {
            direct(k, ap, bp, &mut c[i0 * n + j0..], n);
        }
        _ => {
            (mc.f)(k, ap, bp, tile);
            store_tile(c, n, tile, mc.nr, i0, h, j0);
        }
    }
}

fn check_len(what: &str, rows: usize, cols: usize, len: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(want) if want == len => Ok(()),
        _ => Err(Error::Invalid(format!(
            "gemm: {what} is {rows}×{cols} but its slice holds {len} values"
        ))),
    }
}

/// `B` packed once into one kernel kind's column panels; [`PackedB::matmul`] computes
/// `C = A · B` for any number of rows of `A`.
#[derive(Clone, Debug)]
pub struct PackedB {
    kind: KernelKind,
    k: usize,
    n: usize,
    micro: Option<Micro>,
    /// Panels (or plain row-major `B` for the scalar twin).
    data: Vec<f32>,
}

impl PackedB {
    /// Packs the row-major `k×n` matrix `b` for `kind`. Errors if `b.len() != k·n` or this host
    /// cannot run `kind`.
    pub fn new(kind: KernelKind, k: usize, n: usize, b: &[f32]) -> Result<PackedB> {
        check_len("B", k, n, b.len())?;
        let micro = micro_for(kind)?;
        let mut data = Vec::new();
        match micro {
            Some(mc) => pack_panels(mc.nr, k, n, b, &mut data),
            None => data.extend_from_slice(b),
        }
        Ok(PackedB {
            kind,
            k,
            n,
            micro,
            data,
        })
    }

    /// Rows of `B` (the inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B` (outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The kind it was packed for.
    pub fn kind(&self) -> KernelKind {
        self.kind
    }

    /// `C = A · B`: `a` is `m×k`, `c` is `m×n`, row-major; `c` is overwritten. Errors if a
    /// slice length does not match.
    pub fn matmul(&self, m: usize, a: &[f32], c: &mut [f32]) -> Result<()> {
        let (k, n) = (self.k, self.n);
        check_len("A", m, k, a.len())?;
        check_len("C", m, n, c.len())?;
        let Some(mc) = self.micro else {
            super::gemm::scalar(m, k, n, a, &self.data, c);
            return Ok(());
        };
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            c.fill(0.0);
            return Ok(());
        }
        let (mr, nr) = (mc.mr, mc.nr);
        let mut ap = vec![0.0f32; k * mr];
        let mut tile = vec![0.0f32; mr * nr];
        for i0 in (0..m).step_by(mr) {
            let h = mr.min(m - i0);
            if h < mr {
                // Fewer rows than a tile: one row at a time over the same panels.
                for r in 0..h {
                    let row = &a[(i0 + r) * k..(i0 + r + 1) * k];
                    for (q, panel) in self.data.chunks_exact(k * nr).enumerate() {
                        row_panel_dyn(nr, row, panel, &mut tile);
                        let j0 = q * nr;
                        let w = nr.min(n - j0);
                        let dst = (i0 + r) * n + j0;
                        super::copy_short(&mut c[dst..dst + w], &tile[..w]);
                    }
                }
                continue;
            }
            pack_strip(mr, i0, h, k, a, &mut ap);
            for (q, panel) in self.data.chunks_exact(k * nr).enumerate() {
                tile_into(&mc, k, &ap, panel, &mut tile, c, n, i0, h, q * nr);
            }
        }
        Ok(())
    }
}

/// `A` packed once into one kernel kind's row strips; [`PackedA::matmul`] computes `C = A · B`
/// for any number of columns of `B`.
#[derive(Clone, Debug)]
pub struct PackedA {
    kind: KernelKind,
    m: usize,
    k: usize,
    micro: Option<Micro>,
    /// Strips of `k·mr` values (or plain row-major `A` for the scalar twin).
    data: Vec<f32>,
}

impl PackedA {
    /// Packs the row-major `m×k` matrix `a` for `kind`. Errors if `a.len() != m·k` or this host
    /// cannot run `kind`.
    pub fn new(kind: KernelKind, m: usize, k: usize, a: &[f32]) -> Result<PackedA> {
        check_len("A", m, k, a.len())?;
        let micro = micro_for(kind)?;
        let data = match micro {
            Some(mc) => {
                let mut d = vec![0.0f32; m.div_ceil(mc.mr) * k * mc.mr];
                for (s, strip) in d.chunks_exact_mut((k * mc.mr).max(1)).enumerate() {
                    let i0 = s * mc.mr;
                    pack_strip(mc.mr, i0, mc.mr.min(m - i0), k, a, strip);
                }
                d
            }
            None => a.to_vec(),
        };
        Ok(PackedA {
            kind,
            m,
            k,
            micro,
            data,
        })
    }

    /// Rows of `A` (outputs).
    pub fn m(&self) -> usize {
        self.m
    }

    /// Columns of `A` (the inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kind it was packed for.
    pub fn kind(&self) -> KernelKind {
        self.kind
    }

    /// The panel width `B` must be packed with for [`PackedA::matmul_panels`]; `None` for the
    /// scalar twin, which takes `B` row-major.
    pub fn nr(&self) -> Option<usize> {
        self.micro.map(|m| m.nr)
    }

    /// Length of the panels of a `k×n` `B` for [`PackedA::matmul_panels`].
    pub fn panels_len(&self, n: usize) -> usize {
        match self.micro {
            Some(mc) => n.div_ceil(mc.nr) * self.k * mc.nr,
            None => self.k * n,
        }
    }

    /// `C = A · B`: `b` is `k×n`, `c` is `m×n`, row-major; `c` is overwritten. Errors if a
    /// slice length does not match.
    pub fn matmul(&self, n: usize, b: &[f32], c: &mut [f32]) -> Result<()> {
        check_len("B", self.k, n, b.len())?;
        match self.micro {
            Some(mc) => {
                let mut panels = Vec::new();
                pack_panels(mc.nr, self.k, n, b, &mut panels);
                self.matmul_panels(n, &panels, c)
            }
            None => self.matmul_panels(n, b, c),
        }
    }

    /// `C = A · B` with `B` already in panels of width [`PackedA::nr`] (`ceil(n/nr)` panels of
    /// `k` rows, zero-padded; row-major `B` for the scalar twin). Errors if a length does not
    /// match.
    pub fn matmul_panels(&self, n: usize, panels: &[f32], c: &mut [f32]) -> Result<()> {
        let (m, k) = (self.m, self.k);
        check_len("C", m, n, c.len())?;
        if panels.len() != self.panels_len(n) {
            return Err(Error::Invalid(format!(
                "gemm: B's panels hold {} values, {} expected for {k}×{n}",
                panels.len(),
                self.panels_len(n)
            )));
        }
        let Some(mc) = self.micro else {
            super::gemm::scalar(m, k, n, &self.data, panels, c);
            return Ok(());
        };
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            c.fill(0.0);
            return Ok(());
        }
        let (mr, nr) = (mc.mr, mc.nr);
        let mut tile = vec![0.0f32; mr * nr];
        for (s, strip) in self.data.chunks_exact(k * mr).enumerate() {
            let i0 = s * mr;
            let h = mr.min(m - i0);
            for (q, panel) in panels.chunks_exact(k * nr).enumerate() {
                tile_into(&mc, k, strip, panel, &mut tile, c, n, i0, h, q * nr);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn close(want: &[f32], got: &[f32], k: usize) {
        assert_eq!(want.len(), got.len());
        for (x, y) in want.iter().zip(got) {
            let tol = super::super::check::GEMM_REL_TOL * (k as f32 + 1.0) * (1.0 + x.abs());
            assert!((x - y).abs() <= tol, "{x} vs {y} (k = {k})");
        }
    }

    #[test]
    fn prepacked_products_agree_with_the_scalar_twin_over_odd_sizes() {
        let mut rng = Rng::new(11);
        let sizes = [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33];
        for kind in super::super::available() {
            for &m in &sizes {
                for &k in &[0usize, 1, 3, 8, 17, 40] {
                    for &n in &sizes {
                        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                        let mut want = vec![0.0; m * n];
                        super::super::gemm::scalar(m, k, n, &a, &b, &mut want);
                        let pb = PackedB::new(kind, k, n, &b).unwrap();
                        let mut got = vec![f32::NAN; m * n];
                        pb.matmul(m, &a, &mut got).unwrap();
                        close(&want, &got, k);
                        let pa = PackedA::new(kind, m, k, &a).unwrap();
                        let mut got = vec![f32::NAN; m * n];
                        pa.matmul(n, &b, &mut got).unwrap();
                        close(&want, &got, k);
                    }
                }
            }
        }
    }

    #[test]
    fn packing_into_a_dirty_slice_matches_packing_afresh() {
        let mut rng = Rng::new(5);
        for nr in [1usize, 4, 8, 16] {
            for k in [1usize, 2, 5] {
                for n in [0usize, 1, 3, 7, 8, 9, 16, 17, 33] {
                    let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                    let mut want = Vec::new();
                    pack_panels(nr, k, n, &b, &mut want);
                    let mut got = vec![f32::NAN; want.len()];
                    pack_panels_into(nr, k, n, &b, &mut got);
                    assert_eq!(
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "nr={nr} k={k} n={n}"
                    );
                }
            }
        }
        // Wrong lengths leave the slice alone.
        let mut out = vec![7.0; 5];
        pack_panels_into(4, 1, 3, &[1.0; 3], &mut out);
        assert_eq!(out, vec![7.0; 5]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let kind = super::super::kernels().kind;
        assert!(PackedB::new(kind, 3, 4, &[0.0; 11]).is_err());
        let pb = PackedB::new(kind, 3, 4, &[1.0; 12]).unwrap();
        assert!(pb.matmul(2, &[0.0; 5], &mut [0.0; 8]).is_err());
        assert!(pb.matmul(2, &[0.0; 6], &mut [0.0; 7]).is_err());
        let pa = PackedA::new(kind, 2, 3, &[1.0; 6]).unwrap();
        assert!(pa.matmul(4, &[0.0; 11], &mut [0.0; 8]).is_err());
        assert!(pa.matmul_panels(4, &[0.0; 3], &mut [0.0; 8]).is_err());
        assert!(PackedA::new(kind, usize::MAX, 2, &[]).is_err());
    }
}
