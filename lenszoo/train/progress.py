"""What a run shows and draws: the progress bar, per-epoch lines, the budget note, the learning curve."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import TrainConfig
from .state import Run


def format_metrics(metrics: dict) -> str:
    parts = []
    for key in ("loss", "accuracy", "auc", "mae", "rmse"):
        if metrics.get(key) is not None:
            value = metrics[key]
            parts.append(f"{key} {value:.2%}" if key == "accuracy" else f"{key} {value:.4g}")
    return " ".join(parts)


def progress_bar(config: TrainConfig, is_main: bool, epoch: int, total: int, initial: int):
    """A tqdm bar on a terminal (rank 0, not --quiet), else None."""
    if config.quiet or not is_main or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                dynamic_ncols=True, leave=False, file=sys.stderr)


def update_bar(bar, task: str, sums: dict, rate: float):
    if bar is None:
        return
    postfix = {"loss": f"{sums['loss'] / sums['n']:.4f}", "img/s": f"{rate:.0f}"}
    if task == "classify":
        postfix["acc"] = f"{sums['correct'] / sums['n']:.3f}"
    bar.set_postfix(postfix, refresh=False)
    bar.update(1)


def budget_fit_note(config: TrainConfig, *, seconds_per_epoch: float, seconds_left: float | None) -> str | None:
    """After a fresh run's first epoch: a note when ``--max-minutes`` will stop a decaying schedule
    before its end (it then never reaches its small learning rates), with the ``--epochs`` that fits."""
    if seconds_left is None or config.schedule == "constant" or config.epochs <= 1:
        return None
    remaining = config.epochs - 1
    if remaining * seconds_per_epoch <= seconds_left:
        return None
    fits = 1 + int(seconds_left // max(seconds_per_epoch, 1e-9))
    return (f"note: at {seconds_per_epoch:.0f} s per epoch the {config.max_minutes:g}-minute budget ends in epoch "
            f"{fits + 1} of {config.epochs}, before the {config.schedule} schedule has decayed; "
            f"--epochs {fits} would fit it (or resume this run later to finish the schedule)")


def plot_learning_curve(path: Path, history: list[dict], task: str):
    """Loss and the task's main metric against images seen, train and validation."""
    from ..plotting import pyplot

    plt = pyplot()
    seen = [row["images_seen"] for row in history]
    metric, label = ("accuracy", "accuracy") if task == "classify" else ("mae", "MAE (dex)")
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        ax_loss.plot(seen, [row[split]["loss"] for row in history], style, label=split, ms=3)
        ax_metric.plot(seen, [row[split].get(metric) for row in history], style, label=split, ms=3)
    best = [row for row in history if row.get("is_best")]
    if best:
        ax_metric.axvline(best[-1]["images_seen"], color="grey", ls=":", label="best (val)")
    ax_loss.set(xlabel="images seen", ylabel="loss", yscale="log")
    ax_metric.set(xlabel="images seen", ylabel=label)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


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
