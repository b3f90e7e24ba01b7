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
    b[5] = 2;
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
