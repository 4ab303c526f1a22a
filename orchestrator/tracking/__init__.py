"""MLflow tracking of sweeps and trials: the only package of orch that imports mlflow.

Layout (docs/design.md): one experiment per sweep name; one parent run per sweep (``SweepTracker``, driver only, found
again by its ``orch.sweep`` tag on resume); one child run per trial (``TrialTracker``, in the trial process,
found again by ``orch.trial_id`` + ``mlflow.parentRunId``), per-epoch metrics at ``step=epoch``, final
``test_<metric>`` metrics, the run directory's small artefacts (plots, tables), the top-k trials as MLflow models.
Checkpoints are recorded once the sweep ends: by reference (tag ``orch.checkpoint``: the sweep storage's best.pt;
the models are weight-free pyfuncs that load it) or, with ``TrackingConfig(log_checkpoints="copy")``, as copies.

It imports nothing of the layers above it (``orchestrator.sweep``, ``report``, ``cli``, ``demo``): the sweep writes
its report before ``SweepTracker.finish``, which only uploads it; ``orch report --sync`` calls
``tracking.sync.sync_buffers`` itself.

Outages of an ``http://`` tracking server never reach training: records wait in a per-trial JSONL buffer and
are sent when the server answers again, or by ``orch report SWEEP --sync``.

    uri = default_tracking_uri(workdir)                  # sqlite:///<workdir>/mlflow.db
    st = SweepTracker.open(uri, experiment=name, sweep_name=name, tags={...}, params={...})
    tt = TrialTracker(uri, st.experiment_id, st.parent_run_id, trial_id, buffer_dir=...)
    tt.start(params); tt.log_epoch(epoch, metrics); tt.finish(result)
    st.finish(sweep_dir)
"""

from orchestrator.tracking.models import load_logged_model
from orchestrator.tracking.store import TrackingError, default_tracking_uri
from orchestrator.tracking.sweep import SweepTracker, git_commit
from orchestrator.tracking.trial import TrialTracker

__all__ = ["SweepTracker", "TrackingError", "TrialTracker", "default_tracking_uri", "git_commit", "load_logged_model"]
