//! f32 matrix product `C[m×n] = A[m×k] · B[k×n]`, all row-major, `C` overwritten.

use super::{KernelKind, kernels};
use crate::{Error, Result};

/// A GEMM kernel. Callers guarantee `a.len() == m*k`, `b.len() == k*n`, `c.len() == m*n`.
pub(crate) type GemmFn = fn(usize, usize, usize, &[f32], &[f32], &mut [f32]);

/// `C = A · B` with the process's kernel ([`kernels`]). `a` is `m×k`, `b` is `k×n`, `c` is `m×n`,
/// all row-major; `c` is overwritten. Errors if a slice length does not match its shape.
pub fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
    check_lengths(m, k, n, a, b, c)?;
    (kernels().gemm)(m, k, n, a, b, c);
    Ok(())
}

/// [`gemm`] with a chosen kernel, for tests and benchmarks. Errors if this build or CPU cannot
/// run `kind`, or if a slice length does not match its shape.
pub fn gemm_with(
    kind: KernelKind,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<()> {
    check_lengths(m, k, n, a, b, c)?;
    let table = super::Kernels::for_kind(kind).ok_or_else(|| {
        Error::Invalid(format!(
            "kernel `{}` is not available on this host",
            kind.name()
        ))
    })?;
    (table.gemm)(m, k, n, a, b, c);
    Ok(())
}

/// [`gemm`] with the relaxed-SIMD micro-kernel (`f32x4_relaxed_madd`, 6×8 tile), for tests and
/// benchmarks. Errors unless this is a [`super::RELAXED_SIMD`] build, or if a slice length
/// does not match its shape.
pub fn gemm_relaxed(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<()> {
    check_lengths(m, k, n, a, b, c)?;
    let f = relaxed_entry().ok_or_else(|| {
        Error::Invalid("kernel `relaxed-simd` is not compiled into this build".into())
    })?;
    f(m, k, n, a, b, c);
    Ok(())
}

/// The relaxed-SIMD entry, in builds that have it.
pub(crate) fn relaxed_entry() -> Option<GemmFn> {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return Some(super::gemm_relaxed::gemm);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "relaxed-simd")))]
    None
}

fn check_lengths(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &[f32]) -> Result<()> {
    for (name, rows, cols, len) in [
        ("A", m, k, a.len()),
        ("B", k, n, b.len()),
        ("C", m, n, c.len()),
    ] {
        match rows.checked_mul(cols) {
            Some(want) if want == len => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "gemm: {name} is {rows}×{cols} but its slice holds {len} values"
                )));
            }
        }
    }
    Ok(())
}

/// The entry of `kind` compiled into this build, if any.
pub(crate) fn entry(kind: KernelKind) -> Option<GemmFn> {
    match kind {
        KernelKind::Scalar => Some(scalar),
        KernelKind::Packed => Some(packed),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        KernelKind::Simd128 => Some(super::gemm_simd128::gemm),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2Fma => Some(super::gemm_x86::gemm),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The reference twin: a plain triple loop, summing over `k` in order. The oracle.
pub fn scalar(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
}

/// Copies B into column panels of width `NR`, each `k` rows of `NR` values, zero-padded on the
/// right: panel `q` row `p` is `b[p][q*NR .. q*NR+NR]`.
pub(crate) fn pack_b<const NR: usize>(k: usize, n: usize, b: &[f32]) -> Vec<f32> {
    let mut out = Vec::new();
    super::prepacked::pack_panels(NR, k, n, b, &mut out);
    out
}

/// Copies rows `i0..i0+MR` of A (fewer at the bottom edge, zero-padded) so that step `p`
/// holds the `MR` values `a[i0..][p]` together.
#[inline(always)]
pub(crate) fn pack_a<const MR: usize>(i0: usize, m: usize, k: usize, a: &[f32], out: &mut [f32]) {
    super::prepacked::pack_strip(MR, i0, MR.min(m - i0), k, a, out);
}

/// The blocked driver shared by every packed kernel: packs B once, then A one `MR`-row strip
/// at a time, runs `micro` on each `MR×NR` tile and writes the part of the tile inside `C`.
///
/// `micro(k, a_strip, b_panel, tile)` must set `tile[r*NR + j] = Σ_p a_strip[p*MR + r] ·
/// b_panel[p*NR + j]`.
#[inline(always)]
pub(crate) fn packed_driver<const MR: usize, const NR: usize, F>(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    mut micro: F,
) where
    F: FnMut(usize, &[f32], &[f32], &mut [f32]),
{
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    let bp = pack_b::<NR>(k, n, b);
    let mut ap = vec![0.0f32; k * MR];
    let mut tile = vec![0.0f32; MR * NR];
    for i0 in (0..m).step_by(MR) {
        pack_a::<MR>(i0, m, k, a, &mut ap);
        let h = MR.min(m - i0);
        for (q, panel) in bp.chunks_exact(k * NR).enumerate() {
            micro(k, &ap, panel, &mut tile);
            let j0 = q * NR;
            let w = NR.min(n - j0);
            for r in 0..h {
                let dst = (i0 + r) * n + j0;
                super::copy_short(&mut c[dst..dst + w], &tile[r * NR..r * NR + w]);
            }
        }
    }
}

pub(crate) const P_MR: usize = 4;
pub(crate) const P_NR: usize = 8;

/// Portable blocked kernel: the shared packed driver with a 4×8 tile of plain accumulators, which
/// compilers keep in registers and often vectorize.
pub fn packed(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    packed_driver::<P_MR, P_NR, _>(m, k, n, a, b, c, micro_portable);
}

/// The portable 4×8 micro-kernel (also driven by [`super::prepacked`]).
#[inline(always)]
pub(crate) fn micro_portable(k: usize, ap: &[f32], bp: &[f32], tile: &mut [f32]) {
    micro_generic::<P_MR, P_NR>(k, ap, bp, tile);
}

/// The portable micro-kernel for any `MR×NR` tile: plain accumulators that compilers keep in
/// registers and often vectorize (also the x86 entry's fallback).
#[inline(always)]
pub(crate) fn micro_generic<const MR: usize, const NR: usize>(
    k: usize,
    ap: &[f32],
    bp: &[f32],
    tile: &mut [f32],
) {
    let mut acc = [[0.0f32; NR]; MR];
    for (av, bv) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)).take(k) {
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] += av[r] * bv[j];
            }
        }
    }
    for r in 0..MR {
        tile[r * NR..(r + 1) * NR].copy_from_slice(&acc[r]);
    }
}
