"""A run's state: where it stands (``Progress``, saved in every resumable state) and what one
invocation holds (``Run``), with the epoch's running sums and their one reduction over ranks.

The loop, the end of an epoch and the progress display all read this state; it imports none of
them, so they need not import each other."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtime import DistContext
    from .batches import BatchPlan
    from .config import TrainConfig
    from .data import TrainingData

COUNTS = ("n", "correct")  # sums kept as whole numbers


def zero_sums() -> dict:
    return {"loss": 0.0, "n": 0, "correct": 0, "abs_err": 0.0}


def reduce_sums(ctx: DistContext, sums: dict, device) -> dict:
    """The totals of every rank's ``sums``, on every rank, from one all-reduce. ``sums`` themselves
    are folded into rank 0's (the one that is saved); the other ranks restart from zero."""
    if not ctx.enabled:
        return dict(sums)
    import torch

    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    ctx.all_reduce_sum(t)
    totals = dict(zip(keys, t.tolist()))
    for key, total in totals.items():
        value = total if ctx.is_main else 0
        sums[key] = int(round(value)) if key in COUNTS else float(value)
    return totals


@dataclass
class Progress:
    """Where a run stands; saved in every resumable state (as the dict ``trainer_state.pt`` holds)."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    images_seen: int = 0
    sums: dict = field(default_factory=zero_sums)  # this epoch's running loss and score sums
    best: dict | None = None  # epoch, selection key, val metrics and images seen of best/
    history: list = field(default_factory=list)  # one row per finished epoch (metrics.jsonl)
    elapsed_s: float = 0.0  # wall clock of all earlier invocations, less the time their process was stopped
    paused_s: float = 0.0  # time the process of earlier invocations was stopped (SIGSTOP, a suspended machine)
    save_index: int = 0
    finished: bool = False

    @classmethod
    def from_dict(cls, saved: dict) -> "Progress":
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


@dataclass
class Run:
    """One invocation of a run: what it trains, on what, and where it stands."""

    config: TrainConfig
    run_dir: Path
    ctx: DistContext
    device: Any
    model: Any  # the module (saved and validated)
    net: Any  # what steps call: the module, or its DistributedDataParallel wrapper
    optimizer: Any
    data: TrainingData
    plan: BatchPlan
    progress: Progress
    resumed: bool
    started: float  # time.monotonic() when this command began
    log: Any
    info: Any
    checkpoint_kwargs: dict = field(default_factory=dict)
    compute: dict = field(default_factory=dict)
    last_save: float = 0.0
    pauses: "PauseClock | None" = None  # counts the time this command's process was stopped

    @property
    def total_steps(self) -> int:
        return self.plan.steps_per_epoch * self.config.epochs

    def elapsed(self) -> float:
        """Seconds the run has trained, resumes included: wall clock while its process ran."""
        return self.progress.elapsed_s + (time.monotonic() - self.started - self.paused_here())

    def paused(self) -> float:
        """Seconds the run's process was stopped, over all its invocations."""
        return self.progress.paused_s + self.paused_here()

    def paused_here(self) -> float:
        return self.pauses.paused_s if self.pauses is not None else 0.0


class PauseClock:
    """Counts the time the process is stopped (SIGSTOP, a suspended machine), which a monotonic clock
    does not skip: a thread that ticks every second sees a tick that took far longer."""

    def __init__(self, tick_s: float = 1.0, gap_s: float = 30.0):
        self.tick_s, self.gap_s, self.paused_s = tick_s, gap_s, 0.0

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lenszoo-pause-clock", daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        last = time.monotonic()
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            if now - last > self.gap_s:  # a one-second wait does not take 30 s on a running process
                self.paused_s += now - last - self.tick_s
            last = now

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def summary(run_dir, config, progress: Progress, status, rank=0) -> dict:
    """What ``train()`` returns: how the run ended and its history."""
    return {"status": status, "run_dir": str(run_dir), "rank": rank, "epochs_done": progress.epoch,
            "epochs": config.epochs, "images_seen": progress.images_seen, "best": progress.best,
            "history": progress.history}
