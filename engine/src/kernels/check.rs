//! Property checks and timings shared by the native, Node and Chromium tests, so the three
//! run the same logic.

use super::{KernelKind, available, gemm::scalar, gemm_relaxed, gemm_with};
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
/// wrong slice lengths are errors. Then the other families against their twins: CSR sparse,
/// int8 (exact), codebook (within [`GEMM_REL_TOL`]) and XNOR (exact). Returns what was covered,
/// or the first mismatch.
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
                        let r = compare(kind.name(), m, k, n, &a, &b, &want, &got, v)?;
                        worst = worst.max(r);
                        // The same product with B, then A, packed once (the plan's layers).
                        let mut got = vec![f32::NAN; m * n];
                        super::prepacked::PackedB::new(kind, k, n, &b)?.matmul(m, &a, &mut got)?;
                        let r = compare("prepacked-b", m, k, n, &a, &b, &want, &got, v)?;
                        worst = worst.max(r);
                        let mut got = vec![f32::NAN; m * n];
                        super::prepacked::PackedA::new(kind, m, k, &a)?.matmul(n, &b, &mut got)?;
                        let r = compare("prepacked-a", m, k, n, &a, &b, &want, &got, v)?;
                        worst = worst.max(r);
                    }
                    if super::RELAXED_SIMD {
                        let mut got = vec![f32::NAN; m * n];
                        gemm_relaxed(m, k, n, &a, &b, &mut got)?;
                        let r = compare("relaxed-simd", m, k, n, &a, &b, &want, &got, v)?;
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
            || gemm_relaxed(2, 3, 3, &[0.0; 6], &[0.0; 8], &mut c).is_ok()
        {
            return Err(Error::Invalid(format!(
                "gemm `{}` accepted slices of the wrong length",
                kind.name()
            )));
        }
    }
    let sparse_cases = selftest_csr(&mut rng, &mut worst)?;
    let int8_cases = selftest_int8(&mut rng)?;
    let codebook_cases = selftest_codebook(&mut rng, &mut worst)?;
    let binary_cases = selftest_binary(&mut rng)?;
    let depthwise_cases = depthwise_selftest()?;
    let mut kernels: Vec<&'static str> = fast.iter().map(|k| k.name()).collect();
    if super::RELAXED_SIMD {
        kernels.push("relaxed-simd");
    }
    kernels.push("prepacked-a");
    kernels.push("prepacked-b");
    kernels.push("csr");
    kernels.extend(super::int8::available().into_iter().map(|k| k.name()));
    kernels.push("codebook");
    kernels.extend(super::binary::available().into_iter().map(|k| k.name()));
    kernels.push("depthwise");
    Ok(SelftestReport {
        kernels,
        cases: cases + sparse_cases + int8_cases + codebook_cases + binary_cases + depthwise_cases,
        worst_ratio: worst,
    })
}

/// Every depthwise plane kernel ([`super::depthwise`]) against its scalar twin within
/// [`GEMM_REL_TOL`] (relative to `Σ|tap · x|`): output widths around the 4- and 8-lane vectors
/// (0, 1, 3, 4, 5, 7, 8, 9, 15, 17), 1–3 output rows, 3×3 filters (the unrolled kernels) and
/// 1×1, 1×5, 2×2 and 5×5 ones (the looped ones), rows read from scattered places of the buffer
/// (with a shared zero row), zero and negative values, the output fully overwritten. Returns the
/// number of cases.
pub fn depthwise_selftest() -> Result<usize> {
    use super::depthwise::{DwPlane, OVERREAD, plane_scalar, plane_with};
    let mut rng = Rng::new(0x6477);
    let mut cases = 0;
    for (kh, kw) in [(3usize, 3usize), (1, 1), (1, 5), (2, 2), (5, 5)] {
        for ow in [0usize, 1, 3, 4, 5, 7, 8, 9, 15, 17] {
            for oh in [1usize, 2, 3] {
                for v in [Values::Normal, Values::Negative, Values::Mixed] {
                    // Source rows `pw` wide (room for the taps' column offsets and the
                    // over-read), `nrows` of them, the last one zeros.
                    let pw = ow.div_ceil(OVERREAD) * OVERREAD + kw + 3;
                    let nrows = oh + kh + 2;
                    let mut src = fill(&mut rng, pw * nrows, v);
                    src[(nrows - 1) * pw..].fill(0.0);
                    let rows: Vec<usize> = (0..oh * kh)
                        .map(|r| {
                            let pick = (r * 7 + cases) % nrows;
                            pick * pw
                        })
                        .collect();
                    let cols: Vec<usize> = (0..kw).map(|j| (j * 5 + cases) % (kw + 3)).collect();
                    let taps = fill(&mut rng, kh * kw, v);
                    let p = DwPlane {
                        src: &src,
                        rows: &rows,
                        cols: &cols,
                        taps: &taps,
                        bias: rng.normal(),
                        ow,
                    };
                    let mut want = vec![f32::NAN; oh * ow];
                    plane_scalar(&p, &mut want)?;
                    for kind in available() {
                        let mut got = vec![f32::NAN; oh * ow];
                        plane_with(kind, &p, &mut got)?;
                        for (at, (x, y)) in want.iter().zip(&got).enumerate() {
                            let (oy, ox) = (at / ow, at % ow);
                            let scale: f32 = p.bias.abs()
                                + (0..kh * kw)
                                    .map(|t| {
                                        let s = rows[oy * kh + t / kw] + cols[t % kw] + ox;
                                        (taps[t] * src[s]).abs()
                                    })
                                    .sum::<f32>();
                            let bound = GEMM_REL_TOL * (kh * kw) as f32 * scale;
                            if !y.is_finite() || (x - y).abs() > bound {
                                return Err(Error::Invalid(format!(
                                    "depthwise `{}` {kh}×{kw} oh={oh} ow={ow}: out[{oy}][{ox}] = \
                                     {y}, reference {x}, tolerance {bound}",
                                    kind.name()
                                )));
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

/// Random `i8` codes with both extremes every few values.
fn fill_i8(rng: &mut Rng, len: usize, extremes: bool) -> Vec<i8> {
    (0..len)
        .map(|i| match i % 5 {
            0 if extremes => -128,
            1 if extremes => 127,
            _ => ((rng.uniform() * 256.0) as i32 - 128).clamp(-128, 127) as i8,
        })
        .collect()
}

/// Every int8 kernel (the packed-layout scalar loop included) against the raw-matrix twin
/// [`super::int8::gemm_reference`], **exactly**, for every `m, k, n` of [`GEMM_SIZES`] with
/// random codes and zero points (per-column `B` zero points on every other case), plus the
/// largest terms (`A = 127`, zp −128; `B = −128`, zp 127) on odd sizes and `k = 784`; `C` starts
/// as `i32::MIN`. Also checks wrong lengths and the `u8` helper.
fn selftest_int8(rng: &mut Rng) -> Result<usize> {
    use super::int8::{PackedI8, gemm_reference, u8_to_i8};
    let mut cases = 0;
    let mut shapes: Vec<(usize, usize, usize, bool)> = Vec::new();
    for &m in &GEMM_SIZES {
        for &k in &GEMM_SIZES {
            for &n in &GEMM_SIZES {
                shapes.push((m, k, n, false));
                if m % 2 == 1 && n % 2 == 1 && k % 2 == 1 {
                    shapes.push((m, k, n, true));
                }
            }
        }
    }
    shapes.extend([
        (1, 784, 33, true),
        (5, 784, 17, false),
        (3, 300, 100, false),
    ]);
    for (idx, &(m, k, n, extreme)) in shapes.iter().enumerate() {
        let (a, a_zp, b, b_zp) = if extreme {
            (
                vec![127i8; m * k],
                -128i8,
                vec![-128i8; k * n],
                vec![127i8; n],
            )
        } else {
            let zp = fill_i8(rng, 1, false)[0];
            let b_zp = if idx % 2 == 0 {
                Vec::new()
            } else {
                fill_i8(rng, n, true)
            };
            (
                fill_i8(rng, m * k, true),
                zp,
                fill_i8(rng, k * n, true),
                b_zp,
            )
        };
        let mut want = vec![i32::MIN; m * n];
        gemm_reference(m, k, n, &a, a_zp, &b, &b_zp, &mut want)?;
        let pk = PackedI8::new(k, n, &b, &b_zp)?;
        for kind in super::int8::available() {
            let mut got = vec![i32::MIN; m * n];
            pk.gemm_with(kind, m, &a, a_zp, &mut got)?;
            if let Some(at) = got.iter().zip(&want).position(|(g, w)| g != w) {
                return Err(Error::Invalid(format!(
                    "int8 gemm `{}` m={m} k={k} n={n} zp={a_zp}: C[{}][{}] = {}, reference {}",
                    kind.name(),
                    at / n,
                    at % n,
                    got[at],
                    want[at]
                )));
            }
        }
        cases += 1;
    }
    let pk = PackedI8::new(3, 3, &[0; 9], &[])?;
    if pk.gemm(2, &[0; 5], 0, &mut [0; 6]).is_ok()
        || pk.gemm(2, &[0; 6], 0, &mut [0; 5]).is_ok()
        || PackedI8::new(3, 3, &[0; 8], &[]).is_ok()
        || PackedI8::new(3, 3, &[0; 9], &[0; 2]).is_ok()
    {
        return Err(Error::Invalid("int8 gemm accepted wrong lengths".into()));
    }
    let x: Vec<u8> = (0..=255).collect();
    for zp in [0u8, 128, 255] {
        let (y, z) = u8_to_i8(&x, zp);
        if x.iter()
            .zip(&y)
            .any(|(&u, &s)| u as i32 - zp as i32 != s as i32 - z as i32)
        {
            return Err(Error::Invalid(format!(
                "u8_to_i8 changed x − zp for zp {zp}"
            )));
        }
    }
    Ok(cases)
}

/// The codebook fast paths (lookup GEMV and decode-a-panel GEMM) against the scalar twin for
/// every `m, k, n` of [`GEMM_SIZES`] (code widths 1–8 bits in turn) within [`GEMM_REL_TOL`].
fn selftest_codebook(rng: &mut Rng, worst: &mut f32) -> Result<usize> {
    use super::codebook::CodebookMatrix;
    let mut cases = 0;
    let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
    for &m in &GEMM_SIZES {
        for &k in &GEMM_SIZES {
            for &n in &GEMM_SIZES {
                shapes.push((m, k, n));
            }
        }
    }
    shapes.extend([(1, 784, 70), (6, 100, 130)]);
    for (idx, &(m, k, n)) in shapes.iter().enumerate() {
        let bits = (idx % 8) as u8 + 1;
        let size = 1usize << bits;
        let codebook = fill(rng, size, Values::Normal);
        let codes: Vec<u8> = (0..n * k)
            .map(|_| ((rng.uniform() * size as f32) as usize).min(size - 1) as u8)
            .collect();
        let cb = CodebookMatrix::new(n, k, bits, codes, codebook)?;
        let a = fill(rng, m * k, Values::Normal);
        let mut want = vec![f32::NAN; m * n];
        cb.matmul_t_scalar(m, &a, &mut want)?;
        let mut got = vec![f32::NAN; m * n];
        cb.matmul_t(m, &a, &mut got)?;
        let w = cb.decode();
        for i in 0..m {
            for j in 0..n {
                let scale: f32 = (0..k).map(|p| (a[i * k + p] * w[j * k + p]).abs()).sum();
                let (x, y) = (want[i * n + j], got[i * n + j]);
                let bound = GEMM_REL_TOL * k as f32 * scale;
                if !y.is_finite() || (x - y).abs() > bound {
                    return Err(Error::Invalid(format!(
                        "codebook m={m} k={k} n={n} {bits} bits: C[{i}][{j}] = {y}, reference \
                         {x}, tolerance {bound}"
                    )));
                }
                if scale > 0.0 {
                    *worst = worst.max((x - y).abs() / (k as f32 * scale));
                }
            }
        }
        cases += 1;
    }
    Ok(cases)
}

/// The XNOR-popcount dots against the bit-by-bit twin, **exactly**, for every `m, n` of
/// [`GEMM_SIZES`] and `k` around the 64-bit word edges, and the scaled products bit for bit.
fn selftest_binary(rng: &mut Rng) -> Result<usize> {
    use super::binary::{BinaryMatrix, pack_signs};
    let mut cases = 0;
    for &m in &GEMM_SIZES {
        for &n in &GEMM_SIZES {
            for k in [0usize, 1, 2, 31, 63, 64, 65, 127, 128, 129, 200] {
                let a = fill(rng, m * k, Values::Normal);
                let w = fill(rng, n * k, Values::Normal);
                let alpha: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
                let bw = BinaryMatrix::from_f32(n, k, &w, alpha)?;
                let ab = pack_signs(m, k, &a)?;
                let mut want = vec![i32::MIN; m * n];
                bw.dots_scalar(m, &ab, &mut want)?;
                let mut same = true;
                for kind in super::binary::available() {
                    let mut got = vec![i32::MIN; m * n];
                    bw.dots_with(kind, m, &ab, &mut got)?;
                    same &= got == want;
                }
                let rs: Vec<f32> = (0..m).map(|_| rng.uniform()).collect();
                let mut c1 = vec![f32::NAN; m * n];
                let mut c2 = vec![f32::NAN; m * n];
                bw.matmul_t(m, &ab, &rs, &mut c1)?;
                bw.matmul_t_scalar(m, &ab, &rs, &mut c2)?;
                if !same || c1.iter().zip(&c2).any(|(x, y)| x.to_bits() != y.to_bits()) {
                    return Err(Error::Invalid(format!(
                        "xnor m={m} k={k} n={n}: fast dots differ from the twin"
                    )));
                }
                cases += 1;
            }
        }
    }
    // Long rows: several 31-step byte sums of the simd128 kind, even and odd word counts, and
    // the largest per-byte counts (every sign differs, so each step adds 8 to every lane).
    for &(m, n) in &[(1, 1), (2, 4), (3, 5), (5, 9)] {
        for k in [3968usize, 3969, 4032, 4033, 4096, 4160, 8001] {
            for v in [Values::Normal, Values::Negative] {
                let a = fill(rng, m * k, v);
                let w: Vec<f32> = match v {
                    Values::Negative => vec![1.0; n * k],
                    _ => fill(rng, n * k, v),
                };
                let bw = BinaryMatrix::from_f32(n, k, &w, vec![1.0; n])?;
                let ab = pack_signs(m, k, &a)?;
                let mut want = vec![i32::MIN; m * n];
                bw.dots_scalar(m, &ab, &mut want)?;
                for kind in super::binary::available() {
                    let mut got = vec![i32::MIN; m * n];
                    bw.dots_with(kind, m, &ab, &mut got)?;
                    if got != want {
                        return Err(Error::Invalid(format!(
                            "xnor {} m={m} k={k} n={n} ({v:?}): dots differ from the twin",
                            kind.name()
                        )));
                    }
                }
                cases += 1;
            }
        }
    }
    Ok(cases)
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
    kind: &str,
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
                    "gemm `{kind}` m={m} k={k} n={n} ({v:?}) C[{i}][{j}] = {g}, reference {w}, \
                     tolerance {bound}"
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
