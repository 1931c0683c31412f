"""The results table: its columns, and an existing table read back and checked whole before
anything continues it (``--resume``) or merges it (torchrun parts). Writing: ``writer.py``."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LenszooError
from ..tasks import CLASS_NAMES, TASKS

SCORE_PRECISIONS = ("fp32", "bf16")  # what a row's precision column may say


def columns_for(task: str) -> list[str]:
    scores = [f"p_{name}" for name in CLASS_NAMES] + ["predicted_class"] if task == "classify" else ["log10_m_a"]
    return ["source", "index", *scores, "flags", "tta", "precision", "model", "model_sha256"]


# The columns of tables earlier lenszoo versions wrote, by what they lack: continuing one would
# mix rows of two layouts, so it is refused naming the column.
_LEGACY = {"the flags column": ("flags", "precision"), "the precision column": ("precision",)}


def _legacy(names) -> str | None:
    for missing, dropped in _LEGACY.items():
        if any(list(names or []) == [c for c in columns_for(task) if c not in dropped] for task in TASKS):
            return missing
    return None


# Paths are written as the file system gives them: bytes that are not UTF-8 round-trip.
ENCODING, ERRORS = "utf-8", "surrogateescape"
SHA256_RE = re.compile(r"(?:[0-9a-f]{64})?")


@dataclass
class Table:
    """An existing results table, read and checked whole: its task, its rows (typed), and
    ``keep``, the bytes of whole rows; beyond it (up to ``size``) lies the line a kill cut off."""

    path: Path
    task: str
    rows: list
    keep: int
    size: int


def _not_ours(path, why) -> LenszooError:
    return LenszooError(f"{path} is not a lenszoo predict table ({why}); lenszoo never changes it: choose another "
                        "--out")


def _damaged(path, line, why) -> LenszooError:
    return LenszooError(f"{path} line {line} is not a whole row lenszoo wrote ({why}); the table is left as it is: "
                        "remove that line, or choose a new --out")


def task_of(names) -> str | None:
    return next((task for task in TASKS if list(names) == columns_for(task)), None)


def _typed_row(values: dict, columns, *, text: bool) -> dict:
    """``values`` (strings from CSV with ``text``, else JSON values) checked against what
    :func:`rows_for` writes; raises ValueError naming what is wrong."""
    row = {}
    for name in columns:
        value = values[name]
        if name in ("source", "model"):
            if not isinstance(value, str) or (name == "source" and not value):
                raise ValueError(f"{name} {value!r}")
        elif name == "index":
            if text:
                if not (value.isascii() and value.isdigit()):
                    raise ValueError(f"index {value!r} is not a whole number")
                value = int(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"index {value!r} is not a whole number")
        elif name == "tta":
            if text:
                if value not in ("True", "False"):
                    raise ValueError(f"tta {value!r}")
                value = value == "True"
            elif not isinstance(value, bool):
                raise ValueError(f"tta {value!r}")
        elif name == "precision":
            if value not in SCORE_PRECISIONS:
                raise ValueError(f"precision {value!r}")
        elif name == "predicted_class":
            if value not in CLASS_NAMES:
                raise ValueError(f"predicted_class {value!r}")
        elif name == "flags":
            from ..contract import FLAG_TEXT

            if not isinstance(value, str) or any(f not in FLAG_TEXT for f in value.split(";") if value):
                raise ValueError(f"flags {value!r}")
        elif name == "model_sha256":
            if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
                raise ValueError(f"model_sha256 {value!r} is not a sha256")
        else:  # p_* and log10_m_a
            try:
                if isinstance(value, bool) or not isinstance(value, str if text else (int, float)):
                    raise ValueError
                value = float(value)
            except ValueError:
                raise ValueError(f"{name} {value!r} is not a number") from None
            if not np.isfinite(value):
                raise ValueError(f"{name} {value!r} is not finite")
        row[name] = value
    return row


def _csv_records(text: str):
    """``(fields, line)`` for each whole record of ``text``, and the offset where the line a kill
    cut off starts (the text after the last newline), else ``None``. A record that runs past a
    newline and is not finished (a cut inside a quoted name) is damage, never cut away: dropping
    it could drop whole rows after it."""
    lines = io.StringIO(text, newline="").readlines()
    position = 0

    def fed():
        nonlocal position
        for line in lines:
            position += len(line)
            yield line

    reader = csv.reader(fed(), strict=True)
    records, start = [], 0
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return records, None
        except csv.Error as exc:
            at_end = position == len(text) and text[start:].count('"') % 2 == 1  # EOF inside quotes
            if at_end and "\n" not in text[start:]:
                return records, start
            raise ValueError(line, "a quoted name is cut off" if at_end else str(exc)) from None
        if position == len(text) and not text.endswith("\n"):
            if "\n" in text[start:]:
                raise ValueError(line, "a quoted name is cut off")
            return records, start
        records.append((fields, line))
        start = position


def read_table(path, fmt: str) -> Table:
    """Read and check ``path`` as a lenszoo predict table (CSV or JSON lines) without changing it.

    Refused in one line: a file whose header (or first row) is not lenszoo's, or any whole row that
    is not one lenszoo wrote (a short row, a non-integer index, a cut inside a quoted name that a
    later row follows...). Only the last, unterminated line may be cut: that is what a kill leaves.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise _not_ours(path, "it is empty, and lenszoo creates its tables whole")
    text = data.decode(ENCODING, ERRORS)
    rows = []
    if fmt == "csv":
        try:
            records, cut = _csv_records(text)
        except ValueError as exc:  # a quote out of place: ours only if the header was
            line, why = exc.args
            if line == 1 or task_of(next(csv.reader([text.split("\n", 1)[0]]), [])) is None:
                raise _not_ours(path, "its first line is not a lenszoo header") from None
            raise _damaged(path, line, why) from None
        if not records:
            raise _not_ours(path, "it has no whole first line")
        task = task_of(records[0][0])
        if task is None and _legacy(records[0][0]):
            raise _not_ours(path, f"it was written by an earlier lenszoo (without {_legacy(records[0][0])})")
        if task is None:
            raise _not_ours(path, "its first line is not a lenszoo header")
        columns = columns_for(task)
        for fields, line in records[1:]:
            if len(fields) != len(columns):
                raise _damaged(path, line, f"{len(fields)} fields, a row has {len(columns)}")
            try:
                rows.append(_typed_row(dict(zip(columns, fields)), columns, text=True))
            except ValueError as exc:
                raise _damaged(path, line, str(exc)) from None
        keep = len(text) if cut is None else cut
    else:
        keep = text.rfind("\n") + 1
        task = None
        for number, line in enumerate(text[:keep].split("\n")[:-1], start=1):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            names = list(row) if isinstance(row, dict) else None
            if task is None:
                task = task_of(names) if names else None
                if task is None and _legacy(names):
                    raise _not_ours(path, f"it was written by an earlier lenszoo (without {_legacy(names)})")
                if task is None:
                    raise _not_ours(path, "its first line is not a lenszoo row")
                columns = columns_for(task)
            if names != columns:
                raise _damaged(path, number, "not a JSON row of the table's columns")
            try:
                rows.append(_typed_row(row, columns, text=False))
            except ValueError as exc:
                raise _damaged(path, number, str(exc)) from None
        if task is None:
            raise _not_ours(path, "it has no whole first line")
    keep_bytes = len(text[:keep].encode(ENCODING, ERRORS))
    return Table(path, task, rows, keep_bytes, len(data))


def csv_line(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()
