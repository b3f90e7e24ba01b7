//! int8 GEMM on wasm relaxed SIMD: `i32x4_relaxed_dot_i8x16_i7x16_add`, bit-exact with the
//! twin.
//!
//! The instruction multiplies sixteen signed bytes `a` by sixteen bytes `b` and adds each group
//! of four products into an `i32` lane of the accumulator. Its result is only defined when every
//! byte of `b` is in `0..=127` (the "i7" operand: with the top bit set an engine may read it
//! signed or unsigned, and the intermediate `i16` pair sums may saturate on some CPUs). So:
//!
//! - `a` is the raw activation `A` (`i8`, any value) and the activation zero point is applied
//!   afterwards: `Σ(A − a_zp)·Bz = Σ A·Bz − a_zp·Σ Bz`, with `Σ_p Bz[p][j]` computed once per
//!   column at packing;
//! - the weight minus its zero point, `Bz = B − b_zp ∈ [−255, 255]`, is split into two i7
//!   operands: `Bz + 256 = 128·h + l` with `l ∈ 0..=127` and `h ∈ 0..=3`, so
//!   `Σ A·Bz = Σ A·l + 128·Σ A·h − 256·Σ A`.
//!
//! Every pair of products is at most `2·128·127 = 32,512` in magnitude, so no `i16` step
//! saturates on any engine, and every remaining operation is a wrapping `i32` add or multiply:
//! the result equals the twin's wrapping sum modulo 2³² (bit for bit). The cost is two dot
//! instructions per sixteen multiply-adds (the `simd128` kernel needs a `dot_i16x8` and an
//! `add` per eight), and the weights take 1 byte per value and half-step instead of 2.
//!
//! Layout ([`Quads`]): 4-column panels; for each group of four steps of `k`, 16 bytes of `l`
//! (column-major: byte `4·jj + s` is column `jj`, step `s`) then 16 bytes of `h`. The register
//! tile is 6 rows × 4 columns with separate `l` and `h` sums: twelve accumulators, two `B`
//! vectors and one splat.

// Natively only the tests use the packing (with the emulated micro-kernel).
#![cfg_attr(
    not(any(test, all(target_arch = "wasm32", target_feature = "relaxed-simd"))),
    allow(dead_code)
)]

use super::int8::PackedI8;
use crate::{Error, Result};

/// Rows of `A` per register tile.
pub(crate) const MR: usize = 6;
/// Columns of `B` per panel (one `i32x4` of outputs).
pub(crate) const NR: usize = 4;
/// Bytes per group of four steps of one panel: `l` then `h`.
const QUAD_BYTES: usize = 2 * 16;

/// `B − b_zp` split into the two i7 operands, packed for the relaxed kernel, and its column
/// sums.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Quads {
    quads: usize,
    panels: Vec<u8>,
    colsum: Vec<i32>,
}

impl Quads {
    /// Packs the values of `pk` (`B − b_zp`, read back from its `i16` layout).
    pub(crate) fn new(pk: &PackedI8) -> Result<Quads> {
        let (k, n) = (pk.k(), pk.n());
        let quads = k.div_ceil(4);
        let len = n
            .div_ceil(NR)
            .checked_mul(quads)
            .and_then(|v| v.checked_mul(QUAD_BYTES))
            .ok_or_else(|| Error::Invalid(format!("int8 gemm: {k}×{n} is too large")))?;
        // Padding (steps past `k`, columns past `n`) stays 0: the padded `A` steps are 0 and
        // the padded columns are never written back.
        let mut panels = vec![0u8; len];
        let mut colsum = vec![0i32; n];
        for (j, sum) in colsum.iter_mut().enumerate() {
            let (q, jj) = (j / NR, j % NR);
            for p in 0..k {
                let bz = pk.value(p, j).unwrap_or(0) as i32;
                let u = bz + 256;
                let at = (q * quads + p / 4) * QUAD_BYTES + 4 * jj + p % 4;
                panels[at] = (u & 127) as u8;
                panels[at + 16] = (u >> 7) as u8;
                *sum = sum.wrapping_add(bz);
            }
        }
        Ok(Quads {
            quads,
            panels,
            colsum,
        })
    }
}

/// A micro-kernel: for the `quads` step groups, `tile[r·NR + jj] = Σ A·l` and
/// `tile[MR·NR + r·NR + jj] = Σ A·h` (wrapping), where `strip[t·MR + r]` holds the four raw
/// `A` bytes of row `r`, steps `4t..4t+4`, as one little-endian `i32`.
pub(crate) type Micro = fn(usize, &[i32], &[u8], &mut [i32; 2 * MR * NR]);

/// The driver: packs one `MR`-row strip of raw `A` at a time (and its row sums), runs `micro`
/// on each tile and writes `l + 128·h − 256·ΣA − a_zp·ΣBz` for the part inside `C`.
pub(crate) fn gemm(
    pk: &PackedI8,
    qd: &Quads,
    m: usize,
    a: &[i8],
    a_zp: i8,
    c: &mut [i32],
    micro: Micro,
) {
    let (k, n) = (pk.k(), pk.n());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0);
        return;
    }
    let mut ap = vec![0i32; qd.quads * MR];
    let mut rowsum = [0i32; MR];
    let mut tile = [0i32; 2 * MR * NR];
    let za = a_zp as i32;
    for i0 in (0..m).step_by(MR) {
        let h = MR.min(m - i0);
        ap.fill(0);
        for (r, sum) in rowsum.iter_mut().enumerate() {
            *sum = 0;
            if r >= h {
                continue;
            }
            let row = &a[(i0 + r) * k..(i0 + r + 1) * k];
            for (t, four) in row.chunks(4).enumerate() {
                let mut bytes = [0u8; 4];
                for (d, &v) in bytes.iter_mut().zip(four) {
                    *d = v as u8;
                    *sum = sum.wrapping_add(v as i32);
                }
                ap[t * MR + r] = i32::from_le_bytes(bytes);
            }
        }
        for (q, panel) in qd.panels.chunks_exact(qd.quads * QUAD_BYTES).enumerate() {
            micro(qd.quads, &ap, panel, &mut tile);
            let j0 = q * NR;
            let w = NR.min(n - j0);
            for (r, &rs) in rowsum.iter().enumerate().take(h) {
                let dst = (i0 + r) * n + j0;
                for jj in 0..w {
                    let l = tile[r * NR + jj];
                    let hh = tile[MR * NR + r * NR + jj];
                    c[dst + jj] = l
                        .wrapping_add(hh.wrapping_mul(128))
                        .wrapping_sub(rs.wrapping_mul(256))
                        .wrapping_sub(za.wrapping_mul(qd.colsum[j0 + jj]));
                }
            }
        }
    }
}

/// Portable emulation of the relaxed micro-kernel (what `i32x4_relaxed_dot_i8x16_i7x16_add`
/// computes for i7 operands), so the split and the corrections are tested natively too.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn micro_emulated(quads: usize, ap: &[i32], bp: &[u8], tile: &mut [i32; 2 * MR * NR]) {
    tile.fill(0);
    for t in 0..quads {
        let panel = &bp[t * QUAD_BYTES..(t + 1) * QUAD_BYTES];
        for r in 0..MR {
            let x = ap[t * MR + r].to_le_bytes();
            for jj in 0..NR {
                for (half, base) in [(0, 0), (1, 16)] {
                    let s: i32 = (0..4)
                        .map(|s| x[s] as i8 as i32 * panel[base + 4 * jj + s] as i32)
                        .sum();
                    let at = half * MR * NR + r * NR + jj;
                    tile[at] = tile[at].wrapping_add(s);
                }
            }
        }
    }
}

/// The relaxed-SIMD micro-kernel.
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
pub(crate) fn micro(quads: usize, ap: &[i32], bp: &[u8], tile: &mut [i32; 2 * MR * NR]) {
    use core::arch::wasm32::*;
    assert!(ap.len() >= quads * MR && bp.len() >= quads * QUAD_BYTES);
    let mut cl = [i32x4_splat(0); MR];
    let mut ch = [i32x4_splat(0); MR];
    // SAFETY: the assert bounds every load (`t < quads`: two vectors at `t·32`, `MR` values at
    // `t·MR`); the stores write `2·MR` vectors into the `2·MR·NR` tile; `v128_load` and
    // `v128_store` have no alignment requirement.
    unsafe {
        let b = bp.as_ptr();
        for t in 0..quads {
            let l = v128_load(b.add(t * QUAD_BYTES) as *const v128);
            let h = v128_load(b.add(t * QUAD_BYTES + 16) as *const v128);
            let a = ap.as_ptr().add(t * MR);
            for r in 0..MR {
                let x = i32x4_splat(*a.add(r));
                cl[r] = i32x4_relaxed_dot_i8x16_i7x16_add(x, l, cl[r]);
                ch[r] = i32x4_relaxed_dot_i8x16_i7x16_add(x, h, ch[r]);
            }
        }
        let out = tile.as_mut_ptr() as *mut v128;
        for r in 0..MR {
            v128_store(out.add(r), cl[r]);
            v128_store(out.add(MR + r), ch[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::int8::gemm_reference;
    use crate::rng::Rng;

    #[test]
    fn the_split_and_corrections_are_exact() {
        let mut rng = Rng::new(77);
        let mut code = |extreme: bool| -> i8 {
            if extreme {
                if rng.uniform() < 0.5 { -128 } else { 127 }
            } else {
                ((rng.uniform() * 256.0) as i32 - 128).clamp(-128, 127) as i8
            }
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 5, 3),
            (6, 4, 4),
            (13, 33, 9),
            (2, 784, 17),
            (5, 0, 3),
        ] {
            for extreme in [false, true] {
                let a: Vec<i8> = (0..m * k).map(|_| code(extreme)).collect();
                let b: Vec<i8> = (0..k * n).map(|_| code(extreme)).collect();
                let b_zp: Vec<i8> = (0..n).map(|_| code(extreme)).collect();
                let a_zp = code(extreme);
                let mut want = vec![0; m * n];
                gemm_reference(m, k, n, &a, a_zp, &b, &b_zp, &mut want).unwrap();
                let pk = PackedI8::new(k, n, &b, &b_zp).unwrap();
                let qd = Quads::new(&pk).unwrap();
                let mut got = vec![i32::MIN; m * n];
                gemm(&pk, &qd, m, &a, a_zp, &mut got, micro_emulated);
                assert_eq!(got, want, "m={m} k={k} n={n}");
            }
        }
    }
}
