//! The masked training hook and pass ordering rules, on the tiny zoo MLP and synthetic data.

use lithe::compress::prune::PruneSpec;
use lithe::compress::quantize::QuantParams;
use lithe::compress::{PassSpec, Recipe, targets};
use lithe::data::Dataset;
use lithe::train::{CrossEntropy, Hooks, Masks, TrainConfig, train, train_masked, train_with};
use lithe::zoo::{Arch, build};
use std::ops::ControlFlow;

fn go(_: &lithe::train::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn cfg() -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: 32,
        ..TrainConfig::default()
    }
}

#[test]
fn train_masked_with_no_masks_is_train_bit_for_bit() {
    let data = Dataset::synthetic(128, 5);
    let mut a = build(Arch::TinyMlp, 2).unwrap();
    let mut b = a.clone();
    let sa = train(&mut a, &data, None, &cfg(), &mut go).unwrap();
    let sb = train_masked(&mut b, &data, None, &cfg(), &Masks::new(), &mut go).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(a.weights, b.weights);
}

#[test]
fn hooks_identity_view_and_explicit_cross_entropy_are_train_bit_for_bit() {
    let data = Dataset::synthetic(128, 5);
    let mut a = build(Arch::TinyMlp, 2).unwrap();
    let mut b = a.clone();
    let sa = train(&mut a, &data, None, &cfg(), &mut go).unwrap();
    let view = |_: &str, w: &lithe::tensor::Tensor| Ok(Some(w.clone()));
    let mut ce = CrossEntropy;
    let hooks = Hooks {
        objective: Some(&mut ce),
        forward_weights: Some(&view),
        ..Hooks::default()
    };
    let sb = train_with(&mut b, &data, None, &cfg(), hooks, &mut go).unwrap();
    assert_eq!(sa, sb);
    assert_eq!(a.weights, b.weights);
}

#[test]
fn a_view_that_changes_a_shape_is_an_error() {
    let data = Dataset::synthetic(32, 5);
    let mut g = build(Arch::TinyMlp, 2).unwrap();
    let view = |_: &str, _: &lithe::tensor::Tensor| Ok(Some(lithe::tensor::zeros(&[1])));
    let hooks = Hooks {
        forward_weights: Some(&view),
        ..Hooks::default()
    };
    let e = train_with(&mut g, &data, None, &cfg(), hooks, &mut go).unwrap_err();
    assert!(e.to_string().contains("changed its shape"), "{e}");
}

#[test]
fn masked_weights_stay_zero_and_bad_masks_are_errors() {
    let data = Dataset::synthetic(128, 5);
    let mut g = build(Arch::TinyMlp, 2).unwrap();
    let mut masks = Masks::new();
    for t in targets(&g) {
        let n = g.weights[&t.weight].len();
        masks.insert(t.weight.clone(), (0..n).map(|i| i % 3 == 0).collect());
    }
    let before = g.clone();
    train_masked(&mut g, &data, None, &cfg(), &masks, &mut go).unwrap();
    for (name, m) in &masks {
        let (w, w0) = (&g.weights[name], &before.weights[name]);
        assert!(w.iter().zip(m).all(|(v, k)| *k || *v == 0.0));
        assert!(w.iter().zip(w0).zip(m).any(|((a, b), k)| *k && a != b));
    }
    let mut wrong = masks.clone();
    if let Some(m) = wrong.values_mut().next() {
        m.pop();
    }
    assert!(train_masked(&mut g, &data, None, &cfg(), &wrong, &mut go).is_err());
    let unknown = Masks::from([("nope".to_string(), vec![true])]);
    assert!(train_masked(&mut g, &data, None, &cfg(), &unknown, &mut go).is_err());
}

#[test]
fn pass_order_rules_and_prune_then_quantize() {
    let g = build(Arch::TinyMlp, 2).unwrap();
    let data = Dataset::synthetic(64, 5);
    let prune = PassSpec::Prune(PruneSpec::Global { ratio: 0.5 });
    let quant = PassSpec::Quantize(QuantParams {
        bits: 4,
        symmetric: false,
        per_channel: true,
    });
    let tune = PassSpec::FineTune(cfg());
    // Pruned weights stay exactly zero through quantization.
    let out = Recipe {
        passes: vec![prune.clone(), quant.clone()],
    }
    .apply(&g, None, None, &mut go)
    .unwrap();
    // (Quantization may round a few more small weights to zero, never fewer.)
    assert!(out.reports[1].sparsity >= out.reports[0].sparsity);
    for (name, m) in &out.masks {
        let d = out.quantized[name].dequantize().unwrap();
        assert_eq!(&d, &out.graph.weights[name]);
        assert!(d.iter().zip(m).all(|(v, k)| *k || *v == 0.0));
    }
    // Fine-tuning needs data, and must come before quantization; so must pruning.
    let r = |p: Vec<PassSpec>| Recipe { passes: p }.apply(&g, Some(&data), None, &mut go);
    assert!(
        Recipe {
            passes: vec![tune.clone()]
        }
        .apply(&g, None, None, &mut go)
        .is_err()
    );
    assert!(r(vec![quant.clone(), tune.clone()]).is_err());
    assert!(r(vec![quant.clone(), prune.clone()]).is_err());
    assert!(r(vec![prune.clone(), tune, quant]).is_ok());
    // Cancelling fine-tuning is reported as such.
    let e = Recipe {
        passes: vec![PassSpec::FineTune(TrainConfig {
            log_every: 1,
            ..cfg()
        })],
    }
    .apply(&g, Some(&data), None, &mut |_| ControlFlow::Break(()))
    .unwrap_err();
    assert_eq!(e.code(), "cancelled");
    // A mask in the context that does not fit its weight is an error, not a panic.
    let mut noop = go;
    let mut ctx = lithe::compress::PassCtx::new(None, &mut noop);
    let w = targets(&g)[0].weight.clone();
    ctx.masks.insert(w, vec![true; 3]);
    let mut g2 = g.clone();
    assert!(prune.apply(&mut g2, &mut ctx).is_err());
    // Symmetric 1-bit is refused with a clear error.
    let one = Recipe {
        passes: vec![PassSpec::Quantize(QuantParams {
            bits: 1,
            symmetric: true,
            per_channel: false,
        })],
    };
    assert_eq!(
        one.apply(&g, None, None, &mut go).unwrap_err().code(),
        "invalid"
    );
}
