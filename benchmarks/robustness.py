"""How released classifiers fare on what real cutouts carry, and how often `predict` flags it.

    python benchmarks/robustness.py --calibrate           # flag rates on the val split (choose MARGINS)
    python benchmarks/robustness.py                       # every released A/B classifier and tag, test split
    python benchmarks/robustness.py --datasets B --archs c8_steerable --n-per-class 300
    python benchmarks/robustness.py --write-docs docs/predict.md --record docs/results-data/robustness.json
    python benchmarks/robustness.py --archs resnet50 --tags clean --add-to docs/results-data/robustness.json \
        --record docs/results-data/robustness.json --write-docs docs/predict.md   # re-measure released weights

Nuisances are applied to raw simulated images (lenszoo/data/nuisance.py), in units of the
dataset's background noise sigma: a constant sky offset of +-1, +3 and +10 sigma, the noise
doubled, and a min-max scaled 16-bit PNG (the usual way to write one). Accuracy is that of
the released weights on each; "flagged" is the share of images `lenszoo predict` flags with the
weights' own input contract (lenszoo/contract.py). `--calibrate` reads only the `val` split,
where the flag thresholds were chosen; the table reads the `test` split (stored under data/ if
present, else simulated with the same seeds), which no threshold was chosen on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NUISANCES = ("clean", "sky +1σ", "sky −1σ", "sky +3σ", "sky +10σ", "noise ×2", "min–max PNG")
DOCS_BEGIN = "<!-- robustness: written by benchmarks/robustness.py --write-docs -->"
DOCS_END = "<!-- /robustness -->"


def apply(name: str, images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    from lenszoo.data.nuisance import add_sky, scale_noise

    if name == "clean":
        return images
    if name.startswith("sky"):
        k = float(name.split()[1].replace("σ", "").replace("−", "-"))
        return add_sky(images, k, sigma)
    if name == "noise ×2":
        return scale_noise(images, 2.0, sigma, np.random.default_rng(seed))
    if name == "min–max PNG":
        low = images.min(axis=(1, 2), keepdims=True)
        high = images.max(axis=(1, 2), keepdims=True)
        return np.round((images - low) / (high - low) * 65535).astype(np.float32)
    raise ValueError(name)


def split_images(dataset: str, split: str, n_per_class: int):
    """Raw images and labels of the first ``3 * n_per_class`` images of ``split`` (stored or simulated)."""
    from lenszoo.data.torch_datasets import StoredDataset
    from lenszoo.registry import get_dataset

    n = 3 * n_per_class
    stored = Path(__file__).resolve().parents[1] / "data" / f"{dataset}-{split}"
    if (stored / "manifest.json").is_file():
        data = StoredDataset(stored, normalized=False)
        if len(data) >= n:
            return np.stack([data.image(i)[0] for i in range(n)]), np.asarray(data.targets[:n])
    generator = get_dataset(dataset)
    pairs = [generator.simulate(split, i, 0) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.array([p[1]["label"] for p in pairs])


def accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    import torch

    right = 0
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            right += int((model(model.preprocess(images[s:s + batch])).argmax(1).numpy() == labels[s:s + batch]).sum())
    return right / len(images)


def flag_rate(images: np.ndarray, contract: dict) -> tuple[float, dict]:
    from lenszoo.contract import image_flags, image_statistics

    flags = image_flags(image_statistics(images), contract)
    reasons: dict[str, int] = {}
    for f in flags:
        for reason in f:
            reasons[reason] = reasons.get(reason, 0) + 1
    return float(np.mean([bool(f) for f in flags])), reasons


def calibrate(datasets, n_per_class: int, seed: int):
    """Flag rates on the val split for the dataset contracts, with the MARGINS in lenszoo/contract.py."""
    from lenszoo.contract import MARGINS, measure_contract
    from lenszoo.registry import get_dataset

    print(f"flag rates on the val split ({3 * n_per_class} images per dataset), MARGINS {MARGINS}")
    print("| dataset | " + " | ".join(NUISANCES) + " |")
    print("|---|" + "---|" * len(NUISANCES))
    for dataset in datasets:
        generator = get_dataset(dataset)
        contract = measure_contract(generator)
        images, _ = split_images(dataset, "val", n_per_class)
        cells = []
        for name in NUISANCES:
            rate, _ = flag_rate(apply(name, images, generator.background_noise, seed), contract)
            cells.append(f"{100 * rate:.1f} %")
        print(f"| {dataset} | " + " | ".join(cells) + " |")


def released_classifiers(datasets, archs, tags=None):
    from lenszoo.pretrained.manifest import released_weights

    return [e for e in released_weights() if e["task"] == "classify" and e["dataset"] in datasets
            and (not archs or e["arch"] in archs) and (not tags or e.get("tag") in tags)]


def table(datasets, archs, n_per_class: int, seed: int, tags=None) -> dict:
    import lenszoo
    from lenszoo.contract import measure_contract
    from lenszoo.registry import get_dataset

    rows = []
    for dataset in datasets:
        generator = get_dataset(dataset)
        sigma = generator.background_noise
        images, labels = split_images(dataset, "test", n_per_class)
        variants = {name: apply(name, images, sigma, seed) for name in NUISANCES}
        for entry in released_classifiers([dataset], archs, tags):
            started = time.perf_counter()
            model = lenszoo.load(entry["arch"], task="classify", dataset=dataset, tag=entry.get("tag"))
            contract = model.lenszoo_config.get("input_contract") or measure_contract(generator)
            row = {"arch": entry["arch"], "tag": entry.get("tag"), "dataset": dataset, "n": len(images),
                   "weights_sha256": entry["sha256"], "accuracy": {}, "flagged": {}, "flag_reasons": {}}
            for name, x in variants.items():
                row["accuracy"][name] = accuracy(model, x, labels)
                row["flagged"][name], row["flag_reasons"][name] = flag_rate(x, contract)
            rows.append(row)
            print(f"{dataset} {entry['arch']}{'.' + entry['tag'] if entry.get('tag') else ''}: "
                  + ", ".join(f"{k} {100 * v:.1f}" for k, v in row["accuracy"].items())
                  + f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return {"format": "lenszoo-robustness", "version": 1, "split": "test", "n_per_class": n_per_class,
            "seed": seed, "nuisances": list(NUISANCES), "sigma_unit": "the dataset's background noise sigma",
            "rows": rows}


def row_key(row: dict) -> tuple:
    return row["arch"], row["dataset"], row.get("tag")


def add_rows(kept: dict, new: dict, where: Path) -> dict:
    """``new`` plus the rows of ``kept`` for weights it did not measure. Accuracy does not depend on
    the machine, but one table must share its images and nuisances: a record made with another
    sample, seed or set of nuisances is refused."""
    for key in ("format", "version", "split", "n_per_class", "seed", "nuisances"):
        if kept.get(key) != new.get(key):
            raise SystemExit(f"{where} was measured with {key}={kept.get(key)!r}, this run with {new.get(key)!r}: "
                             "measure everything again instead of --add-to")
    measured = {row_key(row) for row in new["rows"]}
    place = {row_key(row): i for i, row in enumerate(kept["rows"])}  # re-measured rows keep their place
    rows = [row for row in kept["rows"] if row_key(row) not in measured] + new["rows"]
    rows.sort(key=lambda row: place.get(row_key(row), len(place)))
    return {**new, "rows": rows}


def markdown(record: dict) -> str:
    lines = [f"Accuracy in % on the first {3 * record['n_per_class']:,} images of each dataset's `test` split "
             f"(flagged by `predict`, in %, in brackets), σ = the dataset's background noise; written by "
             "`python benchmarks/robustness.py --write-docs docs/predict.md --record docs/results-data/robustness.json`.",
             "", "| dataset | model | " + " | ".join(record["nuisances"]) + " |",
             "|---|---|" + "---|" * len(record["nuisances"])]
    for row in record["rows"]:
        name = f"`{row['arch']}`" + (f" `{row['tag']}`" if row.get("tag") else "")
        cells = [f"{100 * row['accuracy'][k]:.1f} ({100 * row['flagged'][k]:.0f})" for k in record["nuisances"]]
        lines.append(f"| {row['dataset']} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs(path: Path, text: str):
    from docs_block import write_block

    write_block(path, DOCS_BEGIN, DOCS_END, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["A", "B"])
    parser.add_argument("--archs", nargs="*", default=None, help="Only these architectures [default: all released].")
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the added noise.")
    parser.add_argument("--tags", nargs="+", default=None, help="Only weights with these tags [default: all].")
    parser.add_argument("--add-to", type=Path, metavar="RECORD",
                        help="Keep this record's rows for weights not measured now and write the union to --record.")
    parser.add_argument("--calibrate", action="store_true", help="Flag rates on the val split only.")
    parser.add_argument("--record", type=Path, help="Also write the figures as JSON here.")
    parser.add_argument("--write-docs", type=Path, help="Replace the marked table in this Markdown file.")
    parser.add_argument("--from-record", type=Path, help="Measure nothing: render (and --write-docs) this kept record.")
    args = parser.parse_args(argv)
    if args.calibrate:
        calibrate(args.datasets, args.n_per_class, args.seed)
        return
    if args.from_record:
        record = json.loads(args.from_record.read_text(encoding="utf-8"))
        if record.get("format") != "lenszoo-robustness":
            raise SystemExit(f"{args.from_record} is not a record of this benchmark")
    else:
        record = table(args.datasets, args.archs, args.n_per_class, args.seed, args.tags)
        if args.add_to:
            record = add_rows(json.loads(args.add_to.read_text(encoding="utf-8")), record, args.add_to)
    text = markdown(record)
    print(text)
    if args.record:
        from lenszoo.files import atomic_write_json

        atomic_write_json(args.record, record)
    if args.write_docs:
        write_docs(args.write_docs, text)


if __name__ == "__main__":
    main()
