"""What a run reports: ``EpochReport`` (per epoch, to ``on_epoch``) and ``TrainResult`` (the end), and the
plain-file artefacts written into the run directory."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.files import atomic_write, atomic_write_text
from orchestrator.results_schema import PATIENT_COLUMNS, PER_PATIENT_CSV


@dataclass
class EpochReport:
    """One finished epoch: ``metrics`` holds train ``loss``, ``it_per_s``, ``img_per_s``, ``epoch_time_s`` and
    every validation metric (``orchestrator.metrics.EVAL_METRICS`` + ``val_loss``)."""

    epoch: int
    metrics: dict[str, float]
    is_best: bool
    run_dir: Path
    status: str = "running"  # "running" | "diverged"
    rank: int = 0


@dataclass
class TrainResult:
    """The outcome of ``fit``: JSON round-trippable with ``to_dict`` / ``from_dict``."""

    status: str  # "finished" | "diverged"
    epochs_completed: int
    best_epoch: int | None
    best_val: dict[str, float]
    test: dict[str, float]
    per_patient: list[dict[str, Any]]
    history: list[dict[str, float]]
    run_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)  # device, amp, cuda graph decision, ...

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        return _json_safe(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["run_dir"] = Path(known["run_dir"])
        return cls(**known)


def _json_safe(x: Any) -> Any:
    """NaN/inf become None so result.json stays strict JSON (a diverged loss is recorded as null)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> None:
    """Rows with possibly differing keys -> CSV with the union of keys (first-seen order), or exactly ``columns``
    (a header even without rows), atomically."""
    cols: list[str] = list(columns or ())
    for r in rows if columns is None else ():
        cols += [k for k in r if k not in cols]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def _fold_and_seed(run_dir: Path, config: Any) -> dict[str, Any]:
    """``fold`` and ``seed`` of the run: from ``config`` (its TrainConfig), else from the ``config.json`` that
    ``runs.claim`` recorded in ``run_dir``; None where neither says."""
    if config is None and (run_dir / "config.json").is_file():
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except ValueError:
            config = None
    get = config.get if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    return {"fold": get("fold"), "seed": get("seed")}


def patient_rows(result: TrainResult, config: Any = None) -> list[dict[str, Any]]:
    """The run's test patients as the long table ``per_patient.csv`` holds (``PATIENT_COLUMNS``): one row per
    patient with its volume Dice, tumour pixels, and the run's fold and seed (empty where none)."""
    where = _fold_and_seed(Path(result.run_dir), config)
    return [{"patient": r.get("patient"), "split": "test", **where, "dice_volume": r.get("dice"),
             "tumour_pixels_true": r.get("tumour_pixels_true"), "tumour_pixels_pred": r.get("tumour_pixels_pred")}
            for r in result.per_patient if r.get("split") == "test"]


def write_result(result: TrainResult, config: Any = None) -> None:
    """result.json, history.csv, per_patient_dice.csv (every evaluated patient, as users read it) and
    per_patient.csv (the test patients as a long table, ``patient_rows``; ``config``: the run's TrainConfig, else
    read from its config.json) into ``result.run_dir`` (result.json last: it marks the run finished)."""
    run_dir = Path(result.run_dir)
    write_csv(run_dir / "history.csv", result.history)
    write_csv(run_dir / "per_patient_dice.csv", result.per_patient)
    write_csv(run_dir / PER_PATIENT_CSV, patient_rows(result, config), PATIENT_COLUMNS)
    atomic_write_text(run_dir / "result.json", json.dumps(result.to_dict(), indent=2))


def read_result(run_dir: Path) -> TrainResult:
    d = json.loads((Path(run_dir) / "result.json").read_text())
    d["run_dir"] = str(run_dir)
    return TrainResult.from_dict(d)
