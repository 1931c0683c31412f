"""The one load path: a name is parsed once (``refs``), its source decided once (``source``),
and its checkpoint folder read once (``checkpoint.load_checkpoint``), weights hashed once."""

from __future__ import annotations

from ..checkpoint import load_checkpoint
from ..errors import DamagedCheckpoint
from ..runtime import resolve_device
from .hub import download_checkpoint
from .refs import resolve_name
from .source import Source, source_for

RELEASE_RECORD = ("file", "sha256", "config_sha256", "hf_repo_id", "hf_revision", "bf16_parity")


def load_model(name, *, task: str | None = None, dataset: str | None = None, device="cpu", trainable=False,
               tag: str | None = None):
    """A model in eval mode for any name ``refs.resolve_name`` understands: its plain-torch
    inference form where the checkpoint has one, unless ``trainable``."""
    device = resolve_device(device)
    ref = resolve_name(name, task=task, dataset=dataset, tag=tag)
    source = source_for(ref)
    try:
        model = load_checkpoint(source.folder, device=device, trainable=trainable, weights_verified=source.verified)
    except DamagedCheckpoint:  # a damaged copy in the HF cache: fetched once more, fresh
        if ref.kind != "hub":
            raise
        source = Source("hub", download_checkpoint(ref.repo_id, ref.revision, force=True))
        model = load_checkpoint(source.folder, device=device, trainable=trainable)
    if source.weights is not None:
        model.lenszoo_config["released"] = {k: getattr(source.weights, k) for k in RELEASE_RECORD}
    model.lenszoo_source = ref
    return model

