"""The cluster head's MLflow databases are copied to the shared storage and restored on a new head
(orchestrator/tracking/backup.py): `ray down` on AWS deletes the head's disk, and SQLite is never used live on NFS."""

from __future__ import annotations

import signal
import subprocess
import sys

import yaml
from mlflow.tracking import MlflowClient

from orchestrator.tracking.backup import backup, restore
from tests.sweep.test_clusters import CLUSTERS


def _store_with_a_run(local) -> tuple[str, str]:
    local.mkdir(parents=True, exist_ok=True)
    c = MlflowClient(f"sqlite:///{local / 'mlflow.db'}")
    eid = c.create_experiment("sweep", artifact_location=(local / "art").as_uri())
    run = c.create_run(eid)
    c.log_metric(run.info.run_id, "test_dice_volume_mean", 0.81)
    return eid, run.info.run_id


def test_a_copy_holds_the_runs_and_a_new_head_gets_them_back(tmp_path):
    head, shared = tmp_path / "head" / "mlflow", tmp_path / "efs" / "mlflow-backup"
    eid, run_id = _store_with_a_run(head)
    (head / "basic_auth.db").write_bytes(b"")  # an empty file is an empty SQLite database
    assert backup(head, shared) == ["basic_auth.db", "mlflow.db"]
    assert not list(shared.glob(".*tmp"))  # nothing half-written left beside the copies

    new_head = tmp_path / "new-head" / "mlflow"  # `ray down`, `ray up`: an empty disk
    assert restore(shared, new_head) == ["basic_auth.db", "mlflow.db"]
    run = MlflowClient(f"sqlite:///{new_head / 'mlflow.db'}").get_run(run_id)
    assert run.data.metrics["test_dice_volume_mean"] == 0.81 and run.info.experiment_id == eid
    c = MlflowClient(f"sqlite:///{new_head / 'mlflow.db'}")
    c.log_metric(run_id, "later", 1.0)  # the new head's store goes on; its next restore must not roll it back
    assert restore(shared, new_head) == []
    assert "later" in c.get_run(run_id).data.metrics
    assert restore(tmp_path / "no-copies-yet", new_head) == []


def test_the_copier_copies_once_more_when_stopped(tmp_path):
    head, shared = tmp_path / "head", tmp_path / "shared"
    _store_with_a_run(head)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.tracking.backup", "every", "3600", str(head),
                             str(shared)], stderr=subprocess.PIPE, text=True)
    try:
        assert "every 3600 s" in proc.stderr.readline()  # started, its SIGTERM handler in place
        assert not (shared / "mlflow.db").exists()  # the first round is an hour away
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert (shared / "mlflow.db").is_file() and MlflowClient(f"sqlite:///{shared / 'mlflow.db'}").search_experiments()


def test_both_cluster_files_restore_before_the_server_and_copy_beside_it():
    for name in ("gpu.yaml", "local.yaml"):
        start = yaml.safe_load((CLUSTERS / name).read_text())["head_start_ray_commands"]
        where = {key: next(i for i, c in enumerate(start) if key in c)
                 for key in ("backup restore", "mlflow server", "backup every")}
        assert where["backup restore"] < where["mlflow server"] < where["backup every"], name
        assert '"$ORCH_SHARED/mlflow-backup"' in start[where["backup every"]]
        assert "backup.pid" in start[where["backup restore"]]  # the previous copier is stopped first
        assert "sqlite:///$HOME/mlflow/mlflow.db" in start[where["mlflow server"]]  # live: the head's own disk


def test_restore_on_a_first_start_says_there_is_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "orchestrator.tracking.backup", "restore", str(tmp_path / "none"),
                          str(tmp_path / "head")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "nothing to restore" in out.stdout, out.stderr
