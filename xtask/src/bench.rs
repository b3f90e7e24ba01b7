//! `cargo xtask bench-web` and `cargo xtask bench-ort`: figures in headless Chromium, printed as
//! JSON and written to `target/bench/web.json` / `target/bench/ort.json`. No time is asserted.
//!
//! - `bench-web` builds the npm package (both wasm builds), serves the repository root, opens
//!   `www/bench/index.html?build=simd128` and then `?build=relaxed-simd`, and calls the engine's
//!   own timing code there (`engine/src/bench.rs`: `benchKernels`, `benchPeak`, `benchModel`):
//!   per-kernel G op/s, the peak probe, GEMM as a share of the probe's peak, and the zoo models
//!   (plus LeNet-300-100 pruned 92 %) at batch 1 and 64. If `target/bench/native.json` exists
//!   (`cargo test --release -p lithe --test bench_native -- --ignored --nocapture`), wasm/native
//!   ratios of the same kernels are added.
//! - `bench-ort` installs onnxruntime-web 1.30.0 into `.tools` (only here, not in setup), opens
//!   `www/bench/ort.html`, loads the same ONNX bytes into Lithe (the build `WebAssembly.validate`
//!   picks) and into onnxruntime-web (wasm EP, one thread, no proxy worker), feeds both the same
//!   input, times batch 1 and 64 (warm-up, then the median of timed runs) and checks that the
//!   outputs agree (max abs diff ≤ 1e-4).

use crate::browser::{Driver, Session, StaticServer};
use crate::util::{Ctx, probe, run};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::Path;

/// The zoo models timed in the browser (`www/models/NAME.onnx`).
const ZOO: [&str; 4] = ["lenet-300-100", "lenet-5", "mobilenet", "tiny-mlp"];

/// The onnxruntime-web version compared against.
const ORT_VERSION: &str = "1.30.0";

/// Agreement bound between Lithe's and onnxruntime-web's outputs on f32 models.
const AGREE_ABS: f64 = 1e-4;

/// The machine: CPU model and cores, Chromium and Node versions.
fn machine(ctx: &Ctx) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let flags = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    json!({
        "cpu": cpu,
        "cores": cores,
        "avx2": has("avx2"), "fma": has("fma"), "avx_vnni": has("avx_vnni"),
        "avx512_vnni": has("avx512_vnni"),
        "chromium": probe(ctx.cmd(crate::setup::CHROMIUM).arg("--version")),
        "node": probe(ctx.cmd("node").arg("--version")),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

/// Runs `script` (an async function body that gets `done`) in the page and returns its JSON.
fn call_page(s: &Session, script: &str, args: Value) -> Result<Value> {
    let body = format!(
        "const done = arguments[arguments.length - 1]; const args = arguments[0];\n\
         (async () => {{ {script} }})().then((v) => done(JSON.stringify({{ ok: v }})),\n\
         (e) => done(JSON.stringify({{ error: String(e && e.stack || e) }})));"
    );
    let v = s.post("execute/async", json!({ "script": body, "args": [args] }))?;
    let text = v.as_str().context("the page returned no JSON string")?;
    let v: Value = serde_json::from_str(text)?;
    if let Some(e) = v.get("error") {
        bail!(
            "in the page: {}\n--- browser console ---\n{}",
            e.as_str().unwrap_or_default(),
            s.browser_log()
        );
    }
    Ok(v["ok"].clone())
}

/// Opens `url` and waits until the page sets `window.benchReady` (or reports an error).
fn open(s: &Session, url: &str) -> Result<()> {
    s.post("url", json!({ "url": url }))?;
    s.post(
        "timeouts",
        json!({ "script": 600_000, "pageLoad": 120_000 }),
    )?;
    let t = std::time::Instant::now();
    loop {
        let v = s.post(
            "execute/sync",
            json!({ "script": "return window.benchReady ? 'ready' : (window.benchError || '');", "args": [] }),
        )?;
        match v.as_str() {
            Some("ready") => return Ok(()),
            Some(e) if !e.is_empty() => bail!("{url}: {e}\n{}", s.browser_log()),
            _ => {}
        }
        if t.elapsed().as_secs() > 120 {
            bail!("{url} did not get ready\n{}", s.browser_log());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn write_json(ctx: &Ctx, name: &str, v: &Value) -> Result<()> {
    let dir = ctx.at("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(v)? + "\n")?;
    println!("{}", serde_json::to_string(v)?);
    eprintln!("bench: written to {}", path.display());
    Ok(())
}

/// `cargo xtask bench-web [--no-build] [--quick]`.
pub fn bench_web(ctx: &Ctx, args: &[String]) -> Result<()> {
    let no_build = args.iter().any(|a| a == "--no-build");
    let quick = args.iter().any(|a| a == "--quick");
    if !no_build {
        crate::npm::build(ctx)?;
    }
    let server = StaticServer::start(ctx.root.clone(), "/".into())?;
    let driver = Driver::start()?;
    let s = driver.new_session(ctx)?;
    let r = (|| -> Result<Value> {
        let mut builds = serde_json::Map::new();
        for build in ["simd128", "relaxed-simd"] {
            let url = format!(
                "http://127.0.0.1:{}/www/bench/index.html?build={build}",
                server.port
            );
            open(&s, &url)?;
            eprintln!("bench: {build}: kernels");
            let sizes: Vec<u32> = if quick {
                vec![64, 256]
            } else {
                vec![64, 128, 256, 512]
            };
            let info = call_page(&s, "return window.bench.info;", json!(null))?;
            eprintln!("bench: {build}: selftest");
            let selftest = call_page(&s, "return window.bench.selftest();", json!(null))?;
            eprintln!("bench: {build}: selftest {selftest}");
            let kernels = call_page(&s, "return window.bench.kernels(args);", json!(sizes))?;
            eprintln!("bench: {build}: peak");
            let peak = call_page(&s, "return window.bench.peak();", json!(null))?;
            let mut models = Vec::new();
            for name in ZOO {
                let mut variants = vec![(name.to_string(), None)];
                if name == "lenet-300-100" {
                    variants.push(("lenet-300-100-pruned-92".to_string(), Some(0.92)));
                }
                for (label, prune) in variants {
                    for batch in [1, 64] {
                        eprintln!("bench: {build}: {label} batch {batch}");
                        let r = call_page(
                            &s,
                            "return window.bench.model(args.url, args.batch, args.prune);",
                            json!({ "url": format!("/www/models/{name}.onnx"), "batch": batch, "prune": prune }),
                        )?;
                        models.push(json!({ "model": label, "result": r }));
                    }
                }
            }
            let figures = kernels["figures"].clone();
            let of_peak = share_of_peak(&figures, &peak);
            builds.insert(
                build.into(),
                json!({ "info": info, "selftest": selftest, "peak": peak, "gemm_share_of_peak": of_peak,
                        "kernels": figures, "models": models }),
            );
        }
        let native: Option<Value> = std::fs::read_to_string(ctx.at("target/bench/native.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let ratios = native
            .as_ref()
            .map(|n| wasm_vs_native(&builds, n))
            .unwrap_or(Value::Null);
        Ok(json!({
            "machine": machine(ctx),
            "command": "cargo xtask bench-web",
            "builds": builds,
            "wasm_vs_native": ratios,
        }))
    })();
    let _ = s.delete();
    write_json(ctx, "web.json", &r?)
}

/// GEMM throughput as a share of the probe: the simd128 kernel against `mul_add`, the
/// relaxed one (`f32-gemm` as selected in that build) against `madd` where measured.
fn share_of_peak(figures: &Value, peak: &Value) -> Value {
    let mut out = Vec::new();
    let mul_add = peak["peak_gflops"].as_f64().unwrap_or(0.0);
    let madd = peak["madd_gflops"].as_f64();
    for f in figures.as_array().into_iter().flatten() {
        if f["family"] != "f32-gemm" || f["m"] != f["k"] || f["k"] != f["n"] {
            continue;
        }
        let kernel = f["kernel"].as_str().unwrap_or_default();
        let peak = match (kernel, madd) {
            ("relaxed-simd", Some(p)) => p,
            ("simd128", _) => mul_add,
            _ => continue,
        };
        let g = f["gops"].as_f64().unwrap_or(0.0);
        out.push(
            json!({ "kernel": kernel, "n": f["n"], "gflops": g, "peak": peak,
                         "share": if peak > 0.0 { g / peak } else { 0.0 } }),
        );
    }
    Value::Array(out)
}

/// Time of the same kernel and shape in the browser over the native time.
fn wasm_vs_native(builds: &serde_json::Map<String, Value>, native: &Value) -> Value {
    let key = |f: &Value| {
        format!(
            "{}/{}/{}x{}x{}",
            f["family"].as_str().unwrap_or_default(),
            f["kernel"].as_str().unwrap_or_default(),
            f["m"],
            f["k"],
            f["n"]
        )
    };
    let nat: std::collections::BTreeMap<String, f64> = native["kernels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (key(f), f["ms"].as_f64().unwrap_or(0.0)))
        .collect();
    let mut out = Vec::new();
    for (build, b) in builds {
        for f in b["kernels"].as_array().into_iter().flatten() {
            if let Some(&n) = nat.get(&key(f))
                && n > 0.0
            {
                let w = f["ms"].as_f64().unwrap_or(0.0);
                out.push(json!({ "build": build, "kernel": key(f), "wasm_ms": w, "native_ms": n, "ratio": w / n }));
            }
        }
    }
    Value::Array(out)
}

/// Installs onnxruntime-web into `.tools` when missing (only this command needs it).
fn ensure_ort(ctx: &Ctx) -> Result<()> {
    let pkg = ctx.at(".tools/node_modules/onnxruntime-web/package.json");
    let have = std::fs::read_to_string(&pkg)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(String::from));
    if have.as_deref() == Some(ORT_VERSION) {
        return Ok(());
    }
    run(ctx.cmd("npm").args([
        "install",
        "--prefix",
        ".tools",
        "--no-audit",
        "--no-fund",
        &format!("onnxruntime-web@{ORT_VERSION}"),
    ]))
}

/// `cargo xtask bench-ort [--no-build]`.
pub fn bench_ort(ctx: &Ctx, args: &[String]) -> Result<()> {
    let no_build = args.iter().any(|a| a == "--no-build");
    ensure_ort(ctx)?;
    if !no_build {
        crate::npm::build(ctx)?;
    }
    // The shared real-world models are outside the served root: copy them under target/.
    let shared = ctx.at("../shared/models");
    let copy = ctx.at("target/bench/models");
    std::fs::create_dir_all(&copy)?;
    let mut models: Vec<(String, String)> = ZOO
        .iter()
        .map(|n| (n.to_string(), format!("/www/models/{n}.onnx")))
        .collect();
    models.push(("lenet-300-100-pruned-92".into(), "prune:0.92".into()));
    if shared.is_dir() {
        for f in ["onnx-zoo-mnist-8.onnx", "burn-mnist-cnn.onnx"] {
            if copy_if(&shared.join(f), &copy.join(f))? {
                models.push((
                    f.trim_end_matches(".onnx").into(),
                    format!("/target/bench/models/{f}"),
                ));
            }
        }
    } else {
        eprintln!("bench: ../shared/models is absent: only the zoo models");
    }
    let server = StaticServer::start(ctx.root.clone(), "/".into())?;
    let driver = Driver::start()?;
    let s = driver.new_session(ctx)?;
    let r = (|| -> Result<Value> {
        let mut infos = serde_json::Map::new();
        let mut rows = Vec::new();
        for build in ["simd128", "relaxed-simd"] {
            open(
                &s,
                &format!(
                    "http://127.0.0.1:{}/www/bench/ort.html?build={build}",
                    server.port
                ),
            )?;
            infos.insert(
                build.into(),
                call_page(&s, "return window.bench.info;", json!(null))?,
            );
            for (name, url) in &models {
                for batch in [1, 64] {
                    eprintln!("bench-ort: {build}: {name} batch {batch}");
                    let (url, prune) = match url.strip_prefix("prune:") {
                        Some(r) => (
                            "/www/models/lenet-300-100.onnx".to_string(),
                            r.parse::<f64>().ok(),
                        ),
                        None => (url.clone(), None),
                    };
                    let r = call_page(
                        &s,
                        "return window.bench.compare(args.url, args.batch, args.prune);",
                        json!({ "url": url, "batch": batch, "prune": prune }),
                    );
                    let row = match r {
                        Ok(mut v) => {
                            if let Some(d) = v["max_abs_diff"].as_f64() {
                                v["agree"] = json!(d <= AGREE_ABS);
                            }
                            v
                        }
                        Err(e) => json!({ "error": format!("{e:#}") }),
                    };
                    rows.push(
                        json!({ "build": build, "model": name, "batch": batch, "result": row }),
                    );
                }
            }
        }
        Ok(json!({
            "machine": machine(ctx),
            "command": "cargo xtask bench-ort",
            "onnxruntime_web": ORT_VERSION,
            "agree_abs": AGREE_ABS,
            "lithe": infos,
            "models": rows,
        }))
    })();
    let _ = s.delete();
    let v = r?;
    write_json(ctx, "ort.json", &v)?;
    let disagree: Vec<String> = v["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["result"]["agree"] == json!(false))
        .map(|m| format!("{} {} batch {}", m["build"], m["model"], m["batch"]))
        .collect();
    if !disagree.is_empty() {
        bail!(
            "Lithe and onnxruntime-web disagree on: {}",
            disagree.join(", ")
        );
    }
    Ok(())
}

fn copy_if(from: &Path, to: &Path) -> Result<bool> {
    if !from.is_file() {
        return Ok(false);
    }
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(true)
}
