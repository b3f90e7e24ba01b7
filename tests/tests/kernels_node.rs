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
