"""``lenszoo simulate`` and ``lenszoo import-deeplense``: make or import a dataset directory."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import LenszooError
from ..hookspecs import hookimpl


def _summary_line(summary: dict, dataset: str, split: str) -> str:
    rate = summary["images_per_second"]
    this_run = (f"this run wrote {summary['written_shards']} shards ({summary['written_images']} images) in "
                f"{summary['seconds']:.1f} s" + (f", {rate:.0f} images/s" if rate else ""))
    if summary["reused_shards"]:
        this_run += f", kept {summary['reused_shards']} finished shards"
    if summary["complete"]:
        return (f"{dataset}/{split}: {summary['num_images']} images in {summary['num_shards']} shards at "
                f"{summary['path']} ({this_run}); manifest: {Path(summary['path']) / 'manifest.json'}")
    return (f"{dataset}/{split} job {summary['job']}: {this_run}; {summary['missing_shards']} of "
            f"{summary['num_shards']} shards still missing: run the other --shard jobs to complete the dataset")


def parse_settings(settings) -> dict:
    """``--set section.key=VALUE`` options as nested config overrides; VALUE is JSON (or a bare word)."""
    import json

    overrides: dict = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise LenszooError(f"--set {setting!r}: write it as SECTION.KEY=VALUE, e.g. "
                               f"--set substructure.mass_fraction_range=[0.02,0.05]")
        try:
            value = json.loads(text)
        except ValueError:
            value = text  # a bare word such as a profile name
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LenszooError(f"--set {setting!r}: {part!r} was already set to a value above")
        if parts[-1] in node:
            raise LenszooError(f"--set {key.strip()} is given twice; keep one")
        node[parts[-1]] = value
    return overrides


@click.command("simulate")
@click.option("--dataset", "-d", required=True, help="Dataset generator: A, B, ... (see `lenszoo list --datasets`).")
@click.option("--split", "-s", required=True, help="train, val or test: each draws from its own seed stream.")
@click.option("--n-per-class", "-n", type=int, required=True, help="Images per class (3 classes, balanced).")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True,
              help="Dataset directory; re-running with the same settings completes missing shards.")
@click.option("--workers", "-w", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--shard", default="1/1", show_default=True,
              help="I/N: make only the I-th of N blocks of storage shards (array jobs; I counts from 1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed (>= 0).")
@click.option("--no-noise", is_flag=True, help="Noise-free images (ablations).")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a PNG grid of samples (rows = classes) to this path.")
@click.option("--shard-size", type=int, default=1000, show_default=True, help="Images per storage shard.")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one entry of the dataset's config (VALUE in JSON; repeatable), e.g. "
                   "--set substructure.mass_fraction_range=[0.02,0.05]. Recorded in manifest.json; "
                   "docs/datasets.md lists the keys.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def simulate_command(dataset, split, n_per_class, out, workers, shard, seed, no_noise, preview, shard_size, settings,
                     quiet):
    """Simulate a dataset split into OUT: float32 (N, 1, 64, 64) .npy shards, labels,
    log10 axion masses, per-image metadata and manifest.json.

    Image i of a split is a pure function of (dataset, split, i, seed): any
    --workers and any --shard layout give the same bytes.

    \b
    Example:
      lenszoo simulate --dataset B --split test --n-per-class 5000 --out data/B-test --workers 8
    """
    from ..data.generate import resolve_generator, simulate_dataset
    from ..data.preview import check_preview_path, save_preview

    overrides = parse_settings(settings)
    try:
        generator = resolve_generator(dataset, **overrides)
    except TypeError as exc:  # a plugin's factory without keywords, or a value of the wrong type
        raise LenszooError(f"dataset {dataset!r} cannot take these --set changes ({exc}); "
                           f"docs/datasets.md lists its config keys and their types") from None
    if preview is not None:
        check_preview_path(preview)
    summary = simulate_dataset(
        generator, split, n_per_class, out, seed=seed, noise=not no_noise, workers=workers, shard=shard,
        shard_size=shard_size, progress=None if not quiet else False,
    )
    if preview is not None:
        save_preview(generator, preview, split, seed=seed, noise=not no_noise)
    if not quiet:
        click.echo(_summary_line(summary, generator.name, split))
        if preview is not None:
            click.echo(f"preview: {preview}")


@click.command("import-deeplense")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="lenszoo dataset directory to write.")
@click.option("--trust-pickle", is_flag=True,
              help="Read DeepLense's pickled axion files ([image, mass] object arrays). Unpickling runs code "
                   "stored in the files: pass this only for data from a source you trust.")
@click.option("--split", default="test", show_default=True, help="Split name recorded in the manifest.")
@click.option("--shard-size", type=int, default=1000, show_default=True, help="Images per storage shard.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def import_deeplense_command(src, out, trust_pickle, split, shard_size, quiet):
    """Import a DeepLense dataset folder SRC (one folder per class: no_sub, cdm, axion;
    one .npy per image) as a lenszoo dataset directory, so lenszoo models can score it.

    Labels follow lenszoo's class order (no_sub, cdm, axion), whatever the
    folder order; axion masses become log10(m_a / eV) regression targets.
    """
    from ..data.deeplense import PICKLE_WARNING, import_deeplense

    if trust_pickle and not quiet:
        click.echo(f"Warning: --trust-pickle: reading pickled object arrays from {src}; {PICKLE_WARNING}", err=True)
    summary = import_deeplense(src, out, trust_pickle=trust_pickle, split=split, shard_size=shard_size,
                               progress=None if not quiet else False)
    if not quiet:
        counts = ", ".join(f"{name} {count}" for name, count in summary["class_counts"].items())
        click.echo(f"imported {summary['num_images']} images ({counts}) from {src} into {summary['path']}")


SIGNAL_FORMAT = "lenszoo-signal"


@click.command("signal")
@click.option("--dataset", "-d", required=True, help="Dataset generator: A, B, C-euclid, C-hst, ...")
@click.option("--n", "n_images", type=int, default=200, show_default=True,
              help="Image seeds measured (each rendered as every class).")
@click.option("--split", "-s", default="test", show_default=True, help="Split whose image seeds are used.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed (>= 0).")
@click.option("--workers", "-w", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every image's figures and the summary to this JSON file.")
def signal_command(dataset, n_images, split, seed, workers, json_path):
    """How strongly substructure marks the images of a dataset, in units of the noise.

    For each image seed the same lens is rendered without substructure and with each kind.
    "known" is the imprint's signal-to-noise for an observer who knows every other parameter;
    "marginal" is what is left after the dataset's nuisances (lens, source) are refitted to the
    image with substructure (a local smooth-model fit): about what a network, which must infer
    the nuisances too, can use. Below ~1 an image carries no usable trace of its substructure.

    \b
    Example:
      lenszoo signal --dataset C-hst --n 100 --workers 2
    """
    import numpy as np

    from ..cli import format_table
    from ..data.generate import resolve_generator
    from ..data.lensing import check_split
    from ..data.signal import substructure_signal, summarize_signal
    from ..files import claim_output, json_says, json_text, output_file

    generator = resolve_generator(dataset)
    check_split(split)
    if isinstance(seed, bool) or seed < 0:
        raise LenszooError(f"--seed must be a whole number >= 0; got {seed!r}")
    is_ours = lambda path: json_says(path, "format", SIGNAL_FORMAT)  # noqa: E731
    if json_path is not None:
        claim_output(json_path, what="lenszoo signal file", is_ours=is_ours, option="--json", kind="file")
    signal = substructure_signal(generator, n_images, split=split, seed=seed, workers=workers)
    rows = summarize_signal(signal)

    def spread(values):
        low, median, high = values
        return "-" if np.isnan(median) else f"{median:.1f} [{low:.1f}, {high:.1f}]"

    click.echo(f"{generator.name}: substructure imprint / pixel noise, {n_images} image seeds of {split} "
               f"(median [16th, 84th percentile]); marginal: after refitting its {len(signal['nuisances'])} nuisances")
    click.echo(format_table(
        [[r["sample"], r["n"], spread(r["known"]), spread(r["marginal"]),
          "-" if not r["n"] else f"{r['marginal_at_least_1']:.0%}", "-" if not r["n"] else f"{r['marginal_at_least_5']:.0%}"]
         for r in rows],
        ["sample", "n", "known", "marginal", "marginal >= 1", "marginal >= 5"]))
    if json_path is not None:
        record = {"format": SIGNAL_FORMAT, "dataset": generator.name, "split": split, "seed": seed, "n": n_images,
                  "nuisances": signal["nuisances"], "summary": rows,
                  "images": {name: {kind: values.tolist() for kind, values in signal[name].items()}
                             for name in ("cdm", "axion") if name in signal},
                  "log10_axion_mass": [None if np.isnan(v) else v for v in signal["log10_axion_mass"].tolist()]}
        output_file(json_path, json_text(record), what="lenszoo signal file", is_ours=is_ours, option="--json")
        click.echo(f"written: {json_path}")


@hookimpl
def register_commands(register):
    register(simulate_command)
    register(import_deeplense_command)
    register(signal_command)
