"""The training loop behind ``lenszoo train``.

A run is a pure function of its config and seed: every batch's items, every augmentation
and every dropout mask derive from ``(seed, epoch, step, rank)``, so a run stopped anywhere
(budget, SIGTERM, SIGKILL) and resumed ends with the same weights as one that never stopped
(on CPU, with the run's recorded thread count). Read it top to bottom:

    train()       checks, then joins the process group      (config -> Run)
    setup()       model, data, optimizer; the run directory  (everything checked before it is written)
    fit()         epochs of train_step(), then end_epoch()   (saves, budget, signals)
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import LenszooError
from ..files import claim_output
from ..metrics import batch_stats, compute_loss, predict, selection_key, validation_metrics
from ..rundir import (
    CURVE_FILE,
    RUN_FILE,
    clean_leftovers,
    config_for_resume,
    latest_state,
    load_state,
    read_run,
    save_state,
    write_metrics,
    write_run_file,
)
from ..runtime import DistContext, autocast, available_cores, hardware_name, init_distributed
from .augment import INIT, BatchAugment, derive_seed, seed_step
from .batches import BatchPlan, iterate_batches
from .config import TrainConfig, lr_factor
from .data import TrainingData, open_stored, prepare_data
from .progress import budget_fit_note, format_metrics, plot_learning_curve, progress_bar, update_bar

CONTINUE, SAVE, STOP = 0, 1, 2


def zero_sums() -> dict:
    return {"loss": 0.0, "n": 0, "correct": 0, "abs_err": 0.0}


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
    elapsed_s: float = 0.0  # wall clock of all earlier invocations
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

    @property
    def total_steps(self) -> int:
        return self.plan.steps_per_epoch * self.config.epochs

    def elapsed(self) -> float:
        return self.progress.elapsed_s + (time.monotonic() - self.started)


# -- train: checks, then the process group ------------------------------------------------------
def train(config: TrainConfig, *, resume: bool = False, given_fields: set[str] | None = None, log=None) -> dict:
    """Train (or resume) a run; returns a summary dict. See ``lenszoo.rundir`` for the run layout."""
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
    if not resume and (run_dir / RUN_FILE).exists():
        raise LenszooError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    if not resume:  # a new run goes into a new or empty folder, never over a user's files
        claim_output(run_dir, what="lenszoo run directory", is_ours=lambda path: False)

    ctx, device, owns_group = init_distributed(config.device)
    try:
        run = setup(config, spec, run_dir, ctx, device, resume=resume, started=started, log=log)
        return run if isinstance(run, dict) else fit(run)
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# -- setup: model, data, optimizer, then the run directory ------------------------------------------
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


def setup(config, spec, run_dir, ctx, device, *, resume, started, log) -> Run | dict:
    """A ready ``Run``, or the summary of a run that has already finished."""
    import torch

    from ..data import NORMALIZATION

    info = (lambda message: None) if config.quiet else log
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
    optimizer_state = None
    if state_folder is not None:
        model, optimizer_state, saved = load_state(state_folder, device)
        progress = Progress.from_dict(saved)
        if progress.finished:
            log(f"{run_dir} has already finished ({progress.epoch} epochs); nothing to do")
            return summary(run_dir, config, progress, "finished", ctx.rank)
    else:  # built before the data are prepared, so bad --model-arg values fail at once
        torch.manual_seed(derive_seed(config.seed, INIT))
        model = spec.build(config.task, **config.model_args).to(device)
        progress = None
    data = prepare_data(config, ctx.rank, ctx.world_size, log=info if ctx.is_main else (lambda m: None))
    if progress is None:
        if config.task == "regress" and data.target_mean is not None and not init_regression_bias(model,
                                                                                                   data.target_mean):
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
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_run_file(run_dir, config, ctx.world_size)
        clean_leftovers(run_dir, state_folder)
    ctx.barrier()

    run = Run(config, run_dir, ctx, device, model, net, optimizer, data, plan, progress, resume, started, log, info)
    run.checkpoint_kwargs = {"dataset": data.dataset_name, "normalization": NORMALIZATION,
                             "recipe": config.recipe_dict()}
    run.compute = {"device": device.type, "hardware": hardware_name(device), "threads": torch.get_num_threads(),
                   "processes": ctx.world_size}
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
                                          augment=BatchAugment(config.augment, config.seed, run.ctx.rank))
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
    saved_elapsed = progress.elapsed_s
    progress.elapsed_s = run.elapsed()
    if run.ctx.is_main:
        state = asdict(progress)
        save_state(run.run_dir, run.model, run.optimizer, state,
                   {**run.checkpoint_kwargs, "images_seen": progress.images_seen})
        progress.save_index = state["save_index"]
    run.ctx.barrier()
    # elapsed_s counts earlier invocations only; this one is counted from run.started
    progress.elapsed_s = saved_elapsed
    run.last_save = time.monotonic()


def reduce_sums(ctx: DistContext, sums: dict, device):
    """Fold every rank's epoch sums into rank 0's (the one that is saved); others restart from zero."""
    if not ctx.enabled:
        return
    import torch

    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    ctx.all_reduce_sum(t)
    for key, value in zip(keys, t.tolist()):
        total = value if ctx.is_main else 0
        sums[key] = int(round(total)) if key in ("n", "correct") else float(total)


def end_epoch(run: Run, seconds: float, images: int):
    """Training and validation metrics of the epoch, best/ and last/, metrics.jsonl and the curve."""
    import torch

    config, ctx, data, progress = run.config, run.ctx, run.data, run.progress
    reduce_sums(ctx, progress.sums, run.device)
    totals = progress.sums
    if ctx.enabled:  # after the fold, rank 0 holds the totals: share them
        keys = sorted(totals)
        t = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64, device=run.device)
        ctx.all_reduce_sum(t)
        totals = {k: v for k, v in zip(keys, t.tolist())}
    n = max(totals["n"], 1)
    train_metrics = {"loss": totals["loss"] / n}
    if config.task == "classify":
        train_metrics["accuracy"] = totals["correct"] / n
    else:
        train_metrics["mae"] = totals["abs_err"] / n
    val = validate(run)

    epoch = progress.epoch
    key = selection_key(config.task, val)
    is_best = progress.best is None or key > tuple(progress.best["key"])
    run.compute["train_minutes"] = round(run.elapsed() / 60, 2)
    row = {"epoch": epoch + 1, "images_seen": progress.images_seen, "train": train_metrics, "val": val,
           "lr": config.lr * lr_factor(config.schedule, progress.global_step - 1, run.total_steps),
           "is_best": is_best, "seconds": round(seconds, 3), "images_per_s": round(images / max(seconds, 1e-9), 1),
           "train_minutes": run.compute["train_minutes"]}  # wall clock since the run began, resumes included
    progress.history.append(row)
    if is_best:
        progress.best = {"epoch": epoch + 1, "key": list(key), "val": val, "images_seen": progress.images_seen}
    progress.epoch += 1
    progress.step = 0
    progress.sums = zero_sums()
    if ctx.is_main:
        write_epoch_outputs(run, row, is_best)


def validate(run: Run) -> dict:
    """Validation metrics: each rank predicts its shard; a sum over ranks assembles the full set."""
    import torch

    ctx, data = run.ctx, run.data
    shard_out = predict(run.model, data.val_images, run.device)
    full_out = torch.zeros((data.n_val, shard_out.shape[1]), dtype=torch.float64)
    full_y = torch.zeros(data.n_val, dtype=torch.float64)
    full_out[data.val_positions] = shard_out.double()
    full_y[data.val_positions] = data.val_targets.double()
    if ctx.enabled:
        full_out, full_y = full_out.to(run.device), full_y.to(run.device)
        ctx.all_reduce_sum(full_out)
        ctx.all_reduce_sum(full_y)
        full_out, full_y = full_out.cpu(), full_y.cpu()
    targets = full_y.long() if run.config.task == "classify" else full_y.float()
    return validation_metrics(run.config.task, full_out.float(), targets)


def write_epoch_outputs(run: Run, row: dict, is_best: bool):
    """Rank 0's files after an epoch: best/ (if it is), last/, metrics.jsonl, learning_curve.png."""
    from ..checkpoint import save_checkpoint

    config = run.config
    extra = {"compute": dict(run.compute), "epoch": row["epoch"], "training_data": run.data.description,
             "selected_on": "val accuracy, then val loss" if config.task == "classify" else "val mse"}
    kwargs = {**run.checkpoint_kwargs, "images_seen": row["images_seen"],
              "metrics": {"val": row["val"], "train": row["train"]}, "extra": extra}
    if is_best:  # best/ and last/ belong to the run directory, which the trainer owns
        save_checkpoint(run.run_dir / "best", run.model, claim=False, **kwargs)
    save_checkpoint(run.run_dir / "last", run.model, claim=False, **kwargs)
    write_metrics(run.run_dir, run.progress.history)
    try:
        plot_learning_curve(run.run_dir / CURVE_FILE, run.progress.history, config.task)
    except Exception as exc:  # noqa: BLE001 - a plot must never cost a training run
        run.info(f"warning: learning curve not drawn ({type(exc).__name__}: {exc})")
    run.info(f"epoch {row['epoch']}/{config.epochs}: train {format_metrics(row['train'])} | "
             f"val {format_metrics(row['val'])}{' (best)' if is_best else ''} | {row['images_per_s']:.0f} img/s")


def report_end(run: Run, status: str, signal_name: str | None):
    progress, config = run.progress, run.config
    if status == "finished":
        best = progress.best
        run.log(f"finished: best epoch {best['epoch']} (val {format_metrics(best['val'])}); "
                f"checkpoints in {run.run_dir / 'best'} and {run.run_dir / 'last'}")
        return
    reason = f"stopped by {signal_name}" if status == "interrupted" else \
        f"time budget of {config.max_minutes:g} min spent"
    where = (f"after epoch {progress.epoch}" if progress.step == 0 else
             f"in epoch {progress.epoch + 1} after {progress.step} of {run.plan.steps_per_epoch} steps")
    run.log(f"{reason} {where} ({progress.images_seen:,} images seen, state saved); "
            f"continue with: lenszoo train --resume --out {run.run_dir}")


def summary(run_dir, config, progress: Progress, status, rank=0) -> dict:
    return {"status": status, "run_dir": str(run_dir), "rank": rank, "epochs_done": progress.epoch,
            "epochs": config.epochs, "images_seen": progress.images_seen, "best": progress.best,
            "history": progress.history}


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
