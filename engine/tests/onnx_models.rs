//! Real-world ONNX files from other exporters (read in place from `../shared/models`, never
//! copied into the repository): they must import and run, and reach their published accuracy
//! on the 10k MNIST test set when `www/data/mnist-test.lmn.gz` is present.

use lithe::data::{Dataset, Preprocess};
use lithe::exec;
use lithe::format::onnx;
use lithe::graph::{Dim, Graph, Op};
use lithe::tensor::Tensor;
use std::path::{Path, PathBuf};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models");
const MNIST_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../www/data/mnist-test.lmn.gz");

/// The model's bytes, or `None` (with a message) when the shared folder is absent.
fn model(file: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let dir = Path::new(MODELS);
    if !dir.is_dir() {
        eprintln!("skipped: ../shared/models not found ({})", dir.display());
        return Ok(None);
    }
    Ok(Some(std::fs::read(dir.join(file))?))
}

/// The MNIST test set, or `None` (with a message) when it has not been produced yet.
fn mnist_test() -> anyhow::Result<Option<Dataset>> {
    let p = PathBuf::from(MNIST_TEST);
    if !p.is_file() {
        eprintln!(
            "skipped: {} not found (the dataset is built by the data pipeline)",
            p.display()
        );
        return Ok(None);
    }
    Ok(Some(Dataset::load(&p)?))
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// Accuracy in percent, running `batch` images at a time.
fn accuracy(g: &Graph, data: &Dataset, pre: &Preprocess, batch: usize) -> anyhow::Result<f64> {
    let input = g.inputs[0].name.clone();
    let mut correct = 0usize;
    for idx in data.batches(batch, None) {
        let (x, y) = data.batch(&idx, pre);
        let out = exec::run(g, &[(&input, &x)])?;
        let logits = &out[0];
        let classes = logits.shape()[1];
        let flat: Vec<f32> = logits.iter().copied().collect();
        for (row, &label) in flat.chunks(classes).zip(&y) {
            correct += usize::from(argmax(row) == label as usize);
        }
    }
    Ok(100.0 * correct as f64 / data.len() as f64)
}

fn ops(g: &Graph) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = g.nodes.iter().map(|n| n.op.name()).collect();
    v.dedup();
    v
}

fn digit_like() -> Tensor {
    // A vertical stroke, like a "1", in 0..1.
    Tensor::from_shape_fn(ndarray::IxDyn(&[1, 1, 28, 28]), |ix| {
        if (13..16).contains(&ix[3]) && (4..24).contains(&ix[2]) {
            1.0
        } else {
            0.0
        }
    })
}

#[test]
fn onnx_zoo_mnist_8_imports_and_runs() -> anyhow::Result<()> {
    let Some(bytes) = model("onnx-zoo-mnist-8.onnx")? else {
        return Ok(());
    };
    let g = onnx::import(&bytes)?;
    eprintln!("mnist-8: {:?}", ops(&g));
    // IR 3: the initializers are also listed as graph inputs; only the image is a runtime input.
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.inputs[0].name, "Input3");
    assert_eq!(
        g.inputs[0].shape,
        vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(28), Dim::Fixed(28)]
    );
    assert_eq!(
        g.param_count(),
        5_996 - 2,
        "all float initializers except the int64 reshape shape"
    );
    assert!(
        g.nodes
            .iter()
            .any(|n| matches!(&n.op, Op::Reshape { shape } if shape == &[1, 256]))
    );
    assert!(
        g.nodes.iter().any(
            |n| matches!(&n.op, Op::Conv(c) if c.auto_pad == lithe::graph::AutoPad::SameUpper)
        )
    );
    let y = exec::run(&g, &[("Input3", &digit_like())])?;
    assert_eq!(y[0].shape(), &[1, 10]);
    assert!(y[0].iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn burn_mnist_cnn_imports_and_runs() -> anyhow::Result<()> {
    let Some(bytes) = model("burn-mnist-cnn.onnx")? else {
        return Ok(());
    };
    let g = onnx::import(&bytes)?;
    eprintln!("burn: {:?}", ops(&g));
    assert_eq!(g.inputs.len(), 1);
    assert_eq!(g.param_count(), 376_938);
    assert!(g.nodes.iter().any(|n| matches!(
        n.op,
        Op::LogSoftmax {
            axis: 1,
            coerce_2d: false
        }
    )));
    let y = exec::run(&g, &[("input.1", &digit_like())])?;
    assert_eq!(y[0].shape(), &[1, 10]);
    let p: f32 = y[0].iter().map(|v| v.exp()).sum();
    assert!((p - 1.0).abs() < 1e-4, "log-probabilities sum to {p}");
    Ok(())
}

#[test]
fn quantized_variants_import() -> anyhow::Result<()> {
    // Their quantization ops are imported since the int8 work; accuracy and onnxruntime
    // agreement are checked in `onnx_quant.rs`.
    for (file, expect) in [
        (
            "burn-mnist-cnn-qdq-int8.onnx",
            &["DequantizeLinear", "QuantizeLinear"][..],
        ),
        (
            "burn-mnist-cnn-dynamic-int8.onnx",
            &[
                "ConvInteger",
                "DynamicQuantizeLinear",
                "MatMulInteger",
                "Cast",
            ][..],
        ),
    ] {
        let Some(bytes) = model(file)? else {
            return Ok(());
        };
        let g = onnx::import(&bytes)?;
        let have = ops(&g);
        for op in expect {
            assert!(have.contains(op), "{file}: {op} missing from {have:?}");
        }
        let y = exec::run(&g, &[("input.1", &digit_like())])?;
        assert_eq!(y[0].shape(), &[1, 10]);
    }
    Ok(())
}

#[test]
fn onnx_zoo_mnist_8_accuracy() -> anyhow::Result<()> {
    let Some(bytes) = model("onnx-zoo-mnist-8.onnx")? else {
        return Ok(());
    };
    let Some(data) = mnist_test()? else {
        return Ok(());
    };
    let g = onnx::import(&bytes)?;
    // The CNTK export has a fixed batch of 1 (its Reshape targets [1, 256]): run image by image.
    for (pre, expected) in [(Preprocess::default(), 98.90), (Preprocess::RAW, 98.91)] {
        let acc = accuracy(&g, &data, &pre, 1)?;
        eprintln!("mnist-8 accuracy with {pre:?}: {acc:.2} %");
        assert!(
            (acc - expected).abs() <= 0.05,
            "accuracy {acc:.2} % differs from {expected} %"
        );
    }
    Ok(())
}

#[test]
fn burn_mnist_cnn_accuracy() -> anyhow::Result<()> {
    let Some(bytes) = model("burn-mnist-cnn.onnx")? else {
        return Ok(());
    };
    let Some(data) = mnist_test()? else {
        return Ok(());
    };
    let mut g = onnx::import(&bytes)?;
    // PyTorch exported a fixed batch of 1, but every op is batch-agnostic (Flatten, not a
    // Reshape to [1, n]): declare the batch symbolic and run 100 images at a time.
    g.inputs[0].shape[0] = Dim::Sym("N".into());
    let acc = accuracy(&g, &data, &Preprocess::MNIST_NORM, 100)?;
    eprintln!("burn-mnist-cnn accuracy: {acc:.2} %");
    assert!(
        (acc - 99.16).abs() <= 0.05,
        "accuracy {acc:.2} % differs from 99.16 %"
    );
    Ok(())
}
