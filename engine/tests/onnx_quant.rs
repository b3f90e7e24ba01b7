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

mod onnx_support;
use onnx_support::{python, write_npy};

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

fn temp_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("lithe-onnx-quant-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
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

/// Top-1 predictions of `g` on the first `limit` images, `batch` images per run, through the
/// execution plan (int8 kernels, QDQ fused) as `Session` runs it.
fn predict(
    g: &Graph,
    data: &Dataset,
    limit: usize,
    batch: usize,
) -> anyhow::Result<(Vec<usize>, Vec<u8>)> {
    predict_with(g, data, limit, batch, true)
}

/// [`predict`] through the plan (`planned`) or the reference interpreter.
fn predict_with(
    g: &Graph,
    data: &Dataset,
    limit: usize,
    batch: usize,
    planned: bool,
) -> anyhow::Result<(Vec<usize>, Vec<u8>)> {
    let input = g.inputs[0].name.clone();
    let plan = lithe::plan::Plan::new(g)?;
    let mut pred = Vec::new();
    let mut labels = Vec::new();
    let idx: Vec<usize> = (0..data.len().min(limit)).collect();
    for chunk in idx.chunks(batch) {
        let (x, y) = data.batch(chunk, &Preprocess::MNIST_NORM);
        let out = if planned {
            plan.run(&[(&input, &x)])?
        } else {
            exec::run(g, &[(&input, &x)])?
        };
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

/// The plan's kernels against the reference interpreter on the first `limit` images: the
/// dynamic model's integer ops give the same outputs bit for bit (so the same classes); the QDQ
/// model's fused `QLinearConv`s sum exactly in integers where the reference rounds f32 products,
/// so its classes must agree on ≥ 99.5 % of the images. Prints both times.
fn plan_agreement(file: &str, limit: usize) -> anyhow::Result<()> {
    let Some(bytes) = model(file)? else {
        return Ok(());
    };
    let Some(data) = mnist_test()? else {
        return Ok(());
    };
    let mut g = onnx::import(&bytes)?;
    let batch = batch_for(file, &mut g);
    let plan = lithe::plan::Plan::new(&g)?;
    let ks = plan.kernels();
    let int8 = ks.iter().filter(|(_, k)| k.starts_with("int8")).count();
    eprintln!("{file}: planned kernels {ks:?}");
    assert_eq!(
        int8, 5,
        "{file}: every conv and fc layer runs an int8 kernel: {ks:?}"
    );
    let t = Instant::now();
    let (want, labels) = predict_with(&g, &data, limit, batch, false)?;
    let t_ref = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (got, _) = predict_with(&g, &data, limit, batch, true)?;
    let t_plan = t.elapsed().as_secs_f64();
    let agree = want.iter().zip(&got).filter(|(a, b)| a == b).count();
    let pct = 100.0 * agree as f64 / want.len().max(1) as f64;
    eprintln!(
        "{file}: plan vs reference on {} images: classes agree on {pct:.2} %; accuracy {:.2} % \
         (plan) vs {:.2} % (reference); {:.3} vs {:.3} ms/image (batch {batch})",
        want.len(),
        accuracy(&got, &labels),
        accuracy(&want, &labels),
        1000.0 * t_plan / want.len() as f64,
        1000.0 * t_ref / want.len() as f64,
    );
    if file == DYNAMIC {
        assert_eq!(got, want, "{file}: the int8 kernels change a class");
    }
    assert!(
        pct >= 99.5,
        "{file}: plan and reference agree on {pct:.2} % < 99.5 %"
    );
    Ok(())
}

#[test]
fn planned_int8_models_agree_with_the_reference() -> anyhow::Result<()> {
    plan_agreement(DYNAMIC, 300)?;
    plan_agreement(QDQ, 1000)
}

/// Runs an ONNX model with onnxruntime (all graph optimizations off, after `onnx.checker`).
/// `all MODEL OUT IN...`: feeds the `.npy` inputs in order and writes every output as raw
/// little-endian f32 to `OUT.K.f32`. `argmax MODEL OUT IMAGES`: runs each image of `[N, ...]`
/// alone and writes the top-1 classes as raw f32 to `OUT`.
const ORT_SCRIPT: &str = r#"
import sys
import numpy as np
import onnx
import onnxruntime as ort
mode, model, out = sys.argv[1:4]
ins = sys.argv[4:]
data = open(model, "rb").read()
onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
opts = ort.SessionOptions()
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
names = [i.name for i in sess.get_inputs()]
if mode == "all":
    feeds = {n: np.load(p) for n, p in zip(names, ins)}
    for k, y in enumerate(sess.run(None, feeds)):
        np.asarray(y).astype("<f4").tofile(f"{out}.{k}.f32")
else:
    x = np.load(ins[0])
    preds = [sess.run(None, {names[0]: x[i:i + 1]})[0].reshape(-1).argmax() for i in range(len(x))]
    np.asarray(preds, dtype="<f4").tofile(out)
"#;

fn read_f32(path: &Path) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn run_ort(py: &Path, dir: &Path, args: &[&Path], mode: &str) -> anyhow::Result<()> {
    let script = dir.join("ort_run.py");
    std::fs::write(&script, ORT_SCRIPT)?;
    let out = Command::new(py)
        .arg(&script)
        .arg(mode)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "onnxruntime failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_shape_vec(ndarray::IxDyn(shape), v).expect("shape")
}

fn pattern(n: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..n).map(f).collect()
}

/// A graph using every quantization op: QuantizeLinear (uint8 per-tensor, int8 per-axis),
/// QLinearConv with an int32 bias and per-channel weight scales, DequantizeLinear (per-tensor
/// and per-axis), DynamicQuantizeLinear, MatMulInteger, ConvInteger, QLinearMatMul with
/// per-column scales, and Cast.
fn quant_sample() -> (Graph, Vec<(String, Tensor)>) {
    let mut g = Graph {
        name: "quant_sample".into(),
        ..Graph::default()
    };
    let input = |name: &str, shape: &[usize]| ValueInfo {
        name: name.into(),
        shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
    };
    g.inputs = vec![input("x", &[1, 2, 5, 5]), input("x2", &[4, 6])];
    let w = &mut g.weights;
    w.insert("xs".into(), t(&[], vec![0.02]));
    w.insert("xzp".into(), t(&[], vec![128.0]));
    w.insert(
        "w".into(),
        t(&[3, 2, 3, 3], pattern(54, |i| ((i * 7) % 11) as f32 - 5.0)),
    );
    w.insert("ws".into(), t(&[3], vec![0.01, 0.02, 0.015]));
    w.insert("wzp".into(), t(&[], vec![0.0]));
    w.insert("wzp3".into(), t(&[3], vec![0.0, 0.0, 0.0]));
    w.insert("ys".into(), t(&[], vec![0.05]));
    w.insert("yzp".into(), t(&[], vec![100.0]));
    w.insert("bias".into(), t(&[3], vec![10.0, -20.0, 30.0]));
    w.insert(
        "b".into(),
        t(&[6, 3], pattern(18, |i| ((i * 5) % 13) as f32 - 6.0)),
    );
    w.insert("bzp".into(), t(&[], vec![1.0]));
    w.insert("bzp0".into(), t(&[], vec![0.0]));
    w.insert(
        "w2".into(),
        t(&[2, 2, 2, 2], pattern(16, |i| ((i * 3) % 7) as f32 + 1.0)),
    );
    w.insert("w2zp".into(), t(&[], vec![3.0]));
    w.insert("s2".into(), t(&[], vec![0.03]));
    w.insert("zp2".into(), t(&[], vec![120.0]));
    w.insert("bs".into(), t(&[3], vec![0.02, 0.01, 0.03]));
    w.insert("ys2".into(), t(&[], vec![0.1]));
    w.insert("yzp2".into(), t(&[], vec![128.0]));
    w.insert("sq".into(), t(&[2], vec![0.01, 0.02]));
    w.insert("zq".into(), t(&[2], vec![-3.0, 5.0]));
    let mut conv = ConvAttrs::new([3, 3]);
    conv.pads = [1, 1, 1, 1];
    let nodes = vec![
        Node::new(
            "q",
            Op::QuantizeLinear {
                axis: 1,
                to: DType::U8,
            },
            &["x", "xs", "xzp"],
        ),
        Node::new(
            "qc",
            Op::QLinearConv {
                conv,
                x: DType::U8,
                w: DType::I8,
                y: DType::U8,
            },
            &["q", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "bias"],
        ),
        Node::new(
            "dq",
            Op::DequantizeLinear {
                axis: 1,
                from: DType::U8,
            },
            &["qc", "ys", "yzp"],
        ),
        Node::new(
            "dqw",
            Op::DequantizeLinear {
                axis: 0,
                from: DType::I8,
            },
            &["w", "ws", "wzp3"],
        ),
        Node {
            name: "dyn".into(),
            op: Op::DynamicQuantizeLinear,
            inputs: vec!["x2".into()],
            outputs: vec!["d_y".into(), "d_s".into(), "d_zp".into()],
        },
        Node::new(
            "mi",
            Op::MatMulInteger {
                a: DType::U8,
                b: DType::I8,
            },
            &["d_y", "b", "d_zp", "bzp"],
        ),
        Node::new(
            "mi_f",
            Op::Cast {
                from: DType::I32,
                to: DType::F32,
            },
            &["mi"],
        ),
        Node::new(
            "ci",
            Op::ConvInteger {
                conv: ConvAttrs::new([2, 2]),
                x: DType::U8,
                w: DType::U8,
            },
            &["q", "w2", "xzp", "w2zp"],
        ),
        Node::new(
            "ci_f",
            Op::Cast {
                from: DType::I32,
                to: DType::F32,
            },
            &["ci"],
        ),
        Node::new(
            "qa",
            Op::QuantizeLinear {
                axis: 1,
                to: DType::U8,
            },
            &["x2", "s2", "zp2"],
        ),
        Node::new(
            "qmm",
            Op::QLinearMatMul {
                a: DType::U8,
                b: DType::I8,
                y: DType::U8,
            },
            &["qa", "s2", "zp2", "b", "bs", "bzp0", "ys2", "yzp2"],
        ),
        Node::new(
            "q8",
            Op::QuantizeLinear {
                axis: 1,
                to: DType::I8,
            },
            &["x", "sq", "zq"],
        ),
        Node::new(
            "q8b",
            Op::QuantizeLinear {
                axis: 1,
                to: DType::I8,
            },
            &["x", "xs"],
        ),
        Node::new(
            "c8",
            Op::Cast {
                from: DType::F32,
                to: DType::I8,
            },
            &["x"],
        ),
        Node::new(
            "c32",
            Op::Cast {
                from: DType::U8,
                to: DType::I32,
            },
            &["q"],
        ),
    ];
    g.nodes = nodes;
    g.outputs = [
        "dq", "dqw", "d_y", "d_s", "d_zp", "mi_f", "ci_f", "qmm", "q8", "q8b", "c8", "c32",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    g.validate().expect("valid sample");
    let x = t(
        &[1, 2, 5, 5],
        pattern(50, |i| ((i as f32) * 0.37).sin() * 2.5),
    );
    let x2 = t(
        &[4, 6],
        pattern(24, |i| ((i as f32) * 0.61).cos() * 1.7 - 0.3),
    );
    (g, vec![("x".into(), x), ("x2".into(), x2)])
}

#[test]
fn quant_sample_runs_in_integers_and_round_trips() -> anyhow::Result<()> {
    let (g, inputs) = quant_sample();
    let feeds: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outs = exec::run(&g, &feeds)?;
    let types = g.dtypes()?;
    assert_eq!(types["q"], DType::U8);
    assert_eq!(types["w"], DType::I8);
    assert_eq!(types["bias"], DType::I32);
    assert_eq!(types["mi"], DType::I32);
    assert_eq!(types["q8"], DType::I8);
    // Every integer-typed output holds integers in its type's range.
    for (name, y) in g.outputs.iter().zip(&outs) {
        if let Some((lo, hi)) = types[name].range() {
            assert!(
                y.iter()
                    .all(|v| v.fract() == 0.0 && (lo as f32..=hi as f32).contains(v)),
                "{name}: {y}"
            );
        }
    }
    // The planned executor routes these ops to the reference interpreter: same outputs.
    let plan = lithe::plan::Plan::new(&g)?;
    assert_eq!(plan.run(&feeds)?, outs);
    // Export and re-import give the same graph semantics.
    let bytes = onnx::export(&g)?;
    let back = onnx::import(&bytes)?;
    assert_eq!(back.dtypes()?["q8"], DType::I8);
    let again = exec::run(&back, &feeds)?;
    assert_eq!(outs, again);
    // Extreme runtime values saturate or give an error, never a panic.
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30] {
        let x = inputs[0].1.mapv(|_| v);
        let x2 = inputs[1].1.mapv(|_| v);
        let r = exec::run(&g, &[("x", &x), ("x2", &x2)]);
        assert!(
            r.is_ok() || r.as_ref().is_err_and(|e| e.to_string().contains("range")),
            "{v}: {r:?}"
        );
    }
    // Training through them is refused with an error, not a panic.
    let mut rng = lithe::rng::Rng::new(1);
    let trace = exec::forward_train(&g, &feeds, &mut rng);
    if let Ok(trace) = trace {
        let seed = trace.get("dq")?.mapv(|_| 1.0);
        let e = exec::backward(&g, &trace, [("dq".to_string(), seed)].into())
            .expect_err("no training through quantization ops");
        assert!(e.to_string().contains("not supported"), "{e}");
    }
    Ok(())
}

#[test]
fn quant_sample_agrees_with_onnxruntime() -> anyhow::Result<()> {
    let Some(py) = python()? else { return Ok(()) };
    let (g, inputs) = quant_sample();
    let feeds: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outs = exec::run(&g, &feeds)?;
    let dir = temp_dir("sample")?;
    let model = dir.join("quant_sample.onnx");
    std::fs::write(&model, onnx::export(&g)?)?;
    let mut paths = vec![model.clone(), dir.join("out")];
    for (name, x) in &inputs {
        let p = dir.join(format!("{name}.npy"));
        write_npy(&p, x)?;
        paths.push(p);
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    run_ort(&py, &dir, &refs, "all")?;
    let types = g.dtypes()?;
    let mut failures = Vec::new();
    for (k, (name, y)) in g.outputs.iter().zip(&outs).enumerate() {
        let want = read_f32(&dir.join(format!("out.{k}.f32")))?;
        let got: Vec<f32> = y.iter().copied().collect();
        let exact = types[name].is_int();
        let bad = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| {
                if exact {
                    g != w
                } else {
                    (*g - *w).abs() > 1e-5 + 1e-5 * w.abs()
                }
            })
            .count();
        eprintln!(
            "{name} ({}): {} values, {bad} differ",
            types[name],
            want.len()
        );
        if want.len() != got.len() || bad > 0 {
            failures.push(format!("{name}: got {got:?}\nwant {want:?}"));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Top-1 agreement between Lithe (on the imported model) and onnxruntime (on Lithe's
/// re-export of it) on the first `limit` test images.
fn export_agreement(file: &str, limit: usize) -> anyhow::Result<()> {
    let Some(py) = python()? else { return Ok(()) };
    let Some(bytes) = model(file)? else {
        return Ok(());
    };
    let Some(data) = mnist_test()? else {
        return Ok(());
    };
    let g = onnx::import(&bytes)?;
    let dir = temp_dir(file.trim_end_matches(".onnx"))?;
    let exported = dir.join(file);
    std::fs::write(&exported, onnx::export(&g)?)?;
    let mut run_g = g.clone();
    let batch = batch_for(file, &mut run_g);
    let (pred, labels) = predict(&run_g, &data, limit, batch)?;
    let idx: Vec<usize> = (0..pred.len()).collect();
    let (x, _) = data.batch(&idx, &Preprocess::MNIST_NORM);
    let images = dir.join("images.npy");
    write_npy(&images, &x)?;
    let out = dir.join("ort_pred.f32");
    let t = Instant::now();
    run_ort(&py, &dir, &[&exported, &out, &images], "argmax")?;
    let ort_secs = t.elapsed().as_secs_f64();
    let ort: Vec<usize> = read_f32(&out)?.iter().map(|&v| v as usize).collect();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(ort.len(), pred.len());
    let agree = pred.iter().zip(&ort).filter(|(a, b)| a == b).count();
    let pct = 100.0 * agree as f64 / pred.len() as f64;
    eprintln!(
        "{file}: re-exported, onnxruntime agrees with Lithe on {agree}/{} images ({pct:.2} %); \
         Lithe accuracy {:.2} %, onnxruntime accuracy {:.2} % ({ort_secs:.1} s)",
        pred.len(),
        accuracy(&pred, &labels),
        accuracy(&ort, &labels)
    );
    assert!(pct >= 99.5, "{file}: top-1 agreement {pct:.2} % < 99.5 %");
    Ok(())
}

#[test]
fn qdq_int8_model_exports_and_agrees_with_onnxruntime() -> anyhow::Result<()> {
    export_agreement(QDQ, ORT_IMAGES)
}

#[test]
fn dynamic_int8_model_exports_and_agrees_with_onnxruntime() -> anyhow::Result<()> {
    export_agreement(DYNAMIC, ORT_IMAGES)
}

#[test]
#[ignore = "10k images through onnxruntime and Lithe; run with --ignored"]
fn int8_models_agree_with_onnxruntime_on_10k() -> anyhow::Result<()> {
    export_agreement(QDQ, usize::MAX)?;
    export_agreement(DYNAMIC, usize::MAX)
}

/// A one-node model `Y = QuantizeLinear(X[1,2,2], scale, zero_point)` at `opset`, with
/// optional extra attributes.
fn quantize_model(
    opset: i64,
    scale: &[f32],
    zp: Option<(i32, &[u8])>,
    attrs: Vec<onnx::proto::AttributeProto>,
) -> Vec<u8> {
    use onnx::proto::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
        TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
    };
    use prost::Message;
    let vi = |name: &str, elem: i32| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto {
                    dim: [1, 2, 2]
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let dims = |n: usize| if n == 1 { vec![] } else { vec![n as i64] };
    let mut init = vec![TensorProto {
        name: Some("s".into()),
        dims: dims(scale.len()),
        data_type: Some(1),
        float_data: scale.to_vec(),
        ..Default::default()
    }];
    let mut inputs = vec!["X".to_string(), "s".to_string()];
    if let Some((dt, v)) = zp {
        init.push(TensorProto {
            name: Some("z".into()),
            dims: dims(v.len()),
            data_type: Some(dt),
            raw_data: Some(v.to_vec()),
            ..Default::default()
        });
        inputs.push("z".into());
    }
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            node: vec![NodeProto {
                op_type: Some("QuantizeLinear".into()),
                name: Some("q".into()),
                input: inputs,
                output: vec!["Y".into()],
                attribute: attrs,
                ..Default::default()
            }],
            initializer: init,
            input: vec![vi("X", 1)],
            output: vec![vi("Y", 3)],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn int_attr(name: &str, v: i64) -> onnx::proto::AttributeProto {
    onnx::proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(onnx::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

#[test]
fn quantize_linear_opset_forms() -> anyhow::Result<()> {
    const INT8: i32 = 3;
    const UINT8: i32 = 2;
    let x = t(&[1, 2, 2], vec![0.5, 1.5, 2.5, -300.0]);
    let run = |bytes: &[u8]| -> anyhow::Result<(Op, Vec<f32>)> {
        let g = onnx::import(bytes)?;
        let y = exec::run(&g, &[("X", &x)])?;
        Ok((g.nodes[0].op.clone(), y[0].iter().copied().collect()))
    };
    let q = |axis, to| Op::QuantizeLinear { axis, to };
    // Opset 10: per-tensor; no zero point means uint8 (saturating at 0); halves round to even.
    let (op, y) = run(&quantize_model(10, &[1.0], None, vec![]))?;
    assert_eq!(op, q(1, DType::U8));
    assert_eq!(y, vec![0.0, 2.0, 2.0, 0.0]);
    // Opset 10 has no per-axis form.
    let e = onnx::import(&quantize_model(
        10,
        &[1.0, 2.0],
        Some((INT8, &[0, 0])),
        vec![],
    ))
    .unwrap_err();
    assert!(e.to_string().contains("per-axis needs opset 13"), "{e}");
    // Opset 13: per-axis along `axis` (default 1) with an int8 zero point per channel.
    let (op, y) = run(&quantize_model(
        13,
        &[1.0, 0.5],
        Some((INT8, &[1, 0xff])),
        vec![],
    ))?;
    assert_eq!(op, q(1, DType::I8));
    assert_eq!(y, vec![1.0, 3.0, 4.0, -128.0]);
    // Per-axis along the last axis.
    let (_, y) = run(&quantize_model(
        13,
        &[1.0, 0.5],
        Some((UINT8, &[10, 20])),
        vec![int_attr("axis", -1)],
    ))?;
    assert_eq!(y, vec![10.0, 23.0, 12.0, 0.0]);
    // Opset 21: `output_dtype` without a zero point; a conflicting one and `block_size` are
    // refused.
    let (op, _) = run(&quantize_model(
        21,
        &[1.0],
        None,
        vec![int_attr("output_dtype", 3)],
    ))?;
    assert_eq!(op, q(1, DType::I8));
    let e = onnx::import(&quantize_model(
        21,
        &[1.0],
        Some((UINT8, &[0])),
        vec![int_attr("output_dtype", 3)],
    ))
    .unwrap_err();
    assert!(e.to_string().contains("differs from the zero point"), "{e}");
    let e = onnx::import(&quantize_model(
        21,
        &[1.0],
        None,
        vec![int_attr("block_size", 2)],
    ))
    .unwrap_err();
    assert!(matches!(e, lithe::Error::Attribute { .. }), "{e}");
    Ok(())
}

/// Lithe's own integer-only int8 models (the `int8` pass) written as QDQ ONNX
/// (`compress::qdq::to_qdq`): Lithe runs the QDQ graph and re-imports it, and onnxruntime runs
/// it, both agreeing with the integer model on the top-1 class of at least 99.5 % of the first
/// `LITHE_QDQ_IMAGES` (default 1000) test images.
#[test]
fn int8_models_export_as_qdq_that_onnxruntime_runs() -> anyhow::Result<()> {
    use lithe::compress::intonly::{Int8Spec, QGraph};
    let Some(test) = mnist_test()? else {
        return Ok(());
    };
    let limit: usize = std::env::var("LITHE_QDQ_IMAGES").map_or(1000, |v| v.parse().unwrap());
    let train = Dataset::load(format!("{WORKSPACE}/www/data/mnist-train-6k.lmn.gz"))?;
    let py = python()?;
    for name in ["lenet-300-100", "lenet-5", "mobilenet"] {
        let g = onnx::import(&std::fs::read(format!(
            "{WORKSPACE}/www/models/{name}.onnx"
        ))?)?;
        let q = QGraph::build(&g, &train, &Int8Spec::default())?;
        let qdq = lithe::compress::qdq::to_qdq(&q)?;
        let bytes = onnx::export(&qdq)?;
        let back = onnx::import(&bytes)?;
        let idx: Vec<usize> = (0..test.len().min(limit)).collect();
        let (x, labels) = test.batch(&idx, &q.preprocess);
        let argmaxes = |t: &Tensor| -> Vec<usize> {
            let flat: Vec<f32> = t.iter().copied().collect();
            flat.chunks(t.shape()[1]).map(argmax).collect()
        };
        let input = qdq.inputs[0].name.as_str();
        let (mut int, mut ours) = (Vec::new(), Vec::new());
        for chunk in idx.chunks(500) {
            let (xb, _) = test.batch(chunk, &q.preprocess);
            int.extend(argmaxes(&q.run(&xb)?));
            let y = exec::run(&qdq, &[(input, &xb)])?;
            if chunk[0] == 0 {
                assert_eq!(
                    y,
                    exec::run(&back, &[(input, &xb)])?,
                    "{name}: re-import changes outputs"
                );
            }
            ours.extend(argmaxes(&y[0]));
        }
        let agree = |p: &[usize]| p.iter().zip(&int).filter(|(a, b)| a == b).count();
        let pct = |k: usize| 100.0 * k as f64 / int.len() as f64;
        eprintln!(
            "{name}: QDQ ONNX {} bytes; Lithe on the QDQ graph agrees with the integer model on \
             {:.2} % of {} images; accuracy int {:.2} %, QDQ {:.2} %",
            bytes.len(),
            pct(agree(&ours)),
            int.len(),
            accuracy(&int, &labels),
            accuracy(&ours, &labels)
        );
        assert!(pct(agree(&ours)) >= 99.5, "{name}");
        let Some(py) = &py else { continue };
        let dir = temp_dir(&format!("qdq-{name}"))?;
        let model = dir.join("model.onnx");
        std::fs::write(&model, &bytes)?;
        let images = dir.join("images.npy");
        write_npy(&images, &x)?;
        let out = dir.join("ort_pred.f32");
        run_ort(py, &dir, &[&model, &out, &images], "argmax")?;
        let ort: Vec<usize> = read_f32(&out)?.iter().map(|&v| v as usize).collect();
        std::fs::remove_dir_all(&dir).ok();
        eprintln!(
            "{name}: onnxruntime on the QDQ ONNX agrees with Lithe's integer model on {:.2} % \
             (accuracy {:.2} %)",
            pct(agree(&ort)),
            accuracy(&ort, &labels)
        );
        assert!(pct(agree(&ort)) >= 99.5, "{name}: onnxruntime");
    }
    Ok(())
}
