// Both wasm builds of the npm package (pkg/, `cargo xtask npm`) run the kernel selftest
// (every fast kernel against its scalar twin) in Node. The relaxed-SIMD build only where this
// Node validates relaxed SIMD: Node 20 needs `--experimental-wasm-relaxed-simd`:
//   node --experimental-wasm-relaxed-simd tests/js/selftest.mjs
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { strict as assert } from "node:assert";

const root = fileURLToPath(new URL("../../", import.meta.url));
const lithe = await import("../../pkg/lithe.js");
const files = ["lithe_bg.wasm"];
if (lithe.relaxedSimd) files.push("lithe_relaxed_bg.wasm");
else console.log("relaxed SIMD: not used here (Node 20 validates it only with --experimental-wasm-relaxed-simd, and then its i8 dot-add is wrong: the entry's probe rejects it)");
for (const file of files) {
  // A fresh module instance per build: the glue keeps one wasm instance.
  // Each build has its own glue (closure tables may be numbered apart).
  const glue = file.includes("relaxed") ? "lithe_relaxed_core.js" : "lithe_core.js";
  const m = await import(`../../pkg/${glue}`);
  m.initSync({ module: new Uint8Array(readFileSync(root + "pkg/" + file)) });
  const r = JSON.parse(m.benchSelftest());
  console.log(`${file}: ${r.build}: ${r.cases} cases, worst ratio ${r.worst_ratio}, kernels ${r.kernels.join(" ")}`);
  if (file.includes("relaxed")) {
    assert.equal(r.build, "relaxed-simd");
    assert.ok(r.kernels.includes("relaxed-simd") && r.kernels.includes("int8-relaxed-simd"));
  } else {
    assert.equal(r.build, "simd128");
  }
}
