"""The figures ``lenszoo evaluate`` writes beside results.json: ROC curves and the confusion matrix
of a classifier, predicted against true mass of a regressor."""

from __future__ import annotations

import numpy as np

from .plotting import pyplot
from .tasks import CLASS_NAMES


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
