"""Checks of architecture options, shared by the built-in entry points (no torch needed)."""

from __future__ import annotations

import importlib

from ..errors import LenszooError


def lazy_attributes(module: str, package: str):
    """A module ``__getattr__`` that finds names in the family module ``module`` (imported on first
    use), so an entry point stays torch-free while ``from entry import SomeLayer`` keeps working."""

    def __getattr__(name):
        family = importlib.import_module(module, package)
        if hasattr(family, name):
            return getattr(family, name)
        raise AttributeError(f"module {package}{module} has no attribute {name!r}")

    return __getattr__


def check_options(arch: str, options: dict, defaults: dict) -> dict:
    """``defaults`` updated with ``options``; an unknown option name is a user error."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise LenszooError(
            f"{arch} has no option {', '.join(map(repr, unknown))}; "
            f"use one of: {', '.join(sorted(defaults))} (see `lenszoo info {arch}`)"
        )
    return {**defaults, **options}


def positive_int(arch: str, name: str, value) -> int:
    """``value`` if it is a positive int, else a one-line error naming the option."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LenszooError(f"{arch} option {name}={value!r} is invalid; give a positive integer")
    return value


def positive_ints(arch: str, name: str, value, length: int | None = None) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of positive ints, or a one-line error naming the option."""
    items = (value,) if isinstance(value, int) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    ok = (
        items is not None
        and len(items) > 0
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items)
        and (length is None or len(items) == length)
    )
    if not ok:
        count = f"{length} " if length is not None else "a list of "
        raise LenszooError(f"{arch} option {name}={value!r} is invalid; give {count}positive integers")
    return items
