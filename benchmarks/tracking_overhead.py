"""What MLflow tracking costs a training loop: per-epoch ``TrialTracker.log_epoch`` latency against a local
``mlflow server`` (HTTP) and the SQLite store, and while the server is down (records go to the buffer).

    .venv/bin/python benchmarks/tracking_overhead.py [--epochs 50]

Prints one Markdown table (milliseconds per call: median and max) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator.tracking import SweepTracker, TrialTracker, default_tracking_uri
from orchestrator.tracking.ui import start_server

# The per-epoch metrics of the training loop (docs/design.md names).
METRICS = {k: 0.5 for k in ("loss", "it_per_s", "img_per_s", "epoch_time_s", "dice_volume_mean", "dice_global",
                            "dice_slice_pos", "dice_slice_all_empty1", "iou_tumour", "miou_2class",
                            "pixel_accuracy", "val_loss")}


def _time_epochs(tt: TrialTracker, first: int, n: int) -> list[float]:
    out = []
    for epoch in range(first, first + n):
        t = time.perf_counter()
        tt.log_epoch(epoch, METRICS)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=50)
    n = ap.parse_args().epochs
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        st = SweepTracker.open(default_tracking_uri(d / "local"), experiment="bench")
        tt = st.trial("t-sqlite", buffer_dir=d / "buf")
        tt.start({"encoder": "resnet18"})
        rows.append(("SQLite store (`sqlite:///<workdir>/mlflow.db`)", _time_epochs(tt, 1, n)))

        server = start_server(f"sqlite:///{d / 'server.db'}", d / "art")
        try:
            st = SweepTracker.open(server.url, experiment="bench")
            tt = st.trial("t-http", buffer_dir=d / "buf")
            tt.start({"encoder": "resnet18"})
            rows.append(("`mlflow server` on localhost (HTTP)", _time_epochs(tt, 1, n)))
            server.stop()
            rows.append(("server down: first call (connection refused, then buffered)", _time_epochs(tt, n + 1, 1)))
            rows.append(("server down: later calls (buffered, no network)", _time_epochs(tt, n + 2, n)))
        finally:
            server.stop()
    print(f"| store ({len(METRICS)} metrics per epoch) | calls | median ms | max ms |")
    print("|---|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    main()
