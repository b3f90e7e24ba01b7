//! Lottery tickets: masks shrink by the rate each round, survivors are rewound to their
//! initial (or early-training) values, and runs are deterministic.

use lithe::compress::lottery::{self, LotterySpec, Rewind, Scope};
use lithe::compress::{PassSpec, Recipe, targets};
use lithe::data::Dataset;
use lithe::graph::Graph;
use lithe::train::{Hooks, Masks, Progress, TrainConfig, train_with};
use lithe::zoo::{Arch, build};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

fn go(_: &Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn data() -> Dataset {
    Dataset::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../www/data/mnist-train-6k.lmn.gz"
    ))
    .unwrap()
    .take(1024)
}

fn spec(rounds: usize, rewind: Rewind) -> LotterySpec {
    LotterySpec {
        rate: 0.2,
        rounds,
        rewind,
        scope: Scope::Layer,
        output_rate: Some(0.1),
        init: None,
        train: TrainConfig {
            epochs: 2,
            batch_size: 32,
            lr: 3e-3,
            seed: 3,
            ..TrainConfig::default()
        },
    }
}

fn kept(m: &[bool]) -> usize {
    m.iter().filter(|v| **v).count()
}

#[test]
fn masks_shrink_by_the_rate_each_round() {
    let g = build(Arch::TinyMlp, 1).unwrap();
    let d = data();
    let s = spec(3, Rewind::Init);
    let out = lottery::run(&g, &g, &d, Some(&d), &s, &Masks::new(), &mut go).unwrap();
    assert_eq!(out.rounds.len(), 4);
    // Per layer: n_{r+1} = n_r − round(rate · n_r); the output layer at its own rate.
    let tg = targets(&g);
    let mut expect: Vec<usize> = tg.iter().map(|t| g.weights[&t.weight].len()).collect();
    for (r, round) in out.rounds.iter().enumerate() {
        assert_eq!(round.round, r);
        assert_eq!(round.kept, expect.iter().sum::<usize>(), "round {r}");
        assert_eq!(round.total, 784 * 32 + 32 * 10);
        assert!(round.accuracy.unwrap() > 0.7, "{round:?}");
        for (i, n) in expect.iter_mut().enumerate() {
            let rate = if i + 1 == tg.len() { 0.1 } else { 0.2 };
            *n -= (rate * *n as f64).round() as usize;
        }
    }
    let last = out.rounds.last().unwrap().kept;
    for t in &tg {
        let m = &out.masks[&t.weight];
        let w = &out.graph.weights[&t.weight];
        assert!(w.iter().zip(m).all(|(v, k)| *k || *v == 0.0));
    }
    assert_eq!(out.masks.values().map(|m| kept(m)).sum::<usize>(), last);
    // Global scope removes rate · alive over all layers together.
    let g2 = LotterySpec {
        scope: Scope::Global,
        rounds: 1,
        output_rate: None,
        ..s.clone()
    };
    let o2 = lottery::run(&g, &g, &d, None, &g2, &Masks::new(), &mut go).unwrap();
    let total = o2.rounds[0].total;
    assert_eq!(
        o2.rounds[1].kept,
        total - (0.2 * total as f64).round() as usize
    );
    assert_eq!(o2.rounds[1].accuracy, None);
    for bad in [0.0, 1.0, -0.5, f32::NAN] {
        let b = LotterySpec {
            rate: bad,
            ..s.clone()
        };
        assert!(lottery::run(&g, &g, &d, None, &b, &Masks::new(), &mut go).is_err());
    }
}

#[test]
fn rewind_restores_the_initial_values_of_survivors() {
    // The lottery starts from `init`, not from the (here: perturbed) weights of the model.
    let init = build(Arch::TinyMlp, 2).unwrap();
    let mut g = init.clone();
    g.weights
        .values_mut()
        .for_each(|w| w.iter_mut().for_each(|v| *v += 0.5));
    let d = data();
    let s = spec(2, Rewind::Init);
    let out = lottery::run(&g, &init, &d, None, &s, &Masks::new(), &mut go).unwrap();
    for (name, w0) in &init.weights {
        let t = &out.ticket.weights[name];
        match out.masks.get(name) {
            Some(m) => {
                assert!(kept(m) < m.len());
                for ((v, v0), k) in t.iter().zip(w0).zip(m) {
                    assert_eq!(*v, if *k { *v0 } else { 0.0 }, "{name}");
                }
            }
            None => assert_eq!(t, w0, "{name}"),
        }
        assert_ne!(&out.graph.weights[name], t, "{name} was trained");
    }
    // The final graph is the ticket trained once more with the final masks.
    let mut again = out.ticket.clone();
    let hooks = Hooks {
        masks: Some(&out.masks),
        ..Hooks::default()
    };
    train_with(&mut again, &d, None, &s.train, hooks, &mut go).unwrap();
    assert_eq!(again.weights, out.graph.weights);
}

#[test]
fn early_rewind_resets_survivors_to_the_weights_after_k_steps() {
    let init = build(Arch::TinyMlp, 3).unwrap();
    let d = data();
    let s = spec(1, Rewind::Step(5));
    let out = lottery::run(&init, &init, &d, None, &s, &Masks::new(), &mut go).unwrap();
    // The same 5 steps, taken independently.
    let mut early = init.clone();
    let mut n = 0;
    let cfg = TrainConfig {
        log_every: 1,
        ..s.train.clone()
    };
    train_with(&mut early, &d, None, &cfg, Hooks::default(), &mut |_| {
        n += 1;
        if n == 5 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_ne!(early.weights, init.weights);
    for (name, we) in &early.weights {
        let t = &out.ticket.weights[name];
        let m = out.masks.get(name);
        for (i, (v, e)) in t.iter().zip(we).enumerate() {
            let keep = m.is_none_or(|m| m[i]);
            assert_eq!(*v, if keep { *e } else { 0.0 }, "{name}[{i}]");
        }
    }
}

#[test]
fn lottery_is_deterministic_and_runs_as_a_recipe_pass() {
    let g = build(Arch::TinyMlp, 4).unwrap();
    let d = data();
    let json = r#"{"passes": [{"pass": "lottery", "rate": 0.5, "rounds": 2,
        "rewind": {"step": 3}, "scope": "global", "epochs": 1, "batch_size": 32, "seed": 5}]}"#;
    let recipe = Recipe::from_json(json).unwrap();
    let PassSpec::Lottery(ls) = &recipe.passes[0] else {
        panic!("{:?}", recipe.passes[0])
    };
    assert_eq!(ls.rewind, Rewind::Step(3));
    assert_eq!((ls.train.epochs, ls.train.seed), (1, 5));
    assert_eq!(
        Recipe::from_json(&recipe.to_json().unwrap()).unwrap(),
        recipe
    );
    let a = recipe.apply(&g, Some(&d), Some(&d), &mut go).unwrap();
    let b = recipe.apply(&g, Some(&d), Some(&d), &mut go).unwrap();
    assert_eq!(a.graph, b.graph);
    assert_eq!(a.lottery, b.lottery);
    assert_eq!(a.masks, b.masks);
    assert_eq!(a.lottery.len(), 3);
    assert!(
        (a.reports[0].sparsity - 0.75).abs() < 1e-3,
        "{}",
        a.reports[0].sparsity
    );
    assert!(a.reports[0].accuracy_after.unwrap() > 0.5);
    // The initial weights come from the zoo metadata; without it an explicit graph is needed.
    let mut bare: Graph = g.clone();
    bare.metadata.remove("lithe.arch");
    let plain = Recipe::from_json(
        r#"{"passes": [{"pass": "lottery", "rate": 0.5, "rounds": 1, "init": "start", "epochs": 1}]}"#,
    )
    .unwrap();
    assert!(recipe.apply(&bare, Some(&d), None, &mut go).is_err());
    assert!(plain.apply(&bare, Some(&d), None, &mut go).is_err());
    let graphs = BTreeMap::from([("start".to_string(), g.clone())]);
    let c = plain
        .apply_with(&bare, Some(&d), None, graphs, &mut go)
        .unwrap();
    assert_eq!(c.lottery.len(), 2);
    assert!(recipe.apply(&g, None, None, &mut go).is_err());
}

/// The full-MNIST lottery figures of docs/COMPRESSION.md: LeNet-300-100 from `zoo::build(_, 1)`,
/// per-layer rate 0.2 (output layer 0.1, as in Frankle & Carbin), `LITHE_ROUNDS` rounds (default
/// 11: ≤ 10 % of the weights left), each training `LITHE_EPOCHS` epochs (default 2) with the zoo
/// config otherwise (Adam 1e-3, cosine, weight decay 1e-4, batch 64, seed 1) on the 55k split.
/// `LITHE_SCOPE=global` ranks all layers together (the output-layer rate then does not apply).
/// `LITHE_REWIND_STEP=k` rewinds to the weights after `k` training steps instead of the init.
/// Round 0 is the dense model trained with the same budget from the same init. The control
/// trains the final mask from a different random init (seed 2).
/// Run: `nice -n 10 cargo test -p lithe --test compress_lottery -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_lenet_300_100_ticket() {
    let root = env!("CARGO_MANIFEST_DIR");
    let full = Dataset::load(format!("{root}/../.data/mnist/train.lmn.gz")).unwrap();
    let (train55, _) = full.split(full.len() / 12, 1);
    let test = Dataset::load(format!("{root}/../www/data/mnist-test.lmn.gz")).unwrap();
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let train = TrainConfig {
        epochs: env("LITHE_EPOCHS", 2),
        ..Arch::Lenet300100.train_config(1)
    };
    let s = LotterySpec {
        rate: 0.2,
        rounds: env("LITHE_ROUNDS", 11),
        rewind: match env("LITHE_REWIND_STEP", 0) {
            0 => Rewind::Init,
            k => Rewind::Step(k),
        },
        scope: match std::env::var("LITHE_SCOPE").as_deref() {
            Ok("global") => Scope::Global,
            _ => Scope::Layer,
        },
        output_rate: Some(0.1),
        init: None,
        train: train.clone(),
    };
    let g = build(Arch::Lenet300100, 1).unwrap();
    let t0 = std::time::Instant::now();
    let out = lottery::run(&g, &g, &train55, Some(&test), &s, &Masks::new(), &mut go).unwrap();
    for r in &out.rounds {
        println!(
            "round {:2}: {:6.2} % of weights, test {:.2} %",
            r.round,
            100.0 * r.kept as f64 / r.total as f64,
            100.0 * r.accuracy.unwrap()
        );
    }
    let mut control = build(Arch::Lenet300100, 2).unwrap();
    let hooks = Hooks {
        masks: Some(&out.masks),
        ..Hooks::default()
    };
    train_with(&mut control, &train55, None, &train, hooks, &mut go).unwrap();
    let acc = lithe::metrics::evaluate(&control, &test, 256)
        .unwrap()
        .accuracy;
    println!(
        "final mask from a random re-init (seed 2): test {:.2} % ({:.0} s in all)",
        100.0 * acc,
        t0.elapsed().as_secs_f32()
    );
}

#[test]
fn shipped_lottery_recipe_is_the_measured_setting() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../recipes/lottery.json");
    let r = Recipe::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let [PassSpec::Lottery(s)] = r.passes.as_slice() else {
        panic!("{:?}", r.passes)
    };
    assert_eq!(
        (s.rate, s.rounds, s.rewind, s.scope),
        (0.2, 11, Rewind::Step(200), Scope::Global)
    );
    assert!(0.8f64.powi(s.rounds as i32) <= 0.1);
    assert_eq!(
        s.train,
        TrainConfig {
            epochs: 6,
            ..Arch::Lenet300100.train_config(1)
        }
    );
}
