//! The plan's kernels for compressed weights against the reference interpreter: XNOR for
//! binarized layers after `Sign`, the codebook kernel for shared weights, and the int8 kernels
//! for the ONNX integer ops (MatMulInteger, QLinearMatMul, ConvInteger,
//! QLinearConv; weights packed once, convolutions by int8 im2col) against the reference ops,
//! bit for bit, over odd sizes, both operand types, groups, strides, pads and dilations; and the
//! QDQ fusion (`DequantizeLinear → Conv/Gemm → QuantizeLinear` to `QLinearConv`) against the
//! unfused graph.

use lithe::exec;
use lithe::graph::{ConvAttrs, Dim, GemmAttrs, Graph, Node, Op, ValueInfo};
use lithe::plan::Plan;
use lithe::rng::Rng;
use lithe::tensor::{DType, Tensor};

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_shape_vec(ndarray::IxDyn(shape), v).expect("shape")
}

/// `n` random codes of type `dt`.
fn codes(rng: &mut Rng, n: usize, dt: DType) -> Vec<f32> {
    (0..n)
        .map(|_| match dt {
            DType::U8 => rng.below(256) as f32,
            _ => rng.below(256) as f32 - 128.0,
        })
        .collect()
}

fn input(name: &str, shape: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
    }
}

/// Plan and reference on one graph: identical outputs, and the node ran `kernel`.
fn same(g: &Graph, feeds: &[(&str, &Tensor)], kernel: &str, what: &str) {
    let want = exec::run(g, feeds).unwrap_or_else(|e| panic!("{what}: reference: {e}"));
    let plan = Plan::new(g).unwrap_or_else(|e| panic!("{what}: plan: {e}"));
    let ks = plan.kernels();
    assert!(
        ks.iter().any(|(_, k)| *k == kernel),
        "{what}: expected {kernel}: {ks:?}"
    );
    let got = plan
        .run(feeds)
        .unwrap_or_else(|e| panic!("{what}: plan run: {e}"));
    assert_eq!(got, want, "{what}");
}

#[test]
fn planned_integer_convolutions_match_the_reference_bit_for_bit() {
    let mut rng = Rng::new(11);
    // (batch, channels, h, w, outputs, kernel, stride, pads, dilation, groups)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        usize,
        [usize; 4],
        usize,
        usize,
    );
    let cases: &[Case] = &[
        (1, 1, 1, 1, 1, [1, 1], 1, [0; 4], 1, 1),
        (1, 1, 5, 7, 3, [3, 3], 1, [1, 1, 1, 1], 1, 1),
        (3, 2, 9, 6, 17, [3, 2], 2, [0, 1, 2, 0], 1, 1),
        (2, 4, 8, 8, 6, [3, 3], 1, [2, 2, 2, 2], 2, 2),
        (1, 5, 7, 5, 5, [3, 3], 1, [1, 1, 1, 1], 1, 5),
        (2, 3, 13, 11, 33, [5, 5], 3, [2, 0, 1, 2], 1, 1),
        (1, 16, 4, 4, 1, [1, 1], 1, [0; 4], 1, 1),
    ];
    for (ci, &(n, c, h, w, m, k, s, pads, d, groups)) in cases.iter().enumerate() {
        for (tx, tw) in [
            (DType::U8, DType::I8),
            (DType::I8, DType::I8),
            (DType::U8, DType::U8),
        ] {
            for qlinear in [false, true] {
                let mut attrs = ConvAttrs::new(k);
                attrs.strides = [s, s];
                attrs.pads = pads;
                attrs.dilations = [d, d];
                attrs.groups = groups;
                let cg = c / groups;
                let mut g = Graph {
                    name: "conv".into(),
                    inputs: vec![input("x", &[n, c, h, w])],
                    outputs: vec!["y".into()],
                    ..Graph::default()
                };
                let x = t(&[n, c, h, w], codes(&mut rng, n * c * h * w, tx));
                let wv = codes(&mut rng, m * cg * k[0] * k[1], tw);
                g.weights.insert("w".into(), t(&[m, cg, k[0], k[1]], wv));
                let zp = |rng: &mut Rng, dt: DType| codes(rng, 1, dt)[0];
                g.weights
                    .insert("xzp".into(), t(&[], vec![zp(&mut rng, tx)]));
                // Per-channel weight zero points on odd cases, one on even ones.
                let wzp = if ci % 2 == 1 {
                    t(&[m], codes(&mut rng, m, tw))
                } else {
                    t(&[], vec![zp(&mut rng, tw)])
                };
                g.weights.insert("wzp".into(), wzp);
                let node = if qlinear {
                    g.weights.insert("xs".into(), t(&[], vec![0.02]));
                    let ws: Vec<f32> = (0..m).map(|i| 0.001 * (1 + i % 7) as f32).collect();
                    g.weights.insert("ws".into(), t(&[m], ws));
                    g.weights.insert("ys".into(), t(&[], vec![0.05]));
                    g.weights.insert("yzp".into(), t(&[], vec![3.0]));
                    let b: Vec<f32> = (0..m).map(|i| (i as f32 - 4.0) * 37.0).collect();
                    g.weights.insert("b".into(), t(&[m], b));
                    Node {
                        name: "y".into(),
                        op: Op::QLinearConv {
                            conv: attrs,
                            x: tx,
                            w: tw,
                            y: DType::I8,
                        },
                        inputs: ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"]
                            .map(String::from)
                            .to_vec(),
                        outputs: vec!["y".into()],
                    }
                } else {
                    Node {
                        name: "y".into(),
                        op: Op::ConvInteger {
                            conv: attrs,
                            x: tx,
                            w: tw,
                        },
                        inputs: ["x", "w", "xzp", "wzp"].map(String::from).to_vec(),
                        outputs: vec!["y".into()],
                    }
                };
                g.nodes.push(node);
                let what = format!("case {ci} {tx}/{tw} qlinear={qlinear}");
                same(&g, &[("x", &x)], "int8-conv", &what);
            }
        }
    }
}

#[test]
fn planned_integer_matmuls_match_the_reference_bit_for_bit() {
    let mut rng = Rng::new(12);
    for a_shape in [
        vec![7],
        vec![1, 1],
        vec![3, 5],
        vec![2, 3, 33],
        vec![17, 64],
    ] {
        let k = *a_shape.last().expect("rank");
        for n in [1usize, 16, 17, 33] {
            for (ta, tb) in [(DType::U8, DType::I8), (DType::I8, DType::U8)] {
                for qlinear in [false, true] {
                    let len: usize = a_shape.iter().product();
                    let a = t(&a_shape, codes(&mut rng, len, ta));
                    let mut g = Graph {
                        name: "mm".into(),
                        inputs: vec![input("a", &a_shape)],
                        outputs: vec!["y".into()],
                        ..Graph::default()
                    };
                    g.weights
                        .insert("b".into(), t(&[k, n], codes(&mut rng, k * n, tb)));
                    g.weights
                        .insert("azp".into(), t(&[], codes(&mut rng, 1, ta)));
                    g.weights
                        .insert("bzp".into(), t(&[n], codes(&mut rng, n, tb)));
                    let node = if qlinear {
                        g.weights.insert("as".into(), t(&[], vec![0.03]));
                        let bs: Vec<f32> = (0..n).map(|i| 0.002 * (1 + i % 5) as f32).collect();
                        g.weights.insert("bs".into(), t(&[n], bs));
                        g.weights.insert("ys".into(), t(&[], vec![0.4]));
                        g.weights.insert("yzp".into(), t(&[], vec![128.0]));
                        Node {
                            name: "y".into(),
                            op: Op::QLinearMatMul {
                                a: ta,
                                b: tb,
                                y: DType::U8,
                            },
                            inputs: ["a", "as", "azp", "b", "bs", "bzp", "ys", "yzp"]
                                .map(String::from)
                                .to_vec(),
                            outputs: vec!["y".into()],
                        }
                    } else {
                        Node {
                            name: "y".into(),
                            op: Op::MatMulInteger { a: ta, b: tb },
                            inputs: ["a", "b", "azp", "bzp"].map(String::from).to_vec(),
                            outputs: vec!["y".into()],
                        }
                    };
                    g.nodes.push(node);
                    let what = format!("A {a_shape:?} n {n} {ta}/{tb} qlinear={qlinear}");
                    same(&g, &[("a", &a)], "int8-gemm", &what);
                }
            }
        }
    }
}

/// A statically quantized graph as exporters write it: `Q → DQ → Conv(DQ w, DQ int32 b) → Q →
/// DQ → Flatten → Q → DQ → Gemm(DQ w, f32 b) → Q → DQ`, with the Gemm's weight transposed or
/// not.
fn qdq_graph(trans_b: bool, rng: &mut Rng) -> Graph {
    let mut g = Graph {
        name: "qdq".into(),
        inputs: vec![input("x", &[2, 3, 6, 6])],
        outputs: vec!["out".into()],
        ..Graph::default()
    };
    let w = &mut g.weights;
    w.insert("sx".into(), t(&[], vec![0.02]));
    w.insert("zx".into(), t(&[], vec![128.0]));
    w.insert("wq".into(), t(&[4, 3, 3, 3], codes(rng, 108, DType::I8)));
    let sw = vec![0.004, 0.005, 0.003, 0.006];
    w.insert("sw".into(), t(&[4], sw.clone()));
    w.insert("zw".into(), t(&[4], vec![0.0; 4]));
    let bq: Vec<f32> = (0..4).map(|i| (i as f32 - 1.5) * 300.0).collect();
    w.insert("bq".into(), t(&[4], bq));
    let sb: Vec<f32> = sw.iter().map(|s| s * 0.02).collect();
    w.insert("sb".into(), t(&[4], sb));
    w.insert("zb".into(), t(&[4], vec![0.0; 4]));
    w.insert("sy".into(), t(&[], vec![0.03]));
    w.insert("zy".into(), t(&[], vec![0.0]));
    let (k, n) = (4 * 5 * 5, 5);
    let fc = codes(rng, k * n, DType::I8);
    let fc_shape = if trans_b { [n, k] } else { [k, n] };
    w.insert("fq".into(), t(&fc_shape, fc));
    w.insert("fs".into(), t(&[], vec![0.002]));
    w.insert("fz".into(), t(&[], vec![0.0]));
    w.insert("fb".into(), t(&[n], vec![0.1, -0.2, 0.3, 0.0, 0.05]));
    w.insert("so".into(), t(&[], vec![0.1]));
    w.insert("zo".into(), t(&[], vec![-3.0]));
    let q = |to| Op::QuantizeLinear { axis: 1, to };
    let dq = |from| Op::DequantizeLinear { axis: 0, from };
    let node = |name: &str, op: Op, inputs: &[&str]| Node::new(name, op, inputs);
    let gemm = GemmAttrs {
        trans_b,
        ..GemmAttrs::default()
    };
    let mut conv = ConvAttrs::new([3, 3]);
    conv.pads = [0, 0, 1, 1];
    g.nodes = vec![
        node("xq", q(DType::U8), &["x", "sx", "zx"]),
        node("xd", dq(DType::U8), &["xq", "sx", "zx"]),
        node("wd", dq(DType::I8), &["wq", "sw", "zw"]),
        node("bd", dq(DType::I32), &["bq", "sb", "zb"]),
        node("conv", Op::Conv(conv), &["xd", "wd", "bd"]),
        node("cq", q(DType::U8), &["conv", "sy", "zy"]),
        node("cd", dq(DType::U8), &["cq", "sy", "zy"]),
        node("flat", Op::Flatten { axis: 1 }, &["cd"]),
        node("fq_", q(DType::U8), &["flat", "sy", "zy"]),
        node("fd", dq(DType::U8), &["fq_", "sy", "zy"]),
        node("fwd", dq(DType::I8), &["fq", "fs", "fz"]),
        node("fc", Op::Gemm(gemm), &["fd", "fwd", "fb"]),
        node("oq", q(DType::I8), &["fc", "so", "zo"]),
        node("out", dq(DType::I8), &["oq", "so", "zo"]),
    ];
    g
}

#[test]
fn qdq_convs_and_gemms_fuse_into_int8_kernels() {
    let mut rng = Rng::new(13);
    for trans_b in [true, false] {
        let mut g = qdq_graph(trans_b, &mut rng);
        g.validate().expect("valid");
        let x: Vec<f32> = (0..2 * 3 * 36).map(|_| rng.normal()).collect();
        let x = t(&[2, 3, 6, 6], x);
        let want = exec::run(&g, &[("x", &x)]).expect("reference");
        let plan = Plan::new(&g).expect("plan");
        let ks = plan.kernels();
        let fused: Vec<_> = ks.iter().filter(|(_, k)| *k == "int8-conv").collect();
        assert_eq!(fused.len(), 2, "trans_b={trans_b}: {ks:?}");
        assert!(
            !ks.iter()
                .any(|(n, _)| n == "conv" || n == "fc" || n == "wd"),
            "fused and dead nodes are gone: {ks:?}"
        );
        let got = plan.run(&[("x", &x)]).expect("plan run");
        // Outputs on the grid of `so` = 0.1: at most one step apart.
        for (a, b) in want[0].iter().zip(got[0].iter()) {
            assert!((a - b).abs() <= 0.1 + 1e-6, "trans_b={trans_b}: {a} vs {b}");
        }
    }
}

#[test]
fn a_conv_whose_output_is_read_twice_is_not_fused() {
    let mut rng = Rng::new(14);
    let mut g = qdq_graph(true, &mut rng);
    // A second reader of the conv's float output: fusing would lose it.
    g.nodes.push(Node::new("relu", Op::Relu, &["conv"]));
    g.outputs.push("relu".into());
    let plan = Plan::new(&g).expect("plan");
    let ks = plan.kernels();
    assert!(
        ks.iter().any(|(n, k)| n == "conv" && *k == "reference"),
        "{ks:?}"
    );
    assert_eq!(
        ks.iter().filter(|(_, k)| *k == "int8-conv").count(),
        1,
        "{ks:?}"
    );
    let x = t(
        &[2, 3, 6, 6],
        (0..216).map(|i| (i % 13) as f32 * 0.1).collect(),
    );
    let want = exec::run(&g, &[("x", &x)]).expect("reference");
    let got = plan.run(&[("x", &x)]).expect("plan");
    assert_eq!(want[1], got[1], "the unfused conv's output");
}

fn close(a: &[Tensor], b: &[Tensor], what: &str) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape(), y.shape(), "{what}");
        for (u, v) in x.iter().zip(y.iter()) {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + u.abs()),
                "{what}: {u} vs {v}"
            );
        }
    }
}

#[test]
fn shared_weights_run_on_the_codebook_kernel() {
    use lithe::compress::Recipe;
    use std::ops::ControlFlow;
    let g = lithe::zoo::build(lithe::zoo::Arch::Lenet300100, 3).expect("zoo");
    let recipe =
        Recipe::from_json(r#"{"passes": [{"pass": "share", "bits": 4, "iterations": 5}]}"#)
            .expect("recipe");
    let c = recipe
        .apply(&g, None, None, &mut |_| ControlFlow::Continue(()))
        .expect("share");
    let plan = Plan::new(&c.graph).expect("plan");
    let ks = plan.kernels();
    assert_eq!(
        ks.iter().filter(|(_, k)| *k == "codebook").count(),
        3,
        "every 4-bit shared Gemm: {ks:?}"
    );
    let mut rng = Rng::new(5);
    for batch in [1usize, 3, 7] {
        let x = t(
            &[batch, 1, 28, 28],
            (0..batch * 784).map(|_| rng.uniform()).collect(),
        );
        let want = exec::run(&c.graph, &[("input", &x)]).expect("reference");
        let got = plan.run(&[("input", &x)]).expect("plan");
        close(&want, &got, &format!("batch {batch}"));
    }
}

/// A binarized MLP: `Gemm → Sign → Gemm(±α_j) → Sign → Gemm(±α_j)`.
fn bnn(rng: &mut Rng, k: usize, h: usize) -> Graph {
    let mut g = Graph {
        name: "bnn".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            shape: vec![Dim::Sym("N".into()), Dim::Fixed(k)],
        }],
        outputs: vec!["y".into()],
        ..Graph::default()
    };
    let binary = |rng: &mut Rng, out: usize, inn: usize| {
        let alpha: Vec<f32> = (0..out).map(|_| 0.01 + rng.uniform()).collect();
        let w: Vec<f32> = (0..out * inn)
            .map(|i| {
                if rng.uniform() < 0.5 {
                    -alpha[i / inn]
                } else {
                    alpha[i / inn]
                }
            })
            .collect();
        t(&[out, inn], w)
    };
    g.weights.insert(
        "w1".into(),
        t(&[h, k], (0..h * k).map(|_| rng.normal()).collect()),
    );
    g.weights.insert("w2".into(), binary(rng, h, h));
    g.weights
        .insert("b2".into(), t(&[h], (0..h).map(|_| rng.normal()).collect()));
    g.weights.insert("w3".into(), binary(rng, 10, h));
    let gemm = Op::Gemm(GemmAttrs {
        trans_b: true,
        ..GemmAttrs::default()
    });
    g.nodes = vec![
        Node::new("h1", gemm.clone(), &["x", "w1"]),
        Node::new("s1", Op::Sign, &["h1"]),
        Node::new("h2", gemm.clone(), &["s1", "w2", "b2"]),
        Node::new("s2", Op::Sign, &["h2"]),
        Node::new("y", gemm, &["s2", "w3"]),
    ];
    g
}

#[test]
fn binarized_layers_after_sign_run_on_xnor() {
    let mut rng = Rng::new(6);
    for (k, h) in [(5usize, 3usize), (33, 65), (100, 130)] {
        let g = bnn(&mut rng, k, h);
        let plan = Plan::new(&g).expect("plan");
        let ks = plan.kernels();
        let kinds: Vec<&str> = ks.iter().map(|(_, k)| *k).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "xnor").count(), 2, "{ks:?}");
        // The first layer's input is not binary: it stays f32.
        assert_ne!(kinds[0], "xnor", "{ks:?}");
        for batch in [1usize, 4, 9] {
            let x = t(&[batch, k], (0..batch * k).map(|_| rng.normal()).collect());
            let want = exec::run(&g, &[("x", &x)]).expect("reference");
            let got = plan.run(&[("x", &x)]).expect("plan");
            close(&want, &got, &format!("k {k} h {h} batch {batch}"));
        }
        // An exact zero reaching a Sign gives 0, which XNOR cannot hold: the plan falls back.
        let mut x = vec![0.0f32; k];
        x[0] = 1.0;
        let x = t(&[1, k], x);
        let mut g0 = g.clone();
        g0.weights.insert("w1".into(), t(&[h, k], vec![0.0; h * k]));
        let plan0 = Plan::new(&g0).expect("plan");
        let want = exec::run(&g0, &[("x", &x)]).expect("reference");
        let got = plan0.run(&[("x", &x)]).expect("plan");
        close(&want, &got, "zeros after Sign");
    }
}

/// Milliseconds per image of `f` over `images` images (best of 3 rounds).
fn ms_per_image(images: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    1000.0 * best / images as f64
}

/// Prints plan vs reference interpreter time per image for each compressed form (figures for
/// docs/KERNELS.md; nothing is asserted about speed):
/// `cargo test --release -p lithe --test plan_kernels -- --ignored --nocapture measure`.
#[test]
#[ignore = "timing figures; run with --ignored --nocapture"]
fn measure_planned_forms() {
    use lithe::compress::Recipe;
    use std::ops::ControlFlow;
    let mut rng = Rng::new(9);
    let mut rows: Vec<(String, Graph, String)> = Vec::new();
    let g = lithe::zoo::build(lithe::zoo::Arch::Lenet300100, 3).expect("zoo");
    rows.push(("LeNet-300-100 f32".into(), g.clone(), "input".into()));
    for bits in [2, 4] {
        let r = format!(r#"{{"passes": [{{"pass": "share", "bits": {bits}, "iterations": 5}}]}}"#);
        let c = Recipe::from_json(&r)
            .expect("recipe")
            .apply(&g, None, None, &mut |_| ControlFlow::Continue(()))
            .expect("share");
        rows.push((
            format!("LeNet-300-100 shared {bits}-bit"),
            c.graph,
            "input".into(),
        ));
    }
    rows.push((
        "BNN 784-1024-1024-10".into(),
        bnn(&mut rng, 784, 1024),
        "x".into(),
    ));
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models");
    for file in [
        "burn-mnist-cnn-dynamic-int8.onnx",
        "burn-mnist-cnn-qdq-int8.onnx",
        "burn-mnist-cnn.onnx",
    ] {
        if let Ok(bytes) = std::fs::read(format!("{models}/{file}")) {
            let mut g = lithe::format::onnx::import(&bytes).expect("import");
            g.inputs[0].shape[0] = Dim::Sym("N".into());
            let name = g.inputs[0].name.clone();
            rows.push((file.into(), g, name));
        }
    }
    for (what, g, input) in &rows {
        let plan = Plan::new(g).expect("plan");
        let mut kinds: Vec<&str> = plan.kernels().iter().map(|(_, k)| *k).collect();
        kinds.retain(|k| *k != "reference");
        kinds.dedup();
        for batch in [1usize, 64] {
            if what.contains("dynamic") && batch > 1 {
                continue; // its DynamicQuantizeLinear takes the range of the whole batch
            }
            let mut shape = g.inputs[0].concrete(batch);
            shape[0] = batch;
            let n: usize = shape.iter().product();
            let x = t(&shape, (0..n).map(|_| rng.uniform()).collect());
            let images = if batch == 1 { 200 } else { 640 };
            let runs = images / batch;
            let r = ms_per_image(images, || {
                for _ in 0..runs {
                    exec::run(g, &[(input, &x)]).expect("reference");
                }
            });
            let p = ms_per_image(images, || {
                for _ in 0..runs {
                    plan.run(&[(input, &x)]).expect("plan");
                }
            });
            eprintln!(
                "{what:<34} batch {batch:>2}: reference {r:.4} ms/image, plan {p:.4} ms/image ({:.2}×) kernels {kinds:?}",
                r / p
            );
        }
    }
}

/// Per-node time of the CNNs through the plan (natively, test profile: a probe for finding the
/// nodes that dominate; the wasm figures differ in scale):
/// `cargo test -p lithe --test plan_kernels -- --ignored --nocapture profile_cnn_nodes`.
#[test]
#[ignore = "timing figures; run with --ignored --nocapture"]
fn profile_cnn_nodes() {
    let mut rng = Rng::new(11);
    let mut rows: Vec<(String, Graph)> = Vec::new();
    for arch in [lithe::zoo::Arch::Lenet5, lithe::zoo::Arch::Mobilenet] {
        rows.push((
            format!("{arch:?}"),
            lithe::zoo::build(arch, 3).expect("zoo"),
        ));
    }
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models");
    for file in ["onnx-zoo-mnist-8.onnx", "burn-mnist-cnn.onnx"] {
        if let Ok(bytes) = std::fs::read(format!("{models}/{file}")) {
            let mut g = lithe::format::onnx::import(&bytes).expect("import");
            g.inputs[0].shape[0] = Dim::Sym("N".into());
            rows.push((file.into(), g));
        }
    }
    let start = std::time::Instant::now();
    let mut clock = move || start.elapsed().as_secs_f64() * 1e3;
    for (what, g) in &rows {
        let plan = Plan::new(g).expect("plan");
        let input = g.inputs[0].name.clone();
        for batch in [1usize, 64] {
            let mut shape = g.inputs[0].concrete(batch);
            shape[0] = batch;
            let n: usize = shape.iter().product();
            let x = t(&shape, (0..n).map(|_| rng.uniform()).collect());
            let reps = if batch == 1 { 200 } else { 10 };
            let mut best: Vec<f64> = Vec::new();
            if let Err(e) = plan.run(&[(&input, &x)]) {
                // onnx-zoo-mnist-8 reshapes to a fixed batch of 1.
                eprintln!("{what} batch {batch}: {e}");
                continue;
            }
            for _ in 0..reps {
                let (_, times) = plan.run_timed(&[(&input, &x)], &mut clock).expect("plan");
                if best.is_empty() {
                    best = times;
                } else {
                    best.iter_mut()
                        .zip(&times)
                        .for_each(|(b, t)| *b = b.min(*t));
                }
            }
            let total: f64 = best.iter().sum();
            eprintln!("{what} batch {batch}: {total:.3} ms (sum of per-node bests)");
            for ((name, kernel), ms) in plan.kernels().iter().zip(&best) {
                eprintln!(
                    "    {name:<40} {kernel:<18} {ms:>8.4} ms {:>5.1} %",
                    100.0 * ms / total
                );
            }
        }
    }
}
