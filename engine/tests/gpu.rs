//! The WebGPU backend natively (lavapipe in CI): every launcher against the CPU reference over
//! odd sizes, and whole zoo models against `exec::run`. Without an adapter the tests print why
//! and pass, unless `LITHE_REQUIRE_GPU=1`, which makes a missing adapter a failure.
//!
//! `LITHE_REQUIRE_GPU=1 cargo test -p lithe --features gpu --test gpu`
#![cfg(feature = "gpu")]

use lithe::gpu::{Device, GpuContext, GpuSession, check};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

/// Drives a future on this thread (native readback polls the device, so it never waits long).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// The shared context, or `None` (after saying why) when no adapter exists.
fn ctx() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    let r = CTX.get_or_init(|| {
        block_on(GpuContext::new())
            .map(Arc::new)
            .map_err(|e| e.to_string())
    });
    match r {
        Ok(c) => Some(c.clone()),
        Err(e) => {
            if std::env::var("LITHE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("LITHE_REQUIRE_GPU=1 but no GPU: {e}");
            }
            println!("skipped: {e}");
            None
        }
    }
}

#[test]
fn the_context_describes_its_adapter() {
    let Some(ctx) = ctx() else { return };
    let a = ctx.adapter();
    println!("adapter: {a:?}");
    assert!(!a.name.is_empty());
    assert!(!a.backend.is_empty());
}

#[test]
fn every_launcher_matches_the_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let report = block_on(check::selftest(&ctx, true)).unwrap_or_else(|e| panic!("{e}"));
    println!("{report:?}");
    for l in ["matmul", "conv2d", "pool", "elementwise", "int8_matmul"] {
        assert!(
            report.cases.iter().any(|(n, c)| *n == l && *c > 3),
            "{l} barely tested: {report:?}"
        );
    }
    assert!(report.max_rel_err <= check::TOLERANCE);
}

#[test]
fn zoo_models_match_exec_run() {
    let Some(ctx) = ctx() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/models");
    let mut seen = 0;
    for name in ["tiny-mlp", "lenet-300-100", "lenet-5", "mobilenet"] {
        let bytes = std::fs::read(dir.join(format!("{name}.onnx")))
            .unwrap_or_else(|e| panic!("{name}.onnx: {e}"));
        let session = lithe::Session::from_bytes(&bytes).expect("zoo model loads");
        let gpu = GpuSession::new(ctx.clone(), session.graph()).expect("GPU session");
        for batch in [1, 3] {
            let c = block_on(check::compare_graph(&gpu, batch, 11 + batch as u64))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            println!(
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
            // Every Gemm and Conv of the zoo runs on the GPU.
            for (node, op, dev) in &c.devices {
                if matches!(*op, "Gemm" | "Conv" | "MatMul") {
                    assert_eq!(*dev, Device::Gpu, "{name}: {node} ({op}) ran on the CPU");
                }
            }
            assert!(c.gpu_nodes > 0);
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn nodes_without_a_kernel_fall_back_to_the_cpu() {
    use lithe::graph::{Dim, Graph, Node, Op, ValueInfo};
    let Some(ctx) = ctx() else { return };
    // Gemm (GPU) → Softmax (CPU) → Add with a weight (GPU) → LayerNorm-free tail.
    let mut g = Graph {
        name: "mixed".into(),
        ..Default::default()
    };
    g.inputs.push(ValueInfo {
        name: "x".into(),
        shape: vec![Dim::Sym("N".into()), Dim::Fixed(5)],
    });
    g.weights.insert(
        "w".into(),
        lithe::tensor::from_vec(&[5, 3], (0..15).map(|i| i as f32 * 0.1 - 0.7).collect()).unwrap(),
    );
    g.weights.insert(
        "b".into(),
        lithe::tensor::from_vec(&[3], vec![0.5, -0.5, 0.25]).unwrap(),
    );
    g.nodes
        .push(Node::new("fc", Op::Gemm(Default::default()), &["x", "w"]));
    g.nodes.push(Node::new(
        "sm",
        Op::Softmax {
            axis: -1,
            coerce_2d: false,
        },
        &["fc"],
    ));
    g.nodes.push(Node::new("add", Op::Add, &["sm", "b"]));
    g.outputs.push("add".into());
    let gpu = GpuSession::new(ctx, &g).expect("session");
    let c = block_on(check::compare_graph(&gpu, 2, 3)).unwrap_or_else(|e| panic!("{e}"));
    let devs: Vec<Device> = c.devices.iter().map(|d| d.2).collect();
    assert_eq!(devs, [Device::Gpu, Device::Cpu, Device::Gpu]);
}

#[test]
fn missing_and_misshapen_inputs_are_errors() {
    let Some(ctx) = ctx() else { return };
    let bytes = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/models/tiny-mlp.onnx"),
    )
    .expect("model");
    let s = lithe::Session::from_bytes(&bytes).expect("loads");
    let gpu = GpuSession::new(ctx, s.graph()).expect("session");
    let e = block_on(gpu.run(&[])).expect_err("no input");
    assert_eq!(e.code(), "input");
    let x = lithe::tensor::zeros(&[1, 3]);
    let name = s.graph().inputs[0].name.clone();
    let e = block_on(gpu.run(&[(&name, &x)])).expect_err("wrong shape");
    assert_eq!(e.code(), "input");
}

/// GFLOP/s of the f32 matmul at 256³ and 512³ (docs/KERNELS.md). Run with
/// `cargo test -p lithe --release --features gpu --test gpu -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run on demand"]
fn matmul_gflops() {
    let Some(ctx) = ctx() else { return };
    for size in [256usize, 512] {
        block_on(check::bench_matmul(&ctx, size, 1)).expect("warm-up");
        let reps = if size == 256 { 20 } else { 5 };
        let t = std::time::Instant::now();
        block_on(check::bench_matmul(&ctx, size, reps)).expect("bench");
        let s = t.elapsed().as_secs_f64();
        let gflops = 2.0 * (size as f64).powi(3) * reps as f64 / s / 1e9;
        println!(
            "{}: matmul {size}³: {gflops:.2} GFLOP/s",
            ctx.adapter().name
        );
    }
}

#[test]
fn a_relu_after_a_gemm_is_right_whether_or_not_it_can_be_fused() {
    use lithe::graph::{Dim, Graph, Node, Op, ValueInfo};
    let Some(ctx) = ctx() else { return };
    for expose_gemm in [false, true] {
        let mut g = Graph {
            name: "fc-relu".into(),
            ..Default::default()
        };
        g.inputs.push(ValueInfo {
            name: "x".into(),
            shape: vec![Dim::Sym("N".into()), Dim::Fixed(17)],
        });
        let w: Vec<f32> = (0..17 * 33)
            .map(|i| ((i * 7) % 13) as f32 / 6.5 - 1.0)
            .collect();
        g.weights
            .insert("w".into(), lithe::tensor::from_vec(&[17, 33], w).unwrap());
        g.nodes
            .push(Node::new("fc", Op::Gemm(Default::default()), &["x", "w"]));
        g.nodes.push(Node::new("relu", Op::Relu, &["fc"]));
        g.outputs.push("relu".into());
        if expose_gemm {
            // The Gemm's output is read twice: the Relu must not be folded into it.
            g.outputs.push("fc".into());
        }
        let gpu = GpuSession::new(ctx.clone(), &g).expect("session");
        let c = block_on(check::compare_graph(&gpu, 5, 9)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            c.devices.iter().all(|d| d.2 == Device::Gpu),
            "{:?}",
            c.devices
        );
    }
}

/// Dynamic quantization → `MatMulInteger` and `QLinearMatMul` on the int8 kernel, with the
/// reference's bits (`gpu::check::integer_matmuls`, also run in Chromium).
#[test]
fn integer_matmuls_run_on_the_gpu_with_the_reference_bits() {
    let Some(ctx) = ctx() else { return };
    let runs = block_on(check::integer_matmuls(&ctx)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runs, 4);
}

/// The dynamically quantized burn CNN from `../shared/models` (skipped when absent): its
/// `MatMulInteger`s run on the GPU and the outputs equal the CPU reference's.
#[test]
fn a_dynamic_int8_model_runs_its_matmuls_on_the_gpu() {
    let Some(ctx) = ctx() else { return };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/models/burn-mnist-cnn-dynamic-int8.onnx");
    let Ok(bytes) = std::fs::read(&path) else {
        println!("skipped: {} is absent", path.display());
        return;
    };
    let s = lithe::Session::from_bytes(&bytes).expect("loads");
    let gpu = GpuSession::new(ctx, s.graph()).expect("session");
    let c = block_on(check::compare_graph(&gpu, 2, 5)).unwrap_or_else(|e| panic!("{e}"));
    println!("{:?}", c.devices);
    let mmi: Vec<_> = c
        .devices
        .iter()
        .filter(|d| d.1 == "MatMulInteger")
        .collect();
    assert!(!mmi.is_empty());
    assert!(mmi.iter().all(|d| d.2 == Device::Gpu), "{mmi:?}");
    assert!(c.max_rel_err <= check::TOLERANCE);
}
