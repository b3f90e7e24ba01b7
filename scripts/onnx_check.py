#!/usr/bin/env python3
"""Checks Lithe's output for an ONNX model against onnxruntime (CPU).

Usage: onnx_check.py MODEL.onnx INPUT.npy OUTPUT.npy [--tol 1e-4] [--output-index K] [--no-checker]

When the `onnx` package is importable, MODEL first goes through onnx.checker (full check, with
shape inference); a checker error counts as a mismatch. Then the script runs MODEL on INPUT (fed to the model's first graph input) with onnxruntime's CPU provider and
compares output K (default 0) with OUTPUT, the tensor Lithe computed. Prints the maximum
absolute difference; exits 0 when it is within the tolerance, 1 on a mismatch (or a shape
difference), 2 on a usage or loading error.
"""

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest accepted max |difference|")
    ap.add_argument("--output-index", type=int, default=0, help="which model output to compare")
    ap.add_argument("--no-checker", action="store_true", help="skip onnx.checker")
    args = ap.parse_args()
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(f"onnx_check: needs numpy and onnxruntime ({e})", file=sys.stderr)
        return 2
    try:
        with open(args.model, "rb") as f:
            model_bytes = f.read()
    except OSError as e:
        print(f"onnx_check: cannot read the model: {e}", file=sys.stderr)
        return 2
    if not args.no_checker:
        try:
            import onnx
        except ImportError:
            onnx = None
        if onnx is not None:
            try:
                onnx.checker.check_model(onnx.load_from_string(model_bytes), full_check=True)
            except Exception as e:  # noqa: BLE001 - any checker failure is a mismatch
                print(f"MISMATCH onnx.checker: {e}")
                return 1
    try:
        opts = ort.SessionOptions()
        # Compare against the plain reference semantics, not fused/approximated kernels.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        x = np.load(args.input).astype(np.float32)
        want = np.load(args.output).astype(np.float32)
    except Exception as e:  # noqa: BLE001 - report any loading failure plainly
        print(f"onnx_check: cannot load: {e}", file=sys.stderr)
        return 2
    name = sess.get_inputs()[0].name
    got = sess.run(None, {name: x})[args.output_index]
    if got.shape != want.shape:
        print(f"MISMATCH shape: onnxruntime {got.shape} vs lithe {want.shape}")
        return 1
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
    ok = diff <= args.tol and not np.isnan(diff)
    print(f"{'OK' if ok else 'MISMATCH'} max_abs_diff={diff:.3e} tol={args.tol:.1e} shape={list(got.shape)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
