"""Which images each step trains on.

``BatchPlan`` says which item indices batch ``(epoch, step)`` of a rank holds;
``lenszoo.data.loader.iterate_batches`` fetches, collates and augments them, and
``lenszoo.runtime.rank_positions`` is the one rule by which ranks share a sequence.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.loader import collate, iterate_batches, load_items  # noqa: F401 - train's names too
from ..errors import LenszooError
from ..runtime import rank_positions
from .augment import SHUFFLE, derive_seed


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
