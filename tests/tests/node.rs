//! Run in Node by wasm-bindgen-test-runner.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
fn forward_and_training_step_match_native_in_node() {
    let got = lithe_web_tests::all().expect("cases run");
    lithe_web_tests::compare(&got, &lithe_web_tests::native()).unwrap();
}

#[wasm_bindgen_test]
fn hostile_dataset_gives_an_error_not_a_panic() {
    assert!(lithe::data::Dataset::decode(&[0x1f, 0x8b, 1, 2, 3]).is_err());
    assert!(lithe::data::Dataset::decode(b"LMN1\xff\xff\xff\xff\x1c\x00\x1c\x00\x0a").is_err());
}

#[wasm_bindgen_test]
fn one_training_epoch_in_node_learns_and_reports_timings() {
    let f = lithe_web_tests::figures("node", &js_sys::Date::now).expect("figures");
    wasm_bindgen_test::console_log!("FIGURES {}", serde_json::to_string(&f).unwrap_or_default());
    assert!(
        f.accuracy >= 0.85,
        "accuracy after one epoch on 6k: {}",
        f.accuracy
    );
}
