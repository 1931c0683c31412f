"""Released weights: ``weights_manifest.json`` and ``lenszoo.load``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import LenszooError
from .tasks import check_task

MANIFEST_ENV = "LENSZOO_MANIFEST"
MANIFEST_NAME = "weights_manifest.json"


def manifest_path() -> Path:
    """The manifest in use: ``$LENSZOO_MANIFEST`` or the one at the top of the source tree."""
    if os.environ.get(MANIFEST_ENV):
        return Path(os.environ[MANIFEST_ENV])
    return Path(__file__).resolve().parent.parent / MANIFEST_NAME


def read_manifest(path: Path | None = None) -> dict:
    path = Path(path) if path else manifest_path()
    if not path.is_file():
        raise LenszooError(f"weights manifest not found at {path}; set {MANIFEST_ENV} to its path")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LenszooError(f"weights manifest {path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("weights"), list):
        raise LenszooError(f"weights manifest {path} has no 'weights' list")
    return manifest


def released_weights(path: Path | None = None) -> list[dict]:
    return read_manifest(path)["weights"]


def find_entry(arch: str, task: str, dataset: str, path: Path | None = None) -> dict:
    entries = released_weights(path)
    for entry in entries:
        if (entry["arch"], entry["task"], entry["dataset"]) == (arch, task, dataset):
            return entry
    have = sorted(f"{e['arch']}/{e['task']}/{e['dataset']}" for e in entries)
    raise LenszooError(
        f"no released weights for arch={arch!r} task={task!r} dataset={dataset!r}; "
        + (f"released: {', '.join(have)}" if have else "none are released yet")
        + " (train your own with `lenszoo train`)"
    )


def load(name, task="classify", dataset="A", device="cpu"):
    from .registry import registry

    check_task(task)
    registry.architecture(name)  # unknown names fail first, with suggestions
    find_entry(name, task, dataset)
    raise LenszooError("loading released weights is not implemented yet")
