//! `cargo xtask npm`: builds the npm package of the JS API (feature `js` of `lithe`) into
//! `pkg/`; `--check` also runs `tests/js/node.mjs` against it in Node and the example page
//! (`www/example/`) in headless Chromium; `--serve` serves the example page.
//!
//! Steps: `cargo rustc -p lithe --lib --crate-type cdylib --features js,gpu` for wasm32 in release,
//! twice: simd128 (from .cargo/config.toml) into `target/`, and simd128 + relaxed SIMD
//! (`CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS`) into `target/relaxed/`; `wasm-bindgen
//! --target web` on both (each keeps its glue: `lithe_core.js`, `lithe_relaxed_core.js`; their
//! `.d.ts` must agree), `wasm-opt -O3` from the
//! project's binaryen; then the entry `lithe.js`, which picks `lithe_relaxed_bg.wasm` or
//! `lithe_bg.wasm` at load time with `WebAssembly.validate` on a tiny relaxed-SIMD module (and
//! a run of its i8 dot: Node 20's flagged implementation gets it wrong), and
//! `package.json`, `README.md` and the license files.

use crate::util::{Ctx, run};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Where the package is written.
pub const PKG: &str = "pkg";

/// Rust flags of the second (relaxed-SIMD) wasm build.
const RELAXED_FLAGS: &str = "-C target-feature=+simd128,+relaxed-simd";

/// Its own target folder, so the two builds never overwrite each other.
const RELAXED_TARGET_DIR: &str = "target/relaxed";

/// A tiny module (`(func (export "p") (result i32))`) that returns lane 0 of
/// `i32x4.relaxed_dot_i8x16_i7x16_add_s([-128, 1, 0…], [2, 3, 0…], 0)`, i.e. −253. The entry
/// loads the relaxed build only where `WebAssembly.validate` accepts it **and** it returns −253:
/// Node 20's V8 with `--experimental-wasm-relaxed-simd` validates it but returns −506 (it doubles
/// the i32 dot-add on this AVX-VNNI CPU), so there the simd128 build is used.
const RELAXED_PROBE: [u8; 92] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, 0x03,
    0x02, 0x01, 0x00, 0x07, 0x05, 0x01, 0x01, 0x70, 0x00, 0x00, 0x0a, 0x40, 0x01, 0x3e, 0x00, 0xfd,
    0x0c, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xfd, 0x0c, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0xfd, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x93, 0x02, 0xfd, 0x1b, 0x00, 0x0b,
];

/// The names the wasm-bindgen glue exports (classes, functions, constants, enums), read from its
/// `.d.ts`, except `default` and `initSync`, which the entry defines.
fn glue_exports(dts: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in dts.lines() {
        let rest = line
            .strip_prefix("export class ")
            .or_else(|| line.strip_prefix("export function "))
            .or_else(|| line.strip_prefix("export const "))
            .or_else(|| line.strip_prefix("export enum "));
        if let Some(rest) = rest {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                .collect();
            if !name.is_empty() && name != "initSync" && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The package's entry: picks the wasm build at load time and re-exports the matching
/// wasm-bindgen glue (each build has its own: their closure tables can be numbered apart).
fn entry_js(exports: &[String]) -> String {
    let probe = RELAXED_PROBE.map(|b| b.to_string()).join(",");
    let names = exports
        .iter()
        .map(|n| format!("export const {n} = core.{n};"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        r#"// The entry of the Lithe package: the wasm build picked at load time, with its own
// wasm-bindgen glue. lithe_relaxed_bg.wasm (glue lithe_relaxed_core.js) uses relaxed SIMD
// (f32x4.relaxed_madd, the i8 dot); it is loaded only where WebAssembly.validate accepts a tiny
// relaxed-SIMD module and that module's i8 dot gives the specified result, else lithe_bg.wasm
// (glue lithe_core.js, simd128).
import * as simdCore from "./lithe_core.js";
import * as relaxedCore from "./lithe_relaxed_core.js";

const RELAXED_PROBE = new Uint8Array([{probe}]);

/** Whether this engine runs relaxed SIMD: the probe validates and its i8 dot gives -253. */
export const relaxedSimd = (() => {{
  try {{
    if (!WebAssembly.validate(RELAXED_PROBE)) return false;
    return new WebAssembly.Instance(new WebAssembly.Module(RELAXED_PROBE)).exports.p() === -253;
  }} catch {{ return false; }}
}})();

/** Which wasm `init()` loads: "relaxed-simd" or "simd128". */
export const wasmBuild = relaxedSimd ? "relaxed-simd" : "simd128";

/** The file name of that wasm (beside this file); read it for `initSync` in Node. */
export const wasmFile = relaxedSimd ? "lithe_relaxed_bg.wasm" : "lithe_bg.wasm";

const core = relaxedSimd ? relaxedCore : simdCore;
{names}

let loaded = null;

/** Loads the wasm: the build chosen above unless `arg` names a module or path. */
export default async function init(arg) {{
  if (arg === undefined) {{
    arg = {{ module_or_path: new URL(wasmFile, import.meta.url) }};
    loaded = wasmBuild;
  }}
  return core.default(arg);
}}

/** Synchronous load from the bytes or module of `wasmFile`. */
export function initSync(arg) {{
  return core.initSync(arg);
}}

/** The build `init()` picked, or null before it ran or when a module was passed in. */
export function loadedBuild() {{ return loaded; }}
"#
    )
}

const ENTRY_DTS: &str = r#"export * from "./lithe_core.js";
/** Whether this engine runs relaxed SIMD (WebAssembly.validate on a tiny relaxed module). */
export const relaxedSimd: boolean;
/** Which wasm `init()` loads: "relaxed-simd" or "simd128". */
export const wasmBuild: "relaxed-simd" | "simd128";
/** The file name of that wasm, beside lithe.js. */
export const wasmFile: string;
export default function init(arg?: any): Promise<any>;
export function initSync(arg: any): any;
export function loadedBuild(): string | null;
"#;

/// Builds the package with the release profile (what ships); returns its folder.
pub fn build(ctx: &Ctx) -> Result<PathBuf> {
    build_with_profile(ctx, "release")
}

/// Builds the package with a cargo `profile` (`release`, or `wasm-test` for the test stage:
/// the same code, compiled with more codegen units and no LTO); returns its folder.
pub fn build_with_profile(ctx: &Ctx, profile: &str) -> Result<PathBuf> {
    let args = [
        "rustc",
        "-p",
        "lithe",
        "--lib",
        "--profile",
        profile,
        "--target",
        "wasm32-unknown-unknown",
        "--features",
        "js,gpu",
        "--crate-type",
        "cdylib",
    ];
    run(&mut ctx.cargo(&args))?;
    let mut relaxed = ctx.cargo(&args);
    relaxed.args(["--target-dir", RELAXED_TARGET_DIR]).env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        RELAXED_FLAGS,
    );
    run(&mut relaxed)?;
    let wasm = ctx.at(format!(
        "target/wasm32-unknown-unknown/{profile}/lithe.wasm"
    ));
    let wasm_relaxed = ctx.at(format!(
        "{RELAXED_TARGET_DIR}/wasm32-unknown-unknown/{profile}/lithe.wasm"
    ));
    let pkg = ctx.at(PKG);
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("clearing {}", pkg.display()))?;
    }
    let bindgen = |input: &std::path::Path, out: &std::path::Path| {
        run(ctx
            .cmd("wasm-bindgen")
            .args(["--target", "web", "--out-name", "lithe_core", "--out-dir"])
            .arg(out)
            .arg(input))
    };
    bindgen(&wasm, &pkg)?;
    let side = ctx.at(format!("{RELAXED_TARGET_DIR}/bindgen"));
    if side.exists() {
        std::fs::remove_dir_all(&side)?;
    }
    bindgen(&wasm_relaxed, &side)?;
    // Each build keeps its own glue (the same exports, but closure tables may be numbered
    // differently); the entry re-exports the one of the build it loads.
    let dts = std::fs::read_to_string(pkg.join("lithe_core.d.ts"))?;
    if std::fs::read_to_string(side.join("lithe_core.d.ts"))? != dts {
        anyhow::bail!(
            "npm: the relaxed-SIMD build exports another API than the simd128 one; compare {} \
             with {}",
            side.join("lithe_core.d.ts").display(),
            pkg.join("lithe_core.d.ts").display()
        );
    }
    std::fs::copy(
        side.join("lithe_core.js"),
        pkg.join("lithe_relaxed_core.js"),
    )?;
    let exports = glue_exports(&dts);
    let bg = pkg.join("lithe_bg.wasm");
    let bg_relaxed = pkg.join("lithe_relaxed_bg.wasm");
    std::fs::rename(pkg.join("lithe_core_bg.wasm"), &bg)?;
    std::fs::rename(
        pkg.join("lithe_core_bg.wasm.d.ts"),
        pkg.join("lithe_bg.wasm.d.ts"),
    )?;
    std::fs::copy(side.join("lithe_core_bg.wasm"), &bg_relaxed)?;
    let opt = ctx.at(".tools/node_modules/.bin/wasm-opt");
    if opt.exists() {
        for (file, relaxed) in [(&bg, false), (&bg_relaxed, true)] {
            let mut c = ctx.cmd(&opt);
            c.args([
                "-O3",
                "--enable-simd",
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                "--enable-reference-types",
                "--enable-multivalue",
            ]);
            if relaxed {
                c.arg("--enable-relaxed-simd");
            }
            run(c.arg(file).arg("-o").arg(file))?;
        }
    } else {
        println!("npm: wasm-opt not installed (cargo xtask setup); the .wasm is not optimised");
    }
    std::fs::write(pkg.join("lithe.js"), entry_js(&exports))?;
    std::fs::write(pkg.join("lithe.d.ts"), ENTRY_DTS)?;
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
        "files": ["lithe.js", "lithe.d.ts", "lithe_core.js", "lithe_relaxed_core.js", "lithe_core.d.ts", "lithe_bg.wasm", "lithe_relaxed_bg.wasm", "lithe_bg.wasm.d.ts", "README.md"],
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
    let size_relaxed = std::fs::metadata(&bg_relaxed)?.len();
    println!(
        "npm: package in {} (lithe_bg.wasm {size} bytes, lithe_relaxed_bg.wasm {size_relaxed} bytes)",
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
