"""``lenszoo publish``: a checkpoint folder, or every entry of a manifest, onto the Hugging Face
Hub, each with a model card pinned to the commit holding its weights."""

from __future__ import annotations

import os
from pathlib import Path

from ..checkpoint import WEIGHTS_NAME, read_config
from ..errors import LenszooError
from ..files import sha256_file
from ..names import check_repo_id
from .card import model_card_text
from .hub import Published, is_offline, upload_checkpoint
from .manifest import entry_label, read_manifest
from .refs import resolve_checkpoint_folder
from .release import evaluated_test_metrics, record_publication
from .source import matches

HUB_ORG_ENV = "LENSZOO_HUB_ORG"


def publish(path, repo_id: str, *, tag: str | None = None, private: bool = False, token: str | None = None,
            run_dir=None, entry: dict | None = None) -> Published:
    """Upload a checkpoint folder (or a run's best checkpoint) to ``repo_id`` in two commits:
    config.json and the weights, then the model card, whose load line is pinned to the first
    commit. The card carries the test metrics ``lenszoo evaluate`` wrote for these exact weights
    (under ``run_dir``'s eval/), and those of its manifest ``entry``. Returns the weights' commit
    sha (the one to pin)."""
    check_repo_id(repo_id)
    if is_offline():
        raise LenszooError("HF_HUB_OFFLINE is set: publishing needs the network; unset it and retry")
    folder = resolve_checkpoint_folder(path)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise LenszooError(f"{folder} has no {WEIGHTS_NAME}: lenszoo publishes safetensors weights only")
    if config.get("weights_sha256") and sha256_file(weights) != config["weights_sha256"]:
        raise LenszooError(f"{weights} does not match the sha256 in its config.json; re-export the checkpoint")
    card_config = dict(config)
    test = evaluated_test_metrics(run_dir or Path(path), config)
    if test and "test" not in (config.get("metrics") or {}):
        card_config["metrics"] = {**(config.get("metrics") or {}), "test": test}
    what = f"{config['arch']} {config['task']} dataset {config.get('dataset')}"
    return upload_checkpoint(folder, repo_id, lambda sha: model_card_text(card_config, repo_id, sha, entry=entry), what=what,
                             tag=tag, private=private, token=token)


def release_repo_id(org: str, entry) -> str:
    """The one naming scheme of released checkpoints on the Hub: ``ORG/ARCH-TASK-DATASET[.TAG]``
    (the folder name under weights/)."""
    tag = f".{entry['tag']}" if entry.get("tag") else ""
    return check_repo_id(f"{org}/{entry['arch']}-{entry['task']}-{entry['dataset']}{tag}")


def publish_release(org: str | None, manifest: Path, *, tag: str | None = None, token: str | None = None,
                    log=print) -> list[tuple[dict, str]]:
    """Publish every entry of ``manifest`` to ``ORG/ARCH-TASK-DATASET`` and record the commit in the
    manifest; entries already published there (same repo, a recorded commit) are left alone, so a
    second run is a no-op for unchanged weights. Returns ``(entry, "published" | "unchanged")``."""
    from .. import __version__

    org = org or os.environ.get(HUB_ORG_ENV)
    if not org:
        raise LenszooError(f"no Hub organisation: give --org ORG (or set {HUB_ORG_ENV})")
    tag = tag or f"lenszoo-v{__version__}"
    done = []
    for entry in read_manifest(manifest)["weights"]:
        repo_id = release_repo_id(org, entry)
        label = entry_label(entry)
        if entry.get("hf_repo_id") == repo_id and entry.get("hf_revision"):
            log(f"{label}: unchanged, {repo_id}@{entry['hf_revision'][:12]}")
            done.append((entry, "unchanged"))
            continue
        folder = manifest.parent / entry["folder"]
        if not matches(folder, entry):
            raise LenszooError(f"{folder} does not match its sha256s in {manifest}; release it again before publishing")
        published = publish(folder, repo_id, tag=tag, token=token, entry=entry)
        record_publication(entry["arch"], entry["task"], entry["dataset"], repo_id, published.commit_sha,
                           manifest=manifest, tag=entry.get("tag"))
        log(f"{label}: published {repo_id}@{published.commit_sha[:12]} (tag {tag})")
        done.append((entry, "published"))
    return done
