"""The results page's section on sensitivity curves (Table 8): ``lenszoo evaluate`` records'
sensitivity blocks (:mod:`lenszoo.sensitivity`) merged per set of weights, drawn as AUC against
the substructure fraction, and ranked.

One set of weights evaluated on several held-out sets (the standard f in 0.2-2 % and a strong
2-5 % set) is merged bin by bin: counts add, and a bin's AUC is taken over the (positive, negative)
pairs within each set, so the sets' Mann-Whitney U add.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from ..errors import LenszooError
from ..markdown import table
from ..sensitivity import (
    DETECTION_AUC,
    PAIR_TITLES,
    PAIRS,
    auc_text,
    bin_label,
    hanley_mcneil_se,
    smallest_fraction_detected,
)

PAGE_SPLITS = ("test", "holdout")  # the splits whose evaluations the section shows


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
    from .select import arch_order

    return (key[0], arch_order(key[1]))


def draw_curves(chosen: dict, path, threshold: float = DETECTION_AUC) -> None:
    """AUC against the substructure fraction (log scale), one curve per architecture: a row of two
    panels (cdm vs no_sub, axion vs no_sub) per dataset."""
    from ..plotting import pyplot

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
                         f"{auc_text(top[pair], False)} in the highest bin, {bin_label(top['fraction_percent'])})")
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
            cells += [ranks[-1], auc_text(scores[key][which]), ", ".join(f"`{a}`" for a in beaten) or "none"]
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
            cells = [auc_text(by_bounds[e][pair]) if e in by_bounds else "—" for e in edges]
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
