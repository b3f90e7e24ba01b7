//! Products with weight-shared (k-means) layers: `C[m×n] = A[m×k] · Wᵀ` where `W` (`n×k`, one
//! row per output) is stored as codes into a per-layer `f32` codebook and decoded on the fly.
//!
//! Storage: one code per byte (`u8`, row-major `n×k`) whatever the code width (1–8 bits); the
//! bit-packed form lives in the `.lithe` container, and unpacking it once per layer is cheap.
//! Every code is checked against the codebook at construction, so the kernels cannot read past
//! it; the codebook is copied into a 256-entry table, so a `u8` code indexes it without a check.
//!
//! Kernels: [`CodebookMatrix::matmul_t_scalar`] is the reference twin (a plain loop, each weight
//! looked up as it is used, summed over `k` in order). [`CodebookMatrix::matmul_t`] is the fast
//! path: for batches below [`GEMM_MIN_BATCH`] each output row is a table-lookup dot product with
//! eight independent sums; larger batches decode [`PANEL`] output columns at a time into an `f32`
//! panel and run the process's f32 GEMM ([`super::gemm()`], AVX2/simd128 where present) on it. The
//! summation order differs from the twin, so results agree within the GEMM tolerance
//! [`super::check::GEMM_REL_TOL`]: `|fast − twin| ≤ 1e-5 · k · Σ_p |a_ip · w_jp|`.

use crate::{Error, Result};

/// Smallest batch that takes the decode-a-panel + GEMM path.
pub const GEMM_MIN_BATCH: usize = 4;

/// Output columns decoded per panel on the GEMM path.
pub const PANEL: usize = 64;

/// `W` (`rows × cols`) as `u8` codes (one per byte) into an `f32` codebook.
#[derive(Clone, Debug, PartialEq)]
pub struct CodebookMatrix {
    rows: usize,
    cols: usize,
    bits: u8,
    codes: Vec<u8>,
    codebook: Vec<f32>,
    table: Box<[f32; 256]>,
}

impl CodebookMatrix {
    /// `rows × cols` codes (row-major) of `bits` bits (1–8) into `codebook` (at most `2^bits`
    /// finite entries). Errors if a length is wrong, a code is `≥ codebook.len()` or does not
    /// fit `bits`, or a codebook entry is not finite.
    pub fn new(
        rows: usize,
        cols: usize,
        bits: u8,
        codes: Vec<u8>,
        codebook: Vec<f32>,
    ) -> Result<CodebookMatrix> {
        if !(1..=8).contains(&bits) {
            return Err(Error::Invalid(format!(
                "codebook: {bits}-bit codes (want 1 to 8)"
            )));
        }
        if rows.checked_mul(cols) != Some(codes.len()) {
            return Err(Error::Invalid(format!(
                "codebook: a {rows}×{cols} matrix needs {} codes, got {}",
                rows.saturating_mul(cols),
                codes.len()
            )));
        }
        if codebook.is_empty() && !codes.is_empty() || codebook.len() > 1usize << bits {
            return Err(Error::Invalid(format!(
                "codebook: {} entries for {bits}-bit codes",
                codebook.len()
            )));
        }
        if let Some(v) = codebook.iter().find(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!("codebook: entry {v} is not finite")));
        }
        if let Some(c) = codes.iter().find(|&&c| c as usize >= codebook.len()) {
            return Err(Error::Invalid(format!(
                "codebook: code {c} but only {} entries",
                codebook.len()
            )));
        }
        let mut table = Box::new([0.0f32; 256]);
        table[..codebook.len()].copy_from_slice(&codebook);
        Ok(CodebookMatrix {
            rows,
            cols,
            bits,
            codes,
            codebook,
            table,
        })
    }

    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The codebook.
    pub fn codebook(&self) -> &[f32] {
        &self.codebook
    }

    /// The dense row-major `rows × cols` matrix.
    pub fn decode(&self) -> Vec<f32> {
        self.codes.iter().map(|&c| self.table[c as usize]).collect()
    }

    fn check(&self, m: usize, a: &[f32], c: &[f32]) -> Result<()> {
        if m.checked_mul(self.cols) != Some(a.len()) || m.checked_mul(self.rows) != Some(c.len()) {
            return Err(Error::Invalid(format!(
                "codebook matmul: A holds {} values for {m}×{}, C holds {} for {m}×{}",
                a.len(),
                self.cols,
                c.len(),
                self.rows
            )));
        }
        Ok(())
    }

    /// The reference twin: `c[i][r] = Σ_p a[i][p] · codebook[code[r][p]]`, summed over `p` in
    /// order. `a` is `m × cols`, `c` is `m × rows` (overwritten). Errors if a length is wrong.
    pub fn matmul_t_scalar(&self, m: usize, a: &[f32], c: &mut [f32]) -> Result<()> {
        self.check(m, a, c)?;
        let (n, k) = (self.rows, self.cols);
        for i in 0..m {
            for r in 0..n {
                let mut acc = 0.0f32;
                for p in 0..k {
                    acc += a[i * k + p] * self.codebook[self.codes[r * k + p] as usize];
                }
                c[i * n + r] = acc;
            }
        }
        Ok(())
    }

    /// The fast product `C = A · Wᵀ` (see the module notes for the two paths). Same contract as
    /// [`Self::matmul_t_scalar`].
    pub fn matmul_t(&self, m: usize, a: &[f32], c: &mut [f32]) -> Result<()> {
        self.check(m, a, c)?;
        if m >= GEMM_MIN_BATCH {
            return self.matmul_t_panels(m, a, c);
        }
        let (n, k) = (self.rows, self.cols);
        let table: &[f32; 256] = &self.table;
        for i in 0..m {
            let x = &a[i * k..(i + 1) * k];
            for (r, out) in c[i * n..(i + 1) * n].iter_mut().enumerate() {
                let codes = &self.codes[r * k..(r + 1) * k];
                // Eight independent sums hide the latency of the table loads and the adds.
                let mut acc = [0.0f32; 8];
                let mut xc = x.chunks_exact(8);
                let mut cc = codes.chunks_exact(8);
                for (xv, cv) in (&mut xc).zip(&mut cc) {
                    for l in 0..8 {
                        acc[l] += xv[l] * table[cv[l] as usize];
                    }
                }
                let mut tail = 0.0f32;
                for (xv, cv) in xc.remainder().iter().zip(cc.remainder()) {
                    tail += xv * table[*cv as usize];
                }
                *out = ((acc[0] + acc[1]) + (acc[2] + acc[3]))
                    + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
                    + tail;
            }
        }
        Ok(())
    }

    /// Batched path: decode [`PANEL`] output columns into a `cols × PANEL` panel of `Wᵀ`, run the
    /// f32 GEMM on it and copy the `m × PANEL` result into `C`.
    fn matmul_t_panels(&self, m: usize, a: &[f32], c: &mut [f32]) -> Result<()> {
        let (n, k) = (self.rows, self.cols);
        let mut panel = vec![0.0f32; k * PANEL.min(n)];
        let mut tile = vec![0.0f32; m * PANEL.min(n)];
        for j0 in (0..n).step_by(PANEL) {
            let w = PANEL.min(n - j0);
            let panel = &mut panel[..k * w];
            for jj in 0..w {
                let codes = &self.codes[(j0 + jj) * k..(j0 + jj + 1) * k];
                for (p, &code) in codes.iter().enumerate() {
                    panel[p * w + jj] = self.table[code as usize];
                }
            }
            let tile = &mut tile[..m * w];
            super::gemm(m, k, w, a, panel, tile)?;
            for i in 0..m {
                super::copy_short(
                    &mut c[i * n + j0..i * n + j0 + w],
                    &tile[i * w..(i + 1) * w],
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize, k: usize, bits: u8) -> CodebookMatrix {
        let size = 1usize << bits;
        let codebook: Vec<f32> = (0..size).map(|_| rng.normal()).collect();
        let codes = (0..n * k)
            .map(|_| ((rng.uniform() * size as f32) as usize).min(size - 1) as u8)
            .collect();
        CodebookMatrix::new(n, k, bits, codes, codebook).unwrap()
    }

    #[test]
    fn fast_paths_match_the_twin_over_odd_sizes_and_widths() {
        let mut rng = Rng::new(31);
        for &(m, n, k) in &[
            (0, 3, 4),
            (3, 0, 5),
            (2, 5, 0),
            (1, 1, 1),
            (1, 7, 13),
            (3, 17, 9),
            (4, 65, 31),
            (9, 130, 17),
            (1, 30, 784),
            (5, 70, 200),
        ] {
            for bits in [1u8, 2, 4, 5, 8] {
                let cb = random(&mut rng, n, k, bits);
                let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                let mut want = vec![f32::NAN; m * n];
                cb.matmul_t_scalar(m, &a, &mut want).unwrap();
                let mut got = vec![f32::NAN; m * n];
                cb.matmul_t(m, &a, &mut got).unwrap();
                let w = cb.decode();
                for i in 0..m {
                    for r in 0..n {
                        let scale: f32 = (0..k).map(|p| (a[i * k + p] * w[r * k + p]).abs()).sum();
                        let (x, y) = (want[i * n + r], got[i * n + r]);
                        assert!(
                            y.is_finite() && (x - y).abs() <= 1e-5 * k as f32 * scale,
                            "{m}×{n}×{k} {bits} bits: {y} vs {x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(CodebookMatrix::new(1, 2, 0, vec![0, 0], vec![1.0]).is_err());
        assert!(CodebookMatrix::new(1, 2, 9, vec![0, 0], vec![1.0]).is_err());
        assert!(CodebookMatrix::new(1, 2, 1, vec![0], vec![1.0]).is_err());
        assert!(CodebookMatrix::new(1, 2, 1, vec![0, 2], vec![1.0, 2.0]).is_err());
        assert!(CodebookMatrix::new(1, 2, 1, vec![0, 1], vec![1.0]).is_err());
        assert!(CodebookMatrix::new(1, 2, 1, vec![0, 0], vec![1.0, 2.0, 3.0]).is_err());
        assert!(CodebookMatrix::new(1, 1, 1, vec![0], vec![f32::NAN]).is_err());
        assert!(CodebookMatrix::new(usize::MAX, 2, 1, vec![], vec![1.0]).is_err());
        let cb = CodebookMatrix::new(2, 2, 2, vec![0, 1, 2, 1], vec![1.0, -1.0, 0.5]).unwrap();
        assert_eq!(cb.decode(), [1.0, -1.0, 0.5, -1.0]);
        let mut c = [0.0; 2];
        cb.matmul_t(1, &[2.0, 3.0], &mut c).unwrap();
        assert_eq!(c, [-1.0, -2.0]);
        assert!(cb.matmul_t(1, &[2.0], &mut c).is_err());
        assert!(cb.matmul_t_scalar(1, &[2.0, 3.0], &mut c[..1]).is_err());
    }
}
