"""``lenszoo report --page``: the results page, generated from ``lenszoo evaluate`` results.

Everything on the page is computed from results.json files (and the training histories they
carry), so it regenerates and is never hand-typed: Tables 1 and 2 beside the seed paper's,
the compute of each checkpoint, regression by log10 m_a bin, the seed's claim checked pair by
pair, rotation robustness, learning curves, ROC curves and regression scatter plots. Prose
that interprets the numbers comes from a notes file the page includes verbatim.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import defaultdict
from pathlib import Path

from .errors import LenszooError
from .report import MARKER, _dig, distinct_weights, markdown_table as _table

EQUIVARIANT = ("c8_steerable", "hnet", "etn")
BASELINE = "resnet50"
ORDER = ("resnet50", "c8_steerable", "hnet", "etn", "radial_profile")
CONTROL = "radial_profile"  # blind to substructure morphology: a network's margin over it is the morphology signal


def _key(record):
    return record["arch"], record["task"], str(record["dataset"])


def _arch_order(arch):
    return (ORDER.index(arch) if arch in ORDER else len(ORDER), arch)


def pick(results: list[dict], released=frozenset()) -> tuple[dict, dict]:
    """Per (arch, task, dataset): the main evaluation (test split, most images) and the
    rotation evaluation (test split, with rotations), one set of weights each: the released
    weights (sha256 in ``released``) where they were evaluated (for rotations, else the run's
    other evaluated weights)."""
    main, rotations = {}, {}
    groups = defaultdict(list)
    for record in results:
        if record.get("split", "test") == "test" and not is_transfer(record):
            groups[_key(record)].append(record)
    for key, everything in groups.items():
        records = [r for r in everything if _dig(r, "model", "weights_sha256") in released] or everything
        records = distinct_weights(records) if len({_dig(r, "model", "weights_sha256") for r in records}) > 1 \
            else records
        main[key] = max(records, key=lambda r: (r.get("n") or 0, not r.get("rotations")))
        if not _dig(main[key], "model", "history"):  # an fp16 copy evaluated as a folder: its run's curve
            history = next((_dig(r, "model", "history") for r in everything if _dig(r, "model", "history")), None)
            if history:
                main[key] = {**main[key], "model": {**main[key]["model"], "history": history}}
        # rotations of the released weights, else of the same run's weights before an fp16 release
        with_rotations = [r for r in records if r.get("rotations")] or [r for r in everything if r.get("rotations")]
        if with_rotations:
            rotations[key] = max(with_rotations, key=lambda r: r.get("n") or 0)
    return main, rotations


def _most_images(groups: dict, released) -> dict:
    """Per key: the record on the most images, among the released weights' records where there are any."""
    chosen = {}
    for key, records in groups.items():
        records = [r for r in records if _dig(r, "model", "weights_sha256") in released] or records
        chosen[key] = max(records, key=lambda r: r.get("n") or 0)
    return chosen


def is_transfer(record) -> bool:
    """An evaluation on another dataset than the model was trained on (the shortcut probe)."""
    trained_on = record.get("trained_on")
    return trained_on is not None and str(trained_on) != str(record["dataset"])


def pick_transfer(results: list[dict], released=frozenset()) -> dict:
    """Per (arch, task, trained_on, dataset): the transfer evaluation on the most images, of the
    released weights where they were evaluated."""
    groups = defaultdict(list)
    for record in results:
        if record.get("split", "test") == "test" and is_transfer(record):
            groups[(record["arch"], record["task"], str(record["trained_on"]), str(record["dataset"]))].append(record)
    return _most_images(groups, released)


def _fmt(value, spec, default="—"):
    return default if value is None else format(value, spec)


def _percent(value):
    return _fmt(None if value is None else 100 * value, ".2f") + (" %" if value is not None else "")


def _compute(record) -> dict:
    compute = _dig(record, "model", "compute") or {}
    recipe = _dig(record, "model", "recipe") or {}
    return {"images": _dig(record, "model", "images_seen"), "minutes": compute.get("train_minutes"),
            "hardware": compute.get("hardware"), "precision": recipe.get("precision", "fp32"),
            "params": _dig(record, "model", "parameters"), "data": recipe.get("data")}


def classification_table(main, paper_rows) -> str:
    rows = []
    for (arch, task, dataset), record in sorted(main.items(), key=lambda kv: (kv[0][2], _arch_order(kv[0][0]))):
        if task != "classify":
            continue
        m, c = record["metrics"], _compute(record)
        published = paper_rows.get(("classify", arch, dataset), {}).get("accuracy")
        delta = None if published is None or m.get("accuracy") is None else 100 * (m["accuracy"] - published)
        rows.append([dataset, f"`{arch}`", _percent(m.get("accuracy")), _fmt(m.get("auc"), ".4f"),
                     _percent(published), _fmt(delta, "+.2f"), m.get("n"), _fmt(c["images"], ","),
                     _fmt(c["minutes"], ".1f"), c["precision"], _fmt(c["params"], ",")])
    return _table(["dataset", "architecture", "accuracy", "AUC", "seed paper", "Δ (points)", "n test",
                   "images seen", "train minutes", "precision", "parameters"], rows)


def regression_table(main) -> str:
    rows = []
    for (arch, task, dataset), record in sorted(main.items(), key=lambda kv: (kv[0][2], _arch_order(kv[0][0]))):
        if task != "regress":
            continue
        m, c = record["metrics"], _compute(record)
        rows.append([dataset, f"`{arch}`", _fmt(m.get("mae"), ".3f"), _fmt(m.get("rmse"), ".3f"),
                     _fmt(m.get("bias"), "+.3f"), _fmt(m.get("correlation"), ".2f"),
                     _fmt(m.get("mae_predicting_mean"), ".3f"), m.get("n"), _fmt(c["images"], ","),
                     _fmt(c["minutes"], ".1f"), c["precision"]])
    return _table(["dataset", "architecture", "MAE (dex)", "RMSE", "bias", "correlation", "MAE of the mean",
                   "n test", "images seen", "train minutes", "precision"], rows)


def bins_table(main) -> str:
    rows = []
    edges = None
    for (arch, task, dataset), record in sorted(main.items(), key=lambda kv: (kv[0][2], _arch_order(kv[0][0]))):
        bins = record["metrics"].get("by_log10_ma") if task == "regress" else None
        if not bins:
            continue
        edges = edges or [b["log10_ma"] for b in bins]
        cells = [f"{_fmt(b['mae'], '.2f')} / {_fmt(b['correlation'], '.2f')}" for b in bins]
        rows.append([dataset, f"`{arch}`", *cells])
    if not rows:
        return "_No regression evaluation with per-bin metrics._"
    headers = ["dataset", "architecture", *(f"[{lo:g}, {hi:g})" for lo, hi in edges)]
    return _table(headers, rows)


def _difference(a, b):
    """(a - b, standard error) of two accuracies on independent test sets, or of two MAEs."""
    ma, mb = a["metrics"], b["metrics"]
    if a["task"] == "classify":
        pa, pb, na, nb = ma["accuracy"], mb["accuracy"], ma["n"], mb["n"]
        return pa - pb, math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    # MAE: the standard error of a mean absolute error from its RMSE (|e| has variance rmse² - mae²)
    se = math.sqrt(max(ma["rmse"] ** 2 - ma["mae"] ** 2, 0) / ma["n"] + max(mb["rmse"] ** 2 - mb["mae"] ** 2, 0)
                   / mb["n"])
    return mb["mae"] - ma["mae"], se  # positive: a is better


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
    for (arch, task, dataset), record in sorted(main.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                             _arch_order(kv[0][0]))):
        metric = "accuracy" if task == "classify" else "mae"
        images, change = last_doubling(_dig(record, "model", "history"), metric)
        if images is None:
            continue
        shown = f"{100 * change:+.2f} points" if task == "classify" else f"{change:+.3f} dex"
        rows.append([task, dataset, f"`{arch}`", f"{images:,}", shown])
    if not rows:
        return "_No training histories in these results._"
    return _table(["task", "dataset", "architecture", "images at the end", "validation change over the last "
                   "doubling of images"], rows)


def claim_table(main) -> str:
    """Each equivariant net against ResNet-50, per task and dataset, with a two-standard-error verdict."""
    rows = []
    for task in ("classify", "regress"):
        for dataset in sorted({k[2] for k in main if k[1] == task}):
            baseline = main.get((BASELINE, task, dataset))
            for arch in EQUIVARIANT:
                record = main.get((arch, task, dataset))
                if record is None or baseline is None:
                    continue
                diff, se = _difference(record, baseline)
                verdict = "better" if diff > 2 * se else "worse" if diff < -2 * se else "tie (within 2 SE)"
                unit = "points" if task == "classify" else "dex"
                scale = 100 if task == "classify" else 1
                rows.append([task, dataset, f"`{arch}` vs `{BASELINE}`", f"{scale * diff:+.2f} ± {scale * se:.2f} {unit}",
                             verdict, _fmt(_compute(record)["images"], ","), _fmt(_compute(baseline)["images"], ",")])
    if not rows:
        return "_ResNet-50 or the equivariant nets have no evaluation yet._"
    return _table(["task", "dataset", "comparison", "difference (+ = equivariant better)", "verdict",
                   "images seen (equivariant)", "images seen (ResNet-50)"], rows)


def control_table(main) -> str:
    """Each network against the radial-profile control on the same task and dataset: the margin is
    what the network gets from the image beyond the ring's size and brightness."""
    rows = []
    for task in ("classify", "regress"):
        for dataset in sorted({k[2] for k in main if k[1] == task}):
            control = main.get((CONTROL, task, dataset))
            if control is None:
                continue
            metric, unit, scale = ("accuracy", "points", 100) if task == "classify" else ("mae", "dex", 1)
            show = _percent if task == "classify" else (lambda v: _fmt(v, ".3f"))
            for arch in sorted({k[0] for k in main if k[1:] == (task, dataset)} - {CONTROL}, key=_arch_order):
                record = main[(arch, task, dataset)]
                diff, se = _difference(record, control)
                digits = 2 if task == "classify" else 3
                rows.append([task, dataset, f"`{arch}`", show(record["metrics"].get(metric)),
                             show(control["metrics"].get(metric)),
                             f"{scale * diff:+.{digits}f} ± {scale * se:.{digits}f} {unit}"])
    if not rows:
        return f"_No `{CONTROL}` evaluation yet._"
    return _table(["task", "dataset", "network", "its test figure", f"`{CONTROL}`", "margin (+ = network better)"],
                  rows)


def transfer_table(transfer, main) -> str:
    """Released models scored on another dataset (A -> C-euclid, B -> C-hst), beside their own test figure."""
    rows = []
    for (arch, task, trained_on, dataset), record in sorted(
            transfer.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][3], _arch_order(kv[0][0]))):
        own = main.get((arch, task, trained_on))
        if task == "classify":
            recall = record["metrics"].get("recall") or {}
            cells = [_percent(_dig(own or {}, "metrics", "accuracy")), _percent(record["metrics"].get("accuracy")),
                     _fmt(record["metrics"].get("auc"), ".3f"),
                     " / ".join(_fmt(recall.get(c), ".2f") for c in ("no_sub", "cdm", "axion")) if recall else "—"]
        else:
            cells = [_fmt(_dig(own or {}, "metrics", "mae"), ".3f"), _fmt(record["metrics"].get("mae"), ".3f"),
                     _fmt(record["metrics"].get("correlation"), ".2f"), _fmt(record["metrics"].get("mae_predicting_mean"), ".3f")]
        rows.append([task, f"`{arch}`", trained_on, dataset, *cells, record.get("n")])
    if not rows:
        return "_No transfer evaluation yet._"
    return _table(["task", "architecture", "trained on", "tested on", "own test set", "on the new set",
                   "AUC / correlation", "recall no_sub / cdm / axion (classify), MAE of the mean (regress)", "n"], rows)


def rotation_table(rotations) -> str:
    rows = []
    for (arch, task, dataset), record in sorted(rotations.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                                 _arch_order(kv[0][0]))):
        metric = "accuracy" if task == "classify" else "mae"
        show = _percent if task == "classify" else (lambda v: _fmt(v, ".3f"))
        cells = [show(record["metrics"].get(metric))]
        cells += [show(_dig(record, "rotations", name, "metrics", metric)) for name in ("rot90", "rot180", "rot270",
                                                                                          "random")]
        cells.append(_fmt(_dig(record, "rotations", "random", "mean_abs_output_change"), ".3g"))
        rows.append([task, dataset, f"`{arch}`", *cells, record.get("n")])
    if not rows:
        return "_No evaluation with --rotations yet._"
    return _table(["task", "dataset", "architecture", "upright", "90°", "180°", "270°", "random angle",
                   "mean |Δ output| (random)", "n"], rows)


def pick_tta(results: list[dict], released=frozenset()) -> dict:
    """Per (arch, task, dataset): the test evaluation with test-time augmentation on the most
    images, of the released weights where they were evaluated."""
    groups = defaultdict(list)
    for record in results:
        if record.get("split", "test") == "test" and isinstance(record.get("tta"), dict):
            groups[_key(record)].append(record)
    return _most_images(groups, released)


def tta_table(tta) -> str:
    rows = []
    for (arch, task, dataset), record in sorted(tta.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                           _arch_order(kv[0][0]))):
        metric = "accuracy" if task == "classify" else "mae"
        plain, averaged = record["metrics"].get(metric), _dig(record, "tta", "metrics", metric)
        if task == "classify":
            change = None if None in (plain, averaged) else f"{100 * (averaged - plain):+.2f} points"
            cells = [_percent(plain), _percent(averaged), change or "—",
                     _fmt(_dig(record, "tta", "prediction_change_rate"), ".2%")]
        else:
            change = None if None in (plain, averaged) else f"{averaged - plain:+.3f} dex"
            cells = [_fmt(plain, ".3f"), _fmt(averaged, ".3f"), change or "—", "—"]
        rows.append([task, dataset, f"`{arch}`", *cells, record.get("n")])
    if not rows:
        return "_No evaluation with --tta yet._"
    return _table(["task", "dataset", "architecture", "plain", "with TTA", "change", "predictions changed", "n"],
                  rows)


def learning_curves(main, path: Path) -> bool:
    """Validation accuracy (classify) and MAE (regress) against images seen and against minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(task, dataset) for (_, task, dataset), r in main.items() if _dig(r, "model", "history")})
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.6 * len(panels)), squeeze=False)
    for row, (task, dataset) in enumerate(panels):
        metric = "accuracy" if task == "classify" else "mae"
        for (arch, t, d), record in sorted(main.items(), key=lambda kv: _arch_order(kv[0][0])):
            history = _dig(record, "model", "history")
            if (t, d) != (task, dataset) or not history:
                continue
            values = [_dig(h, "val", metric) for h in history]
            images = [h.get("images_seen") for h in history]
            minutes = [h.get("train_minutes") for h in history]
            axes[row][0].plot(images, values, "-o", ms=2.5, label=arch)
            if all(m is not None for m in minutes):
                axes[row][1].plot(minutes, values, "-o", ms=2.5, label=arch)
        for col, xlabel in enumerate(("images seen", "training minutes (wall clock)")):
            ax = axes[row][col]
            ax.set(xlabel=xlabel, ylabel=f"validation {metric}" + (" (dex)" if metric == "mae" else ""),
                   title=f"{task}, dataset {dataset}")
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
    return True


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
                                                                             _arch_order(kv[0][0]))):
        folder = Path(record["_path"]).parent
        for plot in record.get("plots", []):
            if plot == "confusion_matrix.png":
                continue
            source = folder / plot
            if source.is_file():
                kind = ".".join(Path(plot).name.split(".")[-2:])  # roc_curves.png, also as LABEL.roc_curves.png
                name = f"{arch}-{task}-{dataset}-{kind}"
                shutil.copyfile(source, figures / name)
                copied.append((f"{arch}, {task}, {dataset}", name))
    return copied


def build_page(results: list[dict], *, paper: dict | None, figures: Path, page: Path, notes: str | None = None,
               command: str = "lenszoo report ... --page docs/results.md", released=frozenset()) -> str:
    main, rotations = pick(results, released)
    if not main:
        raise LenszooError("no test-split results to put on the page; run `lenszoo evaluate` first")
    figures.mkdir(parents=True, exist_ok=True)
    paper_rows = paper["rows"] if paper else {}
    rel = Path(os.path.relpath(figures.resolve(), page.resolve().parent)).as_posix()
    parts = [MARKER, "", "# Results", "",
             f"Generated by `{command}` from `lenszoo evaluate` results; do not edit by hand.", ""]
    if notes:
        parts += [notes.strip(), ""]
    parts += ["## Table 1: classification (no_sub / cdm / axion), test split", "",
              classification_table(main, paper_rows), ""]
    if paper and paper.get("source"):
        parts += [f"Seed paper: {paper['source']}.", ""]
    parts += ["## Table 2: axion-mass regression, log10(m_a / eV), test split (axion images)", "",
              regression_table(main), "",
              "The seed's Table 2 reports errors on raw masses; lenszoo regresses log10 m_a, the quantity "
              "the simulation draws uniformly (m_a = 10^U(-24, -22) eV), so errors are in dex and not "
              "comparable with raw-mass MSE.", "",
              "### Regression by true log10 m_a bin: MAE (dex) / correlation of prediction and truth", "",
              bins_table(main), "",
              "## The seed's claim, pair by pair: equivariant networks against ResNet-50", "",
              claim_table(main), "",
              f"## Against the control: each network's margin over `{CONTROL}`", "",
              f"`{CONTROL}` sees only the azimuthally averaged radial profile and global moments of each "
              "image (`docs/architectures.md`); what it reaches is what the ring's size and brightness are "
              "worth on that dataset, and a network's margin over it is the part that needs the image.", "",
              control_table(main), "",
              "## The shortcut probe: released models on datasets C", "",
              "Each checkpoint scored on the C twin of its instrument (A -> C-euclid, B -> C-hst), where the "
              "lens, the source and the substructure mass are drawn alike for every class "
              "(`docs/datasets.md`). Chance is 33.3 %.", "",
              transfer_table(pick_transfer(results, released), main), "",
              "## Rotation robustness (`lenszoo evaluate --rotations`)", "", rotation_table(rotations), "",
              "## Test-time augmentation (`lenszoo evaluate --tta`, `lenszoo predict --tta`)", "",
              "Outputs averaged over the 8 rotations and flips of each test image (accuracy for "
              "classification, MAE in dex for regression):", "", tta_table(pick_tta(results, released)), ""]
    if learning_curves(main, figures / "learning_curves.png"):
        parts += ["## Learning curves", "", f"![validation metric against images seen and minutes]"
                                            f"({rel}/learning_curves.png)", "",
                  "What more images would buy, read off each curve (validation, noisy at lr ~1e-3; a flat "
                  "or negative change means the budget is not what limits the model):", "",
                  curve_table(main), ""]
    plots = copy_plots(main, figures)
    if plots:
        parts += ["## ROC curves and regression scatter plots", ""]
        parts += [f"![{caption}]({rel}/{name})" for caption, name in plots]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


# -- the evaluations the page is made of ----------------------------------------------------------
# Kept in git beside the page (``lenszoo report --records DIR``), so the page regenerates from a
# clone alone: run folders and test sets live in scratch space and are lost with the machine.
RECORDS_FORMAT = "lenszoo-report-records"
RECORDS_INDEX = "index.json"


def page_records(results: list[dict], released=frozenset()) -> dict[str, dict]:
    """Every evaluation the page shows, under a file label."""
    main, rotations = pick(results, released)
    picked = {f"{a}-{t}-{d}-test": r for (a, t, d), r in main.items()}
    picked.update({f"{a}-{t}-{d}-rotations": r for (a, t, d), r in rotations.items()})
    picked.update({f"{a}-{t}-{d}-tta": r for (a, t, d), r in pick_tta(results, released).items()})
    picked.update({f"{a}-{t}-{src}-on-{d}": r for (a, t, src, d), r in pick_transfer(results, released).items()})
    return picked


def is_records_folder(path) -> bool:
    from .files import json_says

    return json_says(Path(path) / RECORDS_INDEX, "format", RECORDS_FORMAT)


def _records_files(folder: Path) -> list[str]:
    import json

    try:
        files = json.loads((Path(folder) / RECORDS_INDEX).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError):
        return []
    return [RECORDS_INDEX, *[f for f in files if isinstance(f, str)]]


def write_records(folder, picked: dict[str, dict]) -> list[str]:
    """Write each picked record as LABEL.results.json with its ROC / scatter plots beside it, and an
    index of the files; a file an earlier call wrote and this one did not is removed, nothing else."""
    import json

    from .evaluate import RESULTS_FILE
    from .files import output_folder

    written = []
    with output_folder(folder, what="folder of report records", is_ours=is_records_folder,
                       previous_files=_records_files, option="--records") as tmp:
        for label, record in sorted(picked.items()):
            source = Path(record["_path"]).parent
            plots = []
            shown = record.get("plots", []) if label.endswith("-test") else []  # the page shows the main ones
            for plot in shown:
                if isinstance(plot, str) and plot != "confusion_matrix.png" and (source / plot).is_file():
                    name = plot if plot.startswith(f"{label}.") else f"{label}.{plot}"  # a kept record, passed back
                    shutil.copyfile(source / plot, tmp / name)
                    plots.append(name)
            kept = {k: v for k, v in record.items() if k != "_path"}
            kept["plots"] = plots
            (tmp / f"{label}.{RESULTS_FILE}").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
            written += [f"{label}.{RESULTS_FILE}", *plots]
        index = {"format": RECORDS_FORMAT, "files": written,
                 "about": "the lenszoo evaluate results a results page was generated from (lenszoo report "
                          "--records); pass this folder to lenszoo report to regenerate the page"}
        (tmp / RECORDS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return written


# -- the README's headline table ------------------------------------------------------------------
HEADLINE_BEGIN = "<!-- headline: written by `lenszoo report --readme`, from weights_manifest.json -->"
HEADLINE_END = "<!-- /headline -->"


def headline_table(entries: list[dict], paper_rows: dict | None = None) -> str:
    """One row per architecture: the released checkpoints' test metrics (classification accuracy,
    regression MAE in dex) beside the seed paper's accuracy; '—' where nothing is released."""
    from .weights import is_default

    paper_rows = paper_rows or {}
    groups: dict = {}
    for entry in entries:
        groups.setdefault((entry["arch"], entry["task"], entry["dataset"]), []).append(entry)
    found = {key: next(e for e in group if is_default(e, group)) for key, group in groups.items()
             if any(is_default(e, group) for e in group)}  # the weights an untagged name loads
    archs = sorted({e["arch"] for e in entries} | set(ORDER), key=_arch_order)
    rows = []
    for arch in archs:
        cells = [f"`{arch}`"]
        for task, dataset in (("classify", "A"), ("classify", "B"), ("regress", "A"), ("regress", "B")):
            test = _dig(found.get((arch, task, dataset)) or {}, "metrics", "test") or {}
            cells.append(_percent(test.get("accuracy")) if task == "classify" else _fmt(test.get("mae"), ".3f"))
        seed = [paper_rows.get(("classify", arch, d), {}).get("accuracy") for d in ("A", "B")]
        cells.append(" / ".join(_fmt(None if s is None else 100 * s, ".2f") for s in seed))
        rows.append(cells)
    return _table(["architecture", "classify A", "classify B", "regress A (MAE, dex)", "regress B (MAE, dex)",
                   "seed paper, classify A / B (%)"], rows)


def replace_headline(text: str, table: str, where: str = "README.md") -> str:
    """``text`` with the block between the headline markers replaced by ``table``."""
    if text.count(HEADLINE_BEGIN) != 1 or text.count(HEADLINE_END) != 1:
        raise LenszooError(f"{where} has no headline block; put the two lines {HEADLINE_BEGIN} and {HEADLINE_END} "
                           "where the table goes")
    before, rest = text.split(HEADLINE_BEGIN)
    _, after = rest.split(HEADLINE_END)
    return f"{before}{HEADLINE_BEGIN}\n{table}\n{HEADLINE_END}{after}"
