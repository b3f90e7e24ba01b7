//! Import of hand-written ONNX models: the opset-specific forms of every op, constant folding,
//! and malformed or hostile files, which must each give a clear error and never panic.

mod onnx_support;

use lithe::Error;
use lithe::format::onnx::{self, proto};
use lithe::graph::{AutoPad, Dim, Graph, Op};
use prost::Message;
use proto::attribute_proto::AttributeType;
use proto::tensor_proto::DataType;
use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};

// ---------------------------------------------------------------------------------------------
// Small builders for ONNX protos.

/// A float input; a negative dim is the symbolic batch `N`.
fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
    use proto::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d < 0 {
                Value::DimParam("N".into())
            } else {
                Value::DimValue(d)
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(proto::TensorShapeProto { dim }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn out(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("{op}:{}", outputs.first().copied().unwrap_or(""))),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}
fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}
fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}
fn a_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}
fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}
fn a_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attr(name, AttributeType::Tensor)
    }
}

fn f32_init(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: data,
        ..Default::default()
    }
}
fn i64_init(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}
fn seq(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

struct M {
    ir: i64,
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<&'static str>,
}

impl M {
    fn new(
        opset: i64,
        inputs: Vec<ValueInfoProto>,
        nodes: Vec<NodeProto>,
        outputs: &[&'static str],
    ) -> Self {
        M {
            ir: 7,
            opset,
            nodes,
            inits: vec![],
            inputs,
            outputs: outputs.to_vec(),
        }
    }
    fn inits(mut self, inits: Vec<TensorProto>) -> Self {
        self.inits = inits;
        self
    }
    fn proto(&self) -> ModelProto {
        ModelProto {
            ir_version: Some(self.ir),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(GraphProto {
                name: Some("g".into()),
                node: self.nodes.clone(),
                initializer: self.inits.clone(),
                input: self.inputs.clone(),
                output: self.outputs.iter().map(|o| out(o)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
    fn bytes(&self) -> Vec<u8> {
        self.proto().encode_to_vec()
    }
    fn import(&self) -> lithe::Result<Graph> {
        onnx::import(&self.bytes())
    }
}

fn only_op(g: &Graph) -> &Op {
    assert_eq!(g.nodes.len(), 1, "{:?}", g.nodes);
    &g.nodes[0].op
}

fn run1(g: &Graph, x: &lithe::tensor::Tensor) -> lithe::tensor::Tensor {
    lithe::exec::run(g, &[(g.inputs[0].name.as_str(), x)])
        .expect("run")
        .remove(0)
}

// ---------------------------------------------------------------------------------------------
// Opset-specific forms.

#[test]
fn clip_bounds_are_attributes_before_opset_11_and_inputs_after() -> anyhow::Result<()> {
    let attrs = M::new(
        10,
        vec![vi("x", &[-1, 4])],
        vec![node(
            "Clip",
            &["x"],
            &["y"],
            vec![a_float("min", -1.0), a_float("max", 2.5)],
        )],
        &["y"],
    );
    assert_eq!(
        only_op(&attrs.import()?),
        &Op::Clip {
            min: -1.0,
            max: 2.5
        }
    );
    let only_max = M::new(
        9,
        vec![vi("x", &[-1, 4])],
        vec![node("Clip", &["x"], &["y"], vec![a_float("max", 6.0)])],
        &["y"],
    );
    assert_eq!(
        only_op(&only_max.import()?),
        &Op::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0
        }
    );

    let scalar = |n: &str, v: f32| f32_init(n, &[], vec![v]);
    let inputs = M::new(
        11,
        vec![vi("x", &[-1, 4])],
        vec![node("Clip", &["x", "lo", "hi"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![scalar("lo", 0.0), scalar("hi", 6.0)]);
    let g = inputs.import()?;
    assert_eq!(only_op(&g), &Op::Clip { min: 0.0, max: 6.0 });
    assert_eq!(g.nodes[0].inputs, ["x"]);
    assert!(
        g.weights.is_empty(),
        "bounds folded into the op are not weights"
    );
    let only_hi = M::new(
        13,
        vec![vi("x", &[-1, 4])],
        vec![node("Clip", &["x", "", "hi"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![scalar("hi", 6.0)]);
    assert_eq!(
        only_op(&only_hi.import()?),
        &Op::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0
        }
    );
    // A bound computed at run time cannot be honoured.
    let dynamic = M::new(
        13,
        vec![vi("x", &[-1, 4]), vi("m", &[])],
        vec![node("Clip", &["x", "m"], &["y"], vec![])],
        &["y"],
    );
    assert!(matches!(
        dynamic.import(),
        Err(Error::Attribute { attr: "min", .. })
    ));
    Ok(())
}

#[test]
fn softmax_axis_defaults_follow_the_opset() -> anyhow::Result<()> {
    for (op, opset, want_axis, coerce) in [
        ("Softmax", 11, 1, true),
        ("Softmax", 13, -1, false),
        ("LogSoftmax", 7, 1, true),
        ("LogSoftmax", 21, -1, false),
    ] {
        let m = M::new(
            opset,
            vec![vi("x", &[-1, 2, 3])],
            vec![node(op, &["x"], &["y"], vec![])],
            &["y"],
        );
        let g = m.import()?;
        let got = only_op(&g).clone();
        let want = if op == "Softmax" {
            Op::Softmax {
                axis: want_axis,
                coerce_2d: coerce,
            }
        } else {
            Op::LogSoftmax {
                axis: want_axis,
                coerce_2d: coerce,
            }
        };
        assert_eq!(got, want, "{op} opset {opset}");
    }
    // Opset 11: normalise over the flattened [2, 3] trailing dims.
    let m = M::new(
        11,
        vec![vi("x", &[-1, 2, 3])],
        vec![node("Softmax", &["x"], &["y"], vec![])],
        &["y"],
    );
    let g = m.import()?;
    let y = run1(&g, &onnx_support::rand(&[2, 2, 3], 3, 2.0, 0.0));
    for b in 0..2 {
        let s: f32 = y.index_axis(ndarray::Axis(0), b).iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "row {b} sums to {s}");
    }
    Ok(())
}

#[test]
fn dropout_ratio_is_an_attribute_before_opset_12_and_an_input_after() -> anyhow::Result<()> {
    let attr = M::new(
        10,
        vec![vi("x", &[-1, 4])],
        vec![node(
            "Dropout",
            &["x"],
            &["y", "mask"],
            vec![a_float("ratio", 0.3)],
        )],
        &["y"],
    );
    assert_eq!(only_op(&attr.import()?), &Op::Dropout { ratio: 0.3 });
    let default = M::new(
        7,
        vec![vi("x", &[-1, 4])],
        vec![node("Dropout", &["x"], &["y"], vec![])],
        &["y"],
    );
    assert_eq!(only_op(&default.import()?), &Op::Dropout { ratio: 0.5 });
    let input = M::new(
        12,
        vec![vi("x", &[-1, 4])],
        vec![node("Dropout", &["x", "r"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![f32_init("r", &[], vec![0.1])]);
    assert_eq!(only_op(&input.import()?), &Op::Dropout { ratio: 0.1 });
    let training = M::new(
        13,
        vec![vi("x", &[-1, 4])],
        vec![node("Dropout", &["x", "r", "t"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![
        f32_init("r", &[], vec![0.1]),
        TensorProto {
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![1],
            ..i64_init("t", &[1])
        },
    ]);
    assert!(matches!(
        training.import(),
        Err(Error::Attribute {
            attr: "training_mode",
            ..
        })
    ));
    Ok(())
}

#[test]
fn batch_norm_across_versions() -> anyhow::Result<()> {
    let params = || {
        ["s", "b", "m", "v"]
            .map(|n| f32_init(n, &[3], vec![1.0, 0.5, 2.0]))
            .to_vec()
    };
    // Opset 7: spatial=1 explicitly, four extra training outputs that nothing reads.
    let v7 = M::new(
        7,
        vec![vi("x", &[-1, 3, 2, 2])],
        vec![node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "rm", "rv", "sm", "sv"],
            vec![
                a_float("epsilon", 1e-3),
                a_float("momentum", 0.8),
                a_int("spatial", 1),
            ],
        )],
        &["y"],
    )
    .inits(params());
    let g = v7.import()?;
    assert_eq!(
        only_op(&g),
        &Op::BatchNorm {
            epsilon: 1e-3,
            momentum: 0.8
        }
    );
    assert_eq!(g.nodes[0].outputs, ["y"]);
    assert_eq!(g.weights.len(), 4);
    let spatial0 = M::new(
        8,
        vec![vi("x", &[-1, 3, 2, 2])],
        vec![node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            vec![a_int("spatial", 0)],
        )],
        &["y"],
    )
    .inits(params());
    assert!(matches!(
        spatial0.import(),
        Err(Error::Attribute {
            attr: "spatial",
            ..
        })
    ));
    // Opset 15 defaults; a training output read by the graph cannot be computed.
    let v15 = M::new(
        15,
        vec![vi("x", &[-1, 3])],
        vec![node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y", "rm"],
            vec![],
        )],
        &["y", "rm"],
    )
    .inits(params());
    let e = v15.import().unwrap_err();
    assert!(e.to_string().contains("extra output"), "{e}");
    Ok(())
}

#[test]
fn conv_and_pool_attributes() -> anyhow::Result<()> {
    // No kernel_shape: taken from the weight. SAME_LOWER, strides, dilations, group.
    let conv = M::new(
        11,
        vec![vi("x", &[-1, 4, 9, 9])],
        vec![node(
            "Conv",
            &["x", "w"],
            &["y"],
            vec![
                a_str("auto_pad", "SAME_LOWER"),
                a_ints("strides", &[2, 1]),
                a_ints("dilations", &[1, 2]),
                a_int("group", 2),
            ],
        )],
        &["y"],
    )
    .inits(vec![f32_init("w", &[6, 2, 3, 2], seq(72))]);
    let g = conv.import()?;
    let Op::Conv(a) = only_op(&g) else {
        panic!("not a conv")
    };
    assert_eq!(
        (a.kernel, a.strides, a.dilations, a.groups, a.auto_pad),
        ([3, 2], [2, 1], [1, 2], 2, AutoPad::SameLower)
    );
    assert_eq!(
        run1(&g, &onnx_support::rand(&[1, 4, 9, 9], 1, 1.0, 0.0)).shape(),
        &[1, 6, 5, 9]
    );

    let mp = M::new(
        12,
        vec![vi("x", &[-1, 1, 6, 6])],
        vec![node(
            "MaxPool",
            &["x"],
            &["y", "idx"],
            vec![
                a_ints("kernel_shape", &[3, 3]),
                a_ints("strides", &[2, 2]),
                a_ints("pads", &[0, 0, 1, 1]),
                a_int("ceil_mode", 1),
            ],
        )],
        &["y"],
    );
    let g = mp.import()?;
    let Op::MaxPool(p) = only_op(&g) else {
        panic!("not a max pool")
    };
    assert_eq!(
        (p.kernel, p.strides, p.pads, p.ceil_mode),
        ([3, 3], [2, 2], [0, 0, 1, 1], true)
    );
    let ap = M::new(
        7,
        vec![vi("x", &[-1, 1, 6, 6])],
        vec![node(
            "AveragePool",
            &["x"],
            &["y"],
            vec![
                a_ints("kernel_shape", &[2, 2]),
                a_int("count_include_pad", 1),
            ],
        )],
        &["y"],
    );
    let g = ap.import()?;
    let Op::AvgPool(p) = only_op(&g) else {
        panic!("not an average pool")
    };
    assert!(p.count_include_pad && p.strides == [1, 1]);

    let bad = |op: &str, attrs: Vec<AttributeProto>| {
        M::new(
            12,
            vec![vi("x", &[-1, 1, 6, 6])],
            vec![node(op, &["x"], &["y"], attrs)],
            &["y"],
        )
        .import()
    };
    let k = || a_ints("kernel_shape", &[2, 2]);
    assert!(matches!(
        bad("MaxPool", vec![k(), a_int("storage_order", 1)]),
        Err(Error::Attribute {
            attr: "storage_order",
            ..
        })
    ));
    assert!(matches!(
        bad("MaxPool", vec![a_ints("kernel_shape", &[2, 2, 2])]),
        Err(Error::Attribute {
            attr: "kernel_shape",
            ..
        })
    ));
    assert!(matches!(
        bad("MaxPool", vec![]),
        Err(Error::Attribute {
            attr: "kernel_shape",
            ..
        })
    ));
    assert!(matches!(
        bad("MaxPool", vec![k(), a_str("auto_pad", "SOMETIMES")]),
        Err(Error::Attribute {
            attr: "auto_pad",
            ..
        })
    ));
    assert!(matches!(
        bad("MaxPool", vec![k(), a_ints("strides", &[0, 1])]),
        Err(Error::Attribute {
            attr: "strides",
            ..
        })
    ));
    assert!(matches!(
        bad("MaxPool", vec![a_ints("kernel_shape", &[1 << 40, 2])]),
        Err(Error::Attribute { .. })
    ));
    assert!(matches!(
        bad("AveragePool", vec![k(), a_ints("dilations", &[2, 2])]),
        Err(Error::Attribute {
            attr: "dilations",
            ..
        })
    ));
    // A wrongly typed attribute is named.
    assert!(matches!(
        bad("MaxPool", vec![k(), a_float("ceil_mode", 1.0)]),
        Err(Error::Attribute {
            attr: "ceil_mode",
            ..
        })
    ));
    Ok(())
}

#[test]
fn gemm_flatten_concat_attributes() -> anyhow::Result<()> {
    let m = M::new(
        9,
        vec![vi("x", &[-1, 2, 3]), vi("z", &[-1, 6])],
        vec![
            node("Flatten", &["x"], &["f"], vec![]),
            node("Concat", &["f", "z"], &["c"], vec![a_int("axis", -1)]),
            node(
                "Gemm",
                &["c", "w", "b"],
                &["y"],
                vec![
                    a_float("alpha", 2.0),
                    a_float("beta", 0.5),
                    a_int("transA", 0),
                    a_int("transB", 1),
                ],
            ),
        ],
        &["y"],
    )
    .inits(vec![
        f32_init("w", &[4, 12], seq(48)),
        f32_init("b", &[4], seq(4)),
    ]);
    let g = m.import()?;
    assert_eq!(g.nodes[0].op, Op::Flatten { axis: 1 });
    assert_eq!(g.nodes[1].op, Op::Concat { axis: -1 });
    let Op::Gemm(a) = &g.nodes[2].op else {
        panic!("not a gemm")
    };
    assert_eq!(
        (a.alpha, a.beta, a.trans_a, a.trans_b),
        (2.0, 0.5, false, true)
    );
    let no_axis = M::new(
        9,
        vec![vi("x", &[-1, 2])],
        vec![node("Concat", &["x", "x"], &["y"], vec![])],
        &["y"],
    );
    assert!(matches!(
        no_axis.import(),
        Err(Error::Attribute { attr: "axis", .. })
    ));
    Ok(())
}

#[test]
fn reshape_shape_from_initializer_or_constant_node_is_folded() -> anyhow::Result<()> {
    let from_init = M::new(
        8,
        vec![vi("x", &[-1, 2, 6])],
        vec![node("Reshape", &["x", "s"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![i64_init("s", &[0, 3, -1])]);
    let g = from_init.import()?;
    assert_eq!(
        only_op(&g),
        &Op::Reshape {
            shape: vec![0, 3, -1]
        }
    );
    assert_eq!(g.nodes[0].inputs, ["x"]);
    assert!(g.weights.is_empty());
    assert_eq!(
        run1(&g, &onnx_support::rand(&[2, 2, 6], 1, 1.0, 0.0)).shape(),
        &[2, 3, 4]
    );

    let from_constant = M::new(
        14,
        vec![vi("x", &[-1, 2, 6])],
        vec![
            node(
                "Constant",
                &[],
                &["s"],
                vec![a_tensor("value", i64_init("", &[-1, 12]))],
            ),
            node("Reshape", &["x", "s"], &["y"], vec![]),
        ],
        &["y"],
    );
    let g = from_constant.import()?;
    assert_eq!(
        only_op(&g),
        &Op::Reshape {
            shape: vec![-1, 12]
        }
    );
    let ints = M::new(
        13,
        vec![vi("x", &[-1, 2, 6])],
        vec![
            node(
                "Constant",
                &[],
                &["s"],
                vec![a_ints("value_ints", &[-1, 12])],
            ),
            node("Reshape", &["x", "s"], &["y"], vec![]),
        ],
        &["y"],
    );
    assert_eq!(
        only_op(&ints.import()?),
        &Op::Reshape {
            shape: vec![-1, 12]
        }
    );
    Ok(())
}

#[test]
fn constants_become_weights_and_reshapes_of_weights_fold() -> anyhow::Result<()> {
    // CNTK style: the Gemm weight is a Reshape of an initializer; the bias a Constant node;
    // the graph output an Identity.
    let m = M::new(
        8,
        vec![vi("x", &[1, 6])],
        vec![
            node("Reshape", &["w_flat", "w_shape"], &["w"], vec![]),
            node(
                "Constant",
                &[],
                &["b"],
                vec![a_tensor("value", f32_init("", &[2], vec![0.5, -0.5]))],
            ),
            node("Gemm", &["x", "w", "b"], &["g"], vec![]),
            node("Identity", &["g"], &["y"], vec![]),
        ],
        &["y"],
    )
    .inits(vec![
        f32_init("w_flat", &[12], seq(12)),
        i64_init("w_shape", &[6, 2]),
    ]);
    let g = m.import()?;
    assert_eq!(g.nodes.len(), 1, "{:?}", g.nodes);
    assert_eq!(g.nodes[0].inputs, ["x", "w", "b"]);
    assert_eq!(
        g.nodes[0].outputs,
        ["y"],
        "the Identity output names the Gemm output"
    );
    assert_eq!(g.weights["w"].shape(), &[6, 2]);
    assert_eq!(g.weights["b"].as_slice(), Some(&[0.5f32, -0.5][..]));
    assert!(!g.weights.contains_key("w_flat") && !g.weights.contains_key("w_shape"));
    assert_eq!(g.trainable(), ["w", "b"]);
    assert_eq!(g.outputs, ["y"]);
    Ok(())
}

#[test]
fn identity_in_the_middle_and_of_an_input() -> anyhow::Result<()> {
    let m = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![
            node("Identity", &["x"], &["x2"], vec![]),
            node("Relu", &["x2"], &["r"], vec![]),
            node("Identity", &["r"], &["r2"], vec![]),
            node("Sigmoid", &["r2"], &["y"], vec![]),
            node("Identity", &["x"], &["echo"], vec![]),
            node("Identity", &["r"], &["r_out"], vec![]),
            node("Identity", &["r"], &["r_out2"], vec![]),
        ],
        &["y", "echo", "r_out", "r_out2"],
    );
    let g = m.import()?;
    assert_eq!(g.nodes[0].inputs, ["x"]);
    assert_eq!(
        g.nodes[0].outputs,
        ["r_out"],
        "Relu's output takes the graph output's name"
    );
    assert_eq!(g.nodes[1].inputs, ["r_out"]);
    let x = onnx_support::rand(&[2, 3], 4, 2.0, 0.0);
    let outs = lithe::exec::run(&g, &[("x", &x)])?;
    assert_eq!(outs[1], x, "an output that is an Identity of the input");
    assert_eq!(outs[2], x.mapv(|v| v.max(0.0)));
    assert_eq!(outs[3], outs[2]);
    Ok(())
}

#[test]
fn ir3_initializers_listed_as_inputs_are_weights() -> anyhow::Result<()> {
    let mut m = M::new(
        8,
        vec![vi("x", &[1, 4]), vi("w", &[4, 2]), vi("b", &[2])],
        vec![node("Gemm", &["x", "w", "b"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![
        f32_init("w", &[4, 2], seq(8)),
        f32_init("b", &[2], seq(2)),
    ]);
    m.ir = 3;
    let g = m.import()?;
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.inputs[0].shape, [Dim::Fixed(1), Dim::Fixed(4)]);
    assert_eq!(g.weights.len(), 2);
    Ok(())
}

#[test]
fn tensor_encodings_and_dims() -> anyhow::Result<()> {
    let raw = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let inits = vec![
        TensorProto {
            float_data: vec![],
            raw_data: Some(raw(&[1.0, 2.0])),
            ..f32_init("a", &[2], vec![])
        },
        TensorProto {
            data_type: Some(DataType::Double as i32),
            double_data: vec![0.25, -4.0],
            ..f32_init("d", &[2], vec![])
        },
        TensorProto {
            data_type: Some(DataType::Float16 as i32),
            raw_data: Some(vec![0x00, 0x3c, 0x00, 0xc0]),
            ..f32_init("h", &[2], vec![])
        },
    ];
    use proto::tensor_shape_proto::{Dimension, dimension::Value};
    let mut x = vi("x", &[6]);
    if let Some(proto::type_proto::Value::TensorType(t)) =
        x.r#type.as_mut().and_then(|t| t.value.as_mut())
        && let Some(s) = t.shape.as_mut()
    {
        s.dim.insert(
            0,
            Dimension {
                value: None,
                ..Default::default()
            },
        );
        s.dim.insert(
            0,
            Dimension {
                value: Some(Value::DimParam("batch".into())),
                ..Default::default()
            },
        );
    }
    let m = M::new(
        13,
        vec![x],
        vec![
            node("Concat", &["a", "d", "h"], &["c"], vec![a_int("axis", 0)]),
            node("Add", &["x", "c"], &["y"], vec![]),
        ],
        &["y"],
    )
    .inits(inits);
    let mut g = m.import()?;
    assert_eq!(
        g.inputs[0].shape,
        [
            Dim::Sym("batch".into()),
            Dim::Sym(String::new()),
            Dim::Fixed(6)
        ]
    );
    assert_eq!(g.weights["a"].as_slice(), Some(&[1.0f32, 2.0][..]));
    assert_eq!(g.weights["d"].as_slice(), Some(&[0.25f32, -4.0][..]));
    assert_eq!(g.weights["h"].as_slice(), Some(&[1.0f32, -2.0][..]));
    g.metadata.insert("k".into(), "v".into());
    // Missing dims stay missing through export.
    let back = onnx::import(&onnx::export(&g)?)?;
    assert_eq!(back.inputs, g.inputs);
    Ok(())
}

#[test]
fn metadata_props_are_kept() -> anyhow::Result<()> {
    let m = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![node("Relu", &["x"], &["y"], vec![])],
        &["y"],
    );
    let mut p = m.proto();
    p.metadata_props = vec![proto::StringStringEntryProto {
        key: Some("lithe.preprocess".into()),
        value: Some("1,0,1".into()),
    }];
    let g = onnx::import(&p.encode_to_vec())?;
    assert_eq!(
        g.metadata.get("lithe.preprocess").map(String::as_str),
        Some("1,0,1")
    );
    Ok(())
}

#[test]
fn nodes_out_of_order_and_unnamed_are_accepted() -> anyhow::Result<()> {
    let mut a = node("Relu", &["t"], &["y"], vec![]);
    let mut b = node("Tanh", &["x"], &["t"], vec![]);
    a.name = None;
    b.name = None;
    let m = M::new(13, vec![vi("x", &[-1, 3])], vec![a, b], &["y"]);
    let g = m.import()?;
    assert_eq!(
        g.nodes.iter().map(|n| n.op.name()).collect::<Vec<_>>(),
        ["Tanh", "Relu"]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Malformed and hostile files.

fn valid_model() -> Vec<u8> {
    onnx::export(&onnx_support::convnet()).expect("export")
}

#[test]
fn empty_truncated_and_random_bytes_fail_cleanly() {
    assert!(matches!(onnx::import(&[]), Err(Error::Decode { .. })));
    let good = valid_model();
    assert!(onnx::import(&good).is_ok());
    let e = onnx::import(&good[..good.len() / 2]).unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert!(e.to_string().contains("ONNX"), "{e}");
    // Every prefix: an error or (cut between top-level fields) a smaller valid graph; no panic.
    let step = (good.len() / 997).max(1);
    for cut in (0..good.len()).step_by(step) {
        let _ = onnx::import(&good[..cut]);
    }
    // Random bytes.
    let mut s = 0x2545f4914f6cdd1du64;
    for len in [1usize, 2, 7, 64, 1000, 10_000] {
        for _ in 0..50 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            assert!(
                onnx::import(&bytes).is_err(),
                "random bytes of length {len} imported"
            );
        }
    }
    // Corrupted bytes of a valid model: whatever imports must also infer shapes, export and run
    // without panicking.
    let mut s = 0x9e3779b97f4a7c15u64;
    for i in 0..3000usize {
        let mut bad = good.clone();
        for _ in 0..(1 + i % 3) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let at = (s as usize) % bad.len();
            bad[at] = (s >> 32) as u8;
        }
        if let Ok(g) = onnx::import(&bad) {
            let _ = g.infer_shapes(2);
            let _ = onnx::export(&g);
            if let Some(input) = g.inputs.first() {
                let shape = input.concrete(2);
                if shape.iter().product::<usize>() < 100_000 {
                    let x = onnx_support::rand(&shape, 1, 1.0, 0.0);
                    let _ = lithe::exec::run(&g, &[(input.name.as_str(), &x)]);
                }
            }
        }
    }
}

#[test]
fn unsupported_ops_are_all_listed_in_one_error() {
    let mut mul2 = node("Pow", &["a", "a"], &["b"], vec![]);
    mul2.name = None;
    let mut fused = node("FusedConv", &["b"], &["c"], vec![]);
    fused.domain = Some("com.microsoft".into());
    let m = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![
            node("Relu", &["x"], &["r"], vec![]),
            node("Pow", &["r", "r"], &["a"], vec![]),
            mul2,
            node("Erf", &["b"], &["s"], vec![]),
            fused,
            // Supported, but broken: the unsupported list must come first.
            node("MaxPool", &["s"], &["y"], vec![]),
        ],
        &["y"],
    );
    match m.import() {
        Err(Error::UnsupportedOps(list)) => {
            assert_eq!(list.len(), 3, "{list:?}");
            assert_eq!(list[0], "Erf (1 node: Erf:s)");
            assert_eq!(list[1], "Pow (2 nodes: Pow:a, #2)");
            assert_eq!(list[2], "com.microsoft::FusedConv (1 node: FusedConv:c)");
            let e = Error::UnsupportedOps(list);
            assert_eq!(e.code(), "unsupported_ops");
            eprintln!("{e}");
        }
        other => panic!("expected UnsupportedOps, got {other:?}"),
    }
}

#[test]
fn reshape_with_a_computed_shape_is_refused() {
    let m = M::new(
        13,
        vec![vi("x", &[-1, 4]), vi("s", &[2])],
        vec![
            node("Relu", &["s"], &["s2"], vec![]),
            node("Reshape", &["x", "s2"], &["y"], vec![]),
        ],
        &["y"],
    );
    let e = m.import().unwrap_err();
    assert!(matches!(&e, Error::Attribute { attr: "shape", .. }), "{e}");
    assert!(e.to_string().contains("must be a constant"), "{e}");
    let bad_target = M::new(
        13,
        vec![vi("x", &[-1, 4])],
        vec![node("Reshape", &["x", "s"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![i64_init("s", &[-1, -1])]);
    assert!(matches!(
        bad_target.import(),
        Err(Error::Attribute { attr: "shape", .. })
    ));
    let huge_target = M::new(
        13,
        vec![vi("x", &[-1, 4])],
        vec![node("Reshape", &["x", "s"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![i64_init("s", &[1 << 40, 1 << 40, -1])]);
    assert!(matches!(huge_target.import(), Err(Error::Limit { .. })));
}

#[test]
fn initializer_data_must_match_its_dims() {
    let relu = || vec![node("Add", &["x", "w"], &["y"], vec![])];
    let raw_short = TensorProto {
        raw_data: Some(vec![0; 10]),
        ..f32_init("w", &[3], vec![])
    };
    let e = M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
        .inits(vec![raw_short])
        .import()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Decode { .. }) && e.to_string().contains("raw_data has 10 bytes"),
        "{e}"
    );
    let floats_long = f32_init("w", &[3], vec![1.0; 4]);
    let e = M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
        .inits(vec![floats_long])
        .import()
        .unwrap_err();
    assert!(e.to_string().contains("float_data has 4 values"), "{e}");
    let no_data = f32_init("w", &[3], vec![]);
    assert!(
        M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
            .inits(vec![no_data])
            .import()
            .is_err()
    );
    let strings = TensorProto {
        data_type: Some(DataType::String as i32),
        ..f32_init("w", &[1], vec![])
    };
    let e = M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
        .inits(vec![strings])
        .import()
        .unwrap_err();
    assert!(e.to_string().contains("element type STRING"), "{e}");
    let ints_as_data = i64_init("w", &[1, 2, 3]);
    let e = M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
        .inits(vec![ints_as_data])
        .import()
        .unwrap_err();
    assert!(e.to_string().contains("integer tensor `w`"), "{e}");
}

#[test]
fn absurd_dims_are_refused_without_allocating() {
    let relu = || vec![node("Add", &["x", "w"], &["y"], vec![])];
    for dims in [
        vec![1i64 << 40, 1 << 40],
        vec![1 << 62],
        vec![i64::MAX, 2],
        vec![1 << 20, 1 << 20],
    ] {
        let t = f32_init("w", &dims, vec![]);
        let e = M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
            .inits(vec![t])
            .import()
            .unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{dims:?}: {e}");
    }
    let negative = f32_init("w", &[-3], vec![]);
    let e = M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
        .inits(vec![negative])
        .import()
        .unwrap_err();
    assert!(e.to_string().contains("negative dimension"), "{e}");
    let deep = f32_init("w", &[1; 40], vec![0.0]);
    assert!(matches!(
        M::new(13, vec![vi("x", &[-1, 3])], relu(), &["y"])
            .inits(vec![deep])
            .import(),
        Err(Error::Limit { .. })
    ));
    // Declared input dims.
    for dims in [vec![-1i64, 1 << 40], vec![1 << 30, 1 << 30], vec![1; 30]] {
        let m = M::new(
            13,
            vec![vi("x", &dims)],
            vec![node("Relu", &["x"], &["y"], vec![])],
            &["y"],
        );
        assert!(matches!(m.import(), Err(Error::Limit { .. })), "{dims:?}");
    }
}

#[test]
fn external_data_and_unsupported_versions_are_refused() {
    let ext = TensorProto {
        data_location: Some(proto::tensor_proto::DataLocation::External as i32),
        external_data: vec![proto::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("weights.bin".into()),
        }],
        ..f32_init("w", &[3], vec![])
    };
    let e = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![node("Add", &["x", "w"], &["y"], vec![])],
        &["y"],
    )
    .inits(vec![ext])
    .import()
    .unwrap_err();
    assert!(
        e.to_string().contains("external file (`weights.bin`)"),
        "{e}"
    );
    for opset in [6, 22] {
        let e = M::new(
            opset,
            vec![vi("x", &[-1, 3])],
            vec![node("Relu", &["x"], &["y"], vec![])],
            &["y"],
        )
        .import()
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("opset {opset} is not supported")),
            "{e}"
        );
    }
    let mut m = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![node("Relu", &["x"], &["y"], vec![])],
        &["y"],
    );
    m.ir = 0;
    assert!(matches!(m.import(), Err(Error::Decode { .. })));
    let no_graph = ModelProto {
        ir_version: Some(8),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(
        onnx::import(&no_graph)
            .unwrap_err()
            .to_string()
            .contains("no graph")
    );
}

#[test]
fn malformed_graphs_are_refused() {
    let relu = |i: &str, o: &str| node("Relu", &[i], &[o], vec![]);
    let dangling = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![relu("nowhere", "y")],
        &["y"],
    );
    assert!(matches!(dangling.import(), Err(Error::Graph(_))));
    let cycle = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![node("Add", &["x", "b"], &["a"], vec![]), relu("a", "b")],
        &["b"],
    );
    let e = cycle.import().unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
    let twice = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![relu("x", "y"), node("Tanh", &["x"], &["y"], vec![])],
        &["y"],
    );
    assert!(matches!(twice.import(), Err(Error::Graph(_))));
    let missing_output = M::new(13, vec![vi("x", &[-1, 3])], vec![relu("x", "y")], &["z"]);
    assert!(matches!(missing_output.import(), Err(Error::Graph(_))));
    let too_many_inputs = M::new(
        13,
        vec![vi("x", &[-1, 3])],
        vec![node("Relu", &["x", "x"], &["y"], vec![])],
        &["y"],
    );
    assert!(matches!(too_many_inputs.import(), Err(Error::Graph(_))));
    let mut int_input = vi("x", &[-1, 3]);
    if let Some(proto::type_proto::Value::TensorType(t)) =
        int_input.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(DataType::Int64 as i32);
    }
    let e = M::new(13, vec![int_input], vec![relu("x", "y")], &["y"])
        .import()
        .unwrap_err();
    assert!(e.to_string().contains("float32 inputs"), "{e}");
}

#[test]
fn node_count_is_limited_and_long_chains_import_quickly() -> anyhow::Result<()> {
    let chain = |n: usize| {
        let names: Vec<String> = (0..=n).map(|i| format!("v{i}")).collect();
        let nodes = (0..n)
            .map(|i| NodeProto {
                op_type: Some("Relu".into()),
                input: vec![names[i].clone()],
                output: vec![names[i + 1].clone()],
                ..Default::default()
            })
            .collect();
        let mut m = M::new(13, vec![vi("v0", &[-1, 2])], nodes, &[]);
        let last: &'static str = Box::leak(names[n].clone().into_boxed_str());
        m.outputs = vec![last];
        m
    };
    let too_many = chain(lithe::format::onnx::LIMITS.max_nodes + 1);
    assert!(matches!(
        too_many.import(),
        Err(Error::Limit {
            what: "node count",
            ..
        })
    ));
    let start = std::time::Instant::now();
    let g = chain(20_000).import()?;
    assert_eq!(g.nodes.len(), 20_000);
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
    Ok(())
}
