"""Where the weights a name means come from: one decision per name, made once.

A released name is, in this order, the folder under ``weights/`` next to its manifest (bundled),
the Hugging Face cache, or a download pinned to the manifest's commit sha; a Hub name is its
snapshot in the HF cache (fetched if missing); a folder is itself. Released weights are checked
against the manifest's sha256s here, once: a mismatching cached copy is fetched again once, and
the loader is told the weights are verified (``Source.verified``), so it does not hash them again.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME
from ..errors import LenszooError
from ..files import sha256_file
from .hub import download_checkpoint, is_offline
from .manifest import MANIFEST_ENV, Weights, find_entry, is_packaged
from .refs import ModelRef

SOURCES = ("bundled", "hf-cache", "hub", "folder")


@dataclass(frozen=True)
class Source:
    """Where a name's checkpoint folder is, and whether its weights were checked on the way."""

    kind: str  # one of SOURCES
    folder: Path
    weights: Weights | None = None  # the released weights, for a released name
    verified: bool = False  # model.safetensors matched a recorded sha256 here


def matches(folder: Path, entry) -> bool:
    """Both files present and equal to what the manifest recorded (config.json is hashed too)."""
    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    return (weights.is_file() and config.is_file() and sha256_file(weights) == entry["sha256"]
            and sha256_file(config) == entry["config_sha256"])


class WeightsUnavailable(LenszooError):
    """Released weights that cannot be had here and now: neither on this disk nor published on
    the Hub (``published`` False), or published but neither cached nor fetchable offline. A batch
    over the zoo (``lenszoo demo``, ``download --all``) skips these and says so."""

    def __init__(self, message: str, entry: Weights, reason: str, published: bool):
        super().__init__(message)
        self.entry, self.reason, self.published = entry, reason, published


UNPUBLISHED = "not yet published on the Hugging Face Hub"
WHAT_WORKS = (f"run lenszoo from a git checkout of its repository (which carries weights/), or set {MANIFEST_ENV} "
              "to the weights_manifest.json of a folder whose weights/ holds them")


def _unpublished(entry: Weights) -> LenszooError:
    """Why an unpublished entry's weights are not usable here, and what to do: damaged (an error
    no batch skips), or absent (``WeightsUnavailable``)."""
    local = entry.local_folder
    if (local / WEIGHTS_NAME).is_file():  # there, but not what the manifest recorded
        return LenszooError(
            f"weights for {entry.label} at {local} do not match the manifest's sha256s (damaged or edited) and are "
            f"{UNPUBLISHED}; restore the folder (`git checkout {entry.folder}` in a lenszoo checkout) or "
            "release it again")
    if is_packaged(entry.base):
        where = (f"are not bundled with this installed lenszoo (it carries only the small checkpoints; "
                 f"this one is {entry.size / 1e6:.0f} MB)")
        reason = "not bundled with this install and " + UNPUBLISHED
    else:
        where = f"are not at {local}"
        reason = f"not under {entry.base} and " + UNPUBLISHED
    return WeightsUnavailable(f"weights for {entry.label} {where} and are {UNPUBLISHED}; {WHAT_WORKS}", entry, reason,
                              published=False)


def describe_location(entry: Weights) -> str:
    """Where an entry's weights are (the file, or its pinned Hub commit), or why they are nowhere yet."""
    local = entry.base / entry.file
    if local.is_file():
        return str(local)
    if entry.hf_repo_id:
        return f"hf-hub:{entry.hf_repo_id}@{entry.hf_revision[:12]} (fetched on first load)"
    return _unpublished(entry).reason  # absent: never damaged


def skipped_summary(skipped: list[WeightsUnavailable], total: int) -> str:
    """One line naming every skipped checkpoint, grouped by why."""
    reasons: dict[str, list[str]] = {}
    for exc in skipped:
        reasons.setdefault(exc.reason, []).append(exc.entry.label)
    why = "; ".join(f"{', '.join(labels)} ({reason})" for reason, labels in reasons.items())
    hint = f"; to use them, {WHAT_WORKS}" if any(not exc.published for exc in skipped) else ""
    return f"skipped {len(skipped)} of {total} released checkpoints, not available here: {why}{hint}"


def locate(entry: Weights) -> Source:
    """The verified weights of a manifest entry: bundled, else in the HF cache, else downloaded
    at the pinned commit (a cached copy that does not match is fetched once more)."""
    local = entry.local_folder
    if matches(local, entry):
        return Source("bundled", local, entry, verified=True)
    if (local / WEIGHTS_NAME).is_file():
        warnings.warn(f"{local} does not match its sha256s in the manifest; trying the Hub copy", stacklevel=3)
    repo, revision = entry.hf_repo_id, entry.hf_revision
    if not repo:
        raise _unpublished(entry)
    cached_but_wrong = False
    try:
        folder = download_checkpoint(repo, revision, local_only=True)
        if matches(folder, entry):
            return Source("hf-cache", folder, entry, verified=True)
        cached_but_wrong = True
    except LenszooError:
        raise
    except Exception:  # not cached yet
        pass
    if is_offline():
        if cached_but_wrong:
            raise LenszooError(f"the cached copy of {entry.label} ({repo}@{revision[:12]}) does not match the "
                               "manifest's sha256s (damaged or tampered with); go online once to fetch it again")
        raise WeightsUnavailable(
            f"weights for {entry.label} are not in the Hugging Face cache and HF_HUB_OFFLINE=1; run `lenszoo download "
            f"{entry.arch} --task {entry.task} --dataset {entry.dataset}` online", entry,
            "published, but not in the Hugging Face cache and HF_HUB_OFFLINE=1; `lenszoo download --all` online "
            "fetches them", published=True)
    folder = download_checkpoint(repo, revision, force=True)  # once more, fresh from the Hub
    if not matches(folder, entry):
        raise LenszooError(f"the Hub copy of {entry.label} ({repo}@{revision[:12]}) does not match the manifest's "
                           "sha256; refusing to load it")
    return Source("hub", folder, entry, verified=True)


def source_for(ref: ModelRef) -> Source:
    """The one decision for a parsed name: (source, folder)."""
    if ref.kind in ("run", "checkpoint"):
        return Source("folder", ref.checkpoint_folder)
    if ref.kind == "hub":
        return Source("hub", download_checkpoint(ref.repo_id, ref.revision))
    return locate(find_entry(ref.arch, ref.task, ref.dataset, tag=ref.tag))
