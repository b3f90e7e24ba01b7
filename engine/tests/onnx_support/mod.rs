//! Shared by the ONNX tests: small hand-built graphs covering every op, and a deterministic
//! generator for their weights and inputs.
#![allow(dead_code)]

use lithe::graph::{AutoPad, ConvAttrs, Dim, GemmAttrs, Graph, Node, Op, PoolAttrs, ValueInfo};
use lithe::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A deterministic tensor with values in `[-0.5, 0.5) · scale + offset`.
pub fn rand(shape: &[usize], seed: u64, scale: f32, offset: f32) -> Tensor {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Tensor::from_shape_fn(ndarray::IxDyn(shape), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale + offset
    })
}

fn input(name: &str, dims: &[usize]) -> ValueInfo {
    let mut shape = vec![Dim::Sym("N".into())];
    shape.extend(dims.iter().map(|&d| Dim::Fixed(d)));
    ValueInfo {
        name: name.into(),
        shape,
    }
}

fn node(name: &str, op: Op, inputs: &[&str]) -> Node {
    Node::new(name, op, inputs)
}

/// Adds BatchNorm parameters for `c` channels under `prefix`.
fn bn_weights(g: &mut Graph, prefix: &str, c: usize, seed: u64) {
    g.weights
        .insert(format!("{prefix}.scale"), rand(&[c], seed, 0.5, 1.0));
    g.weights
        .insert(format!("{prefix}.bias"), rand(&[c], seed + 1, 0.5, 0.0));
    g.weights
        .insert(format!("{prefix}.mean"), rand(&[c], seed + 2, 0.5, 0.0));
    g.weights
        .insert(format!("{prefix}.var"), rand(&[c], seed + 3, 0.5, 1.0));
}

/// An MLP: Gemm (transB) → Relu → Dropout → Gemm (alpha, beta) → Softmax.
pub fn mlp() -> Graph {
    let mut g = Graph {
        name: "mlp".into(),
        inputs: vec![input("x", &[16])],
        ..Graph::default()
    };
    g.weights
        .insert("fc1.w".into(), rand(&[32, 16], 1, 0.6, 0.0));
    g.weights.insert("fc1.b".into(), rand(&[32], 2, 0.2, 0.0));
    g.weights
        .insert("fc2.w".into(), rand(&[32, 10], 3, 0.6, 0.0));
    g.weights.insert("fc2.b".into(), rand(&[10], 4, 0.2, 0.0));
    g.nodes = vec![
        node(
            "fc1",
            Op::Gemm(GemmAttrs {
                trans_b: true,
                ..GemmAttrs::default()
            }),
            &["x", "fc1.w", "fc1.b"],
        ),
        node("relu1", Op::Relu, &["fc1"]),
        node("drop", Op::Dropout { ratio: 0.2 }, &["relu1"]),
        node(
            "fc2",
            Op::Gemm(GemmAttrs {
                alpha: 0.5,
                beta: 2.0,
                ..GemmAttrs::default()
            }),
            &["drop", "fc2.w", "fc2.b"],
        ),
        node(
            "prob",
            Op::Softmax {
                axis: -1,
                coerce_2d: false,
            },
            &["fc2"],
        ),
    ];
    g.outputs = vec!["prob".into()];
    g.metadata
        .insert("lithe.preprocess".into(), "0.003921569,0,1".into());
    g.metadata.insert("source".into(), "onnx tests".into());
    g
}

/// A convolutional net with two branches: Conv, BatchNorm, Relu, MaxPool (ceil, dilation),
/// depthwise Conv with SAME_UPPER, Clip, AveragePool, Sigmoid, Concat, Add, Tanh,
/// GlobalAveragePool, Flatten, Reshape, MatMul, Gemm, LogSoftmax.
pub fn convnet() -> Graph {
    let mut g = Graph {
        name: "convnet".into(),
        inputs: vec![input("image", &[3, 12, 12])],
        ..Graph::default()
    };
    g.weights
        .insert("c1.w".into(), rand(&[8, 3, 3, 3], 10, 0.8, 0.0));
    g.weights.insert("c1.b".into(), rand(&[8], 11, 0.2, 0.0));
    bn_weights(&mut g, "bn1", 8, 12);
    g.weights
        .insert("dw.w".into(), rand(&[8, 1, 3, 3], 16, 1.0, 0.0));
    g.weights
        .insert("c2.w".into(), rand(&[16, 16, 1, 1], 17, 0.6, 0.0));
    g.weights.insert("c2.b".into(), rand(&[16], 18, 0.2, 0.0));
    g.weights.insert("mm.w".into(), rand(&[4, 5], 19, 0.8, 0.0));
    g.weights
        .insert("fc.w".into(), rand(&[20, 10], 20, 0.8, 0.0));
    g.weights.insert("fc.b".into(), rand(&[10], 21, 0.2, 0.0));
    let c1 = ConvAttrs {
        pads: [1, 1, 1, 1],
        ..ConvAttrs::new([3, 3])
    };
    let mp1 = PoolAttrs {
        kernel: [3, 3],
        strides: [2, 2],
        ceil_mode: true,
        ..PoolAttrs::square(3)
    };
    let dw = ConvAttrs {
        groups: 8,
        auto_pad: AutoPad::SameUpper,
        ..ConvAttrs::new([3, 3])
    };
    let ap = PoolAttrs {
        strides: [1, 1],
        pads: [1, 1, 1, 1],
        ..PoolAttrs::square(3)
    };
    let mp2 = PoolAttrs {
        kernel: [2, 2],
        strides: [1, 1],
        dilations: [2, 2],
        ..PoolAttrs::square(2)
    };
    g.nodes = vec![
        node("c1", Op::Conv(c1), &["image", "c1.w", "c1.b"]),
        node(
            "bn1",
            Op::BatchNorm {
                epsilon: 1e-3,
                momentum: 0.9,
            },
            &["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
        ),
        node("r1", Op::Relu, &["bn1"]),
        node("mp1", Op::MaxPool(mp1), &["r1"]),
        node("dw", Op::Conv(dw), &["mp1", "dw.w"]),
        node("relu6", Op::Clip { min: 0.0, max: 6.0 }, &["dw"]),
        node("ap", Op::AvgPool(ap), &["mp1"]),
        node("sig", Op::Sigmoid, &["ap"]),
        node("cat", Op::Concat { axis: 1 }, &["relu6", "sig"]),
        node(
            "c2",
            Op::Conv(ConvAttrs::new([1, 1])),
            &["cat", "c2.w", "c2.b"],
        ),
        node("res", Op::Add, &["cat", "c2"]),
        node("tanh", Op::Tanh, &["res"]),
        node("mp2", Op::MaxPool(mp2), &["tanh"]),
        node("gap", Op::GlobalAvgPool, &["mp2"]),
        node("flat", Op::Flatten { axis: 1 }, &["gap"]),
        node(
            "r3",
            Op::Reshape {
                shape: vec![0, 4, 4],
            },
            &["flat"],
        ),
        node("mm", Op::MatMul, &["r3", "mm.w"]),
        node(
            "r2",
            Op::Reshape {
                shape: vec![-1, 20],
            },
            &["mm"],
        ),
        node(
            "fc",
            Op::Gemm(GemmAttrs::default()),
            &["r2", "fc.w", "fc.b"],
        ),
        node(
            "logp",
            Op::LogSoftmax {
                axis: 1,
                coerce_2d: false,
            },
            &["fc"],
        ),
    ];
    g.outputs = vec!["logp".into()];
    g
}

/// Pooling and clipping corner cases with two outputs: AveragePool counting the padding with
/// ceil mode, MaxPool with SAME_LOWER, one-sided Clips, and an opset-11 style Softmax
/// (normalising the flattened trailing dims, which export writes as Flatten → Softmax →
/// Reshape).
pub fn pools() -> Graph {
    let mut g = Graph {
        name: "pools".into(),
        inputs: vec![input("x", &[2, 7, 7])],
        ..Graph::default()
    };
    let ap = PoolAttrs {
        strides: [2, 2],
        pads: [1, 1, 1, 1],
        count_include_pad: true,
        ..PoolAttrs::square(3)
    };
    let mp = PoolAttrs {
        auto_pad: AutoPad::SameLower,
        ..PoolAttrs::square(2)
    };
    g.nodes = vec![
        node("ap", Op::AvgPool(ap), &["x"]),
        node(
            "lo",
            Op::Clip {
                min: -0.25,
                max: f32::INFINITY,
            },
            &["ap"],
        ),
        node("mp", Op::MaxPool(mp), &["lo"]),
        node(
            "hi",
            Op::Clip {
                min: f32::NEG_INFINITY,
                max: 0.3,
            },
            &["mp"],
        ),
        node(
            "soft",
            Op::Softmax {
                axis: 1,
                coerce_2d: true,
            },
            &["hi"],
        ),
        node(
            "lsoft",
            Op::LogSoftmax {
                axis: -1,
                coerce_2d: true,
            },
            &["hi"],
        ),
    ];
    g.outputs = vec!["soft".into(), "lsoft".into()];
    g
}

/// Every sample graph with a name, the shape of one input item (without the batch), and
/// whether export → import gives the identical graph back (`pools` gains a Flatten/Reshape
/// pair around its opset-11 style Softmax).
pub fn samples() -> Vec<(&'static str, Graph, bool)> {
    vec![
        ("mlp", mlp(), true),
        ("convnet", convnet(), true),
        ("pools", pools(), false),
        ("act_quant", act_quant(), true),
    ]
}

/// Quantized activations as the `qat` pass writes them: Gemm → Sign (binary) → Gemm →
/// Clip → Mul → Round → Mul (2-bit DoReFa on `[0, 1.5]`) → Gemm.
pub fn act_quant() -> Graph {
    let mut g = Graph {
        name: "act_quant".into(),
        inputs: vec![input("x", &[12])],
        ..Graph::default()
    };
    for (k, (i, o)) in [(12, 16), (16, 8), (8, 10)].into_iter().enumerate() {
        g.weights
            .insert(format!("fc{k}.w"), rand(&[i, o], 10 + k as u64, 0.8, 0.0));
        g.weights
            .insert(format!("fc{k}.b"), rand(&[o], 20 + k as u64, 0.4, 0.0));
    }
    g.weights.insert(
        "up".into(),
        Tensor::from_elem(ndarray::IxDyn(&[1]), 3.0 / 1.5),
    );
    g.weights.insert(
        "down".into(),
        Tensor::from_elem(ndarray::IxDyn(&[1]), 1.5 / 3.0),
    );
    let gemm = || Op::Gemm(GemmAttrs::default());
    g.nodes = vec![
        node("fc0", gemm(), &["x", "fc0.w", "fc0.b"]),
        node("sign", Op::Sign, &["fc0"]),
        node("fc1", gemm(), &["sign", "fc1.w", "fc1.b"]),
        node("clip", Op::Clip { min: 0.0, max: 1.5 }, &["fc1"]),
        node("scaled", Op::Mul, &["clip", "up"]),
        node("round", Op::Round, &["scaled"]),
        node("q", Op::Mul, &["round", "down"]),
        node("fc2", gemm(), &["q", "fc2.w", "fc2.b"]),
    ];
    g.outputs = vec!["fc2".into()];
    g
}

/// A batch of inputs for `g`'s only input.
pub fn batch_input(g: &Graph, batch: usize, seed: u64) -> Tensor {
    rand(&g.inputs[0].concrete(batch), seed, 4.0, 0.0)
}

/// A Python that can import onnxruntime and numpy, or `None` (with a message).
pub fn python() -> anyhow::Result<Option<PathBuf>> {
    let (py, explicit) = match std::env::var_os("LITHE_PYTHON") {
        Some(p) => (PathBuf::from(p), true),
        None => (Path::new(WORKSPACE).join(".venv/bin/python"), false),
    };
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import onnxruntime, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    match (ok, explicit) {
        (true, _) => Ok(Some(py)),
        (false, true) => anyhow::bail!(
            "LITHE_PYTHON={} cannot import onnxruntime and numpy",
            py.display()
        ),
        (false, false) => {
            eprintln!("skipped: no python with onnxruntime (run cargo xtask setup)");
            Ok(None)
        }
    }
}

/// Writes a float32 little-endian `.npy` (format 1.0).
pub fn write_npy(path: &Path, t: &Tensor) -> anyhow::Result<()> {
    let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        0 => "()".to_string(),
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + t.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&u16::try_from(header.len())?.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in t.iter() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes)?;
    Ok(())
}
