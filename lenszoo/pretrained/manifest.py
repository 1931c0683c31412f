"""``weights_manifest.json``: where it is, what an entry holds, and which entry a name means.

Each entry becomes a frozen :class:`Weights` record (torchvision's ``Weights(url, transforms,
meta)`` is the model): where the weights are, their sha256s, the metrics and recipe they were
released with, the input contract (what images they expect), the tag and whether they are the
default. A record reads like its JSON entry too (``w["sha256"]``, ``w.get("tag")``).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..checkpoint import WEIGHTS_NAME
from ..errors import LenszooError
from ..names import COMMIT_RE, is_valid_name, is_valid_repo_id
from ..tasks import TASKS

MANIFEST_ENV = "LENSZOO_MANIFEST"
MANIFEST_NAME = "weights_manifest.json"
SCHEMA_VERSION = 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

PACKAGED_ZOO = Path(__file__).resolve().parent.parent / "zoo"  # what a wheel carries (see setup.py)


# -- location -------------------------------------------------------------------
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
    top = Path(__file__).resolve().parent.parent.parent
    try:
        pyproject = (top / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return top if 'name = "lenszoo"' in pyproject and (top / MANIFEST_NAME).is_file() else None


def is_packaged(manifest_dir: Path) -> bool:
    """Whether ``manifest_dir`` is the copy of the zoo an installed wheel carries."""
    try:
        return Path(manifest_dir).resolve() == PACKAGED_ZOO
    except OSError:
        return False


# -- the record -----------------------------------------------------------------
@dataclass(frozen=True)
class Weights(Mapping):
    """One released set of weights, as its manifest entry records it, and the folder that entry's
    paths are relative to (``manifest_dir``: not part of the entry, never written)."""

    arch: str
    task: str
    dataset: str
    folder: str
    file: str
    sha256: str
    size: int
    config_sha256: str
    metrics: dict
    recipe: dict
    hf_repo_id: str | None = None
    hf_revision: str | None = None
    # timm-style weight tags: ``arch.tag`` names another set of weights for the same arch/task/dataset;
    # ``default`` marks the weights an untagged name means (else the untagged entry)
    tag: str | None = None
    default: bool = False
    input_contract: dict | None = None  # what its training images were (lenszoo/contract.py)
    # what bf16 inference changed against fp32 (benchmarks/bf16_parity.py); beyond the limits in
    # lenszoo/inference/scorer.py, `predict --precision auto` keeps fp32 for these weights
    bf16_parity: dict | None = None
    manifest_dir: Path | None = field(default=None, compare=False)

    @classmethod
    def from_entry(cls, entry: dict, manifest_dir=None) -> "Weights":
        """The record of a manifest entry (checked by :func:`validate_manifest`)."""
        return cls(**{k: v for k, v in entry.items() if k in ENTRY_FIELDS},
                   manifest_dir=Path(manifest_dir) if manifest_dir is not None else None)

    def to_entry(self) -> dict:
        """The JSON entry, as the manifest stores it (optional fields only where they are set)."""
        return dict(self.items())

    @property
    def key(self) -> tuple:
        """What identifies a set of released weights: arch, task, dataset and tag."""
        return self.arch, self.task, self.dataset, self.tag

    @property
    def label(self) -> str:
        return f"{self.arch}{f'.{self.tag}' if self.tag else ''}/{self.task}/{self.dataset}"

    @property
    def base(self) -> Path:
        """The folder the entry's paths are relative to."""
        return Path(self.manifest_dir) if self.manifest_dir is not None else manifest_path().parent

    @property
    def local_folder(self) -> Path:
        return self.base / self.folder

    # read like the JSON entry: the fields it holds, optional ones only where set
    def __getitem__(self, name):
        if name not in ENTRY_FIELDS or (name in OPTIONAL_FIELDS and name not in _set_fields(self)):
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(_set_fields(self))

    def __len__(self):
        return len(_set_fields(self))


def _set_fields(record: Weights) -> list[str]:
    return [f.name for f in fields(record) if f.name in ENTRY_FIELDS
            and (f.name not in OPTIONAL_FIELDS or getattr(record, f.name) not in (None, False))
            or f.name in ("hf_repo_id", "hf_revision")]


# -- validation -----------------------------------------------------------------
ENTRY_FIELDS = {
    # field: (types, required)
    "arch": (str, True), "task": (str, True), "dataset": (str, True),
    "folder": (str, True), "file": (str, True), "sha256": (str, True), "size": (int, True),
    "config_sha256": (str, True),
    "hf_repo_id": ((str, type(None)), False), "hf_revision": ((str, type(None)), False),
    "metrics": (dict, True), "recipe": (dict, True),
    "tag": ((str, type(None)), False), "default": (bool, False),
    "input_contract": (dict, False), "bf16_parity": (dict, False),
}
OPTIONAL_FIELDS = ("tag", "default", "input_contract", "bf16_parity")  # written only where set
BF16_PARITY_FIELDS = {"split": str, "n": int, "accuracy_change": float, "max_probability_change": float,
                      "mae_change": float}


def entry_key(entry) -> tuple:
    """What identifies a set of released weights: arch, task, dataset and tag."""
    return entry["arch"], entry["task"], entry["dataset"], entry.get("tag")


def entry_label(entry) -> str:
    arch = entry["arch"] + (f".{entry['tag']}" if entry.get("tag") else "")
    return f"{arch}/{entry['task']}/{entry['dataset']}"


def _entry_problems(entry: dict, label: str) -> list[str]:
    problems = []
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
    return problems


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
        problems += _entry_problems(entry, label)
        key = (entry.get("arch"), entry.get("task"), entry.get("dataset"), entry.get("tag"))
        if key in seen:
            problems.append(f"{label}: duplicate entry")
        seen.add(key)
        if entry.get("default") is True:
            if key[:3] in defaults:
                problems.append(f"{label}: a second default for {'/'.join(map(str, key[:3]))}")
            defaults.add(key[:3])
    for index, entry in enumerate(entries):  # untagged weights beside a tagged default have no name left
        if isinstance(entry, dict) and entry.get("tag") is None and not entry.get("default") \
                and (entry.get("arch"), entry.get("task"), entry.get("dataset")) in defaults:
            problems.append(f"entry {index} ({entry.get('arch')}/{entry.get('task')}/{entry.get('dataset')}): "
                            f"untagged and not the default, so no name loads them; tag them first "
                            f"(lenszoo release {entry.get('folder')} --retag TAG)")
    return problems


def read_manifest(path: Path | None = None) -> dict:
    """The manifest's JSON (entries as plain dicts, for rewriting it), checked."""
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


# -- which entry ----------------------------------------------------------------
def released_weights(path: Path | None = None) -> list[Weights]:
    """The records of one manifest (``path``), or of lenszoo's and every plugin's (``register_weights``)."""
    if path is not None:
        return [Weights.from_entry(e, Path(path).parent) for e in read_manifest(path)["weights"]]
    records = released_weights(manifest_path())
    seen = {w.key for w in records}
    from ..registry import registry

    for plugin, manifest in sorted(registry.weight_manifests.items()):
        for record in released_weights(manifest):
            if record.key in seen:  # lenszoo's own (or an earlier plugin's) entry wins
                warnings.warn(f"plugin {plugin!r} ships weights for {record.label}, which are already "
                              "released; its copy is ignored", stacklevel=2)
                continue
            seen.add(record.key)
            records.append(record)
    return records


def is_default(entry, group) -> bool:
    """Whether ``entry`` is what an untagged name means among ``group`` (one arch/task/dataset):
    the entry marked default, else the untagged one."""
    if any(e.get("default") for e in group):
        return bool(entry.get("default"))
    return entry.get("tag") is None


def find_entry(arch: str, task: str, dataset: str | None = None, path: Path | None = None, *,
               tag: str | None = None) -> Weights:
    """The released weights for ``arch``/``task``/``dataset`` and ``tag`` (None: the default weights).

    Without ``dataset``, the architecture's weights for ``task`` must exist for one dataset only:
    a default never silently picks weights trained on other data than the user's."""
    entries = released_weights(path)
    mine = [e for e in entries if (e.arch, e.task) == (arch, task)]
    if dataset is None:
        datasets = sorted({e.dataset for e in mine})
        if len(datasets) > 1:
            raise LenszooError(f"{arch} has {task} weights for several datasets ({', '.join(datasets)}): say which "
                               f"matches your images with dataset= (--dataset), e.g. dataset={datasets[0]!r}; "
                               "`lenszoo info " + arch + " --dataset D` says what each expects")
        dataset = datasets[0] if datasets else None
    group = [e for e in mine if e.dataset == dataset]
    chosen = [e for e in group if e.tag == tag] if tag is not None else [e for e in group if is_default(e, group)]
    if chosen:
        return chosen[0]
    if group:  # the weights exist, the tag does not
        tags = sorted(e.tag for e in group if e.tag)
        raise LenszooError(f"{arch}/{task}/{dataset} has no weights tagged {tag!r}; its tags: "
                           f"{', '.join(tags) or 'none'} (an untagged name loads the default weights)")
    have = sorted(e.label for e in entries)
    raise LenszooError(
        f"no released weights for arch={arch!r} task={task!r} dataset={dataset!r}; "
        + (f"released: {', '.join(have)}" if have else "none are released yet")
        + " (train your own with `lenszoo train`)"
    )
