"""What a training run is: ``TrainConfig``, its recipes and budgets, and the learning-rate schedule.

A run is a pure function of its config: ``lenszoo train --resume`` reads it back from
``run.json`` and only the options in ``RUNTIME_OPTIONS`` (how, not what, it computes) may
change. The CLI of ``lenszoo train`` is built from the fields of ``TrainConfig``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..errors import LenszooError
from ..runtime import PRECISIONS
from ..tasks import TASKS, check_task

# Recipes: "paper" is the seed paper's (the default); "cpu" is what trains best in
# minutes on a few cores (see docs/training.md). Explicit options override either.
# A paper epoch is one pass over stored data (the paper's 3 x 30,000 images); a stream has no
# passes, so there it is 90,000 images.
RECIPES = {
    "paper": {"lr": 1e-4, "batch_size": 64, "epochs": 10, "schedule": "constant", "augment": "none",
              "epoch_size": None, "weight_decay": 0.0, "precision": "fp32", "channels_last": False,
              "nuisance": "none"},
    "cpu": {"lr": 1e-3, "batch_size": 64, "epochs": 24, "schedule": "cosine", "augment": "rot90flip",
            "epoch_size": 12_000, "weight_decay": 0.0, "precision": "fp32", "channels_last": False,
            "nuisance": "none"},
}
PAPER_STREAM_EPOCH = 90_000
# --nuisance: what a real cutout carries, drawn per training image on the raw image before
# normalisation (lenszoo/data/nuisance.py), in units of the dataset's background noise sigma;
# recorded whole in each checkpoint's recipe.
#   sky_sigma:   a constant sky offset ~ U(-sky_sigma, +sky_sigma) * sigma
#   noise_scale: the background noise taken to U(low, high) * sigma (noise is only ever added)
NUISANCE_RECIPES: dict[str, dict] = {
    "none": {},
    "sky_noise": {"sky_sigma": 3.0, "noise_scale": [1.0, 3.0]},
}
# The cpu recipe's budget for each built-in architecture: the images it trains in 15 minutes on an
# idle 2-core machine at its faster precision (benchmarks/throughput.py; docs/training.md). The
# budget is fixed in images, so a busy machine changes only the wall time, never the weights.
# Measured 2026-12-01 on an AMD EPYC with AVX2 only (no AVX-512, no native bf16: bf16 autocast is
# emulated there and 7-30x slower than fp32, so fp32 wins for every architecture).
CPU_BUDGETS: dict[str, dict] = {
    "resnet50": {"epochs": 5, "epoch_size": 7_000, "channels_last": True},  # 39.0 img/s -> 35,069
    "c8_steerable": {"epochs": 16, "epoch_size": 12_000, "channels_last": True},  # 214.5 img/s -> 193,018
    "hnet": {"epochs": 20, "epoch_size": 15_750},  # 350.0 img/s -> 315,000 (channels_last within noise)
    "etn": {"epochs": 24, "epoch_size": 39_000, "channels_last": True},  # 1,040.9 img/s -> 936,831
    # the control: an MLP on 37 fixed features is not compute-bound; the default cpu recipe's 288,000
    # images are far past where its validation loss flattens
    "radial_profile": {"epochs": 24, "epoch_size": 12_000},
}
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("none", "flip", "rot90", "rot90flip")
# Options that may differ between a run and its --resume: they change how, not what, it computes.
# Threads change the order of float sums, so a run records its thread count and keeps it.
RUNTIME_OPTIONS = ("out", "device", "workers", "max_minutes", "save_every_minutes",
                   "save_every_steps", "quiet", "verify")


def _option(default=None, help: str = "", *, kind=None, choices=None, flag: str | None = None, cli: bool = True,
            **extra):
    """A TrainConfig field and how `lenszoo train` offers it (the CLI is built from these)."""
    metadata = {"help": help, "kind": kind, "choices": choices, "flag": flag, "cli": cli, **extra}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


def _recipe_values(key: str) -> str:
    """'paper: X / cpu: Y' for an option's help, from RECIPES itself (so the help cannot drift)."""
    text = " / ".join(f"{name}: {_show(values[key])}" for name, values in RECIPES.items())
    budgets = {arch: budget[key] for arch, budget in CPU_BUDGETS.items() if key in budget}
    if budgets:
        text += " (" + ", ".join(f"{arch} {_show(value)}" for arch, value in budgets.items()) + ")"
    return text


def _show(value) -> str:
    if value is None:
        return "one pass over --data (90,000 with --stream)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:,}" if isinstance(value, int) else str(value)


@dataclass
class TrainConfig:
    """Everything that decides a training run. The fields are the options of `lenszoo train`:
    ``commands/train.py`` builds its CLI from this class, so names, defaults and help live here."""

    arch: str = _option(None, "Architecture to train (see `lenszoo list`).", kind=str)
    task: str = _option("classify", "What to learn (regress: log10 m_a of axion images)", choices=TASKS)
    dataset: str | None = _option(None, "A registered dataset (see `lenszoo list --datasets`); with --data it is "
                                        "read from the data.",
                                  kind=str)
    out: str | None = _option(None, "Run directory [default: runs/ARCH-TASK-DATASET-seedSEED]; new, empty, or a run "
                                    "to --resume.", kind="path")
    data: str | None = _option(None, "A stored dataset written by `lenszoo simulate` (train split).", kind="path")
    val_data: str | None = _option(None, "A stored validation dataset (default: hold out --val-fraction of --data, "
                                         "or simulate --val-size images with --stream).", kind="path")
    stream: bool = _option(False, "Simulate training images on the fly (fixed-size epochs).", kind="flag")
    recipe: str = _option("paper", "Defaults for the options marked 'recipe': paper (the seed paper's: Adam 1e-4, "
                                   "constant, no augmentation) or cpu (lr 1e-3, cosine, rot90+flip, each built-in's "
                                   "15-minute budget in images).", choices=tuple(RECIPES))
    lr: float | None = _option(None, "Adam learning rate", kind=float, recipe=True)
    batch_size: int | None = _option(None, "Images per step and process", kind=int, recipe=True)
    epochs: int | None = _option(None, "Epochs", kind=int, recipe=True)
    schedule: str | None = _option(None, "Learning-rate schedule, per step", choices=SCHEDULES, recipe=True)
    augment: str | None = _option(None, "Exact pixel-grid symmetries applied at random", choices=AUGMENTATIONS,
                                  recipe=True)
    nuisance: str | None = _option(None, "What real cutouts carry, drawn per training image on the raw image "
                                         "before normalisation: none, or sky_noise (a sky offset ~ U(-3, 3) "
                                         "background sigma and the noise taken to U(1, 3) sigma)",
                                   choices=tuple(NUISANCE_RECIPES), recipe=True)
    epoch_size: int | None = _option(None, "Images per epoch (any data source; epochs cross passes over stored "
                                           "data)", kind=int, recipe=True)
    weight_decay: float | None = _option(None, "Adam weight decay", kind=float, recipe=True)
    precision: str | None = _option(None, "fp32, or bf16 autocast for the forward pass (weights, loss and optimizer "
                                          "stay fp32)", choices=PRECISIONS, recipe=True)
    channels_last: bool | None = _option(None, "Train in channels_last memory format", kind="switch", recipe=True)
    init: str | None = _option(None, "Start from the weights of a run directory or checkpoint folder of the same "
                                     "--arch and --task (e.g. a curriculum's earlier stage) instead of a random "
                                     "initialisation; the optimizer and the image budget start afresh.", kind="path")
    val_size: int = _option(3000, "Validation images simulated with --stream.", kind=int)
    val_fraction: float = _option(0.1, "Share of --data held out for validation when there is no --val-data.",
                                  kind=float)
    model_args: dict = _option({}, "Architecture argument KEY=VALUE, VALUE read as JSON (repeatable).",
                               kind="model_args", flag="--model-arg")
    seed: int = _option(0, "Seeds initialisation, data order, augmentation and the stream.", kind=int)
    device: str = _option("auto", "auto (a GPU when present), cpu, cuda, cuda:N or mps.", kind=str)
    workers: int = _option(0, "DataLoader worker processes (simulate --stream images in parallel); results do not "
                              "depend on it.", kind=int)
    threads: int | None = _option(None, "Torch threads per process [default: the cores / processes per machine]; "
                                        "recorded and kept on --resume.", kind=int)
    max_minutes: float | None = _option(None, "Stop cleanly, with a resumable state, after this many minutes.",
                                        kind=float)
    save_every_minutes: float | None = _option(10.0, "Also save a resumable state mid-epoch this often.", kind=float)
    save_every_steps: int | None = _option(None, "Also save a resumable state every N optimizer steps.", kind=int)
    quiet: bool = _option(False, "No progress bar or per-epoch lines.", kind="flag")
    verify: bool = _option(True, "Skip checking stored data against the sha256s in its manifest (a few seconds per "
                                 "GB).", kind="negative_flag", flag="--no-verify")

    def resolved(self) -> "TrainConfig":
        """A copy with recipe defaults filled in and every option checked."""
        if self.recipe not in RECIPES:
            raise LenszooError(f"unknown recipe {self.recipe!r}; choose one of: {', '.join(RECIPES)}")
        values = asdict(self)
        defaults = {**RECIPES[self.recipe], **(CPU_BUDGETS.get(self.arch, {}) if self.recipe == "cpu" else {})}
        for key, default in defaults.items():
            if values[key] is None:
                values[key] = default
        if values["epoch_size"] is None and values["stream"]:
            values["epoch_size"] = PAPER_STREAM_EPOCH
        config = TrainConfig(**values)
        config.check()
        return config

    def check(self):
        if not self.arch:
            raise LenszooError("no architecture: give --arch NAME (see `lenszoo list`)")
        check_task(self.task)
        if self.schedule not in SCHEDULES:
            raise LenszooError(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.augment not in AUGMENTATIONS:
            raise LenszooError(f"unknown augmentation {self.augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
        if self.nuisance not in NUISANCE_RECIPES:
            raise LenszooError(f"unknown nuisance augmentation {self.nuisance!r}; choose one of: "
                               f"{', '.join(NUISANCE_RECIPES)}")
        if self.precision not in PRECISIONS:
            raise LenszooError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        whole = {"batch_size": self.batch_size, "epochs": self.epochs, "val_size": self.val_size,
                 "epoch_size": self.epoch_size, "save_every_steps": self.save_every_steps, "threads": self.threads}
        for name, value in whole.items():
            if value is None and name in ("epoch_size", "save_every_steps", "threads"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LenszooError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        for name, value, low in (("workers", self.workers, 0), ("seed", self.seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LenszooError(f"--{name} must be a whole number >= {low}, got {value!r}")
        real = {"lr": (self.lr, "> 0"), "weight_decay": (self.weight_decay, ">= 0"),
                "max_minutes": (self.max_minutes, "> 0"), "save_every_minutes": (self.save_every_minutes, "> 0")}
        for name, (value, rule) in real.items():
            if value is None and name in ("max_minutes", "save_every_minutes"):
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and (value > 0 if rule == "> 0" else value >= 0)
            if not ok:
                raise LenszooError(f"--{name.replace('_', '-')} must be a finite number {rule}, got {value!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            raise LenszooError(f"--val-fraction must be between 0 and 1, got {self.val_fraction!r}")
        if not isinstance(self.model_args, dict):
            raise LenszooError(f"model_args must be a dict of architecture arguments, got {type(self.model_args).__name__}")
        if not isinstance(self.channels_last, bool):
            raise LenszooError(f"channels_last must be true or false, got {self.channels_last!r}")
        if self.stream and self.data:
            raise LenszooError("give either --data DIR or --stream, not both")
        if not self.stream and not self.data:
            raise LenszooError("no training data: give --data DIR (a dataset written by `lenszoo simulate`) "
                               "or --stream (simulate images on the fly)")
        if self.stream and not self.dataset:
            raise LenszooError("--stream needs --dataset NAME (see `lenszoo list --datasets`) to know what to simulate")
        if not self.out:
            raise LenszooError("no run directory: give --out RUN_DIR")

    def recipe_dict(self) -> dict:
        """What a checkpoint records about how it was trained."""
        keys = ("recipe", "lr", "batch_size", "epochs", "epoch_size", "schedule", "augment", "weight_decay",
                "precision", "channels_last", "seed")
        recipe = {k: getattr(self, k) for k in keys}
        if self.nuisance not in (None, "none"):  # recorded whole: the draws, not only their name
            recipe["nuisance"] = {"name": self.nuisance, **NUISANCE_RECIPES[self.nuisance]}
        recipe.update(optimizer="adam", loss="cross_entropy" if self.task == "classify" else "mse_log10_ma",
                      data="stream" if self.stream else "stored")
        if recipe["epoch_size"] is None:
            recipe["epoch_size"] = "one pass over the training data"
        return recipe


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if schedule == "constant":
        return 1.0
    t = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    # onecycle: cosine warm-up from lr/25 over 30 % of the run, cosine decay to lr/2.5e5
    warm = 0.3
    if t < warm:
        return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * t / warm))
    low = 1 / 25 / 1e4
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))
