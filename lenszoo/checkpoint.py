"""The lenszoo checkpoint folder: what training exports, the Hub stores and ``load`` reads.

    model.safetensors   weights (state dict taken in eval mode; safetensors only)
    config.json         arch, task, dataset, model args, class names, normalisation,
                        input size, metrics, recipe, lenszoo version, weights sha256
    README.md           model card (written by ``lenszoo.pretrained.card.write_model_card``)

A folder is written whole or not at all: files go to a sibling temporary
folder that then replaces the target.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import ChecksumMismatch, DamagedCheckpoint, LenszooError
from .files import atomic_folder, atomic_write_text, honour_umask, json_says, sha256_file  # noqa: F401 - re-exported
from .tasks import CLASS_NAMES

WEIGHTS_NAME = "model.safetensors"
INFERENCE_NAME = "model.inference.safetensors"  # the plain-torch inference form, where an arch has one
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
RUN_FILE = "run.json"  # what makes a folder a training run directory (lenszoo.rundir), beside best/
FORMAT = "lenszoo-checkpoint"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


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


def is_checkpoint_folder(folder) -> bool:
    """True for a folder lenszoo wrote as a checkpoint (its config.json says so)."""
    return json_says(Path(folder) / CONFIG_NAME, "format", FORMAT)


def save_checkpoint(folder, model, *, dataset=None, normalization=None, metrics=None, recipe=None,
                    images_seen=None, extra=None, claim: bool = True) -> Path:
    """Write ``model`` (built by ``lenszoo.create_model``) as a checkpoint folder.

    ``folder`` must be new, empty, or an earlier lenszoo checkpoint (which is replaced whole);
    anything else is refused, so a user's files are never deleted (``claim=False`` skips that
    check, for folders inside a run directory the trainer owns). ``normalization`` defaults
    to lenszoo's one normalisation, which every built-in dataset and recipe uses."""
    from safetensors.torch import save_file

    from . import __version__
    from .preprocess import NORMALIZATION
    from .files import claim_output

    base = getattr(model, "lenszoo_config", None)
    if not base:
        raise LenszooError("model has no lenszoo_config; build it with lenszoo.create_model(...)")
    if claim:
        claim_output(folder, what="lenszoo checkpoint folder", is_ours=is_checkpoint_folder,
                     option="checkpoint folder")
    if normalization is None:
        normalization = NORMALIZATION
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
        honour_umask(tmp / WEIGHTS_NAME)  # safetensors creates its files 0600
        config["weights_sha256"] = sha256_file(tmp / WEIGHTS_NAME)
        validate_config(config, f"the config of {folder}")
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        card = Path(folder) / CARD_NAME
        if card.is_file():  # keep a hand-edited card across re-saves
            shutil.copy2(card, tmp / CARD_NAME)
    return Path(folder)


def read_config(folder) -> dict:
    """The checked config of a checkpoint folder (see :func:`validate_config`)."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise LenszooError(f"{folder} is not a folder; pass a lenszoo checkpoint folder (model.safetensors + config.json)")
    if not path.is_file():
        raise LenszooError(f"{folder} has no {CONFIG_NAME}: not a lenszoo checkpoint folder")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedCheckpoint(f"{path} is not UTF-8 text: not a lenszoo checkpoint config; re-export or fetch it "
                                "again") from None
    except json.JSONDecodeError as exc:
        raise DamagedCheckpoint(f"{path} is not valid JSON ({exc}); re-export the checkpoint or fetch it again") from None
    except OSError as exc:
        raise LenszooError(f"cannot read {path} ({exc.strerror or exc})") from None
    return validate_config(config, str(path), error=DamagedCheckpoint)


_SHA256_CHARS = set("0123456789abcdef")


def config_problems(config) -> list[str]:
    """Everything wrong with a checkpoint config, one phrase each (empty when it is sound)."""
    from .preprocess import normalizer_from_config
    from .names import is_valid_name
    from .tasks import TASKS

    if not isinstance(config, dict):
        return [f"must be a JSON object, got {type(config).__name__}"]
    problems = []
    if config.get("format", FORMAT) != FORMAT:
        problems.append(f"format is {config.get('format')!r}, not {FORMAT!r}")
    version = config.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        problems.append(f"format_version {version!r} is not one this lenszoo reads (up to {FORMAT_VERSION}; "
                        "upgrade lenszoo)")
    for key in ("arch", "task"):
        if key not in config:
            problems.append(f"{key} is missing")
    if "arch" in config and not is_valid_name(config["arch"]):
        problems.append(f"arch {config['arch']!r} is not a valid architecture name")
    if "task" in config and config["task"] not in TASKS:
        problems.append(f"task {config['task']!r} is not one of {', '.join(TASKS)}")
    if config.get("dataset") is not None and not is_valid_name(config["dataset"]):
        problems.append(f"dataset {config['dataset']!r} is not a valid dataset name")
    if not isinstance(config.get("model_args", {}), dict):
        problems.append("model_args must be an object of architecture arguments")
    size = config.get("input_size", [1, 64, 64])
    if not (isinstance(size, list) and len(size) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        problems.append(f"input_size {size!r} must be three positive integers like [1, 64, 64]")
    if config.get("task") == "classify" and config.get("class_names", list(CLASS_NAMES)) != list(CLASS_NAMES):
        problems.append(f"class_names {config.get('class_names')!r} differ from lenszoo's {list(CLASS_NAMES)}")
    if "normalization" not in config or config["normalization"] is None:
        problems.append("normalization is missing: a model cannot be fed without knowing its preprocessing")
    else:
        try:
            normalizer_from_config(config["normalization"])
        except LenszooError as exc:
            problems.append(f"normalization: {exc}")
    for key in ("metrics", "recipe"):
        if not isinstance(config.get(key) or {}, dict):
            problems.append(f"{key} must be an object")
    seen = config.get("images_seen")
    if seen is not None and (isinstance(seen, bool) or not isinstance(seen, int) or seen < 0):
        problems.append(f"images_seen {seen!r} must be a whole number")
    sha = config.get("weights_sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _SHA256_CHARS):
        problems.append("weights_sha256 must be 64 lowercase hex digits")
    for key in ("plugin", "package"):
        if config.get(key) is not None and not isinstance(config[key], str):
            problems.append(f"{key} must be a string")
    return problems


def validate_config(config, where: str, error=LenszooError) -> dict:
    problems = config_problems(config)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise error(f"{where} is not a valid lenszoo checkpoint config: {problems[0]}{more}; "
                           "re-export the checkpoint or fetch it again")
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
            failed = registry.failed_plugins_of(package)
            if failed:
                raise LenszooError(
                    f"architecture {arch!r} comes from the plugin package {package!r}, which is installed but "
                    f"failed to load: {failed[0].errors[0]} (see `lenszoo plugins --traceback`)") from None
            skipped = [p for p in registry.plugins() if p.package == package and p.status == "skipped"]
            if skipped:
                raise LenszooError(f"architecture {arch!r} comes from the plugin package {package!r}, which is "
                                   "installed but not enabled: add it to LENSZOO_PLUGINS") from None
            raise LenszooError(
                f"architecture {arch!r} comes from the plugin package {package!r}, which is not installed; "
                f"install it with `pip install {package}`"
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
    from .preprocess import Preprocess

    model.preprocess = Preprocess(config["normalization"], config.get("input_size", (1, 64, 64)))
    return model


def _read_safetensors(path: Path, expected_sha: str | None, verify: bool) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if verify and expected_sha and sha256_file(path) != expected_sha:
        raise ChecksumMismatch(f"{path} does not match the sha256 in {CONFIG_NAME}: the file is corrupted or was replaced")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LenszooError(f"cannot read {path} as safetensors ({exc})") from None


def _inference_model(folder: Path, config: dict, verify: bool):
    """The plain-torch inference form recorded in ``config["inference"]``, or None when the folder
    has none or its architecture cannot build one."""
    record = config.get("inference")
    if not isinstance(record, dict) or record.get("file") != INFERENCE_NAME or not (folder / INFERENCE_NAME).is_file():
        return None
    from .registry import registry

    try:
        spec = registry.architecture(config["arch"])
    except LenszooError:
        return None
    model = spec.build_inference(config["task"], **config.get("model_args", {}))
    if model is None:
        return None
    state = _read_safetensors(folder / INFERENCE_NAME, record.get("sha256"), verify)
    load_state_strict(model, state, source=str(folder / INFERENCE_NAME))
    return model


def write_inference_form(folder: Path, model, config: dict) -> bool:
    """Save ``model.export()`` (the same eval-mode function in plain torch) beside the weights and
    record it in ``config``; False if the model has no export."""
    export = getattr(model, "export", None)
    if not callable(export):
        return False
    from safetensors.torch import save_file

    save_file(state_dict_for_saving(export()), str(folder / INFERENCE_NAME), metadata={"format": "pt"})
    honour_umask(folder / INFERENCE_NAME)
    config["inference"] = {"file": INFERENCE_NAME, "sha256": sha256_file(folder / INFERENCE_NAME),
                           "form": "exported: the same function in plain PyTorch, batch norm folded"}
    return True


def load_checkpoint(folder, *, device="cpu", verify_sha256=True, trainable=True, weights_verified=False):
    """A model in eval mode from a checkpoint folder, with ``.lenszoo_config`` and ``.preprocess``.

    ``trainable=False`` returns the plain-torch inference form where the folder has one (the same
    outputs; no escnn needed, faster), else the trainable model. Each file read is checked against
    the sha256 its config records (``ChecksumMismatch``), except ``model.safetensors`` when the
    caller has just checked it (``weights_verified``: released weights, matched to their manifest)."""
    from .runtime import resolve_device

    device = resolve_device(device)
    folder = Path(folder)
    config = read_config(folder)
    check_no_pickle(folder)
    model = None if trainable else _inference_model(folder, config, verify_sha256)
    form = "inference" if model is not None else "trainable"
    if model is None:
        model = build_from_config(config)  # first: a missing or broken plugin is named before any file is read
        state = _read_safetensors(folder / WEIGHTS_NAME, config.get("weights_sha256"),
                                  verify_sha256 and not weights_verified)
        model.eval()
        load_state_strict(model, state, source=str(folder / WEIGHTS_NAME))
    model.eval()
    model.lenszoo_config = {**model.lenszoo_config, **config, "form": form}
    attach_preprocess(model, config)
    return model.to(device)
