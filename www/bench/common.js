// Shared by the two benchmark pages: loads the npm package (pkg/) with the wasm build named by
// ?build= (simd128 or relaxed-simd; default: the one WebAssembly.validate picks) and wraps the
// engine's timing exports (engine/src/bench.rs).
import init, * as lithe from "../../pkg/lithe.js";

export { lithe };

export async function load() {
  const q = new URLSearchParams(location.search);
  const build = q.get("build") || lithe.wasmBuild;
  if (build === "relaxed-simd" && !lithe.relaxedSimd) {
    throw new Error("this browser does not validate relaxed SIMD");
  }
  const file = build === "relaxed-simd" ? "lithe_relaxed_bg.wasm" : "lithe_bg.wasm";
  await init({ module_or_path: new URL(`../../pkg/${file}`, import.meta.url) });
  const info = JSON.parse(lithe.benchBuild());
  info.file = file;
  info.validate_relaxed = lithe.relaxedSimd;
  info.picked_by_validate = lithe.wasmBuild;
  info.user_agent = navigator.userAgent;
  info.cross_origin_isolated = self.crossOriginIsolated;
  return info;
}

export async function modelBytes(url, prune) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  let b = new Uint8Array(await r.arrayBuffer());
  if (prune != null) b = lithe.benchPrune(b, prune);
  return b;
}

export function ready(f) {
  const status = document.getElementById("status");
  f().then((bench) => {
    window.bench = bench;
    window.benchReady = true;
    status.textContent = `ready: ${bench.info.build}`;
  }, (e) => {
    window.benchError = String((e && e.stack) || e);
    status.textContent = window.benchError;
  });
}
