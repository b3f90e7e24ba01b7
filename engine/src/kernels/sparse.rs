//! Sparse × dense products for pruned dense layers: `C[m×n] = A[m×k] · Wᵀ` where `W` (`n×k`,
//! one row per output) is stored in compressed sparse rows. Only the kept weights are touched,
//! so the work is `m · nnz` instead of `m · n · k`.
//!
//! The reference twin is the dense [`super::gemm::scalar`] on the decoded `Wᵀ`; the property
//! test in [`super::check`] compares the two over odd sizes, empty rows and all-zero matrices.

use crate::{Error, Result};

/// `W` (`rows × cols`) in compressed sparse rows. Built only by [`Csr::from_dense`], which
/// checks every invariant the kernels rely on.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    rows: usize,
    cols: usize,
    /// `row_ptr[r] .. row_ptr[r + 1]` index `col_idx`/`values` of row `r`.
    row_ptr: Vec<u32>,
    col_idx: Vec<u32>,
    values: Vec<f32>,
}

impl Csr {
    /// The non-zero entries of the row-major `rows × cols` matrix `w`.
    pub fn from_dense(rows: usize, cols: usize, w: &[f32]) -> Result<Csr> {
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(Error::Invalid(format!(
                "csr: a {rows}×{cols} matrix needs {} values, got {}",
                rows.saturating_mul(cols),
                w.len()
            )));
        }
        if u32::try_from(cols).is_err() || u32::try_from(w.len()).is_err() {
            return Err(Error::Invalid(format!(
                "csr: {rows}×{cols} is too large for 32-bit indices"
            )));
        }
        let nnz = w.iter().filter(|v| **v != 0.0).count();
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut col_idx = Vec::with_capacity(nnz);
        let mut values = Vec::with_capacity(nnz);
        row_ptr.push(0);
        for r in 0..rows {
            for (c, &v) in w[r * cols..(r + 1) * cols].iter().enumerate() {
                if v != 0.0 {
                    col_idx.push(c as u32);
                    values.push(v);
                }
            }
            row_ptr.push(values.len() as u32);
        }
        Ok(Csr {
            rows,
            cols,
            row_ptr,
            col_idx,
            values,
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

    /// Stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// `nnz / (rows · cols)`.
    pub fn density(&self) -> f32 {
        self.nnz() as f32 / (self.rows * self.cols).max(1) as f32
    }

    /// The dense row-major matrix back.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for p in self.row_ptr[r] as usize..self.row_ptr[r + 1] as usize {
                w[r * self.cols + self.col_idx[p] as usize] = self.values[p];
            }
        }
        w
    }

    /// `c[i, r] = Σ_p a[i, col(p)] · value(p)` over the kept entries `p` of row `r`: the product
    /// `A · Wᵀ` with `a` `m × cols` and `c` `m × rows`, both row-major; `c` is overwritten.
    /// Errors if a slice length does not match.
    pub fn matmul_t(&self, m: usize, a: &[f32], c: &mut [f32]) -> Result<()> {
        if m.checked_mul(self.cols) != Some(a.len()) || m.checked_mul(self.rows) != Some(c.len()) {
            return Err(Error::Invalid(format!(
                "csr matmul: A holds {} values for {m}×{}, C holds {} for {m}×{}",
                a.len(),
                self.cols,
                c.len(),
                self.rows
            )));
        }
        if m >= 4 {
            self.matmul_t_batched(m, a, c);
            return Ok(());
        }
        for i in 0..m {
            let x = &a[i * self.cols..(i + 1) * self.cols];
            let y = &mut c[i * self.rows..(i + 1) * self.rows];
            for (r, out) in y.iter_mut().enumerate() {
                let (lo, hi) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
                let (cols, vals) = (&self.col_idx[lo..hi], &self.values[lo..hi]);
                // Four independent sums hide the latency of the gathered loads.
                let mut acc = [0.0f32; 4];
                let mut ch_c = cols.chunks_exact(4);
                let mut ch_v = vals.chunks_exact(4);
                for (cc, vv) in (&mut ch_c).zip(&mut ch_v) {
                    for l in 0..4 {
                        acc[l] += x[cc[l] as usize] * vv[l];
                    }
                }
                let mut tail = 0.0f32;
                for (&cc, &vv) in ch_c.remainder().iter().zip(ch_v.remainder()) {
                    tail += x[cc as usize] * vv;
                }
                *out = (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
            }
        }
        Ok(())
    }
}

impl Csr {
    /// Batched form, tile by tile of [`TILE`] images: the tile of `A` is transposed into a
    /// small buffer (`k × TILE`, in cache), then for each output row the tile's sums stay in
    /// registers while the row's kept weights stream past, each scaling one contiguous
    /// `TILE`-wide column piece, and the tile's outputs (`n × TILE`) are transposed into `c`.
    /// A short last tile is zero-padded, so every tile takes the same fixed-width loop.
    fn matmul_t_batched(&self, m: usize, a: &[f32], c: &mut [f32]) {
        let (n, k) = (self.rows, self.cols);
        let mut xt = vec![0.0f32; k * TILE];
        let mut yt = vec![0.0f32; n * TILE];
        for i0 in (0..m).step_by(TILE) {
            let w = TILE.min(m - i0);
            if w < TILE {
                xt.fill(0.0);
            }
            let rows = &a[i0 * k..(i0 + w) * k];
            for (p, col) in xt.chunks_exact_mut(TILE).enumerate() {
                // One output line per input column; the `w` rows are read as `w` streams.
                for (j, x) in col[..w].iter_mut().enumerate() {
                    *x = rows[j * k + p];
                }
            }
            for (r, out) in yt.chunks_exact_mut(TILE).enumerate() {
                let mut acc = [0.0f32; TILE];
                let (lo, hi) = (self.row_ptr[r] as usize, self.row_ptr[r + 1] as usize);
                for (&col, &v) in self.col_idx[lo..hi].iter().zip(&self.values[lo..hi]) {
                    let x = &xt[col as usize * TILE..][..TILE];
                    // A fixed-length loop the compiler turns into SIMD.
                    for j in 0..TILE {
                        acc[j] += v * x[j];
                    }
                }
                out.copy_from_slice(&acc);
            }
            for j in 0..w {
                for (r, o) in c[(i0 + j) * n..][..n].iter_mut().enumerate() {
                    *o = yt[r * TILE + j];
                }
            }
        }
    }
}

/// Images per register tile of the batched sparse product.
const TILE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Reference: dense scalar GEMM on the decoded transpose.
    fn reference(csr: &Csr, m: usize, a: &[f32]) -> Vec<f32> {
        let w = csr.to_dense();
        let (n, k) = (csr.rows(), csr.cols());
        let mut wt = vec![0.0; k * n];
        for r in 0..n {
            for c in 0..k {
                wt[c * n + r] = w[r * k + c];
            }
        }
        let mut out = vec![0.0; m * n];
        super::super::gemm::scalar(m, k, n, a, &wt, &mut out);
        out
    }

    #[test]
    fn matches_the_dense_twin_over_odd_sizes_and_densities() {
        let mut rng = Rng::new(5);
        for &(m, n, k) in &[
            (1, 1, 1),
            (0, 3, 4),
            (3, 0, 5),
            (2, 5, 0),
            (1, 7, 13),
            (5, 17, 31),
            (8, 33, 65),
            (3, 100, 784),
            // Whole tiles, a whole tile and a short one, several tiles and a tail.
            (16, 5, 7),
            (17, 9, 11),
            (37, 19, 23),
            (64, 7, 5),
        ] {
            for density in [0.0f32, 0.05, 0.3, 1.0] {
                let w: Vec<f32> = (0..n * k)
                    .map(|_| {
                        if rng.uniform() < density {
                            rng.normal()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let csr = Csr::from_dense(n, k, &w).unwrap();
                assert_eq!(csr.to_dense(), w);
                let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                let mut c = vec![f32::NAN; m * n];
                csr.matmul_t(m, &a, &mut c).unwrap();
                let want = reference(&csr, m, &a);
                for (x, y) in c.iter().zip(&want) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                        "{m}×{n}×{k} {x} {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(Csr::from_dense(2, 3, &[0.0; 5]).is_err());
        let csr = Csr::from_dense(2, 3, &[1.0, 0.0, 2.0, 0.0, 0.0, 3.0]).unwrap();
        assert_eq!(csr.nnz(), 3);
        assert!(csr.matmul_t(1, &[1.0; 2], &mut [0.0; 2]).is_err());
        assert!(csr.matmul_t(1, &[1.0; 3], &mut [0.0; 3]).is_err());
        let mut c = [0.0; 2];
        csr.matmul_t(1, &[1.0, 10.0, 100.0], &mut c).unwrap();
        assert_eq!(c, [201.0, 300.0]);
    }
}
