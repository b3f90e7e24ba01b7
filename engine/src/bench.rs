//! Figures, not tests: per-kernel throughput, a peak probe and whole-model latency, with the same
//! Rust code in the browser (feature `js`: [`js`]'s `benchKernels`, `benchModel`, …, driven by
//! `cargo xtask bench-web`) and natively (`engine/tests/bench_native.rs`), so the two builds of
//! the same kernels can be compared. Every function takes a millisecond clock (`performance.now`
//! in the browser, `Instant` natively) and returns JSON; inputs are seeded. Nothing here asserts
//! a time.
//!
//! Timing: one warm-up call, then the number of calls per sample is raised until a sample lasts
//! at least [`MIN_SAMPLE_MS`] (so a coarse clock still resolves it), then the **median** of
//! [`SAMPLES`] samples is reported. Rates are dense-equivalent `2·m·k·n / time` (G op/s; GFLOP/s
//! for f32), so each figure divided by the f32 GEMM's on the same shape is its speed-up.

use std::hint::black_box;
use std::ops::ControlFlow;

use serde_json::{Value, json};

use crate::kernels::{
    self, KernelKind, binary::BinaryMatrix, codebook::CodebookMatrix, int8, sparse::Csr,
};
use crate::rng::Rng;
use crate::{Error, Result, Session};

/// A sample is at least this long (ms).
pub const MIN_SAMPLE_MS: f64 = 25.0;
/// Samples per figure; the median is reported.
pub const SAMPLES: usize = 5;

/// A millisecond clock.
pub type Clock<'a> = &'a dyn Fn() -> f64;

/// Median time of one call of `f` in milliseconds (see the module docs), and calls per sample.
pub fn time_ms(now: Clock, f: &mut dyn FnMut() -> Result<()>) -> Result<(f64, usize)> {
    f()?;
    let mut reps = 1usize;
    loop {
        let t = now();
        for _ in 0..reps {
            f()?;
        }
        let dt = now() - t;
        if dt >= MIN_SAMPLE_MS || reps >= 1 << 20 {
            break;
        }
        let grow = if dt <= 0.0 {
            8.0
        } else {
            (MIN_SAMPLE_MS * 1.2 / dt).clamp(1.5, 8.0)
        };
        reps = ((reps as f64) * grow).ceil() as usize;
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = now();
        for _ in 0..reps {
            f()?;
        }
        samples.push((now() - t) / reps as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[SAMPLES / 2], reps))
}

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

fn codes(rng: &mut Rng, len: usize) -> Vec<i8> {
    (0..len)
        .map(|_| ((rng.uniform() * 255.0) as i32 - 127) as i8)
        .collect()
}

fn pruned(rng: &mut Rng, len: usize, sparsity: f32) -> Vec<f32> {
    (0..len)
        .map(|_| {
            if rng.uniform() < sparsity {
                0.0
            } else {
                rng.normal()
            }
        })
        .collect()
}

/// Which build runs this code: `relaxed-simd`, `simd128` or `native` ([`kernels::build_name`]),
/// and the kernels it selected.
pub fn build_info() -> Value {
    json!({
        "build": kernels::build_name(),
        "f32_gemm": kernels::kernels().name,
        "int8": int8::selected().name(),
        "xnor": kernels::binary::selected().name(),
        "target": std::env::consts::ARCH,
    })
}

fn figure(
    family: &str,
    kernel: &str,
    (m, k, n): (usize, usize, usize),
    ms: f64,
    reps: usize,
) -> Value {
    let ops = 2.0 * (m * k * n) as f64;
    json!({
        "family": family, "kernel": kernel, "m": m, "k": k, "n": n,
        "ms": ms, "reps": reps, "gops": ops / (ms.max(1e-9) * 1e6),
    })
}

/// What [`bench_kernels`] runs.
#[derive(Clone, Debug)]
pub struct KernelOpts {
    /// Square f32 GEMM sizes.
    pub gemm_sizes: Vec<usize>,
    /// Also time every available f32 kind, not only the selected one (scalar only up to 128).
    pub all_kinds: bool,
}

impl Default for KernelOpts {
    fn default() -> Self {
        KernelOpts {
            gemm_sizes: vec![64, 128, 256, 512],
            all_kinds: true,
        }
    }
}

/// Per-kernel figures: f32 GEMM (selected kernel and every other kind) at each size, f32 GEMV
/// (1×1024·1024×1024), int8 GEMM (256³ and LeNet fc1 784→300 at batch 1 and 64, every kind),
/// CSR at 70/80/92 % zeros, a 4-bit codebook product and XNOR (dots + scaling, and the dots
/// alone for every XNOR kind) on the same shapes. Returns `{ build, figures: [...] }`.
pub fn bench_kernels(opts: &KernelOpts, now: Clock) -> Result<Value> {
    let mut figs = Vec::new();
    let mut rng = Rng::new(0xbe_c4);
    let selected = kernels::kernels();
    for &s in &opts.gemm_sizes {
        let a = normal(&mut rng, s * s);
        let b = normal(&mut rng, s * s);
        let mut c = vec![0.0f32; s * s];
        let (ms, reps) = time_ms(now, &mut || {
            kernels::gemm(s, s, s, black_box(&a), &b, &mut c)
        })?;
        figs.push(figure("f32-gemm", selected.name, (s, s, s), ms, reps));
        if opts.all_kinds {
            for kind in kernels::available() {
                if kind == KernelKind::Scalar && s > 128 {
                    continue;
                }
                let (ms, reps) = time_ms(now, &mut || {
                    kernels::gemm_with(kind, s, s, s, black_box(&a), &b, &mut c)
                })?;
                figs.push(figure("f32-gemm", kind.name(), (s, s, s), ms, reps));
            }
        }
    }
    {
        let (k, n) = (1024, 1024);
        let a = normal(&mut rng, k);
        let b = normal(&mut rng, k * n);
        let mut c = vec![0.0f32; n];
        let (ms, reps) = time_ms(now, &mut || {
            kernels::gemm(1, k, n, black_box(&a), &b, &mut c)
        })?;
        figs.push(figure("f32-gemv", selected.name, (1, k, n), ms, reps));
    }
    for (m, k, n) in [(256, 256, 256), (1, 784, 300), (64, 784, 300)] {
        // The dense baseline on this shape, B packed per call as the API does.
        let a = normal(&mut rng, m * k);
        let wt = normal(&mut rng, k * n);
        let w = normal(&mut rng, n * k);
        let mut cf = vec![0.0f32; m * n];
        if (m, k, n) != (256, 256, 256) {
            let (ms, reps) = time_ms(now, &mut || {
                kernels::gemm(m, k, n, black_box(&a), &wt, &mut cf)
            })?;
            figs.push(figure("f32-gemm", selected.name, (m, k, n), ms, reps));
        }
        let ai = codes(&mut rng, m * k);
        let wi = codes(&mut rng, n * k);
        let pk = int8::PackedI8::from_rows(n, k, &wi, &[])?;
        let mut ci = vec![0i32; m * n];
        for kind in int8::available() {
            if kind == int8::Int8Kind::Scalar && m * k * n > 1 << 22 {
                continue;
            }
            let (ms, reps) = time_ms(now, &mut || {
                pk.gemm_with(kind, m, black_box(&ai), -3, &mut ci)
            })?;
            figs.push(figure("int8-gemm", kind.name(), (m, k, n), ms, reps));
        }
        for sparsity in [0.70f32, 0.80, 0.92] {
            let wp = pruned(&mut rng, n * k, sparsity);
            let csr = Csr::from_dense(n, k, &wp)?;
            let (ms, reps) = time_ms(now, &mut || csr.matmul_t(m, black_box(&a), &mut cf))?;
            let name = format!("csr-{:.0}%", sparsity * 100.0);
            figs.push(figure("csr", &name, (m, k, n), ms, reps));
        }
        let cbk = normal(&mut rng, 16);
        let idx: Vec<u8> = (0..n * k)
            .map(|_| ((rng.uniform() * 16.0) as u8).min(15))
            .collect();
        let cb = CodebookMatrix::new(n, k, 4, idx, cbk)?;
        let (ms, reps) = time_ms(now, &mut || cb.matmul_t(m, black_box(&a), &mut cf))?;
        figs.push(figure("codebook", "codebook-4bit", (m, k, n), ms, reps));
        let bw = BinaryMatrix::from_f32(n, k, &w, vec![0.5; n])?;
        let ab = kernels::binary::pack_signs(m, k, &a)?;
        let (ms, reps) = time_ms(now, &mut || bw.matmul_t(m, black_box(&ab), &[], &mut cf))?;
        figs.push(figure("xnor", "xnor", (m, k, n), ms, reps));
        // The dots alone, every kind (the last is the one `xnor` uses).
        let mut d = vec![0i32; m * n];
        for kind in kernels::binary::available() {
            let (ms, reps) = time_ms(now, &mut || bw.dots_with(kind, m, black_box(&ab), &mut d))?;
            figs.push(figure("xnor-dots", kind.name(), (m, k, n), ms, reps));
        }
    }
    Ok(json!({ "build": build_info(), "figures": figs }))
}

/// Iterations of one peak-probe call (each does [`peak::CHAINS`] vector operations).
const PEAK_ITERS: usize = 1 << 15;

/// The peak probe: twelve independent chains of one vector instruction in a tight loop (after
/// ~300 ms of warm-up, so the browser's optimizing tier runs it), for `f32x4.mul` alone and
/// `f32x4.add` alone, and, in a relaxed build, `f32x4.relaxed_madd`. A GEMM step of 4
/// multiply-adds issues one mul and one add (8 flops), so the simd128 GEMM's ceiling is
/// `peak_gflops = 8 / max(time of a mul, time of an add)` (assuming they issue in parallel, the
/// higher and so stricter bound); the relaxed GEMM's is the madd rate. Natively the same loops run
/// on SSE (`__m128`, the width of simd128) and 256-bit FMA.
pub fn bench_peak(now: Clock) -> Result<Value> {
    let mut sink = 0.0f32;
    let t0 = now();
    while now() - t0 < 300.0 {
        sink += peak::run(black_box(PEAK_ITERS), true);
        sink += peak::run(black_box(PEAK_ITERS), false);
        sink += peak::madd(black_box(PEAK_ITERS));
    }
    let ops = (PEAK_ITERS * peak::CHAINS) as f64;
    let mut rate = |f: &dyn Fn(usize) -> f32| -> Result<f64> {
        let (ms, _) = time_ms(now, &mut || {
            sink += f(black_box(PEAK_ITERS));
            Ok(())
        })?;
        Ok(ops / (ms * 1e6)) // G instructions per second
    };
    let mul = rate(&|n| peak::run(n, true))?;
    let add = rate(&|n| peak::run(n, false))?;
    let mut out = json!({
        "isa": peak::ISA,
        "mul_gflops": 4.0 * mul,
        "add_gflops": 4.0 * add,
        "peak_gflops": 8.0 * mul.min(add),
    });
    if let Some(isa) = peak::MADD_ISA {
        let madd = rate(&|n| peak::madd(n))?;
        out["madd_isa"] = json!(isa);
        out["madd_gflops"] = json!(2.0 * peak::MADD_LANES as f64 * madd);
    }
    out["sink"] = json!(black_box(sink).is_finite());
    Ok(out)
}

mod peak {
    //! The probe loops: twelve independent chains of one operation in named locals (so they
    //! stay in registers and the loop is limited by issue throughput, not latency), each chain
    //! with its own opaque starting value (equal chains would be merged by the optimizer; a
    //! constant start lets it fold a fixed point). Values stay finite.

    /// Independent chains per loop.
    pub const CHAINS: usize = 12;

    fn seed(i: usize) -> f32 {
        std::hint::black_box(1.0 + 0.01 * i as f32)
    }

    /// Twelve chains of `x = op(x, c)` for `iters` steps; returns a checksum.
    macro_rules! chains {
        ($iters:expr, $splat:expr, $c:expr, $op:expr, $add:expr, $zero:expr) => {{
            let c = $c;
            let v = |i: usize| $splat(seed(i));
            let (mut x0, mut x1, mut x2, mut x3) = (v(0), v(1), v(2), v(3));
            let (mut x4, mut x5, mut x6, mut x7) = (v(4), v(5), v(6), v(7));
            let (mut x8, mut x9, mut x10, mut x11) = (v(8), v(9), v(10), v(11));
            for _ in 0..$iters {
                x0 = $op(x0, c);
                x1 = $op(x1, c);
                x2 = $op(x2, c);
                x3 = $op(x3, c);
                x4 = $op(x4, c);
                x5 = $op(x5, c);
                x6 = $op(x6, c);
                x7 = $op(x7, c);
                x8 = $op(x8, c);
                x9 = $op(x9, c);
                x10 = $op(x10, c);
                x11 = $op(x11, c);
            }
            [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11]
                .into_iter()
                .fold($zero, |a, b| $add(a, b))
        }};
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub const ISA: &str = "wasm simd128 (f32x4.mul, f32x4.add)";
    #[cfg(target_arch = "x86_64")]
    pub const ISA: &str = "x86_64 SSE (mulps, addps; 128-bit like simd128)";
    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    )))]
    pub const ISA: &str = "none";

    /// `(mul, add)`: the probe of one op kind; `mul == true` multiplies, else adds.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn run(iters: usize, mul: bool) -> f32 {
        use core::arch::wasm32::*;
        let z = f32x4_splat(0.0);
        let t = if mul {
            chains!(
                iters,
                f32x4_splat,
                f32x4_splat(1.000_000_1),
                |a, b| f32x4_mul(a, b),
                |a, b| f32x4_add(a, b),
                z
            )
        } else {
            chains!(
                iters,
                f32x4_splat,
                f32x4_splat(1e-7),
                |a, b| f32x4_add(a, b),
                |a, b| f32x4_add(a, b),
                z
            )
        };
        f32x4_extract_lane::<0>(t)
    }

    /// `(mul, add)`: the probe of one op kind; `mul == true` multiplies, else adds.
    #[cfg(target_arch = "x86_64")]
    pub fn run(iters: usize, mul: bool) -> f32 {
        use std::arch::x86_64::*;
        // SAFETY: SSE is part of the x86_64 baseline.
        unsafe {
            let z = _mm_setzero_ps();
            let set = |v: f32| _mm_set1_ps(v);
            let t = if mul {
                chains!(
                    iters,
                    set,
                    _mm_set1_ps(1.000_000_1),
                    |a, b| _mm_mul_ps(a, b),
                    |a, b| _mm_add_ps(a, b),
                    z
                )
            } else {
                chains!(
                    iters,
                    set,
                    _mm_set1_ps(1e-7),
                    |a, b| _mm_add_ps(a, b),
                    |a, b| _mm_add_ps(a, b),
                    z
                )
            };
            _mm_cvtss_f32(t)
        }
    }

    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    )))]
    pub fn run(iters: usize, mul: bool) -> f32 {
        let _ = (iters, mul);
        0.0
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    pub const MADD_ISA: Option<&str> = Some("wasm f32x4.relaxed_madd");
    #[cfg(target_arch = "x86_64")]
    pub const MADD_ISA: Option<&str> = Some("x86_64 vfmadd231ps ymm (256-bit FMA)");
    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "relaxed-simd"),
        target_arch = "x86_64"
    )))]
    pub const MADD_ISA: Option<&str> = None;

    /// Lanes per multiply-add of [`madd`].
    #[cfg(target_arch = "x86_64")]
    pub const MADD_LANES: usize = 8;
    /// Lanes per multiply-add of [`madd`].
    #[cfg(not(target_arch = "x86_64"))]
    pub const MADD_LANES: usize = 4;

    /// Twelve multiply-add chains of `iters` steps.
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    pub fn madd(iters: usize) -> f32 {
        use core::arch::wasm32::*;
        let m = f32x4_splat(0.999_999_9);
        let d = f32x4_splat(1e-7);
        let t = chains!(
            iters,
            f32x4_splat,
            (),
            |a, _| f32x4_relaxed_madd(a, m, d),
            |a, b| f32x4_add(a, b),
            f32x4_splat(0.0)
        );
        f32x4_extract_lane::<0>(t)
    }

    /// Twelve multiply-add chains of `iters` steps (256-bit FMA; `run` where the CPU lacks it).
    #[cfg(target_arch = "x86_64")]
    pub fn madd(iters: usize) -> f32 {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { madd_fma(iters) }
        } else {
            run(iters, true)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn madd_fma(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let m = _mm256_set1_ps(0.999_999_9);
        let d = _mm256_set1_ps(1e-7);
        let set = |v: f32| _mm256_set1_ps(v);
        let t = chains!(
            iters,
            set,
            (),
            |a, _| _mm256_fmadd_ps(a, m, d),
            |a, b| _mm256_add_ps(a, b),
            _mm256_setzero_ps()
        );
        _mm256_cvtss_f32(t)
    }

    #[cfg(not(any(
        all(target_arch = "wasm32", target_feature = "relaxed-simd"),
        target_arch = "x86_64"
    )))]
    pub fn madd(iters: usize) -> f32 {
        run(iters, true)
    }
}

/// The model's bytes pruned by magnitude, globally, to `ratio` zeros (the Deep-Compression
/// pruning step, no fine-tuning), as dense ONNX (zeros kept, so any runtime reads it).
pub fn prune_onnx(bytes: &[u8], ratio: f32) -> Result<Vec<u8>> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(Error::Invalid(format!(
            "prune ratio {ratio} is not in [0, 1)"
        )));
    }
    let s = Session::from_bytes(bytes)?;
    let recipe = crate::compress::Recipe::from_json(&format!(
        r#"{{"passes":[{{"pass":"prune","by":"global","ratio":{ratio}}}]}}"#
    ))?;
    let out = recipe.apply(s.graph(), None, None, &mut |_| ControlFlow::Continue(()))?;
    crate::format::onnx::export(&out.graph)
}

/// A deterministic input of the model's first input shape at `batch`: values in `[0, 1)`.
pub fn model_input(s: &Session, batch: usize) -> Result<crate::tensor::Tensor> {
    let input = s
        .graph()
        .inputs
        .first()
        .ok_or_else(|| Error::Graph("the graph has no input".into()))?;
    let shape = input.concrete(batch);
    let len = crate::tensor::checked_numel(&shape)?;
    let mut rng = Rng::new(0x1a7e);
    crate::tensor::from_vec(&shape, (0..len).map(|_| rng.uniform()).collect())
}

/// Whole-model latency through the plan (`Session::run`) at `batch`: `{ ms (median), reps,
/// kernels: [[node, kernel], …] }`.
pub fn bench_model(bytes: &[u8], batch: usize, now: Clock) -> Result<Value> {
    if batch == 0 || batch > 4096 {
        return Err(Error::Invalid(format!("batch {batch} is not in 1..=4096")));
    }
    let s = Session::from_bytes(bytes)?;
    let x = model_input(&s, batch)?;
    let (ms, reps) = time_ms(now, &mut || {
        black_box(s.run(black_box(&x))?);
        Ok(())
    })?;
    Ok(json!({
        "batch": batch, "ms": ms, "reps": reps,
        "kernels": s.kernels()?,
    }))
}

/// The model's first output for [`model_input`] at `batch`, flattened (to compare runtimes).
pub fn model_output(bytes: &[u8], batch: usize) -> Result<Vec<f32>> {
    let s = Session::from_bytes(bytes)?;
    let x = model_input(&s, batch)?;
    let y = s.run(&x)?;
    let first = y
        .into_iter()
        .next()
        .ok_or_else(|| Error::Graph("the model has no output".into()))?;
    Ok(crate::tensor::to_contiguous(&first).into_owned())
}

#[cfg(all(feature = "js", target_arch = "wasm32"))]
pub mod js {
    //! The `#[wasm_bindgen]` exports of the benchmarks (JSON strings; errors are JS strings).

    use wasm_bindgen::prelude::*;

    fn now_ms() -> f64 {
        let perf = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))
            .ok()
            .filter(|p| !p.is_undefined());
        if let Some(p) = perf
            && let Ok(f) = js_sys::Reflect::get(&p, &JsValue::from_str("now"))
            && let Some(f) = f.dyn_ref::<js_sys::Function>()
            && let Ok(v) = f.call0(&p)
            && let Some(ms) = v.as_f64()
        {
            return ms;
        }
        js_sys::Date::now()
    }

    fn out(r: crate::Result<serde_json::Value>) -> Result<String, JsValue> {
        r.map(|v| v.to_string())
            .map_err(|e| JsValue::from_str(&e.to_string()))
    }

    /// `{ build, f32_gemm, int8, xnor }`: which wasm build was loaded and its kernels.
    #[wasm_bindgen(js_name = benchBuild)]
    pub fn bench_build() -> String {
        super::build_info().to_string()
    }

    /// `kernels::check::selftest` in this build (every fast kernel against its scalar twin) as
    /// JSON `{ kernels, cases, worst_ratio }`; an error names the first mismatch.
    #[wasm_bindgen(js_name = benchSelftest)]
    pub fn bench_selftest() -> Result<String, JsValue> {
        let r = crate::kernels::check::selftest().map_err(|e| JsValue::from_str(&e.to_string()))?;
        Ok(serde_json::json!({
            "build": crate::kernels::build_name(),
            "kernels": r.kernels, "cases": r.cases, "worst_ratio": r.worst_ratio,
        })
        .to_string())
    }

    /// Per-kernel figures as JSON (see `bench_kernels`); `sizes` are the square f32 GEMM sizes
    /// (empty: 64, 128, 256, 512).
    #[wasm_bindgen(js_name = benchKernels)]
    pub fn bench_kernels(sizes: Vec<u32>) -> Result<String, JsValue> {
        let mut opts = super::KernelOpts::default();
        if !sizes.is_empty() {
            opts.gemm_sizes = sizes.into_iter().map(|s| s.min(2048) as usize).collect();
        }
        out(super::bench_kernels(&opts, &now_ms))
    }

    /// The peak probe as JSON.
    #[wasm_bindgen(js_name = benchPeak)]
    pub fn bench_peak() -> Result<String, JsValue> {
        out(super::bench_peak(&now_ms))
    }

    /// Whole-model latency at `batch` as JSON.
    #[wasm_bindgen(js_name = benchModel)]
    pub fn bench_model(bytes: &[u8], batch: u32) -> Result<String, JsValue> {
        out(super::bench_model(bytes, batch as usize, &now_ms))
    }

    /// The model's first output for the benchmark input (to compare with another runtime).
    #[wasm_bindgen(js_name = benchModelOutput)]
    pub fn bench_model_output(bytes: &[u8], batch: u32) -> Result<Vec<f32>, JsValue> {
        super::model_output(bytes, batch as usize).map_err(|e| JsValue::from_str(&e.to_string()))
    }

    /// The benchmark input (flattened) and its shape, to feed another runtime the same values.
    #[wasm_bindgen(js_name = benchModelInput)]
    pub fn bench_model_input(bytes: &[u8], batch: u32) -> Result<String, JsValue> {
        let r = (|| {
            let s = crate::Session::from_bytes(bytes)?;
            let x = super::model_input(&s, batch as usize)?;
            let name = s
                .graph()
                .inputs
                .first()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            Ok(serde_json::json!({
                "name": name,
                "shape": x.shape(),
                "data": crate::tensor::to_contiguous(&x).into_owned(),
            }))
        })();
        out(r)
    }

    /// The model pruned globally by magnitude to `ratio` zeros, as ONNX bytes.
    #[wasm_bindgen(js_name = benchPrune)]
    pub fn bench_prune(bytes: &[u8], ratio: f32) -> Result<Vec<u8>, JsValue> {
        super::prune_onnx(bytes, ratio).map_err(|e| JsValue::from_str(&e.to_string()))
    }
}
