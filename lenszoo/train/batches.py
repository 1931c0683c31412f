"""Which images each step trains on, and how they reach the model.

``BatchPlan`` says which item indices batch ``(epoch, step)`` of a rank holds;
``iterate_batches`` fetches, collates and augments them, in DataLoader workers or
not, in an order that does not depend on the number of workers. ``rank_positions``
is the one rule by which ranks share a sequence (``StreamingDataset`` uses it too).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import LenszooError
from .augment import SHUFFLE, derive_seed


def rank_positions(first: int, count: int, rank: int, world_size: int) -> range:
    """The positions of ``[first, first + count)`` that ``rank`` of ``world_size`` takes:
    every ``world_size``-th, starting at ``first + rank`` (ranks interleave)."""
    return range(first + rank, first + count, world_size)


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
            rng = np.random.Generator(np.random.PCG64(derive_seed(self.seed, SHUFFLE, pass_index)))
            self._passes[pass_index] = rng.permutation(self.n_items)
        return self._passes[pass_index]

    def epoch_items(self, epoch: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        positions = np.asarray(rank_positions(epoch * self.epoch_size, self.per_rank * self.world_size, self.rank,
                                              self.world_size), dtype=np.int64)
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
    plan = FixedPlan(indices, batch_size)
    batches = [(images, targets) for _, _, images, targets in iterate_batches(fetch, plan, (0, 0), 1, workers)]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


class FixedPlan:
    """A one-epoch plan over a fixed list of indices."""

    def __init__(self, indices, batch_size):
        self.indices, self.batch_size = indices, batch_size
        self.steps_per_epoch = math.ceil(len(indices) / batch_size)

    def batch(self, epoch, step):
        return self.indices[step * self.batch_size : (step + 1) * self.batch_size]
