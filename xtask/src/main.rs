//! `cargo xtask setup | serve | test | data`: installs what is missing, then runs.
//!
//! Every command is idempotent: it checks first and skips what is already there. See
//! `docs/SETUP.md` for what each step installs, where, and how long it takes.

mod bench;
mod browser;
mod data;
mod e2e;
mod npm;
mod setup;
mod test;
mod util;

use anyhow::{Result, bail};
use util::Ctx;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup [--test]        install what is missing (rust wasm target, wasm-bindgen-cli, trunk,
                        binaryen, MNIST data); --test adds chromium, chromedriver, lavapipe
                        and the Python venv used by the tests
  data                  fetch MNIST and write www/data/*.lmn.gz and .data/mnist/*.lmn.gz
  serve [ARGS...]       setup, then `trunk serve --release` on http://127.0.0.1:8080
                        (extra ARGS go to trunk)
  npm [--check|--serve] build the JS API's npm package into pkg/ (feature `js`); --check
                        also runs tests/js/node.mjs in Node and the example page
                        (www/example/) in headless Chromium; --serve serves that page
  bench-web [--no-build] [--quick]
                        build the npm package, then time every kernel family, the peak
                        probe and the zoo models in headless Chromium (simd128 and
                        relaxed-SIMD builds): JSON on stdout and in target/bench/web.json
  bench-ort [--no-build]
                        install onnxruntime-web 1.30.0 into .tools, then time the same
                        ONNX files in Lithe and onnxruntime-web (one thread) in headless
                        Chromium and check the outputs agree: target/bench/ort.json
  test [STAGE...]       full setup, then every check; STAGE picks some of:
                        fmt clippy native wasm-web wasm-engine js e2e  (default: all)
  help                  this text

options:
  --no-setup            (serve, test) skip the setup step
";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    let no_setup = rest.iter().any(|a| a == "--no-setup");
    let rest: Vec<String> = rest
        .iter()
        .filter(|a| *a != "--no-setup")
        .cloned()
        .collect();
    let ctx = Ctx::new()?;
    match cmd.as_str() {
        "setup" => {
            let full = match rest.as_slice() {
                [] => false,
                [f] if f == "--test" => true,
                _ => bail!("unexpected arguments to setup: {rest:?}\n\n{USAGE}"),
            };
            setup::setup(&ctx, full)
        }
        "data" => {
            if !rest.is_empty() {
                bail!("`data` takes no arguments\n\n{USAGE}");
            }
            data::ensure(&ctx).map(|_| ())
        }
        "serve" => {
            if !no_setup {
                setup::setup(&ctx, false)?;
            }
            e2e::trunk_serve(&ctx, &rest)
        }
        "npm" => {
            let (check, serve) = match rest.as_slice() {
                [] => (false, false),
                [f] if f == "--check" => (true, false),
                [f] if f == "--serve" => (false, true),
                _ => bail!("unexpected arguments to npm: {rest:?}\n\n{USAGE}"),
            };
            if !no_setup {
                setup::setup(&ctx, check)?;
            }
            npm::build(&ctx)?;
            if check {
                npm::check(&ctx)?;
            }
            if serve {
                npm::serve(&ctx)?;
            }
            Ok(())
        }
        "bench-web" => bench::bench_web(&ctx, &rest),
        "bench-ort" => bench::bench_ort(&ctx, &rest),
        "test" => {
            let code = test::test(&ctx, &rest, !no_setup)?;
            std::process::exit(code);
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}
