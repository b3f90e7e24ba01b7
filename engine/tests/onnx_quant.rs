//! int8 ONNX models: the quantization ops (QuantizeLinear, DequantizeLinear,
//! DynamicQuantizeLinear, QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger, Cast) import,
//! run in integer arithmetic, export, and agree with onnxruntime.
//!
//! The real-world models are read in place from `../shared/models` (or `$LITHE_MODELS_DIR`);
//! the tests that need them skip with a message when the folder is absent. The onnxruntime
//! checks need a Python with numpy and onnxruntime (`$LITHE_PYTHON`, else
//! `<workspace>/.venv/bin/python`) and skip without one.

use lithe::data::{Dataset, Preprocess};
use lithe::exec;
use lithe::format::onnx;
use lithe::graph::{ConvAttrs, Dim, Graph, Node, Op, ValueInfo};
use lithe::tensor::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models");
const MNIST_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../www/data/mnist-test.lmn.gz");
const QDQ: &str = "burn-mnist-cnn-qdq-int8.onnx";
const DYNAMIC: &str = "burn-mnist-cnn-dynamic-int8.onnx";
/// Images compared with onnxruntime in the default run (the full 10k run is `#[ignore]`d).
const ORT_IMAGES: usize = 300;

fn models_dir() -> PathBuf {
    std::env::var_os("LITHE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MODELS))
}

/// The model's bytes, or `None` (with a message) when the shared folder is absent.
fn model(file: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let dir = models_dir();
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} not found (set LITHE_MODELS_DIR to the shared models folder)",
            dir.display()
        );
        return Ok(None);
    }
    Ok(Some(std::fs::read(dir.join(file))?))
}

/// The MNIST test set, or `None` (with a message) when it has not been produced yet.
fn mnist_test() -> anyhow::Result<Option<Dataset>> {
    let p = PathBuf::from(MNIST_TEST);
    if !p.is_file() {
        eprintln!("skipped: {} not found", p.display());
        return Ok(None);
    }
    Ok(Some(Dataset::load(&p)?))
}

/// A Python that can import onnxruntime and numpy, or `None` (with a message).
fn python() -> anyhow::Result<Option<PathBuf>> {
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

fn temp_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("lithe-onnx-quant-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Writes a float32 little-endian `.npy` (format 1.0).
fn write_npy(path: &Path, t: &Tensor) -> anyhow::Result<()> {
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

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// Top-1 predictions of `g` on the first `limit` images, `batch` images per run.
fn predict(
    g: &Graph,
    data: &Dataset,
    limit: usize,
    batch: usize,
) -> anyhow::Result<(Vec<usize>, Vec<u8>)> {
    let input = g.inputs[0].name.clone();
    let mut pred = Vec::new();
    let mut labels = Vec::new();
    let idx: Vec<usize> = (0..data.len().min(limit)).collect();
    for chunk in idx.chunks(batch) {
        let (x, y) = data.batch(chunk, &Preprocess::MNIST_NORM);
        let out = exec::run(g, &[(&input, &x)])?;
        let classes = out[0].shape()[1];
        let flat: Vec<f32> = out[0].iter().copied().collect();
        pred.extend(flat.chunks(classes).map(argmax));
        labels.extend(y);
    }
    Ok((pred, labels))
}

fn accuracy(pred: &[usize], labels: &[u8]) -> f64 {
    let ok = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    100.0 * ok as f64 / pred.len().max(1) as f64
}

/// The QDQ model's ops are all batch-agnostic (per-tensor static scales, Flatten): run it 100
/// images at a time. The dynamic model's DynamicQuantizeLinear takes its range over the whole
/// tensor, so a batch would change the result: run it image by image, as exported.
fn batch_for(file: &str, g: &mut Graph) -> usize {
    if file == QDQ {
        g.inputs[0].shape[0] = Dim::Sym("N".into());
        100
    } else {
        1
    }
}

fn model_accuracy(file: &str, expected: f64) -> anyhow::Result<()> {
    let Some(bytes) = model(file)? else {
        return Ok(());
    };
    let Some(data) = mnist_test()? else {
        return Ok(());
    };
    let mut g = onnx::import(&bytes)?;
    let batch = batch_for(file, &mut g);
    let t = Instant::now();
    let (pred, labels) = predict(&g, &data, usize::MAX, batch)?;
    let secs = t.elapsed().as_secs_f64();
    let acc = accuracy(&pred, &labels);
    eprintln!(
        "{file}: accuracy {acc:.2} % on {} images in {secs:.2} s ({:.3} ms/image, batch {batch})",
        pred.len(),
        1000.0 * secs / pred.len() as f64
    );
    assert_eq!(pred.len(), 10_000);
    assert!(
        (acc - expected).abs() <= 0.05,
        "{file}: accuracy {acc:.2} % differs from {expected} %"
    );
    Ok(())
}

#[test]
fn qdq_int8_model_accuracy() -> anyhow::Result<()> {
    model_accuracy(QDQ, 99.12)
}

#[test]
fn dynamic_int8_model_accuracy() -> anyhow::Result<()> {
    model_accuracy(DYNAMIC, 99.15)
}
