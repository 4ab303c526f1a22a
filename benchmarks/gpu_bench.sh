#!/usr/bin/env bash
# The one device check (see BENCHMARKS.md "Training"): run in the repo root on the GPU machine.
#   OUT=/some/dir benchmarks/gpu_bench.sh [extra gpu_bench.py args]
# 1. gpu_bench.py: graph-vs-eager checks, `orch bench` figures for every depth, short real fits on synthetic data
# 2. the CLI itself: `orch models`, `orch bench` for one depth (python -m orchestrator.cli: no install needed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
: "${OUT:=/tmp/gpu_bench_out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null || true
python3 benchmarks/gpu_bench.py --out "$OUT" "$@" 2>&1 | tee "$OUT/stdout.txt"
python3 -m orchestrator.cli models
python3 -m orchestrator.cli bench --encoders resnet18 --steps 20 --json "$OUT/cli_bench.jsonl" 2>&1 | tail -12
