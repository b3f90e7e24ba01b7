#!/usr/bin/env bash
# Fetches the ONNX backend node tests (onnx/backend/test/data/node/*) from the onnx wheel on
# PyPI into <repo>/.data/onnx-node-tests/, for engine/tests/onnx_conformance.rs.
# Idempotent: does nothing when the folder already holds the tests of the pinned version.
# Usage: scripts/fetch_onnx_node_tests.sh [--force]
set -euo pipefail

ONNX_VERSION="${ONNX_VERSION:-1.22.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.data/onnx-node-tests"
STAMP="$DEST/.onnx-version"

if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$ONNX_VERSION" ]]; then
    echo "onnx node tests $ONNX_VERSION already in $DEST"
    exit 0
fi

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    for c in python3 python; do
        if command -v "$c" >/dev/null 2>&1; then PY="$c"; break; fi
    done
fi
[[ -n "$PY" ]] || { echo "error: python3 with pip is needed to download the onnx wheel" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "downloading onnx==$ONNX_VERSION wheel..."
# Any platform's wheel ships the same test data; pin one so pip never falls back to an sdist.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 \
    "onnx==$ONNX_VERSION" -d "$TMP"
WHEEL="$(ls "$TMP"/onnx-*.whl | head -n1)"

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
"$PY" - "$WHEEL" "$DEST.tmp" <<'PYEOF'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/node/"
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        if ".." in rel.split("/"):
            continue
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            dst.write(src.read())
        n += 1
if n == 0:
    sys.exit("error: the wheel has no " + prefix)
print(f"extracted {n} files")
PYEOF
echo "$ONNX_VERSION" > "$DEST.tmp/.onnx-version"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "onnx node tests $ONNX_VERSION in $DEST ($(find "$DEST" -mindepth 1 -maxdepth 1 -type d | wc -l) tests)"
