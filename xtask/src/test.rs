//! `cargo xtask test`: full setup, then every check as a named stage. All stages run even
//! when one fails; the exit code is non-zero when any failed.

use crate::util::{Ctx, fmt_dur, run, run_tee, timed};
use crate::{e2e, npm, setup};
use anyhow::{Result, bail};
use std::time::Duration;

/// Stage names, in the order they run.
pub const STAGES: &[(&str, &str)] = &[
    ("fmt", "cargo fmt --all -- --check"),
    (
        "clippy",
        "cargo clippy --workspace --all-targets --keep-going -- -D warnings",
    ),
    (
        "native",
        "native cargo test of every crate, with the WebGPU backend on lavapipe",
    ),
    (
        "wasm-web",
        "lithe-web-tests on wasm32 in Node and headless Chromium",
    ),
    ("wasm-engine", "lithe's unit tests on wasm32 in Node"),
    (
        "js",
        "the npm package (cargo xtask npm) used from Node: tests/js/node.mjs",
    ),
    (
        "e2e",
        "the page built with trunk, checked in headless Chromium",
    ),
];

const NO_ENGINE_WASM_TESTS: &str =
    "lithe's lib has no #[wasm_bindgen_test] tests (its plain #[test]s run natively only)";

enum Outcome {
    Passed(String),
    Skipped(String),
}

/// Runs the chosen stages (all when `only` is empty); returns the process exit code.
pub fn test(ctx: &Ctx, only: &[String], with_setup: bool) -> Result<i32> {
    for s in only {
        if !STAGES.iter().any(|(n, _)| n == s) {
            let names: Vec<&str> = STAGES.iter().map(|(n, _)| *n).collect();
            bail!("unknown stage `{s}`; stages are: {}", names.join(" "));
        }
    }
    let mut summary: Vec<(String, Result<Outcome>, Duration)> = Vec::new();
    if with_setup {
        let (r, d) = timed(|| setup::setup(ctx, true));
        r?;
        println!("xtask: setup done in {}", fmt_dur(d));
    }
    for (name, what) in STAGES {
        if !only.is_empty() && !only.iter().any(|s| s == name) {
            continue;
        }
        println!("\n===== stage {name}: {what}");
        let (r, d) = timed(|| stage(ctx, name));
        match &r {
            Ok(Outcome::Passed(_)) => println!("===== stage {name}: passed ({})", fmt_dur(d)),
            Ok(Outcome::Skipped(why)) => println!("===== stage {name}: skipped: {why}"),
            Err(e) => println!("===== stage {name}: FAILED ({}): {e:#}", fmt_dur(d)),
        }
        summary.push((name.to_string(), r, d));
    }
    println!("\n===== summary");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, r, d) in &summary {
        let (word, note) = match r {
            Ok(Outcome::Passed(note)) => {
                passed += 1;
                ("passed", note.clone())
            }
            Ok(Outcome::Skipped(why)) => {
                skipped += 1;
                ("skipped", why.clone())
            }
            Err(e) => {
                failed += 1;
                ("FAILED", first_line(&format!("{e:#}")))
            }
        };
        println!("{name:<12} {word:<8} {:>12}  {note}", fmt_dur(*d));
    }
    let total: Duration = summary.iter().map(|(_, _, d)| *d).sum();
    println!("total stage time {}", fmt_dur(total));
    if skipped > 0 {
        println!("xtask: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("xtask: {passed} passed, {failed} failed");
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect()
}

fn stage(ctx: &Ctx, name: &str) -> Result<Outcome> {
    let ok = |s: &str| Ok(Outcome::Passed(s.to_string()));
    match name {
        "fmt" => {
            run(&mut ctx.cargo(&["fmt", "--all", "--", "--check"]))?;
            ok("")
        }
        "clippy" => {
            run(&mut ctx.cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                // Report every crate's lints, not just the first failing crate's.
                "--keep-going",
                "--",
                "-D",
                "warnings",
            ]))?;
            ok("")
        }
        "native" => {
            // Every crate natively, including the app's pure-Rust tests and the web-tests crate's
            // check that its committed native fingerprint is current, with `lithe`'s WebGPU
            // backend (feature `gpu`) on, so its tests run on lavapipe in the same build (one
            // compile of `lithe` instead of two); a missing adapter fails the stage wherever the
            // lavapipe ICD is installed.
            let mut c = ctx.cargo(&[
                "test",
                "--no-fail-fast",
                "--workspace",
                "--features",
                "lithe/gpu",
            ]);
            c.env("LITHE_PYTHON", ctx.at(".venv/bin/python"))
                .env("LITHE_MNIST_DIR", ctx.at(".data/mnist"));
            if setup::lavapipe_present() {
                c.env("LITHE_REQUIRE_GPU", "1");
            }
            let (success, out) = run_tee(&mut c)?;
            if !success {
                bail!("native tests failed");
            }
            ok(&count_tests(&out))
        }
        "wasm-web" => {
            let mut c = wasm_cargo(
                ctx,
                &[
                    "test",
                    "--no-fail-fast",
                    "-p",
                    "lithe-web-tests",
                    "--target",
                    "wasm32-unknown-unknown",
                    // Library and integration tests; rustdoc's wasm doctests are not run.
                    "--tests",
                ],
            );
            let (success, out) = run_tee(&mut c)?;
            if !success {
                bail!("wasm tests (Node / headless Chromium) failed");
            }
            // The playground's components, mounted in headless Chromium.
            let mut c = wasm_cargo(
                ctx,
                &[
                    "test",
                    "-p",
                    "lithe-app",
                    "--target",
                    "wasm32-unknown-unknown",
                    "--test",
                    "components",
                ],
            );
            let (success, ui) = run_tee(&mut c)?;
            if !success {
                bail!("the playground's component tests (headless Chromium) failed");
            }
            ok(&format!(
                "{}; components: {}",
                count_tests(&out),
                count_tests(&ui)
            ))
        }
        "wasm-engine" => {
            // Plain #[test] functions do not run on wasm32; only #[wasm_bindgen_test] ones do.
            let manifest = std::fs::read_to_string(ctx.at("engine/Cargo.toml")).unwrap_or_default();
            if !manifest.contains("wasm-bindgen-test") {
                return Ok(Outcome::Skipped(NO_ENGINE_WASM_TESTS.into()));
            }
            let mut c = wasm_cargo(
                ctx,
                &[
                    "test",
                    "--no-fail-fast",
                    "-p",
                    "lithe",
                    "--target",
                    "wasm32-unknown-unknown",
                    "--lib",
                ],
            );
            let (success, out) = run_tee(&mut c)?;
            if !success {
                bail!("lithe's unit tests failed on wasm32");
            }
            if out.contains("no tests to run") {
                return Ok(Outcome::Skipped(NO_ENGINE_WASM_TESTS.into()));
            }
            ok(&count_tests(&out))
        }
        "js" => {
            npm::build_with_profile(ctx, "wasm-test")?;
            npm::check(ctx)?;
            ok("")
        }
        "e2e" => {
            if !e2e::page_exists(ctx) {
                return Ok(Outcome::Skipped(
                    "index.html does not exist yet (no page to test)".into(),
                ));
            }
            let acc = e2e::run_e2e(ctx)?;
            ok(&format!(
                "playground accuracy {acc} % (≥ {} %)",
                e2e::MIN_ACCURACY_PERCENT
            ))
        }
        other => bail!("unknown stage {other}"),
    }
}

/// `cargo …` for wasm32 with the runner and the browser set up.
fn wasm_cargo(ctx: &Ctx, args: &[&str]) -> std::process::Command {
    let mut c = ctx.cargo(args);
    c.env("CHROMEDRIVER", setup::CHROMEDRIVER)
        .env(
            "WASM_BINDGEN_TEST_WEBDRIVER_JSON",
            ctx.at("tests/webdriver.json"),
        )
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        );
    if std::env::var_os("WASM_BINDGEN_TEST_TIMEOUT").is_none() {
        // The runner's default (20 s for the whole browser run) is too short for training tests.
        c.env("WASM_BINDGEN_TEST_TIMEOUT", "600");
    }
    c
}

/// Sums libtest's / wasm-bindgen-test's `test result: ok. N passed; M failed; K ignored` lines.
fn count_tests(out: &str) -> String {
    let (mut p, mut f, mut i) = (0u64, 0u64, 0u64);
    for line in out.lines().filter(|l| l.contains("test result:")) {
        let num = |word: &str| {
            line.split(';')
                .find(|part| part.contains(word))
                .and_then(|part| {
                    part.split_whitespace()
                        .filter_map(|w| w.parse::<u64>().ok())
                        .next()
                })
                .unwrap_or(0)
        };
        p += num(" passed");
        f += num(" failed");
        i += num(" ignored");
    }
    format!("{p} tests passed, {f} failed, {i} ignored")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_test_results() {
        let out = "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s\n\
                   x\ntest result: ok. 3 passed; 0 failed; 0 ignored\n";
        assert_eq!(count_tests(out), "15 tests passed, 0 failed, 1 ignored");
    }
}
