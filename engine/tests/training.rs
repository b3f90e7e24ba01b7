//! Training on real MNIST: accuracy on a small budget, cancellation, and "same seed → same bytes".

use lithe::data::Dataset;
use lithe::format::onnx;
use lithe::train::{Optimizer, Schedule, TrainConfig, train};
use lithe::zoo::{Arch, build};
use std::ops::ControlFlow;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The 6k training subset and the 10k test set the page ships (committed in www/data).
fn shipped() -> (Dataset, Dataset) {
    let train = Dataset::load(root().join("www/data/mnist-train-6k.lmn.gz"))
        .expect("www/data/mnist-train-6k.lmn.gz");
    let test = Dataset::load(root().join("www/data/mnist-test.lmn.gz"))
        .expect("www/data/mnist-test.lmn.gz");
    (train, test)
}

#[test]
fn lenet_300_100_learns_mnist_on_a_small_budget() {
    let (train_set, test) = shipped();
    let (train_set, val) = train_set.split(500, 1);
    let mut g = build(Arch::Lenet300100, 1).unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 32,
        ..TrainConfig::default()
    };
    let mut events = Vec::new();
    let s = train(&mut g, &train_set, Some(&val), &cfg, &mut |p| {
        events.push(p.clone());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(s.epochs_done, 2);
    assert!(!s.cancelled);
    assert_eq!(s.val_accuracy.len(), 2);
    // Progress reaches the callback with epoch, step, loss and accuracy; the loss goes down.
    assert!(events.len() >= 4, "{} events", events.len());
    assert!(events.last().unwrap().loss < events[0].loss);
    let r = lithe::metrics::evaluate(&g, &test, 500).unwrap();
    // 5.5k images × 2 epochs (measured 92.8 %): a stated bar of 92 % on the full 10k test set.
    assert!(r.accuracy >= 0.92, "test accuracy {}", r.accuracy);
    assert_eq!(r.count, 10_000);
    assert_eq!(r.confusion.iter().flatten().sum::<u32>(), 10_000);
}

#[test]
fn sgd_momentum_with_step_schedule_and_weight_decay_also_learns() {
    let (train_set, test) = shipped();
    let mut g = build(Arch::TinyMlp, 2).unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 32,
        lr: 0.05,
        optimizer: Optimizer::Sgd { momentum: 0.9 },
        weight_decay: 1e-4,
        schedule: Schedule::Step {
            every: 1,
            gamma: 0.5,
        },
        ..TrainConfig::default()
    };
    train(&mut g, &train_set, None, &cfg, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let r = lithe::metrics::evaluate(&g, &test.take(2000), 500).unwrap();
    assert!(r.accuracy >= 0.88, "test accuracy {}", r.accuracy);
}

#[test]
fn cancellation_stops_early_and_keeps_a_usable_model() {
    let (train_set, _) = shipped();
    let mut g = build(Arch::TinyMlp, 1).unwrap();
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 32,
        log_every: 10,
        ..TrainConfig::default()
    };
    let mut calls = 0;
    let s = train(&mut g, &train_set, None, &cfg, &mut |_| {
        calls += 1;
        if calls == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert!(s.cancelled);
    assert_eq!(s.steps, 20);
    assert_eq!(s.epochs_done, 0);
    assert!(g.weights.values().all(|w| w.iter().all(|v| v.is_finite())));
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    let (train_set, _) = shipped();
    let small = train_set.take(1000);
    let run = |arch: Arch, seed: u64| {
        let mut g = build(arch, seed).unwrap();
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: 50,
            seed,
            ..TrainConfig::default()
        };
        train(&mut g, &small, None, &cfg, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        onnx::export(&g).unwrap()
    };
    for arch in [Arch::TinyMlp, Arch::Mobilenet] {
        assert_eq!(
            run(arch, 7),
            run(arch, 7),
            "{arch:?}: same seed, same bytes"
        );
        assert_ne!(
            run(arch, 7),
            run(arch, 8),
            "{arch:?}: another seed changes the bytes"
        );
    }
}

/// The committed tiny-mlp zoo model is exactly what its recorded command produces. Needs the
/// full 60k training set fetched by `cargo xtask data` (skips with a message otherwise).
#[test]
fn committed_tiny_mlp_is_reproducible_from_its_command() {
    let dir = std::env::var_os("LITHE_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".data/mnist"));
    let Ok(full) = Dataset::load(dir.join("train.lmn.gz")) else {
        eprintln!(
            "skipped: full MNIST not found in {} (run `cargo xtask data`)",
            dir.display()
        );
        return;
    };
    let committed =
        std::fs::read(root().join("www/models/tiny-mlp.onnx")).expect("www/models/tiny-mlp.onnx");
    // What `lithe train --arch tiny-mlp --seed 1` runs.
    let cfg = Arch::TinyMlp.train_config(1);
    let (g, _) = lithe::zoo::train_arch(Arch::TinyMlp, 1, &full, &cfg, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(
        onnx::export(&g).unwrap() == committed,
        "retrained tiny-mlp differs from www/models/tiny-mlp.onnx"
    );
}
