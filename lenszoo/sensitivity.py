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

:func:`sensitivity_section` makes the results page's section from ``lenszoo evaluate`` records.
One set of weights evaluated on several held-out sets (the standard f in 0.2-2 % and a strong
2-5 % set) is merged bin by bin: counts add, and a bin's AUC is taken over the (positive, negative)
pairs within each set, so the sets' Mann-Whitney U add.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .errors import LenszooError
from .markdown import table
from .tasks import CLASS_NAMES

DEFAULT_BINS_PERCENT = (0.2, 0.5, 1.0, 2.0, 5.0)
DETECTION_AUC = 0.75
NEGATIVE = "no_sub"
PAIRS = {"cdm_vs_no_sub": "cdm", "axion_vs_no_sub": "axion"}
PAIR_TITLES = {"cdm_vs_no_sub": "cdm vs no_sub", "axion_vs_no_sub": "axion vs no_sub"}
SCORE = "log p_positive - log p_no_sub (the logit difference)"
AUC_SE = "Hanley-McNeil (1982)"
PAGE_SPLITS = ("test", "holdout")


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
    cells = [f"{bin_label(b['fraction_percent'])} {_auc_text(b[pair])}" for b in block["bins"]]
    detected = block["smallest_fraction_detected"][pair]
    found = f"AUC >= {block['detection_auc']:g} from {detected:g} % up" if detected is not None else \
        f"no bin from which AUC >= {block['detection_auc']:g}"
    return f"{PAIR_TITLES[pair]} AUC by substructure fraction: {'; '.join(cells)}; {found}"


def _auc_text(entry, with_n=True) -> str:
    if entry.get("auc") is None:
        return "—"
    n = f" (n {entry['n_pos'] + entry['n_neg']})" if with_n else ""
    return f"{entry['auc']:.3f} ± {entry['se']:.3f}{n}"


# -- the results page -------------------------------------------------------------------------------
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _block_problem(block) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("bins"), list):
        return "it needs a 'bins' list"
    for entry in block["bins"]:
        bounds = entry.get("fraction_percent") if isinstance(entry, dict) else None
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(map(_is_number, bounds))
                and 0 < bounds[0] < bounds[1]):
            return "each bin needs 'fraction_percent': [low, high] with 0 < low < high"
        if not _is_number(entry.get("n")) or not (entry.get("accuracy") is None or _is_number(entry["accuracy"])):
            return "each bin needs a count 'n' and an 'accuracy' (or null)"
        for pair in PAIRS:
            value = entry.get(pair)
            if not isinstance(value, dict) or not all(_is_number(value.get(k)) for k in ("n_pos", "n_neg")) \
                    or not (value.get("auc") is None or _is_number(value["auc"]) and 0 <= value["auc"] <= 1):
                return f"each bin needs {pair!r} with 'auc' (0 to 1, or null), 'n_pos' and 'n_neg'"
    return None


def _merge_pair(entries) -> dict:
    """Pairs within each set: U = AUC n+ n- adds up over sets."""
    measured = [e for e in entries if e.get("auc") is not None]
    n_pos = sum(int(e["n_pos"]) for e in measured)
    n_neg = sum(int(e["n_neg"]) for e in measured)
    pairs = sum(int(e["n_pos"]) * int(e["n_neg"]) for e in measured)
    u = sum(e["auc"] * int(e["n_pos"]) * int(e["n_neg"]) for e in measured)
    auc = u / pairs if pairs else None
    return {"auc": auc, "se": hanley_mcneil_se(auc, n_pos, n_neg), "n_pos": n_pos, "n_neg": n_neg,
            "u": u, "pairs": pairs}


def merge_bins(blocks) -> list[dict]:
    """The bins of several sensitivity blocks (one set of weights, different test sets), bin by bin."""
    grouped = defaultdict(list)
    for block in blocks:
        for entry in block["bins"]:
            grouped[tuple(entry["fraction_percent"])].append(entry)
    merged = []
    for bounds in sorted(grouped):
        entries = grouped[bounds]
        n = sum(int(e["n"]) for e in entries)
        correct = sum(e["accuracy"] * int(e["n"]) for e in entries if e.get("accuracy") is not None)
        accuracy = correct / n if n else None
        merged.append({"fraction_percent": list(bounds), "n": n, "accuracy": accuracy,
                       "accuracy_se": None if accuracy is None else math.sqrt(accuracy * (1 - accuracy) / n),
                       **{pair: _merge_pair([e[pair] for e in entries]) for pair in PAIRS}})
    return merged


def _data_identity(record, index) -> str:
    block = record["sensitivity"]
    for value in (block.get("data_manifest_sha256"), (record.get("data") or {}).get("path")):
        if isinstance(value, str) and value:
            return value
    return f"record-{index}"


def curves(records, *, released=frozenset(), splits=PAGE_SPLITS) -> dict:
    """``{(dataset, arch): {"bins": merged bins, "records": [...], "weights_sha256": ...}}``: per
    architecture and dataset, one set of weights (the released one where it was evaluated, else the
    one evaluated on the most images), its evaluations on distinct test sets merged bin by bin.
    Evaluations on another dataset than the weights were trained on are left out."""
    weights = defaultdict(lambda: defaultdict(dict))  # (dataset, arch) -> sha -> data identity -> record
    for index, record in enumerate(records):
        block = record.get("sensitivity")
        if block is None or record.get("task") != "classify" or record.get("split", "test") not in splits:
            continue
        trained_on = record.get("trained_on")
        if trained_on is not None and str(trained_on) != str(record.get("dataset")):
            continue
        problem = _block_problem(block)
        if problem:
            raise LenszooError(f"{record.get('_path', 'a result')} has a damaged 'sensitivity' block ({problem}); run "
                               "`lenszoo evaluate` again")
        sha = (record.get("model") or {}).get("weights_sha256") or f"unknown-{index}"
        same_data = weights[(str(record["dataset"]), record["arch"])][sha]
        identity = _data_identity(record, index)
        if identity not in same_data or (record.get("n") or 0) > (same_data[identity].get("n") or 0):
            same_data[identity] = record
    chosen = {}
    for key, by_sha in weights.items():
        def rank(item):
            sha, by_data = item
            return sha in released, sum(r.get("n") or 0 for r in by_data.values())

        sha, by_data = max(by_sha.items(), key=rank)
        kept = list(by_data.values())
        chosen[key] = {"bins": merge_bins([r["sensitivity"] for r in kept]), "records": kept, "weights_sha256": sha}
    return chosen


def _order(key):
    from .page.select import arch_order

    return (key[0], arch_order(key[1]))


def draw_curves(chosen: dict, path, threshold: float = DETECTION_AUC) -> None:
    """AUC against the substructure fraction (log scale), one curve per architecture: a row of two
    panels (cdm vs no_sub, axion vs no_sub) per dataset."""
    from .plotting import pyplot

    plt = pyplot()

    datasets = sorted({dataset for dataset, _ in chosen})
    fig, axes = plt.subplots(len(datasets), len(PAIRS), figsize=(11, 3.8 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        keys = sorted((k for k in chosen if k[0] == dataset), key=_order)
        edges = sorted({x for k in keys for b in chosen[k]["bins"] for x in b["fraction_percent"]})
        for col, pair in enumerate(PAIRS):
            ax = axes[row][col]
            for i, key in enumerate(keys):
                shown = [b for b in chosen[key]["bins"] if b[pair]["auc"] is not None]
                if not shown:
                    continue
                shift = 1 + 0.03 * (i - (len(keys) - 1) / 2)  # side by side, so error bars do not hide each other
                x = [math.sqrt(b["fraction_percent"][0] * b["fraction_percent"][1]) * shift for b in shown]
                ax.errorbar(x, [b[pair]["auc"] for b in shown], yerr=[b[pair]["se"] for b in shown], fmt="-o", ms=4,
                            capsize=3, label=key[1])
            ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance")
            ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"AUC {threshold:g}")
            ax.set_xscale("log")
            if edges:
                ax.set_xticks(edges, [f"{e:g}" for e in edges])
                ax.minorticks_off()
                ax.set_xlim(edges[0] * 0.9, edges[-1] * 1.1)
            ax.set_ylim(0.3, 1.02)
            ax.set(xlabel="projected substructure mass fraction f (%)", ylabel="AUC",
                   title=f"{dataset}: {PAIR_TITLES[pair]}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _detection_sentence(dataset, arch, bins, threshold) -> str:
    parts = []
    for pair, positive in PAIRS.items():
        measured = [b for b in bins if b[pair]["auc"] is not None]
        if not measured:
            parts.append(f"{positive} not measured")
            continue
        top = max(measured, key=lambda b: b["fraction_percent"][0])
        detected = smallest_fraction_detected(bins, pair, threshold)
        if detected is None:
            parts.append(f"{positive} at no fraction measured ({PAIR_TITLES[pair]} AUC "
                         f"{_auc_text(top[pair], False)} in the highest bin, {bin_label(top['fraction_percent'])})")
        else:
            parts.append(f"{positive} from f = {detected:g} % up ({PAIR_TITLES[pair]} AUC ≥ {threshold:g} in every "
                         f"measured bin from {detected:g} % to {top['fraction_percent'][1]:g} %)")
    return f"- `{arch}` on {dataset} detects " + "; ".join(parts) + "."


def _beats(a, b) -> bool:
    """A beats B only if the difference exceeds 2 standard errors of the difference."""
    return a["auc"] - b["auc"] > 2 * math.sqrt(a["se"] ** 2 + b["se"] ** 2)


def _pooled(bins, bounds, pair="cdm_vs_no_sub") -> dict:
    chosen = [b[pair] for b in bins if tuple(b["fraction_percent"]) in bounds]
    pairs = sum(e["pairs"] for e in chosen)
    auc = sum(e["u"] for e in chosen) / pairs if pairs else None
    n_pos, n_neg = sum(e["n_pos"] for e in chosen), sum(e["n_neg"] for e in chosen)
    return {"auc": auc, "se": hanley_mcneil_se(auc, n_pos, n_neg), "n_pos": n_pos, "n_neg": n_neg}


def ranking_table(chosen: dict, dataset: str, pair: str = "cdm_vs_no_sub") -> str | None:
    """The architectures on ``dataset`` ranked by their AUC in the highest bin all of them measured,
    and pooled over every bin all of them measured; rank = 1 + the number that beat it by > 2 SE."""
    keys = sorted((k for k in chosen if k[0] == dataset), key=_order)
    if len(keys) < 2:
        return None
    common = set.intersection(*({tuple(b["fraction_percent"]) for b in chosen[k]["bins"] if b[pair]["auc"] is not None}
                                for k in keys))
    if not common:
        return None
    top = max(common)
    scores = {}
    for key in keys:
        best = next(b[pair] for b in chosen[key]["bins"] if tuple(b["fraction_percent"]) == top)
        scores[key] = (best, _pooled(chosen[key]["bins"], common, pair))
    ranked = []
    for key in keys:
        cells, ranks = [], []
        for which in (0, 1):
            beaten = [other[1] for other in keys if other != key and _beats(scores[key][which], scores[other][which])]
            ranks.append(1 + sum(_beats(scores[other][which], scores[key][which]) for other in keys if other != key))
            cells += [ranks[-1], _auc_text(scores[key][which]), ", ".join(f"`{a}`" for a in beaten) or "none"]
        ranked.append(((*ranks, -scores[key][0]["auc"], -scores[key][1]["auc"]), [f"`{key[1]}`", *cells]))
    rows = [row for _, row in sorted(ranked, key=lambda item: item[0])]
    common_text = ", ".join(bin_label(b) for b in sorted(common))
    return table(["architecture", f"rank at {bin_label(top)}", f"AUC at {bin_label(top)}", "beats (> 2 SE)",
                           "rank, bins pooled", f"AUC pooled over {common_text}", "beats (> 2 SE)"], rows)


def sensitivity_section(records, figure_path, *, link: str | None = None, released=frozenset(),
                        splits=PAGE_SPLITS, threshold: float = DETECTION_AUC) -> str | None:
    """The results page's section on sensitivity curves, from ``lenszoo evaluate`` records (as
    ``lenszoo.report.load_results`` returns them), with the figure drawn to ``figure_path``
    (linked as ``link``, default the path itself); None when no record has a sensitivity block.

    Only classifier evaluations on the ``test`` and ``holdout`` splits (``splits``) of the dataset the
    weights were trained on are shown."""
    chosen = curves(records, released=released, splits=splits)
    if not chosen:
        return None
    draw_curves(chosen, figure_path, threshold)
    keys = sorted(chosen, key=_order)
    edges = sorted({tuple(b["fraction_percent"]) for k in keys for b in chosen[k]["bins"]})
    link = link or Path(figure_path).as_posix()
    parts = ["## Sensitivity curves: detection against the substructure fraction", "",
             "Each classifier's AUC of cdm (axion) images against no_sub images per bin of the projected "
             "substructure mass fraction f, which datasets C draw for every image alike; score "
             "log p_cdm − log p_no_sub, errors Hanley–McNeil standard errors. Evaluations of one set of weights "
             "on several held-out sets (the standard f = 0.2–2 % and a strong 2–5 % set) are merged bin by bin "
             "(AUC over the pairs within each set).", "",
             f"![AUC against substructure fraction, one curve per architecture]({link})",
             ""]
    for pair in PAIRS:
        rows = []
        for key in keys:
            by_bounds = {tuple(b["fraction_percent"]): b for b in chosen[key]["bins"]}
            cells = [_auc_text(by_bounds[e][pair]) if e in by_bounds else "—" for e in edges]
            rows.append([key[0], f"`{key[1]}`", *cells])
        parts += [f"### {PAIR_TITLES[pair]}: AUC ± SE (n) by f", "",
                  table(["dataset", "architecture", *(bin_label(e) for e in edges)], rows), ""]
    parts += [f"### The smallest fraction each architecture detects (AUC ≥ {threshold:g})", ""]
    parts += [_detection_sentence(dataset, arch, chosen[(dataset, arch)]["bins"], threshold) for dataset, arch in keys]
    parts.append("")
    for dataset in sorted({k[0] for k in keys}):
        ranking = ranking_table(chosen, dataset)
        if ranking:
            parts += [f"### Ranking on {dataset} (cdm vs no_sub)", "",
                      "A beats B only if the difference of their AUCs exceeds 2 SE (√(SE_A² + SE_B²)); an "
                      "architecture's rank is 1 + the number of architectures that beat it.", "", ranking, ""]
    return "\n".join(parts).rstrip() + "\n"
