"""The training loop behind ``lenszoo train``.

A run is a pure function of its config and seed: every batch's items, every augmentation
and every dropout mask derive from ``(seed, epoch, step, rank)``, so a run stopped anywhere
(budget, SIGTERM, SIGKILL) and resumed ends with the same weights as one that never stopped
(on CPU, with the run's recorded thread count). Read it top to bottom:

    train()       checks, then joins the process group      (config -> Run)
    restore()     a resumed run's saved state, under its lock
    setup()       model, data, optimizer; the run directory  (everything checked before it is written)
    fit()         epochs of train_step(), then end_epoch()   (saves, budget, signals; epoch.py)

The run's state (``Run``, ``Progress``) lives in state.py, where epoch.py and progress.py read it.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import LenszooError
from ..metrics import batch_stats, compute_loss
from ..rundir import (
    claim_new_run,
    clean_leftovers,
    config_for_resume,
    latest_state,
    load_state,
    lock_run,
    read_run,
    save_state,
    write_run_file,
)
from ..runtime import autocast, available_cores, hardware_name, init_distributed
from .augment import INIT, BatchAugment, derive_seed, seed_step
from .batches import BatchPlan, iterate_batches
from .config import TrainConfig, lr_factor
from .data import open_stored, prepare_data
from .epoch import end_epoch
from .progress import budget_fit_note, progress_bar, report_end, update_bar
from .start import init_checkpoint, init_record, init_regression_bias, load_init_weights
from .state import PauseClock, Progress, Run, reduce_sums, summary

CONTINUE, SAVE, STOP = 0, 1, 2


class Saved(NamedTuple):
    """A resumable state as read back: its folder, the model, the optimizer's state, the progress."""

    folder: Path
    model: Any
    optimizer_state: dict
    progress: Progress


# -- train: checks, then the process group ------------------------------------------------------
def train(config: TrainConfig, *, resume: bool = False, given_fields: set[str] | None = None, log=None) -> dict:
    """Train (or resume) a run; returns a summary dict. See ``lenszoo.rundir`` for the run layout."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    with PauseClock() as pauses:  # the minutes a run records leave out the time its process was stopped
        return _train(config, resume=resume, given_fields=given_fields, log=log, pauses=pauses,
                      started=time.monotonic())


def _train(config: TrainConfig, *, resume, given_fields, log, pauses, started) -> dict:
    if resume:
        if not config.out:
            raise LenszooError("--resume needs --out RUN_DIR: the run to continue")
        config = config_for_resume(config.out, config, given_fields if given_fields is not None else set())
        config.check()  # a stored config is already resolved: its None values keep their meaning
    else:
        config = config.resolved()
    run_dir = Path(config.out)

    # Cheap checks first, so a typo fails before any simulation or model building.
    from ..registry import registry

    spec = registry.architecture(config.arch)
    if config.task not in spec.tasks:
        raise LenszooError(f"architecture {config.arch!r} has no {config.task!r} head; it supports: "
                           f"{', '.join(spec.tasks)} (choose another --arch or --task)")
    if config.dataset is not None:
        registry.dataset(config.dataset)
    if config.data:
        open_stored(config.data, config.task)
    init_folder = None
    # A resumed run killed before its first state starts again from its --init weights too.
    if config.init and (not resume or latest_state(run_dir) is None):
        init_folder = init_checkpoint(config)
        config.init = str(init_folder.resolve())  # run.json records the exact folder
    if not resume:  # a new run goes into a new or empty folder, never over a user's files
        claim_new_run(run_dir)

    ctx, device, owns_group = init_distributed(config.device)
    try:
        with ExitStack() as held:  # the run directory's lock, from setup to the end of fit
            saved = restore(config, run_dir, ctx, device, resume=resume, hold=held.enter_context)
            if saved is not None and saved.progress.finished:
                log(f"{run_dir} has already finished ({saved.progress.epoch} epochs); nothing to do")
                return summary(run_dir, config, saved.progress, "finished", ctx.rank)
            run = setup(config, spec, run_dir, ctx, device, saved, resume=resume, started=started, log=log,
                        init_folder=init_folder, hold=held.enter_context)
            run.pauses = pauses
            return fit(run)
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# -- setup: model, data, optimizer, then the run directory ------------------------------------------
def on_main(ctx, device, action):
    """Run ``action`` on rank 0 only; its failure stops every rank (rather than leaving the others
    waiting at the next barrier)."""
    failure = None
    if ctx.is_main:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            failure = exc
    if ctx.broadcast_int(int(failure is not None), device):
        raise failure or LenszooError("rank 0 could not write the run directory; its error says why")


def restore(config, run_dir, ctx, device, *, resume, hold=lambda lock: None) -> Saved | None:
    """The run's latest saved state when resuming (None for a new run, or one killed before its
    first save), read under the run directory's lock; also sets this process's thread count.
    ``hold`` keeps a context manager entered until the command ends (the lock)."""
    import torch

    if resume:  # before its state is read: no other command may be writing it
        on_main(ctx, device, lambda: hold(lock_run(run_dir)))
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
    if state_folder is None:
        return None
    model, optimizer_state, state = load_state(state_folder, device)
    return Saved(state_folder, model, optimizer_state, Progress.from_dict(state))


def setup(config, spec, run_dir, ctx, device, saved: Saved | None, *, resume, started, log, init_folder=None,
          hold=lambda lock: None) -> Run:
    """A ready ``Run``: from its ``saved`` state (:func:`restore`), else a freshly built model;
    the data, optimizer and plan; then, everything checked, the run directory."""
    import torch

    from ..data import NORMALIZATION

    info = (lambda message: None) if config.quiet else log
    state_folder = saved.folder if saved is not None else None
    optimizer_state = saved.optimizer_state if saved is not None else None
    if saved is not None:
        model, progress = saved.model, saved.progress
    else:  # built before the data are prepared, so bad --model-arg values fail at once
        torch.manual_seed(derive_seed(config.seed, INIT))
        model = spec.build(config.task, **config.model_args)
        if init_folder is not None:
            load_init_weights(model, init_folder)
        model = model.to(device)
        progress = None
    data = prepare_data(config, ctx.rank, ctx.world_size, log=info if ctx.is_main else (lambda m: None))
    if progress is None:
        starts_random = init_folder is None  # --init weights already carry their regression bias
        if config.task == "regress" and starts_random and data.target_mean is not None and \
                not init_regression_bias(model, data.target_mean):
            log("warning: no single-output Linear/Conv layer found to start the regression bias at the "
                f"mean target {data.target_mean:.2f}; training may need many steps to reach it")
        progress = Progress()
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

    # Model, data and plan are checked: only now is anything written, so a rejected run leaves
    # no run.json behind and the corrected command starts afresh.
    def start_writing():
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            hold(lock_run(run_dir))
            claim_new_run(run_dir)  # again, under the lock: no other train started here meanwhile
            write_run_file(run_dir, config, ctx.world_size)
        clean_leftovers(run_dir, state_folder)

    on_main(ctx, device, start_writing)
    ctx.barrier()

    run = Run(config, run_dir, ctx, device, model, net, optimizer, data, plan, progress, resume, started, log, info)
    run.checkpoint_kwargs = {"dataset": data.dataset_name, "normalization": NORMALIZATION,
                             "recipe": config.recipe_dict()}
    if config.init:  # what the weights were before this run: a curriculum's earlier stage
        run.checkpoint_kwargs["recipe"]["init"] = init_record(config.init)
    # the machine part of each checkpoint's compute record (lenszoo/compute.py adds minutes and images)
    run.compute = {"device": device.type, "hardware": hardware_name(device), "threads": torch.get_num_threads(),
                   "processes": ctx.world_size, "precision": config.precision, "channels_last": config.channels_last}
    if ctx.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        where = f"from epoch {progress.epoch + 1} step {progress.step}" if state_folder else "from scratch"
        info(f"training {config.arch} ({n_params:,} parameters) for {config.task} on {data.dataset_name}, "
             f"{config.epochs} epochs x {plan.steps_per_epoch} steps of {config.batch_size} x {ctx.world_size} "
             f"process(es), {where}, on {device}; run directory {run_dir}")
    return run


# -- fit: the epochs ------------------------------------------------------------------------------------
def fit(run: Run) -> dict:
    """Train to the end of the planned epochs, or until the budget or a signal stops the run."""
    config, progress, plan = run.config, run.progress, run.plan
    budget_s = config.max_minutes * 60 if config.max_minutes else None
    run.last_save = time.monotonic()
    status, batches, action = "finished", None, CONTINUE
    loop_start = time.monotonic()
    with StopSignals() as signals:
        try:
            if progress.epoch < config.epochs:
                batches = iterate_batches(run.data.fetch, plan, (progress.epoch, progress.step), config.epochs,
                                          workers=config.workers, pin_memory=run.device.type == "cuda",
                                          augment=batch_augment(run))
            while progress.epoch < config.epochs:
                epoch = progress.epoch
                bar = progress_bar(config, run.ctx.is_main, epoch, plan.steps_per_epoch, progress.step)
                epoch_start, epoch_images = time.monotonic(), 0
                while progress.step < plan.steps_per_epoch:
                    got_epoch, got_step, images, targets = next(batches)
                    assert (got_epoch, got_step) == (epoch, progress.step), "batch stream out of step with the loop"
                    epoch_images += train_step(run, images, targets)
                    update_bar(bar, config.task, progress.sums, epoch_images / max(time.monotonic() - epoch_start,
                                                                                   1e-9))
                    action = decide(run, signals, budget_s)
                    if action == STOP and progress.step < plan.steps_per_epoch:
                        status = "interrupted" if signals.requested else "budget"
                        save(run)
                        break
                    if action == SAVE and progress.step < plan.steps_per_epoch:
                        save(run)
                if bar is not None:
                    bar.close()
                if status != "finished":
                    break
                end_epoch(run, time.monotonic() - epoch_start, epoch_images)
                if run.ctx.is_main and not run.resumed and progress.epoch == 1:
                    note = budget_fit_note(config, seconds_per_epoch=time.monotonic() - loop_start,
                                           seconds_left=budget_s - (time.monotonic() - run.started) if budget_s else None)
                    if note:
                        run.log(note)
                progress.finished = progress.epoch >= config.epochs
                save(run)
                if action == STOP and progress.epoch < config.epochs:
                    status = "interrupted" if signals.requested else "budget"
                    break
        finally:
            del batches  # stops DataLoader workers
    if run.ctx.is_main:
        report_end(run, status, signals.requested)
    return summary(run.run_dir, config, progress, status, run.ctx.rank)


def batch_augment(run: Run) -> BatchAugment:
    nuisance = run.data.nuisance
    if nuisance is None:
        return BatchAugment(run.config.augment, run.config.seed, run.ctx.rank)
    from ..data import normalize

    return BatchAugment(run.config.augment, run.config.seed, run.ctx.rank, nuisance=nuisance, normalize=normalize)


def train_step(run: Run, images, targets) -> int:
    """One optimizer step on one batch; returns the images it saw (over all processes)."""
    import torch

    config, progress = run.config, run.progress
    epoch, step = progress.epoch, progress.step
    seed_step(config.seed, epoch, step, run.ctx.rank)  # dropout and any other draw of the model
    images = images.to(run.device, non_blocking=True)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = targets.to(run.device, non_blocking=True)
    for group in run.optimizer.param_groups:
        group["lr"] = config.lr * lr_factor(config.schedule, progress.global_step, run.total_steps)
    with autocast(config.precision, run.device):
        outputs = run.net(images)
    outputs = outputs.float()  # the loss and everything after it in fp32
    loss = compute_loss(config.task, outputs, targets)
    if not torch.isfinite(loss):
        if not bool(torch.isfinite(images).all()):
            raise LenszooError(f"the training images of epoch {epoch + 1} step {step} contain NaN or infinite "
                               "pixels; fix or re-simulate the data (the run can be resumed from its last saved state)")
        raise LenszooError(f"loss became {float(loss)} at epoch {epoch + 1} step {step}; lower --lr "
                           "(the run can be resumed from its last saved state)")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()

    n = len(targets)
    sums = progress.sums
    sums["loss"] += loss.item() * n
    sums["n"] += n
    for key, value in batch_stats(config.task, outputs.detach(), targets).items():
        sums[key] += value
    progress.step += 1
    progress.global_step += 1
    progress.images_seen += n * run.ctx.world_size
    return n * run.ctx.world_size


def decide(run: Run, signals: "StopSignals", budget_s: float | None) -> int:
    """CONTINUE, SAVE or STOP after a step: rank 0 decides (budget, signal, save cadence), all ranks follow."""
    action = CONTINUE
    if run.ctx.is_main:
        now, config = time.monotonic(), run.config
        save_every_s = config.save_every_minutes * 60 if config.save_every_minutes else None
        if signals.requested or (budget_s is not None and now - run.started >= budget_s):
            action = STOP
        elif (config.save_every_steps and run.progress.global_step % config.save_every_steps == 0) \
                or (save_every_s is not None and now - run.last_save >= save_every_s):
            action = SAVE
    return run.ctx.broadcast_int(action, run.device)


def save(run: Run):
    """A resumable state: weights, optimizer and progress (rank 0 writes, all ranks wait)."""
    reduce_sums(run.ctx, run.progress.sums, run.device)
    progress = run.progress
    saved_elapsed, saved_paused = progress.elapsed_s, progress.paused_s
    progress.elapsed_s, progress.paused_s = run.elapsed(), run.paused()
    if run.ctx.is_main:
        state = asdict(progress)
        save_state(run.run_dir, run.model, run.optimizer, state,
                   {**run.checkpoint_kwargs, "images_seen": progress.images_seen})
        progress.save_index = state["save_index"]
    run.ctx.barrier()
    # elapsed_s and paused_s count earlier invocations only; this one is counted from run.started
    progress.elapsed_s, progress.paused_s = saved_elapsed, saved_paused
    run.last_save = time.monotonic()


class StopSignals:
    """SIGTERM/SIGINT ask the loop to save and stop at the next step instead of dying."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
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
