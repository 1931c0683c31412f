"""``lenszoo release``: a checkpoint folder copied into ``weights/`` and recorded in the
manifest, and the records added to an entry later (evaluations, a Hub publication)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, is_checkpoint_folder, load_checkpoint, read_config, write_inference_form
from ..errors import LenszooError
from ..files import atomic_folder, atomic_write_json, atomic_write_text, claim_output, honour_umask, json_text, \
    path_kind, sha256_bytes, sha256_file
from ..names import check_name
from ..tasks import TASKS
from .card import model_card_text, write_model_card
from .manifest import MANIFEST_ENV, MANIFEST_NAME, SCHEMA_VERSION, Weights, entry_key, entry_label, manifest_path, \
    read_manifest, source_checkout, validate_manifest


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
    honour_umask(target)


def release(checkpoint_folder, *, manifest: Path | None = None, run_dir=None, fp16: bool = False,
            tag: str | None = None, default: bool = False) -> dict:
    """Copy a checkpoint folder to ``weights/ARCH-TASK-DATASET[.TAG]/`` and record it in the manifest;
    weights released under a name that already has some replace them in that entry's folder.

    Test-split metrics that ``lenszoo evaluate`` wrote for these exact weights (under the run
    directory's ``eval/``) are added to the released config, card and manifest entry. Everything
    is checked before anything is written: the names that become the folder name, the manifest,
    and that the target folder is new or an earlier lenszoo checkpoint."""
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
    if default and tag:  # the untagged weights it displaces need a name of their own first
        untagged = [e for e in data["weights"] if entry_key(e) == (config["arch"], config["task"], config["dataset"], None)]
        if untagged:
            raise LenszooError(f"{entry_label(untagged[0])} has untagged weights, which no name could load once "
                               f"{config['arch']}.{tag} is the default: tag them first (lenszoo release "
                               f"{untagged[0]['folder']} --retag TAG), then release with --default")

    staging = Path(tempfile.mkdtemp(prefix=".lenszoo-release-", dir=manifest.parent if manifest.parent.is_dir()
                                    else None))
    try:
        return _release(source, config, data, manifest, run_dir, fp16, staging, trainable, tag, default)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_manifest_target(manifest: Path) -> None:
    """Before a release writes anything: its manifest is a regular file or new, and the folder that
    holds it (with weights/) can be written, so a release never stops half-way on either."""
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
    from ..registry import get_dataset

    own = getattr(get_dataset(config["dataset"]), "config", None)
    if own is not None and json.loads(json.dumps(own)) != used:
        raise LenszooError(f"{where}: trained on dataset {config['dataset']} simulated with a changed config "
                           f"(lenszoo simulate --set); released weights are named after a dataset's own config, "
                           f"so evaluate and share this run folder instead")


def _release(source, config, data, manifest, run_dir, fp16, staging, trainable, tag, default) -> dict:
    from ..contract import weights_contract

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
    key = (config["arch"], config["task"], config["dataset"], tag or None)
    replaced = next((e for e in data["weights"] if entry_key(e) == key), None)
    # new weights under a released name take that name's folder and default: a folder renamed by
    # --retag keeps its name, and no orphaned folder is left beside the new one
    rel = replaced["folder"] if replaced else \
        f"weights/{config['arch']}-{config['task']}-{config['dataset']}" + (f".{tag}" if tag else "")
    default = default or bool(replaced and replaced.get("default"))
    target = manifest.parent / rel
    claim_output(target, what="lenszoo checkpoint folder", is_ours=is_checkpoint_folder, option="release target")
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
    kept = [e for e in data["weights"] if entry_key(e) != key]
    if default:  # one default per arch/task/dataset: this one
        entry["default"] = True
        for other in kept:
            if entry_key(other)[:3] == key[:3]:
                other.pop("default", None)
    data["weights"] = kept + [entry]
    data["weights"].sort(key=lambda e: (e["arch"], e["task"], e["dataset"], e.get("tag") or ""))
    atomic_write_json(manifest, data, sort_keys=False)
    return Weights.from_entry(entry, manifest.parent)


def release_recipe(config: dict) -> dict:
    """The manifest's record of how a checkpoint was made: its recipe, the images it saw, and the
    compute its training run recorded (``lenszoo.compute``: None where a figure was not recorded)."""
    from ..compute import compute_figures

    recipe = dict(config.get("recipe") or {})
    if recipe:  # a recipe without these options trained in fp32, contiguous layout
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
    ``metrics.<split>`` (test or holdout), and to its model card; the weights, config.json (their
    sha256s) and any Hub pin stay as they are. Every result must be of exactly these weights
    (its weights_sha256 is the entry's) on the entry's own dataset. Returns (entry, splits)."""
    from ..report import load_results

    manifest = Path(manifest) if manifest else manifest_path()
    data = read_manifest(manifest)
    entry = released_entry(data, path, manifest, "gets the metrics")
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
    folder = manifest.parent / entry["folder"]
    config = read_config(folder)
    atomic_write_json(manifest, data, sort_keys=False)
    atomic_write_text(folder / CARD_NAME, model_card_text(config, entry=entry))
    return Weights.from_entry(entry, manifest.parent), sorted(chosen)


def released_entry(data: dict, path, manifest: Path, purpose: str) -> dict:
    """The manifest entry (of ``data``, the JSON of ``manifest``) of the released weights folder ``path``,
    found by its weights' sha256 (and by folder where the same weights are released twice)."""
    folder = Path(path)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise LenszooError(f"{folder} has no {WEIGHTS_NAME}; give the released folder (weights/ARCH-TASK-DATASET) "
                           f"whose manifest entry {purpose}")
    sha = sha256_file(weights)
    entries = [e for e in data["weights"] if e["sha256"] == sha]
    if len(entries) > 1:  # the same weights released twice: the folder says which entry
        entries = [e for e in entries if (manifest.parent / e["folder"]).resolve() == folder.resolve()] or entries
    if not entries:
        raise LenszooError(f"the weights in {folder} are not released in {manifest} (no entry has their sha256 "
                           f"{sha[:12]}); release them first with `lenszoo release RUN`")
    return entries[0]


def rename_release(path, *, tag: str | None = None, default: bool = False,
                   manifest: Path | None = None) -> Weights:
    """Change, in place, the name by which the released weights at ``path`` load: give them ``tag``
    (written into their config.json, model card and manifest entry; the folder and the weights stay
    as they are) and/or make them the ``default`` (what an untagged name loads for their arch, task
    and dataset). Everything is checked before anything is written; a change that would leave
    other weights without a name (untagged beside a tagged default) is refused, as is retagging
    weights pinned on the Hub, whose published config.json would then disagree."""
    manifest = Path(manifest) if manifest else manifest_path()
    data = read_manifest(manifest)
    entry = released_entry(data, path, manifest, "is renamed")
    label, folder = entry_label(entry), manifest.parent / entry["folder"]
    files = {}
    if tag is not None and tag != entry.get("tag"):
        check_name("tag", tag, "--retag")
        if entry.get("hf_repo_id"):
            raise LenszooError(f"{label} is published at {entry['hf_repo_id']}@{entry['hf_revision'][:12]}; retagging "
                               "changes its config.json, which the pinned Hub copy would no longer match: keep its "
                               "tag, or release the run again under the new tag and publish that")
        config = read_config(folder)
        config["tag"] = tag
        files[folder / CONFIG_NAME] = json_text(config)
        files[folder / CARD_NAME] = model_card_text(config, entry=entry)
        entry["tag"] = tag
        entry["config_sha256"] = sha256_bytes(files[folder / CONFIG_NAME].encode("utf-8"))
    if default:
        for other in data["weights"]:
            if entry_key(other)[:3] == entry_key(entry)[:3]:
                other.pop("default", None)
        entry["default"] = True
    problems = validate_manifest(data)
    if problems:
        raise LenszooError(f"cannot rename {label}: {problems[0]}")
    for target, text in files.items():
        atomic_write_text(target, text)
    atomic_write_json(manifest, data, sort_keys=False)
    return Weights.from_entry(entry, manifest.parent)


def record_publication(arch: str, task: str, dataset: str, repo_id: str, commit_sha: str,
                       *, manifest: Path | None = None, tag: str | None = None) -> dict:
    """Store the Hub repo and the commit sha an entry was published at."""
    manifest = Path(manifest) if manifest else manifest_path()
    data = read_manifest(manifest)
    for entry in data["weights"]:
        if entry_key(entry) == (arch, task, dataset, tag):
            entry["hf_repo_id"], entry["hf_revision"] = repo_id, commit_sha
            atomic_write_json(manifest, data, sort_keys=False)
            return Weights.from_entry(entry, manifest.parent)
    raise LenszooError(f"{manifest} has no entry for {arch}/{task}/{dataset}; run `lenszoo release` first")
