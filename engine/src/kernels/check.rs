//! Property checks and timings shared by the native, Node and Chromium tests, so the three
//! run the same logic.

use super::{KernelKind, available, gemm::scalar, gemm_with};
use crate::rng::Rng;
use crate::{Error, Result};

/// Named tolerance for GEMM: a fast kernel's `C[i][j]` may differ from the reference twin's
/// by at most `GEMM_REL_TOL · k · Σ_p |A[i][p]·B[p][j]|` (summation order and FMA differ).
pub const GEMM_REL_TOL: f32 = 1e-5;

/// Sizes tried for each of `m`, `k` and `n`: empty, tiny, around the 4/8/16 tile widths, odd.
pub const GEMM_SIZES: [usize; 14] = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 65];

/// What [`selftest`] covered.
#[derive(Clone, Debug, PartialEq)]
pub struct SelftestReport {
    /// The kinds compared with the reference twin (the twin itself excluded).
    pub kernels: Vec<&'static str>,
    /// Number of `(m, k, n, values)` cases per kernel.
    pub cases: usize,
    /// Largest observed `|fast − scalar| / (k · Σ|a·b|)` over all kernels and cases.
    pub worst_ratio: f32,
}

/// Value families for the edge cases.
#[derive(Clone, Copy, Debug)]
enum Values {
    Normal,
    Zeros,
    Negative,
    Large,
    Mixed,
}

fn fill(rng: &mut Rng, len: usize, v: Values) -> Vec<f32> {
    (0..len)
        .map(|i| match v {
            Values::Normal => rng.normal(),
            Values::Zeros => 0.0,
            Values::Negative => -rng.uniform() - 0.5,
            Values::Large => rng.normal() * 1e15,
            Values::Mixed => match i % 4 {
                0 => 0.0,
                1 => -rng.uniform() * 1e6,
                2 => rng.uniform() * 1e-6,
                _ => rng.normal(),
            },
        })
        .collect()
}

/// Compares every available fast GEMM kernel with the reference twin over all
/// [`GEMM_SIZES`]³ with random values, plus zeros, negative, large and mixed-magnitude values
/// on a subset, within [`GEMM_REL_TOL`]. Also checks that `C` is fully overwritten and that
/// wrong slice lengths are errors. Returns what was covered, or the first mismatch.
pub fn selftest() -> Result<SelftestReport> {
    let fast: Vec<KernelKind> = available()
        .into_iter()
        .filter(|&k| k != KernelKind::Scalar)
        .collect();
    let mut rng = Rng::new(0x6e6d);
    let mut cases = 0;
    let mut worst = 0.0f32;
    for &m in &GEMM_SIZES {
        for &k in &GEMM_SIZES {
            for &n in &GEMM_SIZES {
                let families: &[Values] = if m % 2 == 1 && n % 2 == 1 {
                    &[
                        Values::Normal,
                        Values::Zeros,
                        Values::Negative,
                        Values::Large,
                        Values::Mixed,
                    ]
                } else {
                    &[Values::Normal]
                };
                for &v in families {
                    let a = fill(&mut rng, m * k, v);
                    let b = fill(&mut rng, k * n, v);
                    let mut want = vec![f32::NAN; m * n];
                    scalar(m, k, n, &a, &b, &mut want);
                    for &kind in &fast {
                        let mut got = vec![f32::NAN; m * n];
                        gemm_with(kind, m, k, n, &a, &b, &mut got)?;
                        let r = compare(kind, m, k, n, &a, &b, &want, &got, v)?;
                        worst = worst.max(r);
                    }
                    cases += 1;
                }
            }
        }
    }
    for kind in available() {
        let mut c = vec![0.0; 6];
        if gemm_with(kind, 2, 3, 3, &[0.0; 6], &[0.0; 8], &mut c).is_ok()
            || gemm_with(kind, 2, 3, 3, &[0.0; 5], &[0.0; 9], &mut c).is_ok()
            || gemm_with(kind, 2, 3, 3, &[0.0; 6], &[0.0; 9], &mut c[..5]).is_ok()
            || gemm_with(kind, usize::MAX, 2, 1, &[], &[0.0; 2], &mut []).is_ok()
        {
            return Err(Error::Invalid(format!(
                "gemm `{}` accepted slices of the wrong length",
                kind.name()
            )));
        }
    }
    let sparse_cases = selftest_csr(&mut rng, &mut worst)?;
    let mut kernels: Vec<&'static str> = fast.iter().map(|k| k.name()).collect();
    kernels.push("csr");
    Ok(SelftestReport {
        kernels,
        cases: cases + sparse_cases,
        worst_ratio: worst,
    })
}

/// The CSR kernel against the scalar twin on the decoded matrix: `C = A · Wᵀ` for every
/// `m, k, n` of [`GEMM_SIZES`] with `W` at densities 0, 10 % and 60 %, both the per-image
/// (batch < 4) and the tiled (batch ≥ 4, tails of the 16-wide tile) paths.
fn selftest_csr(rng: &mut Rng, worst: &mut f32) -> Result<usize> {
    let mut cases = 0;
    for &m in &GEMM_SIZES {
        for &k in &GEMM_SIZES {
            for &n in &GEMM_SIZES {
                for density in [0.0f32, 0.1, 0.6] {
                    let a = fill(rng, m * k, Values::Normal);
                    let w: Vec<f32> = (0..n * k)
                        .map(|_| {
                            if rng.uniform() < density {
                                rng.normal()
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let csr = super::sparse::Csr::from_dense(n, k, &w)?;
                    let mut wt = vec![0.0; k * n];
                    for r in 0..n {
                        for c in 0..k {
                            wt[c * n + r] = w[r * k + c];
                        }
                    }
                    let mut want = vec![f32::NAN; m * n];
                    scalar(m, k, n, &a, &wt, &mut want);
                    let mut got = vec![f32::NAN; m * n];
                    csr.matmul_t(m, &a, &mut got)?;
                    for i in 0..m {
                        for j in 0..n {
                            let scale: f32 =
                                (0..k).map(|p| (a[i * k + p] * wt[p * n + j]).abs()).sum();
                            let (x, y) = (want[i * n + j], got[i * n + j]);
                            let bound = GEMM_REL_TOL * k as f32 * scale;
                            if !y.is_finite() || (x - y).abs() > bound {
                                return Err(Error::Invalid(format!(
                                    "csr m={m} k={k} n={n} density {density}: C[{i}][{j}] = {y}, \
                                     reference {x}, tolerance {bound}"
                                )));
                            }
                            if scale > 0.0 {
                                *worst = worst.max((x - y).abs() / (k as f32 * scale));
                            }
                        }
                    }
                    cases += 1;
                }
            }
        }
    }
    Ok(cases)
}

#[allow(clippy::too_many_arguments)]
fn compare(
    kind: KernelKind,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    want: &[f32],
    got: &[f32],
    v: Values,
) -> Result<f32> {
    let mut worst = 0.0f32;
    for i in 0..m {
        for j in 0..n {
            let scale: f32 = (0..k).map(|p| (a[i * k + p] * b[p * n + j]).abs()).sum();
            let (w, g) = (want[i * n + j], got[i * n + j]);
            let diff = (w - g).abs();
            let bound = GEMM_REL_TOL * k as f32 * scale;
            let ok = g.is_finite() && diff <= bound;
            if !ok {
                return Err(Error::Invalid(format!(
                    "gemm `{}` m={m} k={k} n={n} ({v:?}) C[{i}][{j}] = {g}, reference {w}, \
                     tolerance {bound}",
                    kind.name()
                )));
            }
            if scale > 0.0 {
                worst = worst.max(diff / (k as f32 * scale));
            }
        }
    }
    Ok(worst)
}

/// One timing of [`bench_gemm`].
#[derive(Clone, Debug, PartialEq)]
pub struct GemmFigure {
    /// Kernel name, or `ndarray-dot` for ndarray's `Array2::dot` (what the reference ops use).
    pub kernel: &'static str,
    /// `n` of the `n×n·n×n` product.
    pub size: usize,
    /// Repetitions timed.
    pub reps: usize,
    /// Mean time of one product over all repetitions, in milliseconds (a mean, so that a
    /// coarse clock such as the browser's `Date.now` still gives a fair figure).
    pub mean_ms: f64,
    /// `2·n³ / mean time`, in GFLOP/s.
    pub gflops: f64,
}

/// Times an `n×n · n×n` product with every available kernel and with ndarray's `dot`, each
/// repeated until `budget_ms` has passed (at least 2 runs), after one untimed warm-up run. `now_ms` is a
/// millisecond clock (`performance.now`/`Date.now` in the browser, `Instant` natively).
pub fn bench_gemm(n: usize, budget_ms: f64, now_ms: &dyn Fn() -> f64) -> Result<Vec<GemmFigure>> {
    let mut rng = Rng::new(256);
    let a = fill(&mut rng, n * n, Values::Normal);
    let b = fill(&mut rng, n * n, Values::Normal);
    let mut c = vec![0.0f32; n * n];
    let flops = 2.0 * (n as f64).powi(3);
    let mut out = Vec::new();
    let mut time = |name: &'static str, run: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        run()?;
        let start = now_ms();
        let mut reps = 0;
        while reps < 2 || now_ms() - start < budget_ms {
            run()?;
            reps += 1;
        }
        let mean = (now_ms() - start) / reps as f64;
        out.push(GemmFigure {
            kernel: name,
            size: n,
            reps,
            mean_ms: mean,
            gflops: flops / (mean.max(1e-6) * 1e6),
        });
        Ok(())
    };
    for kind in available() {
        time(kind.name(), &mut || {
            gemm_with(kind, n, n, n, &a, &b, &mut c)
        })?;
    }
    let shape_err = |e: ndarray::ShapeError| Error::Invalid(e.to_string());
    let an = ndarray::Array2::from_shape_vec((n, n), a.clone()).map_err(shape_err)?;
    let bn = ndarray::Array2::from_shape_vec((n, n), b.clone()).map_err(shape_err)?;
    time("ndarray-dot", &mut || {
        let cn = an.dot(&bn);
        c[0] = cn[[0, 0]];
        Ok(())
    })?;
    Ok(out)
}
