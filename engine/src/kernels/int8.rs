//! int8 matrix product with exact int32 accumulation, and the requantization back to int8.
//!
//! `C[i][j] = Σ_p (A[i][p] − a_zp) · (B[p][j] − b_zp[j])`: `A` (`m×k`, activations) is `i8`
//! row-major with one zero point, `B` (`k×n`, weights) is `i8` with one zero point per column,
//! packed once into a [`PackedI8`]; `C` is `i32`. Every term fits an `i16` (`|x − zp| ≤ 255`), so
//! each kernel multiplies 16-bit values into 32-bit sums. All kernels add with wrapping 32-bit
//! arithmetic, so they agree bit for bit even past `i32` (then all give the sum mod 2³²); the
//! integer executor bounds its layers ([`crate::compress::intonly::MAX_ACCUMULATION`]) so that it
//! never gets there.
//!
//! A `u8` activation with zero point `z` is the `i8` `x ^ 0x80` with zero point `z − 128`
//! ([`u8_to_i8`]). [`requantize`] maps the `i32` sums back to `i8` with the fixed-point
//! functions of [`crate::compress::intonly`] (no floating point).
//!
//! Kernels ([`Int8Kind`], chosen once per process by the pure [`select`] of [`Int8Features`]):
//! `Scalar` is the reference twin ([`gemm_reference`] on the raw matrices, a plain loop over the
//! packed values through [`PackedI8::gemm_with`]); `Packed` is a portable 6×16 register tile;
//! `Simd128` uses `i32x4_dot_i16x8`; `Avx2` uses `_mm256_madd_epi16` + `_mm256_add_epi32`;
//! `AvxVnni` fuses the two into `_mm256_dpwssd_avx_epi32` (AVX-VNNI, detected at run time like
//! AVX2). All packed kernels read the same layout: `B − b_zp` widened to `i16` in 16-column
//! panels, the two values of consecutive `k` side by side, so one 16-bit multiply-add
//! instruction takes two steps of `k` at once.

use std::sync::OnceLock;

use crate::compress::intonly::multiply_by_quantized_multiplier;
use crate::{Error, Result};

/// Columns per packed panel of `B`.
pub const NR: usize = 16;

/// Rows of `A` per register tile of the packed kernels.
const MR: usize = 6;

/// What the host offers that an int8 kernel may need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Int8Features {
    /// The build targets wasm32 with `simd128`.
    pub simd128: bool,
    /// The CPU is x86_64 with AVX2.
    pub avx2: bool,
    /// The CPU also has AVX-VNNI (`vpdpwssd` on 256-bit registers).
    pub avx_vnni: bool,
    /// The build targets wasm32 with `simd128` and `relaxed-simd` (see
    /// [`super::RELAXED_SIMD`]).
    pub relaxed_simd: bool,
}

impl Int8Features {
    /// No SIMD at all.
    pub const NONE: Int8Features = Int8Features {
        simd128: false,
        avx2: false,
        avx_vnni: false,
        relaxed_simd: false,
    };

    /// What this build and CPU offer (the only place that asks them).
    pub fn detect() -> Int8Features {
        #[cfg(target_arch = "x86_64")]
        let (avx2, avx_vnni) = {
            let avx2 = std::is_x86_feature_detected!("avx2");
            (avx2, avx2 && std::is_x86_feature_detected!("avxvnni"))
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (avx2, avx_vnni) = (false, false);
        Int8Features {
            simd128: cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
            avx2,
            avx_vnni,
            relaxed_simd: super::RELAXED_SIMD,
        }
    }
}

/// One implementation of the int8 product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Kind {
    /// The reference twin: a plain loop over the packed values.
    Scalar,
    /// Portable 6×16 tile of `i32` sums.
    Packed,
    /// wasm32 `simd128`, `i32x4_dot_i16x8`.
    Simd128,
    /// x86_64 AVX2, `_mm256_madd_epi16` then `_mm256_add_epi32`.
    Avx2,
    /// x86_64 AVX-VNNI, `_mm256_dpwssd_avx_epi32` (multiply, pair-add and accumulate in one).
    AvxVnni,
    /// wasm32 relaxed SIMD, `i32x4_relaxed_dot_i8x16_i7x16_add` on the weights split into two
    /// 7-bit operands (exact; see `kernels/int8_relaxed.rs`).
    RelaxedSimd,
}

impl Int8Kind {
    /// Every kind, reference twin first.
    pub const ALL: [Int8Kind; 6] = [
        Int8Kind::Scalar,
        Int8Kind::Packed,
        Int8Kind::Simd128,
        Int8Kind::Avx2,
        Int8Kind::AvxVnni,
        Int8Kind::RelaxedSimd,
    ];

    /// Short stable name.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kind::Scalar => "int8-scalar",
            Int8Kind::Packed => "int8-packed",
            Int8Kind::Simd128 => "int8-simd128",
            Int8Kind::Avx2 => "int8-avx2",
            Int8Kind::AvxVnni => "int8-avx-vnni",
            Int8Kind::RelaxedSimd => "int8-relaxed-simd",
        }
    }

    /// Whether this kind can run with `f` (and is compiled into this build).
    pub fn supported(self, f: Int8Features) -> bool {
        match self {
            Int8Kind::Scalar | Int8Kind::Packed => true,
            Int8Kind::Simd128 => {
                f.simd128 && cfg!(all(target_arch = "wasm32", target_feature = "simd128"))
            }
            Int8Kind::Avx2 => f.avx2 && cfg!(target_arch = "x86_64"),
            Int8Kind::AvxVnni => f.avx2 && f.avx_vnni && cfg!(target_arch = "x86_64"),
            Int8Kind::RelaxedSimd => f.relaxed_simd && super::RELAXED_SIMD,
        }
    }
}

/// The fastest int8 kind for `f` (as measured). Pure.
pub fn select(f: Int8Features) -> Int8Kind {
    if f.avx2 && f.avx_vnni {
        Int8Kind::AvxVnni
    } else if f.avx2 {
        Int8Kind::Avx2
    } else if f.simd128 {
        // Also in the relaxed-SIMD build: there the exact relaxed kernel (two i8 dots per 16
        // multiply-adds) measured 6–20 % slower than `i32x4_dot_i16x8` in Chromium 156 on
        // x86-64 (docs/BENCHMARKS.md); it stays available through `gemm_with`.
        Int8Kind::Simd128
    } else if f.relaxed_simd {
        Int8Kind::RelaxedSimd
    } else {
        Int8Kind::Packed
    }
}

/// The int8 kind of this process, chosen once from [`Int8Features::detect`].
pub fn selected() -> Int8Kind {
    static KIND: OnceLock<Int8Kind> = OnceLock::new();
    *KIND.get_or_init(|| select(Int8Features::detect()))
}

/// The int8 kinds this build and CPU can run, reference twin first.
pub fn available() -> Vec<Int8Kind> {
    let f = Int8Features::detect();
    Int8Kind::ALL
        .into_iter()
        .filter(|k| k.supported(f))
        .collect()
}

/// The `i8` weights `B` (`k×n`) minus their per-column zero points, widened to `i16` and packed
/// once for every int8 kernel: panel `q` holds columns `16q..16q+16` (zero-padded), and inside
/// it step pair `t` holds `[B[2t][j]−zp, B[2t+1][j]−zp]` for the 16 columns `j` in order (a
/// missing odd step is 0).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedI8 {
    k: usize,
    n: usize,
    pairs: usize,
    panels: Vec<i16>,
    /// The same values split for the relaxed-SIMD kernel (only in builds that have it).
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    quads: super::int8_relaxed::Quads,
}

impl PackedI8 {
    /// Packs `b`, row-major `k×n` (one column per output). `b_zp` holds one zero point per
    /// column, or is empty for all-zero (symmetric) weights.
    pub fn new(k: usize, n: usize, b: &[i8], b_zp: &[i8]) -> Result<PackedI8> {
        check_len("B", k, n, b.len())?;
        Self::build(k, n, b_zp, |p, j| b[p * n + j])
    }

    /// Packs the transpose of `w`, row-major `n×k` (one row per output, the layout of a dense
    /// layer's `[out, in]` weights), so that the product is `A · Wᵀ`. `b_zp` as in [`Self::new`].
    pub fn from_rows(n: usize, k: usize, w: &[i8], b_zp: &[i8]) -> Result<PackedI8> {
        check_len("W", n, k, w.len())?;
        Self::build(k, n, b_zp, |p, j| w[j * k + p])
    }

    fn build(k: usize, n: usize, b_zp: &[i8], get: impl Fn(usize, usize) -> i8) -> Result<Self> {
        if !b_zp.is_empty() && b_zp.len() != n {
            return Err(Error::Invalid(format!(
                "int8 gemm: {} zero points for {n} columns (want {n}, or none)",
                b_zp.len()
            )));
        }
        let pairs = k.div_ceil(2);
        let len = n
            .div_ceil(NR)
            .checked_mul(pairs)
            .and_then(|v| v.checked_mul(2 * NR))
            .ok_or_else(|| Error::Invalid(format!("int8 gemm: {k}×{n} is too large")))?;
        let mut panels = vec![0i16; len];
        for j in 0..n {
            let zp = b_zp.get(j).copied().unwrap_or(0) as i16;
            let (q, jj) = (j / NR, j % NR);
            let base = q * pairs * 2 * NR + 2 * jj;
            for p in 0..k {
                panels[base + (p / 2) * 2 * NR + (p % 2)] = get(p, j) as i16 - zp;
            }
        }
        #[allow(unused_mut)]
        let mut pk = PackedI8 {
            k,
            n,
            pairs,
            panels,
            #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
            quads: super::int8_relaxed::Quads::default(),
        };
        #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
        {
            pk.quads = super::int8_relaxed::Quads::new(&pk)?;
        }
        Ok(pk)
    }

    /// Rows of `B` (the shared dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B` (outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// `B[p][j] − b_zp[j]`, read back from the packed layout; `None` outside `k × n`.
    pub fn value(&self, p: usize, j: usize) -> Option<i16> {
        (p < self.k && j < self.n).then(|| self.at(p, j))
    }

    fn at(&self, p: usize, j: usize) -> i16 {
        debug_assert!(p < self.k && j < self.n);
        self.panels[(j / NR) * self.pairs * 2 * NR + (p / 2) * 2 * NR + 2 * (j % NR) + p % 2]
    }

    /// `C = (A − a_zp) · (B − b_zp)` with the process's int8 kernel ([`selected`]); `a` is
    /// `m×k` row-major, `c` (`m×n`) is overwritten. Errors if a slice length does not match.
    pub fn gemm(&self, m: usize, a: &[i8], a_zp: i8, c: &mut [i32]) -> Result<()> {
        self.gemm_with(selected(), m, a, a_zp, c)
    }

    /// [`Self::gemm`] with a chosen kernel, for tests and benchmarks. Errors if this build or
    /// CPU cannot run `kind`, or if a slice length does not match.
    pub fn gemm_with(
        &self,
        kind: Int8Kind,
        m: usize,
        a: &[i8],
        a_zp: i8,
        c: &mut [i32],
    ) -> Result<()> {
        check_len("A", m, self.k, a.len())?;
        check_len("C", m, self.n, c.len())?;
        if !kind.supported(Int8Features::detect()) {
            return Err(Error::Invalid(format!(
                "int8 kernel `{}` is not available on this host",
                kind.name()
            )));
        }
        match kind {
            Int8Kind::Scalar => self.scalar(m, a, a_zp, c),
            Int8Kind::Packed => driver(self, m, a, a_zp, c, micro_portable),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Int8Kind::Simd128 => driver(self, m, a, a_zp, c, simd128::micro),
            #[cfg(target_arch = "x86_64")]
            Int8Kind::Avx2 => x86::gemm(self, m, a, a_zp, c, false),
            #[cfg(target_arch = "x86_64")]
            Int8Kind::AvxVnni => x86::gemm(self, m, a, a_zp, c, true),
            #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
            Int8Kind::RelaxedSimd => super::int8_relaxed::gemm(
                self,
                &self.quads,
                m,
                a,
                a_zp,
                c,
                super::int8_relaxed::micro,
            ),
            #[allow(unreachable_patterns)]
            _ => driver(self, m, a, a_zp, c, micro_portable),
        }
        Ok(())
    }

    /// The twin on the packed values: a plain triple loop, summing over `k` in order.
    fn scalar(&self, m: usize, a: &[i8], a_zp: i8, c: &mut [i32]) {
        let (k, n) = (self.k, self.n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0i32;
                for p in 0..k {
                    let x = a[i * k + p] as i32 - a_zp as i32;
                    acc = acc.wrapping_add(x * self.at(p, j) as i32);
                }
                c[i * n + j] = acc;
            }
        }
    }
}

fn check_len(name: &str, rows: usize, cols: usize, len: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(want) if want == len => Ok(()),
        _ => Err(Error::Invalid(format!(
            "int8 gemm: {name} is {rows}×{cols} but its slice holds {len} values"
        ))),
    }
}

/// The reference twin on the raw matrices: `C[i][j] = Σ_p (A[i][p] − a_zp)·(B[p][j] − b_zp[j])`
/// summed over `p` in order with wrapping `i32` adds. `b` is row-major `k×n`, `b_zp` one per
/// column or empty (zeros). Errors if a slice length does not match.
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference(
    m: usize,
    k: usize,
    n: usize,
    a: &[i8],
    a_zp: i8,
    b: &[i8],
    b_zp: &[i8],
    c: &mut [i32],
) -> Result<()> {
    check_len("A", m, k, a.len())?;
    check_len("B", k, n, b.len())?;
    check_len("C", m, n, c.len())?;
    if !b_zp.is_empty() && b_zp.len() != n {
        return Err(Error::Invalid(format!(
            "int8 gemm: {} zero points for {n} columns",
            b_zp.len()
        )));
    }
    for i in 0..m {
        for j in 0..n {
            let zb = b_zp.get(j).copied().unwrap_or(0) as i32;
            let mut acc = 0i32;
            for p in 0..k {
                let t = (a[i * k + p] as i32 - a_zp as i32) * (b[p * n + j] as i32 - zb);
                acc = acc.wrapping_add(t);
            }
            c[i * n + j] = acc;
        }
    }
    Ok(())
}

/// A `u8` activation with zero point `zp` as the `i8` kernels expect it: each code `x` becomes
/// `(x ^ 0x80) as i8` (that is `x − 128`) and the zero point `zp − 128`, so `x − zp` is unchanged.
pub fn u8_to_i8(x: &[u8], zp: u8) -> (Vec<i8>, i8) {
    (
        x.iter().map(|&v| (v ^ 0x80) as i8).collect(),
        (zp ^ 0x80) as i8,
    )
}

/// Two `i16` values side by side in one `i32` (the first in the low half), the operand layout
/// of `_mm256_madd_epi16` and `i32x4_dot_i16x8`.
#[inline(always)]
fn pair(lo: i16, hi: i16) -> i32 {
    (lo as u16 as u32 | ((hi as u16 as u32) << 16)) as i32
}

/// Packs rows `i0..i0+MR` of `A − a_zp` (zero rows past `m`): step pair `t`, row `r` is
/// `out[t·MR + r] = pair(A[i0+r][2t] − a_zp, A[i0+r][2t+1] − a_zp)` (0 past `k`).
fn pack_a(i0: usize, m: usize, k: usize, a: &[i8], a_zp: i8, out: &mut [i32]) {
    let h = MR.min(m - i0);
    if h < MR {
        out.fill(0);
    }
    let z = a_zp as i16;
    for r in 0..h {
        let row = &a[(i0 + r) * k..(i0 + r + 1) * k];
        let mut it = row.chunks_exact(2);
        for (t, two) in (&mut it).enumerate() {
            out[t * MR + r] = pair(two[0] as i16 - z, two[1] as i16 - z);
        }
        if let [last] = it.remainder() {
            out[(k / 2) * MR + r] = pair(*last as i16 - z, 0);
        }
    }
}

/// A micro-kernel: `tile[r·NR + j] = Σ_t madd(strip[t·MR + r], panel[t·2NR + 2j ..+2])` for the
/// `pairs` step pairs, with wrapping `i32` adds.
type Micro = fn(usize, &[i32], &[i16], &mut [i32]);

/// The driver shared by every packed kernel: packs one `MR`-row strip of `A` at a time, runs
/// `micro` on each `MR×NR` tile and writes the part of it inside `C`.
fn driver(pk: &PackedI8, m: usize, a: &[i8], a_zp: i8, c: &mut [i32], micro: Micro) {
    let (k, n) = (pk.k, pk.n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0);
        return;
    }
    let mut ap = vec![0i32; pk.pairs * MR];
    let mut tile = [0i32; MR * NR];
    for i0 in (0..m).step_by(MR) {
        pack_a(i0, m, k, a, a_zp, &mut ap);
        let h = MR.min(m - i0);
        for (q, panel) in pk.panels.chunks_exact(pk.pairs * 2 * NR).enumerate() {
            micro(pk.pairs, &ap, panel, &mut tile);
            let j0 = q * NR;
            let w = NR.min(n - j0);
            for r in 0..h {
                let dst = (i0 + r) * n + j0;
                super::copy_short(&mut c[dst..dst + w], &tile[r * NR..r * NR + w]);
            }
        }
    }
}

/// Portable micro-kernel: a 6×16 tile of plain `i32` sums.
fn micro_portable(pairs: usize, ap: &[i32], bp: &[i16], tile: &mut [i32]) {
    let mut acc = [[0i32; NR]; MR];
    for (av, bv) in ap.chunks_exact(MR).zip(bp.chunks_exact(2 * NR)).take(pairs) {
        for r in 0..MR {
            let (x0, x1) = (av[r] as i16 as i32, (av[r] >> 16) as i16 as i32);
            for j in 0..NR {
                let t = x0 * bv[2 * j] as i32 + x1 * bv[2 * j + 1] as i32;
                acc[r][j] = acc[r][j].wrapping_add(t);
            }
        }
    }
    for r in 0..MR {
        tile[r * NR..(r + 1) * NR].copy_from_slice(&acc[r]);
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    //! wasm32 `simd128`: `i32x4_dot_i16x8` multiplies eight `i16` pairs and adds each pair,
    //! i.e. two steps of `k` for four columns. The 16-wide panel is done as two 8-wide halves,
    //! each a 6×8 tile of twelve `i32x4` sums.

    use super::{MR, NR};
    use core::arch::wasm32::*;

    pub(super) fn micro(pairs: usize, ap: &[i32], bp: &[i16], tile: &mut [i32]) {
        assert!(ap.len() >= pairs * MR && bp.len() >= pairs * 2 * NR && tile.len() >= MR * NR);
        for half in 0..2 {
            let mut c = [i32x4_splat(0); 2 * MR];
            // SAFETY: the assert above bounds every load (`t < pairs`, 16 values at offset
            // `t·32 + half·16`) and store (row `r < MR`, 8 values at `r·16 + half·8`);
            // `v128_load`/`v128_store` have no alignment requirement.
            unsafe {
                let b = bp.as_ptr().add(half * NR);
                for t in 0..pairs {
                    let b0 = v128_load(b.add(t * 2 * NR) as *const v128);
                    let b1 = v128_load(b.add(t * 2 * NR + 8) as *const v128);
                    let a = ap.as_ptr().add(t * MR);
                    for r in 0..MR {
                        let x = i32x4_splat(*a.add(r));
                        c[2 * r] = i32x4_add(c[2 * r], i32x4_dot_i16x8(x, b0));
                        c[2 * r + 1] = i32x4_add(c[2 * r + 1], i32x4_dot_i16x8(x, b1));
                    }
                }
                for r in 0..MR {
                    let t = tile.as_mut_ptr().add(r * NR + half * 8);
                    v128_store(t as *mut v128, c[2 * r]);
                    v128_store(t.add(4) as *mut v128, c[2 * r + 1]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! x86_64: `_mm256_madd_epi16` multiplies sixteen `i16` pairs and adds each pair, i.e. two
    //! steps of `k` for eight columns, then `_mm256_add_epi32` accumulates; AVX-VNNI's
    //! `_mm256_dpwssd_avx_epi32` does both in one instruction (no saturation: the same wrapping
    //! sums). A 6×16 tile is twelve 256-bit sums.

    use super::{MR, NR, PackedI8};
    use std::arch::x86_64::*;

    pub(super) fn gemm(pk: &PackedI8, m: usize, a: &[i8], a_zp: i8, c: &mut [i32], vnni: bool) {
        let avx2 = std::is_x86_feature_detected!("avx2");
        if vnni && avx2 && std::is_x86_feature_detected!("avxvnni") {
            super::driver(pk, m, a, a_zp, c, micro_vnni);
        } else if avx2 && !vnni {
            super::driver(pk, m, a, a_zp, c, micro);
        } else {
            // Never taken: `gemm_with` refuses a kind whose features the CPU lacks.
            super::driver(pk, m, a, a_zp, c, super::micro_portable);
        }
    }

    fn micro(pairs: usize, ap: &[i32], bp: &[i16], tile: &mut [i32]) {
        // SAFETY: only reached from `gemm` above after it checked that the CPU has AVX2.
        unsafe { micro_avx2(pairs, ap, bp, tile) }
    }

    fn micro_vnni(pairs: usize, ap: &[i32], bp: &[i16], tile: &mut [i32]) {
        // SAFETY: only reached from `gemm` above after it checked AVX2 and AVX-VNNI.
        unsafe { micro_avx_vnni(pairs, ap, bp, tile) }
    }

    #[target_feature(enable = "avx2")]
    fn micro_avx2(pairs: usize, ap: &[i32], bp: &[i16], tile: &mut [i32]) {
        assert!(ap.len() >= pairs * MR && bp.len() >= pairs * 2 * NR && tile.len() >= MR * NR);
        let mut c = [_mm256_setzero_si256(); 2 * MR];
        // SAFETY: the assert above bounds every load (`t < pairs`: 32 values at `t·32`, MR at
        // `t·MR`) and store (`MR·NR` values); the unaligned load/store intrinsics are used.
        unsafe {
            let b = bp.as_ptr();
            let a = ap.as_ptr();
            for t in 0..pairs {
                let b0 = _mm256_loadu_si256(b.add(t * 2 * NR) as *const __m256i);
                let b1 = _mm256_loadu_si256(b.add(t * 2 * NR + 16) as *const __m256i);
                for r in 0..MR {
                    let x = _mm256_set1_epi32(*a.add(t * MR + r));
                    c[2 * r] = _mm256_add_epi32(c[2 * r], _mm256_madd_epi16(x, b0));
                    c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], _mm256_madd_epi16(x, b1));
                }
            }
            let out = tile.as_mut_ptr();
            for (r, v) in c.iter().enumerate() {
                _mm256_storeu_si256(out.add(r * 8) as *mut __m256i, *v);
            }
        }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    fn micro_avx_vnni(pairs: usize, ap: &[i32], bp: &[i16], tile: &mut [i32]) {
        assert!(ap.len() >= pairs * MR && bp.len() >= pairs * 2 * NR && tile.len() >= MR * NR);
        let mut c = [_mm256_setzero_si256(); 2 * MR];
        // SAFETY: as in `micro_avx2`: every load and store is bounded by the assert above.
        unsafe {
            let b = bp.as_ptr();
            let a = ap.as_ptr();
            for t in 0..pairs {
                let b0 = _mm256_loadu_si256(b.add(t * 2 * NR) as *const __m256i);
                let b1 = _mm256_loadu_si256(b.add(t * 2 * NR + 16) as *const __m256i);
                for r in 0..MR {
                    let x = _mm256_set1_epi32(*a.add(t * MR + r));
                    c[2 * r] = _mm256_dpwssd_avx_epi32(c[2 * r], x, b0);
                    c[2 * r + 1] = _mm256_dpwssd_avx_epi32(c[2 * r + 1], x, b1);
                }
            }
            let out = tile.as_mut_ptr();
            for (r, v) in c.iter().enumerate() {
                _mm256_storeu_si256(out.add(r * 8) as *mut __m256i, *v);
            }
        }
    }
}

/// Per-output-channel requantization of `i32` sums to `i8` codes, the integer executor's
/// scheme: `clamp(z_out + M(acc + bias), lo, hi)` where `M` is the fixed-point multiplier
/// [`multiply_by_quantized_multiplier`]`(·, multiplier[j], shift[j])`.
#[derive(Clone, Copy, Debug)]
pub struct Requantize<'a> {
    /// Bias added (saturating) to each sum, one per channel; empty for none.
    pub bias: &'a [i32],
    /// Q31 multipliers `M0`, one per channel.
    pub multiplier: &'a [i32],
    /// Right shifts (negative: left), one per channel.
    pub shift: &'a [i8],
    /// Output zero point.
    pub out_zp: i32,
    /// Lowest output code (fused ReLU/Clip bound, or −128).
    pub lo: i8,
    /// Highest output code.
    pub hi: i8,
}

/// One code: `clamp(z_out + M(acc + bias), lo, hi)` with saturating adds, in integers only.
#[inline]
pub fn requantize_one(acc: i32, bias: i32, m0: i32, shift: i8, out_zp: i32, lo: i8, hi: i8) -> i8 {
    multiply_by_quantized_multiplier(acc.saturating_add(bias), m0, shift as i32)
        .saturating_add(out_zp)
        .clamp(lo as i32, hi as i32) as i8
}

/// Requantizes `c` (row-major, `n` channels per row: channel = column) into `out`. Errors if the
/// lengths disagree or `lo > hi`.
pub fn requantize(n: usize, c: &[i32], p: &Requantize<'_>, out: &mut [i8]) -> Result<()> {
    let lens_ok = p.multiplier.len() == n
        && p.shift.len() == n
        && (p.bias.is_empty() || p.bias.len() == n)
        && out.len() == c.len()
        && if n == 0 {
            c.is_empty()
        } else {
            c.len().is_multiple_of(n)
        };
    if !lens_ok || p.lo > p.hi {
        return Err(Error::Invalid(format!(
            "requantize: {} sums, {} outputs, {n} channels with {} multipliers, {} shifts, {} \
             biases, clamp {}..={}",
            c.len(),
            out.len(),
            p.multiplier.len(),
            p.shift.len(),
            p.bias.len(),
            p.lo,
            p.hi
        )));
    }
    if n == 0 {
        return Ok(());
    }
    for (row, dst) in c.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for (j, (&acc, y)) in row.iter().zip(dst.iter_mut()).enumerate() {
            let bias = p.bias.get(j).copied().unwrap_or(0);
            *y = requantize_one(acc, bias, p.multiplier[j], p.shift[j], p.out_zp, p.lo, p.hi);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn codes(rng: &mut Rng, len: usize) -> Vec<i8> {
        (0..len)
            .map(|i| match i % 7 {
                0 => -128,
                1 => 127,
                _ => ((rng.uniform() * 256.0) as i32 - 128).clamp(-128, 127) as i8,
            })
            .collect()
    }

    #[test]
    fn every_kind_is_exact_over_odd_sizes_and_zero_points() {
        let mut rng = Rng::new(8);
        for &(m, k, n) in &[
            (0, 3, 4),
            (3, 0, 5),
            (2, 5, 0),
            (1, 1, 1),
            (1, 2, 17),
            (4, 3, 16),
            (5, 17, 31),
            (9, 33, 65),
            (1, 784, 30),
        ] {
            for (a_zp, zps) in [(0i8, false), (-128, true), (127, true), (5, true)] {
                let a = codes(&mut rng, m * k);
                let b = codes(&mut rng, k * n);
                let b_zp: Vec<i8> = if zps { codes(&mut rng, n) } else { vec![] };
                let mut want = vec![i32::MIN; m * n];
                gemm_reference(m, k, n, &a, a_zp, &b, &b_zp, &mut want).unwrap();
                let pk = PackedI8::new(k, n, &b, &b_zp).unwrap();
                let mut bt = vec![0i8; k * n];
                for p in 0..k {
                    for j in 0..n {
                        bt[j * k + p] = b[p * n + j];
                    }
                }
                assert_eq!(PackedI8::from_rows(n, k, &bt, &b_zp).unwrap(), pk);
                for kind in available() {
                    let mut got = vec![i32::MIN; m * n];
                    pk.gemm_with(kind, m, &a, a_zp, &mut got).unwrap();
                    assert_eq!(got, want, "{} {m}×{k}×{n} zp {a_zp}", kind.name());
                }
            }
        }
    }

    #[test]
    fn select_is_a_pure_function_of_features() {
        assert_eq!(select(Int8Features::NONE), Int8Kind::Packed);
        let f = |simd128, avx2, avx_vnni| Int8Features {
            simd128,
            avx2,
            avx_vnni,
            relaxed_simd: false,
        };
        let relaxed = Int8Features {
            simd128: true,
            relaxed_simd: true,
            ..Int8Features::NONE
        };
        assert_eq!(select(relaxed), Int8Kind::Simd128);
        let relaxed_only = Int8Features {
            relaxed_simd: true,
            ..Int8Features::NONE
        };
        assert_eq!(select(relaxed_only), Int8Kind::RelaxedSimd);
        assert!(!Int8Kind::RelaxedSimd.supported(Int8Features::NONE));
        assert_eq!(select(f(true, false, false)), Int8Kind::Simd128);
        assert_eq!(select(f(false, true, false)), Int8Kind::Avx2);
        assert_eq!(select(f(false, true, true)), Int8Kind::AvxVnni);
        assert_eq!(select(f(false, false, true)), Int8Kind::Packed);
        assert!(available().contains(&selected()));
        assert!(!Int8Kind::Avx2.supported(Int8Features::NONE));
    }

    #[test]
    fn hand_case_and_wrong_lengths() {
        // A − 1 = [[0, 1], [2, 3]]; B = [[1, 0], [0, 1]] minus zps [0, −1] = [[1, 1], [0, 2]].
        let pk = PackedI8::new(2, 2, &[1, 0, 0, 1], &[0, -1]).unwrap();
        let mut c = [0; 4];
        pk.gemm(2, &[1, 2, 3, 4], 1, &mut c).unwrap();
        assert_eq!(c, [0, 2, 2, 2 + 6]);
        assert!(pk.gemm(2, &[1, 2, 3], 1, &mut c).is_err());
        assert!(pk.gemm(2, &[1, 2, 3, 4], 1, &mut c[..3]).is_err());
        assert!(PackedI8::new(2, 2, &[1, 0, 0], &[]).is_err());
        assert!(PackedI8::new(2, 2, &[1, 0, 0, 1], &[0]).is_err());
        assert!(PackedI8::new(usize::MAX, 2, &[], &[]).is_err());
        assert_eq!(pk.value(1, 1), Some(2));
        assert_eq!(pk.value(2, 0), None);
        assert_eq!(pk.value(0, 2), None);
        assert!(gemm_reference(1, 1, 1, &[1], 0, &[1], &[], &mut []).is_err());
    }

    #[test]
    fn sums_past_i32_wrap_identically() {
        // 70,000 terms of 255·255 overflow i32; every kind gives the same wrapped sum.
        let k = 70_000;
        let a = vec![127i8; k];
        let b = vec![-128i8; k];
        let mut want = [0];
        gemm_reference(1, k, 1, &a, -128, &b, &[127], &mut want).unwrap();
        assert_eq!(want[0], (255i64 * -255 * k as i64) as i32);
        let pk = PackedI8::new(k, 1, &b, &[127]).unwrap();
        for kind in available() {
            let mut got = [0];
            pk.gemm_with(kind, 1, &a, -128, &mut got).unwrap();
            assert_eq!(got, want, "{}", kind.name());
        }
    }

    #[test]
    fn u8_inputs_flip_the_top_bit() {
        let x: Vec<u8> = (0..=255).collect();
        for zp in [0u8, 1, 127, 128, 200, 255] {
            let (y, z) = u8_to_i8(&x, zp);
            for (u, s) in x.iter().zip(&y) {
                assert_eq!(*u as i32 - zp as i32, *s as i32 - z as i32);
            }
        }
        // A u8 GEMM through the helper equals the u8 sum written out.
        let a: Vec<u8> = vec![0, 255, 17, 200];
        let (ai, az) = u8_to_i8(&a, 3);
        let pk = PackedI8::new(4, 1, &[1, -2, 3, -4], &[]).unwrap();
        let mut c = [0];
        pk.gemm(1, &ai, az, &mut c).unwrap();
        let want: i32 = a
            .iter()
            .zip([1, -2, 3, -4])
            .map(|(&u, w)| (u as i32 - 3) * w)
            .sum();
        assert_eq!(c[0], want);
    }

    #[test]
    fn requantize_uses_the_fixed_point_of_the_integer_executor() {
        let (m0, shift) = crate::compress::intonly::quantize_multiplier(0.0123).unwrap();
        let c = [-100_000, -1, 0, 1, 5000, i32::MAX, i32::MIN, 77];
        let mut out = [0i8; 8];
        let p = Requantize {
            bias: &[10, -10],
            multiplier: &[m0, m0 / 2],
            shift: &[shift as i8, shift as i8],
            out_zp: -3,
            lo: -128,
            hi: 100,
        };
        requantize(2, &c, &p, &mut out).unwrap();
        for (i, (&acc, &y)) in c.iter().zip(&out).enumerate() {
            let j = i % 2;
            let v = multiply_by_quantized_multiplier(
                acc.saturating_add(p.bias[j]),
                p.multiplier[j],
                shift,
            )
            .saturating_add(-3)
            .clamp(-128, 100);
            assert_eq!(y as i32, v);
        }
        assert!(requantize(3, &c, &p, &mut out).is_err());
        assert!(requantize(2, &c, &p, &mut out[..7]).is_err());
        assert!(requantize(2, &c, &Requantize { lo: 5, hi: 4, ..p }, &mut out).is_err());
        requantize(
            0,
            &[],
            &Requantize {
                multiplier: &[],
                shift: &[],
                bias: &[],
                ..p
            },
            &mut [],
        )
        .unwrap();
    }
}
