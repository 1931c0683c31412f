"""The training harness behind ``lenszoo train``.

A run is a pure function of its config and seed: every batch's items, every
augmentation and every dropout mask derive from ``(seed, epoch, step, rank)``,
so a run stopped anywhere (budget, SIGTERM, SIGKILL) and resumed ends with the
same weights as one that never stopped (on CPU, same thread count).

Run directory::

    run.json            the run's config (what --resume continues)
    state/LATEST        name of the newest complete resumable state
    state/NNNNNN/       weights/ (checkpoint folder) + trainer_state.pt (optimizer, progress)
    best/  last/        checkpoint folders (model.safetensors + config.json), best on validation
    metrics.jsonl       one JSON line per epoch
    learning_curve.png

Only rank 0 writes. Each state folder is written whole before LATEST names it,
so a kill at any point leaves the previous state usable.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .checkpoint import atomic_folder, atomic_write_text, load_checkpoint, save_checkpoint
from .files import claim_output
from .runtime import (  # noqa: F401 - resolve_device and DistContext are used by evaluate and tests
    PRECISIONS,
    DistContext,
    autocast,
    available_cores,
    hardware_name,
    init_distributed,
    resolve_device,
)
from .errors import LenszooError
from .tasks import CLASS_NAMES, check_task

RUN_FORMAT = "lenszoo-run"
RUN_FILE = "run.json"
STATE_DIR = "state"
LATEST_FILE = "LATEST"
TRAINER_STATE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"

# Recipes: "paper" is the seed paper's (the default); "cpu" is what trains best in
# minutes on a few cores (see docs/training.md). Explicit options override either.
# A paper epoch is one pass over stored data (the paper's 3 x 30,000 images); a stream has no
# passes, so there it is 90,000 images.
RECIPES = {
    "paper": {"lr": 1e-4, "batch_size": 64, "epochs": 10, "schedule": "constant", "augment": "none",
              "epoch_size": None, "weight_decay": 0.0, "precision": "fp32", "channels_last": False},
    "cpu": {"lr": 1e-3, "batch_size": 64, "epochs": 24, "schedule": "cosine", "augment": "rot90flip",
            "epoch_size": 12_000, "weight_decay": 0.0, "precision": "fp32", "channels_last": False},
}
PAPER_STREAM_EPOCH = 90_000
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
}
SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("none", "flip", "rot90", "rot90flip")
# Options that may differ between a run and its --resume: they change how, not what, it computes.
# Threads change the order of float sums, so a run records its thread count and keeps it.
RUNTIME_OPTIONS = ("out", "device", "workers", "max_minutes", "save_every_minutes",
                   "save_every_steps", "quiet", "verify")
RUN_VERSION = 2

# Purposes mixed into derived seeds so no two random streams coincide.
_INIT, _SHUFFLE, _STEP, _AUGMENT, _VAL_SPLIT = range(5)


@dataclass
class TrainConfig:
    arch: str
    task: str = "classify"
    dataset: str | None = None
    out: str | None = None
    data: str | None = None
    val_data: str | None = None
    stream: bool = False
    recipe: str = "paper"
    lr: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    schedule: str | None = None
    augment: str | None = None
    epoch_size: int | None = None
    weight_decay: float | None = None
    precision: str | None = None
    channels_last: bool | None = None
    val_size: int = 3000
    val_fraction: float = 0.1
    model_args: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    max_minutes: float | None = None
    save_every_minutes: float | None = 10.0
    save_every_steps: int | None = None
    quiet: bool = False
    verify: bool = True

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
        check_task(self.task)
        if self.schedule not in SCHEDULES:
            raise LenszooError(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.augment not in AUGMENTATIONS:
            raise LenszooError(f"unknown augmentation {self.augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
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
            raise LenszooError("--stream needs --dataset (A or B) to know what to simulate")
        if not self.out:
            raise LenszooError("no run directory: give --out RUN_DIR")

    def recipe_dict(self) -> dict:
        """What a checkpoint records about how it was trained."""
        keys = ("recipe", "lr", "batch_size", "epochs", "epoch_size", "schedule", "augment", "weight_decay",
                "precision", "channels_last", "seed")
        recipe = {k: getattr(self, k) for k in keys}
        recipe.update(optimizer="adam", loss="cross_entropy" if self.task == "classify" else "mse_log10_ma",
                      data="stream" if self.stream else "stored")
        if recipe["epoch_size"] is None:
            recipe["epoch_size"] = "one pass over the training data"
        return recipe


# -- seeds and schedules ----------------------------------------------------------------------
def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed that depends on ``seed`` and every key (order matters)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *(int(k) for k in keys)]).generate_state(2, np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


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


def seed_step(seed: int, epoch: int, step: int, rank: int):
    """Seed every global RNG for one step (dropout and anything else a model draws)."""
    import torch

    value = derive_seed(seed, _STEP, epoch, step, rank)
    torch.manual_seed(value)
    np.random.seed(value & 0xFFFFFFFF)
    random.seed(value)


def augment_batch(images, mode: str, generator):
    """Random flips and/or quarter turns per image: exact on the pixel grid, no interpolation."""
    import torch

    if mode == "none":
        return images
    images = images.clone()
    n = images.shape[0]
    if mode in ("flip", "rot90flip"):
        flip = torch.randint(0, 2, (n,), generator=generator).bool()
        images[flip] = images[flip].flip(-1)
    if mode in ("rot90", "rot90flip"):
        turns = torch.randint(0, 4, (n,), generator=generator)
        for k in (1, 2, 3):
            sel = turns == k
            if sel.any():
                images[sel] = torch.rot90(images[sel], k, dims=(-2, -1))
    return images


class BatchAugment:
    """The augmentation of batch ``(epoch, step)`` on ``rank``: its own generator, seeded from those."""

    def __init__(self, mode: str, seed: int, rank: int = 0):
        self.mode, self.seed, self.rank = mode, seed, rank

    def __call__(self, epoch: int, step: int, images):
        import torch

        if self.mode == "none":
            return images
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _AUGMENT, epoch, step, self.rank))
        return augment_batch(images, self.mode, generator)


# -- data ---------------------------------------------------------------------------------------
class BatchPlan:
    """Which item indices each of this rank's batches holds: a pure function of (seed, epoch, step).

    Training walks one endless sequence of items; epoch ``e`` is its positions
    ``[e*N, (e+1)*N)`` with ``N = epoch_size`` (default: one pass over the data).
    A stream's position is its stream index (already random). Stored data are
    read in passes, each pass ``p`` a permutation seeded with (seed, p), so with
    ``N`` equal to the data size epoch ``e`` is pass ``e``; other ``N`` give
    epochs of any size, which is how a budget is fixed in images.
    Ranks take interleaved slices of equal length, so all ranks run the same
    number of steps.
    """

    def __init__(self, n_items: int | None, batch_size: int, *, seed: int, shuffle: bool, rank=0, world_size=1,
                 index_map=None, epoch_size: int | None = None):
        if shuffle and not n_items:
            raise LenszooError("no training images: the training data are empty")
        self.n_items, self.batch_size, self.seed, self.shuffle = n_items, batch_size, seed, shuffle
        self.epoch_size = epoch_size or n_items
        self.rank, self.world_size = rank, world_size
        self.index_map = index_map  # position -> underlying item index (a subset of stored data)
        self.per_rank = self.epoch_size // world_size
        if self.per_rank == 0:
            raise LenszooError(f"{self.epoch_size} training images per epoch cannot be split over {world_size} "
                               "processes; use more data or fewer processes")
        self.steps_per_epoch = math.ceil(self.per_rank / batch_size)
        self._cache: tuple[int, np.ndarray] | None = None
        self._passes: dict[int, np.ndarray] = {}

    def _permutation(self, pass_index: int) -> np.ndarray:
        if pass_index not in self._passes:
            if len(self._passes) > 4:
                self._passes.clear()
            rng = np.random.Generator(np.random.PCG64(derive_seed(self.seed, _SHUFFLE, pass_index)))
            self._passes[pass_index] = rng.permutation(self.n_items)
        return self._passes[pass_index]

    def epoch_items(self, epoch: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        first = epoch * self.epoch_size
        positions = np.arange(first, first + self.per_rank * self.world_size, dtype=np.int64)[self.rank::self.world_size]
        if self.shuffle:
            passes = positions // self.n_items
            items = np.empty_like(positions)
            for pass_index in np.unique(passes):
                chosen = passes == pass_index
                items[chosen] = self._permutation(int(pass_index))[positions[chosen] % self.n_items]
        else:
            items = positions
        if self.index_map is not None:
            items = self.index_map[items]
        self._cache = (epoch, items)
        return items

    def batch(self, epoch: int, step: int) -> np.ndarray:
        return self.epoch_items(epoch)[step * self.batch_size : (step + 1) * self.batch_size]


def collate(items):
    import torch

    images = torch.stack([torch.as_tensor(image, dtype=torch.float32) for image, _ in items])
    targets = torch.stack([torch.as_tensor(target) for _, target in items])
    return images, targets


def _planned_batches_class():
    import torch

    class PlannedBatches(torch.utils.data.IterableDataset):
        """Batches ``(epoch, step)`` from a start point to the end of training.

        With DataLoader workers, worker ``w`` of ``k`` builds (and augments) batches
        ``w, w+k, ...`` and the DataLoader hands them out round-robin, so batch order
        and content do not depend on the number of workers.
        """

        def __init__(self, fetch, plan, start, end_epoch, augment=None):
            self.fetch, self.plan, self.start, self.end_epoch = fetch, plan, start, end_epoch
            self.augment = augment

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            worker, workers = (info.id, info.num_workers) if info else (0, 1)
            number = 0
            start_epoch, start_step = self.start
            for epoch in range(start_epoch, self.end_epoch):
                for step in range(start_step if epoch == start_epoch else 0, self.plan.steps_per_epoch):
                    if number % workers == worker:
                        images, targets = collate([self.fetch(int(i)) for i in self.plan.batch(epoch, step)])
                        if self.augment is not None:
                            images = self.augment(epoch, step, images)
                        yield epoch, step, images, targets
                    number += 1

    return PlannedBatches


def _worker_init(_):
    import torch

    torch.set_num_threads(1)  # simulation workers: one core each


def iterate_batches(fetch, plan, start, end_epoch, workers=0, pin_memory=False, augment=None):
    """Yield ``(epoch, step, images, targets)`` for training, from ``start=(epoch, step)``."""
    import torch

    dataset = _planned_batches_class()(fetch, plan, start, end_epoch, augment)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         worker_init_fn=_worker_init if workers else None,
                                         pin_memory=pin_memory, persistent_workers=False)
    return iter(loader)


def load_items(fetch, indices, workers=0, batch_size=256):
    """Stack ``fetch(i)`` for every index (in order) into ``(images, targets)`` tensors."""
    import torch

    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise LenszooError("no images to load: the dataset or split is empty")
    plan = _FixedPlan(indices, batch_size)
    batches = [(images, targets) for _, _, images, targets in iterate_batches(fetch, plan, (0, 0), 1, workers)]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


class _FixedPlan:
    """A one-epoch plan over a fixed list of indices."""

    def __init__(self, indices, batch_size):
        self.indices, self.batch_size = indices, batch_size
        self.steps_per_epoch = math.ceil(len(indices) / batch_size)

    def batch(self, epoch, step):
        return self.indices[step * self.batch_size : (step + 1) * self.batch_size]


def open_stored(path, task, *, normalized=True, verify=False):
    """A stored dataset (``lenszoo simulate`` output) for ``task``; errors say what to do.

    ``verify`` checks every file against the sha256 in the dataset's manifest first (a few
    seconds per GB), so a damaged shard is named instead of silently trained on."""
    from .data import StoredDataset, verify_dataset

    path = Path(path)
    if not path.exists():
        raise LenszooError(f"data directory {path} does not exist; write one with `lenszoo simulate ... --out {path}`")
    if not path.is_dir():
        raise LenszooError(f"{path} is a file, not a dataset directory; pass the --out folder of `lenszoo simulate`")
    if not os.access(path, os.R_OK | os.X_OK):
        raise LenszooError(f"data directory {path} is not readable; fix its permissions")
    if verify:
        bad = verify_dataset(path)
        if bad:
            shown = ", ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
            raise LenszooError(f"dataset {path} is damaged: {shown} differ from the sha256 in its manifest; re-run "
                               "the `lenszoo simulate` command that made it (it rewrites damaged shards), or pass "
                               "--no-verify to use it anyway")
    try:
        return StoredDataset(path, task, normalized=normalized)
    except LenszooError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise LenszooError(f"cannot read {path} as a lenszoo dataset ({type(exc).__name__}: {exc}); "
                           "write it with `lenszoo simulate`") from None


def stream_fetch(dataset: str, split: str, task: str, seed: int, *, normalized=True):
    """``position -> (image, target)`` for the simulated ``dataset``/``split`` stream with ``seed``.

    The stream is a pure function of position, so any position (a resumed run's next batch) is
    simulated directly, without replaying earlier ones."""
    from .data import StreamingDataset

    return StreamingDataset(dataset, split, task, epoch_size=1, seed=seed, normalized=normalized).item


@dataclass
class TrainingData:
    fetch: object  # index -> (image, target)
    n_items: int | None  # stored training images (None for a stream)
    epoch_size: int
    shuffle: bool
    index_map: np.ndarray | None
    val_images: object  # this rank's validation shard (tensors)
    val_targets: object
    val_positions: np.ndarray  # where this rank's shard sits in the full validation set
    n_val: int
    dataset_name: str
    description: dict
    target_mean: float | None


def _shard(n, rank, world_size):
    return np.arange(n)[rank::world_size]


def prepare_data(config: TrainConfig, rank=0, world_size=1, log=print) -> TrainingData:
    """Training items and this rank's validation shard, in memory."""
    index_map = None
    if config.stream:
        fetch = stream_fetch(config.dataset, "train", config.task, config.seed)
        n_items, shuffle, dataset_name, train_targets = None, False, config.dataset, None
        description = {"source": "stream", "dataset": dataset_name, "epoch_size": config.epoch_size,
                       "stream_seed": config.seed}
    else:
        stored = open_stored(config.data, config.task, verify=config.verify)
        dataset_name = stored.dataset_name
        if config.dataset and config.dataset != dataset_name:
            raise LenszooError(f"{config.data} holds dataset {dataset_name!r} but --dataset is {config.dataset!r}; "
                               f"drop --dataset or point --data at a dataset-{config.dataset} directory")
        fetch, shuffle, n_items = stored.__getitem__, True, len(stored)
        description = {"source": "stored", "path": str(Path(config.data).resolve()), "dataset": dataset_name}
        train_targets = np.asarray(stored.targets)
    val_seed = 0  # one validation set for every training seed, so runs compare
    if config.val_data:
        val = open_stored(config.val_data, config.task, verify=config.verify)
        if val.dataset_name != dataset_name:
            raise LenszooError(f"--val-data {config.val_data} holds dataset {val.dataset_name!r}, "
                               f"training data is {dataset_name!r}; use validation data of the same dataset")
        n_val = len(val)
        val_fetch, val_indices = val.__getitem__, np.arange(n_val)
        description["val"] = {"source": "stored", "path": str(Path(config.val_data).resolve()), "n": n_val}
    elif config.stream:
        n_val = config.val_size
        val_fetch, val_indices = stream_fetch(dataset_name, "val", config.task, val_seed), np.arange(n_val)
        description["val"] = {"source": "stream", "split": "val", "n": n_val, "stream_seed": val_seed}
    else:
        # Hold out a fixed fraction of the stored data (the same for every seed).
        n_total = n_items
        n_val = max(1, int(round(n_total * config.val_fraction)))
        if n_total - n_val < 1:
            raise LenszooError(f"{config.data} has only {n_total} images: too few to hold out a validation set")
        order = np.random.Generator(np.random.PCG64(derive_seed(val_seed, _VAL_SPLIT))).permutation(n_total)
        val_fetch, val_indices = fetch, np.sort(order[:n_val])
        index_map = np.sort(order[n_val:])
        n_items = len(index_map)
        train_targets = train_targets[index_map]
        description["val"] = {"source": "held out", "fraction": config.val_fraction, "n": n_val}
    positions = _shard(n_val, rank, world_size)
    started = time.perf_counter()
    images, targets = load_items(val_fetch, val_indices[positions], workers=config.workers)
    if rank == 0 and description["val"]["source"] == "stream":
        log(f"simulated {n_val} validation images in {time.perf_counter() - started:.1f} s")
    if config.task == "regress":
        # The head's output bias starts at the mean target (log10 m_a ~ -23), not at 0.
        reference = train_targets if train_targets is not None else targets.numpy()
        target_mean = float(np.mean(reference)) if len(reference) else None
    else:
        target_mean = None
    epoch_size = config.epoch_size or n_items
    if not config.stream:
        description["epoch_size"] = epoch_size
    return TrainingData(fetch, n_items, epoch_size, shuffle, index_map, images, targets, positions, n_val,
                        dataset_name, description, target_mean)


# -- model ----------------------------------------------------------------------------------
def init_regression_bias(model, value: float) -> bool:
    """Set the bias of the last single-output Linear/Conv layer to ``value``; False if none."""
    import torch

    for module in reversed(list(model.modules())):
        out = getattr(module, "out_features", getattr(module, "out_channels", None))
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and out == 1 and module.bias is not None:
            with torch.no_grad():
                module.bias.fill_(value)
            return True
    return False


def compute_loss(task, outputs, targets):
    import torch.nn.functional as F

    if task == "classify":
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs.reshape(-1), targets.reshape(-1).float())


def batch_stats(task, outputs, targets) -> dict:
    """Sums over a batch, added up over an epoch."""
    if task == "classify":
        return {"correct": int((outputs.argmax(1) == targets).sum())}
    return {"abs_err": float((outputs.reshape(-1) - targets.reshape(-1)).abs().sum())}


def validation_metrics(task, outputs, targets) -> dict:
    """Metrics of full-set outputs (logits or predictions) against targets."""
    import torch

    loss = float(compute_loss(task, outputs, targets))
    if task == "classify":
        from sklearn.metrics import roc_auc_score

        probs = torch.softmax(outputs.double(), 1).numpy()
        y = targets.numpy()
        metrics = {"loss": loss, "accuracy": float((probs.argmax(1) == y).mean())}
        if len(np.unique(y)) == len(CLASS_NAMES):
            metrics["auc"] = float(roc_auc_score(y, probs, multi_class="ovr", average="macro",
                                                 labels=list(range(len(CLASS_NAMES)))))
        return metrics
    err = (outputs.reshape(-1).double() - targets.reshape(-1).double()).numpy()
    return {"loss": loss, "mse": float(np.mean(err**2)), "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))), "bias": float(np.mean(err))}


def selection_key(task, metrics) -> tuple:
    """Larger is better: validation accuracy (then lower loss) or lower validation MSE."""
    if task == "classify":
        return (metrics["accuracy"], -metrics["loss"])
    return (-metrics["mse"],)


def predict(model, images, device, batch_size=256):
    """Model outputs for an in-memory batch, in eval mode, on CPU."""
    import torch

    was_training = model.training
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            outputs.append(model(images[start : start + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


# -- the run directory ------------------------------------------------------------------------
def read_run(run_dir) -> dict:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        if Path(run_dir).is_dir() and any(Path(run_dir).iterdir()):
            raise LenszooError(f"{run_dir} is not a lenszoo run directory (no {RUN_FILE}); "
                               "pass the --out of a `lenszoo train` run")
        raise LenszooError(f"no run to resume at {run_dir}; start it without --resume")
    try:
        run = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LenszooError(f"{path} is not valid JSON ({exc}); the run cannot be resumed") from None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT or not isinstance(run.get("config"), dict):
        raise LenszooError(f"{path} is not a lenszoo run file; pass the --out of a `lenszoo train` run")
    version, world = run.get("version", 1), run.get("world_size", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version > RUN_VERSION:
        raise LenszooError(f"{path} has run format version {version!r}; this lenszoo resumes up to {RUN_VERSION}: "
                           "upgrade lenszoo")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise LenszooError(f"{path} is damaged (world_size {world!r}); the run cannot be resumed")
    return run


def config_for_resume(run_dir, given: TrainConfig, given_fields: set[str]) -> TrainConfig:
    """The stored run config, with runtime options taken from ``given``.

    Every other option given on the command line must equal the stored one.
    """
    run = read_run(run_dir)
    stored = run["config"]
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise LenszooError(f"{Path(run_dir) / RUN_FILE} holds options this lenszoo does not know "
                           f"({', '.join(unknown[:3])}); resume it with the lenszoo version that started it")
    if "arch" not in stored:
        raise LenszooError(f"{Path(run_dir) / RUN_FILE} is damaged (no arch); the run cannot be resumed")
    runtime = set(RUNTIME_OPTIONS)
    if run.get("version", 1) < 2:  # what version-1 runs computed before these options existed
        stored.setdefault("precision", "fp32")
        stored.setdefault("channels_last", False)
        if not stored.get("stream"):
            stored["epoch_size"] = None  # an epoch was one pass over stored data
        runtime.add("threads")  # not recorded then
    conflicts = []
    for name in sorted(given_fields - runtime):
        if name in stored and getattr(given, name) != stored[name]:
            conflicts.append(f"--{name.replace('_', '-')} {getattr(given, name)!r} (run has {stored[name]!r})")
    if conflicts:
        raise LenszooError(f"{run_dir} is a different run: " + "; ".join(conflicts)
                           + ". Drop those options to resume it, or use a new --out for a new run")
    values = {**stored, **{k: getattr(given, k) for k in runtime}}
    values["out"] = str(run_dir)
    config = TrainConfig(**values)
    try:
        config.check()
    except LenszooError as exc:
        raise LenszooError(f"{Path(run_dir) / RUN_FILE} is damaged ({exc}); the run cannot be resumed") from None
    return config


def write_run_file(run_dir: Path, config: TrainConfig, world_size: int):
    from . import __version__

    run = {"format": RUN_FORMAT, "version": RUN_VERSION, "config": asdict(config), "world_size": world_size,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "lenszoo_version": __version__,
           "command": sys.argv}
    atomic_write_text(run_dir / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")


def latest_state(run_dir: Path) -> Path | None:
    pointer = run_dir / STATE_DIR / LATEST_FILE
    if not pointer.is_file():
        return None
    folder = run_dir / STATE_DIR / pointer.read_text().strip()
    if not (folder / TRAINER_STATE).is_file():
        raise LenszooError(f"{pointer} names {folder.name}, which is incomplete; the run directory was edited by hand")
    return folder


def clean_leftovers(run_dir: Path, keep: Path | None):
    """Remove what an interrupted write left behind: temporary folders and unreferenced states."""
    for path in run_dir.glob(".*.tmp"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    for name in ("best", "last"):
        # atomic_folder moves the old folder aside just before the new one lands; a kill in
        # between leaves only the old one: put it back (the resumed run rewrites it anyway).
        for old in sorted(run_dir.glob(f".{name}.old-*")):
            if not (run_dir / name).exists():
                os.replace(old, run_dir / name)
            else:
                shutil.rmtree(old, ignore_errors=True)
    state_root = run_dir / STATE_DIR
    if state_root.is_dir():
        for path in state_root.iterdir():
            if path.name != LATEST_FILE and (keep is None or path.name != keep.name):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def save_state(run_dir: Path, model, optimizer, progress: dict, checkpoint_kwargs: dict):
    """Write a new resumable state folder, then point LATEST at it (the commit), then drop older ones."""
    import torch

    progress["save_index"] += 1
    name = f"{progress['save_index']:06d}"
    state_root = run_dir / STATE_DIR
    with atomic_folder(state_root / name) as tmp:
        save_checkpoint(tmp / "weights", model, claim=False, **checkpoint_kwargs)
        torch.save({"optimizer": optimizer.state_dict(), "progress": progress}, tmp / TRAINER_STATE)
    atomic_write_text(state_root / LATEST_FILE, name + "\n")
    for path in state_root.iterdir():
        if path.is_dir() and path.name != name:
            shutil.rmtree(path, ignore_errors=True)


def load_state(folder: Path, device):
    """(model, optimizer state, progress) of a state folder; the pickle part loads with weights_only=True."""
    import torch

    model = load_checkpoint(folder / "weights", device=device)
    try:
        state = torch.load(folder / TRAINER_STATE, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means the same thing to the user
        raise LenszooError(f"cannot read {folder / TRAINER_STATE} ({type(exc).__name__}: {exc}); "
                           "the run cannot be resumed from this state") from None
    return model, state["optimizer"], state["progress"]


def write_metrics(run_dir: Path, history: list[dict]):
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))


def plot_learning_curve(path: Path, history: list[dict], task: str):
    """Loss and the task's main metric against images seen, train and validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = [row["images_seen"] for row in history]
    metric, label = ("accuracy", "accuracy") if task == "classify" else ("mae", "MAE (dex)")
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        ax_loss.plot(seen, [row[split]["loss"] for row in history], style, label=split, ms=3)
        ax_metric.plot(seen, [row[split].get(metric) for row in history], style, label=split, ms=3)
    best = [row for row in history if row.get("is_best")]
    if best:
        ax_metric.axvline(best[-1]["images_seen"], color="grey", ls=":", label="best (val)")
    ax_loss.set(xlabel="images seen", ylabel="loss", yscale="log")
    ax_metric.set(xlabel="images seen", ylabel=label)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# -- the loop ----------------------------------------------------------------------------------
CONTINUE, SAVE, STOP = 0, 1, 2


class _StopSignals:
    """SIGTERM/SIGINT ask the loop to save and stop at the next step instead of dying."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def __enter__(self):
        if threading_main():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _format_metrics(metrics: dict) -> str:
    parts = []
    for key in ("loss", "accuracy", "auc", "mae", "rmse"):
        if metrics.get(key) is not None:
            value = metrics[key]
            parts.append(f"{key} {value:.2%}" if key == "accuracy" else f"{key} {value:.4g}")
    return " ".join(parts)


def train(config: TrainConfig, *, resume: bool = False, given_fields: set[str] | None = None,
          log=None) -> dict:
    """Train (or resume) a run; returns a summary dict. See the module docstring for the run layout."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.monotonic()
    if resume:
        if not config.out:
            raise LenszooError("--resume needs --out RUN_DIR: the run to continue")
        config = config_for_resume(config.out, config, given_fields if given_fields is not None else set())
        config.check()  # a stored config is already resolved: its None values keep their meaning
    else:
        config = config.resolved()
    run_dir = Path(config.out)
    info = (lambda message: None) if config.quiet else log

    # Cheap checks first, so a typo fails before any simulation or model building.
    from .registry import registry

    spec = registry.architecture(config.arch)
    if config.task not in spec.tasks:
        raise LenszooError(f"architecture {config.arch!r} has no {config.task!r} head; it supports: "
                           f"{', '.join(spec.tasks)} (choose another --arch or --task)")
    if config.dataset is not None:
        registry.dataset(config.dataset)
    if config.data:
        open_stored(config.data, config.task)
    if not resume and (run_dir / RUN_FILE).exists():
        raise LenszooError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    if not resume:  # a new run goes into a new or empty folder, never over a user's files
        claim_output(run_dir, what="lenszoo run directory", is_ours=lambda path: False)

    ctx, device, owns_group = init_distributed(config.device)
    try:
        return _run(config, resume, spec, run_dir, ctx, device, started, log, info)
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(config, resume, spec, run_dir, ctx, device, started, log, info) -> dict:
    import torch

    # Processes on one machine share its cores (torchrun alone would give each all of them).
    if config.threads is None:
        config.threads = max(1, available_cores() // ctx.local_world_size)
    torch.set_num_threads(config.threads)
    if resume:
        stored_world = read_run(run_dir).get("world_size", 1)
        if stored_world != ctx.world_size:
            raise LenszooError(f"{run_dir} was trained by {stored_world} process(es), this is {ctx.world_size}; "
                               f"resume with the same number (torchrun --nproc-per-node {stored_world})")
    state_folder = latest_state(run_dir) if resume else None
    if state_folder is not None:
        model, optimizer_state, progress = load_state(state_folder, device)
        if progress.get("finished"):
            log(f"{run_dir} has already finished ({progress['epoch']} epochs); nothing to do")
            return _summary(run_dir, config, progress, "finished", ctx.rank)
    else:
        optimizer_state, progress = None, None

    fresh = progress is None
    if fresh:  # built before the data are prepared, so bad --model-arg values fail at once
        torch.manual_seed(derive_seed(config.seed, _INIT))
        model = spec.build(config.task, **config.model_args).to(device)
    data = prepare_data(config, ctx.rank, ctx.world_size, log=info if ctx.is_main else (lambda m: None))
    from .data import NORMALIZATION

    if fresh:
        if config.task == "regress" and data.target_mean is not None:
            if not init_regression_bias(model, data.target_mean):
                log("warning: no single-output Linear/Conv layer found to start the regression bias at the "
                    f"mean target {data.target_mean:.2f}; training may need many steps to reach it")
        progress = {"epoch": 0, "step": 0, "global_step": 0, "images_seen": 0, "sums": _zero_sums(),
                    "best": None, "history": [], "elapsed_s": 0.0, "save_index": 0, "finished": False}
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    net = model
    if ctx.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    plan = BatchPlan(data.n_items, config.batch_size, seed=config.seed, shuffle=data.shuffle,
                     rank=ctx.rank, world_size=ctx.world_size, index_map=data.index_map,
                     epoch_size=data.epoch_size)
    total_steps = plan.steps_per_epoch * config.epochs
    # Model, data and plan are checked: only now is anything written, so a rejected run leaves
    # no run.json behind and the corrected command starts afresh.
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_run_file(run_dir, config, ctx.world_size)
        clean_leftovers(run_dir, state_folder)
    ctx.barrier()
    checkpoint_kwargs = {"dataset": data.dataset_name, "normalization": NORMALIZATION,
                         "recipe": config.recipe_dict()}
    compute = {"device": device.type, "hardware": hardware_name(device), "threads": torch.get_num_threads(),
               "processes": ctx.world_size}
    n_params = sum(p.numel() for p in model.parameters())
    if ctx.is_main:
        where = f"from epoch {progress['epoch'] + 1} step {progress['step']}" if state_folder else "from scratch"
        info(f"training {config.arch} ({n_params:,} parameters) for {config.task} on {data.dataset_name}, "
            f"{config.epochs} epochs x {plan.steps_per_epoch} steps of {config.batch_size} x {ctx.world_size} "
            f"process(es), {where}, on {device}; run directory {run_dir}")

    budget_s = config.max_minutes * 60 if config.max_minutes else None
    save_every_s = config.save_every_minutes * 60 if config.save_every_minutes else None
    last_save = time.monotonic()
    elapsed_before = progress["elapsed_s"]
    status = "finished"

    def save():
        nonlocal last_save
        _reduce_sums_for_save(ctx, progress, device)
        progress["elapsed_s"] = elapsed_before + (time.monotonic() - started)
        if ctx.is_main:
            save_state(run_dir, model, optimizer, progress, {**checkpoint_kwargs,
                                                              "images_seen": progress["images_seen"]})
        ctx.barrier()
        last_save = time.monotonic()

    batches, action = None, CONTINUE
    loop_start = time.monotonic()
    with _StopSignals() as signals:
        try:
            if progress["epoch"] < config.epochs:
                batches = iterate_batches(data.fetch, plan, (progress["epoch"], progress["step"]), config.epochs,
                                          workers=config.workers, pin_memory=device.type == "cuda",
                                          augment=BatchAugment(config.augment, config.seed, ctx.rank))
            while progress["epoch"] < config.epochs:
                epoch = progress["epoch"]
                bar = _progress_bar(config, ctx, epoch, plan.steps_per_epoch, progress["step"])
                epoch_start, epoch_images = time.monotonic(), 0
                while progress["step"] < plan.steps_per_epoch:
                    step = progress["step"]
                    got_epoch, got_step, images, targets = next(batches)
                    assert (got_epoch, got_step) == (epoch, step), "batch stream out of step with the loop"
                    seed_step(config.seed, epoch, step, ctx.rank)
                    images = images.to(device, non_blocking=True)
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    targets = targets.to(device, non_blocking=True)
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * lr_factor(config.schedule, progress["global_step"], total_steps)
                    with autocast(config.precision, device):
                        outputs = net(images)
                    outputs = outputs.float()  # the loss and everything after it in fp32
                    loss = compute_loss(config.task, outputs, targets)
                    if not torch.isfinite(loss):
                        if not bool(torch.isfinite(images).all()):
                            raise LenszooError(f"the training images of epoch {epoch + 1} step {step} contain NaN or "
                                               "infinite pixels; fix or re-simulate the data (the run can be resumed "
                                               "from its last saved state)")
                        raise LenszooError(f"loss became {float(loss)} at epoch {epoch + 1} step {step}; lower --lr "
                                           "(the run can be resumed from its last saved state)")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    n = len(targets)
                    sums = progress["sums"]
                    sums["loss"] += loss.item() * n
                    sums["n"] += n
                    for key, value in batch_stats(config.task, outputs.detach(), targets).items():
                        sums[key] += value
                    progress["step"] += 1
                    progress["global_step"] += 1
                    progress["images_seen"] += n * ctx.world_size
                    epoch_images += n * ctx.world_size
                    rate = epoch_images / max(time.monotonic() - epoch_start, 1e-9)
                    if bar is not None:
                        postfix = {"loss": f"{sums['loss'] / sums['n']:.4f}", "img/s": f"{rate:.0f}"}
                        if config.task == "classify":
                            postfix["acc"] = f"{sums['correct'] / sums['n']:.3f}"
                        bar.set_postfix(postfix, refresh=False)
                        bar.update(1)
                    action = CONTINUE
                    if ctx.is_main:
                        now = time.monotonic()
                        if signals.requested or (budget_s is not None and now - started >= budget_s):
                            action = STOP
                        elif (config.save_every_steps and progress["global_step"] % config.save_every_steps == 0) \
                                or (save_every_s is not None and now - last_save >= save_every_s):
                            action = SAVE
                    action = ctx.broadcast_int(action, device)
                    if action == STOP and progress["step"] < plan.steps_per_epoch:
                        status = "interrupted" if signals.requested else "budget"
                        save()
                        break
                    if action == SAVE and progress["step"] < plan.steps_per_epoch:
                        save()
                if bar is not None:
                    bar.close()
                if status != "finished":
                    break
                compute["train_minutes"] = round((elapsed_before + time.monotonic() - started) / 60, 2)
                _end_epoch(config, ctx, model, data, progress, run_dir, device,
                           {**checkpoint_kwargs, "extra": {"compute": compute}}, total_steps,
                           time.monotonic() - epoch_start, epoch_images, info)
                if ctx.is_main and not resume and progress["epoch"] == 1:
                    note = budget_fit_note(config, seconds_per_epoch=time.monotonic() - loop_start,
                                           seconds_left=budget_s - (time.monotonic() - started) if budget_s else None)
                    if note:
                        log(note)
                if progress["epoch"] >= config.epochs:
                    progress["finished"] = True
                save()
                if action == STOP and progress["epoch"] < config.epochs:
                    status = "interrupted" if signals.requested else "budget"
                    break
        finally:
            del batches  # stops DataLoader workers
    if ctx.is_main:
        if status == "finished":
            best = progress["best"]
            log(f"finished: best epoch {best['epoch']} (val {_format_metrics(best['val'])}); "
                f"checkpoints in {run_dir / 'best'} and {run_dir / 'last'}")
        else:
            reason = f"stopped by {signals.requested}" if status == "interrupted" else \
                f"time budget of {config.max_minutes:g} min spent"
            where = (f"after epoch {progress['epoch']}" if progress["step"] == 0 else
                     f"in epoch {progress['epoch'] + 1} after {progress['step']} of {plan.steps_per_epoch} steps")
            log(f"{reason} {where} ({progress['images_seen']:,} images seen, state saved); "
                f"continue with: lenszoo train --resume --out {run_dir}")
    return _summary(run_dir, config, progress, status, ctx.rank)


def budget_fit_note(config: TrainConfig, *, seconds_per_epoch: float, seconds_left: float | None) -> str | None:
    """After a fresh run's first epoch: a note when ``--max-minutes`` will stop a decaying schedule
    before its end (it then never reaches its small learning rates), with the ``--epochs`` that fits."""
    if seconds_left is None or config.schedule == "constant" or config.epochs <= 1:
        return None
    remaining = config.epochs - 1
    if remaining * seconds_per_epoch <= seconds_left:
        return None
    fits = 1 + int(seconds_left // max(seconds_per_epoch, 1e-9))
    return (f"note: at {seconds_per_epoch:.0f} s per epoch the {config.max_minutes:g}-minute budget ends in epoch "
            f"{fits + 1} of {config.epochs}, before the {config.schedule} schedule has decayed; "
            f"--epochs {fits} would fit it (or resume this run later to finish the schedule)")


def _zero_sums():
    return {"loss": 0.0, "n": 0, "correct": 0, "abs_err": 0.0}


def _reduce_sums_for_save(ctx: DistContext, progress: dict, device):
    """Fold every rank's epoch sums into rank 0's (the one that is saved); others restart from zero."""
    if not ctx.enabled:
        return
    import torch

    sums = progress["sums"]
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    ctx.all_reduce_sum(t)
    for key, value in zip(keys, t.tolist()):
        total = value if ctx.is_main else 0
        sums[key] = int(round(total)) if key in ("n", "correct") else float(total)


def _end_epoch(config, ctx, model, data, progress, run_dir, device, checkpoint_kwargs, total_steps, seconds, images,
               log):
    import torch

    _reduce_sums_for_save(ctx, progress, device)
    totals = progress["sums"]
    if ctx.enabled:  # after the fold, rank 0 holds the totals: share them
        keys = sorted(totals)
        t = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64, device=device)
        ctx.all_reduce_sum(t)
        totals = {k: v for k, v in zip(keys, t.tolist())}
    n = max(totals["n"], 1)
    train_metrics = {"loss": totals["loss"] / n}
    if config.task == "classify":
        train_metrics["accuracy"] = totals["correct"] / n
    else:
        train_metrics["mae"] = totals["abs_err"] / n

    # Validation: each rank predicts its shard; a sum over ranks assembles the full set.
    shard_out = predict(model, data.val_images, device)
    full_out = torch.zeros((data.n_val, shard_out.shape[1]), dtype=torch.float64)
    full_y = torch.zeros(data.n_val, dtype=torch.float64)
    full_out[data.val_positions] = shard_out.double()
    full_y[data.val_positions] = data.val_targets.double()
    if ctx.enabled:
        full_out, full_y = full_out.to(device), full_y.to(device)
        ctx.all_reduce_sum(full_out)
        ctx.all_reduce_sum(full_y)
        full_out, full_y = full_out.cpu(), full_y.cpu()
    targets = full_y.long() if config.task == "classify" else full_y.float()
    val = validation_metrics(config.task, full_out.float(), targets)

    epoch = progress["epoch"]
    key = selection_key(config.task, val)
    best = progress["best"]
    is_best = best is None or key > tuple(best["key"])
    row = {"epoch": epoch + 1, "images_seen": progress["images_seen"], "train": train_metrics, "val": val,
           "lr": config.lr * lr_factor(config.schedule, progress["global_step"] - 1, total_steps),
           "is_best": is_best, "seconds": round(seconds, 3), "images_per_s": round(images / max(seconds, 1e-9), 1)}
    minutes = checkpoint_kwargs.get("extra", {}).get("compute", {}).get("train_minutes")
    if minutes is not None:
        row["train_minutes"] = minutes  # wall clock since the run began, resumes included
    progress["history"].append(row)
    if is_best:
        progress["best"] = {"epoch": epoch + 1, "key": list(key), "val": val, "images_seen": progress["images_seen"]}
    progress["epoch"] += 1
    progress["step"] = 0
    progress["sums"] = _zero_sums()
    if ctx.is_main:
        extra = {**checkpoint_kwargs.get("extra", {}), "epoch": epoch + 1, "training_data": data.description,
                 "selected_on": "val accuracy, then val loss" if config.task == "classify" else "val mse"}
        kwargs = {**checkpoint_kwargs, "images_seen": row["images_seen"],
                  "metrics": {"val": val, "train": train_metrics}, "extra": extra}
        if is_best:  # best/ and last/ belong to the run directory, which the trainer owns
            save_checkpoint(run_dir / "best", model, claim=False, **kwargs)
        save_checkpoint(run_dir / "last", model, claim=False, **kwargs)
        write_metrics(run_dir, progress["history"])
        try:
            plot_learning_curve(run_dir / CURVE_FILE, progress["history"], config.task)
        except Exception as exc:  # noqa: BLE001 - a plot must never cost a training run
            log(f"warning: learning curve not drawn ({type(exc).__name__}: {exc})")
        log(f"epoch {epoch + 1}/{config.epochs}: train {_format_metrics(train_metrics)} | "
            f"val {_format_metrics(val)}{' (best)' if is_best else ''} | {row['images_per_s']:.0f} img/s")


def _progress_bar(config, ctx, epoch, total, initial):
    if config.quiet or not ctx.is_main or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                dynamic_ncols=True, leave=False, file=sys.stderr)


def _summary(run_dir, config, progress, status, rank=0) -> dict:
    return {"status": status, "run_dir": str(run_dir), "rank": rank, "epochs_done": progress["epoch"],
            "epochs": config.epochs, "images_seen": progress["images_seen"], "best": progress["best"],
            "history": progress["history"]}
