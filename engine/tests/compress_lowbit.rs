//! Low-bit quantization (log2, binary, ternary, DoReFa): exact encodings and byte counts, the
//! value sets of each scheme, hostile encodings, the `lowbit` and `qat` passes in recipes,
//! activation calibration, and QAT beating post-training quantization on LeNet-300-100.
//! The full-MNIST table in docs/COMPRESSION.md comes from the `#[ignore]`d `measure_table`.

use lithe::Error;
use lithe::compress::lowbit::{LowBitParams, LowBitTensor, Scheme, calibrate};
use lithe::compress::{PassSpec, Recipe, targets};
use lithe::data::{Dataset, Preprocess};
use lithe::format::onnx;
use lithe::graph::Graph;
use lithe::rng::Rng;
use lithe::tensor::{Tensor, from_vec};
use std::ops::ControlFlow;
use std::path::PathBuf;

fn go(_: &lithe::train::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn model(name: &str) -> Graph {
    let bytes = std::fs::read(root().join(format!("www/models/{name}.onnx"))).expect("zoo model");
    onnx::import(&bytes).unwrap()
}

fn data(name: &str) -> Dataset {
    Dataset::load(root().join(format!("www/data/{name}.lmn.gz"))).expect("dataset")
}

/// A `[6, 5, 3]` tensor of normal values with every 7th element exactly zero (pruned).
fn sample(seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let v = (0..90)
        .map(|i| {
            if i % 7 == 0 {
                0.0
            } else {
                r.normal() * 0.1 * (1 + i % 4) as f32
            }
        })
        .collect();
    from_vec(&[6, 5, 3], v).unwrap()
}

fn params(scheme: Scheme, bits: u8, per_channel: bool) -> LowBitParams {
    LowBitParams {
        scheme,
        bits: Some(bits),
        per_channel,
        stochastic: false,
        seed: 1,
    }
}

/// Every (scheme, bits) the encoder accepts.
fn all_schemes() -> Vec<(Scheme, u8)> {
    let mut v = vec![(Scheme::Binary, 1), (Scheme::Ternary, 2)];
    v.extend((2..=8).map(|b| (Scheme::Log2, b)));
    v.extend((1..=8).map(|b| (Scheme::Dorefa, b)));
    v
}

fn channel_of(i: usize, per_channel: bool) -> usize {
    if per_channel { i / 15 } else { 0 }
}

#[test]
fn encodings_round_trip_bit_exactly_with_exact_byte_counts() {
    let t = sample(3);
    for (scheme, bits) in all_schemes() {
        for per_channel in [false, true] {
            let p = params(scheme, bits, per_channel);
            let q = LowBitTensor::quantize(&t, &p, 0, 0).unwrap();
            assert!(q.codes.iter().all(|&c| (c as u32) < 1 << bits));
            let bytes = q.encode().unwrap();
            let channels = if per_channel { 6 } else { 1 };
            let per = if scheme == Scheme::Log2 { 1 } else { 4 };
            let want = 5 + 12 + per * channels + (90 * bits as usize).div_ceil(8);
            assert_eq!(bytes.len(), want, "{p:?}");
            let back = LowBitTensor::decode_bytes(&bytes).unwrap();
            assert_eq!(back, q);
            assert_eq!(back.encode().unwrap(), bytes);
            let (a, b) = (q.decode().unwrap(), back.decode().unwrap());
            assert!(
                a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            );
            // Quantizing the decoded values again gives the same values (a fixed point).
            let again = LowBitTensor::quantize(&a, &p, 0, 0)
                .unwrap()
                .decode()
                .unwrap();
            if scheme != Scheme::Dorefa {
                assert_eq!(again, a, "{p:?}");
            }
            for cut in 0..bytes.len() {
                assert!(matches!(
                    LowBitTensor::decode_bytes(&bytes[..cut]),
                    Err(Error::Decode { .. })
                ));
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(matches!(
                LowBitTensor::decode_bytes(&long),
                Err(Error::Decode { .. })
            ));
        }
    }
}

#[test]
fn log2_values_are_signed_powers_of_two_and_zeros_stay_zero() {
    let t = sample(4);
    for bits in 2..=8u8 {
        for per_channel in [false, true] {
            let q =
                LowBitTensor::quantize(&t, &params(Scheme::Log2, bits, per_channel), 0, 0).unwrap();
            let d = q.decode().unwrap();
            let levels = (1i32 << (bits - 1)) - 1;
            for (i, (&w, &v)) in t.iter().zip(d.iter()).enumerate() {
                if w == 0.0 {
                    assert_eq!(v.to_bits(), 0, "a pruned weight must stay +0.0");
                }
                if v == 0.0 {
                    continue;
                }
                assert_eq!(v.signum(), w.signum());
                let e_max = q.exponents[channel_of(i, per_channel)] as i32;
                // |v| is 2^k with e_max − levels < k ≤ e_max.
                let k = v.abs().log2();
                assert_eq!(k.fract(), 0.0, "{v}");
                assert_eq!(v.abs(), 2f32.powi(k as i32));
                assert!(
                    k as i32 <= e_max && k as i32 > e_max - levels,
                    "{bits} {k} {e_max}"
                );
                // Within the range, the error is at most a factor √2.
                let r = v.abs() / w.abs();
                if (k as i32) < e_max && (k as i32) > e_max - levels + 1 {
                    assert!((0.707..=1.415).contains(&r), "{w} → {v}");
                }
            }
            // Per channel, the largest magnitude rounds to 2^e_max.
            let ch = if per_channel { 6 } else { 1 };
            for c in 0..ch {
                let m = t
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| channel_of(*i, per_channel) == c)
                    .map(|(_, w)| w.abs())
                    .fold(0f32, f32::max);
                let e = q.exponents[c] as i32;
                assert!(m >= 2f32.powi(e) / 2f32.sqrt() && m < 2f32.powi(e) * 2f32.sqrt());
            }
        }
    }
}

#[test]
fn binary_values_are_plus_minus_alpha_per_channel() {
    let t = sample(5);
    let q = LowBitTensor::quantize(&t, &params(Scheme::Binary, 1, true), 0, 0).unwrap();
    let d = q.decode().unwrap();
    for c in 0..6 {
        let w: Vec<f32> = t.iter().skip(15 * c).take(15).copied().collect();
        let alpha = (w.iter().map(|v| v.abs() as f64).sum::<f64>() / 15.0) as f32;
        assert_eq!(q.scales[c], alpha);
        for (k, &x) in w.iter().enumerate() {
            let v = d.iter().nth(15 * c + k).copied().unwrap();
            // sign(0) = +1: binary has no zero, so a pruned weight becomes +α.
            assert_eq!(v, if x >= 0.0 { alpha } else { -alpha });
        }
    }
    // Stochastic: reproducible from the seed, a different seed differs, and weights with
    // |w| ≥ α keep their sign (probability 1).
    let big = {
        let mut r = Rng::new(9);
        from_vec(&[4, 500], (0..2000).map(|_| r.normal()).collect()).unwrap()
    };
    let sp = |seed| LowBitParams {
        stochastic: true,
        seed,
        ..params(Scheme::Binary, 1, true)
    };
    let a = LowBitTensor::quantize(&big, &sp(1), 0, 0).unwrap();
    assert_eq!(a, LowBitTensor::quantize(&big, &sp(1), 0, 0).unwrap());
    assert_ne!(
        a.codes,
        LowBitTensor::quantize(&big, &sp(2), 0, 0).unwrap().codes
    );
    assert_ne!(
        a.codes,
        LowBitTensor::quantize(&big, &sp(1), 0, 1).unwrap().codes
    );
    let det = LowBitTensor::quantize(&big, &params(Scheme::Binary, 1, true), 0, 0).unwrap();
    assert_eq!(a.scales, det.scales);
    let mut flips = 0;
    for (i, &w) in big.iter().enumerate() {
        let alpha = a.scales[i / 500];
        if w.abs() >= alpha {
            assert_eq!(a.codes[i], u8::from(w > 0.0));
        }
        flips += usize::from(a.codes[i] != det.codes[i]);
    }
    // E[v] = w for |w| < α: the flips are common but not the majority.
    assert!(flips > 100 && flips < 1000, "{flips}");
}

#[test]
fn ternary_has_three_values_with_the_twn_threshold() {
    let t = sample(6);
    for per_channel in [false, true] {
        let q = LowBitTensor::quantize(&t, &params(Scheme::Ternary, 2, per_channel), 0, 0).unwrap();
        let d = q.decode().unwrap();
        let ch = if per_channel { 6 } else { 1 };
        for c in 0..ch {
            let idx: Vec<usize> = (0..90)
                .filter(|&i| channel_of(i, per_channel) == c)
                .collect();
            let w: Vec<f32> = idx.iter().map(|&i| t.as_slice().unwrap()[i]).collect();
            let nz: Vec<f32> = w.iter().filter(|v| **v != 0.0).map(|v| v.abs()).collect();
            let delta = (0.7 * nz.iter().map(|&v| v as f64).sum::<f64>() / nz.len() as f64) as f32;
            let above: Vec<f32> = w.iter().map(|v| v.abs()).filter(|&v| v > delta).collect();
            let alpha = (above.iter().map(|&v| v as f64).sum::<f64>() / above.len() as f64) as f32;
            assert_eq!(q.scales[c], alpha);
            for (&i, &x) in idx.iter().zip(&w) {
                let v = d.as_slice().unwrap()[i];
                let want = if x > delta {
                    alpha
                } else if x < -delta {
                    -alpha
                } else {
                    0.0
                };
                assert_eq!(v, want);
                if x == 0.0 {
                    assert_eq!(v.to_bits(), 0);
                }
            }
        }
    }
}

#[test]
fn dorefa_values_lie_on_the_scaled_grid() {
    let t = sample(7);
    for bits in 1..=8u8 {
        let q = LowBitTensor::quantize(&t, &params(Scheme::Dorefa, bits, true), 0, 0).unwrap();
        let d = q.decode().unwrap();
        let top = ((1u32 << bits) - 1) as f32;
        for (i, (&v, &code)) in d.iter().zip(&q.codes).enumerate() {
            let s = q.scales[i / 15];
            assert_eq!(v, s * (2.0 * code as f32 / top - 1.0));
            // Codes are monotone in w within a channel.
            for j in (i / 15) * 15..(i / 15 + 1) * 15 {
                let (a, b) = (t.as_slice().unwrap()[i], t.as_slice().unwrap()[j]);
                if a < b {
                    assert!(q.codes[i] <= q.codes[j]);
                }
            }
        }
        // The scale is the least-squares fit: the residual is orthogonal to the grid values.
        for c in 0..6 {
            let dot: f64 = (15 * c..15 * c + 15)
                .map(|i| {
                    let g = (d.as_slice().unwrap()[i] / q.scales[c]) as f64;
                    (t.as_slice().unwrap()[i] - d.as_slice().unwrap()[i]) as f64 * g
                })
                .sum();
            assert!(dot.abs() < 1e-5, "{bits} {c} {dot}");
        }
    }
    // One-bit DoReFa is sign times mean|w|: the binary scheme.
    let one = LowBitTensor::quantize(&t, &params(Scheme::Dorefa, 1, true), 0, 0).unwrap();
    let bin = LowBitTensor::quantize(&t, &params(Scheme::Binary, 1, true), 0, 0).unwrap();
    assert_eq!(one.decode().unwrap(), bin.decode().unwrap());
}

#[test]
fn hostile_encodings_are_decode_errors() {
    let t = sample(8);
    let enc = |s, b| {
        LowBitTensor::quantize(&t, &params(s, b, true), 0, 0)
            .unwrap()
            .encode()
            .unwrap()
    };
    let dec = |b: &[u8]| LowBitTensor::decode_bytes(b);
    let is_decode = |r: lithe::Result<LowBitTensor>| matches!(r, Err(Error::Decode { .. }));
    let base = enc(Scheme::Ternary, 2);
    let mut b = base.clone();
    b[0] = 9; // unknown scheme
    assert!(is_decode(dec(&b)));
    let mut b = base.clone();
    b[1] = 3; // ternary takes 2 bits
    assert!(is_decode(dec(&b)));
    let mut b = base.clone();
    b[2] = 2; // unknown flag
    assert!(is_decode(dec(&b)));
    let mut b = base.clone();
    b[3] = 3; // axis ≥ rank
    assert!(is_decode(dec(&b)));
    let mut b = base.clone();
    b[4] = 200; // rank
    assert!(is_decode(dec(&b)));
    // A huge shape is refused before anything of that size is allocated.
    let mut b = base.clone();
    b[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    b[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(is_decode(dec(&b)));
    // A NaN or negative α.
    let mut b = base.clone();
    b[17..21].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(is_decode(dec(&b)));
    let mut b = base.clone();
    b[17..21].copy_from_slice(&(-1.0f32).to_le_bytes());
    assert!(is_decode(dec(&b)));
    // Ternary code 3 does not exist.
    let mut b = base.clone();
    let at = 17 + 24;
    b[at] |= 0b11;
    assert!(is_decode(dec(&b)));
    // Log2 "negative zero" (sign bit with magnitude 0) is not canonical.
    let l = LowBitTensor::quantize(&t, &params(Scheme::Log2, 4, true), 0, 0).unwrap();
    let zero = l.codes.iter().position(|&c| c == 0).unwrap();
    let mut b = l.encode().unwrap();
    let at = 17 + 6 + zero / 2;
    b[at] |= 0b1000 << (4 * (zero % 2));
    assert!(is_decode(dec(&b)));
    // Nonzero padding bits in the last byte (90 elements · 1 bit = 11.25 bytes).
    let mut b = enc(Scheme::Binary, 1);
    *b.last_mut().unwrap() |= 0x80;
    assert!(is_decode(dec(&b)));
    // Every single-byte corruption either decodes to something that re-encodes to the same
    // bytes (the encoding is canonical) or is a decode error; never a panic.
    for (s, bits) in all_schemes() {
        let good = enc(s, bits);
        for i in 0..good.len() {
            for x in [1u8, 0x10, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= x;
                match dec(&b) {
                    Ok(q) => {
                        assert_eq!(q.encode().unwrap(), b);
                        q.decode().unwrap();
                    }
                    Err(e) => assert!(matches!(e, Error::Decode { .. }), "{e}"),
                }
            }
        }
    }
}

#[test]
fn bad_knobs_and_pass_orders_are_errors() {
    let t = sample(1);
    let bad = [
        params(Scheme::Binary, 2, true),
        params(Scheme::Ternary, 1, true),
        params(Scheme::Ternary, 3, true),
        params(Scheme::Log2, 1, true),
        params(Scheme::Log2, 9, true),
        params(Scheme::Dorefa, 0, true),
        params(Scheme::Dorefa, 9, true),
        LowBitParams {
            stochastic: true,
            ..params(Scheme::Log2, 4, true)
        },
    ];
    for p in bad {
        assert!(
            matches!(LowBitTensor::quantize(&t, &p, 0, 0), Err(Error::Invalid(_))),
            "{p:?}"
        );
    }
    assert!(LowBitTensor::quantize(&t, &params(Scheme::Log2, 4, true), 3, 0).is_err());
    let nan = from_vec(&[2], vec![1.0, f32::NAN]).unwrap();
    assert!(LowBitTensor::quantize(&nan, &params(Scheme::Ternary, 2, false), 0, 0).is_err());
    // Inconsistent in-memory fields are refused by encode and decode.
    let mut q = LowBitTensor::quantize(&t, &params(Scheme::Ternary, 2, true), 0, 0).unwrap();
    q.scales.pop();
    assert!(q.encode().is_err() && q.decode().is_err());

    let g = lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 1).unwrap();
    let syn = Dataset::synthetic(64, 1);
    let run =
        |json: &str| Recipe::from_json(json).and_then(|r| r.apply(&g, Some(&syn), None, &mut go));
    let errs = [
        r#"{"passes": [{"pass": "lowbit", "scheme": "binary", "bits": 2}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "ternary", "stochastic": true}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "int3"}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "log2"}, {"pass": "lowbit", "scheme": "log2"}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "log2"}, {"pass": "quantize", "bits": 8, "symmetric": true, "per_channel": true}]}"#,
        r#"{"passes": [{"pass": "quantize", "bits": 8, "symmetric": true, "per_channel": true}, {"pass": "lowbit", "scheme": "log2"}]}"#,
        r#"{"passes": [{"pass": "share", "bits": 4}, {"pass": "lowbit", "scheme": "log2"}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "log2"}, {"pass": "share", "bits": 4}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "log2"}, {"pass": "prune", "by": "global", "ratio": 0.5}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "log2"}, {"pass": "fine_tune"}]}"#,
        r#"{"passes": [{"pass": "lowbit", "scheme": "log2"}, {"pass": "qat", "scheme": "log2"}]}"#,
        r#"{"passes": [{"pass": "qat", "scheme": "linear", "bits": 1}]}"#,
        r#"{"passes": [{"pass": "qat", "scheme": "log2", "symmetric": false}]}"#,
        r#"{"passes": [{"pass": "qat", "scheme": "dorefa", "stochastic": true}]}"#,
        r#"{"passes": [{"pass": "qat", "scheme": "ternary", "bits": 4}]}"#,
    ];
    for j in errs {
        assert!(run(j).is_err(), "{j}");
    }
    // QAT needs training data.
    let r = Recipe::from_json(r#"{"passes": [{"pass": "qat", "scheme": "binary"}]}"#).unwrap();
    assert!(matches!(
        r.apply(&g, None, None, &mut go),
        Err(Error::Invalid(_))
    ));
    // Recipes round-trip through JSON with the training knobs flattened in.
    let j = r#"{"passes": [{"pass": "qat", "scheme": "linear", "bits": 4, "symmetric": false,
        "epochs": 2, "lr": 0.0005, "seed": 7}]}"#;
    let r = Recipe::from_json(j).unwrap();
    let PassSpec::Qat(q) = &r.passes[0] else {
        panic!("{r:?}")
    };
    assert_eq!((q.train.epochs, q.train.seed, q.bits), (2, 7, Some(4)));
    assert!(!q.symmetric && q.per_channel);
    assert_eq!(Recipe::from_json(&r.to_json().unwrap()).unwrap(), r);
}

#[test]
fn lowbit_pass_counts_exact_bytes_keeps_pruned_zeros_and_is_deterministic() {
    let g = lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 1).unwrap();
    let tg = targets(&g);
    for (scheme, has_zero) in [
        ("log2", true),
        ("ternary", true),
        ("binary", false),
        ("dorefa", false),
    ] {
        let json = format!(
            r#"{{"passes": [{{"pass": "prune", "by": "global", "ratio": 0.5}},
                {{"pass": "lowbit", "scheme": "{scheme}", "stochastic": {}, "seed": 3}}]}}"#,
            scheme == "binary"
        );
        let r = Recipe::from_json(&json).unwrap();
        let out = r.apply(&g, None, None, &mut go).unwrap();
        let again = r.apply(&g, None, None, &mut go).unwrap();
        assert_eq!(out.lowbit, again.lowbit, "same recipe, same codes");
        assert_eq!(out.lowbit.len(), tg.len());
        let rep = &out.reports[1];
        assert_eq!(rep.pass, "lowbit");
        let mut coded = 0;
        for (l, t) in rep.layers.iter().zip(&tg) {
            let q = &out.lowbit[&t.weight];
            assert_eq!(l.bytes_after, q.encode().unwrap().len());
            assert!(l.encoding.starts_with(scheme), "{}", l.encoding);
            assert_eq!(l.bits, q.bits);
            coded += l.bytes_after;
            assert_eq!(&q.decode().unwrap(), &out.graph.weights[&t.weight]);
            let mask = &out.masks[&t.weight];
            let w = &out.graph.weights[&t.weight];
            if has_zero {
                assert!(w.iter().zip(mask).all(|(v, keep)| *keep || *v == 0.0));
            }
        }
        // The model's bytes: coded targets plus the dense biases as before.
        let biases: usize =
            rep.bytes_before - rep.layers.iter().map(|l| l.bytes_before).sum::<usize>();
        assert_eq!(rep.bytes_after, coded + biases);
    }
    let stoch = |seed: u64| {
        Recipe::from_json(&format!(
            r#"{{"passes": [{{"pass": "lowbit", "scheme": "binary", "stochastic": true, "seed": {seed}}}]}}"#
        ))
        .unwrap()
        .apply(&g, None, None, &mut go)
        .unwrap()
        .lowbit
    };
    assert_ne!(stoch(1), stoch(2));
}

#[test]
fn calibration_ranges_cover_the_inputs_of_every_gemm() {
    let g = lithe::zoo::build(lithe::zoo::Arch::Lenet300100, 1).unwrap();
    let d = Dataset::synthetic(300, 2);
    let few = calibrate(&g, &d, 10).unwrap();
    let many = calibrate(&g, &d, 1000).unwrap();
    assert_eq!(
        few.keys().cloned().collect::<Vec<_>>(),
        vec!["fc1".to_string(), "fc2".into(), "fc3".into()]
    );
    for (k, (lo, hi)) in &few {
        let (lo2, hi2) = many[k];
        assert!(lo2 <= *lo && hi2 >= *hi && lo <= hi, "{k}");
    }
    // fc1 reads the preprocessed pixels; fc2 and fc3 read ReLU outputs.
    let pre = Preprocess::from_metadata(&g.metadata).unwrap_or_default();
    let (x, _) = d.batch(&(0..10).collect::<Vec<_>>(), &pre);
    let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(few["fc1"], (lo, hi));
    assert!(few["fc2"].0 >= 0.0 && few["fc2"].1 > 0.0);
    assert!(calibrate(&g, &d, 0).is_err());
    let c = calibrate(&model("lenet-5"), &d, 20).unwrap();
    assert_eq!(c.len(), 4, "{c:?}");
}

#[test]
fn shipped_recipes_parse_and_run() {
    let g = lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 1).unwrap();
    let syn = Dataset::synthetic(128, 4);
    for (file, scheme, bits) in [("binary", Scheme::Binary, 1), ("log2", Scheme::Log2, 4)] {
        let json = std::fs::read_to_string(root().join(format!("recipes/{file}.json"))).unwrap();
        let out = Recipe::from_json(&json)
            .unwrap()
            .apply(&g, Some(&syn), None, &mut go)
            .unwrap();
        assert_eq!(out.lowbit.len(), targets(&g).len(), "{file}");
        assert!(
            out.lowbit
                .values()
                .all(|q| q.scheme == scheme && q.bits == bits)
        );
        assert_eq!(out.finetune.len(), 1);
        assert!(out.reports[0].bytes_after < out.reports[0].bytes_before / 7);
    }
}

/// Test accuracy of `g` on `test`.
fn acc(g: &Graph, test: &Dataset) -> f32 {
    lithe::metrics::evaluate(g, test, 256).unwrap().accuracy
}

#[test]
fn qat_beats_post_training_quantization_on_lenet_300_100() {
    let g = model("lenet-300-100");
    let train = data("mnist-train-6k");
    let test = data("mnist-test").take(2000);
    for (ptq, qat) in [
        (
            r#"{"pass": "lowbit", "scheme": "binary"}"#,
            r#"{"pass": "qat", "scheme": "binary", "epochs": 1, "lr": 0.0005, "seed": 2}"#,
        ),
        (
            r#"{"pass": "quantize", "bits": 2, "symmetric": true, "per_channel": true}"#,
            r#"{"pass": "qat", "scheme": "linear", "bits": 2, "epochs": 1, "lr": 0.0005, "seed": 2}"#,
        ),
    ] {
        let run = |p: &str| {
            Recipe::from_json(&format!(r#"{{"passes": [{p}]}}"#))
                .unwrap()
                .apply(&g, Some(&train), None, &mut go)
                .unwrap()
        };
        let (a, b) = (run(ptq), run(qat));
        // Same scheme, same bits, same bytes.
        assert_eq!(a.reports[0].bytes_after, b.reports[0].bytes_after);
        let (pa, qa) = (acc(&a.graph, &test), acc(&b.graph, &test));
        eprintln!("{ptq}: {pa:.4}; {qat}: {qa:.4}");
        assert!(qa > pa + 0.05 && qa > 0.9, "PTQ {pa} vs QAT {qa}");
        // Deterministic: the same recipe gives the same codes.
        let c = run(qat);
        assert_eq!(c.lowbit, b.lowbit);
        assert_eq!(c.quantized, b.quantized);
    }
}

#[test]
fn qat_with_binary_and_dorefa_activations_trains_and_exports() {
    let g = model("lenet-300-100");
    let train = data("mnist-train-6k");
    let test = data("mnist-test").take(2000);
    let float = acc(&g, &test);
    let ops = |g: &Graph, op: &str| g.nodes.iter().filter(|n| n.op.name() == op).count();
    for (recipe, min_acc) in [
        (
            r#"{"pass": "qat", "scheme": "binary", "activations": {"scheme": "binary"},
                "epochs": 1, "lr": 0.001, "seed": 3}"#,
            0.86,
        ),
        (
            r#"{"pass": "qat", "scheme": "dorefa", "bits": 2,
                "activations": {"scheme": "dorefa", "bits": 2}, "epochs": 1, "lr": 0.0005, "seed": 3}"#,
            0.88,
        ),
    ] {
        let run = || {
            Recipe::from_json(&format!(r#"{{"passes": [{recipe}]}}"#))
                .unwrap()
                .apply(&g, Some(&train), None, &mut go)
                .unwrap()
        };
        let c = run();
        let q = &c.graph;
        let binary = recipe.contains(r#""activations": {"scheme": "binary"}"#);
        if binary {
            // Both hidden ReLUs became signs; the first layer still sees the image.
            assert_eq!((ops(q, "Relu"), ops(q, "Sign")), (0, 2), "{recipe}");
        } else {
            assert_eq!((ops(q, "Relu"), ops(q, "Round"), ops(q, "Clip")), (2, 2, 2));
        }
        // The inputs of the hidden layers take only the quantized values.
        let mut probe = q.clone();
        probe.outputs = q
            .nodes
            .iter()
            .filter(|n| n.op.name() == "Gemm")
            .skip(1)
            .map(|n| n.inputs[0].clone())
            .collect();
        let (x, _) = test
            .take(64)
            .batch(&(0..64).collect::<Vec<_>>(), &Preprocess::default());
        for v in lithe::exec::run(&probe, &[(probe.inputs[0].name.as_str(), &x)]).unwrap() {
            let mut levels: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
            levels.sort_unstable();
            levels.dedup();
            assert!(levels.len() <= if binary { 3 } else { 4 }, "{levels:?}");
        }
        let a = acc(q, &test);
        eprintln!("{recipe}: {a:.4} (float {float:.4})");
        assert!(a > min_acc, "{recipe}: {a}");
        // Exports to ONNX with standard ops and comes back with the same outputs.
        let back = onnx::import(&onnx::export(q).unwrap()).unwrap();
        let name = q.inputs[0].name.as_str();
        assert_eq!(
            lithe::exec::run(q, &[(name, &x)]).unwrap(),
            lithe::exec::run(&back, &[(name, &x)]).unwrap()
        );
        // Deterministic.
        assert_eq!(run().graph.weights, c.graph.weights);
    }
    // Bad activation knobs are errors, not panics.
    for bad in [
        r#"{"scheme": "dorefa", "bits": 0}"#,
        r#"{"scheme": "dorefa", "bits": 2, "range": -1}"#,
        r#"{"scheme": "ternary"}"#,
    ] {
        let r = Recipe::from_json(&format!(
            r#"{{"passes": [{{"pass": "qat", "scheme": "binary", "activations": {bad}}}]}}"#
        ))
        .and_then(|r| r.apply(&g, Some(&train.take(64)), None, &mut go));
        assert!(r.is_err(), "{bad}");
    }
}

/// The PTQ-vs-QAT table of docs/COMPRESSION.md: full 10k test set, QAT 1 epoch. Models from
/// `LOWBIT_MODELS` (default `lenet-300-100,lenet-5`); training set from `LOWBIT_TRAIN`: `55k`
/// (the zoo's split of `.data/mnist/train.lmn.gz`, seed 1) or `6k` (default). `LOWBIT_ROWS`
/// (comma-separated labels, e.g. `binary`) limits the rows.
#[test]
#[ignore]
fn measure_table() {
    let models = std::env::var("LOWBIT_MODELS").unwrap_or("lenet-300-100,lenet-5".into());
    let which = std::env::var("LOWBIT_TRAIN").unwrap_or("6k".into());
    let train = if which == "55k" {
        let full = Dataset::load(root().join(".data/mnist/train.lmn.gz")).expect("60k set");
        full.split(full.len() / 12, 1).0
    } else {
        data("mnist-train-6k")
    };
    let test = data("mnist-test");
    let lr = std::env::var("LOWBIT_LR").unwrap_or("0.0005".into());
    let rows: [(&str, String, String); 10] = [
        (
            "binary",
            r#"{"pass": "lowbit", "scheme": "binary"}"#.into(),
            format!(r#"{{"pass": "qat", "scheme": "binary", "lr": {lr}, "seed": 1}}"#),
        ),
        (
            "ternary",
            r#"{"pass": "lowbit", "scheme": "ternary"}"#.into(),
            format!(r#"{{"pass": "qat", "scheme": "ternary", "lr": {lr}, "seed": 1}}"#),
        ),
        (
            "log2 4-bit",
            r#"{"pass": "lowbit", "scheme": "log2", "bits": 4}"#.into(),
            format!(r#"{{"pass": "qat", "scheme": "log2", "bits": 4, "lr": {lr}, "seed": 1}}"#),
        ),
        (
            "DoReFa 2-bit",
            r#"{"pass": "lowbit", "scheme": "dorefa", "bits": 2}"#.into(),
            format!(r#"{{"pass": "qat", "scheme": "dorefa", "bits": 2, "lr": {lr}, "seed": 1}}"#),
        ),
        (
            "DoReFa 4-bit",
            r#"{"pass": "lowbit", "scheme": "dorefa", "bits": 4}"#.into(),
            format!(r#"{{"pass": "qat", "scheme": "dorefa", "bits": 4, "lr": {lr}, "seed": 1}}"#),
        ),
        (
            "linear 4-bit sym",
            r#"{"pass": "quantize", "bits": 4, "symmetric": true, "per_channel": true}"#.into(),
            format!(r#"{{"pass": "qat", "scheme": "linear", "bits": 4, "lr": {lr}, "seed": 1}}"#),
        ),
        (
            "linear 2-bit sym",
            r#"{"pass": "quantize", "bits": 2, "symmetric": true, "per_channel": true}"#.into(),
            format!(r#"{{"pass": "qat", "scheme": "linear", "bits": 2, "lr": {lr}, "seed": 1}}"#),
        ),
        // Weights and activations (the PTQ column is weights only).
        (
            "binary W+A",
            r#"{"pass": "lowbit", "scheme": "binary"}"#.into(),
            format!(
                r#"{{"pass": "qat", "scheme": "binary", "activations": {{"scheme": "binary"}}, "lr": {lr}, "seed": 1}}"#
            ),
        ),
        (
            "DoReFa W2A2",
            r#"{"pass": "lowbit", "scheme": "dorefa", "bits": 2}"#.into(),
            format!(
                r#"{{"pass": "qat", "scheme": "dorefa", "bits": 2, "activations": {{"scheme": "dorefa", "bits": 2}}, "lr": {lr}, "seed": 1}}"#
            ),
        ),
        (
            "DoReFa W4A4",
            r#"{"pass": "lowbit", "scheme": "dorefa", "bits": 4}"#.into(),
            format!(
                r#"{{"pass": "qat", "scheme": "dorefa", "bits": 4, "activations": {{"scheme": "dorefa", "bits": 4}}, "lr": {lr}, "seed": 1}}"#
            ),
        ),
    ];
    for name in models.split(',') {
        let g = model(name);
        let t0 = std::time::Instant::now();
        let float_bytes =
            Recipe::from_json(r#"{"passes": [{"pass": "lowbit", "scheme": "binary"}]}"#)
                .unwrap()
                .apply(&g, None, None, &mut go)
                .unwrap()
                .reports[0]
                .bytes_before;
        println!(
            "| {name} float | {:.2} % | | {float_bytes} |",
            100.0 * acc(&g, &test)
        );
        let only = std::env::var("LOWBIT_ROWS").ok();
        for (label, ptq, qat) in &rows {
            if only
                .as_ref()
                .is_some_and(|o| !o.split(',').any(|r| r == *label))
            {
                continue;
            }
            let run = |p: &str| {
                Recipe::from_json(&format!(r#"{{"passes": [{p}]}}"#))
                    .unwrap()
                    .apply(&g, Some(&train), None, &mut go)
                    .unwrap()
            };
            let (a, b) = (run(ptq), run(qat));
            println!(
                "| {name} {label} | {:.2} % | {:.2} % | {} | ({:.0} s)",
                100.0 * acc(&a.graph, &test),
                100.0 * acc(&b.graph, &test),
                b.reports[0].bytes_after,
                t0.elapsed().as_secs_f32()
            );
            if !qat.contains("activations") {
                assert_eq!(a.reports[0].bytes_after, b.reports[0].bytes_after);
            }
        }
    }
}
