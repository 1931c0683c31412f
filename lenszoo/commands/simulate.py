"""``lenszoo simulate`` and ``lenszoo import-deeplense``: make or import a dataset directory."""

from __future__ import annotations

from pathlib import Path

import click

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
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def simulate_command(dataset, split, n_per_class, out, workers, shard, seed, no_noise, preview, shard_size, quiet):
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

    generator = resolve_generator(dataset)
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


@hookimpl
def register_commands(register):
    register(simulate_command)
    register(import_deeplense_command)
