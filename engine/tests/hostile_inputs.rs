//! Hostile inputs: malformed ONNX models, `.lithe` containers and datasets must fail with the
//! right, clear error — never a panic, never a huge allocation.
//!
//! The small malformed ONNX files are built here with the checked-in prost types and also
//! committed in `tests/corpus/` (listed in its README), where the fuzz targets pick them up as
//! seeds. `LITHE_REGEN_CORPUS=1 cargo test -p lithe --test hostile_inputs` rewrites them.

use lithe::Error;
use lithe::compress::kmeans::Coding;
use lithe::format::onnx::proto::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use lithe::rng::Rng;
use prost::Message;
use std::path::PathBuf;

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;
const INT64: i32 = 7;
const STRING: i32 = 8;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn zoo(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../www/models")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
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

fn f32_tensor(name: &str, dims: &[i64]) -> TensorProto {
    let n: i64 = dims.iter().product();
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        float_data: vec![0.5; n.max(0) as usize],
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{op}_{}", outputs.first().unwrap_or(&""))),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A valid one-layer model: `Y = Relu(Gemm(X[1,4], W[3,4]ᵀ, B[3]))`.
fn tiny() -> ModelProto {
    let mut gemm = node("Gemm", &["X", "W", "B"], &["H"]);
    gemm.attribute.push(AttributeProto {
        name: Some("transB".into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(1),
        ..Default::default()
    });
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            name: Some("tiny".into()),
            node: vec![gemm, node("Relu", &["H"], &["Y"])],
            initializer: vec![f32_tensor("W", &[3, 4]), f32_tensor("B", &[3])],
            input: vec![value_info("X", &[1, 4])],
            output: vec![value_info("Y", &[1, 3])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

/// A float tensor with the given values (a scale).
fn f32_values(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        float_data: v.to_vec(),
        ..Default::default()
    }
}

/// An int8 or uint8 tensor (`raw_data`, one byte per element).
fn byte_tensor(name: &str, dtype: i32, dims: &[i64], v: &[u8]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype),
        raw_data: Some(v.to_vec()),
        ..Default::default()
    }
}

/// A valid quantized model: `Y = DequantizeLinear(QLinearMatMul(QuantizeLinear(X[1,4])),
/// W int8 [4,3]))`, per-tensor uint8 activations.
fn tiny_qmatmul() -> ModelProto {
    let mut m = tiny();
    let g = graph_mut(&mut m);
    g.name = Some("tiny_qmatmul".into());
    g.node = vec![
        node("QuantizeLinear", &["X", "xs", "xzp"], &["Xq"]),
        node(
            "QLinearMatMul",
            &["Xq", "xs", "xzp", "W", "ws", "wzp", "ys", "yzp"],
            &["Yq"],
        ),
        node("DequantizeLinear", &["Yq", "ys", "yzp"], &["Y"]),
    ];
    g.initializer = vec![
        f32_values("xs", &[], &[0.02]),
        byte_tensor("xzp", UINT8, &[], &[128]),
        byte_tensor(
            "W",
            INT8,
            &[4, 3],
            &[1, 2, 3, 4, 5, 6, 250, 251, 252, 253, 254, 255],
        ),
        f32_values("ws", &[], &[0.01]),
        byte_tensor("wzp", INT8, &[], &[0]),
        f32_values("ys", &[], &[0.05]),
        byte_tensor("yzp", UINT8, &[], &[100]),
    ];
    m
}

/// A valid quantized convolution: `Y = DequantizeLinear(QLinearConv(QuantizeLinear(X[1,1,3,3]),
/// W int8 [2,1,2,2] with per-channel scales and zero points))`.
fn tiny_qconv() -> ModelProto {
    let mut m = tiny_qmatmul();
    let g = graph_mut(&mut m);
    g.name = Some("tiny_qconv".into());
    g.input[0] = value_info("X", &[1, 1, 3, 3]);
    g.output[0] = value_info("Y", &[1, 2, 2, 2]);
    g.node[1] = node(
        "QLinearConv",
        &["Xq", "xs", "xzp", "W", "ws", "wzp", "ys", "yzp"],
        &["Yq"],
    );
    g.initializer[2] = byte_tensor("W", INT8, &[2, 1, 2, 2], &[1, 2, 3, 4, 255, 254, 253, 252]);
    g.initializer[3] = f32_values("ws", &[2], &[0.01, 0.02]);
    g.initializer[4] = byte_tensor("wzp", INT8, &[2], &[0, 0]);
    m
}

/// The committed malformed ONNX files: (file name, bytes).
fn onnx_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |name, m: ModelProto| out.push((name, m.encode_to_vec()));

    // Weights stored as int64 where f32 is expected.
    let mut m = tiny();
    let w = &mut graph_mut(&mut m).initializer[0];
    w.data_type = Some(INT64);
    w.float_data.clear();
    w.int64_data = vec![1; 12];
    add("int64_weights.onnx", m);

    // Weights with the string data type.
    let mut m = tiny();
    let w = &mut graph_mut(&mut m).initializer[0];
    w.data_type = Some(STRING);
    w.float_data.clear();
    w.string_data = vec![b"x".to_vec(); 12];
    add("string_weights.onnx", m);

    // A cycle: Relu reads its own output through a second node.
    let mut m = tiny();
    let g = graph_mut(&mut m);
    g.node[0].input[0] = "Z".into();
    g.node.push(node("Relu", &["Y"], &["Z"]));
    add("cycle.onnx", m);

    // A node reading an input nothing produces.
    let mut m = tiny();
    graph_mut(&mut m).node[1].input[0] = "nowhere".into();
    add("missing_input.onnx", m);

    // A weight declaring 2^40 elements (no data behind it).
    let mut m = tiny();
    let w = &mut graph_mut(&mut m).initializer[0];
    w.dims = vec![1 << 20, 1 << 20];
    add("absurd_dims.onnx", m);

    // A declared graph input with 2^40 elements.
    let mut m = tiny();
    graph_mut(&mut m).input[0] = value_info("X", &[1 << 20, 1 << 20]);
    add("absurd_input_dims.onnx", m);

    // A weight with a negative dimension.
    let mut m = tiny();
    graph_mut(&mut m).initializer[1].dims = vec![-3];
    add("negative_dims.onnx", m);

    // An op Lithe does not implement.
    let mut m = tiny();
    graph_mut(&mut m).node[1].op_type = Some("NonMaxSuppression".into());
    add("unsupported_op.onnx", m);

    // Opset outside the supported range.
    let mut m = tiny();
    m.opset_import[0].version = Some(99);
    add("future_opset.onnx", m);

    // No graph at all.
    let mut m = tiny();
    m.graph = None;
    add("no_graph.onnx", m);

    // Quantized models. A per-axis scale with 3 values along an axis of 4.
    let mut m = tiny_qmatmul();
    graph_mut(&mut m).initializer[0] = f32_values("xs", &[3], &[0.02, 0.02, 0.02]);
    graph_mut(&mut m).initializer[1] = byte_tensor("xzp", UINT8, &[3], &[128, 128, 128]);
    add("quant_scale_wrong_length.onnx", m);

    // An int8 weight with a uint8 zero point.
    let mut m = tiny_qmatmul();
    graph_mut(&mut m).initializer[4] = byte_tensor("wzp", UINT8, &[], &[0]);
    add("quant_zero_point_dtype.onnx", m);

    // QLinearConv with 3 weight zero points for 2 output channels.
    let mut m = tiny_qconv();
    graph_mut(&mut m).initializer[4] = byte_tensor("wzp", INT8, &[3], &[0, 0, 0]);
    add("qlinearconv_weight_zero_points.onnx", m);

    // Zero, negative and NaN scales.
    for (file, v) in [
        ("quant_zero_scale.onnx", 0.0),
        ("quant_negative_scale.onnx", -0.5),
        ("quant_nan_scale.onnx", f32::NAN),
    ] {
        let mut m = tiny_qmatmul();
        graph_mut(&mut m).initializer[3] = f32_values("ws", &[], &[v]);
        add(file, m);
    }

    // An int8 weight whose raw data holds 5 bytes for 12 elements.
    let mut m = tiny_qmatmul();
    graph_mut(&mut m).initializer[2] = byte_tensor("W", INT8, &[4, 3], &[1, 2, 3, 4, 5]);
    add("quant_short_int8_data.onnx", m);

    // An int32 bias beyond what f32 holds exactly (2^24 + 1).
    let mut m = tiny_qconv();
    let g = graph_mut(&mut m);
    g.node[1].input.push("B".into());
    g.initializer.push(TensorProto {
        name: Some("B".into()),
        dims: vec![2],
        data_type: Some(INT32),
        int32_data: vec![(1 << 24) + 1, 0],
        ..Default::default()
    });
    add("quant_int32_bias_overflow.onnx", m);

    // A graph input of type int8 read by Relu (only quantization ops read integers).
    let mut m = tiny();
    let g = graph_mut(&mut m);
    g.node = vec![node("Relu", &["X"], &["Y"])];
    g.initializer.clear();
    g.output[0] = value_info("Y", &[1, 4]);
    if let Some(type_proto::Value::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(INT8);
    }
    add("int8_input_to_float_op.onnx", m);

    out
}

/// Small hand-made `.lithe` containers: (file name, bytes).
fn lithe_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut hdr = b"LITHE\x01".to_vec();
    let mut bad_magic = hdr.clone();
    bad_magic[0] = b'X';
    let mut bad_version = hdr.clone();
    bad_version[5] = 9;
    // Declares a 4 GiB ONNX part behind a 10-byte file.
    let mut lying_graph_len = hdr.clone();
    lying_graph_len.extend_from_slice(&u32::MAX.to_le_bytes());
    hdr.truncate(4);
    // A real container (the tiny model, no shared layers), cut short and with a flipped byte.
    let g = lithe::format::onnx::import(&tiny().encode_to_vec()).expect("tiny model imports");
    let (full, _) = lithe::format::lithe::encode(&g, &Default::default(), Coding::Huffman)
        .expect("tiny model encodes");
    let truncated = full[..full.len() - 3].to_vec();
    let mut trailing = full.clone();
    trailing.push(0);
    let mut corrupt_len = full.clone();
    corrupt_len[6] ^= 0x40; // graph_len now points past the end
    vec![
        ("lithe_truncated.lithe", truncated),
        ("lithe_trailing_byte.lithe", trailing),
        ("lithe_corrupt_graph_len.lithe", corrupt_len),
        ("lithe_bad_magic.lithe", bad_magic),
        ("lithe_bad_version.lithe", bad_version),
        ("lithe_lying_graph_len.lithe", lying_graph_len),
        ("lithe_truncated_magic.lithe", hdr),
    ]
}

/// Small datasets whose header lies: (file name, bytes).
fn dataset_cases() -> Vec<(&'static str, Vec<u8>)> {
    let header = |n: u32, rows: u16, cols: u16, classes: u8| {
        let mut v = b"LMN1".to_vec();
        v.extend_from_slice(&n.to_le_bytes());
        v.extend_from_slice(&rows.to_le_bytes());
        v.extend_from_slice(&cols.to_le_bytes());
        v.push(classes);
        v
    };
    // Says 5 images of 2×2, holds one.
    let mut lying_count = header(5, 2, 2, 10);
    lying_count.extend_from_slice(&[0, 1, 2, 3, 7]);
    // Says 4 billion images.
    let huge_count = header(u32::MAX, 28, 28, 10);
    // A label outside the class count.
    let mut bad_label = header(1, 2, 2, 10);
    bad_label.extend_from_slice(&[0, 1, 2, 3, 42]);
    vec![
        ("dataset_lying_count.lmn", lying_count),
        ("dataset_huge_count.lmn", huge_count),
        ("dataset_bad_label.lmn", bad_label),
        ("dataset_bad_magic.lmn", b"LMN9\0\0\0\0\0\0\0\0\0".to_vec()),
    ]
}

/// What a decoder must answer: the error variant and a substring of its message.
struct Expect {
    file: &'static str,
    variant: fn(&Error) -> bool,
    message: &'static str,
}

const fn expect(file: &'static str, variant: fn(&Error) -> bool, message: &'static str) -> Expect {
    Expect {
        file,
        variant,
        message,
    }
}

fn is_decode(e: &Error) -> bool {
    matches!(e, Error::Decode { .. })
}
fn is_graph(e: &Error) -> bool {
    matches!(e, Error::Graph(_))
}
fn is_limit(e: &Error) -> bool {
    matches!(e, Error::Limit { .. })
}
fn is_shape(e: &Error) -> bool {
    matches!(e, Error::Shape { .. })
}
fn is_attribute(e: &Error) -> bool {
    matches!(e, Error::Attribute { .. })
}
fn is_unsupported(e: &Error) -> bool {
    matches!(e, Error::UnsupportedOps(ops) if ops.iter().any(|o| o.contains("NonMaxSuppression")))
}

/// Every committed corpus file and its required error (mirrors `tests/corpus/README.md`).
const EXPECTED: &[Expect] = &[
    expect("int64_weights.onnx", is_decode, "integer tensor `W`"),
    expect("string_weights.onnx", is_decode, "element type STRING"),
    expect("cycle.onnx", is_graph, "cycle"),
    expect("missing_input.onnx", is_graph, "reads `nowhere`"),
    expect("absurd_dims.onnx", is_limit, "1099511627776 exceeds"),
    expect("absurd_input_dims.onnx", is_limit, "1099511627776 exceeds"),
    expect("negative_dims.onnx", is_decode, "negative dimension"),
    expect("unsupported_op.onnx", is_unsupported, "NonMaxSuppression"),
    expect("future_opset.onnx", is_decode, "opset 99 is not supported"),
    expect("no_graph.onnx", is_decode, "holds no graph"),
    expect(
        "quant_scale_wrong_length.onnx",
        is_shape,
        "a per-axis scale along axis 1 needs 4 values, got 3",
    ),
    expect(
        "quant_zero_point_dtype.onnx",
        is_decode,
        "reads `wzp` as int8, but it holds uint8 values",
    ),
    expect(
        "qlinearconv_weight_zero_points.onnx",
        is_shape,
        "w_zero_point must be a scalar or have 2 values",
    ),
    expect(
        "quant_zero_scale.onnx",
        is_attribute,
        "must be positive and finite, found 0",
    ),
    expect(
        "quant_negative_scale.onnx",
        is_attribute,
        "must be positive and finite, found -0.5",
    ),
    expect(
        "quant_nan_scale.onnx",
        is_attribute,
        "must be positive and finite, found NaN",
    ),
    expect(
        "quant_short_int8_data.onnx",
        is_decode,
        "raw_data has 5 bytes, but its dims need 12 elements of 1 bytes",
    ),
    expect(
        "quant_int32_bias_overflow.onnx",
        is_decode,
        "int32 value 16777217 cannot be held exactly",
    ),
    expect(
        "int8_input_to_float_op.onnx",
        is_decode,
        "reads `X`, which holds int8 values",
    ),
    expect("lithe_truncated.lithe", is_decode, "truncated"),
    expect("lithe_trailing_byte.lithe", is_decode, "1 trailing bytes"),
    expect("lithe_corrupt_graph_len.lithe", is_decode, "truncated"),
    expect("lithe_bad_magic.lithe", is_decode, "bad magic"),
    expect("lithe_bad_version.lithe", is_decode, "version 9"),
    expect(
        "lithe_lying_graph_len.lithe",
        is_decode,
        "4294967295 bytes wanted",
    ),
    expect("lithe_truncated_magic.lithe", is_decode, "truncated"),
    expect(
        "dataset_lying_count.lmn",
        is_decode,
        "expected 38 bytes for 5 images",
    ),
    expect("dataset_huge_count.lmn", is_limit, "image count"),
    expect("dataset_bad_label.lmn", is_decode, "label 42"),
    expect("dataset_bad_magic.lmn", is_decode, "missing LMN1 header"),
];

/// Runs the decoder a file's extension names; `Ok(())` means it was accepted.
fn decode_any(file: &str, bytes: &[u8]) -> lithe::Result<()> {
    if file.ends_with(".onnx") {
        lithe::format::onnx::import(bytes).map(drop)
    } else if file.ends_with(".lithe") {
        lithe::format::lithe::decode(bytes).map(drop)
    } else if file.ends_with(".lmn") {
        lithe::data::Dataset::decode(bytes).map(drop)
    } else {
        panic!("no decoder for {file}")
    }
}

fn check(file: &str, bytes: &[u8]) {
    let e = EXPECTED
        .iter()
        .find(|e| e.file == file)
        .unwrap_or_else(|| panic!("{file} is not listed in EXPECTED"));
    match decode_any(file, bytes) {
        Ok(()) => panic!("{file} was accepted"),
        Err(err) => {
            let msg = err.to_string();
            assert!((e.variant)(&err), "{file}: wrong variant: {err:?}");
            assert!(
                msg.contains(e.message),
                "{file}: `{msg}` lacks `{}`",
                e.message
            );
        }
    }
}

fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let mut all = onnx_cases();
    all.extend(lithe_cases());
    all.extend(dataset_cases());
    all
}

#[test]
fn tiny_model_is_valid() {
    let g = lithe::format::onnx::import(&tiny().encode_to_vec()).unwrap();
    g.infer_shapes(1).unwrap();
}

#[test]
fn tiny_quantized_models_are_valid() {
    for m in [tiny_qmatmul(), tiny_qconv()] {
        let g = lithe::format::onnx::import(&m.encode_to_vec()).unwrap();
        let shape = g.infer_shapes(1).unwrap()["Y"].clone();
        let x = lithe::tensor::zeros(&g.inputs[0].concrete(1));
        let y = lithe::exec::run(&g, &[("X", &x)]).unwrap();
        assert_eq!(y[0].shape(), shape.as_slice());
    }
}

#[test]
fn quantized_runtime_values_are_checked() {
    // Values that only appear at run time: a scale computed by the graph, data that is not an
    // integer of the declared type. Errors, never panics.
    let g = lithe::format::onnx::import(&tiny_qmatmul().encode_to_vec()).unwrap();
    let nan = lithe::tensor::from_vec(&[1, 4], vec![f32::NAN, 1e30, -1e30, 0.5]).unwrap();
    // QuantizeLinear saturates (NaN gives the zero point), so this runs.
    lithe::exec::run(&g, &[("X", &nan)]).unwrap();
    let mut g2 = g.clone();
    g2.weights.insert(
        "W".into(),
        lithe::tensor::from_vec(&[4, 3], vec![0.5; 12]).unwrap(),
    );
    let x = lithe::tensor::zeros(&[1, 4]);
    let e = lithe::exec::run(&g2, &[("X", &x)]).unwrap_err();
    assert!(
        e.to_string().contains("must hold int8 values, found 0.5"),
        "{e}"
    );
    let mut g3 = g.clone();
    g3.weights.insert(
        "ys".into(),
        lithe::tensor::from_vec(&[], vec![0.0]).unwrap(),
    );
    let e = lithe::exec::run(&g3, &[("X", &x)]).unwrap_err();
    assert!(e.to_string().contains("must be positive and finite"), "{e}");
}

#[test]
fn generated_cases_give_the_right_error() {
    for (file, bytes) in generated() {
        check(file, &bytes);
    }
}

#[test]
fn committed_corpus_matches_generator_and_gives_the_right_error() {
    let dir = corpus_dir();
    if std::env::var_os("LITHE_REGEN_CORPUS").is_some() {
        for (file, bytes) in generated() {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
    }
    let generated = generated();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if file == "README.md" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() <= 1024, "{file}: corpus files stay small");
        let (_, gen_bytes) = generated
            .iter()
            .find(|(f, _)| *f == file)
            .unwrap_or_else(|| panic!("{file} is not produced by the generator"));
        assert_eq!(
            &bytes, gen_bytes,
            "{file} is stale: regenerate with LITHE_REGEN_CORPUS=1"
        );
        check(&file, &bytes);
        seen += 1;
    }
    assert_eq!(seen, EXPECTED.len(), "a corpus file is missing");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for e in EXPECTED {
        assert!(readme.contains(e.file), "README does not list {}", e.file);
    }
}

#[test]
fn truncated_zoo_model_is_a_decode_error() {
    let z = zoo("lenet-300-100.onnx");
    let mut rng = Rng::new(4);
    let mut cuts = vec![1, 2, 10, 100, 1000, z.len() / 2, z.len() - 1];
    cuts.extend((0..24).map(|_| rng.below(z.len())));
    for cut in cuts {
        match lithe::format::onnx::import(&z[..cut]) {
            Err(Error::Decode { what, .. }) => assert_eq!(what, "ONNX model", "cut at {cut}"),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    match lithe::format::onnx::import(&[]) {
        Err(e @ Error::Decode { .. }) => assert!(e.to_string().contains("empty"), "{e}"),
        other => panic!("empty file: {other:?}"),
    }
}

#[test]
fn truncated_zoo_container_is_a_decode_error() {
    let g = lithe::format::onnx::import(&zoo("lenet-300-100.onnx")).unwrap();
    let (b, _) = lithe::format::lithe::encode(&g, &Default::default(), Coding::Huffman).unwrap();
    lithe::format::lithe::decode(&b).expect("the intact container decodes");
    let mut rng = Rng::new(5);
    let mut cuts = vec![0, 3, 6, 9, 10, b.len() / 2, b.len() - 1];
    cuts.extend((0..16).map(|_| rng.below(b.len())));
    for cut in cuts {
        match lithe::format::lithe::decode(&b[..cut]) {
            Err(e @ Error::Decode { .. }) => assert!(e.to_string().contains("truncated"), "{e}"),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn seeded_random_bytes_are_rejected() {
    let mut rng = Rng::new(0x11_7e);
    for round in 0..256 {
        let len = rng.below(512);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        assert!(
            lithe::format::onnx::import(&bytes).is_err(),
            "round {round}"
        );
        assert!(
            lithe::data::Dataset::decode(&bytes).is_err(),
            "round {round}"
        );
        // With a valid header the container decoder has to look further.
        bytes.splice(0..0, *b"LITHE\x01");
        match lithe::format::lithe::decode(&bytes) {
            Err(Error::Decode { .. } | Error::Limit { .. }) => {}
            other => panic!("round {round}: {other:?}"),
        }
    }
}

#[test]
fn nested_subgraph_attributes_hit_the_recursion_limit() {
    let mut m = tiny();
    let mut sub = GraphProto::default();
    for _ in 0..64 {
        let mut n = node("Relu", &["a"], &["b"]);
        n.attribute.push(AttributeProto {
            name: Some("body".into()),
            r#type: Some(proto::attribute_proto::AttributeType::Graph as i32),
            g: Some(sub),
            ..Default::default()
        });
        sub = GraphProto {
            node: vec![n],
            ..Default::default()
        };
    }
    graph_mut(&mut m).node[1].attribute.push(AttributeProto {
        name: Some("body".into()),
        r#type: Some(proto::attribute_proto::AttributeType::Graph as i32),
        g: Some(sub),
        ..Default::default()
    });
    match lithe::format::onnx::import(&m.encode_to_vec()) {
        Err(e @ Error::Decode { .. }) => assert!(e.to_string().contains("recursion limit"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn huge_attribute_repetition_is_refused() {
    // 100 000 copies of Gemm's `transB`: ONNX requires unique attribute names.
    let mut m = tiny();
    let attr = graph_mut(&mut m).node[0].attribute[0].clone();
    graph_mut(&mut m).node[0].attribute = vec![attr; 100_000];
    match lithe::format::onnx::import(&m.encode_to_vec()) {
        Err(e @ Error::Attribute { .. }) => {
            assert!(e.to_string().contains("appears 100000 times"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mutated_quantized_models_never_panic() {
    // Seeded byte flips of the valid quantized models: import must answer with a model or an
    // error, and a model that imports must run (or fail) without panicking.
    let mut rng = Rng::new(0x0_9a17);
    let mut imported = 0;
    for base in [tiny_qmatmul(), tiny_qconv()] {
        let bytes = base.encode_to_vec();
        for round in 0..400 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            let outcome = std::panic::catch_unwind(|| {
                let Ok(g) = lithe::format::onnx::import(&b) else {
                    return false;
                };
                if let Some(v) = g.inputs.first()
                    && let Ok(shape) = g.infer_shapes(1).map(|_| v.concrete(1))
                    && shape.iter().product::<usize>() <= 1 << 16
                {
                    let x = lithe::tensor::zeros(&shape);
                    let _ = lithe::exec::run(&g, &[(v.name.as_str(), &x)]);
                    let _ = lithe::format::onnx::export(&g);
                }
                true
            });
            match outcome {
                Ok(ok) => imported += usize::from(ok),
                Err(_) => panic!("round {round}: panicked on a mutated quantized model"),
            }
        }
    }
    assert!(imported > 0, "some mutations keep the model valid");
}
