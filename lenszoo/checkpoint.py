"""The lenszoo checkpoint folder: what training exports, the Hub stores and ``load`` reads.

    model.safetensors   weights (state dict taken in eval mode; safetensors only)
    config.json         arch, task, dataset, model args, class names, normalisation,
                        input size, metrics, recipe, lenszoo version, weights sha256
    README.md           model card (written by ``lenszoo.hub.write_model_card``)

A folder is written whole or not at all: files go to a sibling temporary
folder that then replaces the target.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import LenszooError
from .tasks import CLASS_NAMES

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT = "lenszoo-checkpoint"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def sha256_file(path, chunk=1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path, text: str):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(target):
    """Yield a temporary folder; on success it replaces ``target`` (old content removed)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def state_dict_for_saving(model) -> dict:
    """An eval-mode state dict of independent contiguous tensors.

    escnn rebuilds its expanded filters only in eval mode, so the model is put
    in eval mode while the dict is taken and then restored.
    """
    was_training = model.training
    model.eval()
    try:
        state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    finally:
        model.train(was_training)
    return state


def save_checkpoint(folder, model, *, dataset=None, normalization=None, metrics=None, recipe=None,
                    images_seen=None, extra=None) -> Path:
    """Write ``model`` (built by ``lenszoo.create_model``) as a checkpoint folder."""
    from safetensors.torch import save_file

    from . import __version__

    base = getattr(model, "lenszoo_config", None)
    if not base:
        raise LenszooError("model has no lenszoo_config; build it with lenszoo.create_model(...)")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": base["arch"],
        "task": base["task"],
        "dataset": dataset,
        "model_args": base.get("model_args", {}),
        "input_size": base.get("input_size", [1, 64, 64]),
        "class_names": list(CLASS_NAMES) if base["task"] == "classify" else None,
        "target": "class index" if base["task"] == "classify" else "log10(m_a / eV)",
        "normalization": normalization,
        "plugin": base.get("plugin"),
        "package": base.get("package"),
        "metrics": metrics or {},
        "recipe": recipe or {},
        "images_seen": images_seen,
        "lenszoo_version": __version__,
        **(extra or {}),
    }
    with atomic_folder(folder) as tmp:
        save_file(state_dict_for_saving(model), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        config["weights_sha256"] = sha256_file(tmp / WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        card = Path(folder) / CARD_NAME
        if card.is_file():  # keep a hand-edited card across re-saves
            shutil.copy2(card, tmp / CARD_NAME)
    return Path(folder)


def read_config(folder) -> dict:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise LenszooError(f"{folder} is not a folder; pass a lenszoo checkpoint folder (model.safetensors + config.json)")
    if not path.is_file():
        raise LenszooError(f"{folder} has no {CONFIG_NAME}: not a lenszoo checkpoint folder")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LenszooError(f"{path} is not valid JSON ({exc}); re-export the checkpoint") from None
    missing = [k for k in ("arch", "task") if k not in config]
    if missing:
        raise LenszooError(f"{path} lacks {', '.join(missing)}: not a lenszoo checkpoint config")
    return config


def check_no_pickle(folder):
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise LenszooError(
                f"{folder} holds {', '.join(pickles)} but no {WEIGHTS_NAME}: lenszoo refuses pickle-format "
                "weights (loading them can run arbitrary code); convert them to safetensors in a trusted session"
            )
        raise LenszooError(f"{folder} has no {WEIGHTS_NAME}")


def build_from_config(config: dict):
    """A freshly built model for a checkpoint config (architecture resolved through the registry)."""
    from .errors import UnknownNameError
    from .registry import registry

    arch = config["arch"]
    try:
        spec = registry.architecture(arch)
    except UnknownNameError:
        package = config.get("package")
        if package and package != "lenszoo":
            raise LenszooError(
                f"architecture {arch!r} comes from the plugin package {package!r}, which is not installed "
                f"(or not enabled by LENSZOO_PLUGINS); install it with `pip install {package}`"
            ) from None
        raise
    return spec.build(config["task"], **config.get("model_args", {}))


def load_state_strict(model, state: dict, source=""):
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is an error naming it."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise LenszooError(
            f"weights {source} do not match architecture {model.lenszoo_config['arch']!r} "
            f"({'; '.join(problems)}); check the arch and model_args in config.json"
        )
    model.load_state_dict(state, strict=True)


def attach_preprocess(model, config: dict):
    normalization = config.get("normalization")
    if normalization:
        from .data import normalizer_from_config

        model.preprocess = normalizer_from_config(normalization)
    else:
        model.preprocess = None
    return model


def load_checkpoint(folder, *, device="cpu", verify_sha256=True):
    """A model in eval mode from a checkpoint folder, with ``.lenszoo_config`` and ``.preprocess``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    check_no_pickle(folder)
    weights = folder / WEIGHTS_NAME
    expected_sha = config.get("weights_sha256")
    if verify_sha256 and expected_sha and sha256_file(weights) != expected_sha:
        raise LenszooError(f"{weights} does not match the sha256 in {CONFIG_NAME}: the file is corrupted or was replaced")
    model = build_from_config(config)
    model.eval()
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LenszooError(f"cannot read {weights} as safetensors ({exc})") from None
    load_state_strict(model, state, source=str(weights))
    model.eval()
    model.lenszoo_config = {**model.lenszoo_config, **config}
    attach_preprocess(model, config)
    return model.to(device)
