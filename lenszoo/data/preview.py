"""A PNG grid of sample images: one row per class, axion panels titled with log10 m_a."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ..errors import LenszooError
from .normalization import normalize
from ..files import atomic_write


def preview_samples(generator, split: str, *, seed: int = 0, noise: bool = True, per_class: int = 6):
    """{class: [(image, meta), ...]}: the first ``per_class`` images of each class of the stream,
    the same images ``lenszoo simulate`` stores at those indices."""
    classes = list(generator.class_names)
    samples = {name: [] for name in classes}
    for label, name in enumerate(classes):
        for j in range(per_class):
            samples[name].append(generator.simulate(split, label + j * len(classes), seed, noise=noise))
    return samples


PNG_SOFTWARE = "lenszoo preview"  # a tEXt chunk: how a later run knows the file is its own


def is_preview_file(path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"Software\x00" + PNG_SOFTWARE.encode() in head


def check_preview_path(path) -> Path:
    from ..files import claim_output

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LenszooError(f"--preview writes a PNG; give a path ending in .png, not {path.name!r}")
    if not path.parent.is_dir():
        raise LenszooError(f"--preview: folder {path.parent} does not exist; create it first")
    return claim_output(path, what="lenszoo preview", is_ours=is_preview_file, option="--preview", kind="file")


def preview_figure(generator, split: str, *, seed: int = 0, noise: bool = True, per_class: int = 6):
    """The preview grid as a matplotlib Figure: a row per class; each axion panel is captioned
    below its own image with its log10 m_a."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples = preview_samples(generator, split, seed=seed, noise=noise, per_class=per_class)
    rows = len(samples)
    figure = Figure(figsize=(1.6 * per_class, 1.75 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, per_class, squeeze=False)
    for r, (class_name, items) in enumerate(samples.items()):
        for c, (image, meta) in enumerate(items):
            ax = axes[r][c]
            ax.imshow(normalize(image), cmap="inferno", vmin=0, vmax=1, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            log10_mass = meta.get("log10_axion_mass", math.nan)
            if np.isfinite(log10_mass):  # below the panel: a title would sit under the row above
                ax.set_xlabel(f"log10 m_a = {log10_mass:.2f}", fontsize=7)
            if c == 0:
                ax.set_ylabel(class_name, fontsize=10)
    noise_text = "noise" if noise else "no noise"
    figure.suptitle(f"dataset {generator.name}, split {split}, seed {seed}, {noise_text}", fontsize=10)
    figure.tight_layout()
    return figure


def save_preview(generator, path, split: str, *, seed: int = 0, noise: bool = True, per_class: int = 6) -> Path:
    """Write the preview grid of ``split`` to ``path`` (PNG, written atomically)."""
    path = check_preview_path(path)
    figure = preview_figure(generator, split, seed=seed, noise=noise, per_class=per_class)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": PNG_SOFTWARE})
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    return path
