"""The outage buffer and the outage/rejection line, without a server."""

from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from orchestrator.tracking import SweepTracker, TrialTracker, default_tracking_uri
from orchestrator.tracking.buffer import TrialBuffer, pending
from orchestrator.tracking.store import is_outage


def test_buffer_roundtrip_skips_a_torn_last_line(tmp_path, caplog):
    buf = TrialBuffer.for_trial(tmp_path, "resnet18-adam-lr1e-03", "abc123")
    assert not buf and pending(tmp_path) == []
    header = {"uri": "http://h:5000", "experiment_id": "1", "parent_run_id": "abc123", "trial_id": "t"}
    buf.append({"op": "start", "params": {"lr": "0.001"}}, header)
    buf.append({"op": "epoch", "epoch": 1, "metrics": {"loss": float("nan")}, "ts": 1}, header)
    with open(buf.path, "a") as f:
        f.write('{"op": "epoch", "epo')  # a writer killed mid-line
    head, records = buf.read()
    assert head["op"] == "open" and head["parent_run_id"] == "abc123"
    assert [r["op"] for r in records] == ["start", "epoch"]
    assert records[1]["metrics"]["loss"] != records[1]["metrics"]["loss"]  # NaN survives the round trip
    assert "incomplete record" in caplog.text
    assert pending(tmp_path) == [buf.path] and buf.path.name == "resnet18-adam-lr1e-03.abc123.jsonl"
    buf.clear()
    assert not buf and pending(tmp_path) == []


def test_outage_or_rejection():
    assert is_outage(MlflowException("API request failed: Max retries exceeded", error_code=INTERNAL_ERROR))
    assert is_outage(ConnectionRefusedError())
    assert not is_outage(MlflowException("Changing param values is not allowed",
                                         error_code=INVALID_PARAMETER_VALUE))
    assert not is_outage(ValueError("a bug"))


def test_a_rejected_record_warns_and_never_raises(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    uri = default_tracking_uri(tmp_path)
    st = SweepTracker.open(uri, experiment="reject")
    tt = TrialTracker(uri, "999", st.parent_run_id, "t0", buffer_dir=tmp_path / "buf")  # no experiment 999
    tt.start({"lr": 0.1})
    tt.log_epoch(1, {"loss": 0.5})
    assert "rejected" in caplog.text
    assert not list((tmp_path / "buf").glob("*"))  # a rejection is not an outage: nothing waits
