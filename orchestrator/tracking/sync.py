"""Upload what an outage left in the buffers (``orch report SWEEP --sync``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.tracking.buffer import TrialBuffer, pending
from orchestrator.tracking.sweep import SWEEP_PENDING, SweepTracker
from orchestrator.tracking.trial import TrialTracker

log = logging.getLogger(__name__)


@dataclass
class SyncOutcome:
    """What ``sync_buffers`` uploaded, and what still waits."""

    sent: list[str] = field(default_factory=list)  # trial ids whose records reached the store
    kept: list[str] = field(default_factory=list)  # trial ids still buffered (store unreachable)
    sweep_finished: bool | None = None  # a parent run whose finish was pending: True once done

    @property
    def waiting(self) -> list[str]:
        """What is still buffered: the trial ids, and the parent run when its finish still waits for the store."""
        return self.kept + (["(the sweep's parent run)"] if self.sweep_finished is False else [])


def sync_buffers(buffer_dir: str | os.PathLike, tracking_uri: str | None = None) -> SyncOutcome:
    """Replay every trial buffer in ``buffer_dir`` into its store (the one recorded in the buffer, or
    ``tracking_uri`` when the store has moved), then a sweep finish left pending there. Replays are idempotent;
    a buffer is deleted once sent."""
    out = SyncOutcome()
    for path in pending(buffer_dir):
        header, _ = TrialBuffer(path).read()
        if not header:
            log.warning("%s has no header line (which run it belongs to); left in place", path)
            out.kept.append(path.stem)
            continue
        tracker = TrialTracker(tracking_uri or header["uri"], header["experiment_id"], header["parent_run_id"],
                               header["trial_id"], buffer_dir=Path(buffer_dir), sweep_name=header.get("sweep_name"))
        tracker.buffer = TrialBuffer(path)  # the file found, whatever its name
        (out.sent if tracker.flush(force=True) else out.kept).append(header["trial_id"])
    pending_finish = Path(buffer_dir) / SWEEP_PENDING
    if pending_finish.is_file():  # after the trials: the parent's tables and models need their runs
        out.sweep_finished = SweepTracker.finish_pending(pending_finish, tracking_uri)
    return out
