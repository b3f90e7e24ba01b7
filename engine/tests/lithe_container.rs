//! The `.lithe` container: exact section byte counts, bit-identical round trips with equal
//! outputs, and clean errors on truncated or corrupt files.

use lithe::compress::kmeans::Coding;
use lithe::compress::{Compressed, Recipe};
use lithe::format::lithe as container;
use lithe::rng::Rng;
use lithe::tensor::from_vec;
use std::ops::ControlFlow;

fn go(_: &lithe::train::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn compressed(bits: u8) -> Compressed {
    let g = lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 2).unwrap();
    Recipe::from_json(&format!(
        r#"{{"passes": [
            {{"pass": "prune", "by": "global", "ratio": 0.85}},
            {{"pass": "share", "bits": {bits}}}
        ]}}"#
    ))
    .unwrap()
    .apply(&g, None, None, &mut go)
    .unwrap()
}

#[test]
fn round_trip_is_bit_identical_with_equal_outputs() {
    for bits in [1, 3, 5, 8] {
        let c = compressed(bits);
        for coding in [Coding::Fixed, Coding::Huffman] {
            let (bytes, sizes) = container::encode_compressed(&c, coding).unwrap();
            assert_eq!(sizes.total(), bytes.len(), "{sizes:?}");
            assert!(sizes.codebooks == c.shared.len() * 4 * (1 << bits));
            let (back, shared) = container::decode_layers(&bytes).unwrap();
            assert_eq!(shared, c.shared);
            assert_eq!(back.inputs, c.graph.inputs);
            assert_eq!(back.weights.len(), c.graph.weights.len());
            for (k, w) in &c.graph.weights {
                let b = &back.weights[k];
                assert_eq!(b.shape(), w.shape());
                assert!(
                    w.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits())
                );
            }
            let shape = c.graph.inputs[0].concrete(3);
            let n: usize = shape.iter().product();
            let mut rng = Rng::new(9);
            let x = from_vec(&shape, (0..n).map(|_| rng.uniform()).collect()).unwrap();
            let name = c.graph.inputs[0].name.as_str();
            let a = lithe::exec::run(&c.graph, &[(name, &x)]).unwrap();
            let b = lithe::exec::run(&back, &[(name, &x)]).unwrap();
            assert_eq!(a, b);
            // Deterministic bytes.
            assert_eq!(container::encode_compressed(&c, coding).unwrap().0, bytes);
        }
    }
}

#[test]
fn huffman_is_smaller_than_fixed_width() {
    let c = compressed(5);
    let (fixed, f) = container::encode_compressed(&c, Coding::Fixed).unwrap();
    let (huff, h) = container::encode_compressed(&c, Coding::Huffman).unwrap();
    assert!(huff.len() < fixed.len(), "{f:?} vs {h:?}");
    assert_eq!(f.graph, h.graph);
    assert_eq!(f.codebooks, h.codebooks);
}

#[test]
fn encode_refuses_weights_that_differ_from_their_codes() {
    let mut c = compressed(4);
    let name = c.shared.keys().next().unwrap().clone();
    c.graph.weights.get_mut(&name).unwrap()[[0, 0]] += 1.0;
    assert!(container::encode_compressed(&c, Coding::Huffman).is_err());
}

#[test]
fn corrupt_and_truncated_files_are_clean_errors() {
    let c = compressed(4);
    let (bytes, sizes) = container::encode_compressed(&c, Coding::Huffman).unwrap();
    // Truncation: every cut in the layer part, a sample of cuts in the ONNX part.
    let layers_start = 10 + sizes.graph;
    for cut in (0..layers_start)
        .step_by(97)
        .chain(layers_start..bytes.len())
    {
        assert!(container::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Bad magic, version, trailing bytes.
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(container::decode(&b).is_err());
    let mut b = bytes.clone();
    b[5] = 3;
    assert!(container::decode(&b).is_err());
    let mut b = bytes.clone();
    b.push(0);
    assert!(container::decode(&b).is_err());
    // Huge graph length and layer count.
    let mut b = bytes.clone();
    b[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(container::decode(&b).is_err());
    let mut b = bytes.clone();
    b[layers_start..layers_start + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(container::decode(&b).is_err());
    // A layer name that is not a placeholder.
    let mut b = bytes.clone();
    b[layers_start + 6] ^= 0x20;
    assert!(container::decode(&b).is_err());
    // A huge dimension in the first layer record.
    let name_len = u16::from_le_bytes([b[layers_start + 4], b[layers_start + 5]]) as usize;
    let rec = layers_start + 6 + name_len;
    let mut b = bytes.clone();
    b[rec + 1..rec + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(container::decode(&b).is_err());
    // Every byte flip in the layer part errors or decodes to a valid graph; none panics.
    let mut rng = Rng::new(4);
    for i in layers_start..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 1 << rng.below(8);
        if let Ok(g) = container::decode(&b) {
            assert!(g.infer_shapes(1).is_ok());
        }
    }
}

/// Applies a recipe without data to the tiny MLP.
fn apply(recipe: &str) -> Compressed {
    let g = lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 2).unwrap();
    Recipe::from_json(recipe)
        .unwrap()
        .apply(&g, None, None, &mut go)
        .unwrap()
}

fn assert_same_weights(a: &lithe::graph::Graph, b: &lithe::graph::Graph) {
    assert_eq!(a.weights.len(), b.weights.len());
    for (k, w) in &a.weights {
        let v = &b.weights[k];
        assert_eq!(v.shape(), w.shape(), "{k}");
        assert!(
            w.iter()
                .zip(v.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k} differs"
        );
    }
}

#[test]
fn quantized_low_bit_and_pruned_layers_round_trip_in_version_2() {
    let dense =
        lithe::format::onnx::export(&lithe::zoo::build(lithe::zoo::Arch::TinyMlp, 2).unwrap())
            .unwrap()
            .len();
    let cases = [
        (
            r#"{"passes": [{"pass": "quantize", "bits": 4, "symmetric": false, "per_channel": true}]}"#,
            "quantized",
        ),
        (
            r#"{"passes": [{"pass": "lowbit", "scheme": "binary", "per_channel": true}]}"#,
            "lowbit",
        ),
        (
            r#"{"passes": [{"pass": "lowbit", "scheme": "log2", "bits": 4}]}"#,
            "lowbit",
        ),
        (
            r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.9}]}"#,
            "sparse",
        ),
        (
            r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.8},
                          {"pass": "quantize", "bits": 6, "symmetric": true, "per_channel": false}]}"#,
            "quantized",
        ),
    ];
    for (recipe, kind) in cases {
        let c = apply(recipe);
        let (bytes, sizes) = container::encode_compressed(&c, Coding::Huffman).unwrap();
        assert_eq!(sizes.total(), bytes.len(), "{recipe}: {sizes:?}");
        assert_eq!(bytes[5], 2, "{recipe}: version");
        let (back, layers) = container::decode_all(&bytes).unwrap();
        assert_same_weights(&c.graph, &back);
        assert_eq!(back.inputs, c.graph.inputs);
        let stored = match kind {
            "quantized" => {
                assert_eq!(layers.quantized, c.quantized);
                sizes.codes
            }
            "lowbit" => {
                assert_eq!(layers.lowbit, c.lowbit);
                sizes.codes
            }
            _ => {
                assert!(!layers.sparse.is_empty());
                sizes.sparse
            }
        };
        assert!(stored > 0, "{recipe}: {sizes:?}");
        // Smaller than the dense ONNX, and no larger than the last report's encoded bytes
        // plus the graph structure.
        assert!(
            bytes.len() < dense,
            "{recipe}: {} vs dense {dense}",
            bytes.len()
        );
        assert_eq!(
            container::encode_compressed(&c, Coding::Huffman).unwrap().0,
            bytes,
            "deterministic"
        );
        // Outputs are equal, and a session opens the container directly.
        let s = lithe::Session::from_bytes(&bytes).unwrap();
        assert_same_weights(&c.graph, s.graph());
    }
    // Shared-only containers keep writing version 1.
    let (b, _) = container::encode_compressed(&compressed(4), Coding::Huffman).unwrap();
    assert_eq!(b[5], 1);
}

#[test]
fn version_2_records_are_checked() {
    let c = apply(
        r#"{"passes": [{"pass": "quantize", "bits": 4, "symmetric": false, "per_channel": true}]}"#,
    );
    let (bytes, sizes) = container::encode_compressed(&c, Coding::Huffman).unwrap();
    let layers_start = 10 + sizes.graph;
    for cut in layers_start..bytes.len() {
        assert!(container::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let name_len = u16::from_le_bytes([bytes[layers_start + 4], bytes[layers_start + 5]]) as usize;
    let kind_at = layers_start + 6 + name_len;
    assert_eq!(bytes[kind_at], 1);
    for (kind, want) in [(9u8, "unknown kind 9"), (0, ""), (2, ""), (3, "")] {
        let mut b = bytes.clone();
        b[kind_at] = kind;
        let e = container::decode(&b).unwrap_err().to_string();
        assert!(e.contains(want), "kind {kind}: {e}");
    }
    // A record length past the end.
    let mut b = bytes.clone();
    b[kind_at + 1..kind_at + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        container::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
    // Every byte flip in the layer part errors or decodes to a valid graph; none panics.
    let mut rng = Rng::new(5);
    for i in layers_start..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 1 << rng.below(8);
        if let Ok(g) = container::decode(&b) {
            assert!(g.infer_shapes(1).is_ok());
        }
    }
    // A weight stored under two kinds, or differing from its codes, is refused.
    let mut layers = container::Layers::of(&c).unwrap();
    let name = layers.quantized.keys().next().unwrap().clone();
    layers
        .sparse
        .insert(name.clone(), lithe::compress::sparse::Encoding::Csr);
    assert!(container::encode_layers(&c.graph, &layers, Coding::Huffman).is_err());
    let mut g = c.graph.clone();
    g.weights.get_mut(&name).unwrap()[[0, 0]] += 1.0;
    assert!(
        container::encode_layers(&g, &container::Layers::of(&c).unwrap(), Coding::Huffman).is_err()
    );
}
