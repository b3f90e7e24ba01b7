//! Kernel throughput: f32 GEMM, int8 GEMM, codebook, XNOR and CSR sparse products at
//! M = N = K = 256 and the LeNet-300-100 first layer (784 → 300) at batch 1 and 64.
//!
//! Every entry reports `2·m·k·n` "dense-equivalent" operations per iteration as its criterion
//! throughput (elements/s = op/s), so two entries' rates divide into a speed-up directly (for
//! the sparse and XNOR entries that is the speed-up at equal layer shape, not useful work).
//!
//! `cargo bench -p lithe --bench kernels -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use lithe::kernels::{self, binary, codebook::CodebookMatrix, int8, sparse::Csr};
use lithe::rng::Rng;

/// One layer shape: `C[m×n] = A[m×k] · B[k×n]` (`B` the weights, `n` outputs).
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
}

fn normal(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

fn codes(rng: &mut Rng, len: usize) -> Vec<i8> {
    (0..len)
        .map(|_| ((rng.uniform() * 255.0) as i32 - 127) as i8)
        .collect()
}

/// `W` (`n×k`) with a fraction `sparsity` of its entries zeroed at random.
fn pruned(rng: &mut Rng, n: usize, k: usize, sparsity: f32) -> Vec<f32> {
    (0..n * k)
        .map(|_| {
            if rng.uniform() < sparsity {
                0.0
            } else {
                rng.normal()
            }
        })
        .collect()
}

fn transpose(rows: usize, cols: usize, w: &[f32]) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

fn bench_shape(c: &mut Criterion, s: &Shape) {
    let (m, k, n) = (s.m, s.k, s.n);
    let mut rng = Rng::new(0xbe_c4);
    let mut g = c.benchmark_group(s.name);
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));

    // f32 GEMM, the process's kernel (AVX2+FMA here), B packed on every call as the API does.
    let a = normal(&mut rng, m * k);
    let w = normal(&mut rng, n * k);
    let wt = transpose(n, k, &w);
    let mut cf = vec![0.0f32; m * n];
    g.bench_function("f32-gemm", |bch| {
        bch.iter(|| kernels::gemm(m, k, n, black_box(&a), black_box(&wt), &mut cf).unwrap())
    });

    // int8 GEMM: weights packed once, i32 sums; every kind available here.
    let ai = codes(&mut rng, m * k);
    let wi = codes(&mut rng, n * k);
    let pk = int8::PackedI8::from_rows(n, k, &wi, &[]).unwrap();
    let mut ci = vec![0i32; m * n];
    for kind in int8::available() {
        if kind == int8::Int8Kind::Scalar && m * k * n > 1 << 22 {
            continue;
        }
        g.bench_function(kind.name(), |bch| {
            bch.iter(|| pk.gemm_with(kind, m, black_box(&ai), -3, &mut ci).unwrap())
        });
    }
    // int8 GEMM + requantization to i8 (the integer executor's Dense step).
    let mult = vec![1_518_500_250i32; n];
    let shift = vec![12i8; n];
    let bias = vec![100i32; n];
    let mut yi = vec![0i8; m * n];
    g.bench_function("int8-gemm+requantize", |bch| {
        bch.iter(|| {
            pk.gemm(m, black_box(&ai), -3, &mut ci).unwrap();
            let p = int8::Requantize {
                bias: &bias,
                multiplier: &mult,
                shift: &shift,
                out_zp: -5,
                lo: -128,
                hi: 127,
            };
            int8::requantize(n, &ci, &p, &mut yi).unwrap();
        })
    });

    // Codebook (4-bit, 16 entries), decoded on the fly; scalar twin only on the small shapes.
    let cbk: Vec<f32> = normal(&mut rng, 16);
    let idx: Vec<u8> = (0..n * k)
        .map(|_| ((rng.uniform() * 16.0) as u8).min(15))
        .collect();
    let cb = CodebookMatrix::new(n, k, 4, idx, cbk).unwrap();
    g.bench_function("codebook-4bit", |bch| {
        bch.iter(|| cb.matmul_t(m, black_box(&a), &mut cf).unwrap())
    });
    if m * k * n <= 1 << 22 {
        g.bench_function("codebook-4bit-scalar-twin", |bch| {
            bch.iter(|| cb.matmul_t_scalar(m, black_box(&a), &mut cf).unwrap())
        });
    }

    // XNOR-popcount: signs packed beforehand (weights once, activations once per layer).
    let bw = binary::BinaryMatrix::from_f32(n, k, &w, vec![0.5; n]).unwrap();
    let ab = binary::pack_signs(m, k, &a).unwrap();
    g.bench_function("xnor", |bch| {
        bch.iter(|| bw.matmul_t(m, black_box(&ab), &[], &mut cf).unwrap())
    });
    let mut dots = vec![0i32; m * n];
    for kind in binary::available() {
        g.bench_function(format!("{}-dots", kind.name()), |bch| {
            bch.iter(|| bw.dots_with(kind, m, black_box(&ab), &mut dots).unwrap())
        });
    }
    if m * k * n <= 1 << 22 {
        g.bench_function("xnor-scalar-twin", |bch| {
            bch.iter(|| bw.matmul_t_scalar(m, black_box(&ab), &[], &mut cf).unwrap())
        });
    }

    // CSR sparse at 70 % and 92 % zeros; the dense baseline is `f32-gemm` above.
    for sparsity in [0.70f32, 0.92] {
        let wp = pruned(&mut rng, n, k, sparsity);
        let csr = Csr::from_dense(n, k, &wp).unwrap();
        g.bench_function(format!("csr-{:.0}%", sparsity * 100.0), |bch| {
            bch.iter(|| csr.matmul_t(m, black_box(&a), &mut cf).unwrap())
        });
    }
    g.finish();
}

fn kernels_bench(c: &mut Criterion) {
    for s in [
        Shape {
            name: "256x256x256",
            m: 256,
            k: 256,
            n: 256,
        },
        Shape {
            name: "lenet-fc1-b1",
            m: 1,
            k: 784,
            n: 300,
        },
        Shape {
            name: "lenet-fc1-b64",
            m: 64,
            k: 784,
            n: 300,
        },
    ] {
        bench_shape(c, &s);
    }
}

criterion_group!(benches, kernels_bench);

/// Median of `rounds` timings of `f`, each of one call, in seconds.
fn median(times: &mut [f64]) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// A named contender of [`ratios`].
type Run<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// Interleaved ratios: each round times the f32 GEMM and every contender once, back to back,
/// so a neighbour's load hits both alike; the medians' ratio is printed. The machine is shared,
/// so these ratios are steadier than two criterion figures taken minutes apart.
fn ratios() {
    use std::time::Instant;
    let mut rng = Rng::new(0x7a71);
    for (name, m, k, n) in [
        ("256x256x256", 256, 256, 256),
        ("lenet-fc1-b1", 1, 784, 300),
        ("lenet-fc1-b64", 64, 784, 300),
    ] {
        let a = normal(&mut rng, m * k);
        let w = normal(&mut rng, n * k);
        let wt = transpose(n, k, &w);
        let ai = codes(&mut rng, m * k);
        let wi = codes(&mut rng, n * k);
        let pk = int8::PackedI8::from_rows(n, k, &wi, &[]).unwrap();
        let bw = binary::BinaryMatrix::from_f32(n, k, &w, vec![0.5; n]).unwrap();
        let ab = binary::pack_signs(m, k, &a).unwrap();
        let csr70 = Csr::from_dense(n, k, &pruned(&mut rng, n, k, 0.70)).unwrap();
        let csr92 = Csr::from_dense(n, k, &pruned(&mut rng, n, k, 0.92)).unwrap();
        let mut cf = vec![0.0f32; m * n];
        let mut ci = vec![0i32; m * n];
        let (mut cf1, mut cf2, mut cf3) = (cf.clone(), cf.clone(), cf.clone());
        let mut runs: Vec<Run<'_>> = vec![
            (
                "f32-gemm",
                Box::new(|| kernels::gemm(m, k, n, black_box(&a), &wt, &mut cf1).unwrap()),
            ),
            (
                "int8",
                Box::new(|| pk.gemm(m, black_box(&ai), -3, &mut ci).unwrap()),
            ),
            (
                "xnor",
                Box::new(|| bw.matmul_t(m, black_box(&ab), &[], &mut cf2).unwrap()),
            ),
            (
                "csr-70%",
                Box::new(|| csr70.matmul_t(m, black_box(&a), &mut cf3).unwrap()),
            ),
            (
                "csr-92%",
                Box::new(|| csr92.matmul_t(m, black_box(&a), &mut cf).unwrap()),
            ),
        ];
        let reps = (50_000_000 / (m * k * n)).clamp(1, 200);
        let rounds = 301;
        let mut times = vec![Vec::with_capacity(rounds); runs.len()];
        for _ in 0..rounds {
            for (t, (_, f)) in times.iter_mut().zip(runs.iter_mut()) {
                let start = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.push(start.elapsed().as_secs_f64() / reps as f64);
            }
        }
        let base = median(&mut times[0]);
        let ops = 2.0 * (m * k * n) as f64;
        for ((label, _), t) in runs.iter().zip(times.iter_mut()) {
            let med = median(t);
            println!(
                "RATIO {name:>14} {label:>9}: median {:>9.2} µs, {:>7.1} G dense-op/s, {:>6.2}× f32-gemm",
                med * 1e6,
                ops / med / 1e9,
                base / med
            );
        }
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        ratios();
    }
}
