//! The end-to-end browser check: build the page with trunk, serve the result from a tiny static
//! server, drive headless Chromium through chromedriver's W3C WebDriver HTTP API, wait for the
//! playground's `#accuracy`, check it, and save a screenshot.

use crate::browser::{Driver, ELEMENT_KEY, Session, StaticServer, save_screenshot_to, truncate};
use crate::util::{Ctx, run};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Lowest accuracy the playground must show on the MNIST test set.
pub const MIN_ACCURACY_PERCENT: f64 = 97.0;
/// The element whose text holds the accuracy, e.g. `98.9 %`.
pub const ACCURACY_SELECTOR: &str = "#accuracy";
/// The folder the e2e build goes to (not `dist/`, which `trunk serve` owns).
pub const E2E_DIST: &str = "target/xtask/e2e-dist";
/// Where the screenshot goes.
pub const SCREENSHOT: &str = "docs/screenshots/playground.png";
/// Where the screenshot after pruning 90 % goes.
pub const SCREENSHOT_COMPRESSED: &str = "docs/screenshots/compressed.png";
/// Default wait for the accuracy to appear; `LITHE_E2E_TIMEOUT_S` overrides.
const DEFAULT_TIMEOUT_S: u64 = 300;
/// How long a below-threshold accuracy must stay unchanged before it counts as final.
const SETTLE: Duration = Duration::from_secs(15);

/// `trunk serve --release` on the port in Trunk.toml (8080), forwarding extra arguments.
pub fn trunk_serve(ctx: &Ctx, extra: &[String]) -> Result<()> {
    require_index(ctx)?;
    run(&mut ctx.cargo(&["fetch"]))?;
    let mut c = ctx.cmd("trunk");
    c.args(["serve", "--release"]).args(extra);
    println!("xtask serve: http://127.0.0.1:8080 (Ctrl-C stops)");
    run(&mut c)
}

fn require_index(ctx: &Ctx) -> Result<()> {
    if !ctx.at("index.html").exists() {
        bail!("index.html does not exist yet: there is no page to build");
    }
    Ok(())
}

/// Whether there is a page to test at all.
pub fn page_exists(ctx: &Ctx) -> bool {
    ctx.at("index.html").exists()
}

/// Builds, serves and checks the page. Returns the accuracy shown.
pub fn run_e2e(ctx: &Ctx) -> Result<f64> {
    require_index(ctx)?;
    // Trunk.toml sets `offline = true`, which passes --offline to cargo: fetch first.
    run(&mut ctx.cargo(&["fetch"]))?;
    // A private dist folder: a developer's `trunk serve` may rewrite `dist/` meanwhile.
    let dist = ctx.at(E2E_DIST);
    let build = || {
        let mut c = ctx.cmd("trunk");
        // The `wasm-test` profile: release code, compiled faster (docs/SETUP.md, CI).
        c.args([
            "build",
            "--release",
            "--cargo-profile",
            "wasm-test",
            "--dist",
        ])
        .arg(&dist);
        run(&mut c)
    };
    if let Err(e) = build() {
        // Concurrent trunk builds share target/wasm-opt/ and can trip over each other.
        println!("e2e: trunk build failed ({e:#}); retrying once");
        build()?;
    }
    let prefix = public_url(ctx);
    let server = StaticServer::start(dist, prefix.clone())?;
    let page = format!("http://127.0.0.1:{}{prefix}", server.port);
    println!("e2e: serving {E2E_DIST}/ at {page}");
    let driver = Driver::start()?;
    let timeout = std::env::var("LITHE_E2E_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(DEFAULT_TIMEOUT_S), Duration::from_secs);
    let session = driver.new_session(ctx)?;
    let result = check_page(ctx, &session, &page, timeout);
    if let Err(e) = session.delete() {
        eprintln!("e2e: could not close the browser session: {e:#}");
    }
    result
}

fn check_page(ctx: &Ctx, s: &Session, page: &str, timeout: Duration) -> Result<f64> {
    s.post("url", json!({ "url": page }))?;
    let t = Instant::now();
    let mut last_text = String::new();
    let mut changed = Instant::now();
    let accuracy = loop {
        if let Some(text) = s.text_of(ACCURACY_SELECTOR)? {
            if text != last_text {
                println!("e2e: {ACCURACY_SELECTOR} shows {text:?}");
                last_text = text;
                changed = Instant::now();
            }
            match parse_percent(&last_text) {
                Some(p) if p >= MIN_ACCURACY_PERCENT => break p,
                // A low value may be a running evaluation: accept it only once it settles.
                Some(p) if changed.elapsed() > SETTLE || t.elapsed() > timeout => break p,
                _ => {}
            }
        }
        if t.elapsed() > timeout {
            let _ = save_screenshot(ctx, s);
            let body = s.text_of("body").ok().flatten().unwrap_or_default();
            let logs = s.browser_log();
            bail!(
                "no percentage in `{ACCURACY_SELECTOR}` after {} s (last text {last_text:?}); screenshot in {SCREENSHOT}\n\
                 --- page text ---\n{}\n--- browser console ---\n{logs}",
                timeout.as_secs(),
                truncate(&body, 3000)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "e2e: accuracy {accuracy} % after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Headless Chromium offers only a software WebGPU adapter: `auto` stays on the CPU and
    // says why.
    let device = wait_text(s, "#device", timeout, |t| !t.is_empty())?;
    println!("e2e: inference device: {device:?}");
    if !device.starts_with("CPU") || !device.contains("software WebGPU adapter") {
        bail!("with only SwiftShader, the page should run on the CPU and say why: {device:?}");
    }
    save_screenshot(ctx, s)?;
    if accuracy < MIN_ACCURACY_PERCENT {
        bail!(
            "the playground shows {accuracy} % accuracy, below the required {MIN_ACCURACY_PERCENT} %"
        );
    }
    check_compress(ctx, s, &last_text, timeout)?;
    check_knobs(ctx, s, timeout)?;
    // The worker's idle warm-up (app/src/bin/worker.rs, `warm_up`) logs what it ran.
    for line in s.browser_log().lines().filter(|l| l.contains("warm-up")) {
        println!("e2e: worker {line}");
    }
    let hash = s.post(
        "execute/sync",
        json!({ "script": "return location.hash;", "args": [] }),
    )?;
    let hash = hash.as_str().unwrap_or_default().to_string();
    println!("e2e: the URL now ends in {hash:?}");
    if !hash.contains("prune=90") {
        bail!("after pruning 90 % the URL fragment is {hash:?}");
    }
    check_sweep(ctx, s, timeout)?;
    check_files(ctx, s, timeout)?;
    check_shared_link(s, page, timeout)?;
    check_recovery(s, timeout)?;
    check_hang(s, timeout)?;
    check_lottery_cancel(s, timeout)?;
    check_distillation(ctx, s, timeout)?;
    check_lottery(s, timeout)?;
    check_phone(ctx, s)?;
    Ok(accuracy)
}

/// Where the screenshot of the sweep chart goes.
pub const SCREENSHOT_SWEEP: &str = "docs/screenshots/sweep.png";

/// Runs a sweep (prune 0 → 95 % on the model as loaded) and waits until all its points are
/// plotted; the current model's marker must be on the chart.
fn check_sweep(ctx: &Ctx, s: &Session, timeout: Duration) -> Result<()> {
    let script = "document.getElementById('sweep-title').scrollIntoView(); \
                  document.getElementById('sweep-start').click(); return true;";
    s.post("execute/sync", json!({ "script": script, "args": [] }))?;
    let t = Instant::now();
    let done = wait_text(s, "#sweep-status", timeout, |t| t.starts_with("Done"))?;
    let dots = s.post(
        "execute/sync",
        json!({ "script": "return document.querySelectorAll('.sweep-chart circle.series-0').length \
                           + ':' + !!document.getElementById('sweep-current');", "args": [] }),
    )?;
    println!(
        "e2e: sweep → {done:?} after {:.1} s (points:current = {dots})",
        t.elapsed().as_secs_f64()
    );
    if dots.as_str() != Some("11:true") {
        bail!("the sweep chart shows {dots} (want 11 points and the current model)");
    }
    // A bit-width sweep at the same prune ratio joins the chart as a second series.
    s.post(
        "execute/sync",
        json!({ "script": "document.getElementById('sweep-bits').click(); return true;", "args": [] }),
    )?;
    let done = wait_text(s, "#sweep-status", timeout, |t| t.starts_with("Done (32"))?;
    let bits = s.post(
        "execute/sync",
        json!({ "script": "return document.querySelectorAll('.sweep-chart circle.series-1').length;", "args": [] }),
    )?;
    println!("e2e: bit sweep → {done:?} ({bits} points)");
    if bits.as_u64() != Some(5) {
        bail!("the bit-width sweep plotted {bits} points, not 5");
    }
    save_screenshot_to(ctx, s, SCREENSHOT_SWEEP)?;
    s.post(
        "execute/sync",
        json!({ "script": "window.scrollTo(0, 0); return true;", "args": [] }),
    )?;
    Ok(())
}

/// Runs `script` in the page and returns its value.
fn js(s: &Session, script: &str) -> Result<Value> {
    s.post("execute/sync", json!({ "script": script, "args": [] }))
}

/// Sets the `<select>`/`<input>` matched by `css` to `value` and fires `change` (as a user's
/// pick does).
fn choose(s: &Session, css: &str, value: &str) -> Result<()> {
    let script = format!(
        "const e = document.querySelector({css:?}); if (!e) return false; e.value = {value:?}; \
         e.dispatchEvent(new Event('change', {{bubbles: true}})); return true;"
    );
    if js(s, &script)?.as_bool() != Some(true) {
        bail!("no element {css} to set to {value}");
    }
    Ok(())
}

/// The `N.N×` compression ratio in a `#compress-bytes` text.
fn ratio_of(text: &str) -> Option<f64> {
    text.split('(')
        .nth(1)
        .and_then(|r| r.split('×').next())
        .and_then(|r| r.trim().parse().ok())
}

/// The two integers of a `#compress-macs` text, `266,200 → 26,620`.
fn macs_of(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.split_once('→')?;
    let n = |t: &str| t.trim().replace(',', "").parse().ok();
    Some((n(a)?, n(b)?))
}

/// Changes one knob (`css` ← `value`) and waits until `#compress-bytes` and `#compress-macs`
/// have changed and the new accuracy is on screen (`#live-time` filled); returns
/// `(bytes text, macs text, live time text)`.
fn turn_knob(
    s: &Session,
    css: &str,
    value: &str,
    timeout: Duration,
) -> Result<(String, String, String)> {
    let before = (
        s.text_of("#compress-bytes")?.unwrap_or_default(),
        s.text_of("#compress-macs")?.unwrap_or_default(),
    );
    // The page shows `…` in `#live-time` from the change until the new accuracy is shown.
    choose(s, css, value)?;
    let t = Instant::now();
    loop {
        let bytes = s.text_of("#compress-bytes")?.unwrap_or_default();
        let macs = s.text_of("#compress-macs")?.unwrap_or_default();
        let live = s.text_of("#live-time")?.unwrap_or_default();
        let idle = s.text_of(".status")?.unwrap_or_default();
        if (bytes, macs.clone()) != before
            && live.contains('s')
            && !live.contains('…')
            && idle.contains("Ready")
        {
            let bytes = s.text_of("#compress-bytes")?.unwrap_or_default();
            // Where the time went: recipe + the rest in the worker, then the evaluation.
            let recipe = s.text_of("#compress-time")?.unwrap_or_default();
            let eval = s.text_of("#eval-time")?.unwrap_or_default();
            let live = format!("{live} (recipe {recipe}; evaluation {eval})");
            return Ok((bytes, macs, live));
        }
        if t.elapsed() > timeout {
            bail!(
                "after setting {css} to {value}: weights {:?}, MACs {:?}, live {:?}\n--- browser console ---\n{}",
                s.text_of("#compress-bytes")?,
                s.text_of("#compress-macs")?,
                s.text_of("#live-time")?,
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the screenshot of the compression card's histograms and sensitivity strip goes.
pub const SCREENSHOT_KNOBS: &str = "docs/screenshots/knobs.png";
/// Where the screenshot of the layer table with its sensitivity strip goes.
pub const SCREENSHOT_SENSITIVITY: &str = "docs/screenshots/sensitivity.png";

/// With LeNet-300-100 pruned 90 %: histograms are drawn; a per-layer ratio changes the size;
/// structured pruning shrinks the MACs; an SVD rank changes the size; the sensitivity strip
/// appears. Leaves the knobs as they were (prune 90 %, unstructured, no SVD).
fn check_knobs(ctx: &Ctx, s: &Session, timeout: Duration) -> Result<()> {
    let hist = js(
        s,
        "return document.querySelectorAll('.histogram rect.after').length + ':' + document.querySelectorAll('.histogram').length;",
    )?;
    println!("e2e: histograms (filled bars : layers) = {hist}");
    if hist
        .as_str()
        .is_none_or(|h| h.starts_with("0:") || h.ends_with(":0"))
    {
        bail!("no weight histograms after pruning 90 % ({hist})");
    }
    let ratio0 = ratio_of(&s.text_of("#compress-bytes")?.unwrap_or_default()).unwrap_or(0.0);
    let (b, _, live) = turn_knob(s, ".layer-prune[data-layer=fc1]", "95", timeout)?;
    println!("e2e: fc1 at 95 % → weights {b:?}; change → accuracy in {live}");
    if ratio_of(&b).unwrap_or(0.0) <= ratio0 {
        bail!("a per-layer ratio of 95 % on fc1 did not shrink the weights ({b:?}, was {ratio0}×)");
    }
    turn_knob(s, ".layer-prune[data-layer=fc1]", "", timeout)?;
    let (b, m, live) = turn_knob(s, "#compress-structure", "filters", timeout)?;
    println!("e2e: structured 90 % → weights {b:?}, MACs {m:?}; change → accuracy in {live}");
    match macs_of(&m) {
        Some((before, after)) if after * 2 < before => {}
        _ => bail!("structured pruning did not shrink the MACs: {m:?}"),
    }
    turn_knob(s, "#compress-structure", "weights", timeout)?;
    let ratio90 = ratio_of(&s.text_of("#compress-bytes")?.unwrap_or_default()).unwrap_or(0.0);
    let (b, _, live) = turn_knob(s, "#compress-rank", "16", timeout)?;
    println!("e2e: SVD rank 16 + prune 90 % → weights {b:?}; change → accuracy in {live}");
    if ratio_of(&b).is_none_or(|r| (r - ratio90).abs() < 0.05) {
        bail!("an SVD rank of 16 did not change the size ({b:?}, was {ratio90}×)");
    }
    // Another rank factors the same loaded weights: the worker's engine keeps their SVDs.
    let (b, _, live) = turn_knob(s, "#compress-rank", "32", timeout)?;
    println!("e2e: SVD rank 32 + prune 90 % → weights {b:?}; change → accuracy in {live}");
    turn_knob(s, "#compress-rank", "0", timeout)?;
    js(
        s,
        "document.getElementById('sensitivity-start').click(); return true;",
    )?;
    let t = Instant::now();
    loop {
        let cells = js(
            s,
            "return Array.from(document.querySelectorAll('td.sens')).map(e => e.textContent).join(' | ');",
        )?;
        let text = cells.as_str().unwrap_or_default().to_string();
        if text.matches("pp").count() + text.matches("n/a").count() >= 3 {
            println!(
                "e2e: sensitivity strip (prune 90 %): {text} after {:.1} s",
                t.elapsed().as_secs_f64()
            );
            break;
        }
        if t.elapsed() > timeout {
            bail!(
                "the sensitivity strip did not appear ({text:?})\n--- browser console ---\n{}",
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    js(
        s,
        "document.getElementById('model-title').scrollIntoView(); return true;",
    )?;
    save_screenshot_to(ctx, s, SCREENSHOT_SENSITIVITY)?;
    js(
        s,
        "document.querySelector('.histograms').scrollIntoView({block: 'end'}); return true;",
    )?;
    save_screenshot_to(ctx, s, SCREENSHOT_KNOBS)?;
    js(s, "window.scrollTo(0, 0); return true;")?;
    Ok(())
}

/// Kills the worker through the page's debug hook and waits until the page has started a new
/// one, reloaded the current model with its knobs and shows its accuracy again.
fn check_recovery(s: &Session, timeout: Duration) -> Result<()> {
    let model = s.text_of("#model-source")?.unwrap_or_default();
    js(s, "window.__litheKillWorker(); return true;")?;
    let t = Instant::now();
    let banner = wait_text(s, "[role=alert]", timeout, |t| t.contains("restarted"))?;
    wait_text(s, ".status", timeout, |t| t.contains("Ready"))?;
    let acc = wait_text(s, ACCURACY_SELECTOR, timeout, |t| {
        parse_percent(t).is_some()
    })?;
    let bytes = wait_text(s, "#compress-bytes", timeout, |t| t.contains('×'))?;
    let now = s.text_of("#model-source")?.unwrap_or_default();
    let hash = js(s, "return location.hash;")?;
    println!(
        "e2e: worker killed → {:?}; {now:?} at {acc:?}, weights {bytes:?}, URL {hash} after {:.1} s",
        banner.lines().next().unwrap_or_default(),
        t.elapsed().as_secs_f64()
    );
    if now != model {
        bail!("after the restart the page shows {now:?}, not {model:?}");
    }
    if !hash.as_str().unwrap_or_default().contains("prune=50") {
        bail!("the restart lost the knobs: URL {hash}");
    }
    js(
        s,
        "const b = document.querySelector('[role=alert] button'); if (b) b.click(); return true;",
    )?;
    Ok(())
}

/// The page's patience with the hung worker in [`check_hang`] (the usual one is 20 s).
const HANG_PATIENCE_MS: u64 = 2_000;

/// Makes the worker hang silently (`window.__litheHangWorker`: it spins without yielding, as
/// a stuck engine call would, and answers nothing) with the page's patience lowered to
/// [`HANG_PATIENCE_MS`] for that worker, and waits until the heartbeat has noticed, the page
/// says so, and a new worker shows the same model with its knobs at the same accuracy.
fn check_hang(s: &Session, timeout: Duration) -> Result<()> {
    let model = s.text_of("#model-source")?.unwrap_or_default();
    let acc = s.text_of(ACCURACY_SELECTOR)?.unwrap_or_default();
    let hung = js(
        s,
        &format!("{MARK_MODEL} return window.__litheHangWorker({HANG_PATIENCE_MS});"),
    )?;
    if hung.as_bool() != Some(true) {
        bail!("window.__litheHangWorker found no ready worker to hang ({hung})");
    }
    let t = Instant::now();
    let banner = wait_text(s, "[role=alert]", timeout, |t| {
        t.contains("stopped answering")
    })?;
    let noticed = t.elapsed().as_secs_f64();
    // The same model at the same accuracy: loaded again and its knobs re-applied.
    let again = wait_reloaded(s, &acc, timeout)?;
    let now = s.text_of("#model-source")?.unwrap_or_default();
    println!(
        "e2e: worker hung → noticed after {noticed:.1} s ({:?}); {now:?} back at {again:?} after {:.1} s",
        banner.lines().next().unwrap_or_default(),
        t.elapsed().as_secs_f64()
    );
    if now != model {
        bail!("after the hang the page shows {now:?}, not {model:?}");
    }
    js(
        s,
        "const b = document.querySelector('[role=alert] button'); if (b) b.click(); return true;",
    )?;
    Ok(())
}

/// Fine-tunes the model briefly (1 epoch at 0.001, so its accuracy moves away from the model
/// as loaded), then starts a long lottery job (5 rounds of 5 epochs) and cancels it once its
/// progress shows (the job is then inside its one engine call, so the page replaces the
/// worker). Checks that the card says it was cancelled and the trained weights restored, no
/// error is shown, the model is back at the **fine-tuned** accuracy (not the loaded one), and
/// a knob change is still compressed and evaluated afterwards (from the model as loaded, so
/// back at int8 it shows the accuracy from before the fine-tuning).
fn check_lottery_cancel(s: &Session, timeout: Duration) -> Result<()> {
    let acc = s.text_of(ACCURACY_SELECTOR)?.unwrap_or_default();
    let (epochs, lr) = {
        let v = js(
            s,
            "return [document.getElementById('tune-epochs').value, document.getElementById('tune-lr').value];",
        )?;
        let at = |i: usize| {
            v.get(i)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        (at(0), at(1))
    };
    let set_inputs = |pairs: &[(&str, &str)]| -> Result<()> {
        let list = pairs
            .iter()
            .map(|(id, v)| format!("[{id:?}, {v:?}]"))
            .collect::<Vec<_>>()
            .join(", ");
        js(
            s,
            &format!(
                "for (const [id, v] of [{list}]) {{ const e = document.getElementById(id); e.value = v; \
                   e.dispatchEvent(new Event('input', {{bubbles: true}})); \
                   e.dispatchEvent(new Event('change', {{bubbles: true}})); }} return true;"
            ),
        )?;
        Ok(())
    };
    // Fine-tuning first: weights that live only in the worker.
    set_inputs(&[("tune-epochs", "1"), ("tune-lr", "0.001")])?;
    js(
        s,
        "document.getElementById('tune-start').click(); return true;",
    )?;
    let t = Instant::now();
    let tuned_result = wait_text(s, "#tune-result", timeout, |t| t.contains("Done"))?;
    let tuned = wait_text(s, ACCURACY_SELECTOR, timeout, |t| {
        parse_percent(t).is_some()
    })?;
    println!(
        "e2e: before the lottery job, fine-tuned 1 epoch at 0.001: {acc:?} → {tuned:?} ({tuned_result:?}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if parse_percent(&tuned) == parse_percent(&acc) {
        bail!(
            "fine-tuning did not change the accuracy ({tuned:?}), so the cancel check would prove nothing"
        );
    }
    set_inputs(&[("tune-epochs", "5"), ("lottery-rounds", "5")])?;
    js(
        s,
        "document.querySelector('details.lottery').open = true; \
         document.getElementById('lottery-start').click(); return true;",
    )?;
    let progress = wait_text(s, ".tune .progress", timeout, |t| t.contains("step"))?;
    js(
        s,
        &format!("{MARK_MODEL} document.getElementById('tune-cancel').click(); return true;"),
    )?;
    let t = Instant::now();
    let result = wait_text(s, "#tune-result", timeout, |t| t.contains("Cancelled"))?;
    let cancelled = t.elapsed().as_secs_f64();
    let again = wait_reloaded(s, &tuned, timeout)?;
    println!(
        "e2e: lottery job cancelled at {progress:?}: {result:?} after {cancelled:.2} s; model back at the fine-tuned {again:?} after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if !result.contains("restarted") || !result.contains("restored") {
        bail!(
            "the cancelled lottery job's result does not say the worker was restarted and the trained weights restored: {result:?}"
        );
    }
    if let Some(alert) = s.text_of("[role=alert]")?
        && !alert.trim().is_empty()
    {
        bail!("cancelling the lottery job showed an error: {alert:?}");
    }
    // Still at work: a knob change is compressed and evaluated (and put back).
    let (b, _, live) = turn_knob(s, "#compress-format", "int4", timeout)?;
    println!("e2e: after the cancel, int4 → weights {b:?}; change → accuracy in {live}");
    turn_knob(s, "#compress-format", "int8", timeout)?;
    let back = wait_text(s, ACCURACY_SELECTOR, timeout, |t| {
        parse_percent(t).is_some()
    })?;
    if parse_percent(&back) != parse_percent(&acc) {
        bail!("back at int8 the page shows {back:?}, before the fine-tuning {acc:?}");
    }
    set_inputs(&[("tune-epochs", &epochs), ("tune-lr", &lr)])?;
    Ok(())
}

/// Script that watches `#accuracy` for the moment it loses its percentage, which happens only
/// when a model is loaded (its evaluation is cleared): [`wait_reloaded`] then knows that the
/// page loaded the model again and is not looking at the old figures.
const MARK_MODEL: &str = "window.__litheCleared = false; const acc = document.getElementById('accuracy'); \
    new MutationObserver(() => { if (!/\\d\\s*%/.test(acc.textContent)) window.__litheCleared = true; }) \
    .observe(acc, {childList: true, subtree: true, characterData: true});";

/// After [`MARK_MODEL`]: waits until the page has loaded a model again, has applied its
/// compression (`#compress-bytes`), is idle, and shows `accuracy` (the same percentage);
/// returns the accuracy text.
fn wait_reloaded(s: &Session, accuracy: &str, timeout: Duration) -> Result<String> {
    let want = parse_percent(accuracy).with_context(|| format!("no percentage in {accuracy:?}"))?;
    let probe = "const t = css => (document.querySelector(css) || {}).textContent || ''; \
        return [window.__litheCleared === true, \
        t('.status'), t('#compress-bytes'), t('#accuracy')];";
    let t = Instant::now();
    loop {
        let v = js(s, probe)?;
        let text = |i: usize| v.get(i).and_then(Value::as_str).unwrap_or_default();
        if v.get(0).and_then(Value::as_bool) == Some(true)
            && text(1).contains("Ready")
            && text(2).contains('×')
            && parse_percent(text(3)) == Some(want)
        {
            return Ok(text(3).to_string());
        }
        if t.elapsed() > timeout {
            bail!(
                "the page did not show the model again at {accuracy:?} within {} s (now {v})\n--- browser console ---\n{}",
                timeout.as_secs(),
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Trains a lottery ticket (1 round, 1 epoch) and waits for its runs and the result line.
fn check_lottery(s: &Session, timeout: Duration) -> Result<()> {
    js(
        s,
        "document.querySelector('details.lottery').open = true; \
           const r = document.getElementById('lottery-rounds'); r.value = '1'; \
           r.dispatchEvent(new Event('input', {bubbles: true})); \
           document.getElementById('lottery-start').click(); return true;",
    )?;
    let t = Instant::now();
    let runs = wait_text(s, "#lottery-rounds-list", timeout, |t| t.contains("run 1"))?;
    let result = wait_text(s, "#tune-result", timeout, |t| t.contains("Done"))?;
    println!(
        "e2e: lottery ticket: {} · {result:?} after {:.1} s",
        runs.replace('\n', " · "),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where the phone-width screenshot goes.
pub const SCREENSHOT_PHONE: &str = "docs/screenshots/phone.png";

/// Narrows the window to a phone's 390×844 and checks that nothing overflows sideways.
fn check_phone(ctx: &Ctx, s: &Session) -> Result<()> {
    s.post("window/rect", json!({ "width": 390, "height": 844 }))?;
    std::thread::sleep(Duration::from_millis(500));
    js(s, "window.scrollTo(0, 0); return true;")?;
    let sizes = js(
        s,
        "return [document.documentElement.scrollWidth, window.innerWidth];",
    )?;
    let (scroll, inner) = (
        sizes.get(0).and_then(Value::as_u64).unwrap_or(u64::MAX),
        sizes.get(1).and_then(Value::as_u64).unwrap_or(0),
    );
    save_screenshot_to(ctx, s, SCREENSHOT_PHONE)?;
    println!("e2e: phone width: scrollWidth {scroll} px, innerWidth {inner} px");
    if scroll > inner {
        let wide = js(
            s,
            "return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5).slice(0, 8).map(e => e.tagName + '.' + e.className + '#' + e.id).join(', ');",
        )?;
        bail!("at 390 px the page is {scroll} px wide (window {inner} px); too wide: {wide}");
    }
    Ok(())
}

/// Where the screenshot after a distillation job goes.
pub const SCREENSHOT_DISTILL: &str = "docs/screenshots/distill.png";

/// Picks LeNet-5 as the teacher on the fine-tune card, runs one epoch and waits until the
/// progress bar has run and the result line says it is done.
fn check_distillation(ctx: &Ctx, s: &Session, timeout: Duration) -> Result<()> {
    // Long tasks on the main thread during the job (none may exceed 50 ms).
    js(
        s,
        "window.__litheLong = []; new PerformanceObserver(l => { \
           for (const e of l.getEntries()) window.__litheLong.push(e.duration); \
         }).observe({type: 'longtask'}); return true;",
    )?;
    let script = "const t = document.getElementById('tune-teacher'); t.value = 'lenet-5'; \
                  t.dispatchEvent(new Event('change', {bubbles: true})); return true;";
    s.post("execute/sync", json!({ "script": script, "args": [] }))?;
    // The assistant's select appears with the teacher's settings.
    std::thread::sleep(Duration::from_millis(300));
    choose(s, "#tune-ta", "lenet-300-100")?;
    js(
        s,
        "document.getElementById('tune-start').click(); return true;",
    )?;
    let t = Instant::now();
    let mut seen_progress = false;
    let result = loop {
        if !seen_progress && s.text_of("#tune-progress")?.is_some() {
            seen_progress = true;
        }
        if let Some(r) = s.text_of("#tune-result")?
            && r.contains("Done")
        {
            break r;
        }
        if t.elapsed() > timeout {
            let _ = save_screenshot_to(ctx, s, SCREENSHOT_DISTILL);
            bail!(
                "the distillation job did not finish in {} s\n--- browser console ---\n{}",
                timeout.as_secs(),
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !seen_progress {
        bail!("the distillation job finished without showing its progress bar");
    }
    println!(
        "e2e: distillation lenet-5 → lenet-300-100 → model: {result:?} after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let long = js(
        s,
        "const l = window.__litheLong || []; return [l.length, l.length ? Math.max(...l) : 0];",
    )?;
    let (count, longest) = (
        long.get(0).and_then(Value::as_u64).unwrap_or(0),
        long.get(1).and_then(Value::as_f64).unwrap_or(0.0),
    );
    println!("e2e: main-thread long tasks during the job: {count}, longest {longest:.0} ms");
    if longest > 50.0 {
        bail!("the main thread ran a task of {longest:.0} ms during the distillation job");
    }
    save_screenshot_to(ctx, s, SCREENSHOT_DISTILL)
}

/// Opens a shared link (`#model=tiny-mlp&prune=50&weights=int8`) and checks that the page
/// loads that zoo model and applies those knobs; once with `device=cpu` and once with
/// `device=webgpu`, drawing the same stroke, and checks that WebGPU answered the second time
/// and agrees with the CPU (same digit, probabilities within 1e-3).
fn check_shared_link(s: &Session, page: &str, timeout: Duration) -> Result<()> {
    // The same link and stroke on the CPU, then on WebGPU: `device=webgpu` also takes headless
    // Chromium's software adapter (SwiftShader), which `auto` leaves for the CPU. The WebGPU
    // page stays for the checks that follow.
    let (cpu_on, cpu) = open_and_classify(s, page, "cpu", timeout)?;
    let (gpu_on, gpu) = open_and_classify(s, page, "webgpu", timeout)?;
    if cpu_on != "cpu" || gpu_on != "webgpu" {
        bail!(
            "the stroke was classified on {cpu_on:?} with device=cpu and on {gpu_on:?} with \
             device=webgpu (want cpu and webgpu: the GPU may have failed and the CPU answered)"
        );
    }
    let argmax = |p: &[f64]| {
        p.iter()
            .enumerate()
            .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0
    };
    let diff = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "e2e: the stroke on the CPU → {} ({:.4}), on WebGPU → {} ({:.4}); largest probability difference {diff:.2e}",
        argmax(&cpu),
        cpu[argmax(&cpu)],
        argmax(&gpu),
        gpu[argmax(&gpu)]
    );
    if cpu.len() != 10 || gpu.len() != 10 || argmax(&cpu) != argmax(&gpu) || diff > 1e-3 {
        bail!(
            "WebGPU and the CPU disagree on the same stroke and model:\n cpu {cpu:?}\n gpu {gpu:?}"
        );
    }
    Ok(())
}

/// Opens the shared link `#model=tiny-mlp&prune=50&weights=int8&device={device}`, waits until
/// that model is loaded, compressed and evaluated, draws a vertical stroke and returns where
/// the page says the answer was computed and the ten probabilities.
fn open_and_classify(
    s: &Session,
    page: &str,
    device: &str,
    timeout: Duration,
) -> Result<(String, Vec<f64>)> {
    let link = format!("{page}#model=tiny-mlp&prune=50&weights=int8&device={device}");
    // A fragment-only change does not reload: go through about:blank.
    s.post("url", json!({ "url": "about:blank" }))?;
    s.post("url", json!({ "url": link }))?;
    let t = Instant::now();
    wait_text(s, "#model-source", timeout, |t| t.contains("tiny-mlp"))?;
    let bytes = wait_text(s, "#compress-bytes", timeout, |t| t.contains('×'))?;
    let label = wait_text(s, "label[for=compress-prune]", timeout, |t| {
        t.contains("50")
    })?;
    // Compressed, then evaluated: idle with an accuracy.
    wait_text(s, ".status", timeout, |t| t.contains("Ready"))?;
    let acc = wait_text(s, ACCURACY_SELECTOR, timeout, |t| {
        parse_percent(t).is_some()
    })?;
    println!(
        "e2e: shared link (device={device}) → tiny-mlp, {label:?}, weights {bytes:?}, {acc:?} after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shown = wait_text(s, "#device", timeout, |t| !t.is_empty())?;
    println!("e2e: with device={device}, inference runs on {shown:?}");
    let want = if device == "webgpu" { "WebGPU" } else { "CPU" };
    if !shown.starts_with(want) {
        bail!("the link asked for device={device}, but the page says {shown:?}");
    }
    // A stroke down the middle of the pad.
    let draw = "const pad = document.querySelector('canvas.pad'); const r = pad.getBoundingClientRect(); \
        const ev = (type, y) => pad.dispatchEvent(new PointerEvent(type, {bubbles: true, pointerId: 1, \
        clientX: r.left + 0.5 * r.width, clientY: r.top + y * r.height})); \
        ev('pointerdown', 0.15); for (let i = 0; i <= 20; i++) ev('pointermove', 0.15 + 0.035 * i); \
        ev('pointerup', 0.85); return true;";
    s.post("execute/sync", json!({ "script": draw, "args": [] }))?;
    // The page classifies the newest drawing once the previous answer is in; `aria-busy`
    // stays true until the answer matches the finished stroke.
    let probe = "const on = document.querySelector('.prediction[aria-busy=false] #classified-on'); \
        return on ? [on.dataset.device, Array.from(document.querySelectorAll('.prediction li[data-p]')).map(e => e.dataset.p)] : null;";
    let t = Instant::now();
    loop {
        let v = js(s, probe)?;
        if let Some([on, probs]) = v.as_array().map(Vec::as_slice) {
            let probs: Vec<f64> = probs
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            return Ok((on.as_str().unwrap_or_default().to_string(), probs));
        }
        if t.elapsed() > timeout {
            bail!(
                "the stroke was not classified with device={device}\n--- browser console ---\n{}",
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Downloads the compressed model as `.lithe` (captured in the page), uploads it again through
/// the file input and waits for its accuracy; feeds a corrupt file and checks the error while
/// the page keeps its model; uploads the ONNX Model Zoo's mnist-8 from ../shared/models when it
/// is there.
fn check_files(ctx: &Ctx, s: &Session, timeout: Duration) -> Result<()> {
    let dir = ctx.at("target/xtask/e2e-files");
    std::fs::create_dir_all(&dir)?;
    // Capture the download: the page clicks a temporary <a download> with a Blob URL.
    let hook = "window.__lithe_dl = null; const orig = HTMLAnchorElement.prototype.click; \
        HTMLAnchorElement.prototype.click = function () { \
          if (this.download) { fetch(this.href).then(r => r.arrayBuffer()).then(b => { \
            const u = new Uint8Array(b); let s = ''; \
            for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode(...u.subarray(i, i + 8192)); \
            window.__lithe_dl = { name: this.download, b64: btoa(s) }; }); return; } \
          return orig.call(this); }; \
        document.getElementById('download-lithe').click(); return true;";
    s.post("execute/sync", json!({ "script": hook, "args": [] }))?;
    let t = Instant::now();
    let (name, bytes) = loop {
        let v = s.post(
            "execute/sync",
            json!({ "script": "return window.__lithe_dl;", "args": [] }),
        )?;
        if let (Some(n), Some(b)) = (
            v.get("name").and_then(Value::as_str),
            v.get("b64").and_then(Value::as_str),
        ) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .context("download base64")?;
            break (n.to_string(), bytes);
        }
        if t.elapsed() > timeout {
            bail!(
                "the .lithe download never arrived\n--- browser console ---\n{}",
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !bytes.starts_with(b"LITHE") {
        bail!(
            "the download {name} is not a .lithe file ({} bytes)",
            bytes.len()
        );
    }
    println!("e2e: downloaded {name}: {} bytes", bytes.len());
    let lithe = dir.join(&name);
    std::fs::write(&lithe, &bytes)?;
    let acc_before = s.text_of(ACCURACY_SELECTOR)?.unwrap_or_default();
    upload(s, &lithe)?;
    let shown = wait_text(s, "#model-source", timeout, |t| t.contains(&name))?;
    let acc = wait_text(s, ACCURACY_SELECTOR, timeout, |t| {
        parse_percent(t).is_some()
    })?;
    println!(
        "e2e: uploaded {name} again: {shown:?}, accuracy {acc:?} (compressed model showed {acc_before:?})"
    );
    if parse_percent(&acc) != parse_percent(&acc_before) {
        bail!("the reloaded .lithe shows {acc}, the compressed model showed {acc_before}");
    }
    // A corrupt file: a readable error, and the page keeps the model it had.
    let bad = dir.join("corrupt.onnx");
    std::fs::write(&bad, b"\x08\x07\x12\xffnot really an onnx model")?;
    upload(s, &bad)?;
    let err = wait_text(s, "[role=alert]", timeout, |t| !t.trim().is_empty())?;
    println!(
        "e2e: corrupt file → {:?}",
        err.lines().next().unwrap_or_default()
    );
    if !err.contains("code") {
        bail!("the corrupt file's error does not name a code: {err:?}");
    }
    let still = s.text_of("#model-source")?.unwrap_or_default();
    if !still.contains(&name) {
        bail!("after the corrupt file the page shows {still:?} instead of the previous model");
    }
    let zoo8 = ctx.at("../shared/models/onnx-zoo-mnist-8.onnx");
    if zoo8.exists() {
        upload(s, &zoo8)?;
        wait_text(s, "#model-source", timeout, |t| {
            t.contains("onnx-zoo-mnist-8")
        })?;
        let acc = wait_text(s, ACCURACY_SELECTOR, timeout, |t| {
            parse_percent(t).is_some_and(|p| p > 90.0)
        })?;
        println!("e2e: uploaded onnx-zoo-mnist-8.onnx: accuracy {acc:?}");
    } else {
        println!(
            "e2e: skipped the onnx-zoo-mnist-8 upload: {} is absent",
            zoo8.display()
        );
    }
    Ok(())
}

/// Sends a file path to the page's file input (WebDriver file upload).
fn upload(s: &Session, path: &Path) -> Result<()> {
    let el = s.post(
        "element",
        json!({ "using": "css selector", "value": "input[type=file]" }),
    )?;
    let id = el
        .get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .context("no file input")?
        .to_string();
    let path = path.canonicalize()?;
    s.post(
        &format!("element/{id}/value"),
        json!({ "text": path.display().to_string() }),
    )?;
    Ok(())
}

/// Waits until the text of `css` satisfies `ok`; returns it.
fn wait_text(
    s: &Session,
    css: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    let t = Instant::now();
    loop {
        if let Some(text) = s.text_of(css)?
            && ok(&text)
        {
            return Ok(text);
        }
        if t.elapsed() > timeout {
            bail!(
                "{css} did not show what was expected within {} s (now {:?})\n--- browser console ---\n{}",
                timeout.as_secs(),
                s.text_of(css).ok().flatten(),
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Moves the prune slider to 90 % and waits until the compressed size and a new accuracy are
/// shown; prints how long that took and saves a second screenshot.
fn check_compress(ctx: &Ctx, s: &Session, accuracy_text: &str, timeout: Duration) -> Result<()> {
    let script = "const e = document.getElementById('compress-prune'); e.value = '90'; \
                  e.dispatchEvent(new Event('input', {bubbles: true})); \
                  e.dispatchEvent(new Event('change', {bubbles: true})); return true;";
    s.post("execute/sync", json!({ "script": script, "args": [] }))?;
    let t = Instant::now();
    loop {
        let bytes = s.text_of("#compress-bytes")?;
        let acc = s.text_of(ACCURACY_SELECTOR)?;
        if let (Some(b), Some(a)) = (&bytes, &acc)
            && a != accuracy_text
            && parse_percent(a).is_some()
        {
            println!(
                "e2e: prune 90 % → {ACCURACY_SELECTOR} {a:?}, weights {b:?}, after {:.2} s",
                t.elapsed().as_secs_f64()
            );
            let ratio: f64 = ratio_of(b).with_context(|| format!("no ratio in {b:?}"))?;
            if ratio < 5.0 {
                bail!("pruning 90 % gave only {ratio}× smaller weights ({b:?})");
            }
            break;
        }
        if t.elapsed() > timeout {
            let _ = save_screenshot_to(ctx, s, SCREENSHOT_COMPRESSED);
            bail!(
                "after moving the prune slider to 90 %: weights {bytes:?}, accuracy {acc:?} \
                 (was {accuracy_text:?}) after {} s\n--- browser console ---\n{}",
                timeout.as_secs(),
                s.browser_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    save_screenshot_to(ctx, s, SCREENSHOT_COMPRESSED)
}

/// Where the example page's screenshot goes.
pub const SCREENSHOT_EXAMPLE: &str = "docs/screenshots/js-example.png";

/// Serves the repository root and returns the URL of the plain-JS example page
/// (`www/example/`, which imports `pkg/` built by `cargo xtask npm`).
pub fn serve_example(ctx: &Ctx) -> Result<String> {
    let server = StaticServer::start(ctx.root.clone(), "/".into())?;
    Ok(format!("http://127.0.0.1:{}/www/example/", server.port))
}

/// Opens the example page in headless Chromium, draws a vertical stroke with pointer events and
/// checks that the page predicts a 1; then compresses in the page and checks the size line.
pub fn check_example(ctx: &Ctx) -> Result<()> {
    let page = serve_example(ctx)?;
    let driver = Driver::start()?;
    let s = driver.new_session(ctx)?;
    let r = (|| -> Result<()> {
        s.post("url", json!({ "url": page }))?;
        let t = Instant::now();
        let wait = |css: &str, want: &dyn Fn(&str) -> bool, what: &str| -> Result<String> {
            loop {
                if let Some(text) = s.text_of(css)?
                    && want(&text)
                {
                    return Ok(text);
                }
                if t.elapsed() > Duration::from_secs(120) {
                    let status = s.text_of("#status").ok().flatten().unwrap_or_default();
                    bail!(
                        "example page: {what} did not happen (status {status:?})\n--- browser console ---\n{}",
                        s.browser_log()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        wait(
            "#status",
            &|t| t.contains("Draw a digit"),
            "loading the model",
        )?;
        let draw = "const pad = document.getElementById('pad'); const r = pad.getBoundingClientRect();             const ev = (type, y) => pad.dispatchEvent(new PointerEvent(type, {bubbles: true, pointerId: 1,               clientX: r.left + 0.5 * r.width, clientY: r.top + y * r.height}));             ev('pointerdown', 0.15); for (let i = 0; i <= 20; i++) ev('pointermove', 0.15 + 0.035 * i);             ev('pointerup', 0.85); return true;";
        s.post("execute/sync", json!({ "script": draw, "args": [] }))?;
        let digit = wait("#prediction", &|t| t.trim() != "–", "a prediction")?;
        println!("example: a vertical stroke is classified as {digit:?}");
        // The build the package picked in Chromium (relaxed SIMD, which it validates) runs the
        // kernel selftest: every fast kernel of that build against its scalar twin.
        let probe = "const done = arguments[arguments.length - 1]; \
            import('/pkg/lithe.js').then(m => done(JSON.stringify({build: m.wasmBuild, \
            selftest: JSON.parse(m.benchSelftest())}))).catch(e => done('error: ' + e));";
        let r = s.post("execute/async", json!({ "script": probe, "args": [] }))?;
        let text = r.as_str().unwrap_or_default().to_string();
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("the example page's selftest: {text}"))?;
        let build = v["build"].as_str().unwrap_or_default();
        let kernels: Vec<&str> = v["selftest"]["kernels"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "example: {build} build, selftest {} cases over {kernels:?}",
            v["selftest"]["cases"]
        );
        if build != "relaxed-simd" || !kernels.contains(&"relaxed-simd") {
            bail!("Chromium validates relaxed SIMD, but the package loaded {build} ({text})");
        }
        if digit.trim() != "1" {
            bail!("the example page classified a vertical stroke as {digit:?}, not 1");
        }
        s.post(
            "element",
            json!({ "using": "css selector", "value": "#compress" }),
        )
        .and_then(|el| {
            let id = el
                .get(ELEMENT_KEY)
                .and_then(Value::as_str)
                .context("no #compress button")?
                .to_string();
            s.post(&format!("element/{id}/click"), json!({}))
        })?;
        let size = wait(
            "#size",
            &|t| t.contains(".lithe"),
            "compressing in the page",
        )?;
        println!("example: {size}");
        save_screenshot_to(ctx, &s, SCREENSHOT_EXAMPLE)
    })();
    if let Err(e) = s.delete() {
        eprintln!("example: could not close the browser session: {e:#}");
    }
    r
}

fn save_screenshot(ctx: &Ctx, s: &Session) -> Result<()> {
    save_screenshot_to(ctx, s, SCREENSHOT)
}

/// The first number directly followed by `%` (spaces allowed between), e.g. `98.7 %` → 98.7.
pub fn parse_percent(text: &str) -> Option<f64> {
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c != '%' {
            continue;
        }
        let mut end = i;
        while end > 0 && chars[end - 1].is_whitespace() {
            end -= 1;
        }
        let mut start = end;
        while start > 0 && (chars[start - 1].is_ascii_digit() || chars[start - 1] == '.') {
            start -= 1;
        }
        if let Ok(v) = chars[start..end].iter().collect::<String>().parse::<f64>() {
            return Some(v);
        }
    }
    None
}

/// `public_url` from Trunk.toml, normalised to start and end with `/` (default `/`).
fn public_url(ctx: &Ctx) -> String {
    let toml = std::fs::read_to_string(ctx.at("Trunk.toml")).unwrap_or_default();
    let url = toml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("public_url"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .unwrap_or_default();
    let url = url.trim_matches('/');
    if url.is_empty() {
        "/".into()
    } else {
        format!("/{url}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_parsing() {
        assert_eq!(parse_percent("Accuracy: 98.7 %"), Some(98.7));
        assert_eq!(parse_percent("98%"), Some(98.0));
        assert_eq!(parse_percent("loading…"), None);
        assert_eq!(parse_percent("— %"), None);
        assert_eq!(parse_percent("top-1 97.25% (10000 images)"), Some(97.25));
    }
}
