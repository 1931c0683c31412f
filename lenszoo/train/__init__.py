"""``lenszoo train``: budgeted, exactly resumable, DDP-capable training.

    config.py    TrainConfig (the run's options; the CLI is built from it), recipes, budgets, schedule
    augment.py   derived seeds, per-step RNG state, batch augmentation
    batches.py   which items each step holds (BatchPlan) and how they are fetched
    data.py      stored or streamed training data, the validation set
    state.py     a run's state: Run, Progress, the epoch sums and their reduction over ranks
    start.py     where the weights start: --init checkpoints, the regression bias
    loop.py      train() -> restore() -> setup() -> fit(): train_step(), saves
    epoch.py     end_epoch(): metrics, validation, best/ and last/, metrics.jsonl
    progress.py  progress bar, per-epoch lines, budget note, learning curve

Shared services live beside the package: ``lenszoo.runtime`` (device, process group,
precision), ``lenszoo.rundir`` (the run directory and its states), ``lenszoo.metrics``
(losses and metrics, shared with ``lenszoo evaluate``).
"""

from .augment import BatchAugment, augment_batch, derive_seed, seed_step
from .batches import BatchPlan, collate, iterate_batches, load_items, rank_positions
from .config import (
    AUGMENTATIONS,
    CPU_BUDGETS,
    PAPER_STREAM_EPOCH,
    RECIPES,
    RUNTIME_OPTIONS,
    SCHEDULES,
    TrainConfig,
    lr_factor,
)
from .data import TrainingData, open_stored, prepare_data, stream_fetch
from .loop import train
from .progress import budget_fit_note, plot_learning_curve
from .start import init_regression_bias
from .state import Progress, Run

__all__ = [
    "AUGMENTATIONS", "CPU_BUDGETS", "PAPER_STREAM_EPOCH", "RECIPES", "RUNTIME_OPTIONS", "SCHEDULES",
    "BatchAugment", "BatchPlan", "Progress", "Run", "TrainConfig", "TrainingData",
    "augment_batch", "budget_fit_note", "collate", "derive_seed", "init_regression_bias", "iterate_batches",
    "load_items", "lr_factor", "open_stored", "plot_learning_curve", "prepare_data", "rank_positions",
    "seed_step", "stream_fetch", "train",
]
