//! Knowledge distillation: exact gradients of the Hinton and feature losses, the objective in
//! the training loop, the `distill` recipe pass and the teaching-assistant chain.

use lithe::compress::{PassSpec, Recipe};
use lithe::data::{Dataset, Preprocess};
use lithe::exec;
use lithe::graph::Graph;
use lithe::rng::Rng;
use lithe::tensor::{Tensor, from_vec};
use lithe::train::distill::{
    Distill, DistillParams, DistillPass, FeatureSpec, chain, distill, hinton, similarity, soft_loss,
};
use lithe::train::{Hooks, Objective, TrainConfig, train, train_with};
use lithe::zoo::{Arch, build};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

fn go(_: &lithe::train::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    from_vec(shape, (0..n).map(|_| r.normal() * scale).collect()).unwrap()
}

fn model(name: &str) -> Graph {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../www/models/");
    let bytes = std::fs::read(format!("{path}{name}.onnx")).unwrap();
    lithe::format::onnx::import(&bytes).unwrap()
}

fn mnist(file: &str) -> Dataset {
    Dataset::load(format!("{}/../www/data/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn cfg(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        seed,
        ..TrainConfig::default()
    }
}

/// Central finite differences of `f` at every element of `x`, compared with `grad`.
fn check_grad(x: &Tensor, grad: &Tensor, eps: f32, tol: f32, f: impl Fn(&Tensor) -> f32) {
    let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "the gradient is identically zero");
    for k in 0..x.len() {
        let mut p = x.clone();
        p.as_slice_mut().unwrap()[k] += eps;
        let mut m = x.clone();
        m.as_slice_mut().unwrap()[k] -= eps;
        let fd = (f(&p) - f(&m)) / (2.0 * eps);
        let g = grad.as_slice().unwrap()[k];
        assert!(
            (fd - g).abs() <= tol * scale,
            "element {k}: finite difference {fd} vs gradient {g} (scale {scale})"
        );
    }
}

#[test]
fn hinton_gradient_matches_finite_differences() {
    let zs = random(&[4, 10], 1, 2.0);
    let zt = random(&[4, 10], 2, 3.0);
    let y = [3u8, 0, 9, 3];
    for (t, a) in [(1.0, 0.9), (4.0, 0.5), (20.0, 1.0), (2.0, 0.0)] {
        let (_, g, _) = hinton(&zs, &zt, &y, t, a).unwrap();
        check_grad(&zs, &g, 1e-2, 2e-3, |z| hinton(z, &zt, &y, t, a).unwrap().0);
    }
    // α = 0 is exactly the label cross-entropy; α = 1 ignores the labels.
    let ce = lithe::train::loss::cross_entropy(&zs, &y).unwrap();
    let h0 = hinton(&zs, &zt, &y, 4.0, 0.0).unwrap();
    assert_eq!((ce.0, &ce.1, ce.2), (h0.0, &h0.1, h0.2));
    assert_eq!(
        hinton(&zs, &zt, &y, 4.0, 1.0).unwrap().0,
        hinton(&zs, &zt, &[0, 0, 0, 0], 4.0, 1.0).unwrap().0
    );
    // The student matching the teacher exactly has zero soft loss and zero soft gradient.
    let (l, g, _) = hinton(&zt, &zt, &y, 3.0, 1.0).unwrap();
    assert!(l.abs() < 1e-6 && g.iter().all(|v| v.abs() < 1e-7));
    for (t, a) in [
        (0.0, 0.5),
        (-1.0, 0.5),
        (f32::NAN, 0.5),
        (2.0, 1.5),
        (2.0, -0.1),
    ] {
        assert!(hinton(&zs, &zt, &y, t, a).is_err(), "T {t} α {a}");
    }
    assert!(hinton(&zs, &random(&[4, 9], 3, 1.0), &y, 2.0, 0.5).is_err());
}

#[test]
fn standardised_logits_gradient_matches_finite_differences() {
    let zs = random(&[4, 10], 1, 2.0);
    let zt = random(&[4, 10], 2, 3.0);
    let y = [3u8, 0, 9, 3];
    let p = |temperature, alpha| DistillParams {
        temperature,
        alpha,
        feature: None,
        standardize: true,
    };
    for (t, a) in [(1.0, 0.9), (2.0, 0.5), (4.0, 1.0)] {
        let (_, g, _) = soft_loss(&zs, &zt, &y, &p(t, a)).unwrap();
        check_grad(&zs, &g, 1e-2, 2e-3, |z| {
            soft_loss(z, &zt, &y, &p(t, a)).unwrap().0
        });
    }
    // Standardisation ignores the scale and offset of either side: a student whose logits are
    // an affine copy of the teacher's has zero soft loss, which plain KD does not.
    let copy = zt.mapv(|v| 0.25 * v - 3.0);
    let (l, g, _) = soft_loss(&copy, &zt, &y, &p(2.0, 1.0)).unwrap();
    assert!(l.abs() < 1e-5 && g.iter().all(|v| v.abs() < 1e-6), "{l}");
    assert!(hinton(&copy, &zt, &y, 2.0, 1.0).unwrap().0 > 0.1);
    // Off, it is exactly `hinton`.
    let off = DistillParams {
        standardize: false,
        ..p(3.0, 0.7)
    };
    assert_eq!(
        soft_loss(&zs, &zt, &y, &off).unwrap().1,
        hinton(&zs, &zt, &y, 3.0, 0.7).unwrap().1
    );
}

#[test]
fn temperature_softens_the_targets_towards_logit_matching() {
    // Hinton §2.1: for large T the soft gradient α·T·(p_s − p_t)/n tends to
    // α·((z_s − z_t) − mean(z_s − z_t))/(C·n), independent of T.
    let zs = random(&[3, 10], 4, 1.0);
    let zt = random(&[3, 10], 5, 1.0);
    let y = [1u8, 2, 3];
    let limit: Vec<f32> = (0..3)
        .flat_map(|i| {
            let d: Vec<f32> = (0..10).map(|k| zs[[i, k]] - zt[[i, k]]).collect::<Vec<_>>();
            let mean = d.iter().sum::<f32>() / 10.0;
            d.into_iter().map(move |v| (v - mean) / 30.0)
        })
        .collect();
    let err = |t: f32| {
        let (_, g, _) = hinton(&zs, &zt, &y, t, 1.0).unwrap();
        g.iter()
            .zip(&limit)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    assert!(err(1e4) < 3e-5, "{}", err(1e4));
    assert!(err(1.0) > 100.0 * err(1e4));
    assert!(err(100.0) > 5.0 * err(1e4));
    assert!(err(4.0) > err(20.0));
    // The T² factor keeps the soft loss's scale comparable across temperatures.
    let l4 = hinton(&zs, &zt, &y, 4.0, 1.0).unwrap().0;
    let l20 = hinton(&zs, &zt, &y, 20.0, 1.0).unwrap().0;
    assert!(l4 > 0.0 && l20 > 0.0 && (l4 / l20) < 3.0 && (l20 / l4) < 3.0);
}

#[test]
fn similarity_gradient_matches_finite_differences() {
    let fs = random(&[5, 7], 6, 1.0);
    let ft = random(&[5, 3], 7, 1.0);
    let (l, g) = similarity(&fs, &ft).unwrap();
    assert!(l > 0.0);
    assert_eq!(g.shape(), &[5, 7]);
    check_grad(&fs, &g, 1e-3, 2e-3, |f| similarity(f, &ft).unwrap().0);
    // Dimension-free and scale-free: a batch compared with a scaled, zero-padded copy of itself
    // has no loss.
    let mut wide = vec![0.0f32; 5 * 9];
    for i in 0..5 {
        for k in 0..7 {
            wide[i * 9 + k] = 3.0 * fs[[i, k]];
        }
    }
    let (l0, g0) = similarity(&fs, &from_vec(&[5, 9], wide).unwrap()).unwrap();
    assert!(l0 < 1e-10 && g0.iter().all(|v| v.abs() < 1e-5));
    // A zero row (a dead ReLU layer for one image) is allowed.
    let mut z = fs.clone();
    (0..7).for_each(|k| z[[2, k]] = 0.0);
    let (_, gz) = similarity(&z, &ft).unwrap();
    assert!(gz.iter().all(|v| v.is_finite()));
    assert!(similarity(&fs, &random(&[4, 3], 8, 1.0)).is_err());
}

/// Loss of the objective for the student `g` on `x`, and the gradients back-propagated from its
/// seeds (logits and the intermediate feature value).
fn objective_and_grads(
    g: &Graph,
    obj: &mut Distill,
    x: &Tensor,
    y: &[u8],
) -> (f32, std::collections::HashMap<String, Tensor>) {
    let trace = exec::forward_train(g, &[("input", x)], &mut Rng::new(0)).unwrap();
    let (l, seeds, _) = obj.loss(&trace, "logits", x, y).unwrap();
    (l, exec::backward(g, &trace, seeds).unwrap())
}

#[test]
fn distill_objective_with_feature_loss_backpropagates_exact_gradients() {
    let data = Dataset::synthetic(8, 9);
    let (x, y) = data.batch(&(0..8).collect::<Vec<_>>(), &Preprocess::default());
    let teacher = build(Arch::Lenet300100, 3).unwrap();
    let student = build(Arch::TinyMlp, 4).unwrap();
    let params = DistillParams {
        temperature: 3.0,
        alpha: 0.7,
        feature: Some(FeatureSpec {
            student: "relu1".into(),
            teacher: "relu2".into(),
            beta: 50.0,
        }),
        standardize: false,
    };
    let mut obj = Distill::new(&teacher, params.clone()).unwrap();
    let (_, grads) = objective_and_grads(&student, &mut obj, &x, &y);
    // The feature term changes the gradient of the first layer (it is seeded at relu1).
    let mut plain = Distill::new(
        &teacher,
        DistillParams {
            feature: None,
            ..params.clone()
        },
    )
    .unwrap();
    let (_, g_plain) = objective_and_grads(&student, &mut plain, &x, &y);
    assert_ne!(grads["fc1.weight"], g_plain["fc1.weight"]);
    // Hidden units with a pre-activation within 0.01 of the ReLU kink on some image: a finite
    // difference of their parameters would straddle the kink, so they are left out.
    let trace = exec::forward_train(&student, &[("input", &x)], &mut Rng::new(0)).unwrap();
    let pre = trace.get("fc1").unwrap();
    let near_kink = |unit: usize| (0..8).any(|i| pre[[i, unit]].abs() < 1e-2);
    for (w, unit_of) in [
        ("fc1.bias", 1usize),
        ("fc2.bias", 0),
        ("fc2.weight", 0),
        ("fc1.weight", 784),
    ] {
        let grad = &grads[w];
        let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
        let picked: Vec<usize> = (0..grad.len())
            .step_by(grad.len().div_ceil(40))
            .filter(|&k| unit_of == 0 || !near_kink(k / unit_of))
            .collect();
        assert!(picked.len() > 5, "{w}");
        for &k in &picked {
            let eps = 1e-3;
            let mut at = |d: f32| {
                let mut s = student.clone();
                s.weights.get_mut(w).unwrap().as_slice_mut().unwrap()[k] += d;
                objective_and_grads(&s, &mut obj, &x, &y).0
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            let g = grad.as_slice().unwrap()[k];
            assert!(
                (fd - g).abs() <= 1e-2 * scale,
                "{w}[{k}]: finite difference {fd} vs gradient {g}"
            );
        }
    }
    let bad = DistillParams {
        feature: Some(FeatureSpec {
            student: "relu1".into(),
            teacher: "nope".into(),
            beta: 1.0,
        }),
        ..params
    };
    assert!(Distill::new(&teacher, bad).is_err());
}

#[test]
fn alpha_zero_is_plain_cross_entropy_training_bit_for_bit() {
    let data = Dataset::synthetic(256, 10);
    let teacher = build(Arch::Lenet300100, 5).unwrap();
    let mut a = build(Arch::TinyMlp, 6).unwrap();
    let mut b = a.clone();
    let sa = train(&mut a, &data, None, &cfg(2, 3), &mut go).unwrap();
    let p = DistillParams {
        alpha: 0.0,
        ..DistillParams::default()
    };
    let sb = distill(&mut b, &teacher, &data, None, &p, &cfg(2, 3), None, &mut go).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(a.weights, b.weights);
    // With α > 0 the teacher changes the result.
    let mut c = build(Arch::TinyMlp, 6).unwrap();
    distill(
        &mut c,
        &teacher,
        &data,
        None,
        &DistillParams::default(),
        &cfg(2, 3),
        None,
        &mut go,
    )
    .unwrap();
    assert_ne!(a.weights, c.weights);
}

#[test]
fn cached_teacher_outputs_give_the_same_bytes_as_running_the_teacher() {
    let data = mnist("mnist-train-6k.lmn.gz").take(512);
    let teacher = model("lenet-300-100");
    let params = DistillParams {
        temperature: 4.0,
        alpha: 0.9,
        feature: Some(FeatureSpec {
            student: "relu1".into(),
            teacher: "relu2".into(),
            beta: 1.0,
        }),
        standardize: false,
    };
    let mut a = build(Arch::TinyMlp, 7).unwrap();
    let mut b = a.clone();
    // `distill` caches (no augmentation); the bare objective runs the teacher on every batch.
    distill(
        &mut a,
        &teacher,
        &data,
        None,
        &params,
        &cfg(1, 4),
        None,
        &mut go,
    )
    .unwrap();
    let mut obj = Distill::new(&teacher, params).unwrap();
    let hooks = Hooks {
        objective: Some(&mut obj),
        ..Hooks::default()
    };
    train_with(&mut b, &data, None, &cfg(1, 4), hooks, &mut go).unwrap();
    assert_eq!(a.weights, b.weights);
    // The same with the convolutional teacher of the measurements (cache batches of 256,
    // training batches of 32).
    let lenet5 = model("lenet-5");
    let small = data.take(160);
    let p = DistillParams::default();
    let mut a = build(Arch::TinyMlp, 7).unwrap();
    let mut b = a.clone();
    distill(&mut a, &lenet5, &small, None, &p, &cfg(1, 4), None, &mut go).unwrap();
    let mut obj = Distill::new(&lenet5, p).unwrap();
    let hooks = Hooks {
        objective: Some(&mut obj),
        ..Hooks::default()
    };
    train_with(&mut b, &small, None, &cfg(1, 4), hooks, &mut go).unwrap();
    assert_eq!(a.weights, b.weights);
}

#[test]
fn temperatures_change_the_student() {
    let data = mnist("mnist-train-6k.lmn.gz").take(512);
    let teacher = model("lenet-300-100");
    let trained = |t: f32| {
        let mut s = build(Arch::TinyMlp, 8).unwrap();
        let p = DistillParams {
            temperature: t,
            ..DistillParams::default()
        };
        distill(&mut s, &teacher, &data, None, &p, &cfg(1, 5), None, &mut go).unwrap();
        s.weights
    };
    let (t1, t8) = (trained(1.0), trained(8.0));
    assert_ne!(t1, t8);
    assert_eq!(t8, trained(8.0));
}

#[test]
fn distill_pass_keeps_masks_and_recovers_a_pruned_model() {
    let train_set = mnist("mnist-train-6k.lmn.gz").take(3000);
    let test = mnist("mnist-test.lmn.gz").take(2000);
    let g = model("tiny-mlp");
    let json = r#"{"passes": [
        {"pass": "prune", "by": "global", "ratio": 0.9},
        {"pass": "distill", "teacher": "original", "temperature": 4, "alpha": 0.9,
         "epochs": 1, "batch_size": 32, "lr": 0.001, "seed": 2}
    ]}"#;
    let recipe = Recipe::from_json(json).unwrap();
    match &recipe.passes[1] {
        PassSpec::Distill(DistillPass {
            teacher,
            from_init,
            params,
            train,
        }) => {
            assert_eq!(teacher, "original");
            assert!(!from_init);
            assert_eq!((params.temperature, params.alpha), (4.0, 0.9));
            assert_eq!((train.epochs, train.batch_size, train.seed), (1, 32, 2));
        }
        p => panic!("parsed as {p:?}"),
    }
    assert_eq!(
        Recipe::from_json(&recipe.to_json().unwrap()).unwrap(),
        recipe
    );
    let out = recipe
        .apply(&g, Some(&train_set), Some(&test), &mut go)
        .unwrap();
    let (pruned, distilled) = (&out.reports[0], &out.reports[1]);
    assert_eq!(distilled.pass, "distill");
    assert_eq!(out.finetune.len(), 1);
    for (name, m) in &out.masks {
        let w = &out.graph.weights[name];
        assert!(w.iter().zip(m).all(|(v, k)| *k || *v == 0.0), "{name}");
    }
    assert!((distilled.sparsity - 0.9).abs() < 1e-3);
    let (a0, a1) = (
        pruned.accuracy_after.unwrap(),
        distilled.accuracy_after.unwrap(),
    );
    assert!(a1 > a0 + 0.02, "pruned {a0}, distilled {a1}");

    // A named teacher comes from the caller; unknown names and a missing dataset are errors.
    let named = Recipe::from_json(
        r#"{"passes": [{"pass": "distill", "teacher": "lenet", "epochs": 1, "seed": 1}]}"#,
    )
    .unwrap();
    let teachers = BTreeMap::from([("lenet".to_string(), model("lenet-300-100"))]);
    let small = train_set.take(256);
    let out = named
        .apply_with(&g, Some(&small), None, teachers, &mut go)
        .unwrap();
    assert_eq!(out.finetune.len(), 1);
    let e = named.apply(&g, Some(&small), None, &mut go).unwrap_err();
    assert!(e.to_string().contains("lenet"), "{e}");
    assert!(recipe.apply(&g, None, None, &mut go).is_err());
    // `from_init` trains the student from its zoo initial weights: the same bytes as
    // distilling a freshly built model.
    let scratch = Recipe::from_json(
        r#"{"passes": [{"pass": "distill", "teacher": "lenet", "from_init": true,
            "epochs": 1, "seed": 1}]}"#,
    )
    .unwrap();
    let teachers = BTreeMap::from([("lenet".to_string(), model("lenet-300-100"))]);
    let out = scratch
        .apply_with(&g, Some(&small), None, teachers.clone(), &mut go)
        .unwrap();
    let mut fresh = lithe::compress::lottery::zoo_init(&g).unwrap();
    fresh.metadata = g.metadata.clone();
    let cfg1 = TrainConfig {
        epochs: 1,
        seed: 1,
        ..TrainConfig::default()
    };
    distill(
        &mut fresh,
        &teachers["lenet"],
        &small,
        None,
        &DistillParams::default(),
        &cfg1,
        None,
        &mut go,
    )
    .unwrap();
    assert_eq!(out.graph.weights, fresh.weights);
    let mut other = model("lenet-300-100");
    other.metadata.insert(
        "lithe.preprocess".into(),
        Preprocess::MNIST_NORM.to_metadata(),
    );
    let teachers = BTreeMap::from([("lenet".to_string(), other)]);
    let e = named
        .apply_with(&g, Some(&small), None, teachers, &mut go)
        .unwrap_err();
    assert!(e.to_string().contains("teacher expects"), "{e}");
}

#[test]
fn teaching_assistant_chain_trains_both_links() {
    let train_set = mnist("mnist-train-6k.lmn.gz");
    let test = mnist("mnist-test.lmn.gz").take(2000);
    let teacher = model("lenet-300-100");
    let mut students = vec![
        build(Arch::Lenet300100, 11).unwrap(),
        build(Arch::TinyMlp, 12).unwrap(),
    ];
    let untrained_ta = students[0].clone();
    let params = vec![DistillParams::default(); 2];
    let cfgs = vec![cfg(2, 6), cfg(2, 7)];
    let s = chain(
        &teacher,
        &mut students,
        &train_set,
        None,
        &params,
        &cfgs,
        &mut go,
    )
    .unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].epochs_done, 2);
    let acc = |g: &Graph| lithe::metrics::evaluate(g, &test, 256).unwrap().accuracy;
    assert!(acc(&students[0]) > 0.85, "TA {}", acc(&students[0]));
    assert!(acc(&students[1]) > 0.8, "student {}", acc(&students[1]));
    // The student's link really used the trained TA: distilling from the untrained TA differs.
    let mut again = build(Arch::TinyMlp, 12).unwrap();
    distill(
        &mut again,
        &untrained_ta,
        &train_set,
        None,
        &params[1],
        &cfgs[1],
        None,
        &mut go,
    )
    .unwrap();
    assert_ne!(again.weights, students[1].weights);
    assert!(
        chain(
            &teacher,
            &mut students,
            &train_set,
            None,
            &params[..1],
            &cfgs,
            &mut go
        )
        .is_err()
    );
}

/// The full-MNIST figures of docs/COMPRESSION.md ("Distillation and lottery tickets"):
/// tiny-mlp (784-32-10) trained alone and distilled from the shipped LeNet-5, on the zoo's 55k
/// split (seed 1), with `Arch::TinyMlp.train_config(1)` (10 epochs, Adam 1e-3, cosine), α 0.9.
/// `LITHE_T` picks the temperatures (default 1,2,4,8,20; `T:α` sets α too, `T:α:z` also
/// standardises the logits), `LITHE_EPOCHS` overrides the epochs, `LITHE_SEED` the student's
/// init and shuffling seed (default 1), `LITHE_ALONE=0` skips the baseline, `LITHE_TEACHER`
/// names another zoo teacher (default lenet-5).
/// Run: `nice -n 10 cargo test -p lithe --test compress_distill -- --ignored --nocapture
/// measure_temperatures`.
#[test]
#[ignore]
fn measure_temperatures() {
    let root = env!("CARGO_MANIFEST_DIR");
    let full = Dataset::load(format!("{root}/../.data/mnist/train.lmn.gz")).unwrap();
    let (train55, _) = full.split(full.len() / 12, 1);
    let test = mnist("mnist-test.lmn.gz");
    let seed: u64 = std::env::var("LITHE_SEED").map_or(1, |s| s.parse().unwrap());
    let mut cfg = Arch::TinyMlp.train_config(seed);
    if let Ok(e) = std::env::var("LITHE_EPOCHS") {
        cfg.epochs = e.parse().unwrap();
    }
    let acc = |g: &Graph| lithe::metrics::evaluate(g, &test, 256).unwrap().accuracy;
    let temps: Vec<(f32, f32, bool)> = std::env::var("LITHE_T")
        .unwrap_or_else(|_| "1,2,4,8,20".into())
        .split(',')
        .map(|t| {
            let mut f = t.split(':').map(str::trim);
            let t: f32 = f.next().unwrap().parse().unwrap();
            let a: f32 = f.next().map_or(0.9, |a| a.parse().unwrap());
            (t, a, f.next() == Some("z"))
        })
        .collect();
    if std::env::var("LITHE_ALONE").as_deref() != Ok("0") {
        let t0 = std::time::Instant::now();
        let mut alone = build(Arch::TinyMlp, seed).unwrap();
        let sum = train(&mut alone, &train55, None, &cfg, &mut go).unwrap();
        println!(
            "alone: test {:.2} %, train (last epoch) {:.2} % ({:.0} s)",
            100.0 * acc(&alone),
            100.0 * sum.train_accuracy,
            t0.elapsed().as_secs_f32()
        );
    }
    let name = std::env::var("LITHE_TEACHER").unwrap_or_else(|_| "lenet-5".into());
    let teacher = model(&name);
    let t0 = std::time::Instant::now();
    let mut obj = Distill::new(&teacher, DistillParams::default()).unwrap();
    obj.cache(&train55, &Preprocess::default(), 256).unwrap();
    println!(
        "teacher {name}: test {:.2} %, outputs cached in {:.0} s",
        100.0 * acc(&teacher),
        t0.elapsed().as_secs_f32()
    );
    for (t, a, z) in temps {
        let t0 = std::time::Instant::now();
        obj.set_temperature_alpha(t, a).unwrap();
        obj.set_standardize(z);
        let mut s = build(Arch::TinyMlp, seed).unwrap();
        let hooks = Hooks {
            objective: Some(&mut obj),
            ..Hooks::default()
        };
        let sum = train_with(&mut s, &train55, None, &cfg, hooks, &mut go).unwrap();
        println!(
            "distilled T {t} α {a}{}: test {:.2} %, train (last epoch) {:.2} % ({:.0} s)",
            if z { " standardised" } else { "" },
            100.0 * acc(&s),
            100.0 * sum.train_accuracy,
            t0.elapsed().as_secs_f32()
        );
    }
}

/// Teacher → teaching assistant → student on full MNIST: LeNet-5 → LeNet-300-100 (its zoo
/// config, 12 epochs) → tiny-mlp (10 epochs), both links at `LITHE_T` (default 4), α 0.9.
/// Run: `LITHE_T=4 nice -n 10 cargo test -p lithe --test compress_distill -- --ignored
/// --nocapture measure_ta_chain`.
#[test]
#[ignore]
fn measure_ta_chain() {
    let root = env!("CARGO_MANIFEST_DIR");
    let full = Dataset::load(format!("{root}/../.data/mnist/train.lmn.gz")).unwrap();
    let (train55, _) = full.split(full.len() / 12, 1);
    let test = mnist("mnist-test.lmn.gz");
    let t: f32 = std::env::var("LITHE_T")
        .unwrap_or_else(|_| "4".into())
        .parse()
        .unwrap();
    let acc = |g: &Graph| lithe::metrics::evaluate(g, &test, 256).unwrap().accuracy;
    let p = DistillParams {
        temperature: t,
        alpha: 0.9,
        feature: None,
        standardize: false,
    };
    let t0 = std::time::Instant::now();
    let mut students = vec![
        build(Arch::Lenet300100, 1).unwrap(),
        build(Arch::TinyMlp, 1).unwrap(),
    ];
    let cfgs = vec![
        Arch::Lenet300100.train_config(1),
        Arch::TinyMlp.train_config(1),
    ];
    chain(
        &model("lenet-5"),
        &mut students,
        &train55,
        None,
        &[p.clone(), p],
        &cfgs,
        &mut go,
    )
    .unwrap();
    println!(
        "T {t}: TA lenet-300-100 {:.2} %, student tiny-mlp {:.2} % ({:.0} s)",
        100.0 * acc(&students[0]),
        100.0 * acc(&students[1]),
        t0.elapsed().as_secs_f32()
    );
}

#[test]
fn shipped_distill_recipe_is_the_measured_setting() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../recipes/distill.json");
    let r = Recipe::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let [PassSpec::Distill(p)] = r.passes.as_slice() else {
        panic!("{:?}", r.passes)
    };
    assert!(p.from_init);
    assert_eq!(p.teacher, "lenet-5");
    assert_eq!(
        (
            p.params.temperature,
            p.params.alpha,
            &p.params.feature,
            p.params.standardize
        ),
        (4.0, 0.5, &None, true)
    );
    assert_eq!(p.train, Arch::TinyMlp.train_config(1));
}
