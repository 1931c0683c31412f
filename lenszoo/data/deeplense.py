"""Reading DeepLense's published datasets (Model II = paper's A, Model III = paper's B).

Their layout: one folder per class (``no_sub``, ``cdm``, ``axion``) of ``.npy``
files, one image each; axion files hold a *pickled* object array
``[image, axion_mass_eV]``. Unpickling runs code from the file, so object
arrays are read only when the caller passes ``trust_pickle=True``
(``--trust-pickle``). Labels come from the folder names mapped onto
``lenszoo.CLASS_NAMES``, never from folder order (DeepLense's alphabetical
order was axion=0, cdm=1, no_sub=2).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import LenszooError
from ..tasks import CLASS_NAMES, check_task
from .normalization import NORMALIZATION, normalizer_from_config
from ..files import atomic_write, sha256_file
from .storage import FORMAT, FORMAT_VERSION, DatasetWriter, meta_records

IMPORTER_NAME = "lenszoo.deeplense_import"
IMPORTER_VERSION = 1
SOURCE_FILES_NAME = "source_files.txt"

PICKLE_WARNING = (
    "unpickling runs code stored in the file: use --trust-pickle / trust_pickle=True only for "
    "DeepLense data from a source you trust"
)


def _holds_objects(path: Path) -> bool:
    """Whether an .npy file stores an object (pickled) array, read from its header alone."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            _, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return dtype.hasobject


def read_deeplense_file(path, *, trust_pickle: bool = False) -> tuple[np.ndarray, float]:
    """(image as float32 (H, W), axion mass in eV or NaN) of one DeepLense ``.npy`` file."""
    path = Path(path)
    try:
        pickled = _holds_objects(path)
        if pickled and not trust_pickle:
            raise LenszooError(
                f"{path} holds a pickled object array (DeepLense stores axion images as [image, mass]); "
                + PICKLE_WARNING
            )
        content = np.load(path, allow_pickle=pickled)
        mass = math.nan
        if content.dtype.hasobject:
            parts = list(content.ravel()) if content.ndim else [content.item()]
            image = np.asarray(parts[0], dtype=np.float64)
            if len(parts) > 1:
                mass = float(parts[1])
        else:
            image = np.asarray(content, dtype=np.float64)
    except LenszooError:
        raise
    except Exception as exc:  # truncated, not .npy, bad pickle, odd contents: all unreadable
        raise LenszooError(
            f"cannot read DeepLense file {path} ({type(exc).__name__}: {exc}); delete or re-download it"
        ) from None
    while image.ndim > 2 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise LenszooError(f"DeepLense file {path} holds an array of shape {image.shape}, not one 2-D image")
    if not np.all(np.isfinite(image)):
        raise LenszooError(f"DeepLense file {path} holds NaN or infinite pixels; delete or re-download it")
    if not (math.isnan(mass) or mass > 0):
        raise LenszooError(f"DeepLense file {path} gives axion mass {mass!r}; masses must be positive (eV)")
    return image.astype(np.float32), mass


def scan_deeplense(path) -> list[tuple[Path, int]]:
    """``(file, label)`` for every image of a DeepLense folder, classes in ``CLASS_NAMES`` order."""
    root = Path(path)
    if not root.is_dir():
        from ..files import path_kind

        kind = path_kind(root)
        raise LenszooError(f"DeepLense folder {root} " + ("does not exist" if kind == "missing" else f"is {kind}, not a folder"))
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    items = []
    for label, class_name in enumerate(CLASS_NAMES):
        folder = root / class_name
        if not folder.is_dir():
            nested = [root / name for name in found if all((root / name / c).is_dir() for c in CLASS_NAMES)]
            hint = f"; did you mean {nested[0]}?" if nested else ""
            raise LenszooError(
                f"DeepLense folder {root} has no '{class_name}' subfolder (subfolders: {', '.join(found) or 'none'}); "
                f"it needs one folder per class: {', '.join(CLASS_NAMES)}{hint}"
            )
        files = sorted(folder.glob("*.npy"))
        if not files:
            raise LenszooError(f"DeepLense class folder {folder} holds no .npy files")
        items.extend((file, label) for file in files)
    real_root = root.resolve()
    for file, _ in items:  # checked before anything is read or written
        target = file.resolve()
        if not target.is_relative_to(real_root):
            raise LenszooError(f"{file} is a link to {target}, outside the DeepLense folder {root}; copy the file in, "
                               "or point at the folder that holds the real files")
        if not target.is_file():
            raise LenszooError(f"{file} is not a readable file (a dangling link?); remove it or replace it")
    return items


class DeepLenseFolder:
    """A DeepLense folder's files, labels and targets (``DeepLenseDataset`` adds the torch items).

    Images are read lazily, one file per item. ``regress`` keeps the axion
    images and reads their masses up front (which unpickles them).
    """

    def __init__(self, path, task: str = "classify", *, trust_pickle: bool = False, normalized: bool = True,
                 split: str = "test"):
        self.task = check_task(task)
        self.path = Path(path)
        self.trust_pickle = bool(trust_pickle)
        self.class_names = CLASS_NAMES
        self.dataset_name = "deeplense"
        self.split = split
        self.normalization = NORMALIZATION if normalized else {"name": "none", "version": 1}
        self._normalizer = normalizer_from_config(self.normalization)
        items = scan_deeplense(self.path)
        # Probe one file per class now, so a missing --trust-pickle or a bad shape fails here, not mid-epoch.
        shapes = set()
        for label in range(len(CLASS_NAMES)):
            first = next(file for file, lab in items if lab == label)
            shapes.add(read_deeplense_file(first, trust_pickle=self.trust_pickle)[0].shape)
        if len(shapes) != 1:
            raise LenszooError(f"DeepLense folder {self.path} mixes image sizes {sorted(shapes)} across classes")
        self.image_shape = (1, *shapes.pop())
        self.files = [file for file, _ in items]
        labels = np.array([label for _, label in items], dtype=np.int64)
        self._masses = np.full(len(items), math.nan)
        if task == "regress":
            axion = CLASS_NAMES.index("axion")
            keep = np.flatnonzero(labels == axion)
            for i in keep:
                self._masses[i] = read_deeplense_file(self.files[i], trust_pickle=self.trust_pickle)[1]
            if np.isnan(self._masses[keep]).any():
                bad = self.files[int(keep[np.isnan(self._masses[keep])][0])]
                raise LenszooError(f"axion file {bad} has no mass; task 'regress' needs [image, mass] files")
            self.files = [self.files[i] for i in keep]
            labels, self._masses = labels[keep], self._masses[keep]
        self.labels = labels
        self.targets = labels if task == "classify" else np.log10(self._masses).astype(np.float32)
        counts = np.bincount(labels, minlength=len(CLASS_NAMES))
        self.manifest = {
            "format": "deeplense-folder", "dataset": self.dataset_name, "split": split,
            "source": str(self.path.resolve()), "class_names": list(CLASS_NAMES),
            "class_counts": {c: int(n) for c, n in zip(CLASS_NAMES, counts)},
            "image_shape": list(self.image_shape), "normalization": self.normalization,
        }

    def __len__(self):
        return len(self.files)

    def read(self, i: int) -> tuple[np.ndarray, float]:
        """Raw image ``(H, W)`` and axion mass (eV, NaN unless axion) of item ``i``."""
        image, mass = read_deeplense_file(self.files[i], trust_pickle=self.trust_pickle)
        if (1, *image.shape) != self.image_shape:
            raise LenszooError(
                f"DeepLense file {self.files[i]} is {image.shape[0]}x{image.shape[1]}; the folder's other "
                f"images are {self.image_shape[1]}x{self.image_shape[2]}"
            )
        return image, mass

    def item_values(self, i: int) -> tuple[np.ndarray, int, float]:
        """(raw image, label, log10 axion mass or NaN) of item ``i``."""
        image, mass = self.read(i)
        return image, int(self.labels[i]), (math.log10(mass) if mass > 0 else math.nan)


def import_deeplense(src, out, *, trust_pickle: bool = False, split: str = "test", shard_size: int = 1000,
                     progress: bool | None = None) -> dict:
    """Convert a DeepLense folder into a lenszoo dataset directory (readable by ``StoredDataset``).

    Images are stored as found (float32), classes in ``CLASS_NAMES`` order,
    files sorted by name within a class; ``source_files.txt`` lists each
    image's original file. Re-running resumes like ``lenszoo simulate``.
    """
    from tqdm.auto import tqdm

    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise LenszooError(f"--shard-size must be a whole number > 0; got {shard_size!r}")
    source = DeepLenseFolder(src, "classify", trust_pickle=trust_pickle, normalized=False, split=split)
    counts = source.manifest["class_counts"]
    identity = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "generator": {"name": IMPORTER_NAME, "version": IMPORTER_VERSION},
        "dataset": "deeplense", "split": split, "seed": None, "noise": None,
        "config": {"source": source.manifest["source"], "layout": "DeepLense: one folder of .npy files per class",
                   "class_counts": counts},
        "class_names": list(CLASS_NAMES), "n_per_class": None, "num_images": len(source),
        "image_shape": list(source.image_shape), "dtype": "float32",
        "image_units": "as stored by DeepLense", "normalization": NORMALIZATION, "shard_size": shard_size,
    }
    writer = DatasetWriter(out, identity, len(source), shard_size).open()
    done = writer.completed_shards()
    todo = [k for k in range(writer.num_shards) if k not in done]
    show = sys.stderr.isatty() if progress is None else progress
    began = time.perf_counter()
    total = sum(writer.ranges[k][1] - writer.ranges[k][0] for k in todo)
    with tqdm(total=total, unit="img", desc="deeplense", disable=not show or total == 0) as bar:
        for k in todo:
            start, stop = writer.ranges[k]
            images = np.empty((stop - start, *source.image_shape), dtype=np.float32)
            metas = []
            for offset, i in enumerate(range(start, stop)):
                image, mass = source.read(i)
                images[offset, 0] = image
                metas.append({"index": i, "label": int(source.labels[i]), "axion_mass_ev": mass,
                              "log10_axion_mass": math.log10(mass) if mass > 0 else math.nan})
                bar.update()
            writer.write_shard(k, images, meta_records(metas, CLASS_NAMES), CLASS_NAMES)
    root = Path(source.manifest["source"])
    listing = "".join(f"{Path(f).resolve().relative_to(root)}\n" for f in source.files).encode()
    atomic_write(writer.path / SOURCE_FILES_NAME, lambda handle: handle.write(listing))
    manifest = writer.finalize({
        "source_files": {"name": SOURCE_FILES_NAME, "sha256": sha256_file(writer.path / SOURCE_FILES_NAME)},
        "trust_pickle": bool(trust_pickle),
    })
    seconds = time.perf_counter() - began
    return {"path": str(writer.path), "num_images": len(source), "class_counts": counts,
            "written_images": total, "seconds": seconds, "complete": manifest is not None, "manifest": manifest}
