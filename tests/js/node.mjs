// The npm package from Node: `cargo xtask npm --check` (or the `js` stage of `cargo xtask test`)
// builds pkg/ and runs this script. It imports the package the way a user would, loads a zoo
// model, runs and evaluates it, compresses it with a recipe that trains (progress events and
// cancellation included), exports .onnx and .lithe and loads both back, and checks that bad
// input gives LitheErrors with codes instead of killing the instance.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { strict as assert } from "node:assert";
import { initSync, Lithe } from "../../pkg/lithe.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const read = (p) => new Uint8Array(readFileSync(root + p));
initSync({ module: read("pkg/lithe_bg.wasm") });

const t0 = performance.now();
const ms = () => `${(performance.now() - t0).toFixed(0)} ms`;
const modelBytes = read("www/models/lenet-300-100.onnx");
const test = read("www/data/mnist-test.lmn.gz");
const train = read("www/data/mnist-train-6k.lmn.gz");

// Load and describe.
const model = await Lithe.load(modelBytes);
const info = model.info();
assert.equal(info.input_shape.reduce((a, b) => a * b, 1), 784);
const shape = [2, ...info.input_shape.slice(1)];
assert.ok(info.params > 260000, `params ${info.params}`);
console.log(`loaded lenet-300-100: ${info.params} params, ${info.macs} MACs (${ms()})`);

// Run: a batch of two images, and the shape check.
const x = new Float32Array(2 * 784).fill(0.5);
const out = await model.run(x, shape);
assert.deepEqual(out.shape, [2, 10]);
assert.ok(out.data instanceof Float32Array && out.data.length === 20);
const probs = model.classify(new Uint8Array(784));
assert.equal(probs.length, 10);
assert.ok(Math.abs(probs.reduce((a, b) => a + b, 0) - 1) < 1e-4);

// Evaluate on the 10k test set the playground ships.
const before = await model.evaluate(test);
assert.ok(before.accuracy > 0.97, `accuracy ${before.accuracy}`);
console.log(`accuracy ${(100 * before.accuracy).toFixed(2)} % on ${before.count} images (${ms()})`);

// Compress: prune 90 %, fine-tune one epoch on the 6k subset, 5-bit k-means; progress events.
let events = 0;
const recipe = {
  passes: [
    { pass: "prune", by: "global", ratio: 0.9 },
    { pass: "fine_tune", epochs: 1, batch_size: 64, lr: 0.0005, seed: 1 },
    { pass: "share", bits: 5 },
  ],
};
const report = await model.compress(recipe, {
  train,
  eval: test,
  onProgress: (p) => {
    events += 1;
    assert.ok(p.step >= 1 && p.steps >= p.step);
  },
});
assert.ok(events > 0, "no progress events");
assert.equal(report.reports.length, 3);
const last = report.reports[2];
assert.ok(last.accuracy_after > 0.95, JSON.stringify(last));
assert.ok(report.lithe_bytes < modelBytes.length / 10, `lithe ${report.lithe_bytes} bytes`);
console.log(
  `compressed: ${(100 * last.accuracy_after).toFixed(2)} %, .lithe ${report.lithe_bytes} bytes ` +
    `(${(modelBytes.length / report.lithe_bytes).toFixed(1)}× smaller), ${events} progress events (${ms()})`,
);

// Export both ways and load back: same outputs as the compressed model.
const y = (await model.run(x, shape)).data;
for (const bytes of [model.exportOnnx(), model.exportLithe()]) {
  const back = await Lithe.load(bytes);
  const z = (await back.run(x, shape)).data;
  assert.deepEqual(Array.from(z), Array.from(y));
}
assert.equal(model.exportLithe().length, report.lithe_bytes);

// Cancelling from onProgress rejects with code "cancelled" and keeps the model.
model.reset();
await assert.rejects(
  model.compress({ passes: [{ pass: "fine_tune", epochs: 1, seed: 1 }] }, { train, onProgress: () => false }),
  (e) => e.name === "LitheError" && e.code === "cancelled",
);
assert.deepEqual(Array.from((await model.run(x, shape)).data), Array.from((await (await Lithe.load(modelBytes)).run(x, shape)).data));

// Bad input: clear errors with codes; the instance keeps working afterwards.
const expectError = async (p, code) =>
  assert.rejects(p, (e) => {
    assert.equal(e.name, "LitheError", String(e));
    assert.equal(e.code, code, e.message);
    return true;
  });
await expectError(Lithe.load(new Uint8Array([1, 2, 3, 4, 5])), "decode");
await expectError(Lithe.load(modelBytes.slice(0, 5000)), "decode");
await expectError(model.run(new Float32Array(10), shape), "input");
await expectError(model.run(new Float32Array(10), [10]), "input");
await expectError(model.compress("{not json", {}), "decode");
await expectError(model.compress({ passes: [{ pass: "fine_tune", epochs: 1 }] }), "invalid");
await expectError(model.evaluate(new Uint8Array([0, 1, 2])), "decode");
assert.throws(() => model.classify(new Uint8Array(3)), (e) => e.code === "input");
assert.equal((await model.run(x, shape)).shape[1], 10);

// Device choice: Node has no WebGPU, so "auto" runs on the CPU and says why; asking for WebGPU
// is a clear error; an unknown device is refused.
const device = model.device();
assert.equal(device.kind, "cpu", JSON.stringify(device));
assert.match(device.reason, /navigator\.gpu missing|no WebGPU backend/, device.reason);
console.log(`device: ${JSON.stringify(device)}`);
assert.equal((await Lithe.load(modelBytes, { device: "cpu" })).device().kind, "cpu");
await expectError(Lithe.load(modelBytes, { device: "webgpu" }), "gpu");
await expectError(Lithe.load(modelBytes, { device: "tpu" }), "invalid");
console.log(`node: JS API checks passed (${ms()}); Lithe ${Lithe.version}`);
