"""The results page's tables, each rendered from evaluation records (``select.py`` picks them)."""

from __future__ import annotations

from ..compute import record_compute, shown
from ..markdown import table
from ..report import _dig
from .select import BASELINE, CONTROL, EQUIVARIANT, SEEDS_WANTED, arch_order, by_table_order
from .stats import compare, mean_sd


def fmt(value, spec, default="—"):
    return default if value is None else format(value, spec)


def percent(value):
    return fmt(None if value is None else 100 * value, ".2f") + (" %" if value is not None else "")


def _rows_in_order(rows: dict, task: str):
    for key in sorted((k for k in rows if k[1] == task), key=lambda k: (k[2], arch_order(k[0]))):
        yield from rows[key]


def seeds_cell(row) -> str:
    """How many seeds a row's mean is over, against the seeds asked for: never more than recorded."""
    if not row.n_seeds:
        return "seed not recorded"
    return f"{row.n_seeds} of {SEEDS_WANTED}"


def _seed_mean(row, metric, scale, digits, unit="") -> str:
    mean, sd = mean_sd(row.values(metric))
    if mean is None:
        return "—"
    if sd is None:
        return f"{scale * mean:.{digits}f}{unit}"
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}{unit}"


def _released_cell(row, show) -> str:
    if row.released is not None:
        return show(row.released["metrics"].get(row.metric))
    return f"not evaluated on {row.split}" if row.released_unevaluated else "—"


def _sizes(row) -> str:
    return "/".join(str(n) for n in sorted({r.get("n") for r in row.records()} - {None})) or "—"


def classification_table(rows: dict, paper_rows: dict) -> str:
    """Per architecture and recipe: the released weights' accuracy and the mean ± sd over seeds."""
    out = []
    for row in _rows_in_order(rows, "classify"):
        published = paper_rows.get(("classify", row.arch, row.dataset), {}).get("accuracy")
        mean, _ = mean_sd(row.values("accuracy"))
        delta = None if published is None or mean is None else 100 * (mean - published)
        auc, _ = mean_sd(row.values("auc"))
        out.append([row.dataset, f"`{row.arch}`", row.label, row.split, _released_cell(row, percent),
                    _seed_mean(row, "accuracy", 100, 2, " %"), seeds_cell(row), percent(published),
                    fmt(delta, "+.2f"), fmt(auc, ".4f"), _sizes(row)])
    return table(["dataset", "architecture", "images planned", "split", "released weights", "mean ± sd over seeds",
                   "seeds", "seed paper", "Δ seed mean − paper (points)", "AUC (seed mean)", "n"], out)


def regression_table(rows: dict) -> str:
    out = []
    for row in _rows_in_order(rows, "regress"):
        cells = [fmt(mean_sd(row.values(m))[0], spec) for m, spec in (("rmse", ".3f"), ("bias", "+.3f"),
                                                                       ("correlation", ".2f"),
                                                                       ("mae_predicting_mean", ".3f"))]
        out.append([row.dataset, f"`{row.arch}`", row.label, row.split,
                    _released_cell(row, lambda v: fmt(v, ".3f")), _seed_mean(row, "mae", 1, 3), seeds_cell(row),
                    *cells, _sizes(row)])
    return table(["dataset", "architecture", "images planned", "split", "released weights (MAE, dex)",
                   "mean ± sd over seeds", "seeds", "RMSE", "bias", "correlation", "MAE of the mean", "n"], out)


def bins_table(main) -> str:
    rows = []
    edges = None
    for (arch, task, dataset), record in sorted(main.items(), key=lambda kv: (kv[0][2], arch_order(kv[0][0]))):
        bins = record["metrics"].get("by_log10_ma") if task == "regress" else None
        if not bins:
            continue
        edges = edges or [b["log10_ma"] for b in bins]
        cells = [f"{fmt(b['mae'], '.2f')} / {fmt(b['correlation'], '.2f')}" for b in bins]
        rows.append([dataset, f"`{arch}`", record.get("split", "test"), *cells])
    if not rows:
        return "_No regression evaluation with per-bin metrics._"
    return table(["dataset", "architecture", "split", *(f"[{lo:g}, {hi:g})" for lo, hi in edges)], rows)


def _comparison_cells(a, b) -> list:
    """Difference of seed means, its sampling error, the seed spread, seeds and the verdict."""
    result = compare(a, b)
    scale, digits, unit = (100, 2, " points") if a.task == "classify" else (1, 3, " dex")
    seeds = f"{a.n_seeds} / {b.n_seeds}"
    if result is None:
        return ["—", "—", "—", seeds, "no figure"]
    spread = "— (1 seed)" if result["spread"] is None else f"{scale * result['spread']:.{digits}f}"
    return [f"{scale * result['difference']:+.{digits}f}{unit}", f"{scale * 2 * result['se']:.{digits}f}", spread,
            seeds, result["verdict"]]


def claim_table(rows: dict) -> str:
    """Each equivariant net (its recipe with the most seeds) against every ResNet-50 recipe, by the
    "A beats B" rule."""
    out = []
    for task in ("classify", "regress"):
        for dataset in sorted({k[2] for k in rows if k[1] == task}):
            for arch in EQUIVARIANT:
                if (arch, task, dataset) not in rows:
                    continue
                mine = rows[(arch, task, dataset)][0]
                for baseline in rows.get((BASELINE, task, dataset), []):
                    out.append([task, dataset, f"`{arch}` vs `{BASELINE}`",
                                f"{mine.label} / {baseline.label}", *_comparison_cells(mine, baseline)])
    if not out:
        return "_ResNet-50 or the equivariant nets have no evaluation yet._"
    return table(["task", "dataset", "comparison", "images planned (equivariant / ResNet-50)",
                   "difference of seed means (+ = equivariant better)", "2 SE (test sampling)",
                   "seed spread (larger sd)", "seeds", "verdict"], out)


def control_table(rows: dict) -> str:
    """Each network against the radial-profile control on the same task and dataset: the margin is
    what the network gets from the image beyond the ring's size and brightness."""
    out = []
    for task in ("classify", "regress"):
        show = (lambda r: _seed_mean(r, "accuracy", 100, 2, " %")) if task == "classify" else \
            (lambda r: _seed_mean(r, "mae", 1, 3))
        for dataset in sorted({k[2] for k in rows if k[1] == task}):
            if (CONTROL, task, dataset) not in rows:
                continue
            control = rows[(CONTROL, task, dataset)][0]
            for arch in sorted({k[0] for k in rows if k[1:] == (task, dataset)} - {CONTROL}, key=arch_order):
                for row in rows[(arch, task, dataset)]:
                    out.append([task, dataset, f"`{arch}`", row.label, show(row), show(control),
                                *_comparison_cells(row, control)])
    if not out:
        return f"_No `{CONTROL}` evaluation yet._"
    return table(["task", "dataset", "network", "images planned", "its seed mean", f"`{CONTROL}`",
                   "margin (+ = network better)", "2 SE (test sampling)", "seed spread (larger sd)", "seeds",
                   "verdict"], out)


def compute_table(main, released=None) -> str:
    """What each released checkpoint cost, as its training run recorded it (``lenszoo.compute``):
    the manifest's record of the weights (which reads their config.json and its history), else the
    evaluation's."""
    rows = []
    for (arch, task, dataset), record in sorted(main.items(), key=by_table_order):
        entry = (released or {}).get(_dig(record, "model", "weights_sha256")) or {}
        c = _dig(entry, "recipe", "compute") or record_compute(record)
        rows.append([task, dataset, f"`{arch}`", shown(c["images_to_best"], ","), shown(c["images_total"], ","),
                     shown(c["minutes_to_best"], ".1f"), shown(c["minutes_total"], ".1f"), shown(c["hardware"]),
                     shown(c["threads"]), shown(c["precision"]), fmt(_dig(record, "model", "parameters"), ",")])
    return table(["task", "dataset", "architecture", "images to best", "images in total", "minutes to best",
                   "minutes in total", "hardware", "threads", "precision", "parameters"], rows)


def transfer_table(transfer, own_figures) -> str:
    """Released models scored on another dataset (A -> C-euclid, B -> C-hst), beside the same
    weights' figure on their own dataset (``select.own_of_transfer``)."""
    rows = []
    for key, record in sorted(transfer.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][3], arch_order(kv[0][0]))):
        arch, task, trained_on, dataset = key
        own = own_figures.get(key) or {}
        if task == "classify":
            recall = record["metrics"].get("recall") or {}
            cells = [percent(_dig(own, "metrics", "accuracy")), percent(record["metrics"].get("accuracy")),
                     fmt(record["metrics"].get("auc"), ".3f"),
                     " / ".join(fmt(recall.get(c), ".2f") for c in ("no_sub", "cdm", "axion")) if recall else "—"]
        else:
            cells = [fmt(_dig(own, "metrics", "mae"), ".3f"), fmt(record["metrics"].get("mae"), ".3f"),
                     fmt(record["metrics"].get("correlation"), ".2f"),
                     fmt(record["metrics"].get("mae_predicting_mean"), ".3f")]
        rows.append([task, f"`{arch}`", trained_on, dataset, own.get("split", "—"), *cells, record.get("n")])
    if not rows:
        return "_No transfer evaluation yet._"
    return table(["task", "architecture", "trained on", "tested on", "own split", "own dataset", "on the new set",
                   "AUC / correlation", "recall no_sub / cdm / axion (classify), MAE of the mean (regress)", "n"], rows)


def rotation_table(rotations) -> str:
    rows = []
    for (arch, task, dataset), record in sorted(rotations.items(), key=by_table_order):
        metric = "accuracy" if task == "classify" else "mae"
        show = percent if task == "classify" else (lambda v: fmt(v, ".3f"))
        cells = [show(record["metrics"].get(metric))]
        cells += [show(_dig(record, "rotations", name, "metrics", metric))
                  for name in ("rot90", "rot180", "rot270", "random")]
        cells.append(fmt(_dig(record, "rotations", "random", "mean_abs_output_change"), ".3g"))
        rows.append([task, dataset, f"`{arch}`", *cells, record.get("n")])
    if not rows:
        return "_No evaluation with --rotations yet._"
    return table(["task", "dataset", "architecture", "upright", "90°", "180°", "270°", "random angle",
                   "mean |Δ output| (random)", "n"], rows)


def tta_table(tta) -> str:
    rows = []
    for (arch, task, dataset), record in sorted(tta.items(), key=by_table_order):
        metric = "accuracy" if task == "classify" else "mae"
        plain, averaged = record["metrics"].get(metric), _dig(record, "tta", "metrics", metric)
        if task == "classify":
            change = None if None in (plain, averaged) else f"{100 * (averaged - plain):+.2f} points"
            cells = [percent(plain), percent(averaged), change or "—",
                     fmt(_dig(record, "tta", "prediction_change_rate"), ".2%")]
        else:
            change = None if None in (plain, averaged) else f"{averaged - plain:+.3f} dex"
            cells = [fmt(plain, ".3f"), fmt(averaged, ".3f"), change or "—", "—"]
        rows.append([task, dataset, f"`{arch}`", *cells, record.get("n")])
    if not rows:
        return "_No evaluation with --tta yet._"
    return table(["task", "dataset", "architecture", "plain", "with TTA", "change", "predictions changed", "n"],
                  rows)


def last_doubling(history: list | None, metric: str):
    """(images at the end, change of the validation metric over the last doubling of images seen):
    a rough reading of what more images would buy, from the learning curve itself."""
    rows = [h for h in history or [] if _dig(h, "val", metric) is not None and h.get("images_seen")]
    if len(rows) < 3:
        return None, None
    end = rows[-1]
    half = min(rows[:-1], key=lambda h: abs(h["images_seen"] - end["images_seen"] / 2))
    return end["images_seen"], end["val"][metric] - half["val"][metric]


def curve_table(main) -> str:
    rows = []
    for (arch, task, dataset), record in sorted(main.items(), key=by_table_order):
        metric = "accuracy" if task == "classify" else "mae"
        images, change = last_doubling(_dig(record, "model", "history"), metric)
        if images is None:
            continue
        shown_change = f"{100 * change:+.2f} points" if task == "classify" else f"{change:+.3f} dex"
        rows.append([task, dataset, f"`{arch}`", f"{images:,}", shown_change])
    if not rows:
        return "_No training histories in these results._"
    return table(["task", "dataset", "architecture", "images at the end", "validation change over the last "
                   "doubling of images"], rows)


def headline_table(entries: list[dict], paper_rows: dict | None = None) -> str:
    """One row per architecture: the test metrics (classification accuracy, regression MAE in dex) of
    its released weights, those an untagged name loads first and every tag named, beside the seed
    paper's accuracy; '—' where nothing is released."""
    from ..pretrained.manifest import is_default
    from .select import ORDER

    paper_rows = paper_rows or {}
    groups: dict = {}
    for entry in entries:
        groups.setdefault((entry["arch"], entry["task"], entry["dataset"]), []).append(entry)
    archs = sorted({e["arch"] for e in entries} | set(ORDER), key=arch_order)
    rows = []
    for arch in archs:
        cells = [f"`{arch}`"]
        for task, dataset in (("classify", "A"), ("classify", "B"), ("regress", "A"), ("regress", "B")):
            group = groups.get((arch, task, dataset)) or [{}]
            shown = []  # the weights an untagged name loads first, then any other tags, named
            for entry in sorted(group, key=lambda e: (not is_default(e, group), e.get("tag") or "")):
                test = _dig(entry, "metrics", "test") or {}
                figure = percent(test.get("accuracy")) if task == "classify" else fmt(test.get("mae"), ".3f")
                shown.append(figure + (f" `{entry['tag']}`" if entry.get("tag") else ""))
            cells.append(" · ".join(shown))
        seed = [paper_rows.get(("classify", arch, d), {}).get("accuracy") for d in ("A", "B")]
        cells.append(" / ".join(fmt(None if s is None else 100 * s, ".2f") for s in seed))
        rows.append(cells)
    return table(["architecture", "classify A", "classify B", "regress A (MAE, dex)", "regress B (MAE, dex)",
                   "seed paper, classify A / B (%)"], rows)
