//! ONNX backend node-test conformance: runs the `onnx/backend/test/data/node/*` tests of the
//! pinned ONNX release (fetched by `scripts/fetch_onnx_node_tests.sh` into
//! `.data/onnx-node-tests/`) for every op Lithe imports, and compares Lithe's reference
//! interpreter with the expected outputs.
//!
//! Each test folder holds `model.onnx` and `test_data_set_*/{input,output}_*.pb` (serialized
//! `TensorProto`s). A test is *in scope* when its model uses at least one op of
//! [`onnx::SUPPORTED_OPS`] (other than `Constant`/`Identity`, which only count when nothing else
//! is in the model). Each in-scope test is then:
//!
//! - **unsupported** when the model also uses ops Lithe does not import
//!   ([`Error::UnsupportedOps`]), when a graph input or output is not `float` (Lithe's graph is
//!   f32-only), or when the importer refuses an attribute value Lithe does not implement
//!   ([`Error::Attribute`], e.g. 1-D/3-D windows);
//! - **passed** when every output matches within `|got − want| ≤ ATOL + RTOL·|want|`;
//! - **failed** otherwise (any other import error, a run error, a shape or value mismatch).
//!
//! Two rewrites let more tests run: inputs that Lithe needs as constants (Clip bounds, Dropout
//! ratio, Reshape shape, Squeeze/Unsqueeze axes, Pad pads/value/axes, Gather indices) are frozen
//! into initializers ([`freeze`]), and models stamped with opsets 22..=[`CHECKED_OPSET`] are
//! imported as opset 21 (the newer versions of Lithe's ops only add element types).
//!
//! The test fails when a test fails that is not listed in [`EXCEPTIONS`]. The per-op report is
//! printed and written to `target/onnx-conformance.json`. Without the data the test prints
//! `skipped: run scripts/fetch_onnx_node_tests.sh` and passes. See `docs/ONNX_CONFORMANCE.md`.

use lithe::Error;
use lithe::format::onnx::{self, proto};
use lithe::tensor::Tensor;
use prost::Message;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Relative tolerance (ONNX's backend test default).
const RTOL: f32 = 1e-3;
/// Absolute tolerance (ONNX's default is 1e-7; Lithe's f32 reference ops sum in a different
/// order than NumPy's float64-backed expectations, so allow f32 rounding near zero).
const ATOL: f32 = 1e-5;

/// Known failures of supported ops, each with a one-line reason (also in
/// `docs/ONNX_CONFORMANCE.md`). A listed test that passes is reported as a stale exception.
const EXCEPTIONS: &[(&str, &str)] = &[];

/// Newest default-domain opset whose versions of Lithe's ops were checked against opset 21
/// (with `onnx.defs.get_schema` of onnx 1.22.0): Conv, MaxPool, AveragePool, GlobalAveragePool,
/// GlobalMaxPool, HardSigmoid, HardSwish, Dropout (v22), Flatten, Reshape, Identity, Constant,
/// Transpose, Squeeze, Unsqueeze, Pad and Shape (v23–v25) only add element types (bfloat16,
/// float8, float4, int2...), with the same attributes, inputs and outputs as at 21; every other
/// supported op has no version after 21. So a
/// node test at opset 22..=27 that uses only Lithe's ops is run with its opset rewritten to
/// [`onnx::MAX_OPSET`] (the importer itself refuses newer opsets).
const CHECKED_OPSET: i64 = 27;

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
const INT64: i32 = 7;
/// `TensorProto.DataType.DOUBLE`.
const DOUBLE: i32 = 11;
/// `TensorProto.DataType.UINT8`.
const UINT8: i32 = 2;
/// `TensorProto.DataType.INT8`.
const INT8: i32 = 3;
/// `TensorProto.DataType.INT32`.
const INT32: i32 = 6;

/// Ops whose models may take and return int8, uint8 and int32 tensors (Lithe carries them as
/// exact integers in f32 tensors, with the element type tracked on the graph).
const QUANT_OPS: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "Cast",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine/ has a parent")
        .to_path_buf()
}

fn data_dir() -> PathBuf {
    std::env::var_os("LITHE_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".data").join("onnx-node-tests"))
}

fn report_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("onnx-conformance.json")
}

/// The outcome of one node test.
#[derive(Clone, Debug)]
enum Outcome {
    Passed,
    Failed(String),
    Unsupported(String),
}

/// Decodes a float `TensorProto` (raw little-endian or `float_data`/`double_data`), or an
/// int8/uint8/int32 one into exact integers held as f32.
fn decode_f32(t: &proto::TensorProto) -> Result<Tensor, String> {
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim in {:?}", t.dims)))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let dt = t.data_type.unwrap_or(0);
    let data: Vec<f32> = match (dt, t.raw_data.as_deref()) {
        (FLOAT, Some(raw)) => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (FLOAT, None) => t.float_data.clone(),
        (DOUBLE, Some(raw)) => raw
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                f64::from_le_bytes(w) as f32
            })
            .collect(),
        (DOUBLE, None) => t.double_data.iter().map(|&x| x as f32).collect(),
        (INT8, Some(raw)) => raw.iter().map(|&b| f32::from(b as i8)).collect(),
        (UINT8, Some(raw)) => raw.iter().map(|&b| f32::from(b)).collect(),
        (INT32, Some(raw)) => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        (INT8 | UINT8 | INT32, None) => t.int32_data.iter().map(|&x| x as f32).collect(),
        _ => return Err(format!("data type {dt} is not float")),
    };
    if data.len() != n {
        return Err(format!(
            "{} values for shape {shape:?} ({n} elements)",
            data.len()
        ));
    }
    Tensor::from_shape_vec(ndarray::IxDyn(&shape), data).map_err(|e| e.to_string())
}

/// The `TensorProto.DataType` name of `t`.
fn dtype_name(t: i32) -> &'static str {
    match t {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "another non-float type",
    }
}

fn elem_type(v: &proto::ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        proto::type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

fn close(got: f32, want: f32) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= ATOL + RTOL * want.abs()
}

/// Compares one output; `Err` describes the first mismatch.
fn compare(name: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "output `{name}`: shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let mut bad = 0usize;
    let mut first = None;
    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
        if !close(g, w) {
            bad += 1;
            first.get_or_insert((i, g, w));
        }
    }
    match first {
        None => Ok(()),
        Some((i, g, w)) => Err(format!(
            "output `{name}`: {bad}/{} values differ, first at flat index {i}: got {g}, expected {w}",
            want.len()
        )),
    }
}

fn read_pb(path: &Path) -> Result<proto::TensorProto, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    proto::TensorProto::decode(bytes.as_slice()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Files `prefix_0.pb`, `prefix_1.pb`... of a data set, in index order.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("{prefix}_{i}.pb")))
        .take_while(|p| p.exists())
        .collect()
}

/// Whether a test that is unsupported for `why` may be retried with its inputs after the first
/// frozen into initializers: a Clip bound, Dropout ratio or Reshape shape that the node test feeds
/// at run time but Lithe (like most exported models) needs as a constant.
fn freezable(why: &str) -> bool {
    why.starts_with("dtype: input")
        || (why.starts_with("attribute:") && why.contains("must be a constant"))
}

/// `model` with every runtime input but the first turned into an initializer holding its value
/// from `test_data_set_0`; `None` when there is nothing to freeze or more than one data set.
fn freeze(dir: &Path, model: &proto::ModelProto) -> Option<proto::ModelProto> {
    if dir.join("test_data_set_1").exists() {
        return None;
    }
    let mut m = model.clone();
    let g = m.graph.as_mut()?;
    let inits: BTreeSet<String> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.clone())
        .collect();
    let runtime: Vec<usize> = (0..g.input.len())
        .filter(|&i| !inits.contains(g.input[i].name.as_deref().unwrap_or("")))
        .collect();
    if runtime.len() < 2 {
        return None;
    }
    let set = dir.join("test_data_set_0");
    for (k, &i) in runtime.iter().enumerate().skip(1) {
        let mut t = read_pb(&set.join(format!("input_{k}.pb"))).ok()?;
        // Only float values and int64 shapes; a bool `training_mode` stays unsupported.
        if !matches!(t.data_type, Some(FLOAT | INT64)) {
            return None;
        }
        t.name = g.input[i].name.clone();
        g.initializer.push(t);
    }
    let first = runtime[0];
    let mut i = 0;
    g.input.retain(|_| {
        i += 1;
        i - 1 == first || !runtime.contains(&(i - 1))
    });
    Some(m)
}

/// Runs one node test: `bytes` is the encoding of `model`; `frozen` says its secondary inputs
/// were turned into initializers (their `input_*.pb` files are then ignored).
fn run_test(dir: &Path, bytes: &[u8], model: &proto::ModelProto, frozen: bool) -> Outcome {
    let g = model.graph.clone().unwrap_or_default();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    for n in &g.node {
        let domain = n.domain.as_deref().unwrap_or("");
        let op = n.op_type.as_deref().unwrap_or("");
        if !matches!(domain, "" | "ai.onnx") {
            missing.insert(format!("{domain}.{op}"));
        } else if !onnx::SUPPORTED_OPS.contains(&op) {
            missing.insert(op.to_string());
        }
    }
    if !missing.is_empty() {
        return Outcome::Unsupported(format!(
            "ops: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let inits: BTreeSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let runtime_inputs: Vec<&proto::ValueInfoProto> = g
        .input
        .iter()
        .filter(|v| !inits.contains(v.name.as_deref().unwrap_or("")))
        .collect();
    let quant = g
        .node
        .iter()
        .any(|n| QUANT_OPS.contains(&n.op_type.as_deref().unwrap_or("")));
    for (kind, vs) in [
        ("input", runtime_inputs.clone()),
        ("output", g.output.iter().collect()),
    ] {
        for v in vs {
            let t = elem_type(v);
            let int_ok = quant && matches!(t, Some(INT8 | UINT8 | INT32));
            if t != Some(FLOAT) && !int_ok {
                return Outcome::Unsupported(format!(
                    "dtype: {kind} `{}` has element type {}",
                    v.name.as_deref().unwrap_or(""),
                    t.map_or("non-tensor", dtype_name)
                ));
            }
        }
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref().unwrap_or(""), "" | "ai.onnx"))
        .and_then(|o| o.version);
    let clamped;
    let bytes = match opset {
        Some(v) if v > CHECKED_OPSET => {
            return Outcome::Unsupported(format!(
                "opset: {v} is newer than the checked {CHECKED_OPSET}"
            ));
        }
        Some(v) if v > onnx::MAX_OPSET => {
            let mut m = model.clone();
            for o in &mut m.opset_import {
                if matches!(o.domain.as_deref().unwrap_or(""), "" | "ai.onnx") {
                    o.version = Some(onnx::MAX_OPSET);
                }
            }
            clamped = m.encode_to_vec();
            clamped.as_slice()
        }
        _ => bytes,
    };
    let graph = match onnx::import(bytes) {
        Ok(graph) => graph,
        Err(Error::UnsupportedOps(ops)) => {
            return Outcome::Unsupported(format!("ops: {}", ops.join(", ")));
        }
        Err(e @ Error::Attribute { .. }) => {
            return Outcome::Unsupported(format!("attribute: {e}"));
        }
        Err(e) => return Outcome::Failed(format!("import: {e}")),
    };
    let mut sets: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("test_data_set_"))
            })
            .collect(),
        Err(e) => return Outcome::Failed(format!("{}: {e}", dir.display())),
    };
    sets.sort();
    if sets.is_empty() {
        return Outcome::Failed("no test_data_set_* folder".into());
    }
    for set in &sets {
        let mut files = numbered(set, "input");
        if frozen {
            files.truncate(runtime_inputs.len());
        }
        let inputs: Vec<Tensor> = match files
            .iter()
            .map(|p| read_pb(p).and_then(|t| decode_f32(&t)))
            .collect::<Result<_, _>>()
        {
            Ok(v) => v,
            Err(e) => return Outcome::Failed(format!("input: {e}")),
        };
        let wants: Vec<Tensor> = match numbered(set, "output")
            .iter()
            .map(|p| read_pb(p).and_then(|t| decode_f32(&t)))
            .collect::<Result<_, _>>()
        {
            Ok(v) => v,
            Err(e) => return Outcome::Failed(format!("expected output: {e}")),
        };
        if inputs.len() != runtime_inputs.len() {
            return Outcome::Failed(format!(
                "{} input files for {} graph inputs",
                inputs.len(),
                runtime_inputs.len()
            ));
        }
        let named: Vec<(&str, &Tensor)> = runtime_inputs
            .iter()
            .map(|v| v.name.as_deref().unwrap_or(""))
            .zip(&inputs)
            .collect();
        let outs = match std::panic::catch_unwind(|| lithe::exec::run(&graph, &named)) {
            Ok(Ok(outs)) => outs,
            Ok(Err(e)) => return Outcome::Failed(format!("run: {e}")),
            Err(_) => return Outcome::Failed("run: panicked".into()),
        };
        if outs.len() != wants.len() {
            return Outcome::Failed(format!("{} outputs, expected {}", outs.len(), wants.len()));
        }
        for ((got, want), v) in outs.iter().zip(&wants).zip(&g.output) {
            if let Err(e) = compare(v.name.as_deref().unwrap_or(""), got, want) {
                return Outcome::Failed(e);
            }
        }
    }
    Outcome::Passed
}

/// The supported op a test is filed under, or `None` when it is out of scope.
fn key_op(test: &str, model: &proto::ModelProto) -> Option<String> {
    let nodes = model
        .graph
        .as_ref()
        .map(|g| g.node.as_slice())
        .unwrap_or(&[]);
    let types: Vec<&str> = nodes
        .iter()
        .filter(|n| {
            n.domain.as_deref().unwrap_or("").is_empty() || n.domain.as_deref() == Some("ai.onnx")
        })
        .filter_map(|n| n.op_type.as_deref())
        .collect();
    let supported = |t: &&str| onnx::SUPPORTED_OPS.contains(t);
    let mut main: Vec<&str> = types
        .iter()
        .copied()
        .filter(supported)
        .filter(|t| !matches!(*t, "Constant" | "Identity"))
        .collect();
    if main.is_empty() {
        if types.is_empty() || !types.iter().all(supported) {
            return None;
        }
        main = types.clone();
    }
    let distinct: BTreeSet<&str> = main.iter().copied().collect();
    let name = test.trim_start_matches("test_").to_ascii_lowercase();
    let named = distinct
        .iter()
        .filter(|t| name.starts_with(&t.to_ascii_lowercase()))
        .max_by_key(|t| t.len())
        .copied();
    if !types.iter().all(supported) {
        // A model that also needs ops Lithe lacks (e.g. an `_expanded` function body) is only
        // reported under the op the test is named after.
        return named.map(str::to_string);
    }
    named.or(main.last().copied()).map(str::to_string)
}

#[derive(Default)]
struct OpStats {
    passed: Vec<String>,
    failed: Vec<(String, String)>,
    unsupported: Vec<(String, String)>,
    /// Run with secondary inputs frozen into initializers ([`freeze`]).
    frozen: Vec<String>,
    /// Run with the opset rewritten to [`onnx::MAX_OPSET`] ([`CHECKED_OPSET`]).
    clamped: Vec<String>,
}

#[test]
fn onnx_node_tests() {
    let root = data_dir();
    if !root.is_dir() {
        println!("skipped: run scripts/fetch_onnx_node_tests.sh");
        return;
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("read the node-test folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "{} holds no node tests", root.display());

    let exceptions: BTreeMap<&str, &str> = EXCEPTIONS.iter().copied().collect();
    let mut per_op: BTreeMap<String, OpStats> = BTreeMap::new();
    let mut out_of_scope = 0usize;
    let mut unexpected = Vec::new();
    let mut excepted = Vec::new();
    let mut stale = Vec::new();
    for dir in &dirs {
        let test = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let bytes = fs::read(dir.join("model.onnx")).expect("read model.onnx");
        let Ok(model) = proto::ModelProto::decode(bytes.as_slice()) else {
            out_of_scope += 1;
            continue;
        };
        let Some(op) = key_op(&test, &model) else {
            out_of_scope += 1;
            continue;
        };
        let stats = per_op.entry(op.clone()).or_default();
        let mut outcome = run_test(dir, &bytes, &model, false);
        let frozen = match &outcome {
            Outcome::Unsupported(why) if freezable(why) => freeze(dir, &model),
            _ => None,
        };
        if let Some(m) = frozen {
            let again = run_test(dir, &m.encode_to_vec(), &m, true);
            if let Outcome::Unsupported(deeper) = again {
                // Report why the frozen model is still unsupported (more specific).
                outcome = Outcome::Unsupported(format!("{deeper} (with frozen inputs)"));
            } else {
                stats.frozen.push(test.clone());
                outcome = again;
            }
        }
        if model.opset_import.iter().any(|o| {
            o.domain.as_deref().unwrap_or("").is_empty() && o.version > Some(onnx::MAX_OPSET)
        }) && !matches!(outcome, Outcome::Unsupported(_))
        {
            stats.clamped.push(test.clone());
        }
        match outcome {
            Outcome::Passed => {
                if exceptions.contains_key(test.as_str()) {
                    stale.push(test.clone());
                }
                stats.passed.push(test);
            }
            Outcome::Unsupported(why) => stats.unsupported.push((test, why)),
            Outcome::Failed(why) => {
                if let Some(reason) = exceptions.get(test.as_str()) {
                    excepted.push(format!("{test} ({op}): {why} [exception: {reason}]"));
                } else {
                    unexpected.push(format!("{test} ({op}): {why}"));
                }
                stats.failed.push((test, why));
            }
        }
    }

    // Report.
    println!(
        "ONNX node tests in {} ({} tests)",
        root.display(),
        dirs.len()
    );
    println!("rtol {RTOL}, atol {ATOL}; {out_of_scope} tests use no op Lithe imports");
    println!(
        "| op | passed | failed | unsupported | of which run with frozen inputs | with opset rewritten |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let (mut tp, mut tf, mut tu) = (0, 0, 0);
    for (op, s) in &per_op {
        println!(
            "| {op} | {} | {} | {} | {} | {} |",
            s.passed.len(),
            s.failed.len(),
            s.unsupported.len(),
            s.frozen.len(),
            s.clamped.len()
        );
        tp += s.passed.len();
        tf += s.failed.len();
        tu += s.unsupported.len();
    }
    println!("| **total** | {tp} | {tf} | {tu} | | |");
    for (op, s) in &per_op {
        for (t, why) in &s.unsupported {
            println!("unsupported {t} ({op}): {why}");
        }
    }
    for e in &excepted {
        println!("failed (exception) {e}");
    }
    for s in &stale {
        println!("warning: {s} is listed in EXCEPTIONS but passes; remove it");
    }
    for e in &unexpected {
        println!("FAILED {e}");
    }

    let ops_json: serde_json::Map<String, serde_json::Value> = per_op
        .iter()
        .map(|(op, s)| {
            let pairs = |v: &[(String, String)]| -> serde_json::Value {
                v.iter()
                    .map(|(t, why)| json!({ "test": t, "reason": why }))
                    .collect()
            };
            (
                op.clone(),
                json!({
                    "passed": s.passed,
                    "failed": pairs(&s.failed),
                    "unsupported": pairs(&s.unsupported),
                    "inputs_frozen": s.frozen,
                    "opset_rewritten": s.clamped,
                }),
            )
        })
        .collect();
    let report = json!({
        "source": root.display().to_string(),
        "onnx_version": fs::read_to_string(root.join(".onnx-version")).ok().map(|s| s.trim().to_string()),
        "rtol": RTOL,
        "atol": ATOL,
        "tests": dirs.len(),
        "out_of_scope": out_of_scope,
        "totals": { "passed": tp, "failed": tf, "unsupported": tu },
        "exceptions": EXCEPTIONS.iter().map(|(t, r)| json!({ "test": t, "reason": r })).collect::<Vec<_>>(),
        "stale_exceptions": stale,
        "ops": ops_json,
    });
    let path = report_path();
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    match fs::write(
        &path,
        serde_json::to_string_pretty(&report).expect("serialize"),
    ) {
        Ok(()) => println!("report written to {}", path.display()),
        Err(e) => println!("warning: cannot write {}: {e}", path.display()),
    }

    assert!(
        unexpected.is_empty(),
        "{} ONNX node tests of supported ops failed:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

#[test]
fn compare_applies_the_tolerances() {
    let want = Tensor::from_shape_vec(ndarray::IxDyn(&[3]), vec![1000.0, 0.0, f32::NAN]).unwrap();
    let near = Tensor::from_shape_vec(ndarray::IxDyn(&[3]), vec![1000.9, 9e-6, f32::NAN]).unwrap();
    assert!(compare("y", &near, &want).is_ok());
    let far = Tensor::from_shape_vec(ndarray::IxDyn(&[3]), vec![1001.1, 0.0, f32::NAN]).unwrap();
    assert!(
        compare("y", &far, &want)
            .unwrap_err()
            .contains("1/3 values differ")
    );
    let tiny = Tensor::from_shape_vec(ndarray::IxDyn(&[3]), vec![1000.0, 2e-5, f32::NAN]).unwrap();
    assert!(compare("y", &tiny, &want).is_err());
    let nan = Tensor::from_shape_vec(ndarray::IxDyn(&[3]), vec![1000.0, 0.0, 1.0]).unwrap();
    assert!(compare("y", &nan, &want).is_err());
    let shape = Tensor::from_shape_vec(ndarray::IxDyn(&[1, 3]), vec![1000.0, 0.0, 1.0]).unwrap();
    assert!(compare("y", &shape, &want).unwrap_err().contains("shape"));
}

#[test]
fn decode_reads_raw_and_typed_floats() {
    let raw = proto::TensorProto {
        dims: vec![2],
        data_type: Some(FLOAT),
        raw_data: Some(
            [1.5f32, -2.0]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        ..Default::default()
    };
    assert_eq!(decode_f32(&raw).unwrap().as_slice().unwrap(), &[1.5, -2.0]);
    let typed = proto::TensorProto {
        dims: vec![1, 2],
        data_type: Some(DOUBLE),
        double_data: vec![0.25, 4.0],
        ..Default::default()
    };
    assert_eq!(decode_f32(&typed).unwrap().shape(), &[1, 2]);
    let int = proto::TensorProto {
        dims: vec![1],
        data_type: Some(INT64),
        int64_data: vec![3],
        ..Default::default()
    };
    assert!(decode_f32(&int).is_err());
}
