"""ASHA screening against the full grid at demo scale (recorded in BENCHMARKS.md "## Screening", never asserted).

Runs the paper grid scaled down as ``orch demo`` does (the demo's overrides, but every test and validation
patient evaluated: the demo's ``max_eval_slices=48`` keeps one synthetic patient, too few for per-patient
statistics) on the prepared data of a finished ``orch demo --workdir WORKDIR``: once in full (``--full`` sweep,
skipped when it exists) and once under ``--scheduler asha``, into the demo's storage and MLflow store; then
``orch report`` of both (the full one with its statistics section, the screened one ``--against`` the full one):
the fraction of the full grid's epochs run and whether the full grid's winner survived.

    .venv/bin/orch demo --workdir /tmp/demo30 --patients 30
    .venv/bin/python benchmarks/demo_screening.py --workdir /tmp/demo30 [--grace-period 1] [--reduction-factor 3]

With ``--seeds N`` it runs only the full grid, each configuration with seeds 0..N-1 (sweep ``demo-seeds<N>``),
and prints its report with the statistics section.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, type=Path, help="a finished `orch demo --workdir` directory")
    ap.add_argument("--full", default="demo-full", help="the full-grid sweep's name")
    ap.add_argument("--name", default="demo-asha")
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=int, default=3)
    ap.add_argument("--metric", default="val_dice_volume_mean")
    ap.add_argument("--seeds", type=int, default=None, help="run only the full grid, with this many seeds")
    args = ap.parse_args()

    from orchestrator.config import SweepConfig, TrackingConfig
    from orchestrator.demo import DemoConfig
    from orchestrator.report import make_report
    from orchestrator.sweep import run_sweep
    from orchestrator.tracking.store import default_tracking_uri

    work = args.workdir.resolve()
    demo = DemoConfig(workdir=str(work))
    base = dict(grid=demo.grid, data=str(work / "prepared"), storage=str(work / "sweeps"),
                overrides={**demo.overrides(), "max_eval_slices": None}, keep_checkpoints=demo.keep_checkpoints)
    tracking = TrackingConfig(tracking_uri=default_tracking_uri(work))
    walls = {}
    if args.seeds:
        name = f"demo-seeds{args.seeds}"
        t0 = time.perf_counter()
        out = run_sweep(SweepConfig(name=name, seeds=args.seeds, **base), tracking=tracking, workdir=work)
        walls[name] = {"wall_s": round(time.perf_counter() - t0, 1), "counts": out.counts}
        print(make_report(str(work / "sweeps" / name), workdir=work).markdown)
        print(json.dumps(walls, indent=1))
        return
    for cfg in (SweepConfig(name=args.full, **base),
                SweepConfig(name=args.name, scheduler="asha", grace_period=args.grace_period,
                            reduction_factor=args.reduction_factor, asha_metric=args.metric, **base)):
        t0 = time.perf_counter()
        out = run_sweep(cfg, tracking=tracking, workdir=work)
        walls[cfg.sweep_name] = {"wall_s": round(time.perf_counter() - t0, 1), "counts": out.counts}
    full = make_report(str(work / "sweeps" / args.full), workdir=work)
    screened = make_report(str(work / "sweeps" / args.name), against=str(work / "sweeps" / args.full), workdir=work)
    print(full.markdown)
    print(screened.markdown)
    print(json.dumps(walls, indent=1))

if __name__ == "__main__":
    main()
