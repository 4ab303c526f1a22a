"""``orch predict`` and ``orch evaluate``: glue to :mod:`orchestrator.predict` and :mod:`orchestrator.score_masks`
(parse, one library call, print). Neither loads torch until the command runs."""

from __future__ import annotations

import click

from orchestrator.cli.common import metrics_table, user_errors
from orchestrator.config import DEVICES


@click.command("predict")
@click.argument("model", metavar="MODEL")
@click.argument("input_dir", metavar="INPUT", type=click.Path(exists=True, file_okay=False))
@click.argument("out", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="Probability above which a pixel is tumour.")
@click.option("--no-overlays", is_flag=True, help="Skip the overlay PNGs.")
@click.option("--patient", "patients", multiple=True, metavar="ID",
              help="Only this patient (e.g. TCGA_DU_5853; repeatable). Default: every patient folder in INPUT.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow store a models:/ or runs:/ MODEL is read from (default sqlite:///<current dir>/mlflow.db: "
              "run predict where the sweep ran, or name its store).")
@user_errors
def predict_cmd(model: str, input_dir: str, out: str, device: str, batch_size: int, threshold: float,
                no_overlays: bool, patients: tuple[str, ...], tracking_uri: str | None) -> None:
    """Predict tumour masks for a patient folder or an LGG tree, with LGG naming (..._<n>_mask.tif).

    \b
    MODEL: a checkpoint (best.pt), a run / sweep-trial directory, or an MLflow model URI: models:/SWEEP-best@champion
    (a sweep's best trial; @rank-2, @rank-3 the next), models:/NAME/VERSION, models:/MODEL_ID, runs:/RUN_ID/model.
    Example:
      orch predict runs/resnet34/best.pt kaggle_3m/TCGA_CS_4941_19960909 predictions/
      orch predict models:/paper-best@champion kaggle_3m/ pred/ --tracking-uri sqlite:///$PWD/mlflow.db
      orch predict runs/resnet34/best.pt kaggle_3m/ pred/ --patient TCGA_DU_5853
      orch evaluate pred/ kaggle_3m/ --predicted-patients-only     # score them against the truth
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.predict import describe, predict_tree

    with Progress(TextColumn("predicting (patients)"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("predict", total=None)
        rows = predict_tree(model, input_dir, out, device=device, batch_size=batch_size, threshold=threshold,
                            overlays=not no_overlays, patients=patients, tracking_uri=tracking_uri,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    click.echo(describe(rows, out))


@click.command("evaluate")
@click.argument("pred", type=click.Path(file_okay=False))
@click.argument("truth", type=click.Path(file_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the metrics here.")
@click.option("--per-patient", type=click.Path(dir_okay=False), default=None, help="Write per-patient Dice CSV here.")
@click.option("--predicted-patients-only", is_flag=True,
              help="Score only the patient folders PRED holds (e.g. test-patient predictions vs a whole kaggle_3m).")
@user_errors
def evaluate_cmd(pred, truth, json_out, per_patient, predicted_patients_only):
    """Score predicted masks PRED (LGG layout, ..._<n>_mask.tif) against the truth tree TRUTH.

    \b
    Example:
      orch predict runs/r34/best.pt kaggle_3m/ pred/ --patient TCGA_DU_5853
      orch evaluate pred/ kaggle_3m/ --predicted-patients-only
    """
    from rich.console import Console
    from rich.progress import Progress

    from orchestrator.score_masks import evaluate

    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("scoring slices", total=None)
        ev = evaluate(pred, truth, json_out=json_out, per_patient=per_patient,
                      predicted_patients_only=predicted_patients_only,
                      progress=lambda i, n: bar.update(task, completed=i, total=n))
    console.print(metrics_table(f"{ev.slices} slices, {ev.patients} patients", ev.metrics))


COMMANDS = [predict_cmd, evaluate_cmd]
