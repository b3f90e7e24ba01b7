//! Integer-only int8 inference (`lithe::compress::intonly`): fixed-point arithmetic against hand
//! cases and f64, each integer operator against the float reference op on the dequantized
//! values, the whole executor against its fake-quant float twin on the zoo models, the encoding
//! (round trip, truncation, hostile bytes), unsupported operators, and the `int8` pass. The
//! `#[ignore]`d test at the end measures the zoo table of docs/COMPRESSION.md.

use lithe::Error;
use lithe::compress::intonly::{
    self, Calibration, Int8Spec, QAdd, QGraph, QNode, QOp, QParams, QValue, QWeights, Requant,
    Window, multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
};
use lithe::compress::{PassSpec, Recipe};
use lithe::data::{Dataset, Preprocess};
use lithe::exec;
use lithe::format::onnx;
use lithe::graph::{ConvAttrs, Dim, GemmAttrs, Graph, Node, Op, PoolAttrs, ValueInfo};
use lithe::rng::Rng;
use lithe::tensor::{Tensor, from_vec};
use std::ops::ControlFlow;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn zoo(name: &str) -> Graph {
    let bytes = std::fs::read(root().join(format!("www/models/{name}.onnx"))).unwrap();
    onnx::import(&bytes).unwrap()
}

fn go(_: &lithe::train::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

// ---------------------------------------------------------------------------------------------
// Fixed point.
// ---------------------------------------------------------------------------------------------

#[test]
fn fixed_point_hand_cases() {
    let h = saturating_rounding_doubling_high_mul;
    assert_eq!(h(i32::MIN, i32::MIN), i32::MAX);
    assert_eq!(h(1 << 30, 1 << 30), 1 << 29); // 0.5 · 0.5 = 0.25
    assert_eq!(h(i32::MAX, i32::MAX), i32::MAX - 1);
    assert_eq!(h(-(1 << 30), 1 << 30), -(1 << 29));
    assert_eq!(h(3, 1 << 30), 2); // 1.5 rounds away from zero
    // gemmlowp's nudge for negative products is 1 − 2^30: negative ties go toward +∞.
    assert_eq!(h(-3, 1 << 30), -1);
    assert_eq!(h(1, 1 << 30), 1); // 0.5 → 1
    assert_eq!(h(-1, 1 << 30), 0);
    assert_eq!(h(-5, 3 << 29), -4); // −3.75
    assert_eq!(h(0, i32::MIN), 0);
    let r = rounding_divide_by_pot;
    for (x, e, want) in [
        (5, 1, 3),
        (-5, 1, -3),
        (4, 1, 2),
        (-4, 1, -2),
        (7, 2, 2),
        (6, 2, 2),
        (-6, 2, -2),
        (5, 2, 1),
        (-5, 2, -1),
        (1, 0, 1),
        (i32::MAX, 31, 1),
        (i32::MIN, 31, -1),
        (-(1 << 30), 31, -1),
        ((1 << 30) - 1, 31, 0),
    ] {
        assert_eq!(r(x, e), want, "RDBPOT({x}, {e})");
    }
    // Multipliers: exact powers of two.
    assert_eq!(quantize_multiplier(0.5).unwrap(), (1 << 30, 0));
    assert_eq!(quantize_multiplier(1.0).unwrap(), (1 << 30, -1));
    assert_eq!(quantize_multiplier(0.25).unwrap(), (1 << 30, 1));
    assert_eq!(quantize_multiplier(0.0).unwrap(), (0, 0));
    assert!(quantize_multiplier(f64::NAN).is_err());
    assert!(quantize_multiplier(-1.0).is_err());
    assert!(quantize_multiplier(1e12).is_err());
    // Requantization hand cases: acc · M rounded half away from zero.
    let m = |x: i32, real: f64| {
        let (m0, s) = quantize_multiplier(real).unwrap();
        multiply_by_quantized_multiplier(x, m0, s)
    };
    assert_eq!(m(3, 0.5), 2);
    assert_eq!(m(-3, 0.5), -1); // negative tie toward +∞, as gemmlowp
    assert_eq!(m(6, 0.25), 2); // 1.5 → 2
    assert_eq!(m(-6, 0.25), -2); // SRDHM −3, then RoundingDivideByPOT −1.5 → −2 (away from 0)
    // Double rounding (5·2^−1 = 2.5 → 3, then 3/2 = 1.5 → 2): the ≤ 1 error bound that the
    // f64 comparison below allows.
    assert_eq!(m(5, 0.25), 2);
    assert_eq!(m(1000, 0.3), 300);
    assert_eq!(m(-1000, 0.3), -300);
    assert_eq!(m(7, 3.0), 21);
    // Saturating left shift: 2^30·8 saturates to i32::MAX, then ·0.5.
    assert_eq!(m(1 << 30, 4.0), 1 << 30);
    assert_eq!(m(12345, 1e-12), 0);
}

#[test]
fn fixed_point_matches_f64_within_one() {
    let mut rng = Rng::new(11);
    for i in 0..100_000 {
        let real = match i % 3 {
            0 => rng.uniform() as f64,
            1 => (rng.uniform() as f64) * 1e-4,
            _ => 0.5 + 8.0 * rng.uniform() as f64,
        };
        let x = ((rng.next_u64() >> 40) as i64 - (1 << 23)) as i32; // |x| < 2^23
        let (m0, s) = quantize_multiplier(real).unwrap();
        assert!(real == 0.0 || (1 << 30..=i32::MAX).contains(&m0) || s == 31);
        let back = m0 as f64 * 2f64.powi(-31 - s);
        assert!(
            (back - real).abs() <= real * 2f64.powi(-30),
            "{real}: {back}"
        );
        let got = multiply_by_quantized_multiplier(x, m0, s) as f64;
        let want = x as f64 * real;
        assert!((got - want).abs() <= 1.0, "{x} · {real}: {got} vs {want}");
    }
}

#[test]
fn qparams_cover_zero_and_the_range() {
    let q = QParams::from_range(0.0, 1.0).unwrap();
    assert_eq!(q.zero_point, -128);
    for p in 0..=255u8 {
        // Every x/255 pixel is exact.
        let v = p as f32 / 255.0;
        assert!((q.dequantize(q.quantize(v)) - v).abs() < 1e-6);
    }
    let q = QParams::from_range(-1.0, 3.0).unwrap();
    assert_eq!(q.dequantize(q.quantize(0.0)), 0.0);
    assert!((q.scale - 4.0 / 255.0).abs() < 1e-7);
    let q = QParams::from_range(2.0, 5.0).unwrap(); // widened to include 0
    assert_eq!(q.zero_point, -128);
    assert!(QParams::from_range(f32::NAN, 1.0).is_err());
}

// ---------------------------------------------------------------------------------------------
// Each integer operator against the float reference on dequantized values.
// ---------------------------------------------------------------------------------------------

fn qp(scale: f32, zero_point: i8) -> QParams {
    QParams { scale, zero_point }
}

fn codes(rng: &mut Rng, n: usize) -> Vec<i8> {
    (0..n)
        .map(|_| (rng.below(256) as i32 - 128) as i8)
        .collect()
}

/// Quantizes random float weights `[out, …]` into a layer (as the builder does).
fn layer(
    rng: &mut Rng,
    shape: &[usize],
    s_in: f32,
    s_out: f32,
    act: (i8, i8),
) -> (QWeights, Requant) {
    let n: usize = shape.iter().product();
    let out = shape[0];
    let per = n / out;
    let w: Vec<f32> = (0..n).map(|_| rng.normal() * 0.3).collect();
    let mut data = Vec::new();
    let mut scales = Vec::new();
    let mut bias = Vec::new();
    let mut multiplier = Vec::new();
    let mut shift = Vec::new();
    for c in 0..out {
        let row = &w[c * per..(c + 1) * per];
        let s = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        data.extend(row.iter().map(|v| (v / s).round() as i8));
        scales.push(s);
        bias.push((rng.normal() * 0.2 / (s_in * s)).round() as i32);
        let (m0, sh) = quantize_multiplier(s_in as f64 * s as f64 / s_out as f64).unwrap();
        multiplier.push(m0);
        shift.push(sh as i8);
    }
    (
        QWeights {
            shape: shape.to_vec(),
            data,
            scales,
            bias,
        },
        Requant {
            multiplier,
            shift,
            act_min: act.0,
            act_max: act.1,
        },
    )
}

fn one_node(values: Vec<QValue>, op: QOp, inputs: Vec<usize>) -> QGraph {
    let output = values.len() - 1;
    let q = QGraph {
        input_name: "x".into(),
        preprocess: Preprocess::default(),
        values,
        nodes: vec![QNode {
            name: "op".into(),
            op,
            inputs,
            output,
        }],
        output,
    };
    q.check().unwrap();
    q
}

/// A float graph `x → node → y` with the given weights, input `[N, shape…]`.
fn float_graph(shape: &[usize], op: Op, weights: Vec<(&str, Tensor)>) -> Graph {
    let mut dims = vec![Dim::Sym("N".into())];
    dims.extend(shape.iter().map(|&d| Dim::Fixed(d)));
    let mut g = Graph {
        inputs: vec![ValueInfo {
            name: "x".into(),
            shape: dims,
        }],
        outputs: vec!["y".into()],
        ..Graph::default()
    };
    let mut ins = vec!["x"];
    ins.extend(weights.iter().map(|(k, _)| *k));
    let mut n = Node::new("y", op, &ins);
    n.name = "op".into();
    g.nodes.push(n);
    for (k, t) in weights {
        g.weights.insert(k.into(), t);
    }
    g.validate().unwrap();
    g
}

/// Runs `q` on random codes for 3 images and the float graph on their dequantized values;
/// asserts every output is within `tol` output steps. Returns the largest difference in steps.
fn compare(q: &QGraph, g: &Graph, tol: f32, seed: u64) -> f32 {
    let mut rng = Rng::new(seed);
    let n = 3;
    let numel: usize = q.input_shape().iter().product();
    let x = codes(&mut rng, n * numel);
    let y = q.run_integer(&x, n).unwrap();
    let q0 = q.input_params();
    let mut shape = vec![n];
    shape.extend_from_slice(q.input_shape());
    let xf = from_vec(&shape, x.iter().map(|&c| q0.dequantize(c)).collect()).unwrap();
    let want = exec::run(g, &[("x", &xf)]).unwrap().remove(0);
    let oq = q.values[q.output].q;
    assert_eq!(want.len(), y.len());
    let mut worst = 0.0f32;
    for (a, b) in y.iter().zip(want.iter()) {
        let d =
            (oq.dequantize(*a) - b.clamp(oq.dequantize(-128), oq.dequantize(127))).abs() / oq.scale;
        worst = worst.max(d);
    }
    assert!(
        worst <= tol,
        "{}: off by {worst} steps",
        q.nodes[0].op.name()
    );
    worst
}

#[test]
fn dense_matches_float_within_a_step() {
    let mut rng = Rng::new(1);
    let (s_in, s_out) = (0.02, 0.05);
    let (w, rq) = layer(&mut rng, &[7, 40], s_in, s_out, (-128, 127));
    let values = vec![
        QValue {
            shape: vec![40],
            q: qp(s_in, 9),
        },
        QValue {
            shape: vec![7],
            q: qp(s_out, -4),
        },
    ];
    let q = one_node(values, QOp::Dense { w, rq }, vec![0]);
    let (wd, bd) = q.dequantized_layer("op").unwrap();
    let g = float_graph(
        &[40],
        Op::Gemm(GemmAttrs {
            trans_b: true,
            ..GemmAttrs::default()
        }),
        vec![
            ("w", from_vec(&[7, 40], wd).unwrap()),
            ("b", from_vec(&[7], bd).unwrap()),
        ],
    );
    compare(&q, &g, 0.51, 2);
}

#[test]
fn grouped_strided_padded_conv_matches_float_within_a_step() {
    let mut rng = Rng::new(3);
    let (s_in, s_out) = (0.03, 0.04);
    for (groups, m, stride, pad, dil) in [
        (4, 8, 2, 1, 1),
        (1, 3, 1, 0, 1),
        (4, 4, 1, 1, 1),
        (2, 6, 2, 2, 1),
        (4, 4, 1, 2, 2),
        (1, 2, 2, 1, 2),
    ] {
        let cg = 4 / groups;
        let (w, rq) = layer(&mut rng, &[m, cg, 3, 3], s_in, s_out, (-20, 127));
        let oh = (7 + 2 * pad - 2 * dil - 1) / stride + 1;
        let values = vec![
            QValue {
                shape: vec![4, 7, 7],
                q: qp(s_in, -7),
            },
            QValue {
                shape: vec![m, oh, oh],
                q: qp(s_out, -20),
            },
        ];
        let win = Window {
            kernel: [3, 3],
            strides: [stride, stride],
            dilations: [dil, dil],
            pads: [pad; 4],
        };
        let q = one_node(values, QOp::Conv { w, groups, win, rq }, vec![0]);
        let (wd, bd) = q.dequantized_layer("op").unwrap();
        let mut a = ConvAttrs::new([3, 3]);
        a.strides = [stride, stride];
        a.pads = [pad; 4];
        a.groups = groups;
        a.dilations = [dil, dil];
        // The clamp at code −20 = real 0 is a fused ReLU.
        let mut g = float_graph(
            &[4, 7, 7],
            Op::Conv(a),
            vec![
                ("w", from_vec(&[m, cg, 3, 3], wd).unwrap()),
                ("b", from_vec(&[m], bd).unwrap()),
            ],
        );
        g.nodes[0].outputs = vec!["pre".into()];
        g.nodes.push(Node::new("y", Op::Relu, &["pre"]));
        g.validate().unwrap();
        compare(&q, &g, 0.51, 4);
    }
}

#[test]
fn pools_clamp_and_reshape_match_float() {
    let q0 = qp(0.05, 13);
    let vals = |out: Vec<usize>| {
        vec![
            QValue {
                shape: vec![3, 7, 7],
                q: q0,
            },
            QValue { shape: out, q: q0 },
        ]
    };
    let win = |k: usize, s: usize, p: usize| Window {
        kernel: [k, k],
        strides: [s, s],
        dilations: [1, 1],
        pads: [p; 4],
    };
    let attrs = |k: usize, s: usize, p: usize, inc: bool| {
        let mut a = PoolAttrs::square(k);
        a.strides = [s, s];
        a.pads = [p; 4];
        a.count_include_pad = inc;
        a
    };
    // Max pooling is exact.
    let q = one_node(vals(vec![3, 4, 4]), QOp::MaxPool(win(3, 2, 1)), vec![0]);
    assert_eq!(
        compare(
            &q,
            &float_graph(&[3, 7, 7], Op::MaxPool(attrs(3, 2, 1, false)), vec![]),
            0.0,
            5
        ),
        0.0
    );
    // Average pooling rounds to the nearest code.
    for inc in [false, true] {
        let q = one_node(
            vals(vec![3, 4, 4]),
            QOp::AvgPool {
                win: win(3, 2, 1),
                count_include_pad: inc,
            },
            vec![0],
        );
        compare(
            &q,
            &float_graph(&[3, 7, 7], Op::AvgPool(attrs(3, 2, 1, inc)), vec![]),
            0.5001,
            6,
        );
    }
    let q = one_node(vals(vec![3, 1, 1]), QOp::GlobalAvgPool, vec![0]);
    compare(
        &q,
        &float_graph(&[3, 7, 7], Op::GlobalAvgPool, vec![]),
        0.5001,
        7,
    );
    // ReLU and ReLU6 are exact clamps.
    let relu6 = (q0.quantize(0.0), q0.quantize(6.0));
    let q = one_node(
        vals(vec![3, 7, 7]),
        QOp::Clamp {
            lo: relu6.0,
            hi: 127,
        },
        vec![0],
    );
    assert_eq!(
        compare(&q, &float_graph(&[3, 7, 7], Op::Relu, vec![]), 0.0, 8),
        0.0
    );
    let q = one_node(
        vals(vec![3, 7, 7]),
        QOp::Clamp {
            lo: relu6.0,
            hi: relu6.1,
        },
        vec![0],
    );
    let clip = Op::Clip { min: 0.0, max: 6.0 };
    compare(&q, &float_graph(&[3, 7, 7], clip, vec![]), 1e-3, 8);
    // A grid where 6.0 is a code, so the ReLU6 upper bound is active.
    let q6 = qp(0.05, -100);
    let v6 = vec![
        QValue {
            shape: vec![3, 7, 7],
            q: q6,
        },
        QValue {
            shape: vec![3, 7, 7],
            q: q6,
        },
    ];
    let q = one_node(
        v6,
        QOp::Clamp {
            lo: q6.quantize(0.0),
            hi: q6.quantize(6.0),
        },
        vec![0],
    );
    assert_eq!(q6.dequantize(q6.quantize(6.0)), 6.0);
    let clip = Op::Clip { min: 0.0, max: 6.0 };
    compare(&q, &float_graph(&[3, 7, 7], clip, vec![]), 1e-3, 10);
    let q = one_node(vals(vec![147]), QOp::Reshape, vec![0]);
    assert_eq!(
        compare(
            &q,
            &float_graph(&[3, 7, 7], Op::Flatten { axis: 1 }, vec![]),
            0.0,
            9
        ),
        0.0
    );
}

#[test]
fn add_rescales_both_inputs() {
    // x (value 0) → Dense → v1; Add(x, v1) → v2, each with its own scale and zero point.
    let mut rng = Rng::new(5);
    let (s0, s1, s2) = (0.02f32, 0.05f32, 0.07f32);
    let (w, rq) = layer(&mut rng, &[6, 6], s0, s1, (-128, 127));
    let values = vec![
        QValue {
            shape: vec![6],
            q: qp(s0, 5),
        },
        QValue {
            shape: vec![6],
            q: qp(s1, -10),
        },
        QValue {
            shape: vec![6],
            q: qp(s2, 3),
        },
    ];
    let twice = 2.0 * s0.max(s1) as f64;
    let m = |r: f64| {
        let (a, b) = quantize_multiplier(r).unwrap();
        (a, b as i8)
    };
    let add = QAdd {
        a: m(s0 as f64 / twice),
        b: m(s1 as f64 / twice),
        out: m(twice / ((1u64 << intonly::ADD_LEFT_SHIFT) as f64 * s2 as f64)),
        act_min: -128,
        act_max: 127,
    };
    let dense = QNode {
        name: "fc".into(),
        op: QOp::Dense { w, rq },
        inputs: vec![0],
        output: 1,
    };
    let full = QGraph {
        input_name: "x".into(),
        preprocess: Preprocess::default(),
        values: values.clone(),
        nodes: vec![
            dense.clone(),
            QNode {
                name: "add".into(),
                op: QOp::Add(add),
                inputs: vec![0, 1],
                output: 2,
            },
        ],
        output: 2,
    };
    full.check().unwrap();
    let half = QGraph {
        nodes: vec![dense],
        output: 1,
        ..full.clone()
    };
    half.check().unwrap();
    let x = codes(&mut rng, 6 * 50);
    let v1 = half.run_integer(&x, 50).unwrap();
    let v2 = full.run_integer(&x, 50).unwrap();
    for i in 0..x.len() {
        let real = values[0].q.dequantize(x[i]) + values[1].q.dequantize(v1[i]);
        let want = (real / s2).round() + 3.0;
        let want = want.clamp(-128.0, 127.0);
        assert!(
            (v2[i] as f32 - want).abs() <= 1.0,
            "{i}: {} vs {want}",
            v2[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Whole models.
// ---------------------------------------------------------------------------------------------

fn mnist() -> (Dataset, Dataset) {
    let train = Dataset::load(root().join("www/data/mnist-train-6k.lmn.gz")).unwrap();
    let test = Dataset::load(root().join("www/data/mnist-test.lmn.gz")).unwrap();
    (train, test)
}

#[test]
fn integer_executor_agrees_with_the_fake_quant_twin_on_the_zoo() {
    let (train, test) = mnist();
    let test = test.take(200);
    for name in ["tiny-mlp", "lenet-300-100", "lenet-5", "mobilenet"] {
        let g = zoo(name);
        let spec = Int8Spec {
            calibration: 300,
            method: Calibration::MinMax,
        };
        let q = QGraph::build(&g, &train, &spec).unwrap();
        let pre = Preprocess::from_metadata(&g.metadata).unwrap_or_default();
        let (x, _) = test.batch(&(0..test.len()).collect::<Vec<_>>(), &pre);
        let a = q.run(&x).unwrap();
        let b = q.run_simulated(&x).unwrap();
        let f = exec::run(&g, &[("input", &x)]).unwrap().remove(0);
        let s = q.values[q.output].q.scale;
        let (mut agree, mut agree_float, mut worst) = (0, 0, 0.0f32);
        for i in 0..test.len() {
            let row = |t: &Tensor| t.as_slice().unwrap()[i * 10..(i + 1) * 10].to_vec();
            let (ra, rb, rf) = (row(&a), row(&b), row(&f));
            let am = |r: &[f32]| lithe::train::loss::argmax(r).0;
            agree += usize::from(am(&ra) == am(&rb));
            agree_float += usize::from(am(&ra) == am(&rf));
            for (u, v) in ra.iter().zip(&rb) {
                worst = worst.max((u - v).abs() / s);
            }
        }
        println!(
            "{name}: twin top-1 agreement {agree}/200, float {agree_float}/200, worst logit {worst} steps"
        );
        assert!(agree >= 198, "{name}: {agree}/200");
        assert!(
            agree_float >= 196,
            "{name}: {agree_float}/200 against float"
        );
        assert!(worst <= 8.0, "{name}: {worst}");
        let int_acc = q.evaluate(&test, 100).unwrap().accuracy;
        let float_acc = lithe::metrics::evaluate(&g, &test, 100).unwrap().accuracy;
        assert!(
            int_acc >= float_acc - 0.02,
            "{name}: {int_acc} vs {float_acc}"
        );
    }
}

#[test]
fn encoding_round_trips_and_rejects_damage() {
    let (train, test) = mnist();
    let q = QGraph::build(
        &zoo("mobilenet"),
        &train,
        &Int8Spec {
            calibration: 100,
            method: Calibration::Ema,
        },
    )
    .unwrap();
    let bytes = q.encode().unwrap();
    let back = QGraph::decode(&bytes).unwrap();
    assert_eq!(back, q);
    let (x, _) = test
        .take(20)
        .batch(&(0..20).collect::<Vec<_>>(), &q.preprocess);
    assert_eq!(back.run(&x).unwrap(), q.run(&x).unwrap());
    // Size: int8 weights + 4·(scale, bias, multiplier) + shift per channel, plus small structure.
    let params: usize = q
        .nodes
        .iter()
        .map(|n| match &n.op {
            QOp::Dense { w, .. } | QOp::Conv { w, .. } => w.data.len() + 13 * w.shape[0],
            _ => 0,
        })
        .sum();
    assert!(
        bytes.len() > params && bytes.len() < params + 4096,
        "{} vs {params}",
        bytes.len()
    );
    // Every truncation is a decode error.
    for cut in (0..bytes.len())
        .step_by(97)
        .chain(bytes.len() - 8..bytes.len())
    {
        assert!(
            matches!(QGraph::decode(&bytes[..cut]), Err(Error::Decode { .. })),
            "cut {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(QGraph::decode(&longer), Err(Error::Decode { .. })));
    // Random damage: an error or a model that still runs, never a panic.
    let small = QGraph::build(
        &zoo("tiny-mlp"),
        &train,
        &Int8Spec {
            calibration: 50,
            method: Calibration::MinMax,
        },
    )
    .unwrap();
    let sb = small.encode().unwrap();
    let x1 = x.slice(ndarray::s![0..1, .., .., ..]).to_owned().into_dyn();
    let mut rng = Rng::new(9);
    let mut ok = 0;
    for _ in 0..3000 {
        let mut b = sb.clone();
        for _ in 0..1 + rng.below(3) {
            // Mostly the header and structure (the first bytes and the tail), sometimes anywhere.
            let at = match rng.below(3) {
                0 => rng.below(120.min(b.len())),
                1 => b.len() - 1 - rng.below(64),
                _ => rng.below(b.len()),
            };
            b[at] = rng.below(256) as u8;
        }
        match QGraph::decode(&b) {
            Ok(d) => {
                ok += 1;
                let _ = d.run(&x1);
            }
            Err(e) => assert!(matches!(e, Error::Decode { .. }), "{e}"),
        }
    }
    assert!(ok < 3000);
}

#[test]
fn hostile_headers_are_decode_errors() {
    let mut h = b"LQI8\x01".to_vec();
    h.extend_from_slice(&1u32.to_le_bytes());
    h.push(b'x');
    h.extend_from_slice(&[0; 12]);
    let with = |tail: &[u8]| {
        let mut b = h.clone();
        b.extend_from_slice(tail);
        b
    };
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"NOPE\x01".to_vec(),
        b"LQI8\x09".to_vec(),
        // A name length of 4 GiB.
        [b"LQI8\x01".as_slice(), &u32::MAX.to_le_bytes()].concat(),
        // 4 billion values.
        with(&u32::MAX.to_le_bytes()),
        // One value of rank 200.
        with(&[[1, 0, 0, 0].as_slice(), &[0, 0, 128, 63, 0, 200]].concat()),
        // One value of shape [2^32-1, 2^32-1] (element count overflow / limit).
        with(&[[1u8, 0, 0, 0].as_slice(), &[0, 0, 128, 63, 0, 2], &[255; 8]].concat()),
        // A valid value, then 4 billion nodes.
        with(
            &[
                [1u8, 0, 0, 0].as_slice(),
                &[0, 0, 128, 63, 0, 1, 4, 0, 0, 0],
                &[255; 4],
            ]
            .concat(),
        ),
        // A dense node claiming a 65535×65535 weight with no bytes behind it.
        with(
            &[
                [1u8, 0, 0, 0].as_slice(),
                &[0, 0, 128, 63, 0, 1, 4, 0, 0, 0],
                &[1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                &[255, 255, 0, 0, 255, 255, 0, 0],
            ]
            .concat(),
        ),
    ];
    for (i, b) in cases.iter().enumerate() {
        assert!(
            matches!(QGraph::decode(b), Err(Error::Decode { .. })),
            "case {i}"
        );
    }
    // A node that reads a value no node wrote.
    let q = QGraph {
        input_name: "x".into(),
        preprocess: Preprocess::default(),
        values: vec![
            QValue {
                shape: vec![4],
                q: qp(0.1, 0),
            },
            QValue {
                shape: vec![4],
                q: qp(0.1, 0),
            },
            QValue {
                shape: vec![4],
                q: qp(0.1, 0),
            },
        ],
        nodes: vec![QNode {
            name: "r".into(),
            op: QOp::Reshape,
            inputs: vec![2],
            output: 1,
        }],
        output: 1,
    };
    assert!(q.check().is_err() && q.encode().is_err());
}

#[test]
fn unsupported_operators_are_named() {
    let (train, _) = mnist();
    let mut g = zoo("tiny-mlp");
    let last = g.nodes.len() - 1;
    g.nodes[last].outputs = vec!["pre".into()];
    g.nodes.push(Node::new("sig", Op::Sigmoid, &["pre"]));
    g.nodes.push(Node::new(
        "sm",
        Op::Softmax {
            axis: 1,
            coerce_2d: false,
        },
        &["sig"],
    ));
    g.outputs = vec!["sm".into()];
    g.validate().unwrap();
    match QGraph::build(&g, &train, &Int8Spec::default()) {
        Err(Error::UnsupportedOps(ops)) => assert_eq!(ops, vec!["Sigmoid", "Softmax"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn int8_pass_reports_integer_accuracy_and_real_bytes() {
    let (train, test) = mnist();
    let g = zoo("lenet-5");
    let recipe = Recipe::from_json(
        r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.5},
                       {"pass": "int8", "calibration": 200, "method": "ema"}]}"#,
    )
    .unwrap();
    assert_eq!(
        recipe.passes[1],
        PassSpec::Int8(Int8Spec {
            calibration: 200,
            method: Calibration::Ema
        })
    );
    assert_eq!(
        Recipe::from_json(&recipe.to_json().unwrap()).unwrap(),
        recipe
    );
    let eval = test.take(300);
    let out = recipe
        .apply(&g, Some(&train), Some(&eval), &mut go)
        .unwrap();
    let q = out.int8.as_ref().unwrap();
    let r = &out.reports[1];
    assert_eq!(r.pass, "int8");
    assert_eq!(r.bytes_after, q.encode().unwrap().len());
    assert!(
        r.bytes_after * 2 < r.bytes_before,
        "{} vs {}",
        r.bytes_after,
        r.bytes_before
    );
    assert_eq!(
        r.accuracy_after,
        Some(q.evaluate(&eval, 256).unwrap().accuracy)
    );
    assert!(r.accuracy_after.unwrap() > 0.95);
    assert_eq!(r.layers.len(), 4);
    assert!(
        r.sparsity >= 0.49,
        "pruned weights stay zero: {}",
        r.sparsity
    );
    // The returned float graph carries the dequantized weights: close to the integer model.
    let fl = lithe::metrics::evaluate(&out.graph, &eval, 256)
        .unwrap()
        .accuracy;
    assert!((fl - r.accuracy_after.unwrap()).abs() < 0.01);
    // Nothing runs after int8; int8 needs calibration data; it replaces quantize.
    let mut more = recipe.clone();
    more.passes
        .push(PassSpec::Prune(lithe::compress::prune::PruneSpec::Global {
            ratio: 0.6,
        }));
    assert!(more.apply(&g, Some(&train), None, &mut go).is_err());
    assert!(recipe.apply(&g, None, None, &mut go).is_err());
    let bad = Recipe::from_json(r#"{"passes": [{"pass": "int8", "calibration": 0}]}"#).unwrap();
    assert!(bad.apply(&g, Some(&train), None, &mut go).is_err());
    let def = Recipe::from_json(r#"{"passes": [{"pass": "int8"}]}"#).unwrap();
    assert_eq!(def.passes[0], PassSpec::Int8(Int8Spec::default()));
}

// ---------------------------------------------------------------------------------------------
// Measurement (docs/COMPRESSION.md table).
// ---------------------------------------------------------------------------------------------

/// Full 10k test set, all zoo models, calibration on the first N images of the 6k training
/// subset with each method. Run with
/// `cargo test -p lithe --test compress_intonly -- --ignored --nocapture zoo_table`.
#[test]
#[ignore]
fn zoo_table() {
    let (train, test) = mnist();
    println!(
        "| model | float | method | calib | int8 | loss pp | f32 bytes | int8 bytes | ratio |"
    );
    for name in ["lenet-300-100", "lenet-5", "mobilenet", "tiny-mlp"] {
        let g = zoo(name);
        let float = lithe::metrics::evaluate(&g, &test, 256).unwrap().accuracy;
        let f32_bytes: usize = g.weights.values().map(|w| 4 * w.len()).sum();
        for (method, calib) in [(Calibration::MinMax, 1000), (Calibration::Ema, 1000)] {
            let q = QGraph::build(
                &g,
                &train,
                &Int8Spec {
                    calibration: calib,
                    method,
                },
            )
            .unwrap();
            let acc = q.evaluate(&test, 256).unwrap().accuracy;
            let bytes = q.encode().unwrap().len();
            println!(
                "| {name} | {:.2} | {method:?} | {calib} | {:.2} | {:+.2} | {f32_bytes} | {bytes} | {:.2}× |",
                100.0 * float,
                100.0 * acc,
                100.0 * (float - acc),
                f32_bytes as f64 / bytes as f64
            );
        }
    }
}
