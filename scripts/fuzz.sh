#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time and prints executions and crashes.
#
#   scripts/fuzz.sh [seconds-per-target]   (default 60)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target's
# working corpus lives in fuzz/corpus/<target>/ (ignored by git) and is seeded from the
# committed engine/tests/corpus/ plus the zoo models; crash inputs land in
# fuzz/artifacts/<target>/. Exit status: 1 if any target crashed.
set -euo pipefail

secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

targets=(onnx_import lithe_decode dataset_decode)

seed() {
    local target="$1" dir="corpus/$1"
    mkdir -p "$dir" "artifacts/$target"
    case "$target" in
        onnx_import)
            cp -n "$root"/engine/tests/corpus/*.onnx "$dir"/ 2>/dev/null || true
            cp -n "$root"/www/models/*.onnx "$dir"/ 2>/dev/null || true ;;
        lithe_decode)
            cp -n "$root"/engine/tests/corpus/*.lithe "$dir"/ 2>/dev/null || true ;;
        dataset_decode)
            cp -n "$root"/engine/tests/corpus/*.lmn "$dir"/ 2>/dev/null || true ;;
    esac
}

cargo +nightly fuzz build -O

status=0
printf '%-16s %12s %8s %s\n' target execs crashes artifacts
for t in "${targets[@]}"; do
    seed "$t"
    log="$(mktemp)"
    before=$(find "artifacts/$t" -type f | wc -l)
    # -rss_limit_mb catches huge allocations; -max_len lets the zoo seeds through whole.
    set +e
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1200000 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    printf '%-16s %12s %8s %s\n' "$t" "${execs:-?}" "$crashes" "fuzz/artifacts/$t/"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5 || true
    fi
    rm -f "$log"
done
exit "$status"
