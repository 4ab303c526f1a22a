"""Data-prep benchmark (issue 2): an LGG-sized synthetic dataset through ``prepare`` and back.

Measures, per compression setting: prep wall time on N cores (fresh OUT, then a rerun that reuses every
shard), output bytes / source bytes, and the time to load the whole train split into memory. Prints a Markdown
table and writes the figures as JSON. Targets: prep <= 60 s, output <= 0.6x, train load <= 3 s (2 cores).

    python benchmarks/bench_prep.py --patients 110 --cores 2                      # the recorded run
    python benchmarks/bench_prep.py --patients 8 --compressions lzf --json /tmp/b.json   # a quick look

``--cores K`` pins this process and its workers to K CPUs (sched_setaffinity) so a bigger machine gives
2-core figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import time
from pathlib import Path

from data_prep import PreparedData, prepare
from data_prep.synth import make_synthetic


def _cpu_s() -> float:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn):
    t, c = time.perf_counter(), _cpu_s()
    out = fn()
    return out, time.perf_counter() - t, _cpu_s() - c


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _parquet_engine_or_stand_in() -> str | None:
    """Machines lent for GPU work may lack pyarrow; the metadata tables are then pickled so the shard figures
    can still be measured (the note is printed and stored with the figures)."""
    try:
        import pyarrow  # noqa: F401
        return None
    except ImportError:
        import pandas as pd

        pd.DataFrame.to_parquet = lambda self, path, **kw: self.to_pickle(path)
        return "no pyarrow on this machine: metadata tables pickled instead of parquet (shards unaffected)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=110)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", type=int, default=2, help="pin to this many CPUs (0: leave as is)")
    ap.add_argument("--workers", type=int, default=None, help="prep workers (default: --cores)")
    ap.add_argument("--compressions", default="lzf,gzip:1,gzip:4", help="comma list of lzf | gzip:LEVEL")
    ap.add_argument("--dir", type=Path, default=Path(".bench/prep"), help="scratch folder (kept between runs)")
    ap.add_argument("--repeats", type=int, default=3, help="train-split loads per setting")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    if args.cores:
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[: args.cores])
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or cores
    note = _parquet_engine_or_stand_in()
    if note:
        print(note)
    src = args.dir / f"synth{args.patients}-seed{args.seed}"
    if not (src / "kaggle_3m" / "data.csv").exists():
        shutil.rmtree(src, ignore_errors=True)
        _, synth_s, _ = _timed(lambda: make_synthetic(src, patients=args.patients, seed=args.seed, workers=workers))
        print(f"synth: {args.patients} patients in {synth_s:.1f} s")
    src_bytes = _tree_bytes(src)
    results = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": cores,
               "workers": workers, "patients": args.patients, "source_bytes": src_bytes, "note": note, "settings": []}
    for spec in args.compressions.split(","):
        comp, _, level = spec.partition(":")
        out = args.dir / f"out-{comp}{level}"
        shutil.rmtree(out, ignore_errors=True)
        opts = {"workers": workers, "compression": comp, "compression_level": int(level) if level else None}
        m, fresh_s, fresh_cpu = _timed(lambda: prepare(src, out, **opts))
        _, rerun_s, _ = _timed(lambda: prepare(src, out, **opts))
        pd_ = PreparedData(out)
        loads = []
        for _ in range(args.repeats):
            arr, load_s, load_cpu = _timed(lambda: pd_.load("train"))
            loads.append(load_s)
        _, load1_s, _ = _timed(lambda: pd_.load("train", workers=1))
        row = {"compression": spec, "prep_s": round(fresh_s, 2), "prep_cpu_s": round(fresh_cpu, 2),
               "rerun_s": round(rerun_s, 2), "out_bytes": m["bytes_out"],
               "ratio": round(m["bytes_out"] / src_bytes, 3), "slices": m["slices"], "train_slices": len(arr),
               "train_mb": round((arr.image.nbytes + arr.mask.nbytes) / 1e6),
               "load_train_s_median": round(statistics.median(loads), 2), "load_train_s_min": round(min(loads), 2),
               "load_train_1proc_s": round(load1_s, 2)}
        results["settings"].append(row)
        print(json.dumps(row))
        del arr
    print(f"\n{results['patients']} patients, source {src_bytes / 1e6:,.0f} MB, {cores} cores, {workers} workers "
          f"({results['cpu']})\n")
    print("| compression | prep s (fresh) | prep CPU s | rerun s (all reused) | out / source | "
          "train load s (median) | train load s, 1 process |")
    print("|---|---|---|---|---|---|---|")
    for r in results["settings"]:
        print(f"| {r['compression']} | {r['prep_s']} | {r['prep_cpu_s']} | {r['rerun_s']} | {r['ratio']} | "
              f"{r['load_train_s_median']} | {r['load_train_1proc_s']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
