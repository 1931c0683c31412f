"""Reading a dataset's images in bulk: open a stored split, or the simulation stream, as a
``position -> (image, target)`` function; collate items into batches (in DataLoader workers or
not, in an order that does not depend on the number of workers); load a list of items into
memory. Training (``lenszoo.train``) and evaluation (``lenszoo.evaluate``) read data through it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import LenszooError

HELD_OUT_SPLITS = ("holdout",)


def open_stored(path, task, *, normalized=True, verify=False, report_only=False):
    """A stored dataset (``lenszoo simulate`` output) for ``task``; errors say what to do.

    ``report_only`` (``lenszoo evaluate``) may read a held-out split, which training never may.
    ``verify`` checks every file against the sha256 in the dataset's manifest first (a few
    seconds per GB), so a damaged shard is named instead of silently trained on."""
    from .storage import verify_dataset
    from .torch_datasets import StoredDataset

    path = Path(path)
    if not path.exists():
        raise LenszooError(f"data directory {path} does not exist; write one with `lenszoo simulate ... --out {path}`")
    if not path.is_dir():
        from ..files import path_kind

        kind = path_kind(path)
        raise LenszooError(f"{path} is {'a file' if kind.startswith('a regular file') else kind}, not a dataset "
                           "directory; pass the --out folder of `lenszoo simulate`")
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
        stored = StoredDataset(path, task, normalized=normalized)
    except LenszooError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise LenszooError(f"cannot read {path} as a lenszoo dataset ({type(exc).__name__}: {exc}); "
                           "write it with `lenszoo simulate`") from None
    if stored.split in HELD_OUT_SPLITS and not report_only:  # read only to report: no training, no model selection
        raise LenszooError(f"{path} holds the {stored.split!r} split, which is read only by `lenszoo evaluate` for "
                           "the results page; train on a 'train' split and select on a 'val' split")
    return stored


def stream_fetch(dataset: str, split: str, task: str, seed: int, *, normalized=True):
    """``position -> (image, target)`` for the simulated ``dataset``/``split`` stream with ``seed``.

    The stream is a pure function of position, so any position (a resumed run's next batch) is
    simulated directly, without replaying earlier ones."""
    from .torch_datasets import StreamingDataset

    return StreamingDataset(dataset, split, task, epoch_size=1, seed=seed, normalized=normalized).item


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
