"""Simulate a whole dataset split into a directory: workers, shards, resume.

Every image is a pure function of (dataset, split, index, seed), so the
number of worker processes and the ``--shard I/N`` split change only who
computes an image, never its bits.
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
import sys
import time

import numpy as np

from .. import __version__
from ..errors import LenszooError
from ..runtime import end_with_parent
from .interface import check_generator, check_split, generator_image_shape, generator_info
from .normalization import NORMALIZATION
from .storage import FORMAT, FORMAT_VERSION, DatasetWriter, meta_records, parse_shard_spec, shards_of_job

DEFAULT_SHARD_SIZE = 1000
MAX_IMAGES = 1_000_000_000  # per directory: far beyond any disk, small enough to plan in memory
META_BYTES = 120  # per image in meta-*.npy, labels and masses
CHUNK_SIZE = 50  # images per task handed to a worker: small enough for a smooth progress bar

_worker_generator = None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise LenszooError(f"{what} must be a whole number > 0; got {value!r}")
    return int(value)


def resolve_generator(dataset, **overrides):
    """A generator object from a registered name (or the object itself)."""
    if isinstance(dataset, str):
        from ..registry import get_dataset

        return check_generator(get_dataset(dataset, **overrides))
    if overrides:
        raise LenszooError("config overrides need a dataset name, not a generator object")
    return check_generator(dataset)


def dataset_identity(generator, split: str, n_per_class: int, seed: int, noise: bool, shard_size: int) -> dict:
    """Everything that decides a simulated directory's bytes (compared on resume)."""
    class_names = list(generator.class_names)
    height, width = generator_image_shape(generator)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator": {**generator_info(generator), "lenstronomy_version": _package_version("lenstronomy")},
        "dataset": generator.name,
        "split": split,
        "seed": seed,
        "noise": bool(noise),
        "config": generator.config,
        "class_names": class_names,
        "n_per_class": n_per_class,
        "num_images": n_per_class * len(class_names),
        "image_shape": [1, height, width],
        "dtype": "float32",
        "image_units": "counts (e-) per second per pixel",
        "normalization": NORMALIZATION,
        "shard_size": shard_size,
        "index_to_class": "class_names[index % len(class_names)]",
    }


def check_free_space(path, n_images: int, identity: dict):
    """Refuse, before simulating, a job whose shards cannot fit on the disk that holds ``path``."""
    import shutil
    from pathlib import Path

    channels, height, width = identity["image_shape"]
    needed = n_images * (4 * channels * height * width + META_BYTES)
    existing = next((p for p in [Path(path), *Path(path).parents] if p.exists()), None)
    if existing is None or not needed:
        return
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise LenszooError(f"{n_images:,} images need about {needed / 1e9:.1f} GB, but the disk holding {existing} has "
                           f"{free / 1e9:.1f} GB free; free some space, choose another --out, or simulate fewer images")


def _init_worker(generator, parent):
    global _worker_generator
    end_with_parent(parent)
    _worker_generator = generator


def check_finite_image(generator, image, split: str, index: int, seed: int, noise: bool):
    """A one-line error if ``image`` has NaN or infinite pixels, naming its index and what in the
    config most likely made them (the generator's ``explain_nonfinite``, where it has one)."""
    finite = np.isfinite(image)
    if finite.all():
        return
    hint = None
    explain = getattr(generator, "explain_nonfinite", None)
    if callable(explain):
        try:
            hint = explain(split, index, seed, noise=noise)
        except Exception:  # noqa: BLE001 - the diagnosis is a courtesy; the refusal stands without it
            hint = None
    hint = hint or "check the dataset's config (the --set changes) or the generator's plugin"
    raise LenszooError(f"image {index} of {generator.name}/{split} (seed {seed}) has {finite.size - int(finite.sum())} "
                       f"non-finite pixels (NaN or infinite), so no shard holding it is written: {hint}")


def _simulate_range(generator, split, start, stop, seed, noise):
    height, width = generator_image_shape(generator)
    images = np.empty((stop - start, 1, height, width), dtype=np.float32)
    metas = []
    for offset, index in enumerate(range(start, stop)):
        try:
            image, meta = generator.simulate(split, index, seed, noise=noise)
        except LenszooError as exc:  # say which image of the job could not be made
            raise LenszooError(f"image {index} of {generator.name}/{split}: {exc}") from None
        check_finite_image(generator, np.asarray(image), split, index, seed, noise)
        images[offset, 0] = image
        meta.setdefault("index", index)
        metas.append(meta)
    return start, images, meta_records(metas, generator.class_names)


def _simulate_task(task):
    split, start, stop, seed, noise = task
    return _simulate_range(_worker_generator, split, start, stop, seed, noise)


def _pool_context():
    # fork: workers inherit the imported modules and the built lenstronomy objects (fast start).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform != "darwin" else "spawn")


def simulate_dataset(dataset, split: str, n_per_class: int, out, *, seed: int = 0, noise: bool = True,
                     workers: int = 1, shard="1/1", shard_size: int = DEFAULT_SHARD_SIZE,
                     progress: bool | None = None, overrides: dict | None = None) -> dict:
    """Simulate ``n_per_class`` images of each class of ``split`` into directory ``out``.

    Resumes an interrupted run (only missing or damaged shards are made),
    refuses a directory made with other settings, and with ``shard="I/N"``
    makes only the I-th of N blocks of storage shards (for array jobs). Returns
    a summary dict; ``summary["manifest"]`` is set once the dataset is complete.
    """
    generator = resolve_generator(dataset, **(overrides or {}))
    check_split(generator, split)
    n_per_class = _positive_int(n_per_class, "--n-per-class")
    workers = _positive_int(workers, "--workers")
    shard_size = _positive_int(shard_size, "--shard-size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LenszooError(f"--seed must be a whole number >= 0; got {seed!r}")
    job, jobs = parse_shard_spec(shard)
    num_images = n_per_class * len(generator.class_names)
    if num_images > MAX_IMAGES:
        raise LenszooError(f"--n-per-class {n_per_class:,} makes {num_images:,} images; one directory holds at most "
                           f"{MAX_IMAGES:,}: split the data over several --out directories or seeds")
    identity = dataset_identity(generator, split, n_per_class, int(seed), noise, shard_size)
    writer = DatasetWriter(out, identity, identity["num_images"], shard_size)
    mine = shards_of_job(writer.num_shards, job, jobs)
    if not writer.path.exists():  # before creating anything: will this job's shards fit, is its first image sound?
        check_free_space(writer.path, sum(writer.ranges[k][1] - writer.ranges[k][0] for k in mine), identity)
        if len(mine):
            first = writer.ranges[mine[0]][0]
            _simulate_range(generator, split, first, first + 1, int(seed), bool(noise))
    writer.open()
    done = writer.completed_shards()
    todo = [k for k in mine if k not in done]
    check_free_space(writer.path, sum(writer.ranges[k][1] - writer.ranges[k][0] for k in todo), identity)
    tasks, shard_of = [], {}
    for k in todo:
        start, stop = writer.ranges[k]
        for chunk_start in range(start, stop, CHUNK_SIZE):
            tasks.append((split, chunk_start, min(chunk_start + CHUNK_SIZE, stop), int(seed), bool(noise)))
            shard_of[chunk_start] = k
    total = sum(stop - start for start, stop in (writer.ranges[k] for k in todo))

    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    if tasks and hasattr(generator, "warm_up"):
        generator.warm_up()  # before forking: workers inherit the built objects
    began = time.perf_counter()
    buffers: dict[int, list] = {}

    def collect(result):
        start, images, meta = result
        k = shard_of[start]
        buffers.setdefault(k, []).append((images, meta))
        lo, hi = writer.ranges[k]
        if sum(len(m) for _, m in buffers[k]) == hi - lo:
            parts = buffers.pop(k)
            writer.write_shard(k, np.concatenate([i for i, _ in parts]), np.concatenate([m for _, m in parts]),
                               generator.class_names)

    with tqdm(total=total, unit="img", desc=f"{generator.name}/{split}", disable=not show or total == 0) as bar:
        if workers == 1 or len(tasks) <= 1:
            for split_, start, stop, seed_, noise_ in tasks:
                collect(_simulate_range(generator, split_, start, stop, seed_, noise_))
                bar.update(stop - start)
        else:
            context = _pool_context()
            with context.Pool(min(workers, len(tasks)), initializer=_init_worker,
                              initargs=(generator, os.getpid())) as pool:
                for result in pool.imap(_simulate_task, tasks):
                    collect(result)
                    bar.update(len(result[2]))
    seconds = time.perf_counter() - began

    extra = {"lenszoo_version": __version__}
    derived = getattr(generator, "derived", None)
    if callable(derived):
        extra["derived"] = derived()
    manifest = writer.finalize(extra)
    return {
        "path": str(writer.path),
        "num_images": writer.num_images,
        "num_shards": writer.num_shards,
        "job": f"{job}/{jobs}",
        "job_shards": len(mine),
        "written_shards": len(todo),
        "written_images": total,
        "reused_shards": len([k for k in mine if k in done]),
        "seconds": seconds,
        "images_per_second": total / seconds if seconds > 0 and total else None,
        "complete": manifest is not None,
        "missing_shards": 0 if manifest else writer.missing_shard_count(),
        "manifest": manifest,
    }
