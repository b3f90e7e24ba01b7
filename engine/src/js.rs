//! The JavaScript API (feature `js`): wasm-bindgen bindings shaped like onnxruntime-web's, for
//! web apps that embed Lithe without Leptos. docs/JS_API.md describes it with examples;
//! `cargo xtask npm` builds the npm package (`pkg/`).
//!
//! ```js
//! import init, { Lithe } from "lithe";
//! await init();
//! const model = await Lithe.load(bytes);          // .onnx or .lithe; WebGPU when there is one
//! model.device();                                 // { kind: "webgpu", adapter, fallback } or
//!                                                 // { kind: "cpu", reason }
//! const { data, shape } = await model.run(input, [1, 1, 28, 28]);
//! const report = await model.compress(recipe, { train, onProgress });
//! const onnx = model.exportOnnx();
//! ```
//!
//! Every method catches the engine's errors and rejects (or throws) a JS `Error` whose `name` is
//! `"LitheError"`, whose `code` is [`Error::code`] and whose `message` is the readable text. A
//! panic is a bug; none crosses into the page from bad input (the engine returns errors).
//! The work itself is synchronous inside the call (run it in a Web Worker for long jobs), except
//! WebGPU (feature `gpu`): `load` opens the device and `run` reads the result back without
//! blocking the page's thread.

use crate::compress::{Compressed, Recipe};
use crate::data::Dataset;
use crate::format::lithe as container;
use crate::session::Session;
use crate::{Error, Result};
use js_sys::{Array, Float32Array, Function, Object, Promise, Reflect, Uint8Array};
use serde::Serialize;
use std::ops::ControlFlow;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** What `Model.run` resolves to: the first output, row-major. */
export interface RunOutput { data: Float32Array; shape: number[]; }
/** Options of `Lithe.load`. */
export interface LoadOptions {
  /** `"auto"` (default): WebGPU when a hardware adapter exists, else the CPU (a software
   *  fallback adapter such as SwiftShader is slower than the CPU kernels); `"webgpu"`: WebGPU
   *  (software adapters included) or reject (`code` `gpu`); `"cpu"`: the CPU. */
  device?: "auto" | "webgpu" | "cpu";
}
/** What `Model.device()` returns: where `run` computes, and why. */
export interface DeviceInfo {
  kind: "webgpu" | "cpu";
  /** WebGPU: the adapter's name (SwiftShader, a GPU…). */
  adapter?: string;
  /** WebGPU: whether the adapter is a software fallback. */
  fallback?: boolean;
  /** CPU: why not WebGPU (asked for the CPU, no `navigator.gpu`, no adapter…). */
  reason?: string;
}
/** Options of `Model.compress`. */
export interface CompressOptions {
  /** Training images for recipes that fine-tune, distill or train (a `.lmn`/`.lmn.gz` dataset). */
  train?: Uint8Array;
  /** Images to measure accuracy before and after each pass (a `.lmn`/`.lmn.gz` dataset). */
  eval?: Uint8Array;
  /** Called with `{ epoch, epochs, step, steps, loss, accuracy, lr }` during training passes;
   *  return `false` to cancel. */
  onProgress?: (p: any) => boolean | void;
}
"#;

/// A JS `Error` named `LitheError` with the engine error's `code`.
fn js_error(e: &Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name("LitheError");
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

fn invalid(msg: impl Into<String>) -> JsValue {
    js_error(&Error::Invalid(msg.into()))
}

fn to_js<T: Serialize>(v: &T) -> std::result::Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| invalid(format!("cannot convert the result to JS: {e}")))
}

/// Where a model runs, as `Model.device()` reports it.
#[derive(Clone, Debug, Serialize)]
struct DeviceInfo {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl DeviceInfo {
    fn cpu(reason: impl Into<String>) -> Self {
        DeviceInfo {
            kind: "cpu",
            adapter: None,
            fallback: None,
            reason: Some(reason.into()),
        }
    }
}

/// `options.device` of `Lithe.load`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Auto,
    WebGpu,
    Cpu,
}

fn want_device(options: &JsValue) -> std::result::Result<Want, JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(Want::Auto);
    }
    if !options.is_object() {
        return Err(invalid("the options of Lithe.load must be an object"));
    }
    let d = Reflect::get(options, &"device".into()).unwrap_or(JsValue::UNDEFINED);
    if d.is_undefined() {
        return Ok(Want::Auto);
    }
    match d.as_string().as_deref() {
        Some("auto") => Ok(Want::Auto),
        Some("webgpu") => Ok(Want::WebGpu),
        Some("cpu") => Ok(Want::Cpu),
        _ => Err(invalid(
            "options.device must be \"auto\", \"webgpu\" or \"cpu\"",
        )),
    }
}

/// The page's one GPU context, opened on first use (a failure is not kept: a later load tries
/// again).
#[cfg(feature = "gpu")]
async fn gpu_context() -> Result<std::sync::Arc<crate::gpu::GpuContext>> {
    thread_local! {
        static CTX: std::cell::RefCell<Option<std::sync::Arc<crate::gpu::GpuContext>>> =
            const { std::cell::RefCell::new(None) };
    }
    if let Some(c) = CTX.with(|c| c.borrow().clone()) {
        return Ok(c);
    }
    #[allow(clippy::arc_with_non_send_sync)] // one context per wasm instance
    let c = std::sync::Arc::new(crate::gpu::GpuContext::new().await?);
    CTX.with(|slot| *slot.borrow_mut() = Some(c.clone()));
    Ok(c)
}

/// The first output as `{ data, shape }`.
fn run_output(outs: Vec<crate::tensor::Tensor>) -> std::result::Result<JsValue, JsValue> {
    let y = outs
        .into_iter()
        .next()
        .ok_or_else(|| js_error(&Error::Graph("the model has no output".into())))?;
    let o = Object::new();
    let data = Float32Array::from(crate::tensor::to_contiguous(&y).as_ref());
    let dims: Array = y.shape().iter().map(|&d| JsValue::from(d as u32)).collect();
    Reflect::set(&o, &"data".into(), &data)?;
    Reflect::set(&o, &"shape".into(), &dims)?;
    Ok(o.into())
}

/// The input of `Model.run` as a tensor, its length checked against its shape.
fn checked_input(
    input: &[f32],
    shape: &[u32],
) -> std::result::Result<crate::tensor::Tensor, JsValue> {
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let n = crate::tensor::checked_numel(&shape).map_err(|e| js_error(&e))?;
    if n != input.len() {
        return Err(js_error(&Error::Input {
            name: "input".into(),
            detail: format!("shape {shape:?} needs {n} values, got {}", input.len()),
        }));
    }
    crate::tensor::from_vec(&shape, input.to_vec()).map_err(|e| js_error(&e))
}

/// A promise settled with `f`'s outcome.
fn promise(f: impl FnOnce() -> std::result::Result<JsValue, JsValue>) -> Promise {
    match f() {
        Ok(v) => Promise::resolve(&v),
        Err(e) => Promise::reject(&e),
    }
}

/// The entry point: `Lithe.load(bytes)` and the version.
#[wasm_bindgen]
pub struct Lithe;

#[wasm_bindgen]
impl Lithe {
    /// Loads a model from the bytes of an `.onnx` file or a `.lithe` container. Resolves to a
    /// [`Model`]; rejects with a `LitheError` (`code` `decode`, `unsupported_ops`, `limit`, …)
    /// for a file Lithe cannot use. `options.device` picks where `run` computes: `"auto"`
    /// (default: WebGPU when a hardware adapter exists, else the CPU — a software fallback
    /// adapter such as SwiftShader is slower than the CPU kernels; `model.device()` says which
    /// and why), `"webgpu"` (rejects with `code` `gpu` when there is none) or `"cpu"`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Model>")]
    pub fn load(
        bytes: &[u8],
        #[wasm_bindgen(unchecked_param_type = "LoadOptions | undefined")] options: JsValue,
    ) -> Promise {
        let want = match want_device(&options) {
            Ok(w) => w,
            Err(e) => return Promise::reject(&e),
        };
        let model = match Model::from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => return Promise::reject(&e),
        };
        if want == Want::Cpu {
            return Promise::resolve(&JsValue::from(model));
        }
        #[cfg(feature = "gpu")]
        {
            wasm_bindgen_futures::future_to_promise(async move {
                let mut model = model;
                match gpu_context().await {
                    // A software adapter (SwiftShader, lavapipe) emulates the GPU on the CPU
                    // at well under 1 GFLOP/s, far below the CPU kernels: "auto" stays on
                    // the CPU and says so; `device: "webgpu"` still uses it.
                    Ok(ctx) if want == Want::Auto && ctx.adapter().is_fallback => {
                        model.device = DeviceInfo::cpu(format!(
                            "only a software WebGPU adapter ({}) is available, slower than the \
                             CPU kernels; pass device: \"webgpu\" to use it anyway",
                            ctx.adapter().name
                        ));
                    }
                    Ok(ctx) => model.use_gpu(ctx).map_err(|e| js_error(&e))?,
                    Err(e) if want == Want::Auto => {
                        model.device = DeviceInfo::cpu(match e {
                            Error::Gpu(m) => m,
                            other => other.to_string(),
                        });
                    }
                    Err(e) => return Err(js_error(&e)),
                }
                Ok(model.into())
            })
        }
        #[cfg(not(feature = "gpu"))]
        {
            if want == Want::WebGpu {
                return Promise::reject(&js_error(&Error::Gpu(NO_GPU_BUILD.into())));
            }
            Promise::resolve(&JsValue::from(model))
        }
    }

    /// The package version.
    #[wasm_bindgen(getter)]
    pub fn version() -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }
}

/// A loaded model. Compressing replaces it with the compressed model (the original is kept for
/// `reset`).
#[wasm_bindgen]
pub struct Model {
    session: Session,
    original: Session,
    compressed: Option<Compressed>,
    device: DeviceInfo,
    /// The GPU runner of the current session, when WebGPU was chosen.
    #[cfg(feature = "gpu")]
    gpu: Option<std::rc::Rc<crate::gpu::GpuSession>>,
}

#[cfg(not(feature = "gpu"))]
const NO_GPU_BUILD: &str = "this build of Lithe has no WebGPU backend (feature `gpu`)";

impl Model {
    fn from_bytes(bytes: &[u8]) -> std::result::Result<Model, JsValue> {
        let session = Session::from_bytes(bytes).map_err(|e| js_error(&e))?;
        Ok(Model {
            original: session.clone(),
            session,
            compressed: None,
            #[cfg(feature = "gpu")]
            device: DeviceInfo::cpu("asked for the CPU"),
            #[cfg(not(feature = "gpu"))]
            device: DeviceInfo::cpu(NO_GPU_BUILD),
            #[cfg(feature = "gpu")]
            gpu: None,
        })
    }

    /// Runs on `ctx` from now on (the current session's weights are uploaded).
    #[cfg(feature = "gpu")]
    fn use_gpu(&mut self, ctx: std::sync::Arc<crate::gpu::GpuContext>) -> Result<()> {
        let a = ctx.adapter().clone();
        self.gpu = Some(std::rc::Rc::new(crate::gpu::GpuSession::new(
            ctx,
            self.session.graph(),
        )?));
        self.device = DeviceInfo {
            kind: "webgpu",
            adapter: Some(a.name),
            fallback: Some(a.is_fallback),
            reason: None,
        };
        Ok(())
    }

    /// After the session changed (compress, reset): the GPU runner follows it; if the new
    /// weights cannot be uploaded, the model runs on the CPU and `device()` says why.
    fn session_changed(&mut self) {
        #[cfg(feature = "gpu")]
        if let Some(g) = self.gpu.take() {
            let ctx = g.context().clone();
            drop(g);
            if let Err(e) = self.use_gpu(ctx) {
                self.gpu = None;
                self.device = DeviceInfo::cpu(format!("the GPU could not take the model: {e}"));
            }
        }
    }
}

fn dataset(bytes: &JsValue, what: &str) -> std::result::Result<Option<Dataset>, JsValue> {
    if bytes.is_undefined() || bytes.is_null() {
        return Ok(None);
    }
    let arr = bytes
        .dyn_ref::<Uint8Array>()
        .ok_or_else(|| invalid(format!("`{what}` must be a Uint8Array holding a dataset")))?;
    Dataset::decode(&arr.to_vec())
        .map(Some)
        .map_err(|e| js_error(&e))
}

#[wasm_bindgen]
impl Model {
    /// Inputs, outputs, layers (op, shape, params, bytes, sparsity), parameter count, bytes and
    /// MACs.
    pub fn info(&self) -> std::result::Result<JsValue, JsValue> {
        to_js(&self.session.info().map_err(|e| js_error(&e))?)
    }

    /// Runs the model on `input` (row-major, `shape` its dimensions) and resolves to the first
    /// output `{ data, shape }`. A wrong length or shape rejects with `code` `input` or
    /// `shape`.
    #[wasm_bindgen(unchecked_return_type = "Promise<RunOutput>")]
    pub fn run(&self, input: &[f32], shape: Vec<u32>) -> Promise {
        #[cfg(feature = "gpu")]
        if let Some(gpu) = self.gpu.clone() {
            let x = match checked_input(input, &shape) {
                Ok(x) => x,
                Err(e) => return Promise::reject(&e),
            };
            return wasm_bindgen_futures::future_to_promise(async move {
                let name = gpu
                    .graph()
                    .inputs
                    .first()
                    .map(|v| v.name.clone())
                    .ok_or_else(|| js_error(&Error::Graph("the graph has no input".into())))?;
                let r = gpu.run(&[(&name, &x)]).await.map_err(|e| js_error(&e))?;
                run_output(r.outputs)
            });
        }
        promise(|| {
            let x = checked_input(input, &shape)?;
            run_output(self.session.run(&x).map_err(|e| js_error(&e))?)
        })
    }

    /// Where `run` computes: `{ kind: "webgpu", adapter, fallback }` or
    /// `{ kind: "cpu", reason }`.
    #[wasm_bindgen(unchecked_return_type = "DeviceInfo")]
    pub fn device(&self) -> std::result::Result<JsValue, JsValue> {
        to_js(&self.device)
    }

    /// Class probabilities for one grey image of raw 0..255 pixels (the model's preprocessing
    /// is applied).
    pub fn classify(&self, pixels: &[u8]) -> std::result::Result<Vec<f32>, JsValue> {
        self.session.classify(pixels).map_err(|e| js_error(&e))
    }

    /// Which kernel runs each node, as `[[node, kernel], …]`.
    pub fn kernels(&self) -> std::result::Result<JsValue, JsValue> {
        to_js(&self.session.kernels().map_err(|e| js_error(&e))?)
    }

    /// Accuracy, loss, per-class accuracy and confusion matrix on a dataset (`.lmn` or
    /// `.lmn.gz` bytes, e.g. the MNIST test set the playground ships).
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn evaluate(&self, data: &[u8]) -> Promise {
        promise(|| {
            let d = Dataset::decode(data).map_err(|e| js_error(&e))?;
            to_js(&self.session.evaluate(&d).map_err(|e| js_error(&e))?)
        })
    }

    /// Applies a recipe (a JSON string or an object, as in `recipes/*.json`) and resolves to
    /// `{ reports, finetune, lottery, bytes, sections }`: one report per pass (bytes, MACs,
    /// sparsity, bits, accuracy before and after when `eval` is given) and the `.lithe` size.
    /// The model becomes the compressed one. Recipes that train need `options.train`; a
    /// missing set rejects with `code` `invalid`. `onProgress` returning `false` cancels
    /// (`code` `cancelled`), leaving the model as it was.
    #[wasm_bindgen(unchecked_return_type = "Promise<any>")]
    pub fn compress(
        &mut self,
        recipe: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CompressOptions | undefined")] options: JsValue,
    ) -> Promise {
        promise(|| {
            let text = match recipe.as_string() {
                Some(s) => s,
                None => js_sys::JSON::stringify(&recipe)
                    .map_err(|_| invalid("the recipe is neither JSON text nor an object"))?
                    .as_string()
                    .unwrap_or_default(),
            };
            let recipe = Recipe::from_json(&text).map_err(|e| js_error(&e))?;
            let get = |k: &str| -> JsValue {
                if options.is_object() {
                    Reflect::get(&options, &k.into()).unwrap_or(JsValue::UNDEFINED)
                } else {
                    JsValue::UNDEFINED
                }
            };
            let train = dataset(&get("train"), "train")?;
            let eval = dataset(&get("eval"), "eval")?;
            if recipe.needs_data() && train.is_none() {
                return Err(invalid(
                    "this recipe trains: pass the training images as options.train",
                ));
            }
            let cb = get("onProgress").dyn_into::<Function>().ok();
            let mut on_progress = |p: &crate::train::Progress| {
                let Some(f) = &cb else {
                    return ControlFlow::Continue(());
                };
                let arg = to_js(p).unwrap_or(JsValue::UNDEFINED);
                match f.call1(&JsValue::NULL, &arg) {
                    Ok(v) if v == JsValue::FALSE => ControlFlow::Break(()),
                    // A callback that throws cancels the job.
                    Err(_) => ControlFlow::Break(()),
                    Ok(_) => ControlFlow::Continue(()),
                }
            };
            let c = recipe
                .apply(
                    self.session.graph(),
                    train.as_ref(),
                    eval.as_ref(),
                    &mut on_progress,
                )
                .map_err(|e| js_error(&e))?;
            let (bytes, sections) =
                container::encode_compressed(&c, crate::compress::kmeans::Coding::Huffman)
                    .map_err(|e| js_error(&e))?;
            let session = Session::from_graph(c.graph.clone()).map_err(|e| js_error(&e))?;
            #[derive(Serialize)]
            struct Summary<'a> {
                reports: &'a [crate::compress::PassReport],
                finetune: &'a [crate::train::TrainSummary],
                lottery: &'a [crate::compress::lottery::Round],
                lithe_bytes: usize,
                sections: container::ContainerBytes,
            }
            let out = to_js(&Summary {
                reports: &c.reports,
                finetune: &c.finetune,
                lottery: &c.lottery,
                lithe_bytes: bytes.len(),
                sections,
            })?;
            self.session = session;
            self.compressed = Some(c);
            self.session_changed();
            Ok(out)
        })
    }

    /// Goes back to the model as it was loaded.
    pub fn reset(&mut self) {
        self.session = self.original.clone();
        self.compressed = None;
        self.session_changed();
    }

    /// The current model as ONNX bytes: after a recipe that ends with `int8`, a QDQ graph of
    /// the integer model; otherwise compressed layers decoded to dense f32.
    #[wasm_bindgen(js_name = exportOnnx)]
    pub fn export_onnx(&self) -> std::result::Result<Vec<u8>, JsValue> {
        match &self.compressed {
            Some(c) => c.export_onnx(),
            None => self.session.export_onnx(),
        }
        .map_err(|e| js_error(&e))
    }

    /// The current model as a `.lithe` container: after `compress`, its layers as encoded
    /// (codebooks and Huffman streams, packed codes, sparse layers); before, the plain graph.
    #[wasm_bindgen(js_name = exportLithe)]
    pub fn export_lithe(&self) -> std::result::Result<Vec<u8>, JsValue> {
        let r: Result<Vec<u8>> = match &self.compressed {
            Some(c) => container::encode_compressed(c, crate::compress::kmeans::Coding::Huffman)
                .map(|(b, _)| b),
            None => container::encode_layers(
                self.session.graph(),
                &container::Layers::default(),
                crate::compress::kmeans::Coding::Huffman,
            )
            .map(|(b, _)| b),
        };
        r.map_err(|e| js_error(&e))
    }
}
