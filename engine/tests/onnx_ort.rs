//! Agreement with onnxruntime: exported sample graphs (and the real-world models in
//! `../shared/models`) are run by `scripts/onnx_check.py` on the same input as Lithe, and must
//! agree within 1e-4. Needs a Python with numpy and onnxruntime: `$LITHE_PYTHON`, else
//! `<workspace>/.venv/bin/python` (made by `cargo xtask setup`); skipped without one.

mod onnx_support;
use onnx_support::{python, write_npy};

use lithe::exec;
use lithe::format::onnx;
use lithe::graph::Graph;
use lithe::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models");

/// Runs Lithe on `x`, then onnx_check.py on every output; returns the failures.
fn check(
    py: &Path,
    dir: &Path,
    name: &str,
    model: &Path,
    g: &Graph,
    x: &Tensor,
) -> anyhow::Result<Vec<String>> {
    let outs = exec::run(g, &[(g.inputs[0].name.as_str(), x)])?;
    let input = dir.join(format!("{name}.input.npy"));
    write_npy(&input, x)?;
    let mut failures = Vec::new();
    for (k, y) in outs.iter().enumerate() {
        let output = dir.join(format!("{name}.output{k}.npy"));
        write_npy(&output, y)?;
        let run = Command::new(py)
            .arg(Path::new(WORKSPACE).join("scripts/onnx_check.py"))
            .arg(model)
            .arg(&input)
            .arg(&output)
            .args(["--output-index", &k.to_string()])
            .output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        eprintln!("{name} output {k}: {}", said.trim());
        if !run.status.success() {
            failures.push(format!("{name} output {k}: {}", said.trim()));
        }
    }
    Ok(failures)
}

fn temp_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lithe-onnx-ort-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn exported_graphs_agree_with_onnxruntime() -> anyhow::Result<()> {
    let Some(py) = python()? else { return Ok(()) };
    let dir = temp_dir("samples")?;
    let mut failures = Vec::new();
    for (name, g, _) in onnx_support::samples() {
        let model = dir.join(format!("{name}.onnx"));
        std::fs::write(&model, onnx::export(&g)?)?;
        let x = onnx_support::batch_input(&g, 3, 99);
        failures.extend(check(&py, &dir, name, &model, &g, &x)?);
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "onnxruntime disagrees:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn real_models_agree_with_onnxruntime() -> anyhow::Result<()> {
    let Some(py) = python()? else { return Ok(()) };
    let models = Path::new(MODELS);
    if !models.is_dir() {
        eprintln!("skipped: ../shared/models not found ({})", models.display());
        return Ok(());
    }
    let dir = temp_dir("models")?;
    let mut failures = Vec::new();
    for (file, seed) in [("onnx-zoo-mnist-8.onnx", 5), ("burn-mnist-cnn.onnx", 6)] {
        // The file itself is read in place; only Lithe's input and output go to the temp dir.
        let model = models.join(file);
        let g = onnx::import(&std::fs::read(&model)?)?;
        let x = onnx_support::rand(&g.inputs[0].concrete(1), seed, 2.0, 0.5);
        failures.extend(check(&py, &dir, file, &model, &g, &x)?);
        // And Lithe's re-export of it.
        let again = dir.join(format!("lithe-{file}"));
        std::fs::write(&again, onnx::export(&g)?)?;
        failures.extend(check(&py, &dir, &format!("lithe-{file}"), &again, &g, &x)?);
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "onnxruntime disagrees:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn shipped_zoo_models_agree_with_onnxruntime() -> anyhow::Result<()> {
    let Some(py) = python()? else { return Ok(()) };
    let zoo = Path::new(WORKSPACE).join("www/models");
    let Ok(entries) = std::fs::read_dir(&zoo) else {
        eprintln!("skipped: {} not found", zoo.display());
        return Ok(());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    let dir = temp_dir("zoo")?;
    let mut failures = Vec::new();
    for (k, model) in files.iter().enumerate() {
        let g = onnx::import(&std::fs::read(model)?)?;
        let x = onnx_support::rand(&g.inputs[0].concrete(4), 40 + k as u64, 2.0, 0.5);
        let name = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        failures.extend(check(&py, &dir, &name, model, &g, &x)?);
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "onnxruntime disagrees:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// Compressed models exported as ONNX (`Compressed::export_onnx`): weight-only int8 and int4
/// (uint8 codes behind per-channel `DequantizeLinear`), binary and ternary weights (int8 signs
/// times α), pruning, SVD (two Gemms) and filter pruning (a thinner graph). Each file must load
/// in onnxruntime and agree with Lithe's compressed graph within 1e-4; the QDQ files must store
/// one byte per quantized weight.
#[test]
fn compressed_exports_agree_with_onnxruntime() -> anyhow::Result<()> {
    use lithe::compress::Recipe;
    use std::ops::ControlFlow;
    let Some(py) = python()? else { return Ok(()) };
    let zoo = Path::new(WORKSPACE).join("www/models");
    let dir = temp_dir("compressed")?;
    let mut failures = Vec::new();
    let cases: &[(&str, &str, &str, Option<f64>)] = &[
        (
            "lenet-300-100",
            "int8-weights",
            r#"{"passes": [{"pass": "quantize", "bits": 8, "symmetric": true, "per_channel": true}]}"#,
            Some(0.30),
        ),
        (
            "lenet-5",
            "int4-weights",
            r#"{"passes": [{"pass": "quantize", "bits": 4, "symmetric": false, "per_channel": true}]}"#,
            Some(0.30),
        ),
        (
            "lenet-300-100",
            "binary",
            r#"{"passes": [{"pass": "lowbit", "scheme": "binary"}]}"#,
            Some(0.30),
        ),
        (
            "lenet-5",
            "ternary",
            r#"{"passes": [{"pass": "lowbit", "scheme": "ternary", "per_channel": false}]}"#,
            Some(0.30),
        ),
        (
            "lenet-300-100",
            "prune-then-int8",
            r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.9},
                           {"pass": "quantize", "bits": 8, "symmetric": false, "per_channel": true}]}"#,
            Some(0.30),
        ),
        (
            "lenet-300-100",
            "svd",
            r#"{"passes": [{"pass": "low_rank", "layers": ["fc1"], "rank": 32}]}"#,
            None,
        ),
    ];
    for &(model, tag, recipe, max_ratio) in cases {
        let bytes = std::fs::read(zoo.join(format!("{model}.onnx")))?;
        let g = onnx::import(&bytes)?;
        let recipe = Recipe::from_json(recipe)?;
        let c = recipe.apply(&g, None, None, &mut |_| ControlFlow::Continue(()))?;
        let out = c.export_onnx()?;
        let ratio = out.len() as f64 / bytes.len() as f64;
        eprintln!(
            "{model} {tag}: ONNX {} → {} B ({:.1} %)",
            bytes.len(),
            out.len(),
            100.0 * ratio
        );
        if let Some(max) = max_ratio {
            assert!(
                ratio <= max,
                "{model} {tag}: the QDQ file is {:.1} % of the f32 one",
                100.0 * ratio
            );
        }
        let file = dir.join(format!("{model}-{tag}.onnx"));
        std::fs::write(&file, &out)?;
        // Lithe reads its own export back and computes what the compressed graph computes.
        let back = onnx::import(&out)?;
        let x = onnx_support::rand(&g.inputs[0].concrete(3), 77, 2.0, 0.5);
        let name = g.inputs[0].name.as_str();
        let want = exec::run(&c.graph, &[(name, &x)])?;
        let again = exec::run(&back, &[(back.inputs[0].name.as_str(), &x)])?;
        assert_eq!(
            want, again,
            "{model} {tag}: the re-imported export computes otherwise"
        );
        failures.extend(check(
            &py,
            &dir,
            &format!("{model}-{tag}"),
            &file,
            &c.graph,
            &x,
        )?);
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "onnxruntime disagrees:\n{}",
        failures.join("\n")
    );
    Ok(())
}
