#!/usr/bin/env python3
"""Markdown tables for docs/BENCHMARKS.md from target/bench/{web,native,ort}.json
(written by `cargo xtask bench-web`, `cargo test --release -p lithe --test bench_native --
--ignored --nocapture` and `cargo xtask bench-ort`)."""
import json, os, sys

root = os.path.join(os.path.dirname(__file__), "..", "target", "bench")
load = lambda n: json.load(open(os.path.join(root, n))) if os.path.exists(os.path.join(root, n)) else None
web, native, ort = load("web.json"), load("native.json"), load("ort.json")

def key(f):
    return (f["family"], f["kernel"], f["m"], f["k"], f["n"])

def shape(f):
    return f'{f["m"]}×{f["k"]}×{f["n"]}'

if web:
    builds = web["builds"]
    s, r = builds.get("simd128", {}), builds.get("relaxed-simd", {})
    nat = {}
    for f in (native or {}).get("kernels", []):
        nat.setdefault(key(f), f)
    print("### Kernels, G op/s (2·m·k·n / median time)\n")
    print("| family | kernel | m×k×n | simd128 build | relaxed build | native | wasm (simd128) / native time |")
    print("|---|---|---|---|---|---|---|")
    rk = {}
    for f in r.get("kernels", []):
        rk.setdefault(key(f), f)
    seen = set()
    for f in s.get("kernels", []) + r.get("kernels", []):
        k = key(f)
        if k in seen:
            continue
        seen.add(k)
        # The selected kernel is timed twice (as "selected" and in the list of kinds): the
        # first figure is reported.
        sf = next((x for x in s.get("kernels", []) if key(x) == k), None)
        rf = rk.get(k)
        nf = nat.get(k)
        # the selected kernel natively has another name: compare same family+shape of the
        # selected native kernel when the names differ
        g = lambda x: f'{x["gops"]:.2f}' if x else "–"
        ratio = f'{sf["ms"] / nf["ms"]:.2f}×' if sf and nf else "–"
        print(f'| {k[0]} | {k[1]} | {shape(f)} | {g(sf)} | {g(rf)} | {g(nf)} | {ratio} |')
    if native:
        print("\nNative-only kernels (same shapes):\n")
        print("| family | kernel | m×k×n | native G op/s |")
        print("|---|---|---|---|")
        for f in native["kernels"]:
            if key(f) not in seen:
                print(f'| {f["family"]} | {f["kernel"]} | {shape(f)} | {f["gops"]:.2f} |')
    print("\n### Peak probe and GEMM share\n")
    print("| build | ISA | mul GFLOP/s | add GFLOP/s | mul+add pair peak GFLOP/s | madd GFLOP/s |")
    print("|---|---|---|---|---|---|")
    rows = list(builds.items()) + ([("native", native["peak"])] if native else [])
    for b, v in rows:
        p = v["peak"] if "peak" in v else v
        madd = f'{p["madd_gflops"]:.2f} ({p["madd_isa"]})' if "madd_gflops" in p else "–"
        print(f'| {b} | {p["isa"]} | {p["mul_gflops"]:.2f} | {p["add_gflops"]:.2f} | {p["peak_gflops"]:.2f} | {madd} |')
    print("\n| build | kernel | n³ | GFLOP/s | share of the mul+add peak |")
    print("|---|---|---|---|---|")
    for b, v in builds.items():
        done = set()
        peak = v["peak"]["peak_gflops"]
        for f in v["kernels"]:
            if f["family"] != "f32-gemm" or not (f["m"] == f["k"] == f["n"]):
                continue
            if f["kernel"] not in ("simd128", "relaxed-simd") or (f["kernel"], f["n"]) in done:
                continue
            done.add((f["kernel"], f["n"]))
            print(f'| {b} | {f["kernel"]} | {f["n"]} | {f["gops"]:.2f} | {100 * f["gops"] / peak:.0f} % |')
    print("\n### Whole models through the plan, median ms\n")
    print("| model | batch | simd128 build | relaxed build | native | kernels (wasm) |")
    print("|---|---|---|---|---|---|")
    nm = {(m["model"], m["result"]["batch"]): m["result"] for m in (native or {}).get("models", [])}
    rm = {(m["model"], m["result"]["batch"]): m["result"] for m in r.get("models", [])}
    for m in s.get("models", []):
        k = (m["model"], m["result"]["batch"])
        ks = sorted(set(x[1] for x in m["result"]["kernels"]))
        nv = nm.get(k)
        rv = rm.get(k)
        ms = lambda v: f'{v["ms"]:.3f}' if v else "–"
        print(f'| {k[0]} | {k[1]} | {m["result"]["ms"]:.3f} | {ms(rv)} | {ms(nv)} | {", ".join(ks)} |')

if ort:
    print("\n### Lithe vs onnxruntime-web", ort["onnxruntime_web"], "(one thread, wasm EP), median ms\n")
    print("| Lithe build | model | batch | Lithe | ort-web | Lithe / ort (median of the rounds) | the rounds | max abs diff | agree (≤ 1e-4) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in ort["models"]:
        r = m["result"]
        if "error" in r:
            print(f'| {m["build"]} | {m["model"]} | {m["batch"]} | – | – | – | – | – | error: {r["error"].splitlines()[0][:120]} |')
        else:
            rounds = " / ".join(f'{x["ratio"]:.2f}' for x in r.get("rounds", [])) or "–"
            print(f'| {m["build"]} | {m["model"]} | {m["batch"]} | {r["lithe_ms"]:.3f} | {r["ort_ms"]:.3f} | {r["lithe_over_ort"]:.2f}× | {rounds} | {r["max_abs_diff"]:.1e} | {"yes" if r.get("agree") else "**no**"} |')
