"""Typed, frozen configuration: one dataclass per concern.

Dicts exist only at the Ray / MLflow / checkpoint boundary: ``TrainConfig.from_dict(d)`` is the first line of a
trial, ``cfg.to_dict()`` is what MLflow logs as params and what a checkpoint stores so it can rebuild the run.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from models import list_encoders
from orchestrator.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("bce", "dice", "bce_dice")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("constant", "cosine", "poly")  # lr after warm-up: flat, cosine to 0, or (1 - t)^0.9 (nnU-Net)
SCHEDULERS = ("fifo", "asha")  # a sweep's trial scheduler: the full grid, or ASHA screening
SAMPLINGS = ("uniform", "tumour")  # which training slices an epoch draws
AMPS = ("auto", "bf16", "fp16", "off")  # autocast dtype; auto: bf16 where supported, fp16 on older GPUs, off on CPU
CUDA_GRAPHS = ("auto", "on", "off")  # capture the whole training step (auto: keep it where it is faster)

class ConfigError(UserError, ValueError):
    """A configuration value a user can fix: the message names the value and the valid choices."""


# Names that become directories (sweep names, trial ids): no separators, no "." / "..", nothing a shell or a URI
# would read differently. A trial id of ".." once made a sweep delete another sweep's scratch directory.
_SAFE_NAME = re.compile(r"[A-Za-z0-9._+-]+")  # "+": lr 1e+08 in a short_name


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a safe directory name (``[A-Za-z0-9._+-]+``, not ``.`` or ``..``); else ConfigError."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{kind} {value!r} is not a valid name: it names a directory, so use letters, digits, "
                          "'.', '_', '+' and '-' only (and not '.' or '..')")
    return value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[arg-type]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build from a dict, ignoring unknown keys (forward compatibility of checkpoints) and missing ones
        (defaults apply). Tuples are restored from lists."""
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        kwargs = {}
        for k, v in d.items():
            if k in known:
                if isinstance(v, list):
                    v = tuple(v)
                kwargs[k] = v
        return cls(**kwargs)  # type: ignore[call-arg]

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class ModelConfig(_DictMixin):
    """A ResNet-UNet: encoder name from ``models.list_encoders()``; everything else has the reference defaults."""

    encoder: str = "resnet34"
    in_channels: int = 3
    classes: int = 1
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    weights: str | None = None  # optional local ImageNet weights file for the encoder; nothing is downloaded
    head_relu: bool = False  # a ReLU between the last decoder conv and the head (smp's U-Net); models/unet.py


@dataclass(frozen=True)
class TrainConfig(_DictMixin):
    """One training configuration: everything one trial of a sweep (or ``orch train``) needs."""

    encoder: str = "resnet34"
    optimizer: str = "adamw"
    lr: float = 1e-3
    epochs: int = 50
    batch_size: int = 16
    loss: str = "bce_dice"
    seed: int = 0
    momentum: float = 0.9  # SGD only (RMSProp keeps torch's default of 0, as the paper's Keras-style setup)
    weight_decay: float = 1e-4
    augment: bool = True  # flips, rotation, scale (geometric, on the device)
    # The model: the head sees the last decoder conv through a ReLU (segmentation_models_pytorch's U-Net, the
    # paper's model) or directly (orch's default: the ReLU lets a model lock itself into predicting nothing).
    head_relu: bool = False
    # The recipe's levers (orchestrator/recipe.py says which are on by default and why; BENCHMARKS.md measures
    # each). The paper grid pins every one of them to the paper's setting.
    schedule: str = "cosine"
    warmup_epochs: float = 1.0  # linear warm-up from ~0 to lr over this many epochs (at most ``epochs``)
    sampling: str = "tumour"
    tumour_fraction: float = 0.5  # sampling="tumour": this share of the drawn slices hold tumour
    intensity_aug: bool = False  # per-channel brightness and gamma jitter, on the device
    tta: bool = False  # evaluation and prediction average the model with its left-right mirror
    min_component: int = 0  # post-processing: drop 3D tumour components under this many voxels (at 256 px)
    # Cross-validation: ``fold`` (1..folds) of ``folds`` patient-level folds replaces the prepared split.
    folds: int | None = None
    fold: int | None = None
    # Scaling knobs for CPU demos and CI: None means "the real thing".
    max_steps: int | None = None  # optimizer steps per epoch
    image_size: int | None = None  # train/evaluate at this square size (resized on the device)
    max_eval_slices: int | None = None  # evaluate on at most this many slices (whole patients kept together)
    eval_batch_size: int = 64
    device: str = "auto"
    amp: str = "auto"  # auto | bf16 | fp16 | off
    cuda_graph: str = "auto"  # auto | on | off: capture the whole training step
    weights: str | None = None

    def __post_init__(self) -> None:
        """ConfigError for the first invalid field: a name outside its choices (the encoder outside the registry),
        or a number outside its range; the message names the value and what is valid."""
        for name, choices in self._choices().items():
            _check_choice(name, getattr(self, name), choices)
        for ok, problem in self._ranges():
            if not ok:
                raise ConfigError(problem)

    def _choices(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": tuple(list_encoders()), "optimizer": OPTIMIZERS, "loss": LOSSES, "device": DEVICES,
                "amp": AMPS, "cuda_graph": CUDA_GRAPHS, "schedule": SCHEDULES, "sampling": SAMPLINGS}

    def _ranges(self) -> list[tuple[bool, str]]:
        """(field is in range, what to say if not), in the order they are checked."""
        folds, fold, size = self.folds, self.fold, self.image_size
        return [
            (0.0 < self.tumour_fraction < 1.0,
             f"tumour_fraction={self.tumour_fraction!r} must lie strictly between 0 and 1, e.g. 0.5"),
            (not (self.warmup_epochs < 0 or self.warmup_epochs > self.epochs),
             f"warmup_epochs={self.warmup_epochs!r} must lie in [0, epochs={self.epochs}]"),
            (not self.weight_decay < 0, f"weight_decay={self.weight_decay!r} must be >= 0"),
            (not self.min_component < 0, f"min_component={self.min_component!r} must be >= 0 (0: no post-processing)"),
            (folds is None or not folds < 2, f"folds={folds!r} must be >= 2 (or unset for the prepared split)"),
            (fold is None or bool(folds and 1 <= fold <= folds), f"fold={fold!r} must lie in 1..folds (folds={folds})"),
            (self.lr > 0, f"lr={self.lr!r} must be a positive number, e.g. 1e-3"),
            (not self.epochs < 1, f"epochs={self.epochs!r} must be >= 1"),
            (not self.batch_size < 1, f"batch_size={self.batch_size!r} must be >= 1"),
            (self.max_steps is None or not self.max_steps < 1, f"max_steps={self.max_steps!r} must be >= 1 (or unset)"),
            (size is None or not (size < 32 or size % 32),
             f"image_size={size!r} must be a multiple of 32 and >= 32 (or unset)"),
        ]

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(encoder=self.encoder, weights=self.weights, head_relu=self.head_relu)

    @property
    def short_name(self) -> str:
        """A stable, human-readable id: ``resnet50-adam-lr1e-04`` (``...-fold2`` for a cross-validation fold)."""
        fold = f"-fold{self.fold}" if self.fold is not None else ""
        return f"{self.encoder}-{self.optimizer}-lr{self.lr:.0e}{fold}"


@dataclass(frozen=True)
class TrackingConfig(_DictMixin):
    """Where MLflow records go. ``tracking_uri=None`` means ``sqlite:///<workdir>/mlflow.db``."""

    tracking_uri: str | None = None
    experiment: str | None = None  # default: the sweep name
    buffer_dir: str | None = None  # where records wait while the server is unreachable
    log_models_top_k: int = 3
    # How a trial's best checkpoint reaches MLflow. "reference" (default): the sweep's storage copy IS the
    # checkpoint; the run gets its location as the tag orch.checkpoint and the top-k models are weight-free
    # pyfunc models pointing at it. One copy of the bytes: 45 paper-grid checkpoints are 6.8 GB, and a second
    # copy in the artefact store doubled the demo's disk (~12 GB). "copy": also upload best.pt as an artefact
    # and log the top-k as self-contained mlflow.pytorch models, for a store whose readers cannot reach the
    # sweep storage (a remote server; storage on a cluster's local disk).
    log_checkpoints: str = "reference"

    def __post_init__(self) -> None:
        _check_choice("log_checkpoints", self.log_checkpoints, ("reference", "copy"))
        if self.log_models_top_k < 0:
            raise ConfigError(f"log_models_top_k={self.log_models_top_k!r} must be >= 0 (0: log no models)")


@dataclass(frozen=True)
class SweepConfig(_DictMixin):
    """A sweep: a grid plus how to run it on Ray (``orchestrator.sweep.run_sweep`` takes one)."""

    name: str | None = None  # experiment name; default: the grid's name
    grid: str = "paper"  # a grid name (orchestrator/grids/*.csv) or the path of a grid CSV
    data: str = ""  # prepared data directory (or URI) every worker node can read
    storage: str = ""  # local path or URI (s3://...) holding <storage>/<name>/; default ./sweeps
    address: str | None = None  # None: start a local Ray for this command; "auto": join a running cluster
    gpus_per_trial: float | None = None  # None: per-encoder share (orchestrator.sweep.plan); >1: DDP
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None  # None: follows the cluster's resources
    max_failures: int = 2  # trial-level retries (node loss, crash) before a trial is "error"
    resume: bool = False  # require an existing sweep to restore (without it: restore when one exists)
    restart_errored: bool = False  # on restore, rerun errored trials from scratch instead of from checkpoints
    launcher: str = "auto"  # auto | inprocess | train (Ray Train TorchTrainer even for <= 1 GPU)
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields applied to every grid row
    # K-fold cross-validation over patients: every grid row becomes K trials (<row id>-fold<k>), and the sweep
    # gathers each row's K test folds into cv/<row id>/ and cv_results.csv (orchestrator.sweep.cv). None: the
    # prepared split.
    folds: int | None = None
    # Repeats: every trial (every fold) is trained N times, with TrainConfig.seed 0..N-1 (<id>-seed<s>; results.csv's
    # seed column), so the report can tell a configuration's effect from its seed's. None: one run, the config's seed.
    seeds: int | None = None
    # After the sweep, delete best.pt of the trials outside the top K by test dice_volume_mean (their metrics,
    # plots, per-patient tables and result.json stay). None: keep every checkpoint. Irreversible: a rerun with
    # a larger K cannot bring a deleted checkpoint back.
    keep_checkpoints: int | None = None
    # Trial scheduler (orchestrator.sweep.schedulers): "fifo" runs the full grid; "asha" screens it (Tune's
    # ASHAScheduler stops the trials that trail at each rung).
    scheduler: str = "fifo"
    grace_period: int | None = None  # asha: the first rung in epochs; None: max(2, epochs // 4)
    reduction_factor: int = 3  # asha: rungs at grace * R**k epochs, each keeps 1 in R
    asha_metric: str = "val_dice_volume_mean"  # asha: a val_ column of results.csv; a *loss is minimised
    # A trial reports a checkpoint (a copy of its run directory, last.pt included: ~1.1 GB for ResNet152) to the
    # storage every N epochs and at the end; a restarted trial loses at most the N - 1 epochs since. 1: every epoch
    # (default until the copy's cost is measured on a GPU with object storage, BENCHMARKS.md "Issue 13").
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        check_name("sweep name" if self.name else f"sweep name (from the grid file {self.grid}; or pass --name)",
                   self.sweep_name)
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints={self.keep_checkpoints!r} must be >= 1 (or unset to keep all)")
        if self.seeds is not None and self.seeds < 1:
            raise ConfigError(f"seeds={self.seeds!r} must be >= 1 (or unset for one run with the config's seed)")
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) \
                or self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every={self.checkpoint_every!r} must be a whole number of epochs >= 1 "
                              "(1: a checkpoint every epoch)")
        if self.scheduler == "asha" and self.folds:
            raise ConfigError("--scheduler asha with --folds K: a stopped fold leaves its configuration's "
                              "cross-validation incomplete; screen without --folds, then cross-validate the survivors")

    @property
    def sweep_name(self) -> str:
        return self.name or Path(self.grid).stem
