"""Sweep benchmarks (recorded in BENCHMARKS.md "## Sweep", never asserted in tests).

1. ``orch sweep --grid smoke`` end to end (a fresh process: Ray start, 4 trials, MLflow, tables, Ray stop).
2. Per-trial overhead: driver "trial started" -> the trial function runs -> ``fit`` entered -> first epoch
   reported, from the sweep's own timings.
3. The loop in-process in the Tune function vs in a Ray Train ``TorchTrainer`` (1 worker), same tiny grid.

    .venv/bin/python benchmarks/bench_sweep.py --workdir /tmp/orch-bench [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _prepared(workdir: Path) -> Path:
    from data_prep import make_synthetic, prepare

    out = workdir / "prepared"
    if not (out / "manifest.json").exists():
        make_synthetic(workdir / "src", patients=6, seed=0, min_slices=20, max_slices=24)
        prepare(workdir / "src", out, workers=1)
    return out


def _overheads(outcome) -> dict[str, float]:
    start, fit, first = [], [], []
    for s in outcome.timings.values():
        if s.started and s.trial_clock and s.first_report:
            start.append(s.trial_clock["t_trial_start"] - s.started)
            fit.append(s.trial_clock["t_fit_start"] - s.started)
            first.append(s.first_report - s.started)
    med = lambda xs: round(statistics.median(xs), 2) if xs else None  # noqa: E731
    return {"start_to_trial_fn_s_median": med(start), "start_to_trial_fn_s_max": round(max(start), 2),
            "start_to_fit_s_median": med(fit), "start_to_first_epoch_report_s_median": med(first)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/orch-bench-sweep"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = _prepared(args.workdir)
    out: dict = {}

    if not args.skip_cli:
        store = args.workdir / "cli-sweeps"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "sweep", "--grid", "smoke", "--data",
                               str(data), "--storage", str(store), "--name", f"smoke-{int(time.time())}"],
                              cwd=args.workdir, capture_output=True, text=True)
        out["cli_smoke_end_to_end_s"] = round(time.perf_counter() - t0, 1)
        out["cli_summary"] = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
        print(json.dumps({k: out[k] for k in ("cli_smoke_end_to_end_s", "cli_summary")}), flush=True)

    from orchestrator.config import SweepConfig
    from orchestrator.sweep import run_sweep

    for launcher in ("inprocess", "train"):
        cfg = SweepConfig(grid="smoke", name=f"cmp-{launcher}-{int(time.time())}", data=str(data),
                          storage=str(args.workdir / "cmp"), launcher=launcher, overrides={"epochs": 1})
        t0 = time.perf_counter()
        o = run_sweep(cfg, tracking=None, workdir=args.workdir)
        out[launcher] = {"wall_s": round(time.perf_counter() - t0, 1), "counts": o.counts, **_overheads(o)}
        print(json.dumps({launcher: out[launcher]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
