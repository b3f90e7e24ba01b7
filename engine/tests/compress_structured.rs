//! Structured pruning: filter/channel thinning (`prune_filters`) and layer pruning
//! (`remove_block`, `merge_linear`).

use lithe::compress::layer::{self, BlockSpec, MergeSpec};
use lithe::compress::structured::{Criterion, FilterSpec, GroupReport, prune_filters};
use lithe::compress::{PassSpec, Recipe, prune::PruneSpec};
use lithe::data::Dataset;
use lithe::format::onnx;
use lithe::graph::{ConvAttrs, Dim, GemmAttrs, Graph, Node, Op, ValueInfo};
use lithe::rng::Rng;
use lithe::tensor::Tensor;
use lithe::{Error, exec, metrics, zoo};
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn model(name: &str) -> Graph {
    let path = Path::new(WORKSPACE).join(format!("www/models/{name}.onnx"));
    onnx::import(&std::fs::read(path).expect("zoo model")).expect("import")
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let n: usize = shape.iter().product();
    lithe::tensor::from_vec(shape, (0..n).map(|_| r.uniform()).collect()).expect("shape")
}

fn run(g: &Graph, x: &Tensor) -> Tensor {
    exec::run(g, &[(g.inputs[0].name.as_str(), x)])
        .expect("run")
        .remove(0)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn spec(criterion: Criterion, ratio: f32, layers: Option<&[&str]>) -> FilterSpec {
    FilterSpec {
        criterion,
        ratio,
        layers: layers.map(|l| l.iter().map(|s| s.to_string()).collect()),
        min_channels: 1,
    }
}

fn shape(g: &Graph, w: &str) -> Vec<usize> {
    g.weights[w].shape().to_vec()
}

/// Sets channel `c` (axis 0) of weight `w` to zero.
fn zero_channel(g: &mut Graph, w: &str, c: usize) {
    if let Some(t) = g.weights.get_mut(w) {
        if t.len() == 1 {
            return;
        }
        let axis = if t.ndim() == 2 && t.shape()[0] == 1 {
            1
        } else {
            0
        };
        t.index_axis_mut(ndarray::Axis(axis), c).fill(0.0);
    }
}

/// The original graph with the removed channels of every group silenced: producer filters and
/// biases zeroed, and γ, β of every BatchNorm of the group zeroed (so the BatchNorm outputs 0).
fn silenced(orig: &Graph, groups: &[GroupReport]) -> Graph {
    let mut g = orig.clone();
    for gr in groups {
        let removed: Vec<usize> = (0..gr.channels_before)
            .filter(|c| !gr.kept.contains(c))
            .collect();
        for name in &gr.touched {
            let n = orig.nodes.iter().find(|n| &n.name == name).expect("node");
            let is_producer = gr.producers.contains(name);
            let zero: Vec<String> = match &n.op {
                Op::BatchNorm { .. } => n.inputs[1..3].to_vec(),
                Op::Conv(a) if is_producer || a.groups > 1 => n.inputs[1..].to_vec(),
                Op::Gemm(a) if is_producer => {
                    assert!(a.trans_b, "test expects [out, in] Gemm weights");
                    n.inputs[1..].to_vec()
                }
                _ => Vec::new(),
            };
            for w in zero.iter().filter(|w| !w.is_empty()) {
                for &c in &removed {
                    zero_channel(&mut g, w, c);
                }
            }
        }
    }
    g
}

#[test]
fn mobilenet_is_thinned_end_to_end() {
    let orig = model("mobilenet");
    let mut g = orig.clone();
    let macs0 = metrics::model_info(&g).expect("info").macs;
    let groups = prune_filters(&mut g, &spec(Criterion::L1, 0.5, None)).expect("prune");
    // stem, block1_pw .. block4_pw; the classifier's outputs (the logits) are left alone.
    assert_eq!(groups.len(), 5, "{groups:?}");
    assert!(
        groups
            .iter()
            .all(|r| r.channels_after * 2 == r.channels_before)
    );
    assert_eq!(shape(&g, "stem.weight"), [8, 1, 3, 3]);
    assert_eq!(shape(&g, "block1_dw.weight"), [8, 1, 3, 3]);
    assert_eq!(shape(&g, "block1_dw_bn.scale"), [8]);
    assert_eq!(shape(&g, "block1_pw.weight"), [16, 8, 1, 1]);
    assert_eq!(shape(&g, "block2_dw.weight"), [16, 1, 3, 3]);
    assert_eq!(shape(&g, "block4_pw.weight"), [64, 32, 1, 1]);
    assert_eq!(shape(&g, "block4_pw_bn.var"), [64]);
    assert_eq!(shape(&g, "fc.weight"), [10, 64]);
    assert_eq!(shape(&g, "fc.bias"), [10]);
    let dw = g.nodes.iter().find(|n| n.name == "block3_dw").expect("dw");
    assert!(matches!(&dw.op, Op::Conv(a) if a.groups == 32));
    let macs1 = metrics::model_info(&g).expect("info").macs;
    assert!(macs1 * 10 < macs0 * 4, "MACs {macs0} -> {macs1}");
    assert!(g.param_count() * 5 < orig.param_count() * 2);
    // Same outputs as the original with the removed channels silenced.
    let x = rand(&[3, 1, 28, 28], 7);
    let want = run(&silenced(&orig, &groups), &x);
    let got = run(&g, &x);
    assert!(max_diff(&want, &got) < 1e-4, "{}", max_diff(&want, &got));
}

#[test]
fn lenet5_flatten_columns_follow_channels() {
    let orig = model("lenet-5");
    let mut g = orig.clone();
    let groups =
        prune_filters(&mut g, &spec(Criterion::L1, 0.4, Some(&["conv1", "conv2"]))).expect("prune");
    assert_eq!(groups.len(), 2);
    assert_eq!(shape(&g, "conv1.weight"), [12, 1, 5, 5]);
    assert_eq!(shape(&g, "conv2.weight"), [30, 12, 5, 5]);
    assert_eq!(shape(&g, "conv2.bias"), [30]);
    // fc1 read 50 channels × 4·4; it now reads 30 × 16 columns.
    let fc1 = g.nodes.iter().find(|n| n.name == "fc1").expect("fc1");
    let w = &g.weights[&fc1.inputs[1]];
    assert!(
        w.shape().contains(&480) && w.shape().contains(&500),
        "{:?}",
        w.shape()
    );
    let x = rand(&[4, 1, 28, 28], 8);
    let d = max_diff(&run(&silenced(&orig, &groups), &x), &run(&g, &x));
    assert!(d < 1e-4, "{d}");
    // The hidden dense layer thins too (its units are fc2's input columns).
    let mut h = orig.clone();
    let r = prune_filters(&mut h, &spec(Criterion::L1, 0.5, Some(&["fc1"]))).expect("fc1");
    assert_eq!(r[0].channels_after, 250);
    let d = max_diff(&run(&silenced(&orig, &r), &x), &run(&h, &x));
    assert!(d < 1e-4, "{d}");
}

fn conv(name: &str, x: &str, cin: usize, cout: usize, k: usize, r: &mut Rng, g: &mut Graph) {
    let w = format!("{name}.weight");
    let b = format!("{name}.bias");
    let n = cout * cin * k * k;
    let v: Vec<f32> = (0..n).map(|_| r.normal() * 0.5).collect();
    g.weights.insert(
        w.clone(),
        lithe::tensor::from_vec(&[cout, cin, k, k], v).expect("w"),
    );
    let bv: Vec<f32> = (0..cout).map(|_| r.normal() * 0.1).collect();
    g.weights
        .insert(b.clone(), lithe::tensor::from_vec(&[cout], bv).expect("b"));
    let p = k / 2;
    let attrs = ConvAttrs {
        pads: [p; 4],
        ..ConvAttrs::new([k, k])
    };
    g.nodes.push(Node::new(name, Op::Conv(attrs), &[x, &w, &b]));
}

fn bn(name: &str, x: &str, c: usize, r: &mut Rng, g: &mut Graph) {
    let names = ["scale", "bias", "mean", "var"].map(|s| format!("{name}.{s}"));
    for (k, n) in names.iter().enumerate() {
        let v: Vec<f32> = (0..c)
            .map(|_| match k {
                3 => 0.5 + r.uniform(),
                _ => r.normal() * 0.5 + if k == 0 { 1.0 } else { 0.0 },
            })
            .collect();
        g.weights
            .insert(n.clone(), lithe::tensor::from_vec(&[c], v).expect("bn"));
    }
    let mut ins = vec![x];
    ins.extend(names.iter().map(|s| s.as_str()));
    g.nodes.push(Node::new(
        name,
        Op::BatchNorm {
            epsilon: 1e-5,
            momentum: 0.9,
        },
        &ins,
    ));
}

/// `input → conv_a → bn_a → relu_a → conv_b → bn_b → add(relu_a, ·) → relu_c → conv_c →
/// add2(relu_c, ·) → gap → flatten → fc (logits)`: conv_a, conv_b and conv_c share one channel
/// group through the two residual Adds.
fn residual(concat: bool) -> Graph {
    let mut r = Rng::new(3);
    let mut g = Graph {
        name: "residual".into(),
        inputs: vec![ValueInfo {
            name: "input".into(),
            shape: vec![
                Dim::Sym("N".into()),
                Dim::Fixed(1),
                Dim::Fixed(8),
                Dim::Fixed(8),
            ],
        }],
        outputs: vec!["fc".into()],
        ..Graph::default()
    };
    conv("conv_a", "input", 1, 6, 3, &mut r, &mut g);
    bn("bn_a", "conv_a", 6, &mut r, &mut g);
    g.nodes.push(Node::new("relu_a", Op::Relu, &["bn_a"]));
    conv("conv_b", "relu_a", 6, 6, 3, &mut r, &mut g);
    bn("bn_b", "conv_b", 6, &mut r, &mut g);
    g.nodes.push(Node::new("add", Op::Add, &["relu_a", "bn_b"]));
    g.nodes.push(Node::new("relu_c", Op::Relu, &["add"]));
    conv("conv_c", "relu_c", 6, 6, 1, &mut r, &mut g);
    g.nodes
        .push(Node::new("add2", Op::Add, &["relu_c", "conv_c"]));
    let last = if concat {
        g.nodes.push(Node::new(
            "cat",
            Op::Concat { axis: 1 },
            &["add2", "relu_a"],
        ));
        "cat"
    } else {
        "add2"
    };
    g.nodes.push(Node::new("gap", Op::GlobalAvgPool, &[last]));
    g.nodes
        .push(Node::new("flatten", Op::Flatten { axis: 1 }, &["gap"]));
    let cin = if concat { 12 } else { 6 };
    let v: Vec<f32> = (0..4 * cin).map(|_| r.normal()).collect();
    g.weights.insert(
        "fc.weight".into(),
        lithe::tensor::from_vec(&[4, cin], v).expect("fc"),
    );
    g.weights
        .insert("fc.bias".into(), lithe::tensor::zeros(&[4]));
    g.nodes.push(Node::new(
        "fc",
        Op::Gemm(GemmAttrs {
            trans_b: true,
            ..GemmAttrs::default()
        }),
        &["flatten", "fc.weight", "fc.bias"],
    ));
    g.validate().expect("valid");
    g
}

#[test]
fn residual_adds_share_one_keep_set() {
    let orig = residual(false);
    let mut g = orig.clone();
    let groups = prune_filters(&mut g, &spec(Criterion::L1, 0.5, None)).expect("prune");
    assert_eq!(groups.len(), 1, "{groups:?}");
    let gr = &groups[0];
    assert_eq!(gr.producers, ["conv_a", "conv_b", "conv_c"]);
    assert_eq!(gr.kept.len(), 3);
    // The keep set is chosen by the summed L1 norms of the three producers' filters.
    let l1 = |w: &str, c: usize| -> f32 {
        orig.weights[w]
            .index_axis(ndarray::Axis(0), c)
            .iter()
            .map(|v| v.abs())
            .sum()
    };
    let score: Vec<f32> = (0..6)
        .map(|c| l1("conv_a.weight", c) + l1("conv_b.weight", c) + l1("conv_c.weight", c))
        .collect();
    let mut order: Vec<usize> = (0..6).collect();
    order.sort_by(|&p, &q| score[q].total_cmp(&score[p]));
    let mut best = order[..3].to_vec();
    best.sort_unstable();
    assert_eq!(gr.kept, best);
    assert_eq!(shape(&g, "conv_a.weight"), [3, 1, 3, 3]);
    assert_eq!(shape(&g, "conv_b.weight"), [3, 3, 3, 3]);
    assert_eq!(shape(&g, "conv_c.weight"), [3, 3, 1, 1]);
    assert_eq!(shape(&g, "bn_b.mean"), [3]);
    assert_eq!(shape(&g, "fc.weight"), [4, 3]);
    let x = rand(&[2, 1, 8, 8], 9);
    let d = max_diff(&run(&silenced(&orig, &groups), &x), &run(&g, &x));
    assert!(d < 1e-5, "{d}");
    // Pruning only one producer of the sum prunes the whole group, never one side.
    let mut h = orig.clone();
    let r = prune_filters(&mut h, &spec(Criterion::L1, 0.5, Some(&["conv_b"]))).expect("b");
    assert_eq!(r[0].producers.len(), 3);
    assert_eq!(shape(&h, "conv_a.weight")[0], shape(&h, "conv_c.weight")[0]);
}

#[test]
fn concat_and_logits_are_left_alone() {
    let mut g = residual(true);
    let groups = prune_filters(&mut g, &spec(Criterion::L1, 0.5, None)).expect("prune");
    assert!(groups.is_empty(), "{groups:?}");
    assert_eq!(g, residual(true));
    let err = prune_filters(&mut g, &spec(Criterion::L1, 0.5, Some(&["conv_a"]))).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("Concat")),
        "{err}"
    );
    let mut m = zoo::build(zoo::Arch::Lenet300100, 1).expect("mlp");
    let err = prune_filters(&mut m, &spec(Criterion::L1, 0.5, Some(&["fc3"]))).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("graph output")),
        "{err}"
    );
}

#[test]
fn bn_gamma_ranks_by_scale() {
    let mut g = zoo::build(zoo::Arch::Mobilenet, 2).expect("build");
    // γ_i = (i·7 mod 16) + 1: a permutation that L1 ranking would not reproduce.
    let gamma: Vec<f32> = (0..16).map(|i| ((i * 7) % 16) as f32 + 1.0).collect();
    g.weights.insert(
        "stem_bn.scale".into(),
        lithe::tensor::from_vec(&[16], gamma.clone()).expect("gamma"),
    );
    let r = prune_filters(&mut g, &spec(Criterion::BnGamma, 0.25, Some(&["stem"]))).expect("bn");
    let mut want: Vec<usize> = (0..16).filter(|&i| gamma[i] > 4.0).collect();
    want.sort_unstable();
    assert_eq!(r[0].kept, want);
    assert_eq!(r[0].channels_after, 12);
    let kept_gamma: Vec<f32> = g.weights["stem_bn.scale"].iter().copied().collect();
    assert!(kept_gamma.iter().all(|&v| v > 4.0));
    // Without BatchNorm there is nothing to rank by.
    let mut l = zoo::build(zoo::Arch::Lenet5, 1).expect("lenet");
    let err = prune_filters(&mut l, &spec(Criterion::BnGamma, 0.5, None)).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
}

#[test]
fn bad_knobs_are_errors() {
    let g = zoo::build(zoo::Arch::Lenet5, 1).expect("lenet");
    let bad = [
        spec(Criterion::L1, 1.0, None),
        spec(Criterion::L1, -0.1, None),
        spec(Criterion::L1, f32::NAN, None),
        spec(Criterion::L1, 0.5, Some(&[])),
        spec(Criterion::L1, 0.5, Some(&["nope"])),
        spec(Criterion::L1, 0.5, Some(&["relu1"])),
        FilterSpec {
            min_channels: 0,
            ..spec(Criterion::L1, 0.5, None)
        },
    ];
    for s in bad {
        let mut h = g.clone();
        let err = prune_filters(&mut h, &s).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{s:?}: {err}");
        assert_eq!(h, g, "a failed pass leaves the graph alone");
    }
    // min_channels bounds what is removed.
    let mut h = g.clone();
    let r = prune_filters(
        &mut h,
        &FilterSpec {
            min_channels: 18,
            ..spec(Criterion::L1, 0.9, Some(&["conv1"]))
        },
    )
    .expect("min");
    assert_eq!(r[0].channels_after, 18);
    // Structured passes must come before prune/quantize/share.
    let recipe = Recipe {
        passes: vec![
            PassSpec::Prune(PruneSpec::Global { ratio: 0.5 }),
            PassSpec::PruneFilters(spec(Criterion::L1, 0.5, None)),
        ],
    };
    let err = recipe
        .apply(&g, None, None, &mut |_| std::ops::ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(m) if m.contains("before prune")),
        "{err}"
    );
    // JSON knobs.
    let json = r#"{"passes": [{"pass": "prune_filters", "criterion": "bn_gamma", "ratio": 0.5},
        {"pass": "merge_linear", "first": "fc2", "second": "fc3"},
        {"pass": "remove_block", "first": "a", "last": "b"}]}"#;
    let r = Recipe::from_json(json).expect("parse");
    assert_eq!(
        r.passes[0],
        PassSpec::PruneFilters(spec(Criterion::BnGamma, 0.5, None))
    );
    assert_eq!(
        Recipe::from_json(&r.to_json().expect("json")).expect("again"),
        r
    );
    let bad = r#"{"passes": [{"pass": "prune_filters", "criterion": "l2", "ratio": 0.5}]}"#;
    assert!(Recipe::from_json(bad).is_err());
}

#[test]
fn recipe_reports_and_fine_tunes_the_thin_graph() {
    let g = model("lenet-5");
    let train = Dataset::load(Path::new(WORKSPACE).join("www/data/mnist-train-6k.lmn.gz"))
        .expect("train")
        .take(2000);
    let test = Dataset::load(Path::new(WORKSPACE).join("www/data/mnist-test.lmn.gz"))
        .expect("test")
        .take(1000);
    let recipe = Recipe {
        passes: vec![
            PassSpec::PruneFilters(spec(Criterion::L1, 0.6, None)),
            PassSpec::FineTune(lithe::train::TrainConfig {
                epochs: 1,
                lr: 5e-4,
                seed: 1,
                ..lithe::train::TrainConfig::default()
            }),
        ],
    };
    let out = recipe
        .apply(&g, Some(&train), Some(&test), &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("apply");
    let p = &out.reports[0];
    assert_eq!(p.pass, "prune_filters");
    assert!(
        p.macs_after * 3 < p.macs_before,
        "{} -> {}",
        p.macs_before,
        p.macs_after
    );
    assert!(p.bytes_after * 3 < p.bytes_before);
    let fc1 = p.layers.iter().find(|l| l.node == "fc1").expect("fc1 row");
    assert_eq!(fc1.params, 200 * 320);
    assert!(fc1.encoding.contains("-> [200, 320]"), "{}", fc1.encoding);
    let (a0, a1, a2) = (
        p.accuracy_before.expect("acc"),
        p.accuracy_after.expect("acc"),
        out.reports[1].accuracy_after.expect("acc"),
    );
    eprintln!("lenet-5 60% filters: {a0} -> {a1} -> fine-tuned {a2}");
    assert!(a2 > 0.9 && a2 >= a1 - 0.01, "{a0} {a1} {a2}");
    assert_eq!(out.finetune.len(), 1);
}

/// A Python that imports onnxruntime and numpy, or `None`.
fn python() -> Option<PathBuf> {
    let py = std::env::var_os("LITHE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(WORKSPACE).join(".venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

/// A float32 `.npy` (format 1.0).
fn npy(t: &Tensor) -> Vec<u8> {
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in t.as_standard_layout().iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[test]
fn thinned_model_exports_and_onnxruntime_agrees() {
    let orig = model("mobilenet");
    let mut g = orig.clone();
    prune_filters(&mut g, &spec(Criterion::L1, 0.5, None)).expect("prune");
    let before = onnx::export(&orig).expect("export");
    let bytes = onnx::export(&g).expect("export");
    assert!(
        bytes.len() * 2 < before.len(),
        "{} -> {}",
        before.len(),
        bytes.len()
    );
    let back = onnx::import(&bytes).expect("re-import");
    let x = rand(&[4, 1, 28, 28], 11);
    let y = run(&g, &x);
    assert_eq!(run(&back, &x), y);
    let Some(py) = python() else {
        eprintln!("skipped onnxruntime: no python with onnxruntime");
        return;
    };
    let dir = std::env::temp_dir().join(format!("lithe-structured-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (m, i, o) = (dir.join("thin.onnx"), dir.join("x.npy"), dir.join("y.npy"));
    std::fs::write(&m, &bytes).expect("write");
    std::fs::write(&i, npy(&x)).expect("write");
    std::fs::write(&o, npy(&y)).expect("write");
    let run = Command::new(&py)
        .arg(Path::new(WORKSPACE).join("scripts/onnx_check.py"))
        .args([&m, &i, &o])
        .output()
        .expect("python");
    std::fs::remove_dir_all(&dir).ok();
    let said =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    eprintln!("onnxruntime: {}", said.trim());
    assert!(run.status.success(), "{said}");
}

#[test]
fn merging_linear_layers_without_activation_is_exact() {
    let mut r = Rng::new(5);
    let mut g = Graph {
        name: "two-gemms".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            shape: vec![Dim::Sym("N".into()), Dim::Fixed(12)],
        }],
        outputs: vec!["y".into()],
        ..Graph::default()
    };
    let mut t = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        lithe::tensor::from_vec(shape, (0..n).map(|_| r.normal()).collect()).expect("t")
    };
    // First Gemm stores W as [in, out] (trans_b false) with alpha/beta; the second [out, in].
    g.weights.insert("w1".into(), t(&[12, 7]));
    g.weights.insert("b1".into(), t(&[7]));
    g.weights.insert("w2".into(), t(&[5, 7]));
    g.weights.insert("b2".into(), t(&[1, 5]));
    g.nodes.push(Node::new(
        "g1",
        Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            ..GemmAttrs::default()
        }),
        &["x", "w1", "b1"],
    ));
    let mut g2 = Node::new(
        "g2",
        Op::Gemm(GemmAttrs {
            alpha: 1.5,
            beta: 0.25,
            trans_b: true,
            ..GemmAttrs::default()
        }),
        &["g1", "w2", "b2"],
    );
    g2.outputs = vec!["y".into()];
    g.nodes.push(g2);
    g.validate().expect("valid");
    let x = rand(&[6, 12], 4);
    let want = run(&g, &x);
    let mut m = g.clone();
    let change = layer::merge_linear(
        &mut m,
        &MergeSpec {
            first: "g1".into(),
            second: "g2".into(),
        },
    )
    .expect("merge");
    assert_eq!(change.removed, ["g1"]);
    assert!(change.dropped_activations.is_empty());
    assert_eq!(m.nodes.len(), 1);
    assert_eq!(shape(&m, "w2"), [5, 12]);
    assert!(!m.weights.contains_key("w1") && !m.weights.contains_key("b1"));
    let d = max_diff(&want, &run(&m, &x));
    assert!(d < 1e-5, "{d}");
    // Wrong order or a non-Gemm is an error.
    for (a, b) in [("g2", "g1"), ("g1", "nope"), ("g1", "g1")] {
        let mut h = g.clone();
        let s = MergeSpec {
            first: a.into(),
            second: b.into(),
        };
        assert!(layer::merge_linear(&mut h, &s).is_err(), "{a} {b}");
    }
}

#[test]
fn merging_through_an_activation_drops_it() {
    let orig = zoo::build(zoo::Arch::Lenet300100, 3).expect("mlp");
    let mut g = orig.clone();
    let recipe = Recipe {
        passes: vec![PassSpec::MergeLinear(MergeSpec {
            first: "fc2".into(),
            second: "fc3".into(),
        })],
    };
    let out = recipe
        .apply(&g, None, None, &mut |_| std::ops::ControlFlow::Continue(()))
        .expect("apply");
    let r = &out.reports[0];
    assert_eq!(r.pass, "merge_linear");
    assert!(r.macs_after < r.macs_before && r.bytes_after < r.bytes_before);
    let change = layer::merge_linear(
        &mut g,
        &MergeSpec {
            first: "fc2".into(),
            second: "fc3".into(),
        },
    )
    .expect("merge");
    assert_eq!(change.dropped_activations, ["relu2"]);
    assert_eq!(out.graph, g);
    assert_eq!(shape(&g, "fc3.weight"), [10, 300]);
    assert!(!g.weights.contains_key("fc2.weight"));
    // Equal to the original without relu2 (checked on a copy whose fc2 output is linear).
    let x = rand(&[3, 1, 28, 28], 2);
    let mut linear = orig.clone();
    linear.nodes.retain(|n| n.name != "relu2");
    for n in &mut linear.nodes {
        for v in &mut n.inputs {
            if v == "relu2" {
                *v = "fc2".into();
            }
        }
    }
    let d = max_diff(&run(&linear, &x), &run(&g, &x));
    assert!(d < 1e-4, "{d}");
}

#[test]
fn removing_a_block_makes_it_the_identity() {
    let orig = residual(false);
    let mut g = orig.clone();
    let change = layer::remove_block(
        &mut g,
        &BlockSpec {
            first: "conv_b".into(),
            last: "add".into(),
        },
    )
    .expect("remove");
    assert_eq!(change.removed, ["conv_b", "bn_b", "add"]);
    assert!(!g.weights.contains_key("conv_b.weight") && !g.weights.contains_key("bn_b.var"));
    // The original with the branch silenced (bn_b outputs 0, so add = relu_a).
    let mut silent = orig.clone();
    for w in ["bn_b.scale", "bn_b.bias"] {
        silent.weights.get_mut(w).expect("bn").fill(0.0);
    }
    let x = rand(&[2, 1, 8, 8], 6);
    let d = max_diff(&run(&silent, &x), &run(&g, &x));
    assert!(d < 1e-6, "{d}");
    let bad = [
        ("add", "conv_b"),    // wrong order
        ("bn_b", "add"),      // reads relu_a from outside besides its input
        ("conv_a", "relu_a"), // 1 → 6 channels
        ("missing", "add"),
    ];
    for (a, b) in bad {
        let mut h = orig.clone();
        let s = BlockSpec {
            first: a.into(),
            last: b.into(),
        };
        let err = layer::remove_block(&mut h, &s).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{a}..{b}: {err}");
        assert_eq!(h, orig);
    }
    let mut m = model("mobilenet");
    let err = layer::remove_block(
        &mut m,
        &BlockSpec {
            first: "block3_dw".into(),
            last: "block3_pw_relu".into(),
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(s) if s.contains("must match")),
        "{err}"
    );
}

/// Full-MNIST figures (docs/COMPRESSION.md, "Structured pruning"): runs `recipe` on the zoo
/// model `name`, fine-tuning on the 55k training split, and prints every report.
fn measure(name: &str, recipe: &Recipe) {
    let full = Dataset::load(Path::new(WORKSPACE).join(".data/mnist/train.lmn.gz"))
        .expect("full MNIST in .data/mnist (cargo xtask data)");
    let (train, _val) = full.split(full.len() / 12, 1);
    let test =
        Dataset::load(Path::new(WORKSPACE).join("www/data/mnist-test.lmn.gz")).expect("test");
    let g = model(name);
    let bytes0 = onnx::export(&g).expect("export").len();
    let t = std::time::Instant::now();
    let out = recipe
        .apply(&g, Some(&train), Some(&test), &mut |p| {
            if p.step % 200 == 0 || p.step == p.steps {
                eprintln!(
                    "  epoch {}/{} step {}/{} loss {:.4} acc {:.4} ({:.0} s)",
                    p.epoch + 1,
                    p.epochs,
                    p.step,
                    p.steps,
                    p.loss,
                    p.accuracy,
                    t.elapsed().as_secs_f32()
                );
            }
            std::ops::ControlFlow::Continue(())
        })
        .expect("apply");
    let bytes1 = onnx::export(&out.graph).expect("export").len();
    println!(
        "{name}: {} train images, {:.0} s",
        train.len(),
        t.elapsed().as_secs_f32()
    );
    for r in &out.reports {
        println!(
            "  {:<14} acc {:.2}% -> {:.2}%  MACs {} -> {} ({:.1}% removed)  weight bytes {} -> {}",
            r.pass,
            100.0 * r.accuracy_before.unwrap_or(0.0),
            100.0 * r.accuracy_after.unwrap_or(0.0),
            r.macs_before,
            r.macs_after,
            100.0 * (1.0 - r.macs_after as f64 / r.macs_before.max(1) as f64),
            r.bytes_before,
            r.bytes_after
        );
        for l in &r.layers {
            println!("      {:<10} {:<18} {}", l.node, l.name, l.encoding);
        }
    }
    let info0 = metrics::model_info(&g).expect("info");
    let info1 = metrics::model_info(&out.graph).expect("info");
    println!(
        "  total: MACs {} -> {} ({:.1}% removed), params {} -> {}, ONNX file {} -> {} bytes",
        info0.macs,
        info1.macs,
        100.0 * (1.0 - info1.macs as f64 / info0.macs as f64),
        info0.params,
        info1.params,
        bytes0,
        bytes1
    );
}

fn recipe_file(name: &str) -> Recipe {
    let path = Path::new(WORKSPACE).join(format!("recipes/{name}.json"));
    Recipe::from_json(&std::fs::read_to_string(path).expect("recipe")).expect("parse")
}

#[test]
#[ignore = "full-MNIST measurement: cargo test -p lithe --test compress_structured -- --ignored --nocapture measure_slim_mobilenet"]
fn measure_slim_mobilenet() {
    let recipe = match std::env::var("LITHE_SLIM_RECIPE") {
        Ok(json) => Recipe::from_json(&json).expect("LITHE_SLIM_RECIPE"),
        Err(_) => recipe_file("slim"),
    };
    measure("mobilenet", &recipe);
}

#[test]
#[ignore = "full-MNIST measurement"]
fn measure_lenet5_filters() {
    let recipe = Recipe::from_json(
        r#"{"passes": [
            {"pass": "prune_filters", "criterion": "l1", "ratio": 0.5, "layers": ["conv1", "conv2"]},
            {"pass": "fine_tune", "epochs": 1, "batch_size": 64, "lr": 0.0005, "seed": 1}
        ]}"#,
    )
    .expect("recipe");
    measure("lenet-5", &recipe);
}

#[test]
#[ignore = "full-MNIST measurement"]
fn measure_lenet300_merge() {
    let recipe = Recipe::from_json(
        r#"{"passes": [
            {"pass": "merge_linear", "first": "fc2", "second": "fc3"},
            {"pass": "fine_tune", "epochs": 1, "batch_size": 64, "lr": 0.0005, "seed": 1}
        ]}"#,
    )
    .expect("recipe");
    measure("lenet-300-100", &recipe);
}
