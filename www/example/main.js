// The plain-JS example: the npm package (pkg/, built by `cargo xtask npm`) without any framework.
import init, { Lithe } from "../../pkg/lithe.js";

const $ = (id) => document.getElementById(id);
const status = (text) => { $("status").textContent = text; };
const pad = $("pad");
const ctx = pad.getContext("2d");
let model = null;

function clear() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  $("prediction").textContent = "–";
  $("probs").replaceChildren();
}

// Drawing: white strokes on black, like MNIST.
let last = null;
const at = (e) => {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * (pad.width / r.width), (e.clientY - r.top) * (pad.height / r.height)];
};
pad.addEventListener("pointerdown", (e) => { last = at(e); pad.setPointerCapture?.(e.pointerId); });
pad.addEventListener("pointermove", (e) => {
  if (!last) return;
  const p = at(e);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 18;
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.moveTo(...last);
  ctx.lineTo(...p);
  ctx.stroke();
  last = p;
});
const end = () => { if (last) { last = null; classify(); } };
pad.addEventListener("pointerup", end);
pad.addEventListener("pointerleave", end);

// MNIST-style preprocessing: fit the ink's bounding box into 20×20, centre it by its centre of
// mass in a 28×28 image, 0..255 grey.
function pixels() {
  const src = ctx.getImageData(0, 0, pad.width, pad.height).data;
  let [x0, y0, x1, y1] = [pad.width, pad.height, -1, -1];
  for (let y = 0; y < pad.height; y++) {
    for (let x = 0; x < pad.width; x++) {
      if (src[4 * (y * pad.width + x)] > 32) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  const w = x1 - x0 + 1, h = y1 - y0 + 1, s = 20 / Math.max(w, h);
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const sc = small.getContext("2d");
  sc.fillStyle = "#000";
  sc.fillRect(0, 0, 28, 28);
  sc.imageSmoothingQuality = "high";
  sc.drawImage(pad, x0, y0, w, h, (28 - w * s) / 2, (28 - h * s) / 2, w * s, h * s);
  const g = sc.getImageData(0, 0, 28, 28).data;
  const grey = new Uint8Array(784);
  let [m, mx, my] = [0, 0, 0];
  for (let i = 0; i < 784; i++) {
    grey[i] = g[4 * i];
    m += grey[i]; mx += (i % 28) * grey[i]; my += Math.floor(i / 28) * grey[i];
  }
  const dx = Math.round(14 - mx / m), dy = Math.round(14 - my / m);
  const out = new Uint8Array(784);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const sx = x - dx, sy = y - dy;
      if (sx >= 0 && sx < 28 && sy >= 0 && sy < 28) out[y * 28 + x] = grey[sy * 28 + sx];
    }
  }
  return out;
}

function classify() {
  const px = pixels();
  if (!model || !px) return;
  try {
    const probs = model.classify(px);
    const best = probs.indexOf(Math.max(...probs));
    $("prediction").textContent = String(best);
    $("probs").replaceChildren(...Array.from(probs, (p) => {
      const li = document.createElement("li");
      li.textContent = `${(100 * p).toFixed(1)} %`;
      return li;
    }));
  } catch (e) {
    status(`Error (${e.code}): ${e.message}`);
  }
}

async function main() {
  clear();
  await init();
  const bytes = new Uint8Array(await (await fetch("../models/lenet-5.onnx")).arrayBuffer());
  model = await Lithe.load(bytes);
  const info = model.info();
  status(`LeNet-5 loaded with Lithe ${Lithe.version}: ${info.params.toLocaleString()} parameters. Draw a digit.`);
  $("size").textContent = `ONNX ${bytes.length.toLocaleString()} bytes`;
  $("compress").disabled = false;
  $("compress").onclick = async () => {
    $("compress").disabled = true;
    status("Compressing…");
    try {
      const r = await model.compress({ passes: [
        { pass: "prune", by: "global", ratio: 0.9 },
        { pass: "share", bits: 5 },
      ] });
      $("size").textContent = `ONNX ${bytes.length.toLocaleString()} bytes → .lithe ` +
        `${r.lithe_bytes.toLocaleString()} bytes (${(bytes.length / r.lithe_bytes).toFixed(1)}× smaller)`;
      status("Compressed model loaded (no fine-tuning). Draw a digit.");
      classify();
    } catch (e) {
      status(`Error (${e.code}): ${e.message}`);
    }
  };
}

$("clear").onclick = clear;
main().catch((e) => status(`Could not start: ${e.message} (build the package: cargo xtask npm)`));
