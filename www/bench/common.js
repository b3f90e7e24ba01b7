// Shared by the two benchmark pages: loads the npm package (pkg/) with the wasm build named by
// ?build= (simd128 or relaxed-simd; default: the one WebAssembly.validate picks) and wraps the
// engine's timing exports (engine/src/bench.rs).
import * as entry from "../../pkg/lithe.js";

/** The glue of the loaded build (each build has its own); set by `load()`. */
export let lithe = entry;

export async function load() {
  const q = new URLSearchParams(location.search);
  const build = q.get("build") || entry.wasmBuild;
  if (build === "relaxed-simd" && !entry.relaxedSimd) {
    throw new Error("this browser does not validate relaxed SIMD");
  }
  const relaxed = build === "relaxed-simd";
  const file = relaxed ? "lithe_relaxed_bg.wasm" : "lithe_bg.wasm";
  lithe = relaxed
    ? await import("../../pkg/lithe_relaxed_core.js")
    : await import("../../pkg/lithe_core.js");
  await lithe.default({ module_or_path: new URL(`../../pkg/${file}`, import.meta.url) });
  const info = JSON.parse(lithe.benchBuild());
  info.file = file;
  info.validate_relaxed = entry.relaxedSimd;
  info.picked_by_validate = entry.wasmBuild;
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
