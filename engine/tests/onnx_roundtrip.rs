//! Export → import gives the same graph and the same outputs; export is deterministic and
//! declares shapes with a symbolic batch.

mod onnx_support;

use lithe::exec;
use lithe::format::onnx::{self, proto};
use onnx_support::{batch_input, samples};
use prost::Message;

#[test]
fn export_import_gives_the_same_graph_and_outputs() -> anyhow::Result<()> {
    for (name, g, identical) in samples() {
        let mut g = g;
        g.validate()?;
        let bytes = onnx::export(&g)?;
        let back = onnx::import(&bytes)?;
        if identical {
            assert_eq!(back, g, "{name}: the imported graph differs");
        } else {
            assert_eq!(
                (&back.inputs, &back.outputs, &back.weights, &back.metadata),
                (&g.inputs, &g.outputs, &g.weights, &g.metadata),
                "{name}"
            );
        }
        for batch in [1, 3] {
            let x = batch_input(&g, batch, 7 + batch as u64);
            let input = g.inputs[0].name.as_str();
            let want = exec::run(&g, &[(input, &x)])?;
            let got = exec::run(&back, &[(input, &x)])?;
            assert_eq!(want.len(), got.len());
            for (w, o) in want.iter().zip(&got) {
                assert_eq!(w.shape(), o.shape(), "{name}");
                let diff = w
                    .iter()
                    .zip(o.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff <= 1e-6, "{name}: outputs differ by {diff}");
            }
        }
    }
    Ok(())
}

#[test]
fn export_is_deterministic_and_stable_through_import() -> anyhow::Result<()> {
    for (name, g, identical) in samples() {
        let a = onnx::export(&g)?;
        let b = onnx::export(&g.clone())?;
        assert_eq!(a, b, "{name}: two exports differ");
        if identical {
            let again = onnx::export(&onnx::import(&a)?)?;
            assert_eq!(
                a, again,
                "{name}: export(import(export(g))) differs from export(g)"
            );
        }
    }
    Ok(())
}

#[test]
fn exported_model_header_and_shapes() -> anyhow::Result<()> {
    let g = onnx_support::convnet();
    let m = proto::ModelProto::decode(onnx::export(&g)?.as_slice())?;
    assert_eq!(m.ir_version(), 8);
    assert_eq!(m.producer_name(), "lithe");
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(
        (m.opset_import[0].domain(), m.opset_import[0].version()),
        ("", 13)
    );
    let graph = m.graph.as_ref().expect("graph");
    // Runtime inputs only (IR ≥ 4): weights are initializers, not inputs.
    assert_eq!(graph.input.len(), 1);
    let dims = |v: &proto::ValueInfoProto| -> Vec<String> {
        match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(proto::type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                                v.to_string()
                            }
                            Some(proto::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                                p.clone()
                            }
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => vec![],
        }
    };
    assert_eq!(dims(&graph.input[0]), ["N", "3", "12", "12"]);
    assert_eq!(dims(&graph.output[0]), ["N", "10"]);
    // Weights are raw little-endian floats; the Reshape targets are int64 initializers.
    let w = graph
        .initializer
        .iter()
        .find(|t| t.name() == "c1.w")
        .expect("c1.w");
    assert_eq!(w.raw_data().len(), 8 * 3 * 3 * 3 * 4);
    assert!(w.float_data.is_empty());
    let shape = graph
        .initializer
        .iter()
        .find(|t| t.name() == "r3__shape")
        .expect("reshape target");
    assert_eq!(
        shape.data_type(),
        proto::tensor_proto::DataType::Int64 as i32
    );
    // Clip bounds are inputs (opset ≥ 11), not attributes.
    let clip = graph
        .node
        .iter()
        .find(|n| n.op_type() == "Clip")
        .expect("clip");
    assert_eq!(clip.input.len(), 3);
    assert!(clip.attribute.is_empty());
    Ok(())
}

#[test]
fn metadata_survives() -> anyhow::Result<()> {
    let g = onnx_support::mlp();
    let back = onnx::import(&onnx::export(&g)?)?;
    assert_eq!(
        back.metadata.get("lithe.preprocess").map(String::as_str),
        Some("0.003921569,0,1")
    );
    assert_eq!(back.metadata, g.metadata);
    Ok(())
}

#[test]
fn real_models_survive_a_round_trip() -> anyhow::Result<()> {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models"));
    if !dir.is_dir() {
        eprintln!("skipped: ../shared/models not found ({})", dir.display());
        return Ok(());
    }
    for file in ["onnx-zoo-mnist-8.onnx", "burn-mnist-cnn.onnx"] {
        let g = onnx::import(&std::fs::read(dir.join(file))?)?;
        let back = onnx::import(&onnx::export(&g)?)?;
        assert_eq!(back, g, "{file}");
    }
    Ok(())
}

/// Models Lithe exported earlier (the shipped zoo in `www/models`) re-export to the very same
/// bytes: the export format is stable.
#[test]
fn shipped_models_reexport_byte_for_byte() -> anyhow::Result<()> {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../www/models"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("skipped: {} not found", dir.display());
        return Ok(());
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    for path in files {
        let bytes = std::fs::read(&path)?;
        let g = onnx::import(&bytes)?;
        assert!(
            onnx::export(&g)? == bytes,
            "{} re-exports differently",
            path.display()
        );
        eprintln!(
            "{}: {} nodes, byte-identical",
            path.display(),
            g.nodes.len()
        );
    }
    Ok(())
}
