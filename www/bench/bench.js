// The in-browser benchmark page (cargo xtask bench-web): every figure comes from the engine's
// own timing code, so the same code runs natively (engine/tests/bench_native.rs).
import { lithe, load, modelBytes, ready } from "./common.js";

ready(async () => {
  const info = await load();
  return {
    info,
    selftest: () => JSON.parse(lithe.benchSelftest()),
    kernels: (sizes) => JSON.parse(lithe.benchKernels(new Uint32Array(sizes))),
    peak: () => JSON.parse(lithe.benchPeak()),
    model: async (url, batch, prune) =>
      JSON.parse(lithe.benchModel(await modelBytes(url, prune), batch)),
  };
});
