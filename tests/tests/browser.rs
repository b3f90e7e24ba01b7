//! Run in headless Chromium by wasm-bindgen-test-runner (chromedriver).
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn forward_and_training_step_match_native_in_chromium() {
    let got = lithe_web_tests::all().expect("cases run");
    lithe_web_tests::compare(&got, &lithe_web_tests::native()).unwrap();
}
