"""``lenszoo report``: Markdown tables of evaluation results in the shape of the seed paper's.

Table 1 (classification): rows architecture x dataset, accuracy and macro AUC.
Table 2 (regression): rows architecture x dataset, MSE, RMSE, MAE (and bias) in dex.
Several results for one row (seeds) are shown as mean ± standard deviation.

``--paper FILE.json`` puts published numbers beside lenszoo's; the file is
supplied by the user (lenszoo ships no numbers it cannot verify)::

    {"source": "Author et al. 2024, Tables 1 and 2",
     "classify": [{"arch": "resnet50", "dataset": "A", "accuracy": 0.93, "auc": 0.98}],
     "regress":  [{"arch": "resnet50", "dataset": "B", "mse": 0.01, "mae": 0.08}]}

Accuracy is a fraction (0.93, not 93); any metric may be left out.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from .errors import LenszooError
from .files import is_regular_file, path_kind, read_user_text
from .markdown import table

MARKER = "<!-- written by `lenszoo report` from `lenszoo evaluate` results: regenerate it, do not edit it -->"
CLASSIFY_COLUMNS = (("accuracy", "Accuracy"), ("auc", "AUC"))
REGRESS_COLUMNS = (("mse", "MSE"), ("rmse", "RMSE"), ("mae", "MAE"), ("bias", "bias"))
ROTATION_NAMES = ("rot90", "rot180", "rot270", "random")


def find_results(paths) -> list[Path]:
    """Result files named directly or found (recursively) in the named folders."""
    from .evaluate import RESULTS_FILE

    found = []
    for path in map(Path, paths):
        if path.is_dir():
            # results.json of `lenszoo evaluate`, LABEL.results.json of `lenszoo report --records`
            files = sorted({*path.rglob(RESULTS_FILE), *path.rglob("*." + RESULTS_FILE)})
            if not files:
                raise LenszooError(f"no {RESULTS_FILE} under {path}; run `lenszoo evaluate` first")
            found += files
        elif path.is_file() and is_regular_file(path):
            found.append(path)
        elif not path.exists() and not path.is_symlink():
            raise LenszooError(f"{path} does not exist; pass results.json files or folders holding them")
        else:
            raise LenszooError(f"{path} is {path_kind(path)}, not a regular file; pass results.json files or folders "
                               "holding them")
    if not found:
        raise LenszooError("no results given; pass results.json files or folders written by `lenszoo evaluate`")
    return found


def is_report_file(path) -> bool:
    """True for a file ``lenszoo report`` wrote (its first line is the marker)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\n") == MARKER
    except (OSError, UnicodeDecodeError):
        return False


def _record_problem(record) -> str | None:
    from .tasks import TASKS

    if not isinstance(record.get("metrics"), dict):
        return "'metrics' must be an object"
    for key in ("arch", "dataset"):
        if not isinstance(record.get(key), str):
            return f"{key!r} must be a string"
    if record.get("task") not in TASKS:
        return f"'task' must be one of {', '.join(TASKS)}"
    if not isinstance(record.get("rotations") or {}, dict):
        return "'rotations' must be an object"
    if not isinstance(record.get("split", "test"), str):
        return "'split' must be a string"
    return None


# The weights the page ranks were trained on clean simulations, the seed paper's protocol, and are
# released as ARCH.clean (an untagged name loads the robust ones): their records, tagged or
# evaluated before the tag, are one row, ARCH's. Any other tag is a row of its own.
RANKED_TAG = "clean"


def load_results(paths) -> list[dict]:
    from .evaluate import RESULTS_FORMAT

    results = []
    for path in find_results(paths):
        try:
            record = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LenszooError(f"cannot read {path} as JSON ({exc}); pass results written by `lenszoo evaluate`") from None
        if not isinstance(record, dict) or record.get("format") != RESULTS_FORMAT:
            raise LenszooError(f"{path} is not a lenszoo evaluation result; pass results written by `lenszoo evaluate`")
        problem = _record_problem(record)
        if problem:
            raise LenszooError(f"{path} is a damaged lenszoo evaluation result ({problem}); run `lenszoo evaluate` again")
        record["_path"] = str(path)
        tag = record.get("tag")
        if isinstance(tag, str) and tag and tag != RANKED_TAG and not record["arch"].endswith(f".{tag}"):
            record["arch"] = f"{record['arch']}.{tag}"  # tagged weights are rows of their own: ARCH.TAG
        results.append(record)
    return results


def load_paper(path) -> dict:
    """Published numbers, checked: ``{"classify": [...], "regress": [...]}`` (see module docstring)."""
    text = read_user_text(path, "--paper")
    try:
        paper = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LenszooError(f"cannot read --paper {path} as JSON ({exc})") from None
    if not isinstance(paper, dict) or not any(k in paper for k in ("classify", "regress")):
        raise LenszooError(f"--paper {path} needs a 'classify' and/or 'regress' list of "
                           '{"arch": ..., "dataset": ..., metric: value} rows')
    published = {}
    for task, columns in (("classify", CLASSIFY_COLUMNS), ("regress", REGRESS_COLUMNS)):
        for i, row in enumerate(paper.get(task, [])):
            if not isinstance(row, dict) or "arch" not in row or "dataset" not in row:
                raise LenszooError(f"--paper {path}: {task}[{i}] needs 'arch' and 'dataset'")
            for key, _ in columns:
                value = row.get(key)
                if value is not None and not isinstance(value, (int, float)):
                    raise LenszooError(f"--paper {path}: {task}[{i}].{key} must be a number, got {value!r}")
            if task == "classify" and row.get("accuracy") is not None and row["accuracy"] > 1:
                raise LenszooError(f"--paper {path}: {task}[{i}].accuracy is {row['accuracy']}; "
                                   "give accuracy as a fraction (0.93, not 93)")
            published[(task, row["arch"], str(row["dataset"]))] = row
    return {"source": paper.get("source"), "rows": published}


def _mean_std(values):
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, std


def _cell(values, key):
    mean, std = _mean_std(values)
    if mean is None:
        return "—"
    if key == "accuracy":
        text = f"{100 * mean:.2f} %"
        return text if std is None else f"{100 * mean:.2f} ± {100 * std:.2f} %"
    digits = 4
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _dig(record, *keys):
    """``record[k1][k2]...``, or None where a level is missing or not an object (a dict, or a
    manifest's ``Weights`` record, which reads like its JSON entry)."""
    for key in keys:
        if not isinstance(record, Mapping):
            return None
        record = record.get(key)
    return record


def distinct_weights(records: list[dict], rotations: bool = False) -> list[dict]:
    """One record per set of weights (their sha256): evaluating the same weights twice is one run,
    not two. Of several evaluations of one set, the one with rotation results (if asked for),
    then the most test images, is kept."""
    chosen: dict = {}
    for index, record in enumerate(records):
        sha = _dig(record, "model", "weights_sha256") or f"unknown-{index}"
        rank = (bool(record.get("rotations")) if rotations else False, record.get("n") or 0)
        if sha not in chosen or rank > chosen[sha][0]:
            chosen[sha] = (rank, record)
    return [record for _, record in chosen.values()]


def build_report(results: list[dict], paper: dict | None = None, rotations: bool = False) -> str:
    """The Markdown text: one table per task present (in the results or the paper file).
    A row's "runs" counts distinct weights."""
    groups = defaultdict(list)
    for record in results:
        groups[(record["task"], record["arch"], str(record["dataset"]), record.get("split", "test"))].append(record)
    groups = {key: distinct_weights(records, rotations) for key, records in groups.items()}
    show_split = any(key[3] != "test" for key in groups)
    paper_rows = paper["rows"] if paper else {}
    sections = []
    for task, title, columns in (("classify", "Table 1: classification (no_sub / cdm / axion)", CLASSIFY_COLUMNS),
                                 ("regress", "Table 2: axion mass regression, log10(m_a / eV) in dex",
                                  REGRESS_COLUMNS)):
        keys = sorted(k for k in groups if k[0] == task)
        paper_only = sorted(k for k in paper_rows if k[0] == task and not any(g[1:3] == k[1:] for g in keys))
        if not keys and not paper_only:
            continue
        headers = ["Architecture", "Dataset"] + (["Split"] if show_split else [])
        headers += [label for _, label in columns]
        if paper:
            headers += [f"paper {label}" for _, label in columns]
        if rotations and task == "classify":
            headers += [f"Acc. {name}" for name in ROTATION_NAMES] + ["mean abs Δlogit (random)"]
        if rotations and task == "regress":
            headers += [f"MAE {name}" for name in ROTATION_NAMES] + ["mean abs Δ (random, dex)"]
        headers += ["n test", "runs"]
        rows = []
        for key in keys:
            records = groups[key]
            row = [key[1], key[2]] + ([key[3]] if show_split else [])
            row += [_cell([r["metrics"].get(k) for r in records], k) for k, _ in columns]
            if paper:
                published = paper_rows.get((task, key[1], key[2]), {})
                row += [_cell([published.get(k)], k) for k, _ in columns]
            if rotations:
                metric = "accuracy" if task == "classify" else "mae"
                for name in ROTATION_NAMES:
                    row.append(_cell([_dig(r, "rotations", name, "metrics", metric) for r in records], metric))
                row.append(_cell([_dig(r, "rotations", "random", "mean_abs_output_change") for r in records], "change"))
            sizes = sorted({r.get("n") for r in records})
            row += ["/".join(str(s) for s in sizes), len(records)]
            rows.append(row)
        for key in paper_only:
            published = paper_rows[key]
            row = [key[1], key[2]] + (["—"] if show_split else []) + ["—" for _ in columns]
            row += [_cell([published.get(k)], k) for k, _ in columns]
            if rotations:
                row += ["—"] * (len(ROTATION_NAMES) + 1)
            rows.append(row + ["—", 0])
        sections.append(f"### {title}\n\n{table(headers, rows)}")
    if not sections:
        raise LenszooError("the results hold no classify or regress evaluations")
    notes = ["Accuracy and AUC (macro one-vs-rest) on the test split; regression errors in dex. "
             "Several runs of one row: mean ± standard deviation."]
    if paper and paper.get("source"):
        notes.append(f"Paper numbers: {paper['source']}.")
    if rotations:
        notes.append("Rotation columns: the same test images turned by 90°, 180°, 270° and by one random angle each.")
    return MARKER + "\n\n" + "\n\n".join(sections) + "\n\n" + " ".join(notes) + "\n"
