"""Released weights: ``weights_manifest.json`` and ``lenszoo.load``.

``load(arch, task=, dataset=)`` resolves through the manifest in this order:
the folder under ``weights/`` next to the manifest, then the Hugging Face
cache, then a download pinned to the manifest's commit sha. The weights'
sha256 is checked every time; a mismatching cached copy is fetched again once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, is_checkpoint_folder, read_config, write_inference_form
from .errors import LenszooError
from .files import atomic_write_json, claim_output, sha256_file
from .hub import COMMIT_RE, download_checkpoint, is_offline, is_valid_repo_id, write_model_card
from .names import check_name, is_valid_name
from .tasks import TASKS

MANIFEST_ENV = "LENSZOO_MANIFEST"
MANIFEST_NAME = "weights_manifest.json"
SCHEMA_VERSION = 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


PACKAGED_ZOO = Path(__file__).resolve().parent / "zoo"  # what a wheel carries (see setup.py)


def manifest_path() -> Path:
    """The manifest in use: ``$LENSZOO_MANIFEST``, else the source checkout's (a git clone or an
    editable install), else the copy an installed wheel carries in ``lenszoo/zoo/``."""
    if os.environ.get(MANIFEST_ENV):
        return Path(os.environ[MANIFEST_ENV])
    top = source_checkout()
    if top is not None:
        return top / MANIFEST_NAME
    return PACKAGED_ZOO / MANIFEST_NAME


def source_checkout() -> Path | None:
    """The top of the lenszoo source tree this package runs from, or None for an installed copy."""
    top = Path(__file__).resolve().parent.parent
    try:
        pyproject = (top / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return top if 'name = "lenszoo"' in pyproject and (top / MANIFEST_NAME).is_file() else None


def release_manifest(to=None) -> Path:
    """The manifest ``lenszoo release`` updates: ``TO/weights_manifest.json``, else
    ``$LENSZOO_MANIFEST``, else the source checkout's own (never an installed package's files)."""
    if to is not None:
        folder = Path(to)
        if folder.exists() and not folder.is_dir():
            raise LenszooError(f"--to {folder} is a file; give the folder that holds (or will hold) "
                               f"{MANIFEST_NAME} and weights/")
        return folder / MANIFEST_NAME
    if os.environ.get(MANIFEST_ENV):
        return Path(os.environ[MANIFEST_ENV])
    top = source_checkout()
    if top is None:
        raise LenszooError("lenszoo runs from an installed package, whose files are not a place for releases; "
                           "give --to DIR (a folder for weights/ and weights_manifest.json)")
    return top / MANIFEST_NAME


# -- validation ----------------------------------------------------------------
ENTRY_FIELDS = {
    # field: (types, required)
    "arch": (str, True), "task": (str, True), "dataset": (str, True),
    "folder": (str, True), "file": (str, True), "sha256": (str, True), "size": (int, True),
    "config_sha256": (str, True),
    "hf_repo_id": ((str, type(None)), False), "hf_revision": ((str, type(None)), False),
    "metrics": (dict, True), "recipe": (dict, True),
    # timm-style weight tags: ``arch.tag`` names another set of weights for the same arch/task/dataset;
    # ``default`` marks the weights an untagged name means (else the untagged entry)
    "tag": ((str, type(None)), False), "default": (bool, False),
    "input_contract": (dict, False),  # what its training images were (lenszoo/contract.py), as in config.json
    # what bf16 inference changed against fp32 (benchmarks/bf16_parity.py); beyond the limits in
    # lenszoo/inference/scorer.py, `predict --precision auto` keeps fp32 for these weights
    "bf16_parity": (dict, False),
}
BF16_PARITY_FIELDS = {"split": str, "n": int, "accuracy_change": float, "max_probability_change": float,
                      "mae_change": float}


def entry_key(entry: dict) -> tuple:
    """What identifies a set of released weights: arch, task, dataset and tag."""
    return entry["arch"], entry["task"], entry["dataset"], entry.get("tag")


def validate_manifest(manifest) -> list[str]:
    """Every problem in a manifest, as ``entry N (arch/task/dataset): field: problem`` lines."""
    problems = []
    if not isinstance(manifest, dict):
        return ["the manifest must be a JSON object"]
    if manifest.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}")
    entries = manifest.get("weights")
    if not isinstance(entries, list):
        return problems + ["'weights' must be a list"]
    seen, defaults = set(), set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"entry {index}: must be an object")
            continue
        label = f"entry {index} ({entry.get('arch')}/{entry.get('task')}/{entry.get('dataset')})"
        for name, (types, required) in ENTRY_FIELDS.items():
            if name not in entry:
                if required:
                    problems.append(f"{label}: missing field {name!r}")
            elif not isinstance(entry[name], types) or (isinstance(entry[name], bool) and types is not bool):
                problems.append(f"{label}: field {name!r} has the wrong type")
        unknown = sorted(set(entry) - set(ENTRY_FIELDS))
        if unknown:
            problems.append(f"{label}: unknown fields {unknown}")
        if entry.get("task") not in TASKS:
            problems.append(f"{label}: task must be one of {list(TASKS)}")
        for name in ("sha256", "config_sha256"):
            if isinstance(entry.get(name), str) and not SHA256_RE.match(entry[name]):
                problems.append(f"{label}: {name} must be 64 lowercase hex digits")
        for name in ("arch", "dataset"):
            if isinstance(entry.get(name), str) and not is_valid_name(entry[name]):
                problems.append(f"{label}: {name} {entry[name]!r} is not a valid name")
        parity = entry.get("bf16_parity")
        if isinstance(parity, dict):
            for name, value in parity.items():
                kind = BF16_PARITY_FIELDS.get(name)
                if kind is None or isinstance(value, bool) or not (
                        isinstance(value, kind) or (kind is float and isinstance(value, int)) or value is None):
                    problems.append(f"{label}: bf16_parity.{name} must be one of "
                                    f"{', '.join(BF16_PARITY_FIELDS)} holding a {getattr(kind, '__name__', 'value')}")
        if isinstance(entry.get("size"), int) and entry["size"] <= 0:
            problems.append(f"{label}: size must be positive")
        for name in ("folder", "file"):
            value = entry.get(name)
            if isinstance(value, str) and (value.startswith("/") or ".." in Path(value).parts):
                problems.append(f"{label}: {name} must be a relative path inside the repository")
        if isinstance(entry.get("file"), str) and isinstance(entry.get("folder"), str) \
                and entry["file"] != f"{entry['folder']}/{WEIGHTS_NAME}":
            problems.append(f"{label}: file must be {entry['folder']}/{WEIGHTS_NAME}")
        repo, rev = entry.get("hf_repo_id"), entry.get("hf_revision")
        if repo is not None and not (isinstance(repo, str) and is_valid_repo_id(repo)):
            problems.append(f"{label}: hf_repo_id must look like ORG/NAME")
        if rev is not None and not (isinstance(rev, str) and COMMIT_RE.match(rev)):
            problems.append(f"{label}: hf_revision must be a 40-hex commit sha (never a branch)")
        if (repo is None) != (rev is None):
            problems.append(f"{label}: hf_repo_id and hf_revision go together")
        if entry.get("tag") is not None and isinstance(entry["tag"], str) and not is_valid_name(entry["tag"]):
            problems.append(f"{label}: tag {entry['tag']!r} is not a valid name")
        key = (entry.get("arch"), entry.get("task"), entry.get("dataset"), entry.get("tag"))
        if key in seen:
            problems.append(f"{label}: duplicate entry")
        seen.add(key)
        if entry.get("default") is True:
            if key[:3] in defaults:
                problems.append(f"{label}: a second default for {'/'.join(map(str, key[:3]))}")
            defaults.add(key[:3])
    return problems


def read_manifest(path: Path | None = None) -> dict:
    path = Path(path) if path else manifest_path()
    if not path.is_file():
        raise LenszooError(f"weights manifest not found at {path}; set {MANIFEST_ENV} to its path")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LenszooError(f"weights manifest {path} is not valid JSON ({exc}); restore it from git "
                           "(`git checkout weights_manifest.json`) or your copy of the release") from None
    problems = validate_manifest(manifest)
    if problems:
        raise LenszooError(f"weights manifest {path} is invalid: {problems[0]}"
                           + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    return manifest


def released_weights(path: Path | None = None) -> list[dict]:
    """Entries of one manifest (``path``), or of lenszoo's and every plugin's (``register_weights``);
    each entry knows the folder its paths are relative to (``_manifest_dir``, never written)."""
    if path is not None:
        return [dict(e, _manifest_dir=str(Path(path).parent)) for e in read_manifest(path)["weights"]]
    entries = released_weights(manifest_path())
    seen = {entry_key(e) for e in entries}
    from .registry import registry

    for plugin, manifest in sorted(registry.weight_manifests.items()):
        for entry in released_weights(manifest):
            key = entry_key(entry)
            if key in seen:  # lenszoo's own (or an earlier plugin's) entry wins
                warnings.warn(f"plugin {plugin!r} ships weights for {entry_label(entry)}, which are already "
                              "released; its copy is ignored", stacklevel=2)
                continue
            seen.add(key)
            entries.append(entry)
    return entries


def is_default(entry: dict, group: list[dict]) -> bool:
    """Whether ``entry`` is what an untagged name means among ``group`` (one arch/task/dataset):
    the entry marked default, else the untagged one."""
    if any(e.get("default") for e in group):
        return bool(entry.get("default"))
    return entry.get("tag") is None


def find_entry(arch: str, task: str, dataset: str | None = None, path: Path | None = None, *,
               tag: str | None = None) -> dict:
    """The manifest entry for ``arch``/``task``/``dataset`` and ``tag`` (None: the default weights).

    Without ``dataset``, the architecture's weights for ``task`` must exist for one dataset only:
    a default never silently picks weights trained on other data than the user's."""
    entries = released_weights(path)
    mine = [e for e in entries if (e["arch"], e["task"]) == (arch, task)]
    if dataset is None:
        datasets = sorted({e["dataset"] for e in mine})
        if len(datasets) > 1:
            raise LenszooError(f"{arch} has {task} weights for several datasets ({', '.join(datasets)}): say which "
                               f"matches your images with dataset= (--dataset), e.g. dataset={datasets[0]!r}; "
                               "`lenszoo info " + arch + " --dataset D` says what each expects")
        dataset = datasets[0] if datasets else None
    group = [e for e in mine if e["dataset"] == dataset]
    if tag is not None:
        chosen = [e for e in group if e.get("tag") == tag]
    else:
        chosen = [e for e in group if is_default(e, group)]
    if chosen:
        return chosen[0]
    if group:  # the weights exist, the tag does not
        tags = sorted(e["tag"] for e in group if e.get("tag"))
        raise LenszooError(f"{arch}/{task}/{dataset} has no weights tagged {tag!r}; its tags: "
                           f"{', '.join(tags) or 'none'} (an untagged name loads the default weights)")
    have = sorted(entry_label(e) for e in entries)
    raise LenszooError(
        f"no released weights for arch={arch!r} task={task!r} dataset={dataset!r}; "
        + (f"released: {', '.join(have)}" if have else "none are released yet")
        + " (train your own with `lenszoo train`)"
    )


# -- resolution ----------------------------------------------------------------
def _matches(folder: Path, entry: dict) -> bool:
    """Both files present and equal to what the manifest recorded (config.json is hashed too)."""
    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    return (weights.is_file() and config.is_file() and sha256_file(weights) == entry["sha256"]
            and sha256_file(config) == entry["config_sha256"])


class WeightsUnavailable(LenszooError):
    """Released weights that cannot be had here and now: neither on this disk nor published on
    the Hub (``published`` False), or published but neither cached nor fetchable offline. A batch
    over the zoo (``lenszoo demo``, ``download --all``) skips these and says so."""

    def __init__(self, message: str, entry: dict, reason: str, published: bool):
        super().__init__(message)
        self.entry, self.reason, self.published = entry, reason, published


UNPUBLISHED = "not yet published on the Hugging Face Hub"
WHAT_WORKS = (f"run lenszoo from a git checkout of its repository (which carries weights/), or set {MANIFEST_ENV} "
              "to the weights_manifest.json of a folder whose weights/ holds them")


def entry_label(entry: dict) -> str:
    arch = entry["arch"] + (f".{entry['tag']}" if entry.get("tag") else "")
    return f"{arch}/{entry['task']}/{entry['dataset']}"


def _is_packaged(manifest_dir: Path) -> bool:
    try:
        return manifest_dir.resolve() == PACKAGED_ZOO
    except OSError:
        return False


def _unpublished(entry: dict, local: Path, manifest_dir: Path) -> LenszooError:
    """Why an unpublished entry's weights are not usable here, and what to do: damaged (an error
    no batch skips), or absent (``WeightsUnavailable``)."""
    label = entry_label(entry)
    if (local / WEIGHTS_NAME).is_file():  # there, but not what the manifest recorded
        return LenszooError(
            f"weights for {label} at {local} do not match the manifest's sha256s (damaged or edited) and are "
            f"{UNPUBLISHED}; restore the folder (`git checkout {entry['folder']}` in a lenszoo checkout) or "
            "release it again")
    if _is_packaged(manifest_dir):
        where = (f"are not bundled with this installed lenszoo (it carries only the small checkpoints; "
                 f"this one is {entry['size'] / 1e6:.0f} MB)")
        reason = "not bundled with this install and " + UNPUBLISHED
    else:
        where = f"are not at {local}"
        reason = f"not under {manifest_dir} and " + UNPUBLISHED
    return WeightsUnavailable(f"weights for {label} {where} and are {UNPUBLISHED}; {WHAT_WORKS}", entry, reason,
                              published=False)


def describe_location(entry: dict) -> str:
    """Where an entry's weights are (the file, or its pinned Hub commit), or why they are nowhere yet."""
    manifest_dir = Path(entry.get("_manifest_dir") or manifest_path().parent)
    local = manifest_dir / entry["file"]
    if local.is_file():
        return str(local)
    if entry.get("hf_repo_id"):
        return f"hf-hub:{entry['hf_repo_id']}@{entry['hf_revision'][:12]} (fetched on first load)"
    return _unpublished(entry, manifest_dir / entry["folder"], manifest_dir).reason  # absent: never damaged


def skipped_summary(skipped: list[WeightsUnavailable], total: int) -> str:
    """One line naming every skipped checkpoint, grouped by why."""
    reasons: dict[str, list[str]] = {}
    for exc in skipped:
        reasons.setdefault(exc.reason, []).append(entry_label(exc.entry))
    why = "; ".join(f"{', '.join(labels)} ({reason})" for reason, labels in reasons.items())
    hint = f"; to use them, {WHAT_WORKS}" if any(not exc.published for exc in skipped) else ""
    return f"skipped {len(skipped)} of {total} released checkpoints, not available here: {why}{hint}"


def resolve_entry(entry: dict, manifest_dir: Path | None = None) -> Path:
    """The folder holding verified weights for a manifest entry (downloading if needed)."""
    manifest_dir = Path(manifest_dir or entry.get("_manifest_dir") or manifest_path().parent)
    local = manifest_dir / entry["folder"]
    if _matches(local, entry):
        return local
    if (local / WEIGHTS_NAME).is_file():
        warnings.warn(f"{local} does not match its sha256s in the manifest; trying the Hub copy", stacklevel=3)
    label = entry_label(entry)
    repo, revision = entry.get("hf_repo_id"), entry.get("hf_revision")
    if not repo:
        raise _unpublished(entry, local, manifest_dir)
    cached_but_wrong = False
    try:
        folder = download_checkpoint(repo, revision, local_only=True)
        if _matches(folder, entry):
            return folder
        cached_but_wrong = True
    except LenszooError:
        raise
    except Exception:  # not cached yet
        pass
    if is_offline():
        if cached_but_wrong:
            raise LenszooError(f"the cached copy of {label} ({repo}@{revision[:12]}) does not match the manifest's "
                               "sha256s (damaged or tampered with); go online once to fetch it again")
        raise WeightsUnavailable(
            f"weights for {label} are not in the Hugging Face cache and HF_HUB_OFFLINE=1; run `lenszoo download "
            f"{entry['arch']} --task {entry['task']} --dataset {entry['dataset']}` online", entry,
            "published, but not in the Hugging Face cache and HF_HUB_OFFLINE=1; `lenszoo download --all` online "
            "fetches them", published=True)
    folder = download_checkpoint(repo, revision, force=True)  # once more, fresh from the Hub
    if not _matches(folder, entry):
        raise LenszooError(f"the Hub copy of {label} ({repo}@{revision[:12]}) does not match the manifest's sha256; "
                           "refusing to load it")
    return folder


def load(name, task="classify", dataset=None, device="cpu", trainable=False, tag=None):
    """See ``lenszoo.load``: one resolver (``lenszoo.resolve``) decides what ``name`` means."""
    from .resolve import load_model

    return load_model(name, task=task, dataset=dataset, device=device, trainable=trainable, tag=tag)


def prefetch(arch: str, task: str, dataset: str, tag: str | None = None) -> Path:
    """Make sure the weights are on disk (local folder or HF cache) for later offline use."""
    return resolve_entry(find_entry(arch, task, dataset, tag=tag))


# -- releasing -----------------------------------------------------------------
RECORDED_SPLITS = ("test", "holdout")  # the splits whose metrics a manifest entry records


def scalar_metrics(metrics: dict) -> dict:
    """The numbers of an evaluation's metrics (per-class lists and matrices stay in its results.json)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def evaluated_metrics(run_or_folder, config: dict, split: str = "test") -> dict | None:
    """Scalar ``split`` metrics from ``lenszoo evaluate`` results of exactly these weights on their
    own dataset (the evaluation on the most images), if any: RUN/eval/*/results.json."""
    candidates = sorted(Path(run_or_folder).glob("eval/*/results.json")) + \
        sorted(Path(run_or_folder).parent.glob("eval/*/results.json"))
    best = None
    for path in candidates:
        try:
            results = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict):
            continue
        same_weights = (results.get("model") or {}).get("weights_sha256") == config.get("weights_sha256")
        if same_weights and results.get("split") == split and results.get("dataset") == config.get("dataset"):
            n = results["metrics"].get("n") or 0
            if best is None or n > best[0]:
                best = (n, results["metrics"])
    return None if best is None else scalar_metrics(best[1])


def evaluated_test_metrics(run_or_folder, config: dict) -> dict | None:
    return evaluated_metrics(run_or_folder, config, "test")


def half_precision_copy(source: Path, target: Path) -> None:
    """``source`` safetensors with every float32 tensor stored as float16 (integers untouched):
    half the bytes; loading casts back to the model's float32."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(source))
    save_file({k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}, str(target),
              metadata={"format": "pt"})
    from .files import honour_umask

    honour_umask(target)


def release(checkpoint_folder, *, manifest: Path | None = None, run_dir=None, fp16: bool = False,
            tag: str | None = None, default: bool = False) -> dict:
    """Copy a checkpoint folder to ``weights/ARCH-TASK-DATASET/`` and record it in the manifest.

    Test-split metrics that ``lenszoo evaluate`` wrote for these exact weights (under the run
    directory's ``eval/``) are added to the released config, card and manifest entry. Everything
    is checked before anything is written: the names that become the folder name, the manifest,
    and that the target folder is new or an earlier lenszoo checkpoint."""
    from .checkpoint import load_checkpoint

    manifest = Path(manifest) if manifest else manifest_path()
    check_manifest_target(manifest)
    source = Path(checkpoint_folder)
    config = read_config(source)
    if not config.get("dataset"):
        raise LenszooError(f"{source}/config.json records no dataset; only checkpoints trained on a registered "
                           "dataset can be released")
    where = f"{source / CONFIG_NAME}"
    for kind in ("arch", "dataset"):
        check_name(kind, config[kind], where)
    if config["task"] not in TASKS:
        raise LenszooError(f"{where}: task {config['task']!r} is not one of {', '.join(TASKS)}")
    check_own_config(config, where)
    if tag is not None:
        check_name("tag", tag, "--tag")
    trainable = load_checkpoint(source)  # the weights load, and match their sha256
    data = read_manifest(manifest) if manifest.is_file() else {"schema_version": SCHEMA_VERSION, "weights": []}
    import tempfile

    staging = Path(tempfile.mkdtemp(prefix=".lenszoo-release-", dir=manifest.parent if manifest.parent.is_dir()
                                    else None))
    try:
        return _release(source, config, data, manifest, run_dir, fp16, staging, trainable, tag, default)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_manifest_target(manifest: Path) -> None:
    """Before a release writes anything: its manifest is a regular file or new, and the folder that
    holds it (with weights/) can be written, so a release never stops half-way on either."""
    from .files import path_kind

    kind = path_kind(manifest)
    if kind != "missing" and not kind.startswith("a regular file"):
        raise LenszooError(f"{manifest} is {kind}, not a weights manifest; move it aside or release "
                           "--to another folder")
    existing = next((p for p in [manifest.parent, *manifest.parent.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise LenszooError(f"cannot release into {manifest.parent}: {existing} is {path_kind(existing)}, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise LenszooError(f"cannot release into {manifest.parent}: {existing} is not writable; release --to "
                           "another folder or fix its permissions")


def check_own_config(config: dict, where) -> None:
    """A released checkpoint is named after its dataset: refuse one trained on data simulated with a
    changed config (``lenszoo simulate --set``), which that name would misdescribe."""
    used = (((config.get("training_data") or {}).get("generator")) or {}).get("config")
    if used is None:
        return
    from .registry import get_dataset

    own = getattr(get_dataset(config["dataset"]), "config", None)
    if own is not None and json.loads(json.dumps(own)) != used:
        raise LenszooError(f"{where}: trained on dataset {config['dataset']} simulated with a changed config "
                           f"(lenszoo simulate --set); released weights are named after a dataset's own config, "
                           f"so evaluate and share this run folder instead")


def _release(source, config, data, manifest, run_dir, fp16, staging, trainable, tag, default) -> dict:
    from .contract import weights_contract

    weights = source / WEIGHTS_NAME
    config.pop("tag", None)
    if tag:
        config["tag"] = tag
    config["input_contract"] = weights_contract(config)  # what its training images were, measured
    config.pop("inference", None)  # written afresh below for exactly the released weights
    if fp16:  # stored in half precision: the test metrics must be those of these very weights
        half_precision_copy(weights, staging / WEIGHTS_NAME)
        weights = staging / WEIGHTS_NAME
        config["weights_sha256"] = sha256_file(weights)
        config["weights_dtype"] = "float16"
    history = (Path(run_dir) / "metrics.jsonl") if run_dir else None
    if history is not None and history.is_file():  # the learning curve travels with the weights
        config["history"] = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    metrics = dict(config.get("metrics") or {})
    for split in RECORDED_SPLITS:  # only metrics of exactly these weights are recorded
        metrics.pop(split, None)
        found = evaluated_metrics(run_dir or source, config, split)
        if found:
            metrics[split] = found
    config["metrics"] = metrics
    rel = f"weights/{config['arch']}-{config['task']}-{config['dataset']}" + (f".{tag}" if tag else "")
    target = manifest.parent / rel
    claim_output(target, what="lenszoo checkpoint folder", is_ours=is_checkpoint_folder, option="release target")
    from .files import atomic_folder

    with atomic_folder(target) as tmp:
        shutil.copy2(weights, tmp / WEIGHTS_NAME)
        if not fp16:  # the inference form of exactly these weights (its sha256 goes into config.json)
            write_inference_form(tmp, trainable, config)
        atomic_write_json(tmp / CONFIG_NAME, config)
        write_model_card(tmp)
    entry = {
        "arch": config["arch"], "task": config["task"], "dataset": config["dataset"],
        "folder": rel, "file": f"{rel}/{WEIGHTS_NAME}",
        "sha256": sha256_file(target / WEIGHTS_NAME), "size": (target / WEIGHTS_NAME).stat().st_size,
        "config_sha256": sha256_file(target / CONFIG_NAME),
        "hf_repo_id": None, "hf_revision": None,
        "metrics": config.get("metrics") or {}, "recipe": release_recipe(config),
    }
    if tag:
        entry["tag"] = tag
    entry["input_contract"] = config["input_contract"]
    key = entry_key(entry)
    kept = [e for e in data["weights"] if entry_key(e) != key]
    if default:  # one default per arch/task/dataset: this one
        entry["default"] = True
        for other in kept:
            if entry_key(other)[:3] == key[:3]:
                other.pop("default", None)
    data["weights"] = kept + [entry]
    data["weights"].sort(key=lambda e: (e["arch"], e["task"], e["dataset"], e.get("tag") or ""))
    atomic_write_json(manifest, data, sort_keys=False)
    return entry


def release_recipe(config: dict) -> dict:
    """The manifest's record of how a checkpoint was made: its recipe, the images it saw, and the
    compute its training run recorded (``lenszoo.compute``: None where a figure was not recorded)."""
    from .compute import compute_figures

    recipe = dict(config.get("recipe") or {})
    if recipe:  # runs from before these options existed trained in fp32, contiguous layout
        recipe.setdefault("precision", "fp32")
        recipe.setdefault("channels_last", False)
    recipe["images_seen"] = config.get("images_seen")
    recipe["compute"] = compute_figures(config.get("compute"), config.get("history"),
                                        images_at_checkpoint=config.get("images_seen"), epochs=recipe.get("epochs"),
                                        recipe=recipe)
    return recipe


def record_evaluations(path, evaluations, *, manifest: Path | None = None) -> tuple[dict, list[str]]:
    """Add the metrics of ``lenszoo evaluate`` results (``evaluations``: results.json files or the
    folders holding them) to the manifest entry of the released weights at ``path``, as
    ``metrics.<split>`` (test or holdout), without touching the weights folder (its files, their
    sha256s and any Hub pin stay as they are). Every result must be of exactly these weights
    (its weights_sha256 is the entry's) on the entry's own dataset. Returns (entry, splits)."""
    from .report import load_results

    manifest = Path(manifest) if manifest else manifest_path()
    data = read_manifest(manifest)
    folder = Path(path)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise LenszooError(f"{folder} has no {WEIGHTS_NAME}; give the released folder (weights/ARCH-TASK-DATASET) "
                           "whose manifest entry gets the metrics")
    sha = sha256_file(weights)
    entries = [e for e in data["weights"] if e["sha256"] == sha]
    if len(entries) > 1:  # the same weights released twice: the folder says which entry
        entries = [e for e in entries if (manifest.parent / e["folder"]).resolve() == folder.resolve()] or entries
    if not entries:
        raise LenszooError(f"the weights in {folder} are not released in {manifest} (no entry has their sha256 "
                           f"{sha[:12]}); release them first with `lenszoo release RUN`")
    entry = entries[0]
    label = entry_label(entry)
    chosen: dict[str, dict] = {}
    for record in load_results(evaluations):
        where = record["_path"]
        split = record.get("split", "test")
        if split not in RECORDED_SPLITS:
            raise LenszooError(f"{where} is an evaluation on the {split!r} split; a manifest records "
                               f"{' and '.join(RECORDED_SPLITS)} metrics only")
        evaluated = (record.get("model") or {}).get("weights_sha256")
        if evaluated != entry["sha256"]:
            raise LenszooError(f"{where} evaluated weights {str(evaluated)[:12]}, not the released {label} "
                               f"({entry['sha256'][:12]}); evaluate {entry['folder']} itself and pass that result")
        if str(record["dataset"]) != entry["dataset"] or record["task"] != entry["task"]:
            raise LenszooError(f"{where} is a {record['task']} evaluation on dataset {record['dataset']}; "
                               f"{label} records metrics on its own dataset {entry['dataset']} only")
        if split not in chosen or (record["metrics"].get("n") or 0) > (chosen[split].get("n") or 0):
            chosen[split] = scalar_metrics(record["metrics"])
    entry["metrics"] = {**entry.get("metrics", {}), **chosen}
    atomic_write_json(manifest, data, sort_keys=False)
    return entry, sorted(chosen)


def record_publication(arch: str, task: str, dataset: str, repo_id: str, commit_sha: str,
                       *, manifest: Path | None = None, tag: str | None = None) -> dict:
    """Store the Hub repo and the commit sha an entry was published at."""
    manifest = Path(manifest) if manifest else manifest_path()
    data = read_manifest(manifest)
    for entry in data["weights"]:
        if entry_key(entry) == (arch, task, dataset, tag):
            entry["hf_repo_id"], entry["hf_revision"] = repo_id, commit_sha
            atomic_write_json(manifest, data, sort_keys=False)
            return entry
    raise LenszooError(f"{manifest} has no entry for {arch}/{task}/{dataset}; run `lenszoo release` first")
