"""Which run a run directory holds: a stored result or checkpoint is reused only for the configuration that made it.

``fit`` returns the result a finished run directory holds and resumes an unfinished one, which is what makes a
killed sweep cheap to rerun. It must never hand back another configuration's result: ``orch train --out DIR`` on a
directory of a resnet18/bce run, asked for resnet34/dice, would print the old metrics as the new run's. So each run
directory records its ``identity`` in ``config.json`` (the TrainConfig minus what only changes how it runs, plus
a digest of the patients of each split), and ``claim`` compares before anything is reused.

Older run directories (no ``config.json``) are compared with the ``train_config`` of their ``last.pt`` /
``best.pt``; one with neither is trusted as before, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from orchestrator.config import TrainConfig
from orchestrator.files import atomic_write_text
from orchestrator.results_schema import PER_PATIENT_CSV

log = logging.getLogger(__name__)

CONFIG_JSON = "config.json"
# How a run executes, not what it computes: a run stored on a GPU resumes on a CPU, with another eval batch.
RUNTIME_FIELDS = ("device", "amp", "cuda_graph", "eval_batch_size")
# Everything fit writes into a run directory (and its temporary files): what --force may delete, and nothing else.
RUN_FILES = (CONFIG_JSON, "last.pt", "best.pt", "result.json", "history.csv", "per_patient_dice.csv",
             PER_PATIENT_CSV, "learning_curve.png", "overlay.png")


def identity(cfg: TrainConfig, data: Any) -> dict[str, Any]:
    """What makes two runs the same run: ``cfg`` without ``RUNTIME_FIELDS``, and per split a digest of its
    patients (another prepared data set, split seed or fold is another run)."""
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    wanted["patients"] = {split: hashlib.sha256(",".join(sorted(data.patients(split))).encode()).hexdigest()[:16]
                          for split in ("train", "val", "test")}
    return json.loads(json.dumps(wanted))  # tuples as lists: as it reads back from config.json


def digest(wanted: dict[str, Any]) -> str:
    """A short stable name for an identity (MLflow keys a run directory's records by it)."""
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:10]


def stored_identity(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(identity, file it was read from)`` of the run stored in ``run_dir``; ``(None, None)`` when none is known."""
    path = run_dir / CONFIG_JSON
    if path.is_file():
        try:
            return json.loads(path.read_text()), str(path)
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); it records which run {run_dir} holds: delete the "
                             "directory's run files with --force, or pass a new --out") from e
    from orchestrator.training.checkpoint import read_checkpoint

    for name in ("last.pt", "best.pt"):
        if (run_dir / name).is_file():
            cfg = read_checkpoint(run_dir / name).get("train_config")
            if isinstance(cfg, dict):
                return cfg, str(run_dir / name)
    return None, None


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``field: stored ... , asked ...`` for every field both know and disagree on (a field one side lacks is a
    newer or older default: not a difference)."""
    out = []
    for key in wanted:
        if key in RUNTIME_FIELDS or key not in stored or stored[key] == wanted[key]:
            continue
        if key == "patients":
            splits = [s for s in wanted[key] if (stored[key] or {}).get(s) != wanted[key][s]]
            out.append(f"patients of {'/'.join(splits)}: other patients (another prepared data set, split or fold)")
        else:
            out.append(f"{key}: {stored[key]!r} stored, {wanted[key]!r} asked")
    return out


def check(run_dir: Path, wanted: dict[str, Any]) -> str | None:
    """Why ``run_dir`` must not be reused for ``wanted`` (a message naming the fields), or None."""
    stored, source = stored_identity(run_dir)
    if stored is None:
        return None
    diff = differences(stored, wanted)
    if not diff:
        return None
    hint = ""
    if any(d.startswith("head_relu:") for d in diff):
        hint = f" (to resume it as it was, pass {'--head-relu' if stored.get('head_relu') else '--no-head-relu'})"
    return (f"{run_dir} holds a run of another configuration (recorded in {source}): {'; '.join(diff)}. Its result "
            f"is not this run's{hint}: pass a new --out DIR to keep it, or --force to delete its run files and "
            "train afresh")


def claim(run_dir: Path, wanted: dict[str, Any], force: bool = False) -> str | None:
    """Make ``run_dir`` this run's: record ``wanted`` in ``config.json`` if nothing disagrees; else return why not
    (``check``), or with ``force`` delete the other run's files (``RUN_FILES`` only) first."""
    problem = check(run_dir, wanted)
    if problem and not force:
        return problem
    if problem:
        log.warning("--force: deleting the run files of another configuration in %s", run_dir)
        clear(run_dir)
    if not (run_dir / CONFIG_JSON).is_file():
        if (run_dir / "result.json").is_file() and stored_identity(run_dir)[0] is None:
            log.warning("%s holds a result without a record of its configuration (an older orch); it is reused as "
                        "this configuration's: pass --force to train afresh", run_dir)
            return None
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_JSON, json.dumps(wanted, indent=2, sort_keys=True))
    return None


def clear(run_dir: Path) -> list[Path]:
    """Delete the files ``fit`` writes (``RUN_FILES`` and their temporaries) from ``run_dir``; returns them.
    Anything else in the directory (the user's notes, an MLflow buffer, fold directories) stays."""
    gone = []
    for p in sorted(run_dir.iterdir()) if run_dir.is_dir() else []:
        temporary = p.name.startswith(".") and p.name.endswith(".tmp") and any(n in p.name for n in RUN_FILES)
        if p.is_file() and not p.is_symlink() and (p.name in RUN_FILES or temporary):
            p.unlink()
            gone.append(p)
    return gone
