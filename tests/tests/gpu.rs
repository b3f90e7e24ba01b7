//! The WebGPU backend in headless Chromium (SwiftShader through `--enable-unsafe-webgpu`, see
//! tests/webdriver.json): every launcher against the CPU reference, the zoo models against
//! `exec::run`, and the matmul's speed there (`-- --nocapture` prints it). Without an adapter
//! the tests log why and pass, unless the build had `LITHE_REQUIRE_GPU=1` in its environment.
//! The Node side (no WebGPU) is `gpu_node.rs`.
#![cfg(target_arch = "wasm32")]

use lithe::gpu::{Device, GpuContext, GpuSession, check};
use std::sync::Arc;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const MODELS: [(&str, &[u8]); 4] = [
    ("tiny-mlp", include_bytes!("../../www/models/tiny-mlp.onnx")),
    (
        "lenet-300-100",
        include_bytes!("../../www/models/lenet-300-100.onnx"),
    ),
    ("lenet-5", include_bytes!("../../www/models/lenet-5.onnx")),
    (
        "mobilenet",
        include_bytes!("../../www/models/mobilenet.onnx"),
    ),
];

/// The context, or `None` after logging why there is none.
#[allow(clippy::arc_with_non_send_sync)]
async fn ctx() -> Option<Arc<GpuContext>> {
    match GpuContext::new().await {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            if option_env!("LITHE_REQUIRE_GPU") == Some("1") {
                panic!("LITHE_REQUIRE_GPU=1 but no GPU: {e}");
            }
            console_log!("skipped: {e}");
            None
        }
    }
}

#[wasm_bindgen_test]
async fn every_launcher_matches_the_cpu_reference_in_chromium() {
    let Some(ctx) = ctx().await else { return };
    console_log!("adapter: {:?}", ctx.adapter());
    assert_eq!(ctx.adapter().backend, "BrowserWebGpu");
    let report = check::selftest(&ctx, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    console_log!("{report:?}");
    for l in ["matmul", "conv2d", "pool", "elementwise", "int8_matmul"] {
        assert!(
            report.cases.iter().any(|(n, c)| *n == l && *c > 3),
            "{l} barely tested: {report:?}"
        );
    }
}

#[wasm_bindgen_test]
async fn integer_matmuls_run_on_webgpu_with_the_reference_bits() {
    let Some(ctx) = ctx().await else { return };
    let runs = check::integer_matmuls(&ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runs, 4);
}

#[wasm_bindgen_test]
async fn zoo_models_match_exec_run_in_chromium() {
    let Some(ctx) = ctx().await else { return };
    for (name, bytes) in MODELS {
        let session = lithe::Session::from_bytes(bytes).expect("zoo model loads");
        let gpu = GpuSession::new(ctx.clone(), session.graph()).expect("GPU session");
        for batch in [1, 3] {
            let c = check::compare_graph(&gpu, batch, 5 + batch as u64)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            console_log!(
                "{name} batch {batch}: max rel err {:e} (output spread {}), {} nodes on the GPU, {} on the CPU: {:?}",
                c.max_rel_err,
                c.output_spread,
                c.gpu_nodes,
                c.cpu_nodes,
                c.devices
                    .iter()
                    .filter(|d| d.2 == Device::Cpu)
                    .map(|d| d.1)
                    .collect::<Vec<_>>()
            );
            assert!(c.output_spread > 1e-3, "{name}: the output is constant");
            for (node, op, dev) in &c.devices {
                if matches!(*op, "Gemm" | "Conv" | "MatMul") {
                    assert_eq!(*dev, Device::Gpu, "{name}: {node} ({op}) ran on the CPU");
                }
            }
        }
    }
}

#[wasm_bindgen_test]
async fn matmul_gflops_in_chromium() {
    let Some(ctx) = ctx().await else { return };
    for size in [256usize, 512] {
        check::bench_matmul(&ctx, size, 1).await.expect("warm-up");
        let reps = if size == 256 { 10 } else { 3 };
        let t = js_sys::Date::now();
        check::bench_matmul(&ctx, size, reps).await.expect("bench");
        let s = (js_sys::Date::now() - t) / 1000.0;
        let gflops = 2.0 * (size as f64).powi(3) * reps as f64 / s / 1e9;
        console_log!(
            "{}: matmul {size}³: {gflops:.2} GFLOP/s",
            ctx.adapter().name
        );
    }
}
