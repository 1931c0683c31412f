"""What a training run cost: the one rule behind the ``compute`` a checkpoint records.

The trainer writes it into every checkpoint's config.json (``lenszoo/train/epoch.py``); release
(the manifest's ``recipe.compute``) and the results page read records through the same
function, so "minutes" means one thing everywhere: minutes to the checkpoint (the best epoch
for ``best/``) and, once the run has finished, minutes of the whole run. A figure no run
recorded is None and shows as "not recorded"; nothing here is ever typed by hand.
"""

from __future__ import annotations

# how the run computed: the machine and the arithmetic
MACHINE = ("device", "hardware", "threads", "processes", "precision", "channels_last")
# what it cost: wall-clock minutes (resumes included) and images, to the checkpoint and in total
FIGURES = ("minutes_to_best", "images_to_best", "minutes_total", "images_total")
FIELDS = MACHINE + FIGURES
NOT_RECORDED = "not recorded"


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compute_figures(compute: dict | None, history: list | None, *, images_at_checkpoint: int | None,
                    epochs: int | None, recipe: dict | None = None) -> dict:
    """The compute record of a checkpoint, every field of ``FIELDS`` (None where not recorded).

    ``compute``: what the trainer recorded (the machine; figures it already wrote are kept);
    ``history``: the run's per-epoch rows (metrics.jsonl: ``images_seen``, ``train_minutes``,
    ``epoch``); ``images_at_checkpoint``: the checkpoint's own images_seen; ``epochs``: the
    planned epochs (the run has finished when its history reaches them). Older checkpoints
    recorded ``train_minutes`` at the epoch they were saved: that is their minutes to the checkpoint.
    """
    compute = compute if isinstance(compute, dict) else {}
    recipe = recipe if isinstance(recipe, dict) else {}
    out = {key: compute.get(key) for key in MACHINE}
    defaults = {"precision": "fp32", "channels_last": False} if recipe else {}  # as runs before these options
    for key in ("precision", "channels_last"):                                # existed trained (rundir.py)
        if out[key] is None:
            out[key] = recipe.get(key, defaults.get(key))
    rows = [row for row in history or [] if isinstance(row, dict) and _number(row.get("images_seen")) is not None]
    at_checkpoint = [row for row in rows if row["images_seen"] == images_at_checkpoint]
    out["images_to_best"] = _number(compute.get("images_to_best")) or _number(images_at_checkpoint)
    out["minutes_to_best"] = next((value for value in (
        _number(compute.get("minutes_to_best")),
        _number(at_checkpoint[-1].get("train_minutes")) if at_checkpoint else None,
        _number(compute.get("train_minutes"))) if value is not None), None)
    finished = bool(rows) and _number(epochs) is not None and _number(rows[-1].get("epoch")) is not None \
        and rows[-1]["epoch"] >= epochs
    out["minutes_total"] = _number(compute.get("minutes_total"))
    out["images_total"] = _number(compute.get("images_total"))
    if finished:
        if out["minutes_total"] is None:
            out["minutes_total"] = _number(rows[-1].get("train_minutes"))
        if out["images_total"] is None:
            out["images_total"] = rows[-1]["images_seen"]
    return {key: out[key] for key in FIELDS}


def record_compute(record: dict) -> dict:
    """``compute_figures`` of a ``lenszoo evaluate`` record (its ``model`` part)."""
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    recipe = model.get("recipe") if isinstance(model.get("recipe"), dict) else {}
    return compute_figures(model.get("compute"), model.get("history"), images_at_checkpoint=model.get("images_seen"),
                           epochs=recipe.get("epochs"), recipe=recipe)


def shown(value, spec: str = "") -> str:
    """A compute figure for a table: formatted, or "not recorded"."""
    return NOT_RECORDED if value is None else format(value, spec)
