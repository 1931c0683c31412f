"""Markdown tables: one implementation for the results page, ``lenszoo report`` and the docs'
tables of config keys."""

from __future__ import annotations


def cell(value) -> str:
    """``value`` as one Markdown table cell: a ``|`` (in a name from a results file, say) escaped and a
    line break made a space, either of which would otherwise end the cell or the table."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def table(headers, rows) -> str:
    """A Markdown table: a header row, the ``---`` rule, then one line per row of cells."""
    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)
