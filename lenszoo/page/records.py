"""The evaluations a results page is made of, kept in git beside it (``lenszoo report --records DIR``),
so the page regenerates from a clone alone: run folders and test sets live in scratch space and
are lost with the machine. Kept records name files relative to their repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..files import path_within, repository_of
from ..report import _dig
from .select import pick, pick_transfer, pick_tta, seed_of, seed_rows, sha_of, split_of

RECORDS_FORMAT = "lenszoo-report-records"
RECORDS_INDEX = "index.json"


def page_records(results: list[dict], released=frozenset()) -> tuple[dict[str, dict], set[str]]:
    """Every evaluation the page shows, under a file label, and the labels whose plots it shows."""
    main, rotations = pick(results, released)
    picked = {f"{a}-{t}-{d}-{split_of(r)}": r for (a, t, d), r in main.items()}
    shown_plots = set(picked)
    picked.update({f"{a}-{t}-{d}-rotations": r for (a, t, d), r in rotations.items()})
    picked.update({f"{a}-{t}-{d}-tta": r for (a, t, d), r in pick_tta(results, released).items()})
    picked.update({f"{a}-{t}-{src}-on-{d}": r for (a, t, src, d), r in pick_transfer(results, released).items()})
    kept = {id(r) for r in picked.values()}
    for (arch, task, dataset), rows in seed_rows(results, released).items():
        for row in rows:
            for record in row.records():
                if id(record) not in kept:  # a seed's evaluation: by its seed and weights
                    seed = seed_of(record)
                    label = f"{arch}-{task}-{dataset}-{row.split}-seed{'-unknown' if seed is None else seed}"
                    picked[f"{label}-{(sha_of(record) or 'unknown')[:8]}"] = record
                    kept.add(id(record))
    for record in results:  # every evaluation the sensitivity section reads (standard and strong C sets)
        if isinstance(record.get("sensitivity"), dict) and id(record) not in kept:
            label = f"{record['arch']}-{record['task']}-{record['dataset']}-{split_of(record)}-sensitivity"
            picked[f"{label}-{(sha_of(record) or 'unknown')[:8]}-{(_dig(record, 'sensitivity', 'data_manifest_sha256') or '')[:8]}"] = record
            kept.add(id(record))
    return picked, shown_plots


def portable(record: dict) -> dict:
    """``record`` with the files it names (model, test data, a run's --init weights) relative to the
    repository holding them, where they are in one."""
    record = json.loads(json.dumps(record))
    places = [(record.get("model"), "path"), (record.get("data"), "path"), (_dig(record, "model", "recipe", "init"),
                                                                            "from")]
    for holder, key in places:
        if isinstance(holder, dict) and isinstance(holder.get(key), str):
            top = repository_of(holder[key])
            if top is not None:
                holder[key] = path_within(holder[key], top)
    return record


def is_records_folder(path) -> bool:
    from ..files import json_says

    return json_says(Path(path) / RECORDS_INDEX, "format", RECORDS_FORMAT)


def _records_files(folder: Path) -> list[str]:
    try:
        files = json.loads((Path(folder) / RECORDS_INDEX).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError):
        return []
    return [RECORDS_INDEX, *[f for f in files if isinstance(f, str)]]


def write_records(folder, picked: dict[str, dict], shown_plots=None) -> list[str]:
    """Write each picked record as LABEL.results.json (with the ROC / scatter plots the page shows
    beside it) and an index of the files; a file an earlier call wrote and this one did not is
    removed, nothing else."""
    from ..evaluate import RESULTS_FILE
    from ..files import output_folder

    if shown_plots is None:
        shown_plots = {label for label in picked if label.endswith("-test")}
    written = []
    with output_folder(folder, what="folder of report records", is_ours=is_records_folder,
                       previous_files=_records_files, option="--records") as tmp:
        for label, record in sorted(picked.items()):
            source = Path(record["_path"]).parent
            plots = []
            for plot in record.get("plots", []) if label in shown_plots else []:
                if isinstance(plot, str) and plot != "confusion_matrix.png" and (source / plot).is_file():
                    name = plot if plot.startswith(f"{label}.") else f"{label}.{plot}"  # a kept record, passed back
                    shutil.copyfile(source / plot, tmp / name)
                    plots.append(name)
            kept = portable({k: v for k, v in record.items() if k != "_path"})
            tag = kept.get("tag")
            if tag and str(kept["arch"]).endswith(f".{tag}"):  # load_results names tagged rows ARCH.TAG
                kept["arch"] = kept["arch"][:-len(tag) - 1]
            kept["plots"] = plots
            (tmp / f"{label}.{RESULTS_FILE}").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
            written += [f"{label}.{RESULTS_FILE}", *plots]
        index = {"format": RECORDS_FORMAT, "files": written,
                 "about": "the lenszoo evaluate results a results page was generated from (lenszoo report "
                          "--records); pass this folder to lenszoo report to regenerate the page"}
        (tmp / RECORDS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return written
