"""The marked block of a Markdown page that a benchmark writes from its kept record.

A page holds ``BEGIN`` ... ``END`` comment lines; a benchmark replaces what lies between them with
the table it renders from its record, so the figures on the page are never typed by hand
(tests/test_benchmark_records.py renders each kept record again and compares).
"""

from __future__ import annotations

from pathlib import Path


def read_block(path: Path, begin: str, end: str) -> str:
    """The text between ``begin`` and ``end`` in ``path`` (stripped)."""
    page = Path(path).read_text(encoding="utf-8")
    if begin not in page or end not in page:
        raise SystemExit(f"{path} has no {begin} ... {end} block; add the two lines where the table goes")
    return page.split(begin, 1)[1].split(end, 1)[0].strip()


def write_block(path: Path, begin: str, end: str, text: str) -> None:
    """Replace the block between ``begin`` and ``end`` in ``path`` with ``text`` (atomically)."""
    from lenszoo.files import atomic_write_text

    read_block(path, begin, end)  # refuse a page without the block before writing anything
    page = Path(path).read_text(encoding="utf-8")
    head, rest = page.split(begin, 1)
    tail = rest.split(end, 1)[1]
    atomic_write_text(Path(path), f"{head}{begin}\n{text}\n{end}{tail}")
