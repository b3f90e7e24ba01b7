//! Speed figures of planned execution (not timing assertions): the dense LeNet-300-100 against
//! its 92 %-pruned self, through the reference interpreter and through the plan. Run with
//!
//! ```sh
//! cargo test --release -p lithe --test plan_speed -- --ignored --nocapture
//! ```
//!
//! Results go in docs/KERNELS.md.

use lithe::compress::Recipe;
use lithe::exec;
use lithe::format::onnx;
use lithe::plan::Plan;
use lithe::tensor::Tensor;
use std::ops::ControlFlow;
use std::time::Instant;

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..15)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

#[test]
#[ignore = "speed figures; run with --release --ignored --nocapture"]
fn pruned_lenet_runs_faster_than_dense() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../www/models/lenet-300-100.onnx"
    ))
    .unwrap();
    let dense = onnx::import(&bytes).unwrap();
    let pruned =
        Recipe::from_json(r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.92}]}"#)
            .unwrap()
            .apply(&dense, None, None, &mut |_| ControlFlow::Continue(()))
            .unwrap()
            .graph;
    for batch in [1usize, 64, 256] {
        let x = Tensor::from_elem(ndarray::IxDyn(&[batch, 1, 28, 28]), 0.5f32);
        for (label, g) in [("dense", &dense), ("pruned 92 %", &pruned)] {
            let plan = Plan::new(g).unwrap();
            let r = median_ms(|| {
                exec::run(g, &[("input", &x)]).unwrap();
            });
            let p = median_ms(|| {
                plan.run(&[("input", &x)]).unwrap();
            });
            let ks: Vec<String> = plan
                .kernels()
                .into_iter()
                .filter(|(n, _)| n.starts_with("fc"))
                .map(|(n, k)| format!("{n}:{k}"))
                .collect();
            eprintln!(
                "batch {batch:>3} {label:<12} reference {r:>8.3} ms   plan {p:>8.3} ms   {ks:?}"
            );
        }
    }
}

#[test]
#[ignore = "speed probe"]
fn csr_kernel_alone() {
    use lithe::kernels::sparse::Csr;
    let (n, k) = (300usize, 784usize);
    let mut rng = lithe::rng::Rng::new(1);
    let w: Vec<f32> = (0..n * k)
        .map(|_| {
            if rng.uniform() < 0.062 {
                rng.normal()
            } else {
                0.0
            }
        })
        .collect();
    let csr = Csr::from_dense(n, k, &w).unwrap();
    for m in [1usize, 16, 64, 256] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let mut c = vec![0.0; m * n];
        let t = median_ms(|| csr.matmul_t(m, &a, &mut c).unwrap());
        eprintln!(
            "m {m:>3}: {t:.3} ms, {:.2} GMAC/s",
            (m * csr.nnz()) as f64 / t / 1e6
        );
    }
}
