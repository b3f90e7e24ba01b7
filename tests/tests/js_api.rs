//! The JS API (`lithe::js`, feature `js`) in headless Chromium, called the way JS calls it:
//! promises awaited, results read as JS objects, errors checked for `name` and `code`.
//! The Node side is `tests/js/node.mjs` (run by `cargo xtask npm --check`).
#![cfg(target_arch = "wasm32")]

use js_sys::{Float32Array, Promise, Reflect};
use lithe::js::{Lithe, Model};
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const TINY: &[u8] = include_bytes!("../../www/models/tiny-mlp.onnx");

fn get(v: &JsValue, k: &str) -> JsValue {
    Reflect::get(v, &k.into()).unwrap()
}

async fn settle(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

async fn load(bytes: &[u8]) -> Model {
    load_with(bytes, JsValue::UNDEFINED).await
}

async fn load_with(bytes: &[u8], options: JsValue) -> Model {
    let v = settle(Lithe::load(bytes, options))
        .await
        .expect("the model loads");
    // The promise resolved to the JS wrapper of a `Model`; take it back as the Rust value.
    <Model as TryFromJsValue>::try_from_js_value(v).expect("a Model")
}

fn code(e: &JsValue) -> String {
    assert_eq!(get(e, "name").as_string().as_deref(), Some("LitheError"));
    get(e, "code").as_string().unwrap_or_default()
}

#[wasm_bindgen_test]
async fn load_run_compress_export_and_errors() {
    let mut m = load(TINY).await;
    let info = m.info().unwrap();
    assert!(get(&info, "params").as_f64().unwrap() > 25_000.0);
    let x = vec![0.5f32; 2 * 784];
    let shape = || {
        let s = js_sys::Reflect::get(&info, &"input_shape".into()).unwrap();
        let mut dims: Vec<u32> = js_sys::Array::from(&s)
            .iter()
            .map(|d| d.as_f64().unwrap() as u32)
            .collect();
        dims[0] = 2;
        dims
    };
    let out = settle(m.run(&x, shape())).await.unwrap();
    let data: Float32Array = get(&out, "data").dyn_into().unwrap();
    assert_eq!(data.length(), 20);
    // A recipe as JSON text; the model becomes the compressed one.
    let r = settle(m.compress(
        r#"{"passes": [{"pass": "prune", "by": "global", "ratio": 0.8}, {"pass": "share", "bits": 4}]}"#.into(),
        JsValue::UNDEFINED,
    ))
    .await
    .unwrap();
    let lithe_bytes = get(&r, "lithe_bytes").as_f64().unwrap() as usize;
    assert!(lithe_bytes < TINY.len() / 5, "{lithe_bytes}");
    assert_eq!(m.export_lithe().unwrap().len(), lithe_bytes);
    let y = settle(m.run(&x, shape())).await.unwrap();
    let back = load(&m.export_lithe().unwrap()).await;
    let z = settle(back.run(&x, shape())).await.unwrap();
    assert_eq!(
        Float32Array::from(get(&y, "data")).to_vec(),
        Float32Array::from(get(&z, "data")).to_vec()
    );
    // Errors are LitheErrors with codes; the instance keeps working.
    let e = settle(Lithe::load(&[1, 2, 3], JsValue::UNDEFINED))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "decode");
    let e = settle(m.run(&x[..5], shape())).await.unwrap_err();
    assert_eq!(code(&e), "input");
    let e = settle(m.compress(
        r#"{"passes": [{"pass": "fine_tune", "epochs": 1}]}"#.into(),
        JsValue::UNDEFINED,
    ))
    .await
    .unwrap_err();
    assert_eq!(code(&e), "invalid");
    m.reset();
    assert!(settle(m.run(&x, shape())).await.is_ok());
}

fn device_options(kind: &str) -> JsValue {
    let o = js_sys::Object::new();
    Reflect::set(&o, &"device".into(), &kind.into()).unwrap();
    o.into()
}

#[wasm_bindgen_test]
async fn webgpu_is_chosen_in_chromium_and_matches_the_cpu() {
    // tests/webdriver.json starts Chromium with --enable-unsafe-webgpu: a SwiftShader adapter.
    // "auto" does not pick a software adapter (slower than the CPU kernels) and says so.
    let auto = load(TINY).await;
    let d = auto.device().unwrap();
    assert_eq!(get(&d, "kind").as_string().as_deref(), Some("cpu"), "{d:?}");
    assert!(
        get(&d, "reason")
            .as_string()
            .unwrap_or_default()
            .contains("software WebGPU adapter"),
        "{d:?}"
    );
    let gpu = load_with(TINY, device_options("webgpu")).await;
    let d = gpu.device().unwrap();
    assert_eq!(
        get(&d, "kind").as_string().as_deref(),
        Some("webgpu"),
        "{d:?}"
    );
    assert!(
        !get(&d, "adapter")
            .as_string()
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        get(&d, "fallback").as_bool(),
        Some(true),
        "SwiftShader is a fallback adapter"
    );
    let cpu = load_with(TINY, device_options("cpu")).await;
    let d = cpu.device().unwrap();
    assert_eq!(get(&d, "kind").as_string().as_deref(), Some("cpu"));
    assert!(get(&d, "reason").as_string().is_some());
    let x: Vec<f32> = (0..3 * 784).map(|i| (i % 255) as f32 / 255.0).collect();
    let info = gpu.info().unwrap();
    let mut shape: Vec<u32> = js_sys::Array::from(&get(&info, "input_shape"))
        .iter()
        .map(|d| d.as_f64().unwrap() as u32)
        .collect();
    shape[0] = 3;
    assert_eq!(shape.iter().product::<u32>(), 3 * 784);
    let a = settle(gpu.run(&x, shape.clone())).await.unwrap();
    let b = settle(cpu.run(&x, shape.clone())).await.unwrap();
    assert_eq!(
        js_sys::Array::from(&get(&a, "shape")).length(),
        js_sys::Array::from(&get(&b, "shape")).length()
    );
    let (ya, yb) = (
        Float32Array::from(get(&a, "data")).to_vec(),
        Float32Array::from(get(&b, "data")).to_vec(),
    );
    assert_eq!(ya.len(), 30);
    let scale = yb.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (p, q) in ya.iter().zip(&yb) {
        assert!((p - q).abs() <= 1e-4 * scale, "{p} vs {q}");
    }
    // Errors keep their codes on the GPU path.
    let e = settle(gpu.run(&x[..5], shape)).await.unwrap_err();
    assert_eq!(code(&e), "input");
    let e = settle(Lithe::load(TINY, device_options("tpu")))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "invalid");
    let webgpu = load_with(TINY, device_options("webgpu")).await;
    assert_eq!(
        get(&webgpu.device().unwrap(), "kind")
            .as_string()
            .as_deref(),
        Some("webgpu")
    );
}
