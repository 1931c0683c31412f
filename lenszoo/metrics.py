"""Losses and metrics, one implementation for training validation and ``lenszoo evaluate``.

Validation during training and a later evaluation of the same outputs give the same floats:
both call :func:`classification_scores` / :func:`regression_errors`.
"""

from __future__ import annotations

import numpy as np

from .tasks import CLASS_NAMES

# log10(m_a / eV) bins for regression: the prior is uniform on [-24, -22].
MASS_BIN_EDGES = (-24.0, -23.5, -23.0, -22.5, -22.0)


def mass_bin_masks(log10_masses):
    """((low, high), mask) for each log10 m_a bin: half-open, the last one closed at the prior's end."""
    values = np.asarray(log10_masses)
    for low, high in zip(MASS_BIN_EDGES[:-1], MASS_BIN_EDGES[1:]):
        yield (low, high), (values >= low) & ((values < high) | (high == MASS_BIN_EDGES[-1]) & (values <= high))


# -- training --------------------------------------------------------------------------------------
def compute_loss(task, outputs, targets):
    import torch.nn.functional as F

    if task == "classify":
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs.reshape(-1), targets.reshape(-1).float())


def batch_stats(task, outputs, targets) -> dict:
    """Sums over a batch, added up over an epoch."""
    if task == "classify":
        return {"correct": int((outputs.argmax(1) == targets).sum())}
    return {"abs_err": float((outputs.reshape(-1) - targets.reshape(-1)).abs().sum())}


def selection_key(task, metrics) -> tuple:
    """Larger is better: validation accuracy (then lower loss) or lower validation MSE."""
    if task == "classify":
        return (metrics["accuracy"], -metrics["loss"])
    return (-metrics["mse"],)


def eval_outputs(model, images, device, batch_size=256):
    """Model outputs for normalised images in memory, in eval mode (the model's mode is restored
    after), batch by batch, on the CPU: training's validation pass."""
    import torch

    was_training = model.training
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            outputs.append(model(images[start : start + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.zeros(0)


# -- shared cores ------------------------------------------------------------------------------------
def classification_scores(logits, targets) -> dict:
    """Accuracy and macro one-vs-rest AUC (None unless every class is present)."""
    import torch
    from sklearn.metrics import roc_auc_score

    probs = torch.softmax(logits.double(), 1).numpy()
    y = targets.numpy().astype(int)
    labels = list(range(len(CLASS_NAMES)))
    scores = {"accuracy": float((probs.argmax(1) == y).mean())}
    scores["auc"] = (float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels))
                     if sorted(set(y.tolist())) == labels else None)
    return scores


def rank_auc(positive_scores, negative_scores) -> float | None:
    """The ROC AUC of two score samples from their ranks (Mann-Whitney U / (n+ n-), ties counted
    half): the same number as ``sklearn.metrics.roc_auc_score``; None when a sample is empty or holds NaN."""
    from scipy.stats import rankdata

    positive = np.asarray(positive_scores, dtype=np.float64).reshape(-1)
    negative = np.asarray(negative_scores, dtype=np.float64).reshape(-1)
    if not len(positive) or not len(negative) or np.isnan(positive).any() or np.isnan(negative).any():
        return None
    ranks = rankdata(np.concatenate([positive, negative]), method="average")
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def regression_errors(predictions, targets) -> dict:
    err = predictions.reshape(-1).double().numpy() - targets.reshape(-1).double().numpy()
    return {"mse": float(np.mean(err**2)), "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))), "bias": float(np.mean(err))}


def validation_metrics(task, outputs, targets) -> dict:
    """What each epoch's validation records: the loss and the scores of the full set."""
    loss = float(compute_loss(task, outputs, targets))
    if task == "classify":
        scores = classification_scores(outputs, targets)
        if scores["auc"] is None:
            del scores["auc"]
        return {"loss": loss, **scores}
    return {"loss": loss, **regression_errors(outputs, targets)}


# -- evaluation ----------------------------------------------------------------------------------------
def classification_metrics(logits, targets) -> dict:
    import torch
    from sklearn.metrics import confusion_matrix, roc_auc_score

    probs = torch.softmax(logits.double(), 1).numpy()
    y = targets.numpy().astype(int)
    labels = list(range(len(CLASS_NAMES)))
    matrix = confusion_matrix(y, probs.argmax(1), labels=labels)
    metrics = {"n": int(len(y)), **classification_scores(logits, targets),
               "confusion_matrix": matrix.tolist(), "confusion_matrix_axes": "rows: true class, columns: predicted",
               "recall": {name: float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None
                          for i, name in enumerate(CLASS_NAMES)}}
    if metrics["auc"] is not None:
        metrics["auc_per_class"] = {name: float(roc_auc_score(y == i, probs[:, i])) for i, name in enumerate(CLASS_NAMES)}
    else:
        metrics["auc_note"] = "AUC needs every class in the test set"
    return metrics


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(predictions, targets) -> dict:
    """Errors in dex overall and per true-log10 m_a bin: a single MAE hides where the mass is
    identified (a bin whose predictions do not correlate with the truth is not)."""
    pred = predictions.reshape(-1).double().numpy()
    true = targets.reshape(-1).double().numpy()
    metrics = {"n": int(len(true)), "unit": "dex (log10 m_a/eV)", **regression_errors(predictions, targets),
               "mae_predicting_mean": float(np.mean(np.abs(true - true.mean()))) if len(true) else None,
               "correlation": _correlation(pred, true)}
    bins = []
    for (low, high), inside in mass_bin_masks(true):
        if not inside.any():
            continue
        err = pred[inside] - true[inside]
        bins.append({"log10_ma": [low, high], "n": int(inside.sum()), "mae": float(np.mean(np.abs(err))),
                     "bias": float(np.mean(err)), "correlation": _correlation(pred[inside], true[inside])})
    metrics["by_log10_ma"] = bins
    return metrics


def task_metrics(task, outputs, targets):
    return classification_metrics(outputs, targets) if task == "classify" else regression_metrics(outputs, targets)
