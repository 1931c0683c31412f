"""What bfloat16 inference changes against fp32, for every released classifier and regressor.

    python benchmarks/bf16_parity.py                                  # the whole zoo, 1,000 images per class
    python benchmarks/bf16_parity.py --archs radial_profile --datasets A --n-per-class 30
    python benchmarks/bf16_parity.py --write-docs docs/predict.md --record docs/results-data/bf16_parity.json

Each set of weights scores the same images twice through `lenszoo.predict` (the pipeline
`predict` runs), with `precision="fp32"` and `precision="bf16"` (the forward pass under
bfloat16 autocast), and the script reports the change: accuracy (bf16 minus fp32, in points),
the largest change of any class probability, and for regressors the change of the mean absolute
error (dex). Images: the first N per class of the dataset's stored `holdout` split under data/
if there is one, else its stored `test` split, else the `test` split simulated with seed 0 (the
images `lenszoo simulate` would store). `auto` keeps fp32 for weights whose change is beyond
0.1 point or 0.005 dex (BF16_LIMITS in lenszoo/inference/scorer.py): copy a row's
`bf16_parity` from the --record JSON into that weights' manifest entry to say so.

On a CPU without native bfloat16 (no avx512_bf16 / amx_bf16 flag) torch emulates it, several
times slower than fp32; the figures are the same, the run is long.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DOCS_BEGIN = "<!-- bf16 parity: written by benchmarks/bf16_parity.py --write-docs -->"
DOCS_END = "<!-- /bf16 parity -->"
SPLITS = ("holdout", "test")  # stored splits, in order of preference


def split_images(dataset: str, task: str, n_per_class: int, data_root: Path):
    """``(images, targets, split, where)``: raw images of ``dataset`` for ``task`` (the first
    ``n_per_class`` of each class; axion images for regress), from a stored split or simulated."""
    from lenszoo.data.torch_datasets import StoredDataset
    from lenszoo.tasks import CLASS_NAMES

    classes = range(len(CLASS_NAMES)) if task == "classify" else [CLASS_NAMES.index("axion")]
    for split in SPLITS:
        folder = data_root / f"{dataset}-{split}"
        if not (folder / "manifest.json").is_file():
            continue
        data = StoredDataset(folder, task, normalized=False)
        if data.dataset_name != dataset or data.split != split:
            continue
        labels = np.asarray(data.meta["label"])
        chosen = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n_per_class] for c in classes]))
        if len(chosen) < n_per_class * len(classes):
            continue
        images = np.stack([data.image(int(i))[0] for i in chosen])
        return images, np.asarray(data.targets[chosen]), split, f"stored in {folder}"
    from lenszoo.registry import get_dataset

    generator = get_dataset(dataset)
    if task == "classify":  # image i of a split is of class i % 3
        positions = range(3 * n_per_class)
    else:
        positions = [3 * p + CLASS_NAMES.index("axion") for p in range(n_per_class)]
    pairs = [generator.simulate("test", i, 0) for i in positions]
    key = "label" if task == "classify" else "log10_axion_mass"
    return np.stack([p[0] for p in pairs]), np.array([p[1][key] for p in pairs]), "test", "simulated, seed 0"


def outputs(model, images, precision: str, batch_size: int) -> np.ndarray:
    import lenszoo
    from lenszoo.tasks import CLASS_NAMES

    rows = lenszoo.predict(model, images, precision=precision, batch_size=batch_size)
    assert len(rows) == len(images) and all(r["precision"] == precision for r in rows)
    columns = [f"p_{c}" for c in CLASS_NAMES] if model.lenszoo_config["task"] == "classify" else ["log10_m_a"]
    return np.array([[r[c] for c in columns] for r in rows])


def parity(model, images, targets, batch_size: int) -> dict:
    """fp32 and bf16 metrics of ``model`` on ``images`` and what bf16 changed."""
    task = model.lenszoo_config["task"]
    found = {}
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        out = outputs(model, images, precision, batch_size)
        found[precision] = {"out": out, "seconds": round(time.perf_counter() - started, 2)}
        if task == "classify":
            found[precision]["accuracy"] = float((out.argmax(1) == targets).mean())
        else:
            found[precision]["mae"] = float(np.abs(out[:, 0] - targets).mean())
    fp32, bf16 = found["fp32"], found["bf16"]
    change = {"n": len(images), "accuracy_change": None, "max_probability_change": None, "mae_change": None}
    if task == "classify":
        change["accuracy_change"] = round(bf16["accuracy"] - fp32["accuracy"], 6)
        change["max_probability_change"] = round(float(np.abs(bf16["out"] - fp32["out"]).max()), 6)
    else:
        change["mae_change"] = round(bf16["mae"] - fp32["mae"], 6)
    for precision, figures in found.items():
        figures.pop("out")
        change[precision] = figures
    return change


def measure(archs, datasets, tasks, n_per_class: int, batch_size: int, data_root: Path, tags=None) -> dict:
    import lenszoo
    from lenszoo.inference.scorer import BF16_LIMITS, bf16_keeps_parity
    from lenszoo.runtime import hardware_name, native_bf16
    from lenszoo.pretrained.manifest import entry_label, released_weights
    from lenszoo.pretrained.source import WeightsUnavailable

    import torch

    entries = [e for e in released_weights() if (not archs or e["arch"] in archs)
               and (not datasets or e["dataset"] in datasets) and e["task"] in tasks
               and (tags is None or (e.get("tag") or "-") in tags)]
    data: dict[tuple, tuple] = {}
    rows = []
    for entry in entries:
        label = entry_label(entry)
        try:
            model = lenszoo.load(entry["arch"], task=entry["task"], dataset=entry["dataset"], tag=entry.get("tag"))
        except WeightsUnavailable as exc:
            print(f"skipped {label}: {exc.reason}", file=sys.stderr)
            continue
        key = (entry["dataset"], entry["task"])
        if key not in data:
            data[key] = split_images(entry["dataset"], entry["task"], n_per_class, data_root)
        images, targets, split, where = data[key]
        row = {"arch": entry["arch"], "task": entry["task"], "dataset": entry["dataset"], "tag": entry.get("tag"),
               "weights_sha256": entry["sha256"], "split": split, "images": where,
               **parity(model, images, targets, batch_size)}
        row["bf16_parity"] = {"split": split, "n": row["n"], **{
            k: row[k] for k in ("accuracy_change", "max_probability_change", "mae_change") if row[k] is not None}}
        row["within_limits"] = bf16_keeps_parity(row["bf16_parity"])
        rows.append(row)
        print(f"{label}: {summary(row)} ({row['fp32']['seconds']:.0f} s fp32, {row['bf16']['seconds']:.0f} s bf16)",
              file=sys.stderr)
    cpu = torch.device("cpu")
    return {"format": "lenszoo-bf16-parity", "version": 1, "n_per_class": n_per_class, "limits": BF16_LIMITS,
            "hardware": hardware_name(cpu), "native_bf16": native_bf16(cpu), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "rows": rows}


def summary(row: dict) -> str:
    if row["task"] == "classify":
        return (f"accuracy {100 * row['fp32']['accuracy']:.2f} -> {100 * row['bf16']['accuracy']:.2f} % "
                f"({100 * row['accuracy_change']:+.2f} points), largest probability change "
                f"{row['max_probability_change']:.2g}")
    return f"MAE {row['fp32']['mae']:.4f} -> {row['bf16']['mae']:.4f} dex ({row['mae_change']:+.4f})"


def markdown(record: dict) -> str:
    lines = [f"bf16 against fp32 on {record['n_per_class']:,} images per class ({record['hardware']}, torch "
             f"{record['torch']}, {record['date']}); written by `python benchmarks/bf16_parity.py --write-docs "
             "docs/predict.md --record docs/results-data/bf16_parity.json`. `auto` keeps fp32 where a change is "
             "beyond 0.1 point or 0.005 dex (✗).", "",
             "| model | task | dataset | images | fp32 | bf16 | accuracy change (points) | largest probability "
             "change | MAE change (dex) | bf16 under auto |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        name = f"`{row['arch']}`" + (f" `{row['tag']}`" if row.get("tag") else "")
        if row["task"] == "classify":
            figures = [f"{100 * row['fp32']['accuracy']:.2f} %", f"{100 * row['bf16']['accuracy']:.2f} %",
                       f"{100 * row['accuracy_change']:+.2f}", f"{row['max_probability_change']:.2g}", "–"]
        else:
            figures = [f"MAE {row['fp32']['mae']:.4f}", f"MAE {row['bf16']['mae']:.4f}", "–", "–",
                       f"{row['mae_change']:+.4f}"]
        lines.append(f"| {name} | {row['task']} | {row['dataset']} | {row['n']:,} {row['split']} | "
                     + " | ".join(figures) + f" | {'✓' if row['within_limits'] else '✗'} |")
    return "\n".join(lines)


def write_docs(path: Path, text: str):
    from docs_block import write_block

    write_block(path, DOCS_BEGIN, DOCS_END, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="*", default=None, help="Only these architectures [default: all released].")
    parser.add_argument("--datasets", nargs="*", default=None, help="Only these datasets [default: all].")
    parser.add_argument("--tasks", nargs="+", default=["classify", "regress"], choices=["classify", "regress"])
    parser.add_argument("--tags", nargs="+", default=None,
                        help="Only weights with these tags ('-' for untagged) [default: all].")
    parser.add_argument("--add-to", type=Path, metavar="RECORD",
                        help="Keep this record's rows for weights not measured now (same machine and n only) and "
                             "write the union to --record.")
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--data-root", type=Path, default=REPO / "data",
                        help="Where stored splits are looked for, as DATASET-SPLIT folders [default: data/].")
    parser.add_argument("--record", type=Path, help="Also write the figures as JSON here.")
    parser.add_argument("--write-docs", type=Path, help="Replace the marked table in this Markdown file.")
    parser.add_argument("--from-record", type=Path,
                        help="Measure nothing: render (and --write-docs / --write-manifest) this kept record.")
    parser.add_argument("--write-manifest", type=Path, metavar="MANIFEST",
                        help="Copy each row's bf16_parity into the MANIFEST entry of the same weights (sha256).")
    args = parser.parse_args(argv)
    if args.n_per_class < 1:
        parser.error("--n-per-class must be >= 1")
    if args.from_record:
        record = json.loads(args.from_record.read_text(encoding="utf-8"))
        if record.get("format") != "lenszoo-bf16-parity":
            raise SystemExit(f"{args.from_record} is not a record of this benchmark")
    else:
        record = measure(args.archs, args.datasets, args.tasks, args.n_per_class, args.batch_size, args.data_root,
                         args.tags)
        if args.add_to:
            record = add_rows(json.loads(args.add_to.read_text(encoding="utf-8")), record, args.add_to)
    if not record["rows"]:
        raise SystemExit("no released weights matched (or none are available here)")
    text = markdown(record)
    print(text)
    if args.record:
        from lenszoo.files import atomic_write_json

        atomic_write_json(args.record, record)
    if args.write_docs:
        write_docs(args.write_docs, text)
    if args.write_manifest:
        print(write_manifest(args.write_manifest, record), file=sys.stderr)


def row_key(row: dict) -> tuple:
    return row["arch"], row["task"], row["dataset"], row.get("tag")


def add_rows(kept: dict, new: dict, where: Path) -> dict:
    """``new`` plus the rows of ``kept`` for weights it did not measure; one table must come from one
    machine and one sample size, so a record from elsewhere is refused."""
    for key in ("format", "hardware", "native_bf16", "n_per_class", "torch"):
        if kept.get(key) != new.get(key):
            raise SystemExit(f"{where} was measured with {key}={kept.get(key)!r}, this run with {new.get(key)!r}: "
                             "measure everything again instead of --add-to")
    measured = {row_key(row) for row in new["rows"]}
    rows = [row for row in kept["rows"] if row_key(row) not in measured] + new["rows"]
    rows.sort(key=lambda row: (row["arch"], row["task"], row.get("tag") or "", row["dataset"]))
    return {**new, "date": kept["date"] if kept["date"] == new["date"] else f"{kept['date']}, {new['date']}",
            "rows": rows}


def write_manifest(path: Path, record: dict) -> str:
    """Set ``bf16_parity`` on each manifest entry a row measured (matched by arch, task, dataset, tag
    and the weights' sha256, so a row never lands on other weights); the manifest is checked whole."""
    from lenszoo.files import atomic_write_json
    from lenszoo.pretrained.manifest import validate_manifest

    manifest = json.loads(path.read_text(encoding="utf-8"))
    by_identity = {(e["arch"], e["task"], e["dataset"], e.get("tag"), e["sha256"]): e for e in manifest["weights"]}
    written, unmatched = 0, []
    for row in record["rows"]:
        entry = by_identity.get((row["arch"], row["task"], row["dataset"], row.get("tag"), row["weights_sha256"]))
        if entry is None:
            unmatched.append(f"{row['arch']}/{row['task']}/{row['dataset']}")
            continue
        entry["bf16_parity"] = row["bf16_parity"]
        written += 1
    problems = validate_manifest(manifest)
    if problems:
        raise SystemExit(f"{path} would be invalid: {problems[0]}")
    atomic_write_json(path, manifest, sort_keys=False)
    return (f"bf16_parity written to {written} entries of {path}"
            + (f"; not in it (other weights): {', '.join(unmatched)}" if unmatched else ""))


if __name__ == "__main__":
    main()
