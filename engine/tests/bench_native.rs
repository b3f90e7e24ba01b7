//! The in-browser benchmark's figures, natively: the same Rust timing code
//! (`lithe::bench`) on the native build, printed as one JSON line and written to
//! `target/bench/native.json`, so `docs/BENCHMARKS.md` can give wasm-vs-native ratios. A figure,
//! not a test: ignored by default, no time is asserted.
//!
//! ```sh
//! cargo test --release -p lithe --test bench_native -- --ignored --nocapture
//! ```

use std::path::PathBuf;
use std::time::Instant;

use lithe::bench;
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn bench_native() {
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_secs_f64() * 1e3;
    let kernels = bench::bench_kernels(&bench::KernelOpts::default(), &now).unwrap();
    let peak = bench::bench_peak(&now).unwrap();
    let mut models = Vec::new();
    for name in ["lenet-300-100", "lenet-5", "mobilenet", "tiny-mlp"] {
        let bytes = std::fs::read(root().join(format!("www/models/{name}.onnx"))).unwrap();
        let mut variants = vec![(name.to_string(), bytes.clone())];
        if name == "lenet-300-100" {
            variants.push((
                "lenet-300-100-pruned-92".into(),
                bench::prune_onnx(&bytes, 0.92).unwrap(),
            ));
        }
        for (label, b) in variants {
            for batch in [1, 64] {
                let r = bench::bench_model(&b, batch, &now).unwrap();
                models.push(json!({ "model": label, "result": r }));
            }
        }
    }
    let out = json!({
        "platform": "native",
        "build": bench::build_info(),
        "peak": peak,
        "kernels": kernels["figures"],
        "models": models,
    });
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("native.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
    println!("{out}");
}

#[test]
fn the_timing_helpers_run() {
    // Smoke test with a fake clock: every call advances it by 10 ms.
    let t = std::cell::Cell::new(0.0);
    let now = || {
        t.set(t.get() + 10.0);
        t.get()
    };
    let (ms, reps) = bench::time_ms(&now, &mut || Ok(())).unwrap();
    assert!(ms > 0.0 && reps >= 1);
    let pruned = bench::prune_onnx(
        &std::fs::read(root().join("www/models/tiny-mlp.onnx")).unwrap(),
        0.9,
    )
    .unwrap();
    assert!(!bench::model_output(&pruned, 2).unwrap().is_empty());
    assert!(bench::prune_onnx(&pruned, 1.5).is_err());
    assert!(bench::bench_model(&pruned, 0, &now).is_err());
}
