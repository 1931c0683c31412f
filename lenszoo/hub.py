"""Hugging Face Hub: model cards, publishing, commit-pinned downloads into the HF cache.

Endpoint, cache and offline settings are read from the environment at call
time (``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_HUB_OFFLINE``), not
when huggingface_hub is first imported, so they can change within a process.
The token comes from ``HF_TOKEN`` or the HF login and is never printed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CARD_NAME, CONFIG_NAME, INFERENCE_NAME, WEIGHTS_NAME, read_config, sha256_file
from .errors import LenszooError

# huggingface_hub's own repo-id rule (utils.validate_repo_id; tests check that both agree), plus
# lenszoo's: a namespace is required. Written out so that validating a manifest imports no httpx.
_REPO_PART = r"\b[A-Za-z0-9_.\-]{1,96}\b"
REPO_ID_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$", flags=re.ASCII)
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def is_valid_repo_id(repo_id) -> bool:
    return (isinstance(repo_id, str) and REPO_ID_RE.fullmatch(repo_id) is not None
            and "--" not in repo_id and ".." not in repo_id and not repo_id.endswith(".git"))
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_constants_now():
    """huggingface_hub reads HF_HUB_OFFLINE once, at its import; lenszoo reads it at call time, so
    a process that imported it while offline can still publish once the variable is unset."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = is_offline()


def cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def check_repo_id(repo_id: str) -> str:
    if not is_valid_repo_id(repo_id):
        raise LenszooError(f"invalid Hub repo id {repo_id!r}; use ORG/NAME: ASCII letters, digits, '-', '_' or '.', "
                           "at most 96 characters each, no '--' or '..', not ending in .git")
    return repo_id


def parse_hf_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME@REV`` -> (repo_id, revision or None)."""
    spec = name.removeprefix("hf-hub:")
    repo_id, _, revision = spec.partition("@")
    if revision and (len(revision) > 255 or not revision.isprintable() or any(c.isspace() for c in revision)):
        raise LenszooError(f"invalid revision {revision!r} in {name!r}; give a commit sha, tag or branch name")
    return check_repo_id(repo_id), (revision or None)


# -- model card ----------------------------------------------------------------
TASK_TYPES = {"classify": ("image-classification", "Image classification"),
              "regress": ("image-regression", "Axion-mass regression")}


def _numeric_metrics(metrics: dict):
    """(split, name, value) for every number in a possibly split-nested metrics dict."""
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            for name, inner in value.items():
                if isinstance(inner, (int, float)) and not isinstance(inner, bool) and name != "n":
                    yield key, name, float(inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield "val", key, float(value)


def _package_line(config: dict) -> str:
    """What to install to load a checkpoint: lenszoo, and the plugin package of its architecture."""
    import importlib.metadata

    packages = [("lenszoo", config.get("lenszoo_version"))]
    package = config.get("package")
    if package and package != "lenszoo":
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = None
        packages.append((package, version))
    return " ".join(f"`{name}=={version}`" if version else f"`{name}`" for name, version in packages)


def model_card_text(config: dict, repo_id: str | None = None, revision: str | None = None) -> str:
    """The card: metadata (model-index with every metric), the pinned load line, what to install,
    the metrics and the recipe. ``revision`` pins the load line to the commit holding the weights."""
    from huggingface_hub import EvalResult, ModelCardData

    arch, task, dataset = config["arch"], config["task"], config.get("dataset") or "unknown"
    task_type, task_name = TASK_TYPES.get(task, (task, task))
    dataset_id = f"lenszoo-sim-{dataset}"
    results = [
        EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset_id,
                   dataset_name=f"lenszoo simulated dataset {dataset}", dataset_split=split,
                   metric_type=name, metric_name=f"{name} ({split})", metric_value=value)
        for split, name, value in _numeric_metrics(config.get("metrics"))
    ]
    data = ModelCardData(
        library_name="lenszoo", license="mit", datasets=[dataset_id],
        tags=["lenszoo", "strong-lensing", "dark-matter", arch, task],
        model_name=f"{arch}-{task}-{dataset}" + (f".{config['tag']}" if config.get("tag") else ""),
        eval_results=results or None,
    )
    pin = f"@{revision}" if revision else ""
    tag = config.get("tag")
    named = f"{arch}.{tag}" if tag else arch
    load_line = (f'lenszoo.load("hf-hub:{repo_id}{pin}")' if repo_id
                 else f'lenszoo.load("{named}", task="{task}", dataset="{dataset}")')
    plugin = config.get("plugin")
    needs = _package_line(config) + (f" (the architecture comes from plugin `{plugin}`)"
                                     if config.get("package") not in (None, "lenszoo") else "")
    rows = "\n".join(f"| {split} | {name} | {value:.4g} |" for split, name, value in _numeric_metrics(config.get("metrics")))
    recipe = "\n".join(f"- `{k}`: {v}" for k, v in sorted((config.get("recipe") or {}).items()))
    from .contract import describe

    contract = "\n".join(f"- {what}: {value}" for what, value in describe(config.get("input_contract") or {})) \
        or "- not recorded (released before lenszoo stated input contracts)"
    target = "3 logits, classes " + ", ".join(config.get("class_names") or []) if task == "classify" \
        else "log10 of the axion mass in eV"
    return f"""---
{data.to_yaml()}
---

# {named} · {task} · dataset {dataset}

A lenszoo checkpoint: architecture `{arch}` trained to {task_name.lower()} on lenszoo's simulated strong-lensing
dataset **{dataset}** (64×64, one channel). Output: {target}.

```python
import lenszoo
model = {load_line}
x = model.preprocess(images)  # the normalisation this model was trained with
y = model(x)
```

Needs: pip install {needs}.

## Metrics

| split | metric | value |
|---|---|---|
{rows or "| - | - | - |"}

## Training recipe

{recipe or "- not recorded"}

Normalisation: `{config.get("normalization")}`. Images seen in training: {config.get("images_seen")}.
lenszoo version: {config.get("lenszoo_version")}.

## What images it expects

{contract}

`lenszoo predict` checks every image against this and writes a `flags` column for images that do
not look like the training images (sky level, noise, pedestal, centring, pixel scale).

## Limitations

Trained on simulations made with lenstronomy (lenszoo's dataset {dataset}); performance on real survey images
is not established.
"""


def write_model_card(folder, repo_id: str | None = None, revision: str | None = None,
                     config: dict | None = None) -> Path:
    folder = Path(folder)
    path = folder / CARD_NAME
    path.write_text(model_card_text(config or read_config(folder), repo_id, revision))
    return path


# -- publish -------------------------------------------------------------------
@dataclass
class Published:
    repo_id: str
    url: str
    commit_sha: str
    tag: str | None


def resolve_checkpoint_folder(path) -> Path:
    """A checkpoint folder, or the best checkpoint of a training run directory."""
    from .resolve import resolve_name

    return resolve_name(path, accept=("run", "checkpoint")).checkpoint_folder


def _network_errors() -> tuple:
    """The exceptions a request raises when the endpoint cannot be reached (no HTTP answer)."""
    errors: list = [OSError, TimeoutError]
    for module, name in (("httpx", "TransportError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _unreachable(exc, action: str) -> LenszooError:
    where = endpoint() or "https://huggingface.co"
    return LenszooError(f"{action}: cannot reach {where} ({type(exc).__name__}); check your network or HF_ENDPOINT")


def _hub_error(exc, action: str) -> LenszooError:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return LenszooError(f"{action}: the Hub refused the credentials (HTTP {status}); set HF_TOKEN or log in with `hf auth login`")
    detail = f"HTTP {status}" if status else type(exc).__name__
    return LenszooError(f"{action}: {detail}; check the repo id, your network and HF_ENDPOINT")


def publish(path, repo_id: str, *, tag: str | None = None, private: bool = False, token: str | None = None,
            run_dir=None) -> Published:
    """Upload a checkpoint folder to ``repo_id`` in two commits: config.json and the weights, then
    the model card, whose load line is pinned to the first commit. The card carries the test
    metrics ``lenszoo evaluate`` wrote for these exact weights (under ``run_dir``'s eval/). Returns
    the weights' commit sha (the one to pin)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    _hub_constants_now()

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
    from .weights import evaluated_test_metrics

    card_config = dict(config)
    test = evaluated_test_metrics(run_dir or Path(path), config)
    if test and "test" not in (config.get("metrics") or {}):
        card_config["metrics"] = {**(config.get("metrics") or {}), "test": test}
    api = HfApi(endpoint=endpoint(), token=token)
    what = f"{config['arch']} {config['task']} dataset {config.get('dataset')}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=[
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
            for name in (*CHECKPOINT_FILES, INFERENCE_NAME) if (folder / name).is_file()],
            commit_message=f"lenszoo: {what}")
        sha = info.oid
        card = model_card_text(card_config, repo_id, sha).encode()
        final = api.create_commit(repo_id, operations=[CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card)],
                                  commit_message=f"lenszoo: model card for {what}, pinned to {sha[:12]}")
        if tag:
            api.create_tag(repo_id, tag=tag, revision=final.oid, exist_ok=True)
    except HfHubHTTPError as exc:
        raise _hub_error(exc, f"publishing to {repo_id} failed") from None
    except _network_errors() as exc:
        raise _unreachable(exc, f"publishing to {repo_id} failed") from None
    base = (endpoint() or "https://huggingface.co").rstrip("/")
    return Published(repo_id, f"{base}/{repo_id}", sha, tag)


HUB_ORG_ENV = "LENSZOO_HUB_ORG"


def release_repo_id(org: str, entry: dict) -> str:
    """The one naming scheme of released checkpoints on the Hub: ``ORG/ARCH-TASK-DATASET[.TAG]``
    (the folder name under weights/)."""
    tag = f".{entry['tag']}" if entry.get("tag") else ""
    return check_repo_id(f"{org}/{entry['arch']}-{entry['task']}-{entry['dataset']}{tag}")


def publish_release(org: str | None, manifest: Path, *, tag: str | None = None, token: str | None = None,
                    log=print) -> list[tuple[dict, str]]:
    """Publish every entry of ``manifest`` to ``ORG/ARCH-TASK-DATASET`` and record the commit in the
    manifest; entries already published there (same repo, a recorded commit) are left alone, so a
    second run is a no-op for unchanged weights. Returns ``(entry, "published" | "unchanged")``."""
    from . import __version__
    from .weights import _matches, entry_label, read_manifest, record_publication

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
        if not _matches(folder, entry):
            raise LenszooError(f"{folder} does not match its sha256s in {manifest}; release it again before publishing")
        published = publish(folder, repo_id, tag=tag, token=token)
        record_publication(entry["arch"], entry["task"], entry["dataset"], repo_id, published.commit_sha,
                           manifest=manifest, tag=entry.get("tag"))
        log(f"{label}: published {repo_id}@{published.commit_sha[:12]} (tag {tag})")
        done.append((entry, "published"))
    return done


# -- download ------------------------------------------------------------------
def _lists_inference_form(config_path) -> bool:
    import json

    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("inference"), dict) \
        and config["inference"].get("file") == INFERENCE_NAME


def download_checkpoint(repo_id: str, revision: str | None = None, *, local_only: bool = False,
                        force: bool = False) -> Path:
    """Fetch config.json and model.safetensors of ``repo_id@revision`` into the HF cache.

    Returns the snapshot folder. With a 40-hex revision and a warm cache no
    request is made; ``local_only`` (or ``HF_HUB_OFFLINE=1``) never touches the network.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _hub_constants_now()

    check_repo_id(repo_id)
    offline = local_only or is_offline()
    paths = []
    wanted = list(CHECKPOINT_FILES)
    for filename in wanted:
        try:
            paths.append(hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir(), endpoint=endpoint(),
                local_files_only=offline, force_download=force and not offline,
            ))
        except LocalEntryNotFoundError:
            where = f"{repo_id}@{revision or 'main'}"
            if is_offline():
                raise LenszooError(
                    f"{where} is not in the Hugging Face cache and HF_HUB_OFFLINE=1; "
                    f"fetch it once online (`lenszoo download ...`), then load offline") from None
            if local_only:
                raise
            raise LenszooError(f"cannot reach the Hub to fetch {where}; check your network or HF_ENDPOINT") from None
        except RepositoryNotFoundError:
            raise LenszooError(f"Hub repo {repo_id!r} not found (or private without a token)") from None
        except RevisionNotFoundError:
            raise LenszooError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from None
        except EntryNotFoundError:
            raise LenszooError(f"{repo_id}@{revision or 'main'} has no {filename}: not a lenszoo checkpoint") from None
        except HfHubHTTPError as exc:
            raise _hub_error(exc, f"downloading {repo_id} failed") from None
        except _network_errors() as exc:
            raise _unreachable(exc, f"downloading {repo_id} failed") from None
        if filename == CONFIG_NAME and INFERENCE_NAME not in wanted and _lists_inference_form(paths[-1]):
            wanted.append(INFERENCE_NAME)  # the plain-torch form the config names comes along
    folders = {Path(p).parent for p in paths}
    if len(folders) != 1:  # a moving branch changed between the two files
        raise LenszooError(f"{repo_id}@{revision or 'main'} changed while downloading; pin a commit sha and retry")
    return folders.pop()
