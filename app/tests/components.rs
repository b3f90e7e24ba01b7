//! Components mounted in headless Chromium: each test renders one component into a fresh
//! `<div>` with `leptos::mount::mount_to` and checks the DOM it produced.
//!
//! Run with (see docs/APP.md): `CHROMEDRIVER=/usr/bin/chromedriver
//! WASM_BINDGEN_TEST_WEBDRIVER_JSON=$PWD/tests/webdriver.json
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
//! cargo test -p lithe-app --target wasm32-unknown-unknown --test components`.

#![cfg(target_arch = "wasm32")]

use leptos::prelude::*;
use lithe::metrics::{LayerInfo, ModelInfo};
use lithe_app::components::error_banner::ErrorBanner;
use lithe_app::components::fine_tune_panel::FineTunePanel;
use lithe_app::components::histogram::WeightHistograms;
use lithe_app::components::layer_table::LayerTable;
use lithe_app::components::prediction::Prediction;
use lithe_app::components::sweep_panel::{Sweep, SweepPanel};
use lithe_app::protocol::{HISTOGRAM_BINS, Histogram, Sensitivity, TrainKnobs, histogram};
use lithe_app::state::{Notice, Phase, TrainResult, Training};
use lithe_app::sweep::SweepPoint;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh `<div>` in the document's body.
fn host() -> web_sys::HtmlElement {
    let doc = document();
    let div = doc.create_element("div").unwrap();
    doc.body().unwrap().append_child(&div).unwrap();
    div.unchecked_into()
}

/// Mounts `view` into a fresh host and keeps it mounted for the rest of the test run.
fn mount<V: IntoView + 'static>(view: impl FnOnce() -> V + 'static) -> web_sys::HtmlElement {
    let el = host();
    let handle = leptos::mount::mount_to(el.clone(), view);
    handle.forget();
    el
}

fn count(el: &web_sys::HtmlElement, css: &str) -> u32 {
    el.query_selector_all(css).unwrap().length()
}

/// Lets effects and the microtask queue run.
async fn tick() {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(p).await;
}

fn layer(name: &str, op: &str, params: usize) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        op: op.into(),
        shape: vec![1, 10],
        params,
        bytes: params * 4,
        macs: params as u64,
    }
}

#[wasm_bindgen_test]
async fn layer_table_shows_the_sensitivity_strip_once_measured() {
    let info = ModelInfo {
        name: "m".into(),
        input_shape: vec![1, 784],
        layers: vec![
            layer("fc1", "Gemm", 7850),
            layer("relu", "Relu", 0),
            layer("fc2", "Gemm", 110),
        ],
        params: 7960,
        bytes: 31840,
        macs: 7960,
    };
    let sens = RwSignal::new(None::<Sensitivity>);
    let el = mount(move || view! { <LayerTable info=info sensitivity=sens /> });
    assert_eq!(count(&el, "tbody tr"), 3);
    assert_eq!(count(&el, "td.sens"), 0, "no strip before a measurement");
    sens.set(Some(Sensitivity {
        base: 0.98,
        layers: vec![
            ("fc1".into(), Some(0.97), String::new()),
            ("fc2".into(), None, "cannot thin the logits".into()),
        ],
        cancelled: false,
    }));
    tick().await;
    assert_eq!(count(&el, "thead th"), 6, "a Sensitivity column");
    assert_eq!(count(&el, "td.sens"), 2);
    assert_eq!(count(&el, "td.sens .heat"), 1);
    let fc1 = el
        .query_selector("td.sens[data-layer=fc1]")
        .unwrap()
        .unwrap();
    assert_eq!(fc1.text_content().unwrap(), "−1.00 pp");
    let style = fc1
        .query_selector(".heat")
        .unwrap()
        .unwrap()
        .get_attribute("style")
        .unwrap();
    assert!(style.contains("hsl(112"), "{style}");
    assert!(el.text_content().unwrap().contains("n/a"));
}

#[wasm_bindgen_test]
fn histograms_draw_before_and_after_bars() {
    let before = histogram([-1.0f32, -0.5, 0.0, 0.5, 1.0].into_iter(), 1.0, false);
    let after = histogram([-1.0f32, 0.0, 0.0, 1.0].into_iter(), 1.0, true);
    let hs = vec![
        Histogram {
            layer: "fc1".into(),
            limit: 1.0,
            before: before.clone(),
            after,
            zeros: 0.5,
        },
        Histogram {
            layer: "fc2".into(),
            limit: 1.0,
            before,
            after: vec![],
            zeros: 0.0,
        },
    ];
    assert_eq!(hs[0].before.len(), HISTOGRAM_BINS);
    let el = mount(move || view! { <WeightHistograms histograms=hs /> });
    assert_eq!(count(&el, "figure.histogram"), 2);
    assert_eq!(count(&el, "figure[data-layer=fc1] rect.before"), 5);
    assert_eq!(
        count(&el, "figure[data-layer=fc1] rect.after"),
        2,
        "zeros left out"
    );
    assert_eq!(count(&el, "figure[data-layer=fc2] rect.after"), 0);
    let text = el.text_content().unwrap();
    assert!(text.contains("50.0 % zero after"), "{text}");
    assert!(text.contains("rewritten"), "{text}");
}

#[wasm_bindgen_test]
fn sweep_chart_plots_points_and_the_current_model() {
    let p = |prune, ratio, accuracy| SweepPoint {
        prune,
        ratio,
        accuracy,
    };
    let sweeps = RwSignal::new(vec![Sweep {
        label: "prune".into(),
        total: 3,
        points: vec![p(0, 1.0, 0.98), p(50, 2.0, 0.975), p(90, 7.5, 0.92)],
    }]);
    let current = RwSignal::new(Some(p(90, 7.5, 0.92)));
    let phase = RwSignal::new(Phase::Idle);
    let el = mount(move || {
        view! { <SweepPanel sweeps=sweeps current=current phase=phase on_sweep=Callback::new(|_| {}) /> }
    });
    assert_eq!(count(&el, ".sweep-chart circle.series-0"), 3);
    assert!(el.query_selector("#sweep-current").unwrap().is_some());
    let status = el
        .query_selector("#sweep-status")
        .unwrap()
        .unwrap()
        .text_content()
        .unwrap();
    assert!(status.starts_with("Done"), "{status}");
}

#[wasm_bindgen_test]
async fn error_banner_shows_and_dismisses() {
    let notice = RwSignal::new(Some(Notice::new("decode", "bad magic")));
    let el = mount(move || view! { <ErrorBanner notice=notice /> });
    let alert = el
        .query_selector("[role=alert]")
        .unwrap()
        .expect("a banner");
    let text = alert.text_content().unwrap();
    assert!(
        text.contains("could not be read as an ONNX model"),
        "{text}"
    );
    assert!(
        text.contains("bad magic") && text.contains("decode"),
        "{text}"
    );
    let button: web_sys::HtmlElement = alert
        .query_selector("button")
        .unwrap()
        .unwrap()
        .unchecked_into();
    button.click();
    tick().await;
    assert!(el.query_selector("[role=alert]").unwrap().is_none());
    assert_eq!(notice.get_untracked(), None);
}

#[wasm_bindgen_test]
async fn prediction_says_where_it_was_computed_and_keeps_exact_probabilities() {
    let probs = RwSignal::new(None::<Vec<f32>>);
    let device = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let el = mount(move || view! { <Prediction probs=probs device=device busy=busy /> });
    let pred = el.query_selector(".prediction").unwrap().unwrap();
    assert!(el.query_selector("#classified-on").unwrap().is_none());
    let mut p = vec![0.01f32; 10];
    p[7] = 0.91;
    busy.set(true);
    tick().await;
    assert_eq!(pred.get_attribute("aria-busy").as_deref(), Some("true"));
    probs.set(Some(p.clone()));
    device.set(Some("webgpu".into()));
    busy.set(false);
    tick().await;
    assert_eq!(pred.get_attribute("aria-busy").as_deref(), Some("false"));
    let on = el.query_selector("#classified-on").unwrap().expect("where");
    assert_eq!(on.get_attribute("data-device").as_deref(), Some("webgpu"));
    assert_eq!(on.text_content().unwrap(), "Computed on WebGPU");
    let shown: Vec<f32> = (0..10)
        .map(|i| {
            el.query_selector(&format!("li:nth-child({})", i + 1))
                .unwrap()
                .unwrap()
                .get_attribute("data-p")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(shown, p);
    device.set(Some("cpu".into()));
    tick().await;
    let on = el.query_selector("#classified-on").unwrap().expect("where");
    assert_eq!(on.text_content().unwrap(), "Computed on the CPU");
    // An empty pad: no answer, so nothing to say where.
    probs.set(None);
    tick().await;
    assert!(el.query_selector("#classified-on").unwrap().is_none());
}

#[wasm_bindgen_test]
async fn a_lottery_job_cancelled_by_a_restart_says_so() {
    let training = RwSignal::new(Training {
        running: true,
        lottery: true,
        epochs: 5,
        ..Training::default()
    });
    let cancels = RwSignal::new(0u32);
    let el = mount(move || {
        view! {
            <FineTunePanel
                training=training
                phase=Phase::Idle
                on_start=Callback::new(|_| {})
                on_cancel=Callback::new(move |()| cancels.update(|n| *n += 1))
                on_lottery=Callback::new(|_| {})
                knobs=RwSignal::new(TrainKnobs::default())
            />
        }
    });
    let cancel: web_sys::HtmlElement = el
        .query_selector("#tune-cancel")
        .unwrap()
        .expect("a Cancel button while the job runs")
        .unchecked_into();
    cancel.click();
    assert_eq!(cancels.get_untracked(), 1);
    training.update(|t| {
        t.running = false;
        t.result = Some(TrainResult {
            epochs_done: 1,
            steps: 120,
            cancelled: true,
            millis: 1500.0,
            millis_per_epoch: None,
            before: None,
            after: None,
            restarted: true,
            restored: false,
        });
    });
    tick().await;
    assert!(el.query_selector("#tune-cancel").unwrap().is_none());
    let result = el
        .query_selector("#tune-result")
        .unwrap()
        .expect("the outcome")
        .text_content()
        .unwrap();
    assert!(
        result.starts_with("Cancelled after 120 steps (1 full epoch)"),
        "{result}"
    );
    assert!(result.contains("worker was restarted"), "{result}");
    assert!(result.contains("back as loaded"), "{result}");
    assert!(!result.contains("test accuracy"), "{result}");
    // Weights trained before the job were handed to the new worker.
    training.update(|t| {
        if let Some(r) = &mut t.result {
            r.restored = true;
        }
    });
    tick().await;
    let result = el
        .query_selector("#tune-result")
        .unwrap()
        .expect("the outcome")
        .text_content()
        .unwrap();
    assert!(result.contains("back as it was before the job"), "{result}");
}
