//! x86_64 AVX2 + FMA GEMM: a 4×16 tile (eight 256-bit accumulators) over packed panels.
//! Reached only through the kernel table, which holds it only when the CPU has AVX2 and FMA.

use std::arch::x86_64::*;

use super::gemm::packed_driver;

pub(crate) const MR: usize = 4;
pub(crate) const NR: usize = 16;

/// Entry of the table; see [`super::gemm::GemmFn`] for the contract.
pub(crate) fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        // Never taken: `Kernels::for_kind` refuses this kind without the features.
        super::gemm::packed(m, k, n, a, b, c);
        return;
    }
    // SAFETY: the CPU has AVX2 and FMA (checked just above).
    unsafe { gemm_avx2(m, k, n, a, b, c) }
}

/// The 4×16 micro-kernel behind a feature check, for [`super::prepacked`] (which only holds it
/// for a CPU with AVX2 and FMA; the check is a cached load).
pub(crate) fn micro_entry(k: usize, ap: &[f32], bp: &[f32], tile: &mut [f32]) {
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { micro(k, ap, bp, tile) }
    } else {
        super::gemm::micro_generic::<MR, NR>(k, ap, bp, tile);
    }
}

#[target_feature(enable = "avx2,fma")]
fn gemm_avx2(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    packed_driver::<MR, NR, _>(m, k, n, a, b, c, |k, ap, bp, tile| micro(k, ap, bp, tile));
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn micro(k: usize, ap: &[f32], bp: &[f32], tile: &mut [f32]) {
    assert!(ap.len() >= k * MR && bp.len() >= k * NR && tile.len() >= MR * NR);
    let a = ap.as_ptr();
    let b = bp.as_ptr();
    // SAFETY: the assert above bounds every load (`p < k`) and store (`r < MR`, `NR` wide).
    unsafe {
        let mut c0l = _mm256_setzero_ps();
        let mut c0h = _mm256_setzero_ps();
        let mut c1l = _mm256_setzero_ps();
        let mut c1h = _mm256_setzero_ps();
        let mut c2l = _mm256_setzero_ps();
        let mut c2h = _mm256_setzero_ps();
        let mut c3l = _mm256_setzero_ps();
        let mut c3h = _mm256_setzero_ps();
        for p in 0..k {
            let bl = _mm256_loadu_ps(b.add(p * NR));
            let bh = _mm256_loadu_ps(b.add(p * NR + 8));
            let ar = a.add(p * MR);
            let a0 = _mm256_broadcast_ss(&*ar);
            c0l = _mm256_fmadd_ps(a0, bl, c0l);
            c0h = _mm256_fmadd_ps(a0, bh, c0h);
            let a1 = _mm256_broadcast_ss(&*ar.add(1));
            c1l = _mm256_fmadd_ps(a1, bl, c1l);
            c1h = _mm256_fmadd_ps(a1, bh, c1h);
            let a2 = _mm256_broadcast_ss(&*ar.add(2));
            c2l = _mm256_fmadd_ps(a2, bl, c2l);
            c2h = _mm256_fmadd_ps(a2, bh, c2h);
            let a3 = _mm256_broadcast_ss(&*ar.add(3));
            c3l = _mm256_fmadd_ps(a3, bl, c3l);
            c3h = _mm256_fmadd_ps(a3, bh, c3h);
        }
        let t = tile.as_mut_ptr();
        _mm256_storeu_ps(t, c0l);
        _mm256_storeu_ps(t.add(8), c0h);
        _mm256_storeu_ps(t.add(16), c1l);
        _mm256_storeu_ps(t.add(24), c1h);
        _mm256_storeu_ps(t.add(32), c2l);
        _mm256_storeu_ps(t.add(40), c2h);
        _mm256_storeu_ps(t.add(48), c3l);
        _mm256_storeu_ps(t.add(56), c3h);
    }
}
