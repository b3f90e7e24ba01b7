//! GEMM kernels against their reference twin in Node (wasm32 + simd128).
#![cfg(target_arch = "wasm32")]

use lithe::kernels::{self, KernelKind, check};
use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
fn every_fast_gemm_kernel_matches_the_scalar_twin_in_node() {
    let report = check::selftest().expect("selftest");
    assert!(report.kernels.contains(&"simd128"), "{report:?}");
    assert_eq!(kernels::kernels().kind, KernelKind::Simd128);
    wasm_bindgen_test::console_log!("{report:?}");
}

#[wasm_bindgen_test]
fn planned_zoo_models_match_the_reference_in_node() {
    let all = lithe_web_tests::wasm_plans_agree().expect("plans agree");
    wasm_bindgen_test::console_log!("{all}");
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Per-node times of the zoo CNNs through their plans in Node (best of several runs), the wasm
/// twin of the native `profile_cnn_nodes` probe. Figures only:
/// `cargo test -p lithe-web-tests --target wasm32-unknown-unknown --profile wasm-test
/// --test kernels_node -- --include-ignored profile_cnn_nodes_in_node`.
#[wasm_bindgen_test]
#[ignore = "timing figures"]
fn profile_cnn_nodes_in_node() {
    use lithe::plan::Plan;
    use lithe::zoo::Arch;
    for arch in [Arch::Lenet5, Arch::Mobilenet] {
        let g = lithe::zoo::build(arch, 3).expect("zoo");
        let plan = Plan::new(&g).expect("plan");
        for batch in [1usize, 64] {
            let x: Vec<f32> = (0..batch * 784).map(|i| (i % 7) as f32 / 7.0).collect();
            let x = lithe::tensor::from_vec(&[batch, 1, 28, 28], x).expect("input");
            let reps = if batch == 1 { 100 } else { 8 };
            let mut best: Vec<f64> = Vec::new();
            for _ in 0..reps {
                let (_, times) = plan
                    .run_timed(&[("input", &x)], &mut || performance_now())
                    .expect("plan");
                if best.is_empty() {
                    best = times;
                } else {
                    best.iter_mut()
                        .zip(&times)
                        .for_each(|(b, t)| *b = b.min(*t));
                }
            }
            let total: f64 = best.iter().sum();
            let mut lines =
                format!("{arch:?} batch {batch}: {total:.3} ms (sum of per-node bests)");
            for ((name, kernel), ms) in plan.kernels().iter().zip(&best) {
                lines += &format!("\n    {name:<16} {kernel:<18} {ms:>8.4} ms");
            }
            wasm_bindgen_test::console_log!("{lines}");
        }
    }
}

/// The playground's first knob changes in baseline-tier code (docs/APP.md, "Idle warm-up"):
/// the recipe, then ten batch-1000 runs of the result's plan, each timed, for LeNet-300-100
/// pruned as the e2e prunes it and for its first SVD rank recipe, then four `low_rank` recipes
/// on fresh (uncached) weights. Figures only:
/// `cargo test -p lithe-web-tests --target wasm32-unknown-unknown --profile wasm-test
/// --test kernels_node -- --include-ignored first_knob_runs_in_node`.
#[wasm_bindgen_test]
#[ignore = "timing figures"]
fn first_knob_runs_in_node() {
    use lithe::compress::Recipe;
    use std::ops::ControlFlow;
    let g = lithe::format::onnx::import(include_bytes!("../../www/models/lenet-300-100.onnx"))
        .expect("model");
    let apply = |r: &Recipe, g: &lithe::graph::Graph| {
        r.apply(g, None, None, &mut |_| ControlFlow::Continue(()))
            .expect("recipe")
    };
    let n = 1000;
    let x: Vec<f32> = (0..n * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let x = lithe::tensor::from_vec(&[n, 1, 28, 28], x).expect("input");
    for json in [
        r#"{"passes": [{"pass": "prune", "by": "per_layer", "ratios": {"fc1": 0.95, "fc2": 0.9, "fc3": 0.9}}]}"#,
        r#"{"passes": [{"pass": "low_rank", "rank": 16}, {"pass": "prune", "by": "global", "ratio": 0.9}]}"#,
    ] {
        let r = Recipe::from_json(json).expect("recipe json");
        let t = performance_now();
        let c = apply(&r, &g);
        let first = performance_now() - t;
        let plan = lithe::plan::Plan::new(&c.graph).expect("plan");
        let runs: Vec<String> = (0..10)
            .map(|_| {
                let t = performance_now();
                plan.run(&[("input", &x)]).expect("run");
                format!("{:.1}", performance_now() - t)
            })
            .collect();
        wasm_bindgen_test::console_log!(
            "{json}\n  recipe {first:.1} ms; batch-{n} runs (ms): {}",
            runs.join(", ")
        );
    }
    let r = Recipe::from_json(r#"{"passes": [{"pass": "low_rank", "rank": 16}]}"#).expect("json");
    for i in 1..=4 {
        let mut g2 = g.clone();
        for w in g2.weights.values_mut() {
            w.mapv_inplace(|v| v * (1.0 + 0.01 * i as f32));
        }
        let t = performance_now();
        apply(&r, &g2);
        wasm_bindgen_test::console_log!(
            "low_rank on fresh weights #{i}: {:.1} ms",
            performance_now() - t
        );
    }
}

/// The XNOR word kernel's dots alone (`XnorKind::Words`, the kind wasm builds select) in Node,
/// timed as `bench-web` times kernels (`lithe::bench::time_ms`: median of 5 samples), at 256³, LeNet's fc1 at batch 64 and
/// 64×1024×1024 (docs/KERNELS.md, "The word kernel, word-major"). Figures only:
/// `cargo test -p lithe-web-tests --target wasm32-unknown-unknown --profile wasm-test
/// --test kernels_node -- --include-ignored xnor_words_in_node --nocapture`.
#[wasm_bindgen_test]
#[ignore = "timing figures"]
fn xnor_words_in_node() {
    use lithe::kernels::binary::{BinaryMatrix, XnorKind, pack_signs};
    let mut rng = lithe::rng::Rng::new(5);
    for (m, k, n) in [
        (256usize, 256usize, 256usize),
        (64, 784, 300),
        (64, 1024, 1024),
    ] {
        let w: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let bw = BinaryMatrix::from_f32(n, k, &w, vec![1.0; n]).expect("weights");
        let ab = pack_signs(m, k, &a).expect("signs");
        let mut d = vec![0i32; m * n];
        let now = || performance_now();
        let (ms, _) = lithe::bench::time_ms(&now, &mut || {
            bw.dots_with(XnorKind::Words, m, std::hint::black_box(&ab), &mut d)
        })
        .expect("dots");
        let gops = 2.0 * (m * k * n) as f64 / ms / 1e6;
        wasm_bindgen_test::console_log!("xnor-words {m}×{k}×{n}: {ms:.4} ms = {gops:.1} G op/s");
    }
}
