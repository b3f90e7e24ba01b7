//! XNOR-popcount products for binarized layers: activations and weights are signs (±1) packed
//! 64 to a `u64`, and `Σ_p a_p·w_p = k − 2·popcount(a XOR w)` over the `k` valid bits.
//!
//! Bit convention: bit `p % 64` of word `p / 64` is **set for −1** (a negative value) and clear
//! for +1 (zero, positive values and NaN count as +1). Each row takes `⌈k/64⌉` words and the bits
//! past `k` in its last word are zero ([`pack_signs`] writes them so, [`BinaryMatrix::from_bits`]
//! and the products check them), so they never contribute to a popcount.
//!
//! `C[i][j] = α_j · s_i · dot(i, j)` with a per-output-channel scale `α` and an optional
//! per-row activation scale `s`. [`BinaryMatrix::dots_scalar`] (a bit-by-bit ±1 loop) is the
//! reference twin of the fast dots ([`XnorKind`]): `Words` takes word popcounts
//! (`u64::count_ones`) in a 2×4 register tile over a word-major copy of `W`, compiled with the
//! `popcnt` instruction on x86_64 CPUs that have it (wasm has `i64.popcnt` natively); `Avx512`
//! (x86_64 with AVX-512 VPOPCNTDQ, detected at run time) XORs one activation word against the
//! same word of 8 outputs at once and counts with `_mm512_popcnt_epi64` (over the same
//! word-major copy); `Simd128` (wasm `simd128` builds only) XORs 128 bits at a time and counts
//! bytes with `i8x16_popcnt`, summed in bytes for up to 31 steps before widening. In V8 on x86 the vector
//! byte popcount is a multi-instruction `pshufb` sequence, and the kind measured slower than the
//! word kernel at 256³, so wasm builds still select `Words` ([`selected`]). Dots are exact
//! integers; the scaling is the same expression on every path, so `C` is bit-identical too.

use crate::{Error, Result};

/// Words per packed row of `k` signs.
pub fn words(k: usize) -> usize {
    k.div_ceil(64)
}

/// Packs the signs of `x` (row-major `rows × k`): `rows · words(k)` words, bit set for
/// `x < 0`, tail bits zero. Errors if `x.len() != rows · k`.
pub fn pack_signs(rows: usize, k: usize, x: &[f32]) -> Result<Vec<u64>> {
    if rows.checked_mul(k) != Some(x.len()) {
        return Err(Error::Invalid(format!(
            "pack_signs: {} values for {rows}×{k}",
            x.len()
        )));
    }
    let wpr = words(k);
    let mut out = vec![0u64; rows * wpr];
    for r in 0..rows {
        for (p, &v) in x[r * k..(r + 1) * k].iter().enumerate() {
            if v < 0.0 {
                out[r * wpr + p / 64] |= 1u64 << (p % 64);
            }
        }
    }
    Ok(out)
}

/// The ±1 value of sign `p` of a packed row.
fn sign(row: &[u64], p: usize) -> i32 {
    1 - 2 * ((row[p / 64] >> (p % 64)) & 1) as i32
}

/// Mask of the valid bits of a row's last word.
fn tail_mask(k: usize) -> u64 {
    match k % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// Checks a packed `rows × k` matrix: its length and zero tail bits.
fn check_bits(what: &str, rows: usize, k: usize, bits: &[u64]) -> Result<()> {
    let wpr = words(k);
    if rows.checked_mul(wpr) != Some(bits.len()) {
        return Err(Error::Invalid(format!(
            "xnor: {what} holds {} words for {rows} rows of {k} signs",
            bits.len()
        )));
    }
    if wpr > 0 {
        let mask = tail_mask(k);
        if bits.chunks_exact(wpr).any(|row| row[wpr - 1] & !mask != 0) {
            return Err(Error::Invalid(format!(
                "xnor: {what} has bits set past k = {k}"
            )));
        }
    }
    Ok(())
}

/// A binarized weight matrix `W` (`rows × k`, one row per output) with its per-row scale `α`.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryMatrix {
    rows: usize,
    k: usize,
    bits: Vec<u64>,
    /// The same words stored word-major, `words(k) × ⌈rows/16⌉·16` (zero columns past `rows`),
    /// for the kernel that vectorizes across outputs.
    bits_t: Vec<u64>,
    alpha: Vec<f32>,
}

/// One implementation of the XNOR dots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XnorKind {
    /// Word popcounts (`u64::count_ones`) in a 2×4 tile over the word-major copy of `W`;
    /// `popcnt` instruction where present.
    Words,
    /// x86_64 AVX-512 VPOPCNTDQ: eight outputs per 512-bit XOR + popcount, a 4×16 tile.
    Avx512,
    /// wasm32 `simd128`: 128-bit XOR + `i8x16_popcnt`, byte counts summed in `u8x16` for up
    /// to 31 steps, then widened to `i32x4`; a 2×4 tile. Only in `simd128` builds; not
    /// [`selected`] (measured slower than `Words` in V8).
    Simd128,
}

impl XnorKind {
    /// Short stable name.
    pub fn name(self) -> &'static str {
        match self {
            XnorKind::Words => "xnor-words",
            XnorKind::Avx512 => "xnor-avx512",
            XnorKind::Simd128 => "xnor-simd128",
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512_popcnt() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vpopcntdq")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512_popcnt() -> bool {
    false
}

/// This build has the wasm `simd128` kind.
const SIMD128: bool = cfg!(all(target_arch = "wasm32", target_feature = "simd128"));

/// The XNOR kinds this build and CPU can run, fastest last (the last is [`selected`]). The
/// `simd128` kind is tested and benchmarked but not selected: in headless Chromium it measured
/// slower than the word kernel's scalar `i64.popcnt` at 256³ and at batch 1 (see
/// `docs/KERNELS.md`).
pub fn available() -> Vec<XnorKind> {
    let mut v = Vec::new();
    if SIMD128 {
        v.push(XnorKind::Simd128);
    }
    v.push(XnorKind::Words);
    if has_avx512_popcnt() {
        v.push(XnorKind::Avx512);
    }
    v
}

/// The kind [`BinaryMatrix::dots`] uses: AVX-512 VPOPCNTDQ when detected, else the word kernel
/// (also in wasm, where it beat [`XnorKind::Simd128`]).
pub fn selected() -> XnorKind {
    if has_avx512_popcnt() {
        XnorKind::Avx512
    } else {
        XnorKind::Words
    }
}

/// Output columns per step of the word-major layout.
const COLS_T: usize = 16;

impl BinaryMatrix {
    /// The signs of `w` (row-major `rows × k`) with scales `alpha` (one per row). Errors if a
    /// length is wrong.
    pub fn from_f32(rows: usize, k: usize, w: &[f32], alpha: Vec<f32>) -> Result<BinaryMatrix> {
        Self::from_bits(rows, k, pack_signs(rows, k, w)?, alpha)
    }

    /// Already packed signs ([`pack_signs`] layout). Errors if a length is wrong or a tail bit
    /// is set.
    pub fn from_bits(rows: usize, k: usize, bits: Vec<u64>, alpha: Vec<f32>) -> Result<Self> {
        check_bits("W", rows, k, &bits)?;
        if alpha.len() != rows {
            return Err(Error::Invalid(format!(
                "xnor: {} scales for {rows} rows",
                alpha.len()
            )));
        }
        let wpr = words(k);
        let npad = rows.div_ceil(COLS_T) * COLS_T;
        let mut bits_t = vec![0u64; wpr * npad];
        for j in 0..rows {
            for p in 0..wpr {
                bits_t[p * npad + j] = bits[j * wpr + p];
            }
        }
        Ok(BinaryMatrix {
            rows,
            k,
            bits,
            bits_t,
            alpha,
        })
    }

    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Signs per row.
    pub fn k(&self) -> usize {
        self.k
    }

    fn check(&self, m: usize, a: &[u64], out: usize) -> Result<()> {
        check_bits("A", m, self.k, a)?;
        if m.checked_mul(self.rows) != Some(out) {
            return Err(Error::Invalid(format!(
                "xnor: output holds {out} values for {m}×{}",
                self.rows
            )));
        }
        Ok(())
    }

    /// The reference twin: `out[i][j] = Σ_p a_ip·w_jp` with every sign unpacked to ±1, in
    /// order. `a` holds `m` packed rows; `out` is `m × rows`. Errors if a length is wrong or
    /// a tail bit of `a` is set.
    pub fn dots_scalar(&self, m: usize, a: &[u64], out: &mut [i32]) -> Result<()> {
        self.check(m, a, out.len())?;
        let (n, k, wpr) = (self.rows, self.k, words(self.k));
        for i in 0..m {
            let ar = &a[i * wpr..(i + 1) * wpr];
            for j in 0..n {
                let wr = &self.bits[j * wpr..(j + 1) * wpr];
                out[i * n + j] = (0..k).map(|p| sign(ar, p) * sign(wr, p)).sum();
            }
        }
        Ok(())
    }

    /// The fast dots, `k − 2·popcount(a XOR w)`, with the fastest available [`XnorKind`]; same
    /// contract as [`Self::dots_scalar`].
    pub fn dots(&self, m: usize, a: &[u64], out: &mut [i32]) -> Result<()> {
        self.dots_with(selected(), m, a, out)
    }

    /// [`Self::dots`] with a chosen kind. Errors if this CPU cannot run it or a length is wrong.
    pub fn dots_with(&self, kind: XnorKind, m: usize, a: &[u64], out: &mut [i32]) -> Result<()> {
        self.check(m, a, out.len())?;
        if kind == XnorKind::Avx512 {
            #[cfg(target_arch = "x86_64")]
            if has_avx512_popcnt() {
                // SAFETY: the CPU has AVX-512F and VPOPCNTDQ (checked just above).
                unsafe { avx512::dots(self, m, a, out) };
                return Ok(());
            }
            return Err(Error::Invalid(
                "xnor kernel `xnor-avx512` is not available on this host".into(),
            ));
        }
        if kind == XnorKind::Simd128 {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            {
                simd128::dots(self, m, a, out);
                return Ok(());
            }
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            return Err(Error::Invalid(
                "xnor kernel `xnor-simd128` exists only in wasm simd128 builds".into(),
            ));
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has the `popcnt` instruction (checked just above).
            unsafe { dots_popcnt(self, m, a, out) };
            return Ok(());
        }
        dots_body(self, m, a, out);
        Ok(())
    }

    /// `C[i][j] = α_j · s_i · dot(i, j)` with the fast dots; `row_scale` holds `s` (one per row
    /// of `A`) or is empty for `s = 1`. Errors if a length is wrong.
    pub fn matmul_t(&self, m: usize, a: &[u64], row_scale: &[f32], c: &mut [f32]) -> Result<()> {
        let mut d = vec![0i32; c.len()];
        self.dots(m, a, &mut d)?;
        self.scale(m, &d, row_scale, c)
    }

    /// [`Self::matmul_t`] on the reference dots.
    pub fn matmul_t_scalar(
        &self,
        m: usize,
        a: &[u64],
        row_scale: &[f32],
        c: &mut [f32],
    ) -> Result<()> {
        let mut d = vec![0i32; c.len()];
        self.dots_scalar(m, a, &mut d)?;
        self.scale(m, &d, row_scale, c)
    }

    fn scale(&self, m: usize, d: &[i32], row_scale: &[f32], c: &mut [f32]) -> Result<()> {
        if !row_scale.is_empty() && row_scale.len() != m {
            return Err(Error::Invalid(format!(
                "xnor: {} row scales for {m} rows",
                row_scale.len()
            )));
        }
        let n = self.rows;
        if n == 0 {
            return Ok(());
        }
        // Row by row with zipped slices, so the loop has no bounds checks and vectorizes.
        for (i, (c, d)) in c.chunks_exact_mut(n).zip(d.chunks_exact(n)).enumerate() {
            let s = row_scale.get(i).copied().unwrap_or(1.0);
            for ((c, &d), &a) in c.iter_mut().zip(d).zip(&self.alpha) {
                *c = a * (s * d as f32);
            }
        }
        Ok(())
    }
}

/// [`dots_body`] compiled with the `popcnt` instruction.
///
/// # Safety
/// The CPU must have `popcnt`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn dots_popcnt(w: &BinaryMatrix, m: usize, a: &[u64], out: &mut [i32]) {
    dots_body(w, m, a, out);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! AVX-512 VPOPCNTDQ: one activation word broadcast, XORed with that word of 8 outputs
    //! (the word-major copy), counted with `_mm512_popcnt_epi64`; 4 rows × 16 outputs per tile.

    use super::{BinaryMatrix, COLS_T, words};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F and AVX-512 VPOPCNTDQ.
    #[target_feature(enable = "avx2,avx512f,avx512vpopcntdq")]
    pub(super) unsafe fn dots(w: &BinaryMatrix, m: usize, a: &[u64], out: &mut [i32]) {
        let mut i0 = 0;
        while i0 + 4 <= m {
            tile::<4>(w, i0, a, out);
            i0 += 4;
        }
        while i0 < m {
            tile::<1>(w, i0, a, out);
            i0 += 1;
        }
    }

    #[target_feature(enable = "avx2,avx512f,avx512vpopcntdq")]
    fn tile<const R: usize>(w: &BinaryMatrix, i0: usize, a: &[u64], out: &mut [i32]) {
        let (n, k, wpr) = (w.rows, w.k, words(w.k));
        let npad = n.div_ceil(COLS_T) * COLS_T;
        let rows = &a[i0 * wpr..(i0 + R) * wpr];
        assert!(w.bits_t.len() >= wpr * npad && out.len() >= (i0 + R) * n);
        let mut counts = [0i64; COLS_T];
        for j0 in (0..npad).step_by(COLS_T) {
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            // SAFETY: `p < wpr` and `j0 + 16 ≤ npad` keep both 8-word loads inside `bits_t`
            // (asserted length); stores into `out` stay below `(i0 + R)·n` (asserted length)
            // and `counts` holds 16; the unaligned load/store intrinsics are used.
            unsafe {
                let base = w.bits_t.as_ptr();
                for p in 0..wpr {
                    let y0 = _mm512_loadu_si512(base.add(p * npad + j0) as *const __m512i);
                    let y1 = _mm512_loadu_si512(base.add(p * npad + j0 + 8) as *const __m512i);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_epi64(rows[r * wpr + p] as i64);
                        acc[0] =
                            _mm512_add_epi64(acc[0], _mm512_popcnt_epi64(_mm512_xor_si512(x, y0)));
                        acc[1] =
                            _mm512_add_epi64(acc[1], _mm512_popcnt_epi64(_mm512_xor_si512(x, y1)));
                    }
                }
                let full = j0 + COLS_T <= n;
                let kk = _mm256_set1_epi32(k as i32);
                for (r, acc) in acc.iter().enumerate() {
                    let dst = (i0 + r) * n + j0;
                    if full {
                        // dot = k − 2·count, eight at a time; `dst + 16 ≤ (i0 + R)·n ≤ out.len()`.
                        for (h, v) in acc.iter().enumerate() {
                            let cnt = _mm512_cvtepi64_epi32(*v);
                            let d = _mm256_sub_epi32(kk, _mm256_slli_epi32::<1>(cnt));
                            _mm256_storeu_si256(
                                out.as_mut_ptr().add(dst + 8 * h) as *mut __m256i,
                                d,
                            );
                        }
                    } else {
                        _mm512_storeu_si512(counts.as_mut_ptr() as *mut __m512i, acc[0]);
                        _mm512_storeu_si512(counts.as_mut_ptr().add(8) as *mut __m512i, acc[1]);
                        for (q, &cnt) in counts[..n - j0].iter().enumerate() {
                            out[dst + q] = k as i32 - 2 * cnt as i32;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    //! wasm32 `simd128`: two words (128 bits) of an activation row XORed with the same two words
    //! of a weight row, `i8x16_popcnt` per byte, the byte counts summed in a `u8x16` per dot. A
    //! step adds at most 8 to a lane, so after at most [`FLUSH`] steps (31 · 8 = 248 ≤ 255) the
    //! bytes are widened (`u16x8_extadd_pairwise_u8x16`, `i32x4_extadd_pairwise_u16x8`) into an
    //! `i32x4` sum. A 2×4 tile (2 activation rows × 4 outputs) reuses each loaded activation
    //! vector for 4 outputs and each weight vector for 2 rows. An odd last word of a row is
    //! loaded alone (`v128_load64_zero`: the upper half is zero in both operands, so it counts
    //! nothing).

    use super::{BinaryMatrix, words};
    use core::arch::wasm32::*;

    /// Steps of 128 bits summed in bytes before widening: each adds ≤ 8 per lane.
    const FLUSH: usize = 31;

    pub(super) fn dots(w: &BinaryMatrix, m: usize, a: &[u64], out: &mut [i32]) {
        let mut i0 = 0;
        while i0 + 2 <= m {
            cols::<2>(w, i0, a, out);
            i0 += 2;
        }
        if i0 < m {
            cols::<1>(w, i0, a, out);
        }
    }

    fn cols<const R: usize>(w: &BinaryMatrix, i0: usize, a: &[u64], out: &mut [i32]) {
        let n = w.rows;
        let mut j0 = 0;
        while j0 + 4 <= n {
            tile::<R, 4>(w, i0, j0, a, out);
            j0 += 4;
        }
        while j0 < n {
            tile::<R, 1>(w, i0, j0, a, out);
            j0 += 1;
        }
    }

    /// Widens byte counts into the `i32x4` sum.
    #[inline(always)]
    fn widen(sum: v128, bytes: v128) -> v128 {
        i32x4_add(
            sum,
            i32x4_extadd_pairwise_u16x8(u16x8_extadd_pairwise_u8x16(bytes)),
        )
    }

    #[inline(always)]
    fn tile<const R: usize, const C: usize>(
        w: &BinaryMatrix,
        i0: usize,
        j0: usize,
        a: &[u64],
        out: &mut [i32],
    ) {
        let (n, k, wpr) = (w.rows, w.k, words(w.k));
        let pairs = wpr / 2;
        assert!(
            a.len() >= (i0 + R) * wpr
                && w.bits.len() >= (j0 + C) * wpr
                && out.len() >= (i0 + R - 1) * n + j0 + C
        );
        let (ap, wp) = (a.as_ptr(), w.bits.as_ptr());
        // Per output `c` of the tile, per row `r`.
        let mut sums = [[i32x4_splat(0); R]; C];
        let mut p = 0;
        while p < pairs {
            let end = pairs.min(p + FLUSH);
            let mut acc = [[u8x16_splat(0); R]; C];
            for s in p..end {
                // SAFETY: `2s + 1 < wpr`, so both words of each 16-byte load lie in row
                // `i0 + r < i0 + R` of `a` / row `j0 + c < j0 + C` of `bits` (asserted lengths);
                // `v128_load` has no alignment requirement.
                unsafe {
                    let x: [v128; R] =
                        core::array::from_fn(|r| v128_load(ap.add((i0 + r) * wpr + 2 * s).cast()));
                    for (c, acc) in acc.iter_mut().enumerate() {
                        let y = v128_load(wp.add((j0 + c) * wpr + 2 * s).cast());
                        for (acc, &x) in acc.iter_mut().zip(&x) {
                            *acc = u8x16_add(*acc, i8x16_popcnt(v128_xor(x, y)));
                        }
                    }
                }
            }
            for (sum, &bytes) in sums.iter_mut().flatten().zip(acc.iter().flatten()) {
                *sum = widen(*sum, bytes);
            }
            p = end;
        }
        if wpr % 2 == 1 {
            let q = wpr - 1;
            // SAFETY: word `q < wpr` of the same rows as above; `v128_load64_zero` reads 8
            // bytes, unaligned allowed.
            unsafe {
                let x: [v128; R] =
                    core::array::from_fn(|r| v128_load64_zero(ap.add((i0 + r) * wpr + q)));
                for (c, sums) in sums.iter_mut().enumerate() {
                    let y = v128_load64_zero(wp.add((j0 + c) * wpr + q));
                    for (sum, &x) in sums.iter_mut().zip(&x) {
                        *sum = widen(*sum, i8x16_popcnt(v128_xor(x, y)));
                    }
                }
            }
        }
        for (c, sums) in sums.iter().enumerate() {
            for (r, &v) in sums.iter().enumerate() {
                let cnt = i32x4_extract_lane::<0>(v)
                    + i32x4_extract_lane::<1>(v)
                    + i32x4_extract_lane::<2>(v)
                    + i32x4_extract_lane::<3>(v);
                out[(i0 + r) * n + j0 + c] = k as i32 - 2 * cnt;
            }
        }
    }
}

/// Rows of `A` and outputs per register tile of the word kernel.
const TR: usize = 2;
const TC: usize = 4;

/// The word kernel over the word-major copy: a `TR × TC` tile loads one word of each of its
/// `TR` activation rows and the same word of `TC` adjacent outputs (contiguous in `bits_t`),
/// and adds the `TR·TC` word popcounts. Reading `W` word-major keeps one running offset for
/// all `TC` outputs instead of one pointer per weight row; V8 on x86_64 has few free integer
/// registers, and this layout measured 1.4–2× faster in Node than the row-major 2×4 tile at
/// 256³ and LeNet's fc1 at batch 64 (2026-11-30; today's figures: the ignored Node probe
/// `xnor_words_in_node` in `tests/tests/kernels_node.rs`). Outputs past `rows` fall in the zero
/// padding of `bits_t` and are not stored.
#[inline(always)]
fn dots_body(w: &BinaryMatrix, m: usize, a: &[u64], out: &mut [i32]) {
    let mut i0 = 0;
    while i0 + TR <= m {
        word_tile::<TR>(w, i0, a, out);
        i0 += TR;
    }
    while i0 < m {
        word_tile::<1>(w, i0, a, out);
        i0 += 1;
    }
}

#[inline(always)]
fn word_tile<const R: usize>(w: &BinaryMatrix, i0: usize, a: &[u64], out: &mut [i32]) {
    let (n, k, wpr) = (w.rows, w.k, words(w.k));
    let npad = n.div_ceil(COLS_T) * COLS_T;
    // Checked once here, so the inner loop needs no bounds checks (they cost 10–15 % in V8).
    assert!(w.bits_t.len() >= wpr * npad && a.len() >= (i0 + R) * wpr);
    let base = w.bits_t.as_ptr();
    for j0 in (0..n).step_by(TC) {
        let mut acc = [[0u32; TC]; R];
        for p in 0..wpr {
            // SAFETY: `p < wpr` and `j0 + TC ≤ npad` (`j0 < n ≤ npad`, both multiples of `TC`),
            // so `p·npad + j0 + c < wpr·npad ≤ bits_t.len()`, and `(i0 + r)·wpr + p <
            // (i0 + R)·wpr ≤ a.len()` (asserted above). The loads are volatile only so that
            // LLVM's SLP vectorizer leaves this loop scalar: it otherwise packs the words into
            // `v128`s with lane extracts around each `i64.popcnt`, which ran 2× slower in V8.
            let y: [u64; TC] =
                std::array::from_fn(|c| unsafe { base.add(p * npad + j0 + c).read_volatile() });
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: in bounds, as said above.
                let x = unsafe { a.as_ptr().add((i0 + r) * wpr + p).read_volatile() };
                for c in 0..TC {
                    acc[c] += (x ^ y[c]).count_ones();
                }
            }
        }
        let cols = TC.min(n - j0);
        for (r, acc) in acc.iter().enumerate() {
            let dst = &mut out[(i0 + r) * n + j0..][..cols];
            for (d, &cnt) in dst.iter_mut().zip(acc) {
                *d = k as i32 - 2 * cnt as i32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_dots_equal_the_bit_by_bit_twin() {
        let mut rng = Rng::new(64);
        for &(m, n, k) in &[
            (0, 3, 4),
            (3, 0, 5),
            (2, 5, 0),
            (1, 1, 1),
            (1, 1, 63),
            (2, 4, 64),
            (3, 5, 65),
            (5, 9, 127),
            (4, 8, 128),
            (7, 13, 300),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
            let alpha: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            let bw = BinaryMatrix::from_f32(n, k, &w, alpha.clone()).unwrap();
            let ab = pack_signs(m, k, &a).unwrap();
            let mut want = vec![i32::MIN; m * n];
            bw.dots_scalar(m, &ab, &mut want).unwrap();
            for kind in available() {
                let mut got = vec![i32::MIN; m * n];
                bw.dots_with(kind, m, &ab, &mut got).unwrap();
                assert_eq!(got, want, "{} {m}×{n}×{k}", kind.name());
            }
            // The twin is the ±1 sum of the float signs.
            for i in 0..m {
                for j in 0..n {
                    let s = |v: f32| if v < 0.0 { -1 } else { 1 };
                    let d: i32 = (0..k).map(|p| s(a[i * k + p]) * s(w[j * k + p])).sum();
                    assert_eq!(want[i * n + j], d);
                }
            }
            let rs: Vec<f32> = (0..m).map(|_| rng.uniform()).collect();
            for scale in [&rs[..], &[]] {
                let mut c1 = vec![f32::NAN; m * n];
                let mut c2 = vec![f32::NAN; m * n];
                bw.matmul_t(m, &ab, scale, &mut c1).unwrap();
                bw.matmul_t_scalar(m, &ab, scale, &mut c2).unwrap();
                assert_eq!(c1, c2);
            }
        }
    }

    #[test]
    fn long_rows_and_largest_counts() {
        // Several 31-step byte sums of the simd128 kind, even and odd word counts; with every
        // sign differing each step adds 8 to every byte lane.
        let mut rng = Rng::new(65);
        for &(m, n) in &[(1, 1), (3, 5), (4, 9)] {
            for k in [3968usize, 3969, 4032, 4033, 4160, 8001] {
                let all_differ = (vec![-1.0f32; m * k], vec![1.0f32; n * k]);
                let random = (
                    (0..m * k).map(|_| rng.normal()).collect(),
                    (0..n * k).map(|_| rng.normal()).collect(),
                );
                for (a, w) in [all_differ, random] {
                    let bw = BinaryMatrix::from_f32(n, k, &w, vec![1.0; n]).unwrap();
                    let ab = pack_signs(m, k, &a).unwrap();
                    let mut want = vec![i32::MIN; m * n];
                    bw.dots_scalar(m, &ab, &mut want).unwrap();
                    for kind in available() {
                        let mut got = vec![i32::MIN; m * n];
                        bw.dots_with(kind, m, &ab, &mut got).unwrap();
                        assert_eq!(got, want, "{} {m}×{n}×{k}", kind.name());
                    }
                }
            }
        }
        let w = BinaryMatrix::from_f32(2, 3, &[-1.0; 6], vec![1.0; 2]).unwrap();
        let mut d = [0; 2];
        w.dots(1, &[0b111], &mut d).unwrap();
        assert_eq!(d, [3, 3]);
        assert_eq!(available().last(), Some(&selected()));
        assert_eq!(
            w.dots_with(XnorKind::Simd128, 1, &[0], &mut d).is_ok(),
            SIMD128
        );
    }

    #[test]
    fn packing_and_bad_inputs() {
        let x = [1.0, -2.0, 0.0, -0.5, f32::NAN];
        assert_eq!(pack_signs(1, 5, &x).unwrap(), [0b01010]);
        assert_eq!(pack_signs(1, 0, &[]).unwrap(), Vec::<u64>::new());
        let x: Vec<f32> = (0..130)
            .map(|p| if p % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let b = pack_signs(1, 130, &x).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[2] >> 2, 0, "tail bits are zero");
        assert!(pack_signs(2, 3, &[0.0; 5]).is_err());
        assert!(BinaryMatrix::from_bits(1, 5, vec![1 << 5], vec![1.0]).is_err());
        assert!(BinaryMatrix::from_bits(1, 5, vec![1, 0], vec![1.0]).is_err());
        assert!(BinaryMatrix::from_bits(1, 5, vec![1], vec![]).is_err());
        let w = BinaryMatrix::from_bits(2, 5, vec![0b11111, 0], vec![2.0, 0.5]).unwrap();
        let mut c = [0.0; 2];
        w.matmul_t(1, &[0b00011], &[], &mut c).unwrap();
        // a = (−1, −1, +1, +1, +1): with all −1 the dot is 2 − 3 = −1; with all +1 it is 1.
        assert_eq!(c, [-2.0, 0.5]);
        assert!(w.matmul_t(1, &[1 << 7], &[], &mut c).is_err());
        assert!(w.matmul_t(1, &[0], &[1.0, 2.0], &mut c).is_err());
        assert!(w.dots(1, &[0], &mut [0; 3]).is_err());
    }
}
