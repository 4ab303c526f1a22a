"""The command line as users' scripts see it: every ``orch`` command's options (names, flags, types, choices,
defaults) against ``cli_contract.json``, taken before issue 11's refactor, and the files each command writes."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import click
from click.testing import CliRunner

CONTRACT = Path(__file__).with_name("cli_contract.json")
SCALARS = (str, int, float, bool, type(None))


def _default(value):
    """A JSON-able default: the value if a plain scalar, else its repr without a memory address."""
    if isinstance(value, SCALARS):
        return value
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _param(p: click.Parameter) -> dict:
    row = {"name": p.name, "kind": type(p).__name__, "opts": sorted(p.opts + p.secondary_opts),
           "required": p.required, "multiple": p.multiple, "nargs": p.nargs,
           "type": {"choice": list(p.type.choices)} if isinstance(p.type, click.Choice) else p.type.name,
           "default": _default(p.default)}
    if isinstance(p, click.Option):
        row["is_flag"] = p.is_flag
    return row


def describe(group: click.Group) -> dict[str, list[dict]]:
    """Every command's parameters in declaration order; the group's own under ``<main>``."""
    ctx = click.Context(group)
    out = {"<main>": [_param(p) for p in group.params]}
    for name in group.list_commands(ctx):
        out[name] = [_param(p) for p in group.get_command(ctx, name).params]
    return out


def test_cli_options_match_the_contract():
    from orchestrator.cli import main

    want = json.loads(CONTRACT.read_text(encoding="utf-8"))
    got = json.loads(json.dumps(describe(main)))  # tuples as lists, as the file reads back
    diffs = []
    for command in sorted(set(want) | set(got)):
        a = json.dumps(want.get(command), indent=1, sort_keys=True).splitlines()
        b = json.dumps(got.get(command), indent=1, sort_keys=True).splitlines()
        diffs += difflib.unified_diff(a, b, f"contract: orch {command}", f"code: orch {command}", lineterm="")
    assert not diffs, "the CLI differs from tests/cli/cli_contract.json:\n" + "\n".join(diffs)


# What each command writes, as patterns: <folder> a patient folder (TCGA_CS_4941_19960909), <patient> a patient id
# (TCGA_CS_4941), <n> a slice number.
WRITES = {
    "synth": {"syn/kaggle_3m/README.md", "syn/kaggle_3m/data.csv", "syn/kaggle_3m/<folder>/<folder>_<n>.tif",
              "syn/kaggle_3m/<folder>/<folder>_<n>_mask.tif"},
    "prep": {"orch.toml", "prep/manifest.json", "prep/metadata.parquet", "prep/metadata_raw.parquet",
             "prep/shards/<patient>.h5", "prep/.orch-prep.json", "prep/.orch-prep.lock"},
    "train": {"run/config.json", "run/last.pt", "run/best.pt", "run/result.json", "run/history.csv",
              "run/per_patient_dice.csv", "run/per_patient.csv", "run/learning_curve.png", "run/overlay.png"},
    "predict": {"pred/<folder>/<folder>_<n>_mask.tif", "pred/overlays/<folder>/<folder>_<n>.png",
                "pred/patients.csv"},
    "evaluate": {"metrics.json", "per_patient.csv"},
}


def _pattern(rel: str) -> str:
    rel = re.sub(r"TCGA_[A-Z0-9]+_[A-Z0-9]+_\d{8}", "<folder>", rel)
    rel = re.sub(r"TCGA_[A-Z0-9]+_[A-Z0-9]+", "<patient>", rel)
    return re.sub(r"<folder>_\d+", "<folder>_<n>", rel)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_commands_write_the_same_files(tmp_path, monkeypatch):
    """synth -> prep -> train -> predict -> evaluate on 3 tiny synthetic patients; each writes exactly its files
    (new files only: ``orch prep`` records OUT in ./orch.toml; ``--no-tracking`` leaves no mlflow.db)."""
    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_PLAIN", "1")
    monkeypatch.setenv("ORCH_RUNS_DIR", str(tmp_path / "runs"))
    folder = None
    steps = {
        "synth": lambda: ["synth", "syn", "--patients", "3", "--workers", "1"],
        "prep": lambda: ["prep", "syn", "prep", "--workers", "1"],
        "train": lambda: ["train", "--data", "prep", "--encoder", "resnet18", "--image-size", "32", "--epochs", "1",
                          "--max-steps", "2", "--device", "cpu", "--no-tracking", "--out", "run"],
        # A threshold near 0: every slice holds predicted tumour, so an untrained model writes overlays too.
        "predict": lambda: ["predict", "run/best.pt", f"syn/kaggle_3m/{folder}", "pred", "--device", "cpu",
                            "--threshold", "0.001"],
        "evaluate": lambda: ["evaluate", "pred", "syn/kaggle_3m", "--predicted-patients-only", "--json",
                             "metrics.json", "--per-patient", "per_patient.csv"],
    }
    written = {}
    for command, args in steps.items():
        before = _files(tmp_path)
        result = CliRunner().invoke(main, args())
        assert result.exit_code == 0, f"orch {command}:\n{result.output}\n{result.exception!r}"
        written[command] = {_pattern(f) for f in _files(tmp_path) - before}
        if command == "synth":
            folder = sorted(p.name for p in (tmp_path / "syn" / "kaggle_3m").iterdir() if p.is_dir())[0]
    assert written == WRITES


# results.csv as users' scripts read it (pinned before the issue-11 refactor; issue 12 added seed and stopped_epoch;
# issue 14 the predict-nothing baseline of each trial's test slices, test_baseline_*; a change here is a contract
# change).
RESULTS_COLUMNS = [
    "trial_id", "encoder", "optimizer", "lr", "loss", "epochs", "batch_size", "fold", "seed", "status",
    "epochs_completed",
    "best_epoch", "val_dice_volume_mean", "val_dice_global", "val_dice_slice_pos", "val_dice_slice_all_empty1",
    "val_iou_tumour", "val_miou_2class", "val_pixel_accuracy", "val_loss", "test_dice_volume_mean",
    "test_dice_global", "test_dice_slice_pos", "test_dice_slice_all_empty1", "test_iou_tumour", "test_miou_2class",
    "test_pixel_accuracy", "test_loss", "test_baseline_miou_2class", "test_baseline_dice_slice_all_empty1",
    "test_baseline_dice_volume_mean", "train_loss", "it_per_s", "img_per_s", "gpus", "workers", "run_dir", "error",
    "stopped_epoch"]


def test_results_csv_columns_are_the_contract():
    from orchestrator.results_schema import results_columns

    assert list(results_columns()) == RESULTS_COLUMNS
