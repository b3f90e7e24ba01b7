//! GEMM kernels against their reference twin in headless Chromium (wasm32 + simd128), and
//! their speed there. Print the figures with `-- --nocapture`.
#![cfg(target_arch = "wasm32")]

use lithe::kernels::{self, KernelKind, check};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn every_fast_gemm_kernel_matches_the_scalar_twin_in_chromium() {
    let report = check::selftest().expect("selftest");
    assert!(report.kernels.contains(&"simd128"), "{report:?}");
    assert_eq!(kernels::kernels().kind, KernelKind::Simd128);
    wasm_bindgen_test::console_log!("{report:?}");
}

#[wasm_bindgen_test]
fn gemm_gflops_256_in_chromium() {
    let now = js_sys::Date::now;
    for f in check::bench_gemm(256, 1000.0, &now).expect("bench") {
        wasm_bindgen_test::console_log!(
            "GEMM 256 {:>12}: {:8.2} GFLOP/s (mean {:.3} ms of {})",
            f.kernel,
            f.gflops,
            f.mean_ms,
            f.reps
        );
    }
}

#[wasm_bindgen_test]
fn planned_zoo_models_match_the_reference_in_browser() {
    let all = lithe_web_tests::wasm_plans_agree().expect("plans agree");
    wasm_bindgen_test::console_log!("{all}");
}
