//! Import, run and export of the op set added for CNN/MLP exports (LeakyRelu, HardSigmoid,
//! HardSwish, Gelu, Mul/Sub/Div, Transpose, Squeeze/Unsqueeze, GlobalMaxPool, Pad,
//! LayerNormalization), their opset-specific forms, and hostile attributes on them.

use lithe::Error;
use lithe::format::onnx::{
    self,
    proto::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
        TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
        tensor_shape_proto, type_proto,
    },
};
use lithe::tensor::{Tensor, from_vec};
use prost::Message;

const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(if d < 0 {
                tensor_shape_proto::dimension::Value::DimParam("N".into())
            } else {
                tensor_shape_proto::dimension::Value::DimValue(d)
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn i64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(INT64),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{op}_{output}")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    x: &[i64],
    y: &str,
) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("t".into()),
            node: nodes,
            initializer: inits,
            input: vec![value_info("X", x)],
            output: vec![value_info(y, &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn run(bytes: &[u8], x: &Tensor) -> Tensor {
    let g = onnx::import(bytes).unwrap();
    let y = lithe::exec::run(&g, &[("X", x)]).unwrap().remove(0);
    // Export and re-import give the same result.
    let g2 = onnx::import(&onnx::export(&g).unwrap()).unwrap();
    let y2 = lithe::exec::run(&g2, &[("X", x)]).unwrap().remove(0);
    assert_eq!(y, y2, "export round trip");
    y
}

fn attr_err(bytes: &[u8], attr: &str) {
    match onnx::import(bytes) {
        Err(Error::Attribute { attr: a, node, .. }) => {
            assert_eq!(a, attr);
            assert!(!node.is_empty());
        }
        other => panic!("expected an attribute error on `{attr}`, got {other:?}"),
    }
}

#[test]
fn mlp_like_chain_imports_runs_and_round_trips() {
    // X[N,2,3] → Transpose(0,2,1) → Mul(s) → Sub(b) → Div(d) → LeakyRelu → HardSwish → Gelu(tanh)
    //   → HardSigmoid → LayerNorm(axis -1) → Unsqueeze(1) → Squeeze(1)
    let nodes = vec![
        node("Transpose", &["X"], "t", vec![ints("perm", &[0, 2, 1])]),
        node("Mul", &["t", "s"], "m", vec![]),
        node("Sub", &["m", "b"], "u", vec![]),
        node("Div", &["u", "d"], "v", vec![]),
        node("LeakyRelu", &["v"], "l", vec![float("alpha", 0.2)]),
        node("HardSwish", &["l"], "h", vec![]),
        node("Gelu", &["h"], "g", vec![string("approximate", "tanh")]),
        node("HardSigmoid", &["g"], "hs", vec![]),
        node("LayerNormalization", &["hs", "sc", "bi"], "ln", vec![]),
        node("Unsqueeze", &["ln", "ax"], "us", vec![]),
        node("Squeeze", &["us", "ax"], "Y", vec![]),
    ];
    let inits = vec![
        f32s("s", &[2], &[2.0, -1.0]),
        f32s("b", &[1], &[0.5]),
        f32s("d", &[3, 1], &[1.0, 2.0, 4.0]),
        f32s("sc", &[2], &[1.0, 2.0]),
        f32s("bi", &[2], &[0.0, 1.0]),
        i64s("ax", &[1]),
    ];
    let bytes = model(21, nodes, inits, &[-1, 2, 3], "Y");
    let x = from_vec(&[2, 2, 3], (0..12).map(|i| i as f32 * 0.3 - 1.5).collect()).unwrap();
    let y = run(&bytes, &x);
    assert_eq!(y.shape(), &[2, 3, 2]);
    // LayerNorm over 2 elements gives x̂ = (−a, a) with |a| ≤ 1, then scale (1, 2), bias (0, 1).
    let mut spread = 0.0f32;
    for row in y.as_slice().unwrap().chunks(2) {
        assert!(row[0].abs() <= 1.0 + 1e-4, "{row:?}");
        assert!((row[1] - (1.0 - 2.0 * row[0])).abs() < 1e-4, "{row:?}");
        spread = spread.max(row[0].abs());
    }
    assert!(spread > 0.5, "the chain does not collapse to a constant");
}

#[test]
fn opset_forms_of_squeeze_unsqueeze_and_pad() {
    let x = from_vec(&[1, 1, 2, 2], vec![1., 2., 3., 4.]).unwrap();
    // Opset 11: axes and pads as attributes... pads became an input in 11; axes stay attributes
    // until 13.
    let old = model(
        10,
        vec![
            node("Squeeze", &["X"], "s", vec![ints("axes", &[0])]),
            node("Unsqueeze", &["s"], "u", vec![ints("axes", &[0])]),
            node(
                "Pad",
                &["u"],
                "Y",
                vec![ints("pads", &[0, 0, 1, 0, 0, 0, 0, 1]), float("value", 9.0)],
            ),
        ],
        vec![],
        &[1, 1, 2, 2],
        "Y",
    );
    let new = model(
        18,
        vec![
            node("Squeeze", &["X", "a0"], "s", vec![]),
            node("Unsqueeze", &["s", "a0"], "u", vec![]),
            node("Pad", &["u", "p", "v", "pa"], "Y", vec![]),
        ],
        vec![
            i64s("a0", &[0]),
            i64s("p", &[1, 0, 0, 1]),
            f32s("v", &[], &[9.0]),
            i64s("pa", &[2, -1]),
        ],
        &[1, 1, 2, 2],
        "Y",
    );
    let want = [9., 9., 9., 1., 2., 9., 3., 4., 9.];
    for bytes in [old, new] {
        let y = run(&bytes, &x);
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(y.as_slice().unwrap(), &want);
    }
    // Reflect padding of a 4-D NCHW input, pads as an input (opset 11).
    let refl = model(
        11,
        vec![node(
            "Pad",
            &["X", "p"],
            "Y",
            vec![string("mode", "reflect")],
        )],
        vec![i64s("p", &[0, 0, 0, 0, 0, 0, 0, 1])],
        &[1, 1, 2, 2],
        "Y",
    );
    let y = run(&refl, &x);
    assert_eq!(y.as_slice().unwrap(), &[1., 2., 1., 3., 4., 3.]);
    // GlobalMaxPool.
    let gmp = model(
        13,
        vec![node("GlobalMaxPool", &["X"], "Y", vec![])],
        vec![],
        &[1, 1, 2, 2],
        "Y",
    );
    assert_eq!(run(&gmp, &x).as_slice().unwrap(), &[4.]);
}

#[test]
fn runtime_axes_or_pads_are_a_clear_error() {
    let bytes = model(
        13,
        vec![
            node("Relu", &["X"], "r", vec![]),
            node("Unsqueeze", &["X", "r"], "Y", vec![]),
        ],
        vec![],
        &[2],
        "Y",
    );
    let e = onnx::import(&bytes).unwrap_err();
    assert!(e.to_string().contains("must be a constant"), "{e}");
}

#[test]
fn hostile_attributes_name_the_node() {
    let one = |op: &str, opset: i64, attrs: Vec<AttributeProto>, inits: Vec<TensorProto>| {
        let mut inputs = vec!["X"];
        let names: Vec<String> = inits.iter().map(|t| t.name().to_string()).collect();
        inputs.extend(names.iter().map(String::as_str));
        model(
            opset,
            vec![node(op, &inputs, "Y", attrs)],
            inits,
            &[2, 2],
            "Y",
        )
    };
    attr_err(
        &one("Transpose", 13, vec![ints("perm", &[0, 5])], vec![]),
        "perm",
    );
    attr_err(
        &one("Transpose", 13, vec![ints("perm", &[0, 0])], vec![]),
        "perm",
    );
    attr_err(
        &one("Transpose", 13, vec![ints("perm", &[i64::MIN, 0])], vec![]),
        "perm",
    );
    attr_err(
        &one("Squeeze", 11, vec![ints("axes", &[i64::MAX])], vec![]),
        "axes",
    );
    attr_err(
        &one("Unsqueeze", 13, vec![], vec![i64s("a", &[1 << 40])]),
        "axes",
    );
    attr_err(
        &one("Unsqueeze", 13, vec![], vec![i64s("a", &[0; 100])]),
        "axes",
    );
    attr_err(
        &one("Pad", 13, vec![], vec![i64s("p", &[0, 1 << 40, 0, 0])]),
        "pads",
    );
    attr_err(
        &one("Pad", 13, vec![], vec![i64s("p", &[0, -1, 0, 0])]),
        "pads",
    );
    attr_err(
        &one(
            "Pad",
            13,
            vec![string("mode", "wrap")],
            vec![i64s("p", &[0; 4])],
        ),
        "mode",
    );
    attr_err(
        &one("Pad", 10, vec![ints("pads", &[i64::MAX; 4])], vec![]),
        "pads",
    );
    attr_err(
        &one("Gelu", 20, vec![string("approximate", "erf")], vec![]),
        "approximate",
    );
    attr_err(
        &one("LeakyRelu", 13, vec![float("alpha", f32::NAN)], vec![]),
        "alpha",
    );
    // Wrong attribute type.
    attr_err(
        &one("LeakyRelu", 13, vec![ints("alpha", &[1])], vec![]),
        "alpha",
    );
    attr_err(
        &one(
            "LayerNormalization",
            17,
            vec![float("epsilon", -1.0)],
            vec![f32s("s", &[2], &[1., 1.])],
        ),
        "epsilon",
    );
    // Valid attributes but shapes that do not fit: a shape error at import (validation) or run.
    let bytes = one("Pad", 13, vec![], vec![i64s("p", &[1, 1])]);
    let r = onnx::import(&bytes).and_then(|g| {
        let x = from_vec(&[2, 2], vec![0.; 4]).unwrap();
        lithe::exec::run(&g, &[("X", &x)])
    });
    assert!(matches!(r, Err(Error::Attribute { .. })), "{r:?}");
    // A pad that stays within the per-value limit but makes a huge tensor is refused, not
    // allocated.
    let bytes = one(
        "Pad",
        13,
        vec![],
        vec![i64s("p", &[60_000, 60_000, 60_000, 60_000])],
    );
    let r = onnx::import(&bytes).and_then(|g| {
        let x = from_vec(&[2, 2], vec![0.; 4]).unwrap();
        lithe::exec::run(&g, &[("X", &x)])
    });
    assert!(matches!(r, Err(Error::Limit { .. })), "{r:?}");
}

fn scalar_i64(name: &str, v: i64) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![],
        data_type: Some(INT64),
        int64_data: vec![v],
        ..Default::default()
    }
}

#[test]
fn pytorch_view_flatten_with_a_symbolic_batch_folds_to_reshape() {
    // x.view(x.size(0), -1) as PyTorch writes it: Shape → Gather(0) → Unsqueeze(0) → Concat
    // with [-1] → Reshape.
    let mut concat = node("Concat", &["n1", "m1"], "target", vec![]);
    concat.attribute.push(AttributeProto {
        name: Some("axis".into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(0),
        ..Default::default()
    });
    let nodes = vec![
        node("Relu", &["X"], "r", vec![]),
        node("Shape", &["r"], "s", vec![]),
        node("Gather", &["s", "zero"], "n", vec![]),
        node("Unsqueeze", &["n", "ax0"], "n1", vec![]),
        concat,
        node("Reshape", &["r", "target"], "Y", vec![]),
    ];
    let inits = vec![scalar_i64("zero", 0), i64s("ax0", &[0]), i64s("m1", &[-1])];
    let bytes = model(13, nodes, inits, &[-1, 2, 3], "Y");
    let g = onnx::import(&bytes).unwrap();
    assert!(
        g.nodes
            .iter()
            .any(|n| n.op == lithe::graph::Op::Reshape { shape: vec![0, -1] }),
        "{:?}",
        g.nodes
    );
    for batch in [1, 4] {
        let x = from_vec(&[batch, 2, 3], vec![1.0; batch * 6]).unwrap();
        let y = lithe::exec::run(&g, &[("X", &x)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[batch, 6]);
    }
    // The reshape target `[6, N]` puts the batch where 0 cannot copy it, and the target already
    // has no -1: -1 stands for it.
    let mut concat = node("Concat", &["six", "n1"], "target", vec![]);
    concat.attribute = vec![AttributeProto {
        name: Some("axis".into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(0),
        ..Default::default()
    }];
    let nodes = vec![
        node("Shape", &["X"], "s", vec![]),
        node("Gather", &["s", "zero"], "n", vec![]),
        node("Unsqueeze", &["n", "ax0"], "n1", vec![]),
        concat,
        node("Reshape", &["X", "target"], "Y", vec![]),
    ];
    let inits = vec![scalar_i64("zero", 0), i64s("ax0", &[0]), i64s("six", &[6])];
    let g = onnx::import(&model(13, nodes, inits, &[-1, 2, 3], "Y")).unwrap();
    let x = from_vec(&[3, 2, 3], vec![1.0; 18]).unwrap();
    assert_eq!(
        lithe::exec::run(&g, &[("X", &x)]).unwrap()[0].shape(),
        &[6, 3]
    );
}

#[test]
fn static_shape_folds_and_batch_dims_elsewhere_are_refused() {
    // Fully static: Shape(X)[1:] → Reshape target.
    let mut sh = node("Shape", &["X"], "s", vec![]);
    sh.attribute.push(AttributeProto {
        name: Some("start".into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(1),
        ..Default::default()
    });
    let nodes = vec![
        sh,
        node("Reshape", &["W", "s"], "w2", vec![]),
        node("Add", &["X", "w2"], "Y", vec![]),
    ];
    let inits = vec![f32s("W", &[6], &[1., 2., 3., 4., 5., 6.])];
    let g = onnx::import(&model(15, nodes, inits, &[-1, 2, 3], "Y")).unwrap();
    let x = from_vec(&[2, 2, 3], vec![0.0; 12]).unwrap();
    let y = lithe::exec::run(&g, &[("X", &x)]).unwrap().remove(0);
    assert_eq!(&y.as_slice().unwrap()[6..], &[1., 2., 3., 4., 5., 6.]);
    // A batch-dependent dim used as Unsqueeze axes: refused with an attribute error.
    let nodes = vec![
        node("Shape", &["X"], "s", vec![]),
        node("Unsqueeze", &["X", "s"], "Y", vec![]),
    ];
    attr_err(&model(13, nodes, vec![], &[-1, 2], "Y"), "axes");
    // Gather on a runtime tensor is not computed.
    let nodes = vec![node("Gather", &["X", "i"], "Y", vec![])];
    attr_err(
        &model(13, nodes, vec![i64s("i", &[0])], &[2, 2], "Y"),
        "data",
    );
    // Out-of-range Gather index into a folded shape.
    let nodes = vec![
        node("Shape", &["X"], "s", vec![]),
        node("Gather", &["s", "i"], "g", vec![]),
        node("Reshape", &["X", "g"], "Y", vec![]),
    ];
    attr_err(
        &model(13, nodes, vec![i64s("i", &[7])], &[2, 2], "Y"),
        "indices",
    );
}
