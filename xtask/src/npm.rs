//! `cargo xtask npm`: builds the npm package of the JS API (feature `js` of `lithe`) into
//! `pkg/`; `--check` also runs `tests/js/node.mjs` against it in Node and the example page
//! (`www/example/`) in headless Chromium; `--serve` serves the example page.
//!
//! Steps: `cargo rustc -p lithe --lib --crate-type cdylib --features js,gpu` for wasm32 in release
//! (simd128 from .cargo/config.toml), `wasm-bindgen --target web` (ES module + TypeScript
//! types; the same files load in browsers and in Node through `initSync`), `wasm-opt -O3`
//! from the project's binaryen, then `package.json`, `README.md` and the license files.

use crate::util::{Ctx, run};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Where the package is written.
pub const PKG: &str = "pkg";

/// Builds the package; returns its folder.
pub fn build(ctx: &Ctx) -> Result<PathBuf> {
    run(&mut ctx.cargo(&[
        "rustc",
        "-p",
        "lithe",
        "--lib",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
        "--features",
        "js,gpu",
        "--crate-type",
        "cdylib",
    ]))?;
    let wasm = ctx.at("target/wasm32-unknown-unknown/release/lithe.wasm");
    let pkg = ctx.at(PKG);
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("clearing {}", pkg.display()))?;
    }
    run(ctx
        .cmd("wasm-bindgen")
        .args(["--target", "web", "--out-name", "lithe", "--out-dir"])
        .arg(&pkg)
        .arg(&wasm))?;
    let bg = pkg.join("lithe_bg.wasm");
    let opt = ctx.at(".tools/node_modules/.bin/wasm-opt");
    if opt.exists() {
        run(ctx
            .cmd(&opt)
            .args([
                "-O3",
                "--enable-simd",
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                "--enable-reference-types",
                "--enable-multivalue",
            ])
            .arg(&bg)
            .arg("-o")
            .arg(&bg))?;
    } else {
        println!("npm: wasm-opt not installed (cargo xtask setup); the .wasm is not optimised");
    }
    let version = env!("CARGO_PKG_VERSION");
    let manifest = serde_json::json!({
        "name": "lithe",
        "version": version,
        "description": "Compress neural networks in the browser: prune, quantize, share, distill, run. ONNX in, smaller ONNX or .lithe out.",
        "license": "MIT OR Apache-2.0",
        "type": "module",
        "main": "lithe.js",
        "module": "lithe.js",
        "types": "lithe.d.ts",
        "files": ["lithe.js", "lithe.d.ts", "lithe_bg.wasm", "lithe_bg.wasm.d.ts", "README.md"],
        "sideEffects": ["./snippets/*"],
        "keywords": ["onnx", "wasm", "neural-network", "compression", "pruning", "quantization"]
    });
    std::fs::write(
        pkg.join("package.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    std::fs::copy(ctx.at("docs/JS_API.md"), pkg.join("README.md"))
        .context("copying docs/JS_API.md as the package README")?;
    // wasm-bindgen writes a .gitignore that hides the package from `npm pack`.
    let _ = std::fs::remove_file(pkg.join(".gitignore"));
    let size = std::fs::metadata(&bg)?.len();
    println!(
        "npm: package in {} (lithe_bg.wasm {size} bytes)",
        pkg.display()
    );
    Ok(pkg)
}

/// Serves the repository root so `www/example/` can load `pkg/`, until interrupted.
pub fn serve(ctx: &Ctx) -> Result<()> {
    let url = crate::e2e::serve_example(ctx)?;
    println!("npm: the plain-JS example is at {url} (Ctrl-C stops)");
    loop {
        std::thread::park();
    }
}

/// Runs the Node script that imports the built package, loads a zoo model, runs, evaluates,
/// compresses and exports it, and checks the errors.
pub fn check(ctx: &Ctx) -> Result<()> {
    run(ctx.cmd("node").arg(ctx.at("tests/js/node.mjs")))?;
    crate::e2e::check_example(ctx)
}
