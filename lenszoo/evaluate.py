"""``lenszoo evaluate``: test-set metrics, rotation robustness and plots for a trained model.

The model's own normalisation (from its checkpoint config) is applied to raw
images, so a rotated image is normalised after rotating, as a user's would be.
Results go to one folder, written whole or not at all::

    results.json            everything ``lenszoo report`` needs
    roc_curves.png  confusion_matrix.png      (classify)
    scatter.png                               (regress)
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .errors import LenszooError
from .files import claim_output, json_says, output_folder, path_within
from .plotting import pyplot
from .metrics import (  # noqa: F401 - re-exported, evaluate's public names before 0.2
    classification_metrics,
    predict_raw,
    regression_metrics,
    task_metrics,
)
from .sensitivity import DEFAULT_BINS_PERCENT, check_bins, summary_line
from .tasks import CLASS_NAMES, check_task

RESULTS_FORMAT = "lenszoo-evaluation"
RESULTS_FILE = "results.json"
SPLITS = ("train", "val", "test", "holdout")
MAX_SIMULATED = 100_000  # per class, held in memory


# -- the model -------------------------------------------------------------------------------
def resolve_model(name, *, task=None, dataset=None, device="cpu"):
    """``(model, description)`` for a run directory, a checkpoint folder, ``hf-hub:...`` or a
    registered architecture's released weights (``lenszoo.resolve`` decides which)."""
    from .resolve import load_model

    model = load_model(name, task=task or "classify", dataset=dataset, device=device)
    return model, model.lenszoo_source.describe()


def trained_parameter_count(name, model, *, task=None, dataset=None) -> int:
    """Parameters of the model as trained. The inference form of a steerable CNN holds its filters
    expanded from their basis (~18x the trained count for ``c8_steerable``): count the trainable form."""
    if (getattr(model, "lenszoo_config", None) or {}).get("form") != "inference":
        return sum(p.numel() for p in model.parameters())
    from .resolve import load_model

    source = getattr(model, "lenszoo_source", None)
    trainable = load_model(name, task=task or "classify", dataset=dataset or model.lenszoo_config.get("dataset"),
                           trainable=True, tag=getattr(source, "tag", None))
    return sum(p.numel() for p in trainable.parameters())


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
    from .train.batches import load_items
    from .train.data import open_stored, stream_fetch

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
            fractions = None  # A, B, an import or a dataset older than the field
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


# -- rotations ---------------------------------------------------------------------------------
def rotate(images, angles_deg):
    """Rotate each ``(1, H, W)`` image about its centre by its angle in degrees, in ``torch.rot90``'s
    sense (90 equals ``rot90(k=1)``); bicubic, mirrored edges."""
    import torch
    import torch.nn.functional as F

    theta = torch.as_tensor(angles_deg, dtype=torch.float64) * math.pi / 180
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # grid_sample maps output to input (x right, y down) coordinates.
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="reflection", align_corners=False)


def rotation_variants(images, seed=0):
    """``(name, rotated images)``: quarter turns (exact) and one random angle per image."""
    import torch

    for k in (1, 2, 3):
        yield f"rot{90 * k}", torch.rot90(images, k, dims=(-2, -1))
    rng = np.random.Generator(np.random.PCG64(seed))
    angles = rng.uniform(0.0, 360.0, size=len(images))
    out = []
    for start in range(0, len(images), 512):
        out.append(rotate(images[start : start + 512], angles[start : start + 512]))
    yield "random", torch.cat(out)


# -- metrics: lenszoo.metrics, shared with training validation ------------------------------------
def predict_tta(model, images, preprocess, device, batch_size, task):
    """Outputs averaged over the 8 rotations and flips (as ``lenszoo predict --tta``): class
    probabilities averaged, returned as log-probabilities (their softmax is the average), or the
    mean regressed value."""
    from .metrics import predict
    from .inference.scorer import view_average

    x = preprocess(images) if preprocess is not None else images
    mean = view_average(lambda view: predict(model, view, device, batch_size), x, task)
    return (mean.clamp_min(1e-300).log() if task == "classify" else mean).float()


def evaluate_model(model, images, targets, *, task, device="cpu", rotations=False, seed=0, batch_size=256, log=None,
                   tta=False):
    """Metrics of ``model`` on raw ``images`` (and their rotations, and with test-time augmentation);
    returns ``(results, outputs)``."""
    preprocess = getattr(model, "preprocess", None)
    outputs = predict_raw(model, images, preprocess, device, batch_size)
    results = {"metrics": task_metrics(task, outputs, targets)}
    if tta:
        averaged = predict_tta(model, images, preprocess, device, batch_size, task)
        entry = {"views": 8, "metrics": task_metrics(task, averaged, targets)}
        if task == "classify":
            entry["prediction_change_rate"] = float((averaged.argmax(1) != outputs.argmax(1)).double().mean())
        results["tta"] = entry
        if log:
            log(f"  tta (8 rotations and flips): {_headline(task, entry['metrics'])}")
    if rotations:
        results["rotations"] = {}
        for name, rotated in rotation_variants(images, seed):
            rotated_out = predict_raw(model, rotated, preprocess, device, batch_size)
            change = (rotated_out - outputs).abs()
            entry = {"metrics": task_metrics(task, rotated_out, targets),
                     "mean_abs_output_change": float(change.mean()), "max_abs_output_change": float(change.max())}
            if task == "classify":
                entry["prediction_change_rate"] = float((rotated_out.argmax(1) != outputs.argmax(1)).double().mean())
            results["rotations"][name] = entry
            if log:
                log(f"  {name}: {_headline(task, entry['metrics'])}, mean |output change| "
                    f"{entry['mean_abs_output_change']:.3g}")
    return results, outputs


def _headline(task, metrics):
    if task == "classify":
        auc = f", AUC {metrics['auc']:.4f}" if metrics.get("auc") is not None else ""
        return f"accuracy {metrics['accuracy']:.2%}{auc}"
    return f"MAE {metrics['mae']:.3f} dex, RMSE {metrics['rmse']:.3f}, bias {metrics['bias']:+.3f}"


# -- plots -------------------------------------------------------------------------------------
def plot_roc(path, logits, targets, title):
    import torch
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    probs = torch.softmax(logits.double(), 1).numpy()
    y = targets.numpy().astype(int)
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, name in enumerate(CLASS_NAMES):
        if len(set((y == i).tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(y == i, probs[:, i])
        ax.plot(fpr, tpr, label=f"{name} vs rest (AUC {roc_auc_score(y == i, probs[:, i]):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(path, matrix, title):
    plt = pyplot()
    matrix = np.asarray(matrix)
    fractions = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASS_NAMES)):
        for j in range(len(CLASS_NAMES)):
            ax.text(j, i, f"{matrix[i, j]}\n{fractions[i, j]:.1%}", ha="center", va="center",
                    color="white" if fractions[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scatter(path, predictions, targets, metrics, title):
    plt = pyplot()
    pred = predictions.reshape(-1).numpy()
    true = targets.reshape(-1).numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, pred, s=4, alpha=0.4)
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([low, high], [low, high], color="grey", ls=":", label="prediction = truth")
    ax.set(xlabel="true log10(m_a / eV)", ylabel="predicted log10(m_a / eV)",
           title=f"{title}\nMAE {metrics['mae']:.3f} dex, RMSE {metrics['rmse']:.3f}, bias {metrics['bias']:+.3f}")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the command -----------------------------------------------------------------------------------
def run_history(model_info, config=None) -> list | None:
    """The per-epoch rows of the run a model came from, for learning curves: a run's metrics.jsonl, or
    the copy a released checkpoint carries in its config.json."""
    if model_info.get("kind") != "run":
        history = (config or {}).get("history")
        return history if isinstance(history, list) and history else None
    from .rundir import METRICS_FILE

    try:
        lines = (Path(model_info["path"]) / METRICS_FILE).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None


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
                   verify=True, tta=False, fraction_bins=None) -> dict:
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
    if out is not None:  # before any work: a refused --out costs nothing
        claim_output(out, what="lenszoo evaluation folder", is_ours=is_evaluation_folder)
    torch_device = resolve_device(device)
    weights_for = dataset
    if weights_for is None and data_dir is not None:  # a released name scores --data with that dataset's weights
        weights_for = _stored_dataset_name(data_dir)
    model, model_info = resolve_model(model_name, task=task, dataset=weights_for, device=torch_device)
    model_dataset = weights_for
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
                                      rotations=rotations, seed=seed, batch_size=batch_size, log=log, tta=tta)
    log(f"{dataset}/{split}: {_headline(model_task, results['metrics'])}")
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
                                                      "parameters": trained_parameter_count(
                                                          model_name, model, task=task, dataset=model_dataset),
                                                      "weights_sha256": config.get("weights_sha256"),
                                                      "compute": config.get("compute"),
                                                      "history": run_history(model_info, config)},
        "data": data_info, "metrics": results["metrics"], "rotations": results.get("rotations"),
        "tta": results.get("tta"),
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
