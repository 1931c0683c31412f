"""Where a run's images come from: a stored dataset or the simulation stream, and the
validation set each rank holds in memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.loader import load_items, open_stored, stream_fetch  # noqa: F401 - train's names too
from ..errors import LenszooError
from .augment import VAL_SPLIT, derive_seed
from .config import TrainConfig


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
    nuisance: object = None  # a NuisanceAugment when training images arrive raw (--nuisance)


def _shard(n, rank, world_size):
    return np.arange(n)[rank::world_size]


def prepare_data(config: TrainConfig, rank=0, world_size=1, log=print) -> TrainingData:
    """Training items and this rank's validation shard, in memory."""
    index_map = None
    raw = config.nuisance not in (None, "none")  # nuisances are drawn on raw images, normalised after
    if config.stream:
        fetch = stream_fetch(config.dataset, "train", config.task, config.seed, normalized=not raw)
        n_items, shuffle, dataset_name, train_targets = None, False, config.dataset, None
        from ..data.interface import generator_record
        from ..registry import get_dataset

        description = {"source": "stream", "dataset": dataset_name, "epoch_size": config.epoch_size,
                       "stream_seed": config.seed, "generator": generator_record(get_dataset(config.dataset))}
    else:
        stored = open_stored(config.data, config.task, verify=config.verify, normalized=not raw)
        dataset_name = stored.dataset_name
        if config.dataset and config.dataset != dataset_name:
            raise LenszooError(f"{config.data} holds dataset {dataset_name!r} but --dataset is {config.dataset!r}; "
                               f"drop --dataset or point --data at a dataset-{config.dataset} directory")
        fetch, shuffle, n_items = stored.__getitem__, True, len(stored)
        description = {"source": "stored", "path": str(Path(config.data).resolve()), "dataset": dataset_name,
                       "generator": {"dataset": dataset_name, "generator": stored.manifest.get("generator"),
                                     "config": stored.manifest.get("config"), "split": stored.split,
                                     "seed": stored.manifest.get("seed")}}
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
        order = np.random.Generator(np.random.PCG64(derive_seed(val_seed, VAL_SPLIT))).permutation(n_total)
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
    nuisance = nuisance_augment(config, description) if raw else None
    return TrainingData(fetch, n_items, epoch_size, shuffle, index_map, images, targets, positions, n_val,
                        dataset_name, description, target_mean, nuisance)


def nuisance_augment(config: TrainConfig, description: dict):
    """The ``--nuisance`` draws in the training data's own units: sigma is the background noise
    of the generator that made them (a stored set's recorded config, so a changed noise counts)."""
    from ..data.nuisance import NuisanceAugment, background_sigma
    from ..registry import get_dataset
    from .config import NUISANCE_RECIPES

    overrides = description.get("generator", {}).get("config") if description["source"] == "stored" else None
    generator = get_dataset(description["dataset"], **(overrides or {}))
    sigma = background_sigma(generator)
    description["nuisance"] = {"name": config.nuisance, **NUISANCE_RECIPES[config.nuisance],
                               "background_sigma": sigma}
    return NuisanceAugment(NUISANCE_RECIPES[config.nuisance], sigma)
