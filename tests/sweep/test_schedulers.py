"""ASHA screening (``orch sweep --scheduler asha``): the Tune scheduler built from ``SchedulerConfig``, the rung
decisions replayed from hand-made histories (checked against Tune's own bracket), the compute saved, the full grid's
winner, the screening report, how a stopped trial becomes a results.csv row, and one real screened sweep on Ray."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from orchestrator import results_schema as schema
from orchestrator.config import ConfigError, SweepConfig
from orchestrator.errors import ResultsError
from orchestrator.report.screening import (
    HISTORY_COLUMNS,
    compare_winner,
    compute_saved,
    report_screening,
    screening_markdown,
    write_screening,
)
from orchestrator.sweep.schedulers import (
    SchedulerConfig,
    build_scheduler,
    common_epochs,
    default_grace_period,
    rung_decisions,
    trial_histories,
    write_sweep_screening,
)
from tests.sweep.conftest import TINY, write_grid

A, B, C, D = "r18-adam-lr1e-03", "r18-sgd-lr1e-02", "r18-sgd-lr1e-04", "r34-adam-lr1e-04"
ASHA = SchedulerConfig("asha", grace_period=1, reduction_factor=2)  # rungs 1 and 2 of 4 epochs


def _history(curves: dict[str, list[float]], order: list[tuple[str, int]]) -> pd.DataFrame:
    """Per-epoch values of each trial, reported in ``order`` ((trial, epoch), one second apart)."""
    rows = [{"trial_id": t, "epoch": e, "metric": "val_dice_volume_mean", "value": curves[t][e - 1], "t_report": i}
            for i, (t, e) in enumerate(order)]
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


# A reaches each rung first (always continues); B trails A at rung 1: stopped; C beats the median of A and B at
# rung 1, then trails A at rung 2: stopped; D beats the median at rung 1 and the cut-off at rung 2: runs to the end.
CURVES = {A: [0.5, 0.6, 0.7, 0.72], B: [0.3], C: [0.45, 0.5], D: [0.55, 0.65, 0.75, 0.8]}
ORDER = [(A, 1), (B, 1), (A, 2), (C, 1), (A, 3), (A, 4), (C, 2), (D, 1), (D, 2), (D, 3), (D, 4)]


def _results(stopped: dict[str, int] | None = None) -> pd.DataFrame:
    """results.csv of the four trials of CURVES, 4 epochs each: ``stopped`` trial -> epoch, the rest finished."""
    rows, stopped = [], stopped or {}
    for tid, test in ((A, 0.70), (B, None), (C, None), (D, 0.74)):
        if tid in stopped:
            rows.append({"trial_id": tid, "epochs": 4, "status": "stopped_early", "epochs_completed": stopped[tid],
                         "stopped_epoch": stopped[tid], schema.RANK_BY: math.nan})
        else:
            rows.append({"trial_id": tid, "epochs": 4, "status": "finished", "epochs_completed": 4,
                         "stopped_epoch": math.nan, schema.RANK_BY: test})
    return pd.DataFrame(rows)


def test_fifo_is_no_scheduler_and_asha_gets_the_options():
    assert build_scheduler(SchedulerConfig(), 50) is None
    sched = build_scheduler(SchedulerConfig("asha", grace_period=5, reduction_factor=2, metric="val_loss"), 50)
    assert (sched._time_attr, sched._metric, sched._mode, sched._stop_last_trials) == ("epoch", "val_loss", "min",
                                                                                          False)
    assert sorted(m for m, _ in sched._brackets[0]._rungs) == [5, 10, 20, 40]


def test_defaults_leave_slow_starters_a_quarter_of_the_run():
    cfg = SchedulerConfig("asha")
    assert (cfg.metric, cfg.mode, cfg.reduction_factor) == ("val_dice_volume_mean", "max", 3)
    assert default_grace_period(50) == 12 and default_grace_period(4) == 2
    assert cfg.rungs(50) == [12, 36] and cfg.rungs(36) == [9, 27]


@pytest.mark.parametrize("epochs", [3, 4, 9, 10, 28, 50, 81])
def test_tune_decides_at_the_same_rungs_never_at_the_last_epoch(epochs):
    for grace in range(1, epochs):
        for rf in (2, 3, 4):
            cfg = SchedulerConfig("asha", grace_period=grace, reduction_factor=rf)
            tune_rungs = sorted(int(m) for m, _ in build_scheduler(cfg, epochs)._brackets[0]._rungs)
            assert tune_rungs == cfg.rungs(epochs) and epochs not in tune_rungs


@pytest.mark.parametrize("kwargs, word", [({"kind": "hyperband"}, "scheduler='hyperband'"),
                                          ({"grace_period": 0}, "grace_period=0"),
                                          ({"reduction_factor": 1}, "reduction_factor=1"),
                                          ({"reduction_factor": 2.5}, "reduction_factor=2.5"),
                                          ({"kind": "asha", "metric": "test_dice_volume_mean"},
                                           "'test_dice_volume_mean'")])
def test_invalid_options_name_the_value(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        SchedulerConfig(**kwargs)


def test_no_rung_below_the_last_epoch_and_mixed_epochs_are_refused():
    with pytest.raises(ConfigError, match="no rung below the last of 2 epochs"):
        build_scheduler(SchedulerConfig("asha"), 2)  # the default grace period is 2 epochs
    assert common_epochs([10, 10]) == 10
    with pytest.raises(ConfigError, match=r"\[5, 10\]"):
        common_epochs([10, 5])


def test_rung_decisions_replay_what_tune_decides():
    rungs = rung_decisions(_history(CURVES, ORDER), ASHA, 4)
    got = {(r.rung, r.trial_id): (r.decision, r.arrival) for r in rungs.itertuples()}
    assert got == {(1, A): ("continued", 1), (1, B): ("stopped", 2), (1, C): ("continued", 3), (1, D): ("continued", 4),
                   (2, A): ("continued", 1), (2, C): ("stopped", 2), (2, D): ("continued", 3)}
    cut = {(r.rung, r.trial_id): r.cutoff for r in rungs.itertuples()}
    assert math.isnan(cut[(1, A)]) and cut[(1, B)] == 0.5 and cut[(1, C)] == pytest.approx(0.4)
    assert cut[(2, C)] == 0.6 and cut[(2, D)] == pytest.approx(0.55)

    from ray.tune.schedulers import TrialScheduler

    sched = build_scheduler(ASHA, 4)  # Tune's own bracket, fed the same reports in the same order
    trials = {t: SimpleNamespace(trial_id=t) for t in CURVES}
    for t in trials.values():
        sched.on_trial_add(None, t)
    tune = {(t, e): sched.on_trial_result(None, trials[t], {"epoch": e, "val_dice_volume_mean": CURVES[t][e - 1]})
            for t, e in ORDER}
    stopped = {k for k, v in tune.items() if v == TrialScheduler.STOP}
    assert stopped == {(r.trial_id, r.rung) for r in rungs.itertuples() if r.decision == "stopped"}


def test_a_loss_is_screened_lower_is_better():
    loss = SchedulerConfig("asha", grace_period=1, reduction_factor=2, metric="val_loss")
    hist = _history({A: [0.4], B: [0.9]}, [(A, 1), (B, 1)]).assign(metric="val_loss")
    rungs = rung_decisions(hist, loss, 3)
    assert list(rungs["decision"]) == ["continued", "stopped"] and rungs["cutoff"].iloc[1] == pytest.approx(0.4)


def test_results_decide_where_the_replayed_order_differs():
    # Reports of the same second can arrive in either order: what the trials did is the decision recorded.
    rungs = rung_decisions(_history(CURVES, ORDER), ASHA, 4, _results({C: 1}))
    assert rungs.set_index(["rung", "trial_id"]).loc[(1, C), "decision"] == "stopped"
    assert rungs.set_index(["rung", "trial_id"]).loc[(1, B), "decision"] == "continued"  # not stopped per results


def test_compute_saved_counts_the_epochs_each_trial_trained():
    results = _results({B: 1, C: 2})
    saved = compute_saved(results, 4)
    assert (saved.epochs_run, saved.epochs_full) == (4 + 1 + 2 + 4, 16) and saved.fraction == 11 / 16
    diverged = pd.DataFrame([{"status": "diverged", "epochs_completed": 2}, {"status": "pending"}])
    assert compute_saved(diverged, 10).epochs_run == 3  # the epoch that diverged was trained too


def test_the_full_grids_winner_survived_or_not():
    full = _results().assign(**{schema.RANK_BY: [0.70, 0.60, 0.65, 0.74]})  # D wins the full grid
    survived = compare_winner(_results({B: 1, C: 2}), full)
    assert survived.winner == D and survived.survived and survived.rank == 1 and survived.survivors == 2
    stopped = compare_winner(_results({B: 1, C: 2, D: 2}), full)
    assert not stopped.survived and stopped.status == "stopped_early" and stopped.stopped_epoch == 2
    assert compare_winner(_results(), full.assign(status="error")) is None  # no tested winner to compare


def test_screening_markdown_reads_as_the_answer():
    results, rungs = _results({B: 1, C: 2}), rung_decisions(_history(CURVES, ORDER), ASHA, 4, _results({B: 1, C: 2}))
    full = _results().assign(**{schema.RANK_BY: [0.76, 0.60, 0.65, 0.74]})  # A wins the full grid
    md = screening_markdown(results, rungs, 4, full)
    assert ("ASHA ran 69 % of the full grid's epochs (11 of 16); 2 of 4 trials ran to the end; the full grid's "
            f"winner {A} survived (ranked 2nd among 2 survivors). The others: 2 stopped early.") in md
    assert "| 1 | 4 | 3 | 1 | 0.400 to 0.500 |" in md and f"| {C} | 2 | 0.500 | 0.600 |" in md
    alone = screening_markdown(results, rungs, 4)
    assert "no full-grid sweep to compare with (`orch report SWEEP --against FULL_SWEEP`" in alone
    gone = screening_markdown(_results({A: 1, B: 1, C: 2}), rungs, 4, full)
    assert f"the full grid's winner {A} did NOT survive: ASHA stopped it at epoch 1" in gone


def test_screening_files_are_written_and_rewritten_against_a_full_sweep(tmp_path):
    results, hist = _results({B: 1, C: 2}), _history(CURVES, ORDER)
    paths = write_sweep_screening(results, hist, ASHA, 4, tmp_path)
    assert {p.name for p in paths.values()} == {"screening.md", "screening_rungs.csv", "screening_history.csv",
                                                "plot_screening.png"}
    rungs = pd.read_csv(paths["screening_rungs"])
    assert len(rungs) == 7 and set(rungs.loc[rungs["decision"] == "stopped", "trial_id"]) == {B, C}
    full = _results().assign(**{schema.RANK_BY: [0.70, 0.60, 0.65, 0.74]})
    again = report_screening(results, tmp_path, tmp_path / "report", full, plots=False)
    assert f"the full grid's winner {D} survived" in again["screening"].read_text()
    assert report_screening(results, tmp_path / "report" / "none", tmp_path) == {}  # a sweep never screened
    with pytest.raises(ResultsError, match="was not screened"):
        report_screening(results, tmp_path / "none", tmp_path, full)
    assert "screening_plot" not in write_screening(results, tmp_path / "w", rungs, 4)  # no histories, no plot


def _result(metrics: dict, error=None, frame=None) -> SimpleNamespace:
    """What Tune's ResultGrid yields for one trial (the attributes rows.py reads)."""
    return SimpleNamespace(metrics=metrics, error=error, checkpoint=None, metrics_dataframe=frame,
                           config={"trial": {"trial_id": A}})


def test_a_trial_the_scheduler_stopped_is_a_result_not_a_failure():
    from orchestrator.grids import load_grid
    from orchestrator.sweep.plan import plan_sweep
    from orchestrator.sweep.rows import status_counts, trial_row
    from orchestrator.sweep.runner import SweepOutcome

    plan = plan_sweep(SweepConfig(grid="smoke"), load_grid("smoke"), use_gpus=False)[0]
    cols = (*schema.results_columns(), "stopped_epoch")
    last = {"epoch": 2, "final": False, "done": True, "status": "running", "loss": 0.8, "img_per_s": 30.0,
            "val_dice_volume_mean": 0.41, "val_loss": 0.7, "dice_volume_mean": 0.41}
    frame = pd.DataFrame([{**last, "done": False, "img_per_s": 10.0}, last])
    row = trial_row(_result(last, frame=frame), plan, cols)
    assert (row["status"], row["stopped_epoch"], row["epochs_completed"]) == ("stopped_early", 2, 2)
    assert row["val_dice_volume_mean"] == 0.41 and row["train_loss"] == 0.8 and row["img_per_s"] == 20.0
    assert not any(k.startswith("test_") for k in row)  # never tested
    assert trial_row(_result({**last, "done": False}), plan, cols)["status"] == "unfinished"  # a driver killed
    assert trial_row(_result(last, error=RuntimeError("boom")), plan, cols)["status"] == "error"

    df = pd.DataFrame([{"status": "finished"}, {"status": "stopped_early"}, {"status": "stopped_early"}])
    counts = status_counts(df)
    assert counts == {"finished": 1, "stopped_early": 2} and list(counts) == ["finished", "stopped_early"]
    outcome = SweepOutcome(name="s", sweep_dir="s", results_dir=None, results=df, counts=counts, elapsed_s=1.0,
                           restored=False)
    assert outcome.failure() is None  # `orch sweep` exits 0


def test_every_report_carries_the_val_metrics_a_scheduler_ranks_by():
    from orchestrator.sweep.rows import epoch_metrics

    ok = SimpleNamespace(epoch=1, status="running", is_best=True, metrics={"loss": 0.5, "dice_volume_mean": 0.3,
                                                                           "val_loss": 0.6})
    assert epoch_metrics(ok)["val_dice_volume_mean"] == 0.3 and epoch_metrics(ok)["val_loss"] == 0.6
    diverged = SimpleNamespace(epoch=2, status="diverged", is_best=False, metrics={"loss": math.inf})
    out = epoch_metrics(diverged)
    assert math.isnan(out["val_dice_volume_mean"]) and "loss" not in out  # NaN: Tune needs the key, not a value


def test_histories_come_from_tunes_recorded_results():
    frame = pd.DataFrame([{"epoch": 1, "final": False, "val_loss": 0.9, "t_report": 5.0},
                          {"epoch": 2, "final": False, "val_loss": 0.7, "t_report": 9.0},
                          {"epoch": math.nan, "final": True, "val_loss": 0.7, "t_report": math.nan}])
    hist = trial_histories([_result({}, frame=frame), SimpleNamespace(config={}, metrics_dataframe=None)], "val_loss")
    assert hist[["trial_id", "epoch", "value", "t_report"]].values.tolist() == [[A, 1, 0.9, 5.0], [A, 2, 0.7, 9.0]]


@pytest.mark.slow
def test_a_screened_sweep_stops_trials_and_reports_them(prepared, tmp_path, monkeypatch):
    """A real 5-trial sweep on Ray, one trial at a time (so the order the trials reach the rungs is the grid's),
    3 epochs, ASHA on val_loss at epochs 1 and 2 (grace 1, reduction factor 2)."""
    from orchestrator.config import TrackingConfig
    from orchestrator.sweep import run_sweep
    from orchestrator.tracking import store

    rows = [{"encoder": "resnet18", "optimizer": o, "lr": lr, "epochs": 3} for o, lr in
            (("adam", 1e-3), ("sgd", 1e-5), ("rmsprop", 1e-3), ("adam", 1e-5), ("sgd", 1e-2))]
    grid = write_grid(tmp_path / "asha.csv", rows)
    cfg = SweepConfig(grid=str(grid), data=str(prepared), storage=str(tmp_path / "sweeps"), max_concurrent=1,
                      overrides={**TINY, "image_size": 32}, scheduler="asha", grace_period=1, reduction_factor=2,
                      asha_metric="val_loss")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_sweep(cfg, tracking=TrackingConfig(tracking_uri=uri, log_models_top_k=0), workdir=tmp_path)

    assert out.failure() is None, out.counts  # stopped trials are results: `orch sweep` exits 0
    df = pd.read_csv(out.results_csv)
    stopped = df[df["status"] == "stopped_early"]
    assert len(stopped) >= 1 and set(stopped["stopped_epoch"]) <= {1, 2}, df[["trial_id", "status"]]
    assert stopped["test_dice_volume_mean"].isna().all() and stopped["val_loss"].notna().all()
    assert df.loc[df["status"] != "stopped_early", "stopped_epoch"].isna().all()
    assert set(df["status"]) <= {"finished", "stopped_early"} and out.counts.get("finished", 0) >= 1

    paths = out.report  # the runner wrote the screening files with the rest of the report
    rungs = pd.read_csv(paths["screening_rungs"])
    assert set(rungs.loc[rungs["decision"] == "stopped", "trial_id"]) == set(stopped["trial_id"])
    assert set(rungs["rung"]) == {1, 2} and paths["screening_plot"].is_file()
    md = paths["screening"].read_text()
    assert f"{len(df) - len(stopped)} of {len(df)} trials ran to the end" in md
    # MLflow: the driver marks what Tune stopped (the trial process could not), never as a failure.
    c = store.client(uri)
    children = store.children_by_trial(c, c.get_experiment_by_name(out.name).experiment_id,
                                       store.find_runs(c, c.get_experiment_by_name(out.name).experiment_id,
                                                       **{store.TAG_ROLE: "sweep"})[0].info.run_id)
    for tid, epoch in zip(stopped["trial_id"], stopped["stopped_epoch"]):
        run = c.get_run(children[tid].info.run_id)
        assert run.info.status == "KILLED" and run.data.tags[store.TAG_STATUS] == "stopped_early"
        assert run.data.tags["orch.stopped_epoch"] == str(int(epoch))
    assert (out.results_dir / "screening.md").is_file()


def test_the_summary_counts_trials_of_configurations_with_seeds_or_folds(tmp_path):
    from orchestrator.sweep.rows import status_counts
    from orchestrator.sweep.runner import SweepOutcome

    def line(rows):
        df = pd.DataFrame(rows).assign(test_dice_volume_mean=0.5)
        return SweepOutcome(name="s", sweep_dir="s", results_dir=tmp_path, results=df, counts=status_counts(df),
                            elapsed_s=61.0, restored=False).summary()

    plain = [{"trial_id": f"resnet18-adam-lr1e-0{k}", "status": "finished"} for k in (2, 3)]
    assert line(plain).startswith("sweep s: 2 configurations (2 finished) in 1m01s")
    seeded = [{"trial_id": f"resnet18-adam-lr1e-0{k}-seed{s}", "seed": s, "fold": None, "status": "finished"}
              for k in (2, 3) for s in (0, 1, 2)]
    assert line(seeded).startswith("sweep s: 6 trials of 2 configurations (6 finished)")
    folded = [{"trial_id": f"resnet18-adam-lr1e-03-fold{f}", "fold": f, "status": "finished"} for f in range(1, 6)]
    assert "5 trials of 1 configurations" not in line(folded) and "5 trials of 1 configuration " in line(folded)
