//! `cargo xtask setup`: check each tool, install only what is missing, one line per tool.

use crate::data;
use crate::util::{Ctx, fmt_dur, is_root, other_processes_with, probe, run, timed};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Must equal the `wasm-bindgen` version in Cargo.lock (pinned `=0.2.130` in the workspace).
pub const WASM_BINDGEN_VERSION: &str = "0.2.130";
/// 0.22.x needs a newer rustc than the pinned 1.95.
pub const TRUNK_VERSION: &str = "0.21.14";
/// wasm-opt from npm (Debian's binaryen 108 breaks wasm-bindgen output).
pub const BINARYEN_VERSION: &str = "132.0.0";
/// The Python packages the ONNX cross-checks use.
pub const PIP_PACKAGES: &[&str] = &["onnx==1.17.0", "onnxruntime", "numpy"];
/// Debian packages for the browser and native WebGPU tests.
pub const APT_PACKAGES: &[&str] = &["chromium", "chromium-driver", "mesa-vulkan-drivers"];
/// The chromedriver the tests start.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser it drives.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Was a step already satisfied, or did we install it?
enum Outcome {
    Present(String),
    Installed(String),
}

/// Installs what is missing. `full` adds what only the tests need.
pub fn setup(ctx: &Ctx, full: bool) -> Result<()> {
    println!(
        "xtask setup: checking tools{}",
        if full {
            " (including test-only tools)"
        } else {
            ""
        }
    );
    step("rust target wasm32-unknown-unknown", || wasm_target(ctx))?;
    step(&format!("wasm-bindgen-cli {WASM_BINDGEN_VERSION}"), || {
        wasm_bindgen(ctx)
    })?;
    step(&format!("trunk {TRUNK_VERSION}"), || trunk(ctx))?;
    step(
        &format!("binaryen (wasm-opt) {BINARYEN_VERSION} in .tools"),
        || binaryen(ctx),
    )?;
    step("MNIST data", || mnist(ctx))?;
    if full {
        step("chromium, chromedriver, lavapipe (apt)", || apt(ctx))?;
        step("python venv .venv (onnx, onnxruntime, numpy)", || venv(ctx))?;
        step("ONNX backend node tests (onnx 1.22.0 wheel)", || {
            onnx_node_tests(ctx)
        })?;
    }
    check_lockfile(ctx);
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<Outcome>) -> Result<()> {
    let (r, d) = timed(f);
    match r {
        Ok(Outcome::Present(what)) => {
            println!("setup: {name:<48} present    {what} ({})", fmt_dur(d))
        }
        Ok(Outcome::Installed(what)) => {
            println!("setup: {name:<48} installed  {what} ({})", fmt_dur(d))
        }
        Err(e) => {
            println!("setup: {name:<48} FAILED     ({})", fmt_dur(d));
            return Err(e.context(format!("setup step `{name}`")));
        }
    }
    Ok(())
}

fn wasm_target(ctx: &Ctx) -> Result<Outcome> {
    let installed = |ctx: &Ctx| {
        probe(ctx.cmd("rustup").args(["target", "list", "--installed"]))
            .is_some_and(|s| s.lines().any(|l| l.trim() == "wasm32-unknown-unknown"))
    };
    if installed(ctx) {
        return Ok(Outcome::Present(String::new()));
    }
    run(ctx
        .cmd("rustup")
        .args(["target", "add", "wasm32-unknown-unknown"]))?;
    Ok(Outcome::Installed(String::new()))
}

/// `tool --version` contains `version` as a whole word.
fn has_version(ctx: &Ctx, tool: &str, version: &str) -> Option<String> {
    let out = probe(ctx.cmd(tool).arg("--version"))?;
    let line = out.lines().next().unwrap_or_default().trim().to_string();
    line.split_whitespace()
        .any(|w| w.trim_start_matches('v') == version)
        .then_some(line)
}

/// Waits while another `cargo install <krate>` runs (e.g. started by hand), so we never
/// compile the same tool twice at once on a small machine.
fn wait_for_other_install(krate: &str) {
    let mut said = false;
    loop {
        let others = other_processes_with(&["cargo", "install", krate]);
        if others.is_empty() {
            return;
        }
        if !said {
            println!(
                "setup: waiting for another `cargo install {krate}` (pid {}) to finish",
                others[0].0
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(10));
    }
}

fn cargo_tool(ctx: &Ctx, tool: &str, krate: &str, version: &str, locked: bool) -> Result<Outcome> {
    if let Some(v) = has_version(ctx, tool, version) {
        return Ok(Outcome::Present(v));
    }
    wait_for_other_install(krate);
    if let Some(v) = has_version(ctx, tool, version) {
        return Ok(Outcome::Present(v));
    }
    let mut c = ctx.cargo(&["install", krate, "--version", version]);
    if locked {
        c.arg("--locked");
    }
    // These are build tools: a quick optimised build is plenty. trunk's own release profile
    // asks for fat LTO with one codegen unit, which alone costs minutes on a 2-core machine;
    // config profiles (these variables) override the installed package's profile.
    c.env("CARGO_PROFILE_RELEASE_LTO", "off")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1");
    run(&mut c)?;
    has_version(ctx, tool, version)
        .map(Outcome::Installed)
        .with_context(|| {
            format!("`{tool} --version` still does not report {version} after installing")
        })
}

fn wasm_bindgen(ctx: &Ctx) -> Result<Outcome> {
    // Without --locked: the registry mirror lacks one locked dependency of 0.2.130.
    let r = cargo_tool(
        ctx,
        "wasm-bindgen",
        "wasm-bindgen-cli",
        WASM_BINDGEN_VERSION,
        false,
    )?;
    if probe(ctx.cmd("wasm-bindgen-test-runner").arg("--version")).is_none() {
        bail!(
            "wasm-bindgen-test-runner is missing although wasm-bindgen is present; reinstall wasm-bindgen-cli"
        );
    }
    Ok(r)
}

fn trunk(ctx: &Ctx) -> Result<Outcome> {
    cargo_tool(ctx, "trunk", "trunk", TRUNK_VERSION, true)
}

fn binaryen(ctx: &Ctx) -> Result<Outcome> {
    let wasm_opt = ctx.at(".tools/node_modules/.bin/wasm-opt");
    let major = BINARYEN_VERSION
        .split('.')
        .next()
        .unwrap_or(BINARYEN_VERSION);
    let check = || {
        probe(ctx.cmd(&wasm_opt).arg("--version"))
            .filter(|s| s.contains(&format!("version {major}")))
            .map(|s| s.lines().next().unwrap_or_default().trim().to_string())
    };
    if let Some(v) = check() {
        return Ok(Outcome::Present(v));
    }
    std::fs::create_dir_all(ctx.at(".tools"))?;
    run(ctx
        .cmd("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix", ".tools"])
        .arg(format!("binaryen@{BINARYEN_VERSION}")))?;
    check()
        .map(Outcome::Installed)
        .context("wasm-opt from .tools does not report the expected version")
}

fn mnist(ctx: &Ctx) -> Result<Outcome> {
    Ok(if data::ensure(ctx)? {
        Outcome::Installed("fetched".into())
    } else {
        Outcome::Present(String::new())
    })
}

/// The lavapipe Vulkan ICD that mesa-vulkan-drivers installs.
pub fn lavapipe_present() -> bool {
    std::fs::read_dir("/usr/share/vulkan/icd.d")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
        })
        .unwrap_or(false)
}

fn apt(ctx: &Ctx) -> Result<Outcome> {
    let present =
        || Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() && lavapipe_present();
    if present() {
        let v = probe(Command::new(CHROMEDRIVER).arg("--version")).unwrap_or_default();
        return Ok(Outcome::Present(
            v.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
        ));
    }
    apt_install(ctx, APT_PACKAGES)?;
    if !present() {
        bail!(
            "{CHROMIUM}, {CHROMEDRIVER} or the lavapipe ICD is still missing after apt-get install"
        );
    }
    Ok(Outcome::Installed(APT_PACKAGES.join(" ")))
}

fn apt_install(ctx: &Ctx, packages: &[&str]) -> Result<()> {
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            ctx.cmd("sudo")
        } else {
            ctx.cmd("apt-get")
        };
        if sudo {
            c.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    run(&mut apt(&["update"]))?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(packages);
    run(&mut apt(&args))
}

fn venv(ctx: &Ctx) -> Result<Outcome> {
    let py = ctx.at(".venv/bin/python");
    let check = || {
        probe(ctx.cmd(&py).args([
            "-c",
            "import onnx, onnxruntime, numpy; assert onnx.__version__ == '1.17.0', onnx.__version__; \
             print('onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)",
        ]))
        .map(|s| s.trim().to_string())
    };
    if let Some(v) = check() {
        return Ok(Outcome::Present(v));
    }
    if !py.exists() {
        let mk = || run(ctx.cmd("python3").args(["-m", "venv", ".venv"]));
        if mk().is_err() {
            // Debian's python3 needs python3-venv for ensurepip.
            let _ = std::fs::remove_dir_all(ctx.at(".venv"));
            apt_install(ctx, &["python3-venv"])?;
            mk()?;
        }
    }
    let mut pip = ctx.cmd(&py);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(PIP_PACKAGES);
    run(&mut pip)?;
    check()
        .map(Outcome::Installed)
        .context("the venv still cannot import onnx 1.17.0, onnxruntime and numpy")
}

/// The ONNX backend node tests for `engine/tests/onnx_conformance.rs`, unpacked from the onnx
/// 1.22.0 wheel into `.data/onnx-node-tests` by `scripts/fetch_onnx_node_tests.sh`.
fn onnx_node_tests(ctx: &Ctx) -> Result<Outcome> {
    let stamp = ctx.at(".data/onnx-node-tests/.onnx-version");
    if std::fs::read_to_string(&stamp).is_ok_and(|v| v.trim() == "1.22.0") {
        return Ok(Outcome::Present("onnx 1.22.0 node tests".into()));
    }
    let mut c = ctx.cmd("bash");
    c.arg("scripts/fetch_onnx_node_tests.sh")
        .env("PYTHON", ctx.at(".venv/bin/python"));
    run(&mut c)?;
    Ok(Outcome::Installed("onnx 1.22.0 node tests".into()))
}

/// Warns when Cargo.lock's wasm-bindgen drifted from the CLI version pinned here.
fn check_lockfile(ctx: &Ctx) {
    let Ok(lock) = std::fs::read_to_string(ctx.at("Cargo.lock")) else {
        return;
    };
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines
                .next()
                .and_then(|v| v.trim().strip_prefix("version = "))
            {
                let v = v.trim_matches('"');
                if v != WASM_BINDGEN_VERSION {
                    println!(
                        "setup: WARNING Cargo.lock has wasm-bindgen {v} but the CLI is pinned to \
                         {WASM_BINDGEN_VERSION} (xtask/src/setup.rs); they must match"
                    );
                }
            }
            return;
        }
    }
}
