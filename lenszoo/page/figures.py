"""The results page's figures: learning curves with each architecture's seed band, and the ROC /
scatter plots of the main evaluations, copied beside the page."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..report import _dig
from .select import arch_order


def curve_band(histories: list, metric: str):
    """(images, mean, low, high) of the validation ``metric`` over several runs' histories, at the
    images seen that every run validated at; None when they share no such point."""
    curves = []
    for history in histories:
        points = {h["images_seen"]: _dig(h, "val", metric) for h in history or []
                  if isinstance(h, dict) and h.get("images_seen") and _dig(h, "val", metric) is not None}
        curves.append(points)
    shared = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if not shared:
        return None
    values = [[c[x] for c in curves] for x in shared]
    return shared, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def learning_curves(rows: dict, path: Path) -> list[tuple]:
    """Validation accuracy (classify) and MAE (regress) against images seen, each architecture's
    seeds as a band (min to max) about their mean, and against wall-clock minutes (one line a seed).
    Returns what was drawn: (task, dataset, arch, seeds in the band) per curve; nothing, no file."""
    drawable = {key: next((row for row in siblings if row.histories), None) for key, siblings in rows.items()}
    panels = sorted({(task, dataset) for (_, task, dataset), row in drawable.items() if row is not None})
    if not panels:
        return []
    from ..plotting import pyplot

    plt = pyplot()

    drawn = []
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.6 * len(panels)), squeeze=False)
    for index, (task, dataset) in enumerate(panels):
        metric = "accuracy" if task == "classify" else "mae"
        for (arch, t, d), row in sorted(drawable.items(), key=lambda kv: arch_order(kv[0][0])):
            # the recipe with the most seeds that recorded their training (a checkpoint trained
            # elsewhere may carry no history; its architecture's other recipe still has a curve)
            if (t, d) != (task, dataset) or row is None:
                continue
            histories = [history for _, history in row.histories]
            band = curve_band(histories, metric) if len(histories) > 1 else None
            if band is not None:
                images, mean, low, high = band
                line, = axes[index][0].plot(images, mean, "-o", ms=2.5, label=f"{arch} ({len(histories)} seeds)")
                axes[index][0].fill_between(images, low, high, color=line.get_color(), alpha=0.25, lw=0)
                drawn.append((task, dataset, arch, len(histories)))
            else:
                history = histories[0]
                axes[index][0].plot([h.get("images_seen") for h in history], [_dig(h, "val", metric) for h in history],
                                    "-o", ms=2.5, label=f"{arch} (1 seed)")
                drawn.append((task, dataset, arch, 1))
            color = axes[index][0].lines[-1].get_color()
            for _, history in row.histories:
                minutes = [h.get("train_minutes") for h in history]
                if all(m is not None for m in minutes):
                    axes[index][1].plot(minutes, [_dig(h, "val", metric) for h in history], "-", lw=1, color=color,
                                        label=arch if history is row.histories[0][1] else None)
        for col, xlabel in enumerate(("images seen", "training minutes (wall clock)")):
            ax = axes[index][col]
            ax.set(xlabel=xlabel, ylabel=f"validation {metric}" + (" (dex)" if metric == "mae" else ""),
                   title=f"{task}, dataset {dataset}" + (" (band: min to max over seeds)" if col == 0 else ""))
            if col == 0:
                ax.set_xscale("log")
            if metric == "accuracy":
                ax.set_ylim(0.3, 1.0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return drawn


def is_figures_folder(path) -> bool:
    """A folder of page figures: its learning curves, or nothing but copied ROC / scatter plots."""
    path = Path(path)
    if (path / "learning_curves.png").is_file():
        return True
    names = [p.name for p in path.iterdir() if not p.name.startswith(".")]
    return bool(names) and all(n.endswith(("-roc_curves.png", "-scatter.png")) for n in names)


def copy_plots(main, figures: Path) -> list[tuple[str, str]]:
    """The ROC / scatter PNGs of each main evaluation, copied beside the page: (caption, file name)."""
    copied = []
    for (arch, task, dataset), record in sorted(main.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                             arch_order(kv[0][0]))):
        folder = Path(record["_path"]).parent
        for plot in record.get("plots", []):
            if plot == "confusion_matrix.png":
                continue
            source = folder / plot
            if source.is_file():
                kind = ".".join(Path(plot).name.split(".")[-2:])  # roc_curves.png, also as LABEL.roc_curves.png
                name = f"{arch}-{task}-{dataset}-{kind}"
                shutil.copyfile(source, figures / name)
                copied.append((f"{arch}, {task}, {dataset}, {record.get('split', 'test')} split", name))
    return copied
