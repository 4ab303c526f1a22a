"""Where a sweep lives: local paths and URIs (``s3://``, ``gs://``) behind one small API (pyarrow filesystems,
the layer Ray itself uses for ``storage_path``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from orchestrator import files
from orchestrator.config import ConfigError
from orchestrator.errors import MissingPathError, UnsafePathError
from orchestrator.report.screening import STOPPED_EARLY
from orchestrator.results_schema import HAS_RESULT, top_trials
from orchestrator.sweep.plan import TrialPlan

log = logging.getLogger(__name__)


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def resolve_storage(storage: str, workdir: Path) -> str:
    """An absolute local path (default ``<workdir>/sweeps``) or the URI as given."""
    if storage and is_uri(storage):
        return storage.rstrip("/")
    return str((workdir / (storage or "sweeps")).resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else str(Path(base, *parts))


def inside(path: str, owner: str) -> str:
    """``path`` if it lies strictly inside ``owner`` (local: links and ``..`` resolved; URI: same scheme and bucket,
    no ``..`` segment); else ValueError naming both. What a sweep deletes is checked with it first."""
    if not (is_uri(path) or is_uri(owner)):
        return str(files.inside(path, owner))
    parts = path.split("://", 1)[-1].split("/")
    if is_uri(path) and is_uri(owner) and ".." not in parts and path.startswith(owner.rstrip("/") + "/"):
        return path
    raise UnsafePathError(f"refusing to touch {path}: it is not inside the sweep directory {owner} that orch owns")


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def location(path: str, storage: str) -> str:
    """A path that Tune reported inside ``storage``, as a user can pass it on: local paths as they are; under a URI
    storage the scheme that Tune's paths lack is put back (``bucket/sweeps/x`` -> ``s3://bucket/sweeps/x``)."""
    if not is_uri(storage) or is_uri(path):
        return path
    return f"{storage.split('://', 1)[0]}://{path}"


def file_size(path: str) -> int | None:
    """Bytes of the file at ``path`` (local path or URI), None when there is none."""
    fs, p = _fs(path)
    info = fs.get_file_info(p)
    return info.size if info.type == pafs.FileType.File else None


def read_text(path: str) -> str | None:
    """A small file at a local path or a URI (``s3://...``); None when it is not there."""
    fs, p = _fs(path)
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.read().decode("utf-8")


def delete_file(path: str) -> int:
    """Delete the file at ``path`` (local path or URI) if it exists; returns the bytes freed."""
    size = file_size(path)
    if size is None:
        return 0
    fs, p = _fs(path)
    fs.delete_file(p)
    return size


def check_data(data: str) -> str:
    """The prepared-data location every trial opens; a local one must hold a manifest (clear error if not)."""
    if not data:
        raise MissingPathError("no prepared data: pass --data PREPARED_DIR (or run `orch prep SOURCE OUT` first)")
    if is_uri(data):
        return data
    p = Path(data).resolve()
    if not (p / "manifest.json").is_file():
        raise MissingPathError(f"{p} is not a prepared data directory (no manifest.json); run "
                                f"`orch prep SOURCE {data}` first, or pass the right --data")
    from data_prep import PreparedData

    PreparedData(p)  # validates the manifest (its fields, every path inside p) before any trial starts
    return str(p)


def restorable(exp_path: str) -> bool:
    """True when Tune can restore the experiment: its tuner.pkl AND at least one experiment state file exist
    (a driver killed before Tune's first state save leaves only tuner.pkl: then the sweep starts afresh)."""
    fs, path = _fs(exp_path)
    if fs.get_file_info(f"{path}/tuner.pkl").type != pafs.FileType.File:
        return False
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(Path(i.path).name.startswith("experiment_state-") and i.path.endswith(".json") for i in infos)


def check_options(exp_path: str, filename: str, name: str, scheduler: dict, checkpoint_every: int) -> None:
    """The options a rerun must repeat (scheduler, ``--checkpoint-every``), checked against the recorded plan before
    Ray starts (``check_plan`` checks the configurations once Ray says which resources there are): a rerun with
    another scheduler option is refused in a second, not after Ray's ~30 s start. Nothing recorded: nothing to
    check."""
    fs, path = _fs(exp_path)
    target = f"{path}/{filename}"
    if fs.get_file_info(target).type != pafs.FileType.File:
        return
    with fs.open_input_stream(target) as f:
        recorded = json.loads(f.read().decode())
    if "scheduler" in recorded and recorded["scheduler"] != scheduler:
        _scheduler_differs(recorded["scheduler"], scheduler, exp_path, name)
    _check_every({int(t.get("checkpoint_every", 1)) for t in recorded["trials"]}, {checkpoint_every}, exp_path, name)


def check_plan(exp_path: str, filename: str, plans: list[TrialPlan], name: str,
               scheduler: dict | None = None) -> None:
    """Record the planned trials and how they are scheduled (``scheduler``: the options that decide which trials
    run to the end, ``SchedulerConfig.record``); on a rerun, refuse a plan whose configurations or scheduler differ
    from the recorded ones (Tune restores the recorded configurations and scheduler, so a changed grid or option
    would silently be ignored). A plan file written before schedulers were recorded gets the scheduler added."""
    fs, path = _fs(exp_path)
    target = f"{path}/{filename}"
    new = {p.trial_id: p.config.to_dict() for p in plans}
    if fs.get_file_info(target).type == pafs.FileType.File:
        with fs.open_input_stream(target) as f:
            recorded = json.loads(f.read().decode())
        _check_trials({t["trial_id"]: t["config"] for t in recorded["trials"]}, new, exp_path, name)
        _check_every({int(t.get("checkpoint_every", 1)) for t in recorded["trials"]},
                     {p.checkpoint_every for p in plans}, exp_path, name)
        if scheduler is None or recorded.get("scheduler") == scheduler:
            return
        if "scheduler" in recorded:
            _scheduler_differs(recorded["scheduler"], scheduler, exp_path, name)
        _write_plan(fs, path, target, {**recorded, "scheduler": scheduler})
        return
    _write_plan(fs, path, target, {"trials": [p.to_dict() for p in plans],
                                   **({"scheduler": scheduler} if scheduler is not None else {})})


def _check_trials(old: dict, new: dict, exp_path: str, name: str) -> None:
    """ConfigError naming the first trials (and options) that differ between the recorded and the new plan."""
    if old == new:
        return
    diff = sorted(set(old) ^ set(new)) or [t for t in new if old[t] != new[t]]
    detail = ", ".join(diff[:3])
    if diff and diff[0] in old and diff[0] in new:
        changed = {k: (old[diff[0]].get(k), v) for k, v in new[diff[0]].items() if old[diff[0]].get(k) != v}
        detail += f" ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())})"
    raise ConfigError(f"sweep {name!r} in {exp_path} was started with other configurations (differ: "
                      f"{detail}); rerun it with its original grid and options, or choose a new --name")


def _scheduler_differs(recorded: dict, scheduler: dict, exp_path: str, name: str) -> None:
    raise ConfigError(f"sweep {name!r} in {exp_path} was started with {_flags(recorded)}, not {_flags(scheduler)}; "
                      "rerun it with its original scheduler options, or choose a new --name")


def _check_every(was: set[int], now: set[int], exp_path: str, name: str) -> None:
    """ConfigError when ``--checkpoint-every`` differs from the recorded plan's: Tune restores each trial's recorded
    settings, so the new value would silently be ignored (plans recorded before the option: every epoch)."""
    if now and was and now != was:
        raise ConfigError(f"sweep {name!r} in {exp_path} was started with --checkpoint-every {min(was)}, not "
                          f"{min(now)}; rerun it with --checkpoint-every {min(was)}, or choose a new --name")


def _flags(record: dict) -> str:
    """A scheduler record as the ``orch sweep`` options that give it: ``--scheduler asha --grace-period 2 ...``."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in record.items())


def _write_plan(fs, path: str, target: str, plan: dict) -> None:
    fs.create_dir(path, recursive=True)
    tmp = f"{target}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(plan, indent=1).encode())
    fs.move(tmp, target)


def upload(local_dir: Path, exp_path: str) -> None:
    """Copy the local results (results.csv, tables) into a remote sweep directory."""
    fs, path = _fs(exp_path)
    for f in sorted(local_dir.rglob("*")):
        if f.is_file() and "mlflow-buffer" not in f.parts:
            dest = f"{path}/{f.relative_to(local_dir).as_posix()}"
            fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            with open(f, "rb") as src, fs.open_output_stream(dest) as out:
                out.write(src.read())


def keep_checkpoints(df: pd.DataFrame, keep: int | None, sweep_dir: str) -> tuple[dict[str, str], dict[str, str]]:
    """Delete best.pt of the finished, diverged or stopped trials outside the top ``keep`` by test
    dice_volume_mean (None: keep all), and last.pt of the trials the scheduler stopped (they are never resumed;
    a finished trial has none); everything else of their run directories stays; only files inside ``sweep_dir``
    are ever deleted (results.csv is a file a user can edit). Returns (trial id -> kept best.pt, trial id -> why it
    has none). Unfinished trials are never touched: their checkpoint is how they resume."""
    ranked = list(top_trials(df, len(df))["trial_id"])  # best first
    top = set(ranked[:keep]) if keep is not None else None
    why = f"not kept: outside the top {keep} by test dice_volume_mean (keep_checkpoints={keep})"
    kept, pruned, freed = {}, {}, 0
    for tid, status, run_dir in zip(df["trial_id"], df["status"], df["run_dir"]):
        if status not in (*HAS_RESULT, STOPPED_EARLY) or not isinstance(run_dir, str) or not run_dir:
            continue
        doomed = (["last.pt"] if status == STOPPED_EARLY else []) + (
            ["best.pt"] if top is not None and tid not in top else [])
        try:
            freed += sum(delete_file(inside(join(run_dir, f), sweep_dir)) for f in doomed)
        except ValueError as e:  # an edited results.csv: never delete outside the sweep
            log.warning("trial %s: %s; its checkpoint is left alone", tid, e)
            continue
        if "best.pt" in doomed:
            pruned[tid] = why
        elif file_size(join(run_dir, "best.pt")) is not None:
            kept[tid] = join(run_dir, "best.pt")
    log.info("kept the best.pt of %d trials (%s); deleted %d bytes of checkpoints", len(kept),
             "all" if top is None else f"top {keep} by test dice_volume_mean", freed)
    order = {t: i for i, t in enumerate(ranked)}  # kept: best first, then unranked ones in grid order
    return dict(sorted(kept.items(), key=lambda kv: order.get(kv[0], len(order)))), pruned
