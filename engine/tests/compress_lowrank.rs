//! Low-rank factorisation (truncated SVD) of Gemm layers: exact recovery of a rank-k matrix,
//! graph rewriting, skip rule, ONNX round trip, and the LeNet-300-100 fc1 rank table (figures in
//! docs/COMPRESSION.md).

use lithe::compress::lowrank::{LowRankSpec, factorize};
use lithe::compress::{PassSpec, Recipe};
use lithe::data::Dataset;
use lithe::data::Preprocess;
use lithe::exec;
use lithe::format::onnx;
use lithe::graph::{Dim, GemmAttrs, Graph, Node, Op, ValueInfo};
use lithe::rng::Rng;
use lithe::tensor::Tensor;
use std::ops::ControlFlow;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn lenet() -> Graph {
    let bytes = std::fs::read(root().join("www/models/lenet-300-100.onnx"))
        .expect("www/models/lenet-300-100.onnx");
    onnx::import(&bytes).unwrap()
}

fn go(_: &lithe::train::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

/// One Gemm `x[B, M] → y[B, N]` with weight `W[N, M]` (trans_b) and a bias.
fn one_gemm(w: Tensor, bias: Tensor) -> Graph {
    let m = w.shape()[1];
    let mut g = Graph {
        name: "one".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            shape: vec![Dim::Sym("N".into()), Dim::Fixed(m)],
        }],
        outputs: vec!["fc".into()],
        ..Graph::default()
    };
    g.nodes.push(Node::new(
        "fc",
        Op::Gemm(GemmAttrs {
            trans_b: true,
            ..GemmAttrs::default()
        }),
        &["x", "w", "b"],
    ));
    g.weights.insert("w".into(), w);
    g.weights.insert("b".into(), bias);
    g.validate().unwrap();
    g
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn spec(layers: Option<&[&str]>, rank: Option<usize>, energy: Option<f32>) -> LowRankSpec {
    LowRankSpec {
        layers: layers.map(|l| l.iter().map(|s| s.to_string()).collect()),
        rank,
        energy,
    }
}

#[test]
fn exact_rank_k_matrix_is_recovered() {
    let (n, m, k) = (40, 30, 5);
    let mut rng = Rng::new(7);
    // W = A·B with A [n, k], B [k, m]: exactly rank k.
    let a = randn(&mut rng, n * k);
    let b = randn(&mut rng, k * m);
    let mut w = vec![0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            w[i * m + j] = (0..k).map(|t| a[i * k + t] * b[t * m + j]).sum();
        }
    }
    let w = Tensor::from_shape_vec(vec![n, m], w).unwrap();
    let bias = Tensor::from_shape_vec(vec![n], randn(&mut rng, n)).unwrap();
    let g = one_gemm(w, bias.clone());
    let x = Tensor::from_shape_vec(vec![8, m], randn(&mut rng, 8 * m)).unwrap();
    let y = exec::run(&g, &[("x", &x)]).unwrap().remove(0);

    let mut lr = g.clone();
    let rows = factorize(&mut lr, &spec(None, Some(k), None)).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert!(r.factored);
    assert_eq!((r.n, r.m, r.rank), (n, m, k));
    assert!(r.energy > 1.0 - 1e-9, "energy {}", r.energy);
    assert_eq!(r.params_after, k * (n + m));
    assert!((r.storage_gain - (n * m) as f64 / (k * (n + m)) as f64).abs() < 1e-12);
    assert_eq!(r.macs_after, (k * (n + m)) as u64);
    // Physically rewritten: two Gemms, original weight gone, bias on the second.
    assert_eq!(lr.nodes.len(), 2);
    assert!(lr.nodes.iter().all(|nd| matches!(nd.op, Op::Gemm(_))));
    assert_eq!(lr.nodes[0].name, "fc_lowrank_v");
    assert_eq!(lr.nodes[0].inputs, vec!["x", "w_lowrank_v"]);
    assert_eq!(lr.nodes[1].inputs, vec!["fc_lowrank_v", "w_lowrank_u", "b"]);
    assert_eq!(lr.weights["w_lowrank_v"].shape(), &[k, m]);
    assert_eq!(lr.weights["w_lowrank_u"].shape(), &[n, k]);
    assert!(!lr.weights.contains_key("w"));
    assert_eq!(lr.weights["b"], bias);
    let y2 = exec::run(&lr, &[("x", &x)]).unwrap().remove(0);
    let d = max_diff(&y, &y2);
    assert!(d < 1e-4, "max |Δy| = {d}");

    // Energy 1.0 picks exactly k as well (the other singular values are ~0).
    let mut le = g.clone();
    let rows = factorize(&mut le, &spec(Some(&["fc"]), None, Some(0.999_999))).unwrap();
    assert_eq!(rows[0].rank, k);

    // A lower rank loses something.
    let mut l2 = g.clone();
    factorize(&mut l2, &spec(None, Some(k - 2), None)).unwrap();
    let y3 = exec::run(&l2, &[("x", &x)]).unwrap().remove(0);
    assert!(max_diff(&y, &y3) > 1e-2);
}

#[test]
fn trans_b_false_is_factored_too() {
    let (n, m) = (12, 9);
    let mut rng = Rng::new(3);
    // W stored as [in, out] (trans_b = false).
    let w = Tensor::from_shape_vec(vec![m, n], randn(&mut rng, m * n)).unwrap();
    let mut g = one_gemm(
        Tensor::zeros(ndarray::IxDyn(&[n, m])),
        Tensor::from_shape_vec(vec![n], randn(&mut rng, n)).unwrap(),
    );
    g.weights.insert("w".into(), w);
    g.nodes[0].op = Op::Gemm(GemmAttrs {
        alpha: 0.5,
        beta: 2.0,
        ..GemmAttrs::default()
    });
    g.validate().unwrap();
    let x = Tensor::from_shape_vec(vec![4, m], randn(&mut rng, 4 * m)).unwrap();
    let y = exec::run(&g, &[("x", &x)]).unwrap().remove(0);
    let mut lr = g.clone();
    // Rank 9 would not gain (9 · 21 ≥ 108): skipped, graph untouched.
    let rows = factorize(&mut lr, &spec(None, Some(9), None)).unwrap();
    assert!(!rows[0].factored);
    assert_eq!(lr, g, "a skipped layer is left untouched");
    let rows = factorize(&mut lr, &spec(None, Some(4), None)).unwrap();
    assert!(rows[0].factored);
    assert_eq!((rows[0].n, rows[0].m), (n, m));
    let y4 = exec::run(&lr, &[("x", &x)]).unwrap().remove(0);
    assert_eq!(y4.shape(), y.shape());
    // The error shrinks as the rank grows.
    let mut l6 = g.clone();
    factorize(&mut l6, &spec(None, Some(5), None)).unwrap();
    let y5 = exec::run(&l6, &[("x", &x)]).unwrap().remove(0);
    assert!(max_diff(&y, &y5) < max_diff(&y, &y4));
}

#[test]
fn bad_knobs_and_names_are_errors() {
    let g = lenet();
    for s in [
        spec(None, None, None),
        spec(None, Some(0), None),
        spec(None, Some(4), Some(0.9)),
        spec(None, None, Some(1.5)),
        spec(Some(&["nope"]), Some(4), None),
    ] {
        let mut h = g.clone();
        assert!(factorize(&mut h, &s).is_err(), "{s:?}");
        assert_eq!(h, g, "failed factorize leaves the graph alone");
    }
    // Factoring a pruned layer, or after quantize, is refused in a recipe.
    let r = Recipe::from_json(
        r#"{"passes": [{"pass": "quantize", "bits": 8, "symmetric": true, "per_channel": true},
                        {"pass": "low_rank", "rank": 8}]}"#,
    )
    .unwrap();
    assert!(r.apply(&g, None, None, &mut go).is_err());
    let r = Recipe::from_json(
        r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.5},
                        {"pass": "low_rank", "rank": 8}]}"#,
    )
    .unwrap();
    assert!(r.apply(&g, None, None, &mut go).is_err());
}

#[test]
fn lenet_fc1_rank_table_and_onnx_round_trip() {
    let g = lenet();
    let test = Dataset::load(root().join("www/data/mnist-test.lmn.gz"))
        .expect("www/data/mnist-test.lmn.gz");
    let fc1 = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::Gemm(_)))
        .unwrap();
    let fc1 = fc1.name.clone();
    let base = lithe::metrics::evaluate(&g, &test, 256).unwrap().accuracy;
    eprintln!("float: accuracy {:.2} %", 100.0 * base);
    eprintln!(
        "| rank | fc1 params | fc1 bytes | S_g | report encoding | MACs/image | model bytes | accuracy |"
    );
    let mut accs = Vec::new();
    for rank in [8usize, 16, 32, 64, 128] {
        let recipe = Recipe {
            passes: vec![PassSpec::LowRank(spec(Some(&[&fc1]), Some(rank), None))],
        };
        let out = recipe.apply(&g, None, Some(&test), &mut go).unwrap();
        let rep = &out.reports[0];
        assert_eq!(rep.pass, "low_rank");
        assert_eq!(rep.layers.len(), 1);
        let l = &rep.layers[0];
        let acc = rep.accuracy_after.unwrap();
        assert_eq!(rep.accuracy_before, Some(base));
        assert_eq!(l.params, rank * (300 + 784));
        // Bytes are real encodings: dense f32 of both factors, with headers.
        let dense = |t: &Tensor| lithe::compress::sparse::encode_best(t).unwrap().1.len();
        let v = &out.graph.weights[&format!("{}_lowrank_v", l.name)];
        let u = &out.graph.weights[&format!("{}_lowrank_u", l.name)];
        assert_eq!(l.bytes_after, dense(v) + dense(u));
        assert_eq!(l.bytes_after, 2 * (2 + 8) + 4 * rank * (300 + 784));
        assert_eq!(
            rep.bytes_after,
            rep.bytes_before - l.bytes_before + l.bytes_after
        );
        let macs_fc1 = (rank * (300 + 784)) as u64;
        assert_eq!(rep.macs_after, rep.macs_before - 784 * 300 + macs_fc1);
        eprintln!(
            "| {rank} | {} | {} | {:.2}x | {} | {} | {} | {:.2} % |",
            l.params,
            l.bytes_after,
            784.0 * 300.0 / (rank * 1084) as f64,
            l.encoding,
            rep.macs_after,
            rep.bytes_after,
            100.0 * acc
        );
        accs.push((rank, acc));

        // Export: two Gemms in place of fc1; re-import gives identical outputs.
        let bytes = onnx::export(&out.graph).unwrap();
        let back = onnx::import(&bytes).unwrap();
        let gemms = |g: &Graph| {
            g.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Gemm(_)))
                .count()
        };
        assert_eq!(gemms(&back), gemms(&g) + 1);
        let (x, _) = test.batch(
            &(0..64).collect::<Vec<_>>(),
            &Preprocess::from_metadata(&g.metadata).unwrap_or_default(),
        );
        let input = out.graph.inputs[0].name.clone();
        let a = exec::run(&out.graph, &[(&input, &x)]).unwrap();
        let b = exec::run(&back, &[(&input, &x)]).unwrap();
        assert_eq!(a, b, "outputs after ONNX round trip");
    }
    // Measured (docs/COMPRESSION.md): accuracy rises with the rank; margins for a retrained zoo.
    let acc = |r: usize| accs.iter().find(|a| a.0 == r).unwrap().1;
    assert!(acc(128) >= acc(16) - 0.002);
    assert!(acc(64) > base - 0.01, "rank 64 within 1 pp");
    assert!(acc(32) > base - 0.03, "rank 32 within 3 pp");
    assert!(acc(16) > 0.85, "rank 16 above 85 %");

    // Skip rule in a recipe report: fc3 (10×100) at rank 10 gives 10·110 ≥ 1000.
    let recipe = Recipe {
        passes: vec![PassSpec::LowRank(spec(Some(&["fc3"]), Some(10), None))],
    };
    let out = recipe.apply(&g, None, None, &mut go).unwrap();
    let l = &out.reports[0].layers[0];
    eprintln!("fc3 rank 10: {}", l.encoding);
    assert!(l.encoding.starts_with("skipped"), "{}", l.encoding);
    assert_eq!((l.params, l.bytes_after), (1000, l.bytes_before));
    assert_eq!(out.graph, g);

    // Every Gemm by energy: fc3 (10×100) gains nothing at high energy and is reported skipped.
    let mut h = g.clone();
    let rows = factorize(&mut h, &spec(None, None, Some(0.9))).unwrap();
    for r in &rows {
        eprintln!(
            "energy 0.9: {} [{}x{}] rank {} energy {:.4} S_g {:.2} factored {}",
            r.node, r.n, r.m, r.rank, r.energy, r.storage_gain, r.factored
        );
        assert!(r.energy >= 0.9);
        assert_eq!(r.factored, r.rank * (r.n + r.m) < r.n * r.m);
    }
}
