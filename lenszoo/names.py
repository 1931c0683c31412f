"""The rule for names that lenszoo registers, stores and turns into paths.

Architecture, dataset, task and plugin-registered names become folder names
(``weights/ARCH-TASK-DATASET``), Hub repo names and manifest keys, so they are
short and plain: letters, digits, ``_`` and ``-``, starting and ending with a
letter or digit, at most 64 characters. Nothing with a ``/``, a ``.`` or a
space can become a path component.
"""

from __future__ import annotations

import re

from .errors import LenszooError

NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?$")


def is_valid_name(name) -> bool:
    return isinstance(name, str) and NAME_RE.match(name) is not None


def check_name(kind: str, name, where: str = "") -> str:
    """``name`` if it follows the rule, else a one-line error saying what a name may hold."""
    if not is_valid_name(name):
        origin = f" in {where}" if where else ""
        raise LenszooError(f"invalid {kind} name {name!r}{origin}: names are 1-64 letters, digits, '_' or '-', "
                           "starting and ending with a letter or digit")
    return name
