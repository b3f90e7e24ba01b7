//! wasm32 relaxed-SIMD f32 GEMM: a 4×8 tile (eight `f32x4` accumulators) over packed panels,
//! one `f32x4_relaxed_madd` per four multiply-adds. Compiled only with
//! `-C target-feature=+simd128,+relaxed-simd` (the second wasm build of `cargo xtask npm`).
//!
//! `f32x4_relaxed_madd` may round once (fused) or twice (multiply, then add) depending on the
//! engine and CPU; both stay within [`super::check::GEMM_REL_TOL`] of the scalar twin, which
//! `check::selftest` verifies in every build that has this kernel. The tile is the simd128
//! kernel's 4×8: a 6×8 tile (twelve accumulators) measured slower in Chromium 156 (24–25
//! against 27–29 GFLOP/s for the simd128 4×8 at 256³–512³ in the same run).

use core::arch::wasm32::*;

use super::gemm::packed_driver;

const MR: usize = 4;
const NR: usize = 8;

/// Entry of the table; see [`super::gemm::GemmFn`] for the contract.
pub(crate) fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    packed_driver::<MR, NR, _>(m, k, n, a, b, c, micro);
}

/// The 4×8 micro-kernel (also driven by [`super::prepacked`]).
#[inline(always)]
pub(crate) fn micro(k: usize, ap: &[f32], bp: &[f32], tile: &mut [f32]) {
    micro_to(k, ap, bp, tile, NR);
}

/// The 4×8 tile stored straight into `C`: row `r` at `c[r·ldc..r·ldc + 8]` (for
/// [`super::prepacked`], whole tiles inside `C`, so no round trip through a tile buffer).
#[inline(always)]
pub(crate) fn micro_to(k: usize, ap: &[f32], bp: &[f32], c: &mut [f32], ldc: usize) {
    assert!(
        ap.len() >= k * MR && bp.len() >= k * NR && ldc >= NR && c.len() >= (MR - 1) * ldc + NR
    );
    let a = ap.as_ptr();
    let b = bp.as_ptr() as *const v128;
    let z = f32x4_splat(0.0);
    let (mut c0l, mut c0h, mut c1l, mut c1h) = (z, z, z, z);
    let (mut c2l, mut c2h, mut c3l, mut c3h) = (z, z, z, z);
    // SAFETY: the assert above bounds every load (`p < k`: `MR` values of A at `p·MR`, two
    // vectors of B at `p·NR`) and the stores (`MR` rows of `NR`, `ldc` apart); `v128_load`/`v128_store` have no
    // alignment requirement.
    unsafe {
        for p in 0..k {
            let bl = v128_load(b.add(p * 2));
            let bh = v128_load(b.add(p * 2 + 1));
            let ar = a.add(p * MR);
            let x = f32x4_splat(*ar);
            c0l = f32x4_relaxed_madd(x, bl, c0l);
            c0h = f32x4_relaxed_madd(x, bh, c0h);
            let x = f32x4_splat(*ar.add(1));
            c1l = f32x4_relaxed_madd(x, bl, c1l);
            c1h = f32x4_relaxed_madd(x, bh, c1h);
            let x = f32x4_splat(*ar.add(2));
            c2l = f32x4_relaxed_madd(x, bl, c2l);
            c2h = f32x4_relaxed_madd(x, bh, c2h);
            let x = f32x4_splat(*ar.add(3));
            c3l = f32x4_relaxed_madd(x, bl, c3l);
            c3h = f32x4_relaxed_madd(x, bh, c3h);
        }
        super::gemm_simd128::store_rows(
            c.as_mut_ptr(),
            ldc,
            [(c0l, c0h), (c1l, c1h), (c2l, c2h), (c3l, c3h)],
        );
    }
}
