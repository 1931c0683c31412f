"""The on-disk dataset format: ``.npy`` shards, per-image metadata and ``manifest.json``.

A dataset directory holds, for each storage shard ``k`` (``shard_size``
consecutive images):

- ``images-0000k.npy``  float32 ``(n, 1, H, W)``, memory-mappable;
- ``meta-0000k.npy``    structured array (``META_DTYPE``), one record per image;
- ``shard-0000k.json``  the shard's record (range, class counts, sha256 of both files),
  written last: a shard without it does not exist.

Once every shard is present, ``labels.npy`` (int64), ``log10_axion_mass.npy``
(float64, NaN except for axion images) and the final ``manifest.json`` (with
the sha256 of every file) are written. Every file is written to a hidden
temporary name, fsynced and renamed, so a killed run leaves no partial file
under a real name; re-running re-does only the missing shards. Nothing is
ever pickled.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..errors import LenszooError
from ..files import atomic_write, remove_stale_temporaries, sha256_file, temporary_path

FORMAT = "lenszoo-dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.npy"
LOG10_MASS_NAME = "log10_axion_mass.npy"

META_DTYPE = np.dtype([
    ("index", "<i8"),              # position in the dataset (and in the simulation stream)
    ("label", "<i8"),              # index into the manifest's class_names
    ("seed", "<u8"),               # the image's own 64-bit seed (0 when unknown)
    ("axion_mass_ev", "<f8"),      # NaN unless axion
    ("log10_axion_mass", "<f8"),   # NaN unless axion
    ("source_x", "<f8"),           # arcsec; NaN when unknown
    ("source_y", "<f8"),
    ("n_subhalos", "<i8"),         # point masses: CDM subhalos or vortex elements; -1 when unknown
    ("subhalo_mass_total_msun", "<f8"),
    ("vortex_angle", "<f8"),       # radians; NaN unless axion
    ("vortex_half_length_arcsec", "<f8"),
    # appended fields (older datasets lack them; ``current_meta`` fills them in on reading)
    ("mass_fraction", "<f8"),      # projected substructure mass fraction drawn for the image; NaN when unknown
    ("substructure_mass_msun", "<f8"),  # all substructure mass, rendered or not; NaN when unknown
])
_META_DEFAULTS = {
    "index": -1, "label": -1, "seed": 0, "n_subhalos": -1,
}


def current_meta(meta: np.ndarray) -> np.ndarray:
    """A shard's metadata as ``META_DTYPE``: fields an older lenszoo did not write get their defaults."""
    if meta.dtype == META_DTYPE:
        return meta
    records = np.zeros(meta.shape, dtype=META_DTYPE)
    for name in META_DTYPE.names:
        records[name] = meta[name] if meta.dtype.names and name in meta.dtype.names \
            else _META_DEFAULTS.get(name, math.nan)
    return records


def meta_records(metas: list[dict], class_names) -> np.ndarray:
    """Pack metadata dicts (as a generator returns them) into a ``META_DTYPE`` array."""
    records = np.zeros(len(metas), dtype=META_DTYPE)
    for row, meta in zip(records, metas):
        for name in META_DTYPE.names:
            if name in meta:
                value = meta[name]
            elif name == "label" and "class_name" in meta:
                value = list(class_names).index(meta["class_name"])
            else:
                value = _META_DEFAULTS.get(name, math.nan)
            row[name] = value
    return records


# -- atomic files ----------------------------------------------------------------
def save_npy(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False))


def json_bytes(obj) -> bytes:
    # Sorted keys and no timestamps: the same dataset always gets the same manifest bytes.
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n").encode()


def save_json(path: Path, obj) -> Path:
    data = json_bytes(obj)
    return atomic_write(path, lambda handle: handle.write(data))


def read_json(path: Path, what: str) -> dict:
    """A dataset manifest; a damaged one cannot be repaired in place (it is what says which
    settings made the shards), so the advice is a fresh directory."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise LenszooError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        data, problem = None, f"{type(exc).__name__}: {exc}"
    else:
        problem = None if isinstance(data, dict) else f"a JSON {type(data).__name__}, not an object"
    if problem:
        raise LenszooError(f"{what} {path} is damaged ({problem}); without it the shards in {path.parent} cannot be "
                           f"checked: move {path.parent} aside (or delete it) and run `lenszoo simulate` into a new "
                           "--out") from None
    return data


# -- layout -------------------------------------------------------------------------
def shard_names(k: int) -> tuple[str, str, str]:
    return f"images-{k:05d}.npy", f"meta-{k:05d}.npy", f"shard-{k:05d}.json"


def shard_ranges(num_images: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, num_images)) for start in range(0, num_images, shard_size)]


def parse_shard_spec(spec) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) -> (I, N): this job makes the I-th of N equal blocks of shards."""
    if isinstance(spec, tuple):
        job, jobs = spec
    else:
        text = str(spec).strip()
        parts = text.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise LenszooError(
                f"--shard must look like I/N with whole numbers, e.g. 2/8 (job 2 of 8); got {spec!r}"
            )
        job, jobs = (int(p) for p in parts)
    if not (isinstance(job, int) and isinstance(jobs, int)) or jobs < 1 or not 1 <= job <= jobs:
        raise LenszooError(f"--shard I/N needs 1 <= I <= N (I counts from 1); got {job}/{jobs}")
    return job, jobs


def shards_of_job(num_shards: int, job: int, jobs: int) -> range:
    """Contiguous block of storage shards for job ``job`` of ``jobs`` (1-based)."""
    start = (job - 1) * num_shards // jobs
    stop = job * num_shards // jobs
    return range(start, stop)


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def identity_differences(existing: dict, wanted: dict) -> list[str]:
    """Human-readable differences between two identity dicts, dotted keys."""
    have, want = _flatten(existing), _flatten(wanted)
    lines = []
    for key in sorted(set(have) | set(want), key=lambda k: (k.count("."), k)):  # top-level keys first
        a, b = have.get(key, "<missing>"), want.get(key, "<missing>")
        if a != b and not (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            lines.append(f"{key}: {a!r} there, {b!r} here")
    return lines


class DatasetWriter:
    """Creates or resumes one dataset directory and writes its shards.

    ``identity`` is everything that decides the directory's contents
    (generator, config, split, seed, counts, layout); a directory whose
    manifest has a different identity is refused.
    """

    def __init__(self, path, identity: dict, num_images: int, shard_size: int):
        self.path = Path(path)
        self.identity = json.loads(json_bytes(identity))  # as it will read back from disk
        self.num_images = num_images
        self.shard_size = shard_size
        self.ranges = shard_ranges(num_images, shard_size)

    @property
    def num_shards(self) -> int:
        return len(self.ranges)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    def open(self):
        """Create the directory and its provisional manifest, or check an existing one."""
        if self.path.exists() and not self.path.is_dir():
            raise LenszooError(f"--out {self.path} is a file; give a directory path")
        from ..files import claim_output

        claim_output(self.path, what="lenszoo dataset directory", is_ours=lambda path: True)  # parents, writable
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.manifest_path.exists():
            visible = [p.name for p in self.path.iterdir() if not p.name.startswith(".")]
            if visible:
                raise LenszooError(
                    f"{self.path} is not empty and holds no {MANIFEST_NAME} (found {', '.join(sorted(visible)[:3])}); "
                    "pass a new or empty --out directory"
                )
            self._claim_manifest()
        existing = read_json(self.manifest_path, "dataset manifest")
        existing_identity = {k: existing.get(k, "<missing>") for k in self.identity}
        differences = identity_differences(existing_identity, self.identity)
        if differences:
            raise LenszooError(
                f"{self.path} holds a dataset made with different settings ("
                + "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
                + "); re-run with the original settings to finish it, or choose another --out"
            )
        return self

    def _claim_manifest(self):
        # Exclusive create, so two jobs starting on one directory cannot overwrite each other.
        provisional = {**self.identity, "complete": False}
        tmp = temporary_path(self.manifest_path)
        data = json_bytes(provisional)
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, self.manifest_path)
        except FileExistsError:
            pass  # another job created it first; open() compares identities
        except OSError:  # filesystems without hard links
            if not self.manifest_path.exists():
                os.replace(tmp, self.manifest_path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- shards -------------------------------------------------------------------
    def shard_record(self, k: int) -> dict | None:
        """The record of shard ``k`` if it is complete and its files match their hashes."""
        images, meta, record_name = shard_names(k)
        record_path = self.path / record_name
        if not record_path.exists():
            return None
        try:
            record = json.loads(record_path.read_text())
            start, stop = self.ranges[k]
            if (record.get("start"), record.get("count")) != (start, stop - start):
                return None
            for name, key in ((images, "images_sha256"), (meta, "meta_sha256")):
                if sha256_file(self.path / name) != record.get(key):
                    return None
        except (OSError, ValueError, IndexError):
            return None
        return record

    def missing_shard_count(self) -> int:
        """Shards without a record (cheap: no hashing)."""
        return sum(1 for k in range(self.num_shards) if not (self.path / shard_names(k)[2]).exists())

    def completed_shards(self) -> dict[int, dict]:
        records = {}
        for k in range(self.num_shards):
            record = self.shard_record(k)
            if record is not None:
                records[k] = record
        return records

    def write_shard(self, k: int, images: np.ndarray, meta: np.ndarray, class_names) -> dict:
        start, stop = self.ranges[k]
        if images.shape[0] != stop - start or meta.shape[0] != stop - start:
            raise ValueError(f"shard {k} needs {stop - start} images, got {images.shape[0]}")
        images_name, meta_name, record_name = shard_names(k)
        for name in (images_name, meta_name, record_name):
            remove_stale_temporaries(self.path / name)
        # The record goes last and is what makes the shard exist; remove an old one first.
        (self.path / record_name).unlink(missing_ok=True)
        save_npy(self.path / images_name, images.astype(np.float32, copy=False))
        save_npy(self.path / meta_name, meta)
        counts = np.bincount(meta["label"][meta["label"] >= 0], minlength=len(class_names))
        record = {
            "index": k, "start": start, "count": stop - start,
            "images": images_name, "images_sha256": sha256_file(self.path / images_name),
            "meta": meta_name, "meta_sha256": sha256_file(self.path / meta_name),
            "class_counts": {name: int(c) for name, c in zip(class_names, counts)},
        }
        save_json(self.path / record_name, record)
        return record

    def finalize(self, extra: dict | None = None) -> dict | None:
        """Write labels, masses and the complete manifest once every shard exists; else None."""
        records = self.completed_shards()
        if len(records) < self.num_shards:
            return None
        meta = np.concatenate([current_meta(np.load(self.path / records[k]["meta"])) for k in range(self.num_shards)])
        files = {}
        for name, values in ((LABELS_NAME, meta["label"].astype(np.int64)),
                             (LOG10_MASS_NAME, meta["log10_axion_mass"].astype(np.float64))):
            save_npy(self.path / name, values)
            files[name] = sha256_file(self.path / name)
        class_names = self.identity["class_names"]
        counts = np.bincount(meta["label"][meta["label"] >= 0], minlength=len(class_names))
        manifest = {
            **self.identity,
            **(extra or {}),
            "complete": True,
            "num_images": int(meta.shape[0]),
            "class_counts": {name: int(c) for name, c in zip(class_names, counts)},
            "shards": [records[k] for k in range(self.num_shards)],
            "files": files,
        }
        save_json(self.manifest_path, manifest)
        return manifest


def read_manifest(path) -> dict:
    """The manifest of a complete lenszoo dataset directory (errors say what to do otherwise)."""
    path = Path(path)
    if not path.exists():
        raise LenszooError(f"dataset directory {path} does not exist; make one with `lenszoo simulate`")
    if not path.is_dir():
        raise LenszooError(f"{path} is a file, not a dataset directory made by `lenszoo simulate`")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.exists():
        raise LenszooError(
            f"{path} is not a lenszoo dataset (no {MANIFEST_NAME}); make one with `lenszoo simulate` "
            "or `lenszoo import-deeplense`"
        )
    manifest = read_json(manifest_path, "dataset manifest")
    if manifest.get("format") != FORMAT:
        raise LenszooError(f"{manifest_path} is not a lenszoo dataset manifest (format {manifest.get('format')!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise LenszooError(
            f"{path} uses dataset format version {manifest['format_version']}; this lenszoo reads "
            f"up to {FORMAT_VERSION}: upgrade lenszoo"
        )
    if not manifest.get("complete"):
        num_shards = len(shard_ranges(manifest.get("num_images", 0), manifest.get("shard_size", 1)))
        present = sum(1 for k in range(num_shards) if (path / shard_names(k)[2]).exists())
        raise LenszooError(
            f"dataset {path} is incomplete ({present} of {num_shards} shards); re-run the same "
            "`lenszoo simulate` command (every --shard job) to finish it"
        )
    return manifest


def verify_dataset(path) -> list[str]:
    """Files of a complete dataset whose sha256 differs from the manifest (empty: all good)."""
    path = Path(path)
    manifest = read_manifest(path)
    expected = dict(manifest.get("files", {}))
    for shard in manifest["shards"]:
        expected[shard["images"]] = shard["images_sha256"]
        expected[shard["meta"]] = shard["meta_sha256"]
    bad = []
    for name, digest in sorted(expected.items()):
        file = path / name
        if not file.exists() or sha256_file(file) != digest:
            bad.append(name)
    return bad
