"""What gets scored: files found on disk or an array in memory, read, checked and measured into
:class:`Chunk` s, the one form the pipeline (``pipeline.score``) takes.

A survey does not stop for one bad file: every file (or image inside a file) that cannot be
scored becomes an :class:`InputProblem` naming it and the reason, and the rest are scored.
Files are read in worker processes (``file_chunks``); their images travel back as torch tensors,
which cross the process boundary through shared memory instead of being pickled.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .options import RESIZE_METHODS
from .readers import READ, Refused, as_stack, input_kind, is_tensor, numeric, read_images, short

INPUT_SIZE = (64, 64)  # what a model takes unless its config says otherwise
RESIZE_CHUNK_PIXELS = 1 << 20  # input + output pixels resampled at once (4 MiB of float32)
NON_FINITE = "has NaN or infinite pixels; mask or fill them to score it"


@dataclass(frozen=True)
class InputProblem:
    source: str
    reason: str
    index: int | None = None

    @property
    def where(self) -> str:
        return self.source if self.index is None else f"{self.source}[{self.index}]"

    def __str__(self):
        return f"{self.where}: {self.reason}"


class SkipReport:
    """The inputs a run did not score, told as ``skipped ...`` lines: by default one line per
    reason when the run ends (150 files with the same flaw are one line, naming the first few),
    or with ``each`` one line per input as it is found."""

    def __init__(self, echo, *, each: bool = False):
        self.echo, self.each = echo, each
        self.by_reason: dict[str, list[InputProblem]] = {}

    def __len__(self):
        return sum(map(len, self.by_reason.values()))

    def add(self, problem: InputProblem):
        self.by_reason.setdefault(problem.reason, []).append(problem)
        if self.each:
            self.echo(f"skipped {problem}")

    def lines(self) -> list[str]:
        lines = []
        for reason, problems in self.by_reason.items():
            if len(problems) == 1:
                lines.append(f"skipped {problems[0]}")
                continue
            files = len({p.source for p in problems})
            what = f"{len(problems)} files" if all(p.index is None for p in problems) else \
                f"{len(problems)} images in {files} file{'s' if files > 1 else ''}"
            shown = problems if len(problems) <= 3 else problems[:2]
            names = ", ".join(p.where for p in shown)
            if len(shown) < len(problems):
                names += f" and {len(problems) - len(shown)} more; --list-skipped names each"
            lines.append(f"skipped {what} ({names}): {reason}")
        return lines

    def summarise(self):
        """The per-reason lines (nothing more with ``each``: every input was named already)."""
        if not self.each:
            for line in self.lines():
                self.echo(line)


def find_inputs(inputs) -> tuple[list[str], list[InputProblem]]:
    """The image files named by ``inputs`` (files, or folders searched recursively for
    .fits/.fits.gz/.fits.fz/.npy/.png), in a stable order, and a problem for each input that is none."""
    files, problems, seen = [], [], set()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and input_kind(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                problems.append(InputProblem(str(item), f"folder holds no {READ} files"))
            candidates = [str(p) for p in found]
        elif path.is_file():
            if input_kind(path) is None:
                problems.append(InputProblem(str(item), f"not a file type lenszoo reads ({READ})"))
                continue
            candidates = [str(item)]
        else:
            problems.append(InputProblem(str(item), "does not exist"))
            continue
        for name in candidates:
            key = os.path.realpath(name)
            if key not in seen:
                seen.add(key)
                files.append(name)
    return files, problems


def fit_size(images: np.ndarray, resize: str | None, size=INPUT_SIZE) -> np.ndarray:
    """``images`` at the model's ``size``, resampled only if asked (``resize`` names the method)."""
    size = tuple(size)
    height, width = images.shape[-2:]
    if (height, width) == size:
        return images
    if resize is None:
        raise Refused(f"images are {height}×{width}; the model takes {size[0]}×{size[1]}: cut {size[0]}×{size[1]} "
                      f"cutouts, or pass --resize {'|'.join(RESIZE_METHODS)} to resample (the pixel scale then "
                      "changes)")
    import torch
    import torch.nn.functional as F

    kwargs = {"antialias": True, "align_corners": False} if resize in ("bilinear", "bicubic") else {}
    # A few images at a time into the result: interpolate's temporaries for a whole stack cost
    # several times the stack (a compressed file can hold many thousands of images).
    out = np.empty((len(images), *size), dtype=np.float32)
    step = max(1, RESIZE_CHUNK_PIXELS // (height * width + size[0] * size[1]))
    with torch.inference_mode():
        for start in range(0, len(images), step):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + step], dtype=np.float32))[:, None]
            out[start:start + step] = F.interpolate(chunk, size=size, mode=resize, **kwargs)[:, 0].numpy()
    return out


class Chunk(NamedTuple):
    """What one input gave: the images to score (a float32 ``(n, H, W)`` tensor, or None), their
    positions in the input, the problems found (unreadable, non-finite pixels), and the
    per-image statistics the contract checks take (``contract.image_statistics``, plus
    ``pixel_scale``: NaN where the input states none)."""

    source: str
    images: object
    indices: np.ndarray
    problems: list
    stats: dict | None


def checked_chunk(source: str, images: np.ndarray, *, done=None, pixel_scale=None) -> Chunk:
    """``images`` (already at the model's size) less those with non-finite pixels and those in ``done``
    (indices already scored), measured for the contract checks."""
    import torch

    from ..contract import image_statistics

    indices = np.arange(len(images))
    finite = np.isfinite(images).all(axis=(1, 2))
    problems = [InputProblem(source, NON_FINITE, int(i)) for i in np.flatnonzero(~finite)]
    keep = finite
    if done:
        keep = keep & ~np.isin(indices, np.fromiter(done, dtype=np.int64))
    if not keep.all():
        images = images[keep]
    # Measured here, in the reading workers: the checks against the weights' contract cost the
    # scoring process nothing but a comparison.
    stats = None
    if len(images):
        stats = image_statistics(images)
        stats["pixel_scale"] = np.full(len(images), np.nan if pixel_scale is None else pixel_scale)
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return Chunk(source, tensor, indices[keep], problems, stats)


class FileReader:
    """Reads one file into a :class:`Chunk`: a map-style dataset, so torch's DataLoader can read
    files in worker processes while the main process scores."""

    def __init__(self, files, *, hdu=None, resize=None, skip=None, size=INPUT_SIZE):
        self.files, self.hdu, self.resize, self.size = list(files), hdu, resize, tuple(size)
        self.skip = skip or {}  # source -> indices already in the output

    def __len__(self):
        return len(self.files)

    def __getitem__(self, position) -> Chunk:
        source, info = self.files[position], {}
        try:
            raw = read_images(source, hdu=self.hdu, info=info)
            images = fit_size(raw, self.resize, self.size)
        except Refused as exc:
            return Chunk(source, None, None, [InputProblem(source, str(exc))], None)
        except MemoryError:
            return Chunk(source, None, None, [InputProblem(source, "too large to resample in this machine's memory; "
                                                                    "split it into smaller files")], None)
        scale = info.get("pixel_scale")  # a resampled image's pixels are larger by the ratio of sizes
        return checked_chunk(source, images, done=self.skip.get(source),
                             pixel_scale=None if scale is None else scale * raw.shape[-1] / self.size[1])


def _first(item):
    return item


def _reading_worker(parent: int, worker_id: int):
    from ..runtime import end_with_parent

    end_with_parent(parent)  # a killed predict takes its readers with it
    # One thread per reader, as torch sets for its own ops here: a BLAS pool of its own in each
    # reader would contend with the scoring process's threads for the same cores.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def file_chunks(files, *, workers=0, hdu=None, resize=None, skip=None, size=INPUT_SIZE, prefetch=4):
    """The :class:`Chunk` of each file in order, read by ``workers`` processes (0: here) that
    keep up to ``prefetch`` files each read ahead of the scoring."""
    from torch.utils.data import DataLoader

    reader = FileReader(files, hdu=hdu, resize=resize, skip=skip, size=size)
    return DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_first,
                      prefetch_factor=prefetch if workers else None, persistent_workers=False,
                      worker_init_fn=functools.partial(_reading_worker, os.getpid()) if workers else None)


def array_images(array, *, resize=None, size=INPUT_SIZE) -> np.ndarray:
    """An in-memory array or tensor of images as a float32 ``(N, H, W)`` stack at ``size``; a
    ``LenszooError`` when it cannot be one (the whole array is the input: nothing else to score)."""
    from ..errors import LenszooError

    if is_tensor(array):
        array = _tensor_array(array)
    try:
        return fit_size(as_stack(numeric(array)), resize, size)
    except Refused as exc:
        raise LenszooError(f"the images: {exc}") from None


def array_chunks(images: np.ndarray, *, source="array", step=4096):
    """``images`` (from :func:`array_images`) as chunks of ``step`` images: indices run over the
    whole array, so rows and problems name each image's position in it."""
    for start in range(0, len(images), step):
        chunk = checked_chunk(source, images[start:start + step])
        yield chunk._replace(indices=chunk.indices + start,
                             problems=[InputProblem(p.source, p.reason, p.index + start) for p in chunk.problems])


def _tensor_array(tensor) -> np.ndarray:
    import torch

    from ..errors import LenszooError

    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as exc:
        raise LenszooError(f"the images: a {tensor.dtype} tensor cannot be read ({short(exc)}); pass float32 "
                           "images") from None
