"""The outage buffer: one JSONL file per trial holding the records the tracking store has not accepted yet.

File ``<buffer_dir>/<trial_id>.<parent run id>.jsonl``; the first line says where the records belong, each later
line is one record, in the order the trial produced them::

    {"op": "open", "uri": ..., "experiment_id": ..., "parent_run_id": ..., "trial_id": ...}
    {"op": "start", "params": {...}}
    {"op": "epoch", "epoch": 3, "metrics": {...}, "ts": 1795751402675}
    {"op": "finish", "result": {...TrainResult.to_dict()...}}

Every record replays idempotently (the trial tracker skips metric steps the run already holds and params it
already has), so a replay that fails half way is simply replayed again later: nothing is sent twice.
Each append is one ``write`` + ``fsync`` of a whole line, so a killed process leaves at most a torn last line,
which ``read`` skips.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def default_buffer_dir() -> Path:
    """Where buffers go when the caller names no directory: ``~/.cache/orch/mlflow-buffer``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "orch" / "mlflow-buffer"


class TrialBuffer:
    """The pending records of one trial of one sweep, in the file ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def for_trial(cls, buffer_dir: str | os.PathLike, trial_id: str, parent_run_id: str) -> "TrialBuffer":
        """``<buffer_dir>/<trial_id>.<parent run id>.jsonl``: the parent id keeps two sweeps that share a buffer
        directory (and trial ids) apart."""
        safe = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in trial_id)
        return cls(Path(buffer_dir) / f"{safe}.{parent_run_id}.jsonl")

    def __bool__(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def append(self, record: dict, header: dict) -> None:
        """Add ``record``; a new file starts with ``header`` (the ``open`` record)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        if not self:
            lines.append(json.dumps({"op": "open", **header}))
        lines.append(json.dumps(record))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> tuple[dict, list[dict]]:
        """(header, records); a torn last line from a killed writer is skipped with a warning."""
        header: dict = {}
        records: list[dict] = []
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: skipping an incomplete record (a writer was killed mid-line)", self.path, n)
                    continue
                if rec.get("op") == "open":
                    header = rec
                else:
                    records.append(rec)
        return header, records

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def pending(buffer_dir: str | os.PathLike) -> list[Path]:
    """The buffer files waiting in ``buffer_dir`` (empty when the directory does not exist)."""
    d = Path(buffer_dir)
    return sorted(p for p in d.glob("*.jsonl") if p.stat().st_size > 0) if d.is_dir() else []
