"""The tables of config keys in ``docs/datasets.md``, made from the generator modules' own lists
(``lensing_config.CONFIG_KEYS``, ``matched_config.CONFIG_KEYS``) with ``config_keys.keys_table``:
``rewrite_docs("docs/datasets.md")`` rewrites them; ``tests/test_bad_input_config.py`` keeps them
equal to the code."""

from __future__ import annotations

import re

from . import lensing_config as lensing, matched_config as matched
from .config_keys import keys_table


def docs_tables() -> dict[str, str]:
    """Each generator family's table, by the name its block in docs/datasets.md carries."""
    return {
        "lensing": keys_table(lensing.CONFIG_KEYS, {n: lensing.default_config(n) for n in ("A", "B")},
                              lensing.CONFIG_RULES),
        "matched": keys_table(matched.CONFIG_KEYS, {n: matched.default_config(n) for n in ("C-euclid", "C-hst")},
                              matched.CONFIG_RULES),
    }


BLOCK = re.compile(r"(<!-- config keys: (?P<name>[\w-]+) -->\n)(?P<body>(?:(?!<!-- ).)*?)(\n?<!-- end config keys -->)",
                   re.S)


def docs_blocks(text: str) -> dict[str, str]:
    """The tables between ``<!-- config keys: NAME -->`` and ``<!-- end config keys -->`` in ``text``."""
    return {match["name"]: match["body"] for match in BLOCK.finditer(text)}


def rewrite_docs(path) -> None:
    """Rewrite the tables of keys in the Markdown file ``path`` (docs/datasets.md) from the code."""
    from pathlib import Path

    path = Path(path)
    tables = docs_tables()
    text = BLOCK.sub(lambda m: m.group(1) + tables[m["name"]] + "\n<!-- end config keys -->", path.read_text(encoding="utf-8"))
    path.write_text(text, encoding="utf-8")
