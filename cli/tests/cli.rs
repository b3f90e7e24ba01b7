//! The `lithe` binary end to end: info, eval and run on the committed zoo, and clear errors.

use std::path::PathBuf;
use std::process::Command;

fn lithe(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lithe"))
        .args(args)
        .output()
        .expect("run lithe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lithe-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn info_prints_a_table_and_json() {
    let (ok, out, err) = lithe(&["info", "lenet-300-100"]);
    assert!(ok, "{err}");
    assert!(out.contains("fc1") && out.contains("266610"), "{out}");
    let (ok, out, _) = lithe(&["info", "lenet-5", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["params"], 431_080);
    assert_eq!(v["macs"], 2_293_000);
}

#[test]
fn eval_reproduces_the_manifest_accuracy() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../www/models/manifest.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let want = manifest
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["arch"] == "tiny-mlp")
        .unwrap()["test_accuracy"]
        .as_f64()
        .unwrap();
    let (ok, out, err) = lithe(&["eval", "tiny-mlp", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["count"], 10_000);
    assert!(
        (v["accuracy"].as_f64().unwrap() - want).abs() < 1e-6,
        "{} vs {want}",
        v["accuracy"]
    );
    let (ok, out, _) = lithe(&["eval", "tiny-mlp"]);
    assert!(ok && out.contains("confusion"), "{out}");
}

#[test]
fn run_npy_and_raw_inputs() {
    // A blank image: .npy in, .npy out, 10 logits.
    let x = tmp("x.npy");
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let mut header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 28, 28), }".to_string();
    header.push_str(&" ".repeat(64 - (10 + header.len() + 1) % 64));
    header.push('\n');
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend(std::iter::repeat_n(0u8, 784 * 4));
    std::fs::write(&x, &npy).unwrap();
    let y = tmp("y.npy");
    let (ok, _, err) = lithe(&[
        "run",
        "lenet-300-100",
        "--input",
        x.to_str().unwrap(),
        "--output",
        y.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let out = std::fs::read(&y).unwrap();
    assert!(String::from_utf8_lossy(&out[..128]).contains("(1, 10)"));
    assert_eq!(out.len() % 64, 40, "64-byte header + 10 f32");
    // Same input as raw f32 with --shape gives the same bytes.
    let raw = tmp("x.bin");
    std::fs::write(&raw, vec![0u8; 784 * 4]).unwrap();
    let y2 = tmp("y2.npy");
    let (ok, _, err) = lithe(&[
        "run",
        "lenet-300-100",
        "--input",
        raw.to_str().unwrap(),
        "--shape",
        "1,1,28,28",
        "--output",
        y2.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&y2).unwrap(), out);
    // A wrong shape is a clear error naming the input.
    let (ok, _, err) = lithe(&[
        "run",
        "lenet-300-100",
        "--input",
        raw.to_str().unwrap(),
        "--shape",
        "1,784",
        "--output",
        y2.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("bad input `input`") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn bad_files_and_names_give_clear_errors() {
    let bad = tmp("bad.onnx");
    std::fs::write(&bad, b"this is not a model").unwrap();
    let (ok, _, err) = lithe(&["info", bad.to_str().unwrap()]);
    assert!(
        !ok && err.starts_with("error:") && err.contains("bad.onnx"),
        "{err}"
    );
    let (ok, _, err) = lithe(&["info", "resnet-9000"]);
    assert!(!ok && err.contains("zoo name"), "{err}");
    let (ok, _, err) = lithe(&["train", "--arch", "resnet"]);
    assert!(!ok && err.contains("unknown architecture"), "{err}");
}

#[test]
fn compress_with_a_recipe_writes_a_model_and_a_report() {
    let recipes = concat!(env!("CARGO_MANIFEST_DIR"), "/../recipes");
    let out = tmp("int8.onnx");
    let report = tmp("int8.json");
    let (ok, stdout, err) = lithe(&[
        "compress",
        "lenet-300-100",
        "--recipe",
        &format!("{recipes}/int8.json"),
        "-o",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("int8 sym per-channel"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let pass = &r["passes"][0];
    assert_eq!(pass["pass"], "quantize");
    // 8-bit codes: about a quarter of the f32 bytes, accuracy within 0.3 pp.
    let (before, after) = (
        pass["bytes_before"].as_f64().unwrap(),
        pass["bytes_after"].as_f64().unwrap(),
    );
    assert!(after < before * 0.26, "{before} → {after}");
    let drop = pass["accuracy_before"].as_f64().unwrap() - pass["accuracy_after"].as_f64().unwrap();
    assert!(drop <= 0.003, "accuracy drop {drop}");
    // The dense fallback still loads and runs.
    let (ok, _, err) = lithe(&["info", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    // A .lithe output stores the 8-bit codes as they are encoded, and the CLI opens it.
    let x = tmp("x.lithe");
    let (ok, _, err) = lithe(&[
        "compress",
        "lenet-300-100",
        "--recipe",
        &format!("{recipes}/int8.json"),
        "-o",
        x.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let size = std::fs::metadata(&x).unwrap().len() as f64;
    assert!(
        size < before * 0.27,
        "{size} bytes of .lithe vs {before} f32"
    );
    let (ok, _, err) = lithe(&["info", x.to_str().unwrap()]);
    assert!(ok, "{err}");
    // A file that is neither ONNX nor .lithe: a clear error, not a panic.
    let junk = tmp("junk.lithe");
    std::fs::write(&junk, b"LITHE\x02garbage").unwrap();
    let (ok, _, err) = lithe(&["info", junk.to_str().unwrap()]);
    assert!(!ok && err.contains(".lithe"), "{err}");
}
