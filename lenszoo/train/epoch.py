"""The end of an epoch: training and validation metrics, best/ and last/, metrics.jsonl, the curve."""

from __future__ import annotations

from ..metrics import eval_outputs, selection_key, validation_metrics
from ..rundir import CURVE_FILE, write_metrics
from .config import lr_factor
from .progress import format_metrics, plot_learning_curve
from .state import Run, reduce_sums, zero_sums


def end_epoch(run: Run, seconds: float, images: int):
    """Training and validation metrics of the epoch, best/ and last/, metrics.jsonl and the curve."""
    config, progress = run.config, run.progress
    totals = reduce_sums(run.ctx, progress.sums, run.device)
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
    row = {"epoch": epoch + 1, "images_seen": progress.images_seen, "train": train_metrics, "val": val,
           "lr": config.lr * lr_factor(config.schedule, progress.global_step - 1, run.total_steps),
           "is_best": is_best, "seconds": round(seconds, 3), "images_per_s": round(images / max(seconds, 1e-9), 1),
           # wall clock since the run began, resumes included, the time its process was stopped not
           "train_minutes": round(run.elapsed() / 60, 2), "paused_minutes": round(run.paused() / 60, 2)}
    progress.history.append(row)
    if is_best:
        progress.best = {"epoch": epoch + 1, "key": list(key), "val": val, "images_seen": progress.images_seen}
    progress.epoch += 1
    progress.step = 0
    progress.sums = zero_sums()
    if run.ctx.is_main:
        write_epoch_outputs(run, row, is_best)


def validate(run: Run) -> dict:
    """Validation metrics: each rank predicts its shard; a sum over ranks assembles the full set."""
    import torch

    ctx, data = run.ctx, run.data
    shard_out = eval_outputs(run.model, data.val_images, run.device)
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


def checkpoint_compute(run: Run, images_at_checkpoint: int) -> dict:
    """The ``compute`` a checkpoint of this run records (``lenszoo.compute``: the one rule)."""
    from ..compute import compute_figures

    return compute_figures(run.compute, run.progress.history, images_at_checkpoint=images_at_checkpoint,
                           epochs=run.config.epochs)


def record_totals_in_best(run: Run) -> None:
    """At the end of a finished run, best/ (saved at an earlier epoch) learns the run's total minutes
    and images; its weights are untouched."""
    from ..checkpoint import CONFIG_NAME, read_config
    from ..files import atomic_write_json

    path = run.run_dir / "best" / CONFIG_NAME
    config = read_config(path.parent)
    config["compute"] = checkpoint_compute(run, config.get("images_seen"))
    atomic_write_json(path, config)


def write_epoch_outputs(run: Run, row: dict, is_best: bool):
    """Rank 0's files after an epoch: best/ (if it is), last/, metrics.jsonl, learning_curve.png."""
    from ..checkpoint import save_checkpoint

    config = run.config
    extra = {"compute": checkpoint_compute(run, row["images_seen"]), "epoch": row["epoch"],
             "training_data": run.data.description,
             "selected_on": "val accuracy, then val loss" if config.task == "classify" else "val mse"}
    kwargs = {**run.checkpoint_kwargs, "images_seen": row["images_seen"],
              "metrics": {"val": row["val"], "train": row["train"]}, "extra": extra}
    if is_best:  # best/ and last/ belong to the run directory, which the trainer owns
        save_checkpoint(run.run_dir / "best", run.model, claim=False, **kwargs)
    save_checkpoint(run.run_dir / "last", run.model, claim=False, **kwargs)
    if not is_best and row["epoch"] >= config.epochs:
        record_totals_in_best(run)
    write_metrics(run.run_dir, run.progress.history)
    try:
        plot_learning_curve(run.run_dir / CURVE_FILE, run.progress.history, config.task)
    except Exception as exc:  # noqa: BLE001 - a plot must never cost a training run
        run.info(f"warning: learning curve not drawn ({type(exc).__name__}: {exc})")
    run.info(f"epoch {row['epoch']}/{config.epochs}: train {format_metrics(row['train'])} | "
             f"val {format_metrics(row['val'])}{' (best)' if is_best else ''} | {row['images_per_s']:.0f} img/s")
