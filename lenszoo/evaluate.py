"""``lenszoo evaluate``: test-set metrics, rotation robustness and plots for a trained model.

The model's own normalisation (from its checkpoint config) is applied to raw
images, so a rotated image is normalised after rotating, as a user's would be.
Results go to one folder, written whole or not at all::

    results.json            everything ``lenszoo report`` needs
    roc_curves.png  confusion_matrix.png      (classify)
    scatter.png                               (regress)

One load of the model scores everything: the test images as given, rotated and under test-time
augmentation (``lenszoo.robustness``, through the inference scorer). The images come through the
data layer (``lenszoo.data.loader``); the figures are drawn by ``lenszoo.evaluate_plots``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .errors import LenszooError
from .evaluate_plots import plot_confusion, plot_roc, plot_scatter
from .files import claim_output, json_says, output_folder, path_within
from .inference.options import check_precision
from .metrics import classification_metrics, regression_metrics, task_metrics  # noqa: F401 - evaluate's names
from .robustness import evaluate_model, headline, rotate, rotation_variants, tta_outputs  # noqa: F401 - as above
from .sensitivity import DEFAULT_BINS_PERCENT, check_bins, summary_line
from .tasks import CLASS_NAMES, check_task

RESULTS_FORMAT = "lenszoo-evaluation"
RESULTS_FILE = "results.json"
SPLITS = ("train", "val", "test", "holdout")
MAX_SIMULATED = 100_000  # per class, held in memory


# -- the model -------------------------------------------------------------------------------
def resolve_model(name, *, task=None, dataset=None, device="cpu"):
    """``(model, description)`` for a run directory, a checkpoint folder, ``hf-hub:...`` or a
    registered architecture's released weights (``lenszoo.pretrained.refs`` decides which)."""
    from .pretrained.load import load_model

    model = load_model(name, task=task or "classify", dataset=dataset, device=device)
    return model, model.lenszoo_source.describe()


def trained_parameter_count(model) -> int:
    """Parameters of the model as trained. The inference form of a steerable CNN holds its filters
    expanded from their basis (~18x the trained count for ``c8_steerable``): count those of the
    trainable form, built afresh from the same config (its shapes are the trained weights')."""
    config = getattr(model, "lenszoo_config", None) or {}
    if config.get("form") == "inference":
        from .registry import create_model

        model = create_model(config["arch"], config["task"], **config.get("model_args", {}))
    return sum(p.numel() for p in model.parameters())


def is_evaluation_folder(folder) -> bool:
    """True for a folder ``lenszoo evaluate`` wrote (its results.json says so)."""
    return json_says(Path(folder) / RESULTS_FILE, "format", RESULTS_FORMAT)


def previous_outputs(folder) -> list[str]:
    """The files an earlier evaluation wrote into ``folder`` (its plots and results.json)."""
    try:
        record = json.loads((Path(folder) / RESULTS_FILE).read_text(encoding="utf-8"))
        return [RESULTS_FILE, *[p for p in record.get("plots", []) if isinstance(p, str)]]
    except (OSError, ValueError, AttributeError):
        return []


# -- the data ----------------------------------------------------------------------------------
def load_test_data(task, *, dataset=None, split="test", data_dir=None, n_per_class=2000, seed=0, workers=0,
                   verify=True):
    """Raw (unnormalised) images, targets and a description of where they came from."""
    images, targets, info, _ = load_test_data_with_fractions(task, dataset=dataset, split=split, data_dir=data_dir,
                                                             n_per_class=n_per_class, seed=seed, workers=workers,
                                                             verify=verify)
    return images, targets, info


def load_test_data_with_fractions(task, *, dataset=None, split="test", data_dir=None, n_per_class=2000, seed=0,
                                  workers=0, verify=True):
    """As :func:`load_test_data`, plus each image's substructure mass fraction where the data record
    it (a stored dataset C), else None."""
    from .data.loader import load_items, open_stored, stream_fetch

    if split not in SPLITS:
        raise LenszooError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if data_dir is not None:
        stored = open_stored(data_dir, task, normalized=False, verify=verify, report_only=True)
        if dataset is not None and stored.dataset_name != dataset:
            raise LenszooError(f"{data_dir} holds dataset {stored.dataset_name!r}, not {dataset!r}; "
                               "drop --dataset or pass data of that dataset")
        if stored.split is not None and stored.split != split:
            raise LenszooError(f"{data_dir} holds the {stored.split!r} split, not {split!r}; "
                               f"pass --split {stored.split} or data of the {split} split")
        indices = np.arange(len(stored))
        images, targets = load_items(stored.__getitem__, indices, workers=workers)
        fractions = np.asarray(stored.meta["mass_fraction"], dtype=np.float64)
        if tuple(stored.class_names) != tuple(CLASS_NAMES) or not np.isfinite(fractions).any():
            fractions = None  # A, B, an import, or a C set that did not record the field
        return images, targets, {"source": "stored", "path": str(Path(data_dir).resolve()),
                                 "dataset": stored.dataset_name, "split": split, "n": len(indices)}, fractions
    if dataset is None:
        raise LenszooError("no test data: give --dataset (to simulate) or --data DIR")
    from .registry import registry

    registry.dataset(dataset)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or not 0 < n_per_class <= MAX_SIMULATED:
        raise LenszooError(f"--n-per-class must be a whole number from 1 to {MAX_SIMULATED:,}, got {n_per_class}; "
                           "for larger test sets simulate them once with `lenszoo simulate` and pass --data")
    n = n_per_class * (len(CLASS_NAMES) if task == "classify" else 1)
    started = time.perf_counter()
    fetch = stream_fetch(dataset, split, task, seed, normalized=False)
    images, targets = load_items(fetch, np.arange(n), workers=workers)
    return images, targets, {"source": "stream", "dataset": dataset, "split": split, "n": n,
                             "n_per_class": n_per_class, "stream_seed": seed,
                             "simulation_s": round(time.perf_counter() - started, 1)}, None


# -- the command -----------------------------------------------------------------------------------
def run_history(model_info, config=None) -> list | None:
    """The per-epoch rows of the run a model came from, for learning curves: a run's metrics.jsonl, or
    the copy a released checkpoint carries in its config.json."""
    if model_info.get("kind") != "run":
        history = (config or {}).get("history")
        return history if isinstance(history, list) and history else None
    from .rundir import read_metrics

    return read_metrics(Path(model_info["path"]))


def default_out(model_info, config, dataset, split, rotations, tta=False) -> Path:
    suffix = f"{dataset}-{split}" + ("-rotations" if rotations else "") + ("-tta" if tta else "")
    if model_info["kind"] == "run":
        return Path(model_info["path"]) / "eval" / suffix
    return Path("eval") / f"{config['arch']}-{config['task']}-{suffix}"


def sensitivity_block(outputs, targets, fractions, data_dir, bins_percent) -> dict | None:
    """Metrics per substructure-fraction bin (:func:`lenszoo.sensitivity.sensitivity`), with what
    identifies the test set (its manifest's sha256: the page merges a set of weights' evaluations
    on distinct sets) and the fraction range it was simulated with."""
    from .data.storage import MANIFEST_NAME, read_manifest
    from .files import sha256_file
    from .sensitivity import sensitivity

    block = sensitivity(targets, outputs, fractions, bins_percent=bins_percent)
    if block is None:
        return None
    manifest = read_manifest(Path(data_dir))
    span = ((manifest.get("config") or {}).get("substructure") or {}).get("mass_fraction_range")
    return {**block, "mass_fraction_range": span, "data_manifest_sha256": sha256_file(Path(data_dir) / MANIFEST_NAME)}


def _stored_dataset_name(data_dir) -> str | None:
    """The dataset a stored folder holds, or None when it cannot say (the data loader then explains)."""
    try:
        from .data.storage import read_manifest

        return read_manifest(Path(data_dir)).get("dataset")
    except (LenszooError, OSError, ValueError):
        return None


def run_evaluation(model_name, *, dataset=None, split="test", data_dir=None, n_per_class=2000, task=None,
                   rotations=False, seed=0, batch_size=256, device="auto", workers=0, out=None, log=None,
                   verify=True, tta=False, fraction_bins=None, precision="fp32") -> dict:
    """Evaluate and write ``results.json`` plus plots; returns the results dict.

    A classifier tested on data that record each image's substructure mass fraction (a stored
    dataset C) also gets a ``sensitivity`` block: metrics per bin of that fraction
    (``fraction_bins``, edges in percent; :mod:`lenszoo.sensitivity`)."""
    from . import __version__
    from .runtime import resolve_device

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if task is not None:
        check_task(task)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise LenszooError(f"--batch-size must be a positive whole number, got {batch_size}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise LenszooError(f"--workers must be a whole number >= 0, got {workers}")
    fraction_bins = check_bins(DEFAULT_BINS_PERCENT if fraction_bins is None else fraction_bins)
    check_precision(precision)
    if out is not None:  # before any work: a refused --out costs nothing
        claim_output(out, what="lenszoo evaluation folder", is_ours=is_evaluation_folder)
    torch_device = resolve_device(device)
    weights_for = dataset
    if weights_for is None and data_dir is not None:  # a released name scores --data with that dataset's weights
        weights_for = _stored_dataset_name(data_dir)
    model, model_info = resolve_model(model_name, task=task, dataset=weights_for, device=torch_device)
    config = model.lenszoo_config
    model_task = config["task"]
    if task is not None and task != model_task:
        raise LenszooError(f"{model_name} is a {model_task!r} model, not {task!r}; drop --task or pass a {task} model")
    dataset = dataset or (config.get("dataset") if data_dir is None else None)
    images, targets, data_info, fractions = load_test_data_with_fractions(
        model_task, dataset=dataset, split=split, data_dir=data_dir, n_per_class=n_per_class, seed=seed,
        workers=workers, verify=verify)
    dataset = data_info["dataset"]
    out = Path(out) if out else default_out(model_info, config, dataset, split, rotations, tta)
    claim_output(out, what="lenszoo evaluation folder", is_ours=is_evaluation_folder)
    log(f"evaluating {config['arch']} ({model_task}, trained on {config.get('dataset')}) on {data_info['n']} "
        f"{dataset}/{split} images ({data_info['source']})")
    results, outputs = evaluate_model(model, images, targets, task=model_task, device=torch_device,
                                      rotations=rotations, seed=seed, batch_size=batch_size, log=log, tta=tta,
                                      precision=precision)
    log(f"{dataset}/{split}: {headline(model_task, results['metrics'])}"
        + (f" ({results['precision']})" if results["precision"] != "fp32" else ""))
    block = None
    if model_task == "classify" and fractions is not None:
        block = sensitivity_block(outputs, targets, fractions, data_dir, fraction_bins)
        if block is not None:
            log(f"  {summary_line(block)}")
    record = {
        "format": RESULTS_FORMAT, "format_version": 1, "lenszoo_version": __version__,
        "arch": config["arch"], "tag": config.get("tag"), "task": model_task, "dataset": dataset, "split": split,
        "n": data_info["n"],
        "trained_on": config.get("dataset"), "model": {**model_info, "images_seen": config.get("images_seen"),
                                                      "recipe": config.get("recipe"),
                                                      "model_args": config.get("model_args"),
                                                      "parameters": trained_parameter_count(model),
                                                      "weights_sha256": config.get("weights_sha256"),
                                                      "compute": config.get("compute"),
                                                      "history": run_history(model_info, config)},
        "data": data_info, "metrics": results["metrics"], "rotations": results.get("rotations"),
        "tta": results.get("tta"), "precision": results["precision"],
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if block is not None:
        record["sensitivity"] = block
    for part in (record["model"], record["data"]):  # files inside the working directory (a checkout) by
        if isinstance(part.get("path"), str):      # their relative names, which mean the same in any clone
            part["path"] = path_within(part["path"], Path.cwd())
    title = f"{config['arch']} on {dataset}/{split} (n={data_info['n']})"
    with output_folder(out, what="lenszoo evaluation folder", is_ours=is_evaluation_folder,
                       previous_files=previous_outputs) as tmp:
        plots = []
        if model_task == "classify":
            plot_roc(tmp / "roc_curves.png", outputs, targets, title)
            plot_confusion(tmp / "confusion_matrix.png", results["metrics"]["confusion_matrix"], title)
            plots += ["roc_curves.png", "confusion_matrix.png"]
        else:
            plot_scatter(tmp / "scatter.png", outputs, targets, results["metrics"], title)
            plots.append("scatter.png")
        record["plots"] = plots
        (tmp / RESULTS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log(f"results in {out / RESULTS_FILE}")
    record["out"] = str(out)
    return record
