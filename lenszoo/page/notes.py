"""The notes file of a results page (``--notes``), split into sections placed under the tables they read.

A section is a ``## NAME`` heading and the text below it. NAME is the key of one of the page's
sections (``classification``, ``claim``, ``learning curves``, ...: ``report_page.SECTIONS``) and
its text is printed under that table; a section under any other heading follows the tables, in
the file's order, under its own heading (experiments outside the tables). Text before the first
heading would have no table to sit under and is refused.

A passage whose figures have no kept evaluation record sits between ``<!-- unrecorded -->`` and
``<!-- /unrecorded -->`` lines and opens with a visible ``*No kept record`` note, so a reader
sees which figures cannot be reproduced (the figure check in tests/test_results_page.py skips
only such passages).
"""

from __future__ import annotations

import re

from ..errors import LenszooError

HEADING = re.compile(r"^## +(?P<name>\S.*?)\s*$")
UNRECORDED_BEGIN = "<!-- unrecorded -->"
UNRECORDED_END = "<!-- /unrecorded -->"
UNRECORDED_NOTE = "*No kept record"


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def split_notes(text: str, keys, where: str = "--notes") -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(text per page section key, [(heading, text)] of the other sections in file order)."""
    keys = {_key(k): k for k in keys}
    placed: dict[str, str] = {}
    others: list[tuple[str, str]] = []
    heading, lines, fence = None, [], False

    def close():
        body = "\n".join(lines).strip()
        if heading is None:
            if body:
                raise LenszooError(f"{where} has text before its first '## SECTION' heading; put each paragraph under "
                                   f"the heading of the table it reads ({', '.join(sorted(keys.values()))}) or a "
                                   "heading of its own")
            return
        known = keys.get(_key(heading))
        if known is None:
            others.append((heading, body))
        elif known in placed:
            raise LenszooError(f"{where} has two '## {heading}' sections; merge them")
        else:
            placed[known] = body

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        match = None if fence else HEADING.match(line)
        if match:
            close()
            heading, lines = match["name"], []
        else:
            lines.append(line)
    close()
    return placed, others


def unrecorded_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the passages marked as having no kept record."""
    spans = []
    for begin in re.finditer(re.escape(UNRECORDED_BEGIN), text):
        end = text.find(UNRECORDED_END, begin.end())
        spans.append((begin.start(), len(text) if end < 0 else end + len(UNRECORDED_END)))
    return spans
