//! The WebGPU backend in Node, which has no WebGPU: opening a context fails with a clear
//! `gpu` error instead of a panic, and the GPU tests say they are skipped.
#![cfg(target_arch = "wasm32")]

use lithe::gpu::GpuContext;
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

#[wasm_bindgen_test]
async fn no_webgpu_in_node_is_an_error_and_the_gpu_tests_skip() {
    let e = GpuContext::new()
        .await
        .expect_err("Node has no navigator.gpu");
    assert_eq!(e.code(), "gpu");
    assert!(e.to_string().contains("navigator.gpu missing"), "{e}");
    console_log!("skipped: the GPU tests need WebGPU ({e})");
}
