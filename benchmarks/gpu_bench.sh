#!/usr/bin/env bash
# The one device check (see BENCHMARKS.md "Training"): run in the repo root on the GPU machine.
#   OUT=/some/dir benchmarks/gpu_bench.sh [extra gpu_bench.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
: "${OUT:=/tmp/gpu_bench_out}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null || true
python3 benchmarks/gpu_bench.py --out "$OUT" "$@" 2>&1 | tee "$OUT/stdout.txt"
