// Lithe and onnxruntime-web side by side (cargo xtask bench-ort): the same ONNX bytes, the same
// input (Lithe's seeded benchmark input), one thread each, in the same headless Chromium.
// onnxruntime-web comes from .tools/node_modules (installed by the command): wasm execution
// provider, numThreads = 1, no proxy worker.
import { lithe, load, modelBytes, ready } from "./common.js";
import * as ort from "../../.tools/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
ort.env.wasm.wasmPaths = new URL("../../.tools/node_modules/onnxruntime-web/dist/", import.meta.url).href;

const MIN_SAMPLE_MS = 25;
const SAMPLES = 5;

// The same scheme as engine/src/bench.rs: warm-up, grow the calls per sample until a sample
// lasts MIN_SAMPLE_MS, then the median of SAMPLES samples.
async function timeMs(f) {
  await f();
  let reps = 1;
  for (;;) {
    const t = performance.now();
    for (let i = 0; i < reps; i++) await f();
    const dt = performance.now() - t;
    if (dt >= MIN_SAMPLE_MS || reps >= 1 << 20) break;
    reps = Math.ceil(reps * (dt <= 0 ? 8 : Math.min(8, Math.max(1.5, (MIN_SAMPLE_MS * 1.2) / dt))));
  }
  const samples = [];
  for (let s = 0; s < SAMPLES; s++) {
    const t = performance.now();
    for (let i = 0; i < reps; i++) await f();
    samples.push((performance.now() - t) / reps);
  }
  samples.sort((a, b) => a - b);
  return { ms: samples[SAMPLES >> 1], reps };
}

async function measure(url, batch, prune) {
  const bytes = await modelBytes(url, prune);
  const input = JSON.parse(lithe.benchModelInput(bytes, batch));
  const mine = JSON.parse(lithe.benchModel(bytes, batch));
  const ours = lithe.benchModelOutput(bytes, batch);
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  const feeds = {
    [session.inputNames[0]]: new ort.Tensor("float32", Float32Array.from(input.data), input.shape),
  };
  let theirs = null;
  const t = await timeMs(async () => {
    const out = await session.run(feeds);
    theirs = out[session.outputNames[0]].data;
  });
  await session.release();
  let maxAbs = 0;
  if (theirs.length !== ours.length) {
    throw new Error(`output lengths differ: lithe ${ours.length}, ort ${theirs.length}`);
  }
  for (let i = 0; i < ours.length; i++) maxAbs = Math.max(maxAbs, Math.abs(ours[i] - theirs[i]));
  return {
    lithe_ms: mine.ms,
    ort_ms: t.ms,
    lithe_over_ort: mine.ms / t.ms,
    max_abs_diff: maxAbs,
    outputs: ours.length,
    kernels: mine.kernels,
  };
}

// The two runtimes are timed one after the other, so a burst of load from elsewhere can land
// on one of them only: each model is measured ROUNDS times and the row reports the median
// of each time and the median of the per-round ratios (each taken from two timings seconds
// apart), with every round kept in the JSON.
const ROUNDS = 3;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

// V8 first runs wasm in its baseline tier and optimizes it only after it has run a while, so
// the first model measured came out up to 3× slow in earlier runs: its first pass (both
// runtimes) is run once and discarded.
let warmed = false;
async function compare(url, batch, prune) {
  if (!warmed) {
    warmed = true;
    await measure(url, batch, prune);
  }
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) rounds.push(await measure(url, batch, prune));
  const last = rounds[rounds.length - 1];
  return {
    ...last,
    lithe_ms: median(rounds.map((x) => x.lithe_ms)),
    ort_ms: median(rounds.map((x) => x.ort_ms)),
    lithe_over_ort: median(rounds.map((x) => x.lithe_over_ort)),
    max_abs_diff: Math.max(...rounds.map((x) => x.max_abs_diff)),
    rounds: rounds.map((x) => ({ lithe_ms: x.lithe_ms, ort_ms: x.ort_ms, ratio: x.lithe_over_ort })),
  };
}

ready(async () => {
  const info = await load();
  info.ort = { version: ort.env.versions?.web ?? "?", numThreads: ort.env.wasm.numThreads, proxy: ort.env.wasm.proxy };
  return { info, compare };
});
