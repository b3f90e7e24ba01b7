//! Cases run natively, in Node and in headless Chromium; each produces a [`Fingerprint`] that
//! must agree across the three within [`TOLERANCE`].
//!
//! The native fingerprint is committed in `fixtures/native.json`; the native test checks that
//! it is current (set `LITHE_BLESS=1` to rewrite it after an intended change), and the wasm tests
//! compare against it.

use lithe::data::{Dataset, Preprocess};
use lithe::plan::Plan;
use lithe::rng::Rng;
use lithe::train::{Optimizer, step_gradients};
use lithe::zoo::{Arch, build};
use serde::{Deserialize, Serialize};

/// Largest allowed relative difference between platforms (summation order differs between the
/// native and the wasm matrix kernels).
pub const TOLERANCE: f32 = 1e-4;

/// What a case computes, reduced to a few comparable numbers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Fingerprint {
    /// Architecture name.
    pub arch: String,
    /// Logits of the first two images before training.
    pub logits: Vec<f32>,
    /// Loss of the training step.
    pub loss: f32,
    /// Sum of |w| of every trainable weight after one SGD step, in name order.
    pub weight_l1_after: Vec<f32>,
}

/// Forward pass and one SGD step of `arch` (seed 3) on 16 synthetic images.
pub fn fingerprint(arch: Arch) -> Result<Fingerprint, lithe::Error> {
    let mut g = build(arch, 3)?;
    let data = Dataset::synthetic(16, 11);
    let idx: Vec<usize> = (0..16).collect();
    let (x, y) = data.batch(&idx, &Preprocess::default());
    let out = lithe::exec::run(&g, &[("input", &x)])?;
    let logits: Vec<f32> = out[0].iter().take(20).copied().collect();
    let (loss, grads, _) = step_gradients(&mut g, &x, &y, &mut Rng::new(1))?;
    let mut state = lithe::train::optim::State::default();
    state.tick();
    let opt = Optimizer::Sgd { momentum: 0.9 };
    let mut names = g.trainable();
    names.sort();
    let mut l1 = Vec::new();
    for n in &names {
        if let (Some(gr), Some(w)) = (grads.get(n), g.weights.get_mut(n)) {
            state.step(&opt, n, w, gr, 0.05, 0.0);
        }
        l1.push(g.weights[n].iter().map(|v| v.abs()).sum());
    }
    Ok(Fingerprint {
        arch: arch.name().into(),
        logits,
        loss,
        weight_l1_after: l1,
    })
}

/// All cases, in fixture order.
pub fn all() -> Result<Vec<Fingerprint>, lithe::Error> {
    [Arch::Lenet300100, Arch::Lenet5, Arch::Mobilenet]
        .into_iter()
        .map(fingerprint)
        .collect()
}

/// Every zoo model through its execution plan — dense, then with every Gemm pruned to 10 % —
/// against the reference interpreter on 5 seeded images (1e-4 relative). Returns the kernels
/// each plan chose, or the first disagreement. Run in Node and Chromium, so the planned wasm
/// kernels (`gemm-simd128`, `conv-simd128`, `depthwise`, `maxpool`, `csr`) are checked there.
pub fn plans_agree() -> Result<Vec<String>, String> {
    let mut chosen = Vec::new();
    for arch in Arch::ALL {
        let mut g = build(arch, 3).map_err(|e| e.to_string())?;
        for pruned in [false, true] {
            if pruned {
                for n in g.nodes.clone() {
                    if let lithe::graph::Op::Gemm(_) = n.op
                        && let Some(w) = g.weights.get_mut(&n.inputs[1])
                    {
                        w.iter_mut().enumerate().for_each(|(i, v)| {
                            if i % 10 != 0 {
                                *v = 0.0;
                            }
                        });
                    }
                }
            }
            let plan = Plan::new(&g).map_err(|e| e.to_string())?;
            let mut rng = Rng::new(7);
            let x: Vec<f32> = (0..5 * 784).map(|_| rng.uniform()).collect();
            let x = lithe::tensor::from_vec(&[5, 1, 28, 28], x).map_err(|e| e.to_string())?;
            let want = lithe::exec::run(&g, &[("input", &x)]).map_err(|e| e.to_string())?;
            let got = plan.run(&[("input", &x)]).map_err(|e| e.to_string())?;
            for (a, b) in want[0].iter().zip(got[0].iter()) {
                if (a - b).abs() > 1e-4 * (1.0 + a.abs()) {
                    return Err(format!(
                        "{} (pruned: {pruned}): plan {b}, reference {a}",
                        arch.name()
                    ));
                }
            }
            let kernels: Vec<&str> = plan.kernels().into_iter().map(|(_, k)| k).collect();
            chosen.push(format!(
                "{}{}: {}",
                arch.name(),
                if pruned { " pruned" } else { "" },
                kernels.join(",")
            ));
        }
    }
    Ok(chosen)
}

/// [`plans_agree`] in a wasm `simd128` build: also checks that the planned wasm kernels were
/// chosen. Returns the kernels of every plan, joined, for the log.
pub fn wasm_plans_agree() -> Result<String, String> {
    let all = plans_agree()?.join("; ");
    for k in [
        "gemm-simd128",
        "conv-simd128",
        "depthwise",
        "maxpool",
        "csr",
    ] {
        if !all.contains(k) {
            return Err(format!("{k} was not chosen: {all}"));
        }
    }
    Ok(all)
}

/// The committed native fingerprints.
pub fn native() -> Vec<Fingerprint> {
    serde_json::from_str(include_str!("../fixtures/native.json")).unwrap_or_default()
}

/// Compares two fingerprint lists; returns a readable description of the first difference.
pub fn compare(got: &[Fingerprint], want: &[Fingerprint]) -> Result<(), String> {
    if got.len() != want.len() || want.is_empty() {
        return Err(format!(
            "{} cases computed, {} expected",
            got.len(),
            want.len()
        ));
    }
    for (g, w) in got.iter().zip(want) {
        let pairs = g
            .logits
            .iter()
            .zip(&w.logits)
            .chain(g.weight_l1_after.iter().zip(&w.weight_l1_after))
            .chain([(&g.loss, &w.loss)]);
        if g.logits.len() != w.logits.len() || g.weight_l1_after.len() != w.weight_l1_after.len() {
            return Err(format!("{}: fingerprint lengths differ", g.arch));
        }
        for (a, b) in pairs {
            if (a - b).abs() > TOLERANCE * (1.0 + b.abs()) {
                return Err(format!("{}: {a} differs from the native {b}", g.arch));
            }
        }
    }
    Ok(())
}

/// Timings of one training epoch and of forward passes, with the accuracy reached.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figures {
    /// Where it ran (`native`, `node`, `chromium`).
    pub platform: String,
    /// Milliseconds for one epoch of LeNet-300-100 over the 6,000-image subset (batch 64, Adam).
    pub epoch_ms_6k: f64,
    /// The same, scaled to the 55,000 images of a full zoo epoch.
    pub epoch_ms_55k_estimate: f64,
    /// Test accuracy on the first 2,000 test images after that epoch.
    pub accuracy: f32,
    /// Mean forward latency at batch 1, milliseconds.
    pub forward_ms_b1: f64,
    /// Mean forward latency at batch 256, milliseconds.
    pub forward_ms_b256: f64,
    /// Through the execution plan (`lithe::plan`), the trained model dense: batch 1 / 64, ms.
    pub plan_dense_ms_b1: f64,
    /// The same model pruned 92 % globally (CSR kernels where the plan picks them): batch 1, ms.
    pub plan_pruned_ms_b1: f64,
    /// Dense through the plan at batch 64, ms.
    pub plan_dense_ms_b64: f64,
    /// Pruned through the plan at batch 64, ms.
    pub plan_pruned_ms_b64: f64,
    /// Kernels the pruned plan runs for fc1, fc2, fc3.
    pub plan_pruned_kernels: Vec<String>,
}

/// Trains LeNet-300-100 for one epoch on the shipped 6k subset and times forward passes.
/// `now` returns milliseconds from any fixed origin.
pub fn figures(platform: &str, now: &dyn Fn() -> f64) -> Result<Figures, lithe::Error> {
    let train_set = Dataset::decode(include_bytes!("../../www/data/mnist-train-6k.lmn.gz"))?;
    let test = Dataset::decode(include_bytes!("../../www/data/mnist-test.lmn.gz"))?.take(2000);
    let mut g = build(Arch::Lenet300100, 1)?;
    let cfg = lithe::train::TrainConfig {
        epochs: 1,
        batch_size: 64,
        ..Default::default()
    };
    let t0 = now();
    lithe::train::train(&mut g, &train_set, None, &cfg, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    let epoch_ms_6k = now() - t0;
    let accuracy = lithe::metrics::evaluate(&g, &test, 256)?.accuracy;
    let time_forward = |batch: usize, reps: usize| -> Result<f64, lithe::Error> {
        let idx: Vec<usize> = (0..batch).collect();
        let (x, _) = test.batch(&idx, &Preprocess::default());
        lithe::exec::run(&g, &[("input", &x)])?;
        let t = now();
        for _ in 0..reps {
            lithe::exec::run(&g, &[("input", &x)])?;
        }
        Ok((now() - t) / reps as f64)
    };
    let pruned = lithe::compress::Recipe::from_json(
        r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.92}]}"#,
    )?
    .apply(&g, None, None, &mut |_| std::ops::ControlFlow::Continue(()))?
    .graph;
    let (dense_plan, pruned_plan) = (Plan::new(&g)?, Plan::new(&pruned)?);
    let time_plan = |plan: &Plan, reference: &lithe::graph::Graph, batch: usize, reps: usize| {
        let idx: Vec<usize> = (0..batch).collect();
        let (x, _) = test.batch(&idx, &Preprocess::default());
        // The plan must agree with the reference interpreter on this platform.
        let want = lithe::exec::run(reference, &[("input", &x)])?;
        let got = plan.run(&[("input", &x)])?;
        let diff = want[0]
            .iter()
            .zip(got[0].iter())
            .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
            .fold(0.0f32, f32::max);
        if diff > 1e-4 {
            return Err(lithe::Error::Invalid(format!(
                "plan and reference differ by {diff} at batch {batch}"
            )));
        }
        let t = now();
        for _ in 0..reps {
            plan.run(&[("input", &x)])?;
        }
        Ok::<f64, lithe::Error>((now() - t) / reps as f64)
    };
    let plan_pruned_kernels = pruned_plan
        .kernels()
        .into_iter()
        .filter(|(n, _)| n.starts_with("fc"))
        .map(|(n, k)| format!("{n}:{k}"))
        .collect();
    Ok(Figures {
        plan_dense_ms_b1: time_plan(&dense_plan, &g, 1, 200)?,
        plan_pruned_ms_b1: time_plan(&pruned_plan, &pruned, 1, 200)?,
        plan_dense_ms_b64: time_plan(&dense_plan, &g, 64, 20)?,
        plan_pruned_ms_b64: time_plan(&pruned_plan, &pruned, 64, 20)?,
        plan_pruned_kernels,
        platform: platform.into(),
        epoch_ms_6k,
        epoch_ms_55k_estimate: epoch_ms_6k * 55_000.0 / train_set.len() as f64,
        accuracy,
        forward_ms_b1: time_forward(1, 50)?,
        forward_ms_b256: time_forward(256, 5)?,
    })
}
