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


# Hugging Face Hub repo ids: huggingface_hub's own rule (utils.validate_repo_id; tests check that
# both agree), plus lenszoo's: a namespace is required. Written out so that validating a manifest
# imports no httpx.
_REPO_PART = r"\b[A-Za-z0-9_.\-]{1,96}\b"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$", flags=re.ASCII)
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def is_valid_repo_id(repo_id) -> bool:
    return (isinstance(repo_id, str) and REPO_ID_RE.fullmatch(repo_id) is not None
            and "--" not in repo_id and ".." not in repo_id and not repo_id.endswith(".git"))


def check_repo_id(repo_id: str) -> str:
    if not is_valid_repo_id(repo_id):
        raise LenszooError(f"invalid Hub repo id {repo_id!r}; use ORG/NAME: ASCII letters, digits, '-', '_' or '.', "
                           "at most 96 characters each, no '--' or '..', not ending in .git")
    return repo_id
