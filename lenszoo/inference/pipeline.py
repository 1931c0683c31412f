"""The one way images become rows: ``score(model, inputs, sink)``.

``inputs`` are :class:`~lenszoo.inference.inputs.Chunk` s (``file_chunks`` reads files in worker
processes, ``array_chunks`` takes an array in memory); ``sink`` is anything with
``write(rows)`` taking a :class:`~lenszoo.inference.table.Rows` batch: a :class:`ListSink` (the
Python API), a :class:`~lenszoo.inference.table.RowWriter` (the command line), or a caller's
own. Images are gathered into batches of ``batch_size``, checked against the weights' input
contract (lenszoo/contract.py: each row's ``flags``; ``strict`` leaves flagged images out as
problems), scored, and handed to the sink batch by batch, so a sink that writes each batch
keeps every finished one when the run is killed.
"""

from __future__ import annotations

import numpy as np

from .inputs import InputProblem
from .scorer import Scorer, input_size
from .writer import Rows

STRICT = "flagged --strict: "  # the problem a flagged image is under strict


class ListSink(list):
    """Rows as dicts, in the order scored: the Python API's sink."""

    def write(self, rows: Rows):
        self.extend(rows.dicts())


class _Batch:
    """Images gathered for one forward pass, in a tensor allocated once (page-locked for a GPU,
    so its copy there runs asynchronously), with what each row says besides its scores."""

    def __init__(self, size: int, shape, *, pin=False):
        import torch

        self.images = torch.empty((size, *shape), dtype=torch.float32, pin_memory=pin)
        self.size, self.n = size, 0
        self.sources, self.indices, self.flags = [], [], []

    def add(self, source, images, indices, flags, start: int) -> int:
        """Take images ``start:`` of a chunk, as many as fit; how many were taken."""
        k = min(self.size - self.n, len(indices) - start)
        self.images[self.n:self.n + k].copy_(images[start:start + k])
        self.sources += [source] * k
        self.indices += indices[start:start + k].tolist()
        self.flags += flags[start:start + k]
        self.n += k
        return k

    def clear(self):
        self.n = 0
        self.sources, self.indices, self.flags = [], [], []


class _Writer:
    """Hands each batch's rows to ``sink.write`` in a thread of its own, so formatting, writing and
    syncing one batch overlap the next forward pass. Batches are written in order, one at most
    waits (memory stays bounded); the first error of the sink stops the writing and is raised
    in the caller at its next :meth:`put` or at :meth:`finish`."""

    def __init__(self, sink):
        import queue
        import threading

        self.sink, self.error = sink, None
        self.queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._run, name="lenszoo-rows", daemon=True)
        self.thread.start()

    def _run(self):
        while (rows := self.queue.get()) is not None:
            if self.error is None:  # after an error nothing more is written: no gap in the table
                try:
                    self.sink.write(rows)
                except BaseException as exc:  # noqa: BLE001 -- raised in the caller
                    self.error = exc

    def put(self, rows):
        if self.error is not None:
            raise self.error
        self.queue.put(rows)

    def finish(self, *, check=True):
        """Wait until every batch handed over is written (or the sink failed)."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if check and self.error is not None:
            raise self.error


def _flags(chunk, contract) -> list[list[str]]:
    """Each image's flags against ``contract`` (no contract: none)."""
    if not contract:
        return [[] for _ in range(len(chunk.indices))]
    from ..contract import image_flags

    scales = chunk.stats["pixel_scale"]
    return image_flags(chunk.stats, contract, pixel_scales=None if np.isnan(scales).all() else
                       [None if np.isnan(v) else float(v) for v in scales])


def score(model, inputs, sink, *, tta=False, device="cpu", engine="torch", precision="auto", batch_size=256,
          contract=None, strict=False, on_problem=None, progress=None, scorer=None) -> dict:
    """Score every image ``inputs`` hold into ``sink``; problems go to ``on_problem`` as they are
    found, ``progress(n)`` is called per batch. ``scorer`` (a :class:`Scorer` of ``model``) is
    made from the options when not given. Returns counts: ``images`` scored, ``files`` (chunks)
    read, ``problems``, ``flagged_images`` and ``flagged`` (images flagged, by reason)."""
    scorer = scorer or Scorer(model, tta=tta, device=device, engine=engine, precision=precision)
    counts = {"images": 0, "files": 0, "problems": 0, "flagged_images": 0, "flagged": {}}
    batch = _Batch(batch_size, input_size(model), pin=scorer.device.type == "cuda")
    writer = _Writer(sink)
    try:
        _score(scorer, inputs, batch, writer, counts, contract=contract, strict=strict, on_problem=on_problem,
               progress=progress)
    except BaseException:
        writer.finish(check=False)  # every batch scored before the error is written first
        raise
    writer.finish()
    return counts


def _score(scorer, inputs, batch, writer, counts, *, contract, strict, on_problem, progress):
    """The loop of :func:`score`: chunks in, checked, gathered into ``batch``, scored, rows out."""

    def problem(found):
        counts["problems"] += 1
        if on_problem:
            on_problem(found)

    def emit():
        outputs = scorer(batch.images[:batch.n])
        writer.put(Rows(scorer.task, batch.sources, batch.indices, outputs, [";".join(f) for f in batch.flags],
                        tta=scorer.tta, precision=scorer.precision, model=scorer.name, sha=scorer.sha))
        counts["images"] += batch.n
        if progress:
            progress(batch.n)
        batch.clear()

    for chunk in inputs:
        counts["files"] += 1
        for found in chunk.problems:
            problem(found)
        if chunk.images is None or not len(chunk.indices):
            continue
        images, indices, flags = chunk.images, chunk.indices, _flags(chunk, contract)
        for image_flags in flags:
            counts["flagged_images"] += bool(image_flags)
            for reason in image_flags:
                counts["flagged"][reason] = counts["flagged"].get(reason, 0) + 1
        if strict and any(flags):
            keep = np.array([not f for f in flags], dtype=bool)
            for i in np.flatnonzero(~keep):
                problem(InputProblem(chunk.source, STRICT + ", ".join(flags[i]), int(indices[i])))
            images, indices, flags = images[keep], indices[keep], [f for f in flags if not f]
        start = 0
        while start < len(indices):
            start += batch.add(chunk.source, images, indices, flags, start)
            if batch.n == batch.size:
                emit()
    if batch.n:
        emit()


def flag_summary(counts: dict) -> str | None:
    """One line: how many scored images were flagged, and why (None when none were)."""
    if not counts.get("flagged_images"):
        return None
    from ..contract import FLAG_TEXT

    reasons = "; ".join(f"{reason} {n} ({FLAG_TEXT[reason].split(' (')[0]})"
                        for reason, n in sorted(counts["flagged"].items(), key=lambda kv: -kv[1]))
    return (f"flagged {counts['flagged_images']} images as unlike the weights' training images: {reasons}; "
            "their rows say which in the flags column (--strict skips them); see docs/predict.md, "
            "'Real data', and `lenszoo info ARCH --dataset D` for what the weights expect")
