// Starts the engine's Web Worker: loads wasm-bindgen's no-modules glue (worker.js, made by
// trunk from app/src/bin/worker.rs) and instantiates worker_bg.wasm, whose `main` then runs.
// A failure to instantiate is rethrown outside the promise so that it reaches the page as the
// worker's `error` event (an unhandled rejection would not), and the page can say so.
importScripts("./worker.js");
wasm_bindgen({ module_or_path: "./worker_bg.wasm" }).catch((e) => {
  setTimeout(() => {
    throw new Error(`cannot start the engine: ${e && e.message ? e.message : e}`);
  });
});
