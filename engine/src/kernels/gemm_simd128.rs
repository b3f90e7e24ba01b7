//! wasm32 `simd128` GEMM: a 4×8 tile (eight `f32x4` accumulators) over packed panels.
//! Compiled only with `-C target-feature=+simd128`.

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
    let mut c0l = f32x4_splat(0.0);
    let mut c0h = c0l;
    let mut c1l = c0l;
    let mut c1h = c0l;
    let mut c2l = c0l;
    let mut c2h = c0l;
    let mut c3l = c0l;
    let mut c3h = c0l;
    // SAFETY: the assert above bounds every load (`p < k`) and store (`MR` rows `ldc` apart);
    // `v128_load` has no alignment requirement.
    unsafe {
        for p in 0..k {
            let bl = v128_load(b.add(p * 2));
            let bh = v128_load(b.add(p * 2 + 1));
            let ar = a.add(p * MR);
            let a0 = f32x4_splat(*ar);
            c0l = f32x4_add(c0l, f32x4_mul(a0, bl));
            c0h = f32x4_add(c0h, f32x4_mul(a0, bh));
            let a1 = f32x4_splat(*ar.add(1));
            c1l = f32x4_add(c1l, f32x4_mul(a1, bl));
            c1h = f32x4_add(c1h, f32x4_mul(a1, bh));
            let a2 = f32x4_splat(*ar.add(2));
            c2l = f32x4_add(c2l, f32x4_mul(a2, bl));
            c2h = f32x4_add(c2h, f32x4_mul(a2, bh));
            let a3 = f32x4_splat(*ar.add(3));
            c3l = f32x4_add(c3l, f32x4_mul(a3, bl));
            c3h = f32x4_add(c3h, f32x4_mul(a3, bh));
        }
        store_rows(
            c.as_mut_ptr(),
            ldc,
            [(c0l, c0h), (c1l, c1h), (c2l, c2h), (c3l, c3h)],
        );
    }
}

/// Stores a 4×8 tile held as four `(low, high)` row halves: row `r` at `c[r·ldc..r·ldc + 8]`.
///
/// # Safety
/// `c` must be valid for writes of `3·ldc + 8` values.
#[inline(always)]
pub(crate) unsafe fn store_rows(c: *mut f32, ldc: usize, rows: [(v128, v128); 4]) {
    for (r, (lo, hi)) in rows.into_iter().enumerate() {
        // SAFETY: the caller's bound covers row `r ≤ 3`, values `r·ldc .. r·ldc + 8`.
        unsafe {
            v128_store(c.add(r * ldc) as *mut v128, lo);
            v128_store(c.add(r * ldc + 4) as *mut v128, hi);
        }
    }
}
