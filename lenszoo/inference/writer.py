"""Writing the results table: a scored batch's :class:`Rows` (formatted all at once) and the
:class:`RowWriter` that creates a table or continues a checked one (``table.read_table``).

Rows are appended to the output batch by batch as whole lines, flushed to disk per batch, so a
killed job leaves every finished row on disk and ``--resume`` skips them (a line cut off by the
kill is dropped).
"""

from __future__ import annotations

import json
import os
from itertools import repeat
from pathlib import Path

import numpy as np

from ..errors import LenszooError
from ..tasks import CLASS_NAMES
from .options import require_pyarrow
from .table import ENCODING, ERRORS, Table, columns_for, csv_line, read_table, task_of


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
        if name in ("source", "index", "flags"):
            return {"source": self.sources, "index": self.indices, "flags": self.flags}[name]
        return self.scores[name]

    def dicts(self) -> list[dict]:
        columns = columns_for(self.task)
        return [dict(zip(columns, values)) for values in zip(*(self.column(c) for c in columns))]

    def csv_text(self) -> str:
        """The rows as CSV lines, exactly as ``csv.writer`` writes them (quoted where needed)."""
        escaped: dict[str, str] = {}

        def field(text):  # sources repeat through a batch: each is quoted once
            if text not in escaped:
                escaped[text] = csv_line([text])[:-1] if text else ""
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
            first = csv_line(self.columns).encode(ENCODING) + first
        elif not first:
            return False  # JSON lines have no header: the file begins with its first row
        try:
            atomic_create(self.journal, lambda handle: self._write(handle, first))
        except FileExistsError:
            raise LenszooError(f"{self.journal} appeared while this command was scoring; lenszoo never replaces a "
                               "file: choose a new --out") from None
        self.existing = Table(self.journal, task_of(self.columns), [], len(first), len(first))
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
