"""Every key of a simulator's config with its type, its allowed range, unit and meaning.

Each generator module declares its keys (``lensing.CONFIG_KEYS``, ``matched.CONFIG_KEYS``) with
the classes here, and those lists are the one source of truth for two things: the checks a generator runs on its
config before it renders anything (``check_config``: a value of the wrong type, outside its
range or beyond its upper bound is a one-line error naming the key), and the tables of keys in
``docs/datasets.md`` (``keys_table``; ``config_docs.py`` puts them there and
``tests/test_bad_input_config.py`` keeps the two equal).

Ranges are physically sensible and bounded above on purpose: a config is often typed by hand
(``lenszoo simulate --set``), and an exposure of 0 s, a negative mass or a million-fold
supersampling would otherwise give NaN images, noise-only "lenses" or a job that never ends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import LenszooError

KINDS = ("int", "number", "pair", "choice", "text")
_MAX_TEXT = 500  # characters of a free-text key (a description)


@dataclass(frozen=True)
class Key:
    """One config key: ``name`` is its dotted path (``instrument.band.exposure_time``).

    ``kind`` is ``int`` (a whole number), ``number`` (a finite real), ``pair`` (``[low, high]``
    of numbers, low <= high), ``choice`` (one of ``choices``) or ``text``; ``low`` and ``high``
    bound an ``int``, a ``number`` and both ends of a ``pair`` (inclusive)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    unit: str = ""
    meaning: str = ""
    choices: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"config key {self.name}: kind must be one of {KINDS}")
        if self.kind in ("int", "number", "pair") and not (self.low is not None and self.high is not None
                                                          and self.low <= self.high):
            raise ValueError(f"config key {self.name}: a numeric key needs low <= high")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"config key {self.name}: a choice needs its choices")

    def allowed(self) -> str:
        """What the key accepts, as the docs' table says it."""
        if self.kind == "int":
            return f"whole number {_number(self.low)} … {_number(self.high)}"
        if self.kind == "number":
            return f"{_number(self.low)} … {_number(self.high)}"
        if self.kind == "pair":
            return f"[low, high], {_number(self.low)} ≤ low ≤ high ≤ {_number(self.high)}"
        if self.kind == "choice":
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        return f"text (at most {_MAX_TEXT} characters)"

    def expected(self) -> str:
        """What the key accepts, as an error message says it."""
        unit = f" ({self.unit})" if self.unit else ""
        if self.kind == "int":
            return f"a whole number from {_number(self.low)} to {_number(self.high)}{unit}"
        if self.kind == "number":
            return f"a number from {_number(self.low)} to {_number(self.high)}{unit}"
        if self.kind == "pair":
            return f"[low, high] with {_number(self.low)} <= low <= high <= {_number(self.high)}{unit}"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return f"text of at most {_MAX_TEXT} characters"

    def problem(self, value) -> str | None:
        """Why ``value`` is not allowed here, or None."""
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return "is not a whole number"
            return None if self.low <= value <= self.high else "is out of range"
        if self.kind == "number":
            if not _is_number(value):
                return "is not a finite number"
            return None if self.low <= value <= self.high else "is out of range"
        if self.kind == "pair":
            if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value))):
                return "is not a pair [low, high] of finite numbers"
            low, high = value
            if low > high:
                return "has low > high"
            return None if self.low <= low and high <= self.high else "is out of range"
        if self.kind == "choice":
            return None if isinstance(value, str) and value in self.choices else "is not allowed"
        if not isinstance(value, str):
            return "is not text"
        return None if len(value) <= _MAX_TEXT else f"is longer than {_MAX_TEXT} characters"


@dataclass(frozen=True)
class Rule:
    """A condition between keys (``text`` says it, in the docs and in the error)."""

    text: str
    holds: Callable[[dict], bool]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:g}")  # 1e+06 -> 1e6, 3e-24 stays


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def value_at(config: dict, name: str):
    node = config
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(name)
        node = node[part]
    return node


def leaves(config: dict, prefix: str = "") -> list[str]:
    """Dotted names of every value in ``config`` that is not a section."""
    names = []
    for key, value in config.items():
        if isinstance(value, dict):
            names += leaves(value, f"{prefix}{key}.")
        else:
            names.append(f"{prefix}{key}")
    return names


def check_config(config: dict, keys: tuple[Key, ...], rules: tuple[Rule, ...] = ()) -> None:
    """A one-line ``LenszooError`` for the first key of ``config`` of the wrong type, outside its
    range, missing or undeclared, else for the first rule that does not hold."""
    def fail(message):
        raise LenszooError(f"invalid dataset config: {message}")

    declared = {key.name for key in keys}
    for key in keys:
        try:
            value = value_at(config, key.name)
        except KeyError:
            fail(f"{key.name} is missing")
        problem = key.problem(value)
        if problem:
            fail(f"{key.name}={_show(value)} {problem}: give {key.expected()} (docs/datasets.md lists every key)")
    undeclared = [name for name in leaves(config) if name not in declared]
    if undeclared:  # a key added to a default config without its range: the generator's bug, not the user's
        fail(f"{undeclared[0]} has no declared type and range (lenszoo.data.config_keys); report this")
    for rule in rules:
        if not rule.holds(config):
            fail(f"need {rule.text}")


# -- the docs' tables --------------------------------------------------------------------------------
def _cell(value) -> str:
    if isinstance(value, str):
        return f"`{value}`" if len(value) <= 20 else "(text)"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    return _number(value)


def keys_table(keys: tuple[Key, ...], defaults: dict[str, dict], rules: tuple[Rule, ...] = ()) -> str:
    """The docs' table of ``keys``: name, allowed values, unit, each dataset's default (``defaults``
    maps dataset names to their configs) and meaning; then the rules between keys."""
    from ..markdown import table

    rows = [[f"`{key.name}`", key.allowed(), key.unit or "—",
             *(_cell(value_at(config, key.name)) for config in defaults.values()), key.meaning] for key in keys]
    lines = [table(["key", "allowed", "unit", *defaults, "meaning"], rows)]
    if rules:
        lines += ["", "Also: " + "; ".join(rule.text for rule in rules) + "."]
    return "\n".join(lines)
