"""The results table: its columns, a scored batch's rows (formatted all at once), and the
writer that creates, checks and continues a table on disk.

Rows are appended to the output batch by batch as whole lines, flushed to disk per batch, so a
killed job leaves every finished row on disk and ``--resume`` skips them (a line cut off by the
kill is dropped).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from itertools import repeat
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


class Rows:
    """The rows of one scored batch, column by column: formatted for a table all at once, or
    as dicts (the Python API)."""

    def __init__(self, task, sources, indices, outputs, flags, *, tta, precision, model, sha):
        self.task, self.n = task, len(indices)
        self.sources, self.indices, self.flags = list(sources), [int(i) for i in indices], list(flags)
        self.constant = {"tta": bool(tta), "precision": precision, "model": model, "model_sha256": sha}
        outputs = np.asarray(outputs, dtype=np.float64)
        if task == "classify":
            self.scores = {f"p_{name}": column for name, column in zip(CLASS_NAMES, np.round(outputs, 6).T.tolist())}
            self.scores["predicted_class"] = [CLASS_NAMES[k] for k in outputs.argmax(1).tolist()]
        else:
            self.scores = {"log10_m_a": np.round(outputs.reshape(-1), 5).tolist()}

    def __len__(self):
        return self.n

    def column(self, name) -> list:
        if name in self.constant:
            return [self.constant[name]] * self.n
        return {"source": self.sources, "index": self.indices, "flags": self.flags}.get(name) or self.scores[name]

    def dicts(self) -> list[dict]:
        columns = columns_for(self.task)
        return [dict(zip(columns, values)) for values in zip(*(self.column(c) for c in columns))]

    def csv_text(self) -> str:
        """The rows as CSV lines, exactly as ``csv.writer`` writes them (quoted where needed)."""
        escaped: dict[str, str] = {}

        def field(text):  # sources repeat through a batch: each is quoted once
            if text not in escaped:
                escaped[text] = _csv_line([text])[:-1] if text else ""
            return escaped[text]

        fields = []
        for name in columns_for(self.task):
            if name in self.constant:
                value = self.constant[name]
                fields.append(repeat(field(value) if isinstance(value, str) else str(value), self.n))
            elif name in ("source", "flags"):
                fields.append(map(field, self.column(name)))
            else:  # numbers (repr, as csv does) and class names
                fields.append(map(str, self.column(name)))
        return "".join(",".join(values) + "\n" for values in zip(*fields))

    def jsonl_text(self) -> str:
        return "".join(json.dumps(row) + "\n" for row in self.dicts())


def require_pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise LenszooError("Parquet output needs pyarrow, which is not installed: pip install pyarrow, "
                           "or write .csv or .jsonl") from None


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


def _task_of(names) -> str | None:
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
            if line == 1 or _task_of(next(csv.reader([text.split("\n", 1)[0]]), [])) is None:
                raise _not_ours(path, "its first line is not a lenszoo header") from None
            raise _damaged(path, line, why) from None
        if not records:
            raise _not_ours(path, "it has no whole first line")
        task = _task_of(records[0][0])
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
                task = _task_of(names) if names else None
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


def _csv_line(values) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


class RowWriter:
    """The results table of one run, continued or new.

    Making it writes nothing: an existing table is read and checked first (:func:`read_table`),
    and continued only with ``resume`` and, after :meth:`check_same`, only if its rows are of the
    same task, weights, ``--tta`` and precision. The file is created whole with its header and
    first rows (an exclusive rename, so never empty and never over a file that appeared
    meanwhile); rows are then appended as whole lines, flushed to disk per batch. Parquet goes through a CSV
    journal beside it and is written at the end.
    """

    def __init__(self, out, *, fmt, columns=None, resume=False):
        self.out, self.fmt, self.columns = Path(out), fmt, list(columns) if columns else None
        self.handle = None
        self.written = 0
        if fmt == "parquet":
            require_pyarrow()
            self.journal = self.out.with_name(f".{self.out.name}.predict-journal.csv")
            if self.out.exists():
                raise LenszooError(f"{self.out} exists (a finished Parquet table is not extended); choose a new --out")
        else:
            self.journal = self.out
        if self.journal.is_dir():
            raise LenszooError(f"--out {self.out} is a folder; give a file path for the results table")
        if not self.journal.parent.is_dir():
            raise LenszooError(f"--out {self.out}: the folder {self.journal.parent} does not exist; create it or "
                               "choose another --out")
        self.existing = read_table(self.journal, self.journal_format) if self.journal.exists() else None
        if self.existing is not None and not resume:
            raise LenszooError(f"{self.journal} exists (a lenszoo predict table of {len(self.existing.rows)} rows); "
                               "pass --resume to continue it, or choose a new --out (lenszoo never overwrites a file)")
        self.done: dict[str, set[int]] = {}
        for row in self.existing.rows if self.existing else []:
            self.done.setdefault(row["source"], set()).add(row["index"])
        if self.columns is not None:
            self._check_columns(self.columns)

    @property
    def journal_format(self):
        return "csv" if self.fmt == "parquet" else self.fmt

    @property
    def rows(self) -> int:
        """Rows in the table now."""
        return (len(self.existing.rows) if self.existing else 0) + self.written

    def _check_columns(self, columns):
        if self.existing is not None and columns_for(self.existing.task) != list(columns):
            raise LenszooError(f"{self.journal} is a lenszoo predict table of another task ({self.existing.task}: "
                               "its columns differ); choose a new --out")
        self.columns = list(columns)

    def check_same(self, sha: str, tta: bool, precision: str, columns=None):
        """Refuse to continue a table holding rows of another task, other weights, another --tta
        or another precision."""
        if columns is not None:
            self._check_columns(columns)
        rows = self.existing.rows if self.existing else []
        other = sorted({row["model_sha256"] for row in rows} - {sha})
        if other:
            raise LenszooError(f"{self.journal} holds rows of another model (weights sha256 {other[0][:12] or 'none'}); "
                               "resume with the same model, or choose a new --out")
        if any(row["tta"] != tta for row in rows):
            raise LenszooError(f"{self.journal} was written {'without' if tta else 'with'} --tta; resume with the "
                               "same setting, or choose a new --out")
        other = sorted({row["precision"] for row in rows} - {precision})
        if other:
            raise LenszooError(f"{self.journal} holds rows scored in {other[0]}, this run scores in {precision}; resume "
                               f"with --precision {other[0]}, or choose a new --out")

    def _encode(self, rows: Rows) -> bytes:
        text = rows.csv_text() if self.journal_format == "csv" else rows.jsonl_text()
        return text.encode(ENCODING, ERRORS)

    def _write(self, handle, data: bytes):
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())

    def _open(self, first: bytes = b"") -> bool:
        """Make the file writable: a new one created whole with ``first`` (CSV: after the header),
        or an existing one with the line a kill cut off dropped. True if ``first`` was written."""
        from ..files import atomic_create

        if self.columns is None:
            raise ValueError("RowWriter needs its columns (check_same(..., columns=)) before it writes")
        if self.existing is not None:
            size = os.stat(self.journal).st_size
            if size != self.existing.size:
                raise LenszooError(f"{self.journal} changed while this command read it; is another program writing "
                                   "it? Choose a new --out")
            if self.existing.keep < size:  # checked above: everything before it is lenszoo's
                os.truncate(self.journal, self.existing.keep)
            self.handle = open(self.journal, "ab")
            return False
        if self.journal_format == "csv":
            first = _csv_line(self.columns).encode(ENCODING) + first
        elif not first:
            return False  # JSON lines have no header: the file begins with its first row
        try:
            atomic_create(self.journal, lambda handle: self._write(handle, first))
        except FileExistsError:
            raise LenszooError(f"{self.journal} appeared while this command was scoring; lenszoo never replaces a "
                               "file: choose a new --out") from None
        self.existing = Table(self.journal, _task_of(self.columns), [], len(first), len(first))
        self.handle = open(self.journal, "ab")
        return True

    def write(self, rows: Rows):
        """Append one batch's rows as whole lines, on disk when this returns."""
        if not len(rows):
            return
        data = self._encode(rows)
        if self.handle is not None or not self._open(data):
            self._write(self.handle, data)
        self.written += len(rows)

    def abort(self):
        """Stop without finishing: every row written so far stays, and --resume continues."""
        if self.handle is not None:
            self.handle.close()

    def close(self):
        """Finish the table (Parquet: written from the journal now). A JSON lines table that got
        no rows is not created."""
        from ..files import atomic_create

        if self.handle is None:
            self._open()
        self.abort()
        if self.fmt == "parquet":
            import pyarrow.csv as pa_csv
            import pyarrow.parquet as pq

            table = pa_csv.read_csv(self.journal)
            try:
                atomic_create(self.out, lambda handle: pq.write_table(table, handle))
            except FileExistsError:
                raise LenszooError(f"{self.out} appeared while this command was scoring; lenszoo never replaces a "
                                   f"file: the rows are kept in {self.journal}") from None
            self.journal.unlink()


