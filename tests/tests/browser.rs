//! Run in headless Chromium by wasm-bindgen-test-runner (chromedriver).
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn forward_and_training_step_match_native_in_chromium() {
    let got = lithe_web_tests::all().expect("cases run");
    lithe_web_tests::compare(&got, &lithe_web_tests::native()).unwrap();
}

#[wasm_bindgen_test]
fn one_training_epoch_in_chromium_learns_and_reports_timings() {
    let f = lithe_web_tests::figures("chromium", &js_sys::Date::now).expect("figures");
    wasm_bindgen_test::console_log!("FIGURES {}", serde_json::to_string(&f).unwrap_or_default());
    assert!(
        f.accuracy >= 0.85,
        "accuracy after one epoch on 6k: {}",
        f.accuracy
    );
}
