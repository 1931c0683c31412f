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


# Upper bounds of the built-in architectures' size options: far above any useful network on
# 64x64 lenses, low enough that the model (and the zero batch it is checked on) fits in memory.
# ``lenszoo.specs.MAX_PARAMETERS`` bounds the whole model as well.
MAX_WIDTH = 1024  # channels or fields of one convolution layer
MAX_HIDDEN = 8192  # units of one dense layer
MAX_LAYERS = 32  # entries of a per-layer list


def positive_int(arch: str, name: str, value, maximum: int | None = None) -> int:
    """``value`` if it is a positive int (at most ``maximum``), else a one-line error naming the option."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LenszooError(f"{arch} option {name}={value!r} is invalid; give a positive integer")
    if maximum is not None and value > maximum:
        raise LenszooError(f"{arch} option {name}={value:,} is too large; give at most {maximum:,} "
                           f"(see `lenszoo info {arch}` for the defaults)")
    return value


def positive_ints(arch: str, name: str, value, length: int | None = None, maximum: int | None = None,
                  max_length: int = MAX_LAYERS) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of positive ints (each at most ``maximum``, at most ``max_length``
    of them), or a one-line error naming the option."""
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
    if len(items) > max_length:
        raise LenszooError(f"{arch} option {name} has {len(items)} entries; give at most {max_length}")
    if maximum is not None and max(items) > maximum:
        raise LenszooError(f"{arch} option {name} holds {max(items):,}, too large; give values of at most {maximum:,} "
                           f"(see `lenszoo info {arch}` for the defaults)")
    return items
