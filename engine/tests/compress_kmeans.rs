//! Weight sharing (k-means) and Huffman coding: hand cases, round-trip properties over random
//! and skewed streams, corrupt input, the `share` pass in a recipe, and the LeNet-300-100
//! stage table P → P+Q → P+Q+H (figures in docs/COMPRESSION.md).

use lithe::compress::huffman;
use lithe::compress::kmeans::{Coding, ShareParams, ShareTune, SharedTensor, gaps};
use lithe::compress::{PassSpec, Recipe, targets};
use lithe::data::Dataset;
use lithe::format::{lithe as container, onnx};
use lithe::rng::Rng;
use lithe::tensor::from_vec;
use std::ops::ControlFlow;
use std::path::PathBuf;

fn go(_: &lithe::train::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn kmeans_hand_case_linear_init_and_lloyd() {
    // Two obvious clusters around -1 and +2, and pruned elements in between.
    let w = from_vec(&[2, 4], vec![-1.1, -0.9, 0.0, 2.1, 1.9, 5.0, -1.0, 2.0]).unwrap();
    let mask = [true, true, true, true, true, false, true, true];
    let s = SharedTensor::share(
        &w,
        Some(&mask),
        ShareParams {
            bits: 1,
            iterations: 20,
            conv_bits: None,
        },
    )
    .unwrap();
    // The masked 5.0 and the zero are not clustered: init over [-1.1, 2.1].
    assert_eq!(
        s.mask,
        vec![true, true, false, true, true, false, true, true]
    );
    assert!((s.codebook[0] - -1.0).abs() < 1e-6, "{:?}", s.codebook);
    assert!((s.codebook[1] - 2.0).abs() < 1e-6, "{:?}", s.codebook);
    let d = s.decode().unwrap();
    assert_eq!(d[[0, 2]], 0.0);
    assert_eq!(d[[1, 1]], 0.0);
    assert_eq!(d[[0, 0]], s.codebook[0]);
    assert_eq!(d[[0, 3]], s.codebook[1]);
    // Deterministic.
    let again = SharedTensor::share(
        &w,
        Some(&mask),
        ShareParams {
            bits: 1,
            iterations: 20,
            conv_bits: None,
        },
    )
    .unwrap();
    assert_eq!(again, s);
    // Bad knobs and masks are errors.
    let p0 = ShareParams {
        bits: 0,
        iterations: 1,
        conv_bits: None,
    };
    assert!(SharedTensor::share(&w, None, p0).is_err());
    let p9 = ShareParams {
        bits: 9,
        iterations: 1,
        conv_bits: None,
    };
    assert!(SharedTensor::share(&w, None, p9).is_err());
    let p2 = ShareParams {
        bits: 2,
        iterations: 1,
        conv_bits: None,
    };
    assert!(SharedTensor::share(&w, Some(&[true; 3]), p2).is_err());
}

#[test]
fn kmeans_reduces_error_and_uses_at_most_2_pow_bits_values() {
    let mut rng = Rng::new(5);
    let v: Vec<f32> = (0..3000).map(|_| rng.normal()).collect();
    let w = from_vec(&[30, 100], v.clone()).unwrap();
    let mut last = f64::INFINITY;
    for bits in 1..=8u8 {
        let s = SharedTensor::share(
            &w,
            None,
            ShareParams {
                bits,
                iterations: 30,
                conv_bits: None,
            },
        )
        .unwrap();
        let d = s.decode().unwrap();
        let mut distinct: Vec<u32> = d.iter().map(|x| x.to_bits()).collect();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() <= 1 << bits);
        let err: f64 = d
            .iter()
            .zip(&v)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        assert!(err < last, "bits {bits}: {err} !< {last}");
        last = err;
    }
}

#[test]
fn centroid_fine_tuning_sums_gradients_per_cluster() {
    let mut s = SharedTensor {
        codebook: vec![-1.0, 1.0],
        indices: vec![0, 1, 1, 0, 0],
        shape: vec![5],
        mask: vec![true, true, true, false, true],
    };
    let g = from_vec(&[5], vec![0.5, 0.25, -1.0, 100.0, 0.5]).unwrap();
    s.finetune_codebook(&g, 0.1).unwrap();
    // Cluster 0: 0.5 + 0.5 (element 3 is pruned) → -1 - 0.1; cluster 1: 0.25 - 1 → 1 + 0.075.
    assert!((s.codebook[0] - -1.1).abs() < 1e-6);
    assert!((s.codebook[1] - 1.075).abs() < 1e-6);
    assert_eq!(s.decode().unwrap()[3], 0.0);
    let wrong = from_vec(&[4], vec![0.0; 4]).unwrap();
    assert!(s.finetune_codebook(&wrong, 0.1).is_err());
}

fn roundtrip(symbols: &[u8], alphabet: usize) -> usize {
    let bytes = huffman::encode(symbols, alphabet).unwrap();
    assert_eq!(
        huffman::decode(&bytes, alphabet, symbols.len()).unwrap(),
        symbols
    );
    // Truncation anywhere is an error, never a panic.
    for cut in 0..bytes.len() {
        assert!(huffman::decode(&bytes[..cut], alphabet, symbols.len()).is_err());
    }
    bytes.len()
}

#[test]
fn huffman_round_trips_random_skewed_single_and_empty_streams() {
    assert_eq!(roundtrip(&[], 4), 4);
    assert_eq!(roundtrip(&[3; 100], 4), 4 + 2 + 4 + 13);
    roundtrip(&[0], 1);
    roundtrip(&[7], 256);
    let mut rng = Rng::new(11);
    for case in 0..60 {
        let alphabet = 1 + rng.below(256);
        let n = rng.below(2000);
        let skew = case % 3;
        let syms: Vec<u8> = (0..n)
            .map(|_| match skew {
                0 => rng.below(alphabet) as u8,
                // Geometric: most mass on a few symbols.
                1 => {
                    let mut s = 0;
                    while s + 1 < alphabet && rng.uniform() < 0.5 {
                        s += 1;
                    }
                    s as u8
                }
                // Exponentially skewed (forces length limiting with large alphabets).
                _ => {
                    let mut s = 0;
                    while s + 1 < alphabet && rng.uniform() < 0.9 {
                        s += 1;
                    }
                    (alphabet - 1 - s) as u8
                }
            })
            .collect();
        let len = roundtrip(&syms, alphabet);
        if skew == 1 && n > 500 && alphabet > 8 {
            // Entropy ≈ 2 bits per symbol: well under the fixed 8-bit width.
            assert!(len < n / 2 + 200, "{len} bytes for {n} symbols");
        }
    }
    // Fibonacci counts give the deepest trees; the length limit keeps codes ≤ 15 bits.
    let mut syms = Vec::new();
    let (mut a, mut b) = (1usize, 1usize);
    for s in 0..25u8 {
        syms.extend(std::iter::repeat_n(s, a));
        (a, b) = (b, a + b);
    }
    roundtrip(&syms[..syms.len().min(200_000)], 25);
    let lens = huffman::code_lengths(&[
        1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765,
    ]);
    assert!(lens.iter().all(|&l| l <= huffman::MAX_CODE_LEN));
}

#[test]
fn huffman_rejects_corrupt_streams() {
    let syms: Vec<u8> = (0..500u32).map(|i| (i * i % 7) as u8).collect();
    let bytes = huffman::encode(&syms, 8).unwrap();
    // More symbols than the caller allows.
    assert!(huffman::decode(&bytes, 8, 499).is_err());
    // Symbol outside the alphabet on encode; bad alphabets.
    assert!(huffman::encode(&[9], 8).is_err());
    assert!(huffman::encode(&[0], 0).is_err());
    assert!(huffman::encode(&[0], 257).is_err());
    // Trailing bytes.
    let mut long = bytes.clone();
    long.push(0);
    assert!(huffman::decode(&long, 8, 500).is_err());
    // Over-subscribed table: every length 1.
    let mut over = bytes.clone();
    over[4..8].fill(0x11);
    assert!(huffman::decode(&over, 8, 500).is_err());
    // A huge declared count with a tiny payload is refused before allocating.
    let mut huge = bytes.clone();
    huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(huffman::decode(&huge, 8, usize::MAX).is_err());
    // Every single-byte flip decodes or errors; none panics.
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let _ = huffman::decode(&b, 8, 500);
        }
    }
}

#[test]
fn gap_stream_uses_fillers_past_the_index_width() {
    // Kept at 0, 1, 9 and 10 of 24; 2-bit gaps: M = 3 is the filler.
    let mut mask = vec![false; 24];
    for i in [0, 1, 9, 10] {
        mask[i] = true;
    }
    // 0 | 0 | skip 7 = 3 + 3 + gap 1 | 0 | trailing 13 = 4 fillers (1 left).
    assert_eq!(gaps(&mask, 2), vec![0, 0, 3, 3, 1, 0, 3, 3, 3, 3]);
    let s = SharedTensor {
        codebook: vec![0.5, -0.5, 0.25, 1.5],
        indices: (0..24)
            .map(|i| if mask[i] { (i % 4) as u8 } else { 0 })
            .collect(),
        shape: vec![4, 6],
        mask,
    };
    for coding in [Coding::Fixed, Coding::Huffman] {
        for gb in 1..=8 {
            let (bytes, sizes) = s.encode_with(coding, gb).unwrap();
            assert_eq!(sizes.total(), bytes.len());
            assert_eq!(SharedTensor::decode_bytes(&bytes).unwrap(), s);
            for cut in 0..bytes.len() {
                assert!(SharedTensor::decode_bytes(&bytes[..cut]).is_err());
            }
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0x5a;
                let _ = SharedTensor::decode_bytes(&b);
            }
        }
    }
}

#[test]
fn share_pass_in_a_recipe() {
    let g = lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 1).unwrap();
    let recipe = Recipe::from_json(
        r#"{"passes": [
            {"pass": "prune", "by": "global", "ratio": 0.8},
            {"pass": "share", "bits": 4}
        ]}"#,
    )
    .unwrap();
    assert_eq!(
        recipe.passes[1],
        PassSpec::Share(ShareParams {
            bits: 4,
            iterations: 50,
            conv_bits: None,
        })
    );
    let out = recipe.apply(&g, None, None, &mut go).unwrap();
    let r = &out.reports[1];
    assert_eq!(r.pass, "share");
    for t in targets(&out.graph) {
        let s = &out.shared[&t.weight];
        let w = &out.graph.weights[&t.weight];
        assert_eq!(&s.decode().unwrap(), w);
        // Pruned weights stay zero.
        assert!(
            w.iter()
                .zip(&out.masks[&t.weight])
                .all(|(v, k)| *k || *v == 0.0)
        );
        let l = r.layers.iter().find(|l| l.name == t.weight).unwrap();
        assert_eq!(l.bits, 4);
        assert_eq!(l.bytes_after, s.encode(Coding::Huffman).unwrap().0.len());
        assert!(l.bytes_after < l.bytes_before);
    }
    // Order rules.
    for bad in [
        r#"{"passes": [{"pass": "share", "bits": 4}, {"pass": "prune", "by": "global", "ratio": 0.5}]}"#,
        r#"{"passes": [{"pass": "share", "bits": 4}, {"pass": "share", "bits": 4}]}"#,
        r#"{"passes": [{"pass": "share", "bits": 4}, {"pass": "quantize", "bits": 8, "symmetric": true, "per_channel": true}]}"#,
        r#"{"passes": [{"pass": "share", "bits": 0}]}"#,
        r#"{"passes": [{"pass": "share_fine_tune", "epochs": 1}]}"#,
        r#"{"passes": [{"pass": "share", "bits": 4}, {"pass": "share_fine_tune", "epochs": 1}]}"#,
        r#"{"passes": [{"pass": "share", "bits": 4}, {"pass": "fine_tune", "epochs": 1}]}"#,
    ] {
        let r = Recipe::from_json(bad).unwrap();
        assert!(r.apply(&g, None, None, &mut go).is_err(), "{bad}");
    }
}

#[test]
fn share_fine_tune_moves_only_centroids_and_keeps_zeros() {
    let g = lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 1).unwrap();
    let data = Dataset::synthetic(256, 7);
    let recipe = Recipe::from_json(
        r#"{"passes": [
            {"pass": "prune", "by": "global", "ratio": 0.7},
            {"pass": "share", "bits": 3},
            {"pass": "share_fine_tune", "epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 5}
        ]}"#,
    )
    .unwrap();
    let before = Recipe {
        passes: recipe.passes[..2].to_vec(),
    }
    .apply(&g, None, None, &mut go)
    .unwrap();
    let out = recipe.apply(&g, Some(&data), Some(&data), &mut go).unwrap();
    assert_eq!(out.reports[2].pass, "share_fine_tune");
    for (name, s) in &out.shared {
        let b = &before.shared[name];
        assert_eq!(s.indices, b.indices);
        assert_eq!(s.mask, b.mask);
        assert_ne!(s.codebook, b.codebook, "{name}: centroids must move");
        assert_eq!(&s.decode().unwrap(), &out.graph.weights[name]);
    }
    // Same seed, same bytes; cancellation is an error.
    let again = recipe.apply(&g, Some(&data), None, &mut go).unwrap();
    assert_eq!(again.shared, out.shared);
    let mut stop = |_: &lithe::train::Progress| ControlFlow::Break(());
    assert!(matches!(
        recipe.apply(&g, Some(&data), None, &mut stop),
        Err(lithe::Error::Cancelled)
    ));
}

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Deep Compression on LeNet-300-100: prune 92 % → masked fine-tune on the 6k subset →
/// k-means sharing → Huffman, with the stage table printed (run with `--nocapture`).
#[test]
fn lenet_deep_compression_stage_table() {
    let file = std::fs::read(root().join("www/models/lenet-300-100.onnx")).unwrap();
    let g = onnx::import(&file).unwrap();
    let test = Dataset::load(root().join("www/data/mnist-test.lmn.gz")).unwrap();
    let train = Dataset::load(root().join("www/data/mnist-train-6k.lmn.gz")).unwrap();
    let bits: u8 = std::env::var("LITHE_SHARE_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let epochs: usize = std::env::var("LITHE_FT_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let ctune: usize = std::env::var("LITHE_CT_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let clr: f32 = std::env::var("LITHE_CT_LR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1e-3);
    let mut recipe = Recipe::from_json(&format!(
        r#"{{"passes": [
            {{"pass": "prune", "by": "global", "ratio": 0.92}},
            {{"pass": "fine_tune", "epochs": {epochs}, "batch_size": 32, "lr": 0.0005, "seed": 3}},
            {{"pass": "share", "bits": {bits}}}
        ]}}"#
    ))
    .unwrap();
    if ctune > 0 {
        recipe.passes.push(PassSpec::ShareFineTune(ShareTune {
            epochs: ctune,
            batch_size: 32,
            lr: clr,
            seed: 4,
        }));
    }
    let out = recipe
        .apply(&g, Some(&train), Some(&test), &mut go)
        .unwrap();
    let last = out.reports.len() - 1;
    eprintln!(
        "after share: {:?}, after last pass: {:?}",
        out.reports[2].accuracy_after, out.reports[last].accuracy_after
    );
    let acc0 = out.reports[0].accuracy_before.unwrap();
    let acc_p = out.reports[1].accuracy_after.unwrap();
    let acc_q = out.reports[last].accuracy_after.unwrap();
    let dense = file.len();
    // P: the pruned float model as the shortest exact sparse encoding per weight (the
    // reports' byte totals) plus nothing else; P+Q and P+Q+H: the real .lithe container.
    let p_bytes = out.reports[1].bytes_after;
    let (fixed, fs) = container::encode_compressed(&out, Coding::Fixed).unwrap();
    let (huff, hs) = container::encode_compressed(&out, Coding::Huffman).unwrap();
    eprintln!("stage                 | accuracy | bytes     | ratio vs {dense} B ONNX");
    eprintln!(
        "float                 | {:.2} %  | {dense:>9} | 1.0×",
        acc0 * 100.0
    );
    eprintln!(
        "P  (prune 92 %, ft)   | {:.2} %  | {p_bytes:>9} | {:.1}×",
        acc_p * 100.0,
        dense as f64 / p_bytes as f64
    );
    for (name, b, s) in [
        ("P+Q (k-means, fixed)", &fixed, fs),
        ("P+Q+H (huffman)", &huff, hs),
    ] {
        eprintln!(
            "{name:<21} | {:.2} %  | {:>9} | {:.1}×   {s:?}",
            acc_q * 100.0,
            b.len(),
            dense as f64 / b.len() as f64
        );
    }
    for l in &out.reports[2].layers {
        eprintln!("  {l:?}");
    }
    // Round trip: bit-identical weights and equal outputs.
    for bytes in [&fixed, &huff] {
        let back = container::decode(bytes).unwrap();
        assert_eq!(back.weights.len(), out.graph.weights.len());
        for (k, w) in &out.graph.weights {
            let b = &back.weights[k];
            assert_eq!(b.shape(), w.shape());
            assert!(
                w.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            );
        }
        let r = lithe::metrics::evaluate(&back, &test, 256).unwrap();
        assert_eq!(r.accuracy, acc_q);
    }
    assert!(huff.len() < fixed.len());
    assert!(fixed.len() < p_bytes);
    // Measured (defaults: 4 bits, 8 epochs, 1 centroid epoch at lr 1e-3): 98.27 % -> 97.43 %,
    // 24,808 bytes (43.0x); see
    // docs/COMPRESSION.md. Margins for other settings or a retrained zoo: >= 30x, <= 2 pp loss.
    assert!(huff.len() * 30 < dense, "{} bytes", huff.len());
    assert!(acc_q > acc0 - 0.02, "{acc0} -> {acc_q}");
}
