"""Sensitivity curves: how well a classifier detects substructure as a function of how much there is.

Datasets C draw each image's projected substructure mass fraction f ~ U(range) for every class
alike (a no_sub image's f is drawn and not used), and stored C datasets record it
(``meta["mass_fraction"]``). So the no_sub images of an f bin are a random share of all no_sub
images, and the AUC of a bin's cdm (axion) images against its no_sub images is the detection
power at that much substructure. Per bin of f (in percent; half-open, the last one closed):

- the three-class accuracy with its binomial standard error;
- the cdm-vs-no_sub and axion-vs-no_sub AUC, scored by ``log p_cdm - log p_no_sub`` (the logit
  difference, in the order of ``p_cdm / (p_cdm + p_no_sub)``), with the Hanley-McNeil (1982)
  standard error.

The smallest fraction detected is the lower edge of the lowest bin from which every measured
higher bin reaches AUC >= 0.75; a bin without both classes measures nothing and is passed over.

:func:`sensitivity` makes the block ``lenszoo evaluate`` records; ``lenszoo.page.sensitivity``
makes the results page's section from those records.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import LenszooError
from .tasks import CLASS_NAMES

DEFAULT_BINS_PERCENT = (0.2, 0.5, 1.0, 2.0, 5.0)
DETECTION_AUC = 0.75
NEGATIVE = "no_sub"
PAIRS = {"cdm_vs_no_sub": "cdm", "axion_vs_no_sub": "axion"}
PAIR_TITLES = {"cdm_vs_no_sub": "cdm vs no_sub", "axion_vs_no_sub": "axion vs no_sub"}
SCORE = "log p_positive - log p_no_sub (the logit difference)"
AUC_SE = "Hanley-McNeil (1982)"


# -- per image: one evaluation ---------------------------------------------------------------------
def check_bins(edges) -> tuple[float, ...]:
    """Bin edges in percent, from ``"0.2,0.5,1,2,5"`` or a sequence: at least two, increasing,
    above 0 and at most 100."""
    usage = ("--fraction-bins must be at least two increasing percentages above 0 and at most 100, separated by "
             "commas, e.g. 0.2,0.5,1,2,5")
    try:
        parts = [p for p in edges.split(",")] if isinstance(edges, str) else list(edges)
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise LenszooError(f"{usage}; got {edges!r}") from None
    if len(values) < 2 or not all(math.isfinite(v) for v in values) or values[0] <= 0 or values[-1] > 100 \
            or any(b <= a for a, b in zip(values, values[1:])):
        raise LenszooError(f"{usage}; got {edges!r}")
    return values


def hanley_mcneil_se(auc, n_positive, n_negative) -> float | None:
    """The standard error of an AUC from ``n_positive`` and ``n_negative`` scores (Hanley & McNeil 1982)."""
    if auc is None or not n_positive or not n_negative:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc**2) + (n_negative - 1) * (q2 - auc**2)) \
        / (n_positive * n_negative)
    return float(math.sqrt(max(variance, 0.0)))


def _as_array(values, dtype) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=dtype)


def pair_scores(outputs, positive: str, *, logits: bool = True) -> np.ndarray:
    """``log p_positive - log p_no_sub`` per image, from logits or from probabilities."""
    values = _as_array(outputs, np.float64)
    i, j = CLASS_NAMES.index(positive), CLASS_NAMES.index(NEGATIVE)
    if logits:  # log-softmax differences are logit differences
        return values[:, i] - values[:, j]
    tiny = np.finfo(np.float64).tiny
    return np.log(np.maximum(values[:, i], tiny)) - np.log(np.maximum(values[:, j], tiny))


def _pair_entry(scores, labels, inside, positive: str) -> dict:
    from .metrics import rank_auc

    pos = scores[inside & (labels == CLASS_NAMES.index(positive))]
    neg = scores[inside & (labels == CLASS_NAMES.index(NEGATIVE))]
    auc = rank_auc(pos, neg)
    return {"auc": auc, "se": hanley_mcneil_se(auc, len(pos), len(neg)), "n_pos": int(len(pos)),
            "n_neg": int(len(neg))}


def _group(labels, predicted, scores, inside) -> dict:
    n = int(inside.sum())
    accuracy = float((predicted[inside] == labels[inside]).mean()) if n else None
    return {"n": n, "n_per_class": {name: int((inside & (labels == i)).sum()) for i, name in enumerate(CLASS_NAMES)},
            "accuracy": accuracy, "accuracy_se": None if accuracy is None else math.sqrt(accuracy * (1 - accuracy) / n),
            **{pair: _pair_entry(scores[pair], labels, inside, positive) for pair, positive in PAIRS.items()}}


def smallest_fraction_detected(bins, pair: str = "cdm_vs_no_sub", threshold: float = DETECTION_AUC):
    """The lower edge (percent) of the lowest bin from which every measured bin above has
    ``bins[k][pair]["auc"] >= threshold``, or None."""
    measured = sorted((b for b in bins if b[pair]["auc"] is not None), key=lambda b: b["fraction_percent"][0])
    detected = None
    for entry in reversed(measured):
        if entry[pair]["auc"] < threshold:
            break
        detected = entry["fraction_percent"][0]
    return detected


def sensitivity(labels, outputs, fractions, *, bins_percent=DEFAULT_BINS_PERCENT, logits: bool = True,
                threshold: float = DETECTION_AUC) -> dict | None:
    """Accuracy and the cdm/axion-vs-no_sub AUC per bin of the substructure mass fraction.

    ``labels``: class indices (``CLASS_NAMES`` order); ``outputs``: ``(N, 3)`` logits (or
    probabilities with ``logits=False``); ``fractions``: each image's mass fraction f (a fraction,
    not percent; NaN where unknown). None when no image has a known fraction."""
    edges = check_bins(bins_percent)
    labels = _as_array(labels, np.int64).reshape(-1)
    values = _as_array(outputs, np.float64)
    fractions = _as_array(fractions, np.float64).reshape(-1)
    if values.ndim != 2 or values.shape[1] != len(CLASS_NAMES) or not len(labels) == len(values) == len(fractions):
        raise LenszooError(f"sensitivity needs (N,) labels, (N, {len(CLASS_NAMES)}) outputs and (N,) fractions; got "
                           f"{labels.shape}, {values.shape} and {fractions.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise LenszooError(f"sensitivity: class labels must be 0 to {len(CLASS_NAMES) - 1} ({', '.join(CLASS_NAMES)})")
    known = np.isfinite(fractions)
    if not known.any():
        return None
    scores = {pair: pair_scores(values, positive, logits=logits) for pair, positive in PAIRS.items()}
    predicted = values.argmax(1)
    bins, covered = [], np.zeros(len(fractions), dtype=bool)
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        # compared as fractions: 0.5 / 100 is the float a generator's 0.005 is
        inside = known & (fractions >= low / 100) & ((fractions < high / 100)
                                                      | ((k == len(edges) - 2) & (fractions <= high / 100)))
        covered |= inside
        bins.append({"fraction_percent": [low, high], **_group(labels, predicted, scores, inside)})
    return {
        "fraction_unit": "percent of the projected mass in the substructure region",
        "score": SCORE, "auc_se": AUC_SE, "bins": bins, "all": _group(labels, predicted, scores, known),
        "n_known": int(known.sum()), "n_unknown": int((~known).sum()), "n_outside_bins": int((known & ~covered).sum()),
        "detection_auc": threshold,
        "smallest_fraction_detected": {pair: smallest_fraction_detected(bins, pair, threshold) for pair in PAIRS},
    }


def bin_label(bounds) -> str:
    low, high = bounds
    return f"{low:g}–{high:g} %"


def summary_line(block: dict, pair: str = "cdm_vs_no_sub") -> str:
    """One log line: a pair's AUC per bin and the smallest fraction detected."""
    cells = [f"{bin_label(b['fraction_percent'])} {auc_text(b[pair])}" for b in block["bins"]]
    detected = block["smallest_fraction_detected"][pair]
    found = f"AUC >= {block['detection_auc']:g} from {detected:g} % up" if detected is not None else \
        f"no bin from which AUC >= {block['detection_auc']:g}"
    return f"{PAIR_TITLES[pair]} AUC by substructure fraction: {'; '.join(cells)}; {found}"


def auc_text(entry, with_n=True) -> str:
    """A pair's AUC ± its standard error (and the images it is over), or a dash when unmeasured."""
    if entry.get("auc") is None:
        return "—"
    n = f" (n {entry['n_pos'] + entry['n_neg']})" if with_n else ""
    return f"{entry['auc']:.3f} ± {entry['se']:.3f}{n}"
