"""PyTorch datasets: a stored directory (memory-mapped) and an on-the-fly simulation stream.

Both yield ``(image, target)``: ``image`` a float32 tensor ``(1, H, W)``,
normalised with the dataset's recorded normalisation; ``target`` a
``torch.long`` class index (task ``classify``) or a ``torch.float32``
log10(m_a / eV) (task ``regress``, axion images only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..errors import LenszooError
from ..tasks import check_task
from .deeplense import DeepLenseFolder
from .generate import resolve_generator
from .interface import check_split, generator_info
from .normalization import NORMALIZATION, normalizer_from_config
from .storage import current_meta, read_manifest

_NO_NORMALIZATION = {"name": "none", "version": 1}


def make_item(image: np.ndarray, label: int, log10_mass: float, task: str, normalizer):
    """The ``(image, target)`` pair every lenszoo dataset yields."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    tensor = torch.from_numpy(np.ascontiguousarray(normalizer(image)))
    if task == "classify":
        return tensor, torch.tensor(int(label), dtype=torch.long)
    return tensor, torch.tensor(float(log10_mass), dtype=torch.float32)


def axion_label(class_names) -> int:
    if "axion" not in class_names:
        raise LenszooError(f"task 'regress' needs axion images; this dataset's classes are {list(class_names)}")
    return list(class_names).index("axion")


class StoredDataset(Dataset):
    """Map-style dataset over a directory written by ``lenszoo simulate`` or ``lenszoo import-deeplense``.

    Images stay on disk (memory-mapped shards, opened lazily in each
    process); only labels and metadata are held in memory. Task ``regress``
    is the view of the axion images only.
    """

    def __init__(self, path, task: str = "classify", *, normalized: bool = True):
        self.task = check_task(task)
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.class_names = tuple(self.manifest["class_names"])
        self.dataset_name = self.manifest["dataset"]
        self.split = self.manifest.get("split")
        self.normalization = self.manifest.get("normalization", NORMALIZATION) if normalized else _NO_NORMALIZATION
        self._normalizer = normalizer_from_config(self.normalization)
        self._shards = self.manifest["shards"]
        self._starts = np.array([shard["start"] for shard in self._shards], dtype=np.int64)
        self.image_shape = tuple(self.manifest["image_shape"])
        metas = []
        for shard in self._shards:
            meta_path, images_path = self.path / shard["meta"], self.path / shard["images"]
            try:
                meta = np.load(meta_path, allow_pickle=False)
                images = np.load(images_path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise LenszooError(
                    f"dataset {self.path}: cannot read shard {shard['index']} ({exc}); re-run "
                    "`lenszoo simulate` with the same arguments to rewrite damaged shards"
                ) from None
            if images.shape != (shard["count"], *self.image_shape) or meta.shape != (shard["count"],):
                raise LenszooError(
                    f"dataset {self.path}: shard {shard['index']} holds {images.shape}, the manifest says "
                    f"{(shard['count'], *self.image_shape)}; re-simulate into a new directory"
                )
            metas.append(current_meta(meta))
        all_meta = np.concatenate(metas) if metas else np.zeros(0)
        if task == "regress":
            self.indices = np.flatnonzero((all_meta["label"] == axion_label(self.class_names))
                                          & np.isfinite(all_meta["log10_axion_mass"]))
        else:
            self.indices = np.arange(all_meta.shape[0])
        self.meta = all_meta[self.indices]
        if task == "classify":
            self.targets = self.meta["label"].astype(np.int64)
        else:
            self.targets = self.meta["log10_axion_mass"].astype(np.float32)
        self._memmaps: dict[int, np.ndarray] = {}

    def __getstate__(self):  # memory maps are re-opened in the receiving process, never copied
        state = self.__dict__.copy()
        state["_memmaps"] = {}
        return state

    def __len__(self):
        return len(self.indices)

    def _shard_images(self, k: int) -> np.ndarray:
        if k not in self._memmaps:
            self._memmaps[k] = np.load(self.path / self._shards[k]["images"], mmap_mode="r", allow_pickle=False)
        return self._memmaps[k]

    def image(self, i: int) -> np.ndarray:
        """Raw (un-normalised) float32 image ``i`` of this view, shape ``(1, H, W)``."""
        position = int(self.indices[i])
        k = int(np.searchsorted(self._starts, position, side="right") - 1)
        return np.array(self._shard_images(k)[position - self._starts[k]], dtype=np.float32)

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        i = int(i) % len(self)
        row = self.meta[i]
        return make_item(self.image(i), row["label"], row["log10_axion_mass"], self.task, self._normalizer)

    def __repr__(self):
        return f"StoredDataset({str(self.path)!r}, task={self.task!r}: {self.dataset_name}/{self.split}, {len(self)} images)"


class StreamingDataset(IterableDataset):
    """Images simulated on the fly, never repeated within a run.

    Epoch ``e`` covers stream positions ``[e * epoch_size, (e + 1) * epoch_size)``.
    Position ``p`` is image ``p`` of the (dataset, split, seed) stream for task
    ``classify`` (class ``p % 3``, so classes stay balanced) and the ``p``-th
    axion image of that stream (image ``3 p + 2``) for ``regress``; either way
    the images equal those ``lenszoo simulate`` stores at the same indices.
    DDP rank ``r`` of ``world_size`` takes positions ``r, r + world_size, ...``;
    within a rank, DataLoader worker ``w`` of ``W`` takes every ``W``-th of those.
    Call ``set_epoch(e)`` before each epoch (with ``persistent_workers=False``,
    the default, so workers see it).
    """

    def __init__(self, dataset, split: str, task: str = "classify", *, epoch_size: int, seed: int = 0,
                 noise: bool = True, rank: int = 0, world_size: int = 1, normalized: bool = True):
        self.task = check_task(task)
        self.generator = resolve_generator(dataset)
        check_split(self.generator, split)
        for value, what in ((epoch_size, "epoch_size"), (world_size, "world_size")):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise LenszooError(f"{what} must be a whole number > 0; got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise LenszooError(f"seed must be a whole number >= 0; got {seed!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
            raise LenszooError(f"rank must be in [0, world_size={world_size}); got {rank!r}")
        if epoch_size % world_size:
            raise LenszooError(
                f"epoch_size {epoch_size} is not divisible by world_size {world_size}; every rank must "
                "yield the same number of images: pick a multiple"
            )
        self.split, self.seed, self.noise = split, int(seed), bool(noise)
        self.epoch_size, self.rank, self.world_size = int(epoch_size), int(rank), int(world_size)
        self.epoch = 0
        self.class_names = tuple(self.generator.class_names)
        self.dataset_name = self.generator.name
        self.normalization = NORMALIZATION
        self._normalizer = normalizer_from_config(NORMALIZATION if normalized else {"name": "none"})
        self._axion = axion_label(self.class_names) if task == "regress" else None
        self.manifest = {
            "dataset": self.dataset_name, "split": split, "seed": self.seed, "noise": self.noise,
            "config": self.generator.config, "class_names": list(self.class_names),
            "generator": generator_info(self.generator),
            "normalization": NORMALIZATION, "streaming": True, "epoch_size": self.epoch_size,
        }

    def set_epoch(self, epoch: int):
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise LenszooError(f"epoch must be a whole number >= 0; got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self):
        return self.epoch_size // self.world_size

    def positions(self, epoch: int | None = None, worker: int = 0, num_workers: int = 1) -> range:
        """Stream positions this rank's ``worker`` yields in ``epoch``: the trainer's rule for ranks
        (``lenszoo.runtime.rank_positions``), then every ``num_workers``-th for a worker."""
        from ..runtime import rank_positions

        epoch = self.epoch if epoch is None else epoch
        return rank_positions(epoch * self.epoch_size, self.epoch_size, self.rank, self.world_size)[worker::num_workers]

    def stream_index(self, position: int) -> tuple[int, str | None]:
        """(generator index, forced class) of stream ``position``."""
        if self._axion is None:
            return position, None
        return position * len(self.class_names) + self._axion, self.class_names[self._axion]

    @property
    def targets(self) -> np.ndarray:
        """Targets of this rank's current epoch in stream order (draws parameters, renders nothing)."""
        values = []
        for position in self.positions():
            index, class_name = self.stream_index(position)
            if self._axion is None:
                values.append(index % len(self.class_names))
            elif hasattr(self.generator, "draw"):
                realization = self.generator.draw(self.split, index, self.seed, class_name=class_name)
                values.append(realization.metadata()["log10_axion_mass"])
            else:
                _, meta = self.generator.simulate(self.split, index, self.seed, class_name=class_name, noise=False)
                values.append(meta["log10_axion_mass"])
        return np.asarray(values, dtype=np.int64 if self._axion is None else np.float32)

    def item(self, position: int):
        """``(image, target)`` at stream ``position``, simulated directly (a resumed run's next
        batch needs no replay of earlier positions)."""
        index, class_name = self.stream_index(position)
        image, meta = self.generator.simulate(self.split, index, self.seed, class_name=class_name, noise=self.noise)
        return make_item(image, meta["label"], meta["log10_axion_mass"], self.task, self._normalizer)

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for position in self.positions(self.epoch, worker, num_workers):
            yield self.item(position)

    def __repr__(self):
        return (f"StreamingDataset({self.dataset_name!r}, {self.split!r}, task={self.task!r}, "
                f"epoch_size={self.epoch_size}, seed={self.seed}, rank={self.rank}/{self.world_size})")


class DeepLenseDataset(DeepLenseFolder, Dataset):
    """A DeepLense folder (one folder per class of ``.npy`` files) with ``StoredDataset``'s items.

    ``trust_pickle=True`` is needed for DeepLense's axion files (pickled
    ``[image, mass]`` object arrays); unpickling runs code from the files, so
    pass it only for data from a source you trust.
    """

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} images")
        image, label, log10_mass = self.item_values(int(i) % len(self))
        return make_item(image, label, log10_mass, self.task, self._normalizer)

    def __repr__(self):
        return f"DeepLenseDataset({str(self.path)!r}, task={self.task!r}, {len(self)} images)"
