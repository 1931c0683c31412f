"""What a model name means: the one parser behind ``lenszoo.load``, ``evaluate``, ``predict``,
``download``, ``publish`` and ``release``.

A name is, in this order:

- ``hf-hub:ORG/NAME[@REVISION]`` — a lenszoo checkpoint on the Hugging Face Hub;
- a path, if it looks like one: it starts with ``/``, ``./``, ``../`` or ``~``, or holds a
  path separator — a run directory (``run.json``) or a checkpoint folder (``config.json``);
- otherwise a registered architecture, whose released weights ``task``, ``dataset`` and ``tag``
  pick; ``ARCH.TAG`` (timm's way) is the same as ``tag=TAG``.

A bare name never silently becomes a path: a folder named ``c8_steerable`` in the working
directory does not shadow the architecture. An unknown bare name that is also a folder here
is an error that says to write ``./NAME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import CONFIG_NAME, RUN_FILE
from ..errors import LenszooError, UnknownNameError
from ..names import check_name, check_repo_id
from ..registry import registry
from ..tasks import check_task
from .manifest import find_entry

HUB_PREFIX = "hf-hub:"
KINDS = ("released", "hub", "run", "checkpoint")


@dataclass(frozen=True)
class ModelRef:
    kind: str  # released | hub | run | checkpoint
    name: str  # as the user wrote it
    arch: str | None = None
    task: str | None = None
    dataset: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None
    tag: str | None = None

    @property
    def checkpoint_folder(self) -> Path:
        """The checkpoint folder of a run or checkpoint reference."""
        if self.kind == "checkpoint":
            return self.path
        if self.kind == "run":
            best = self.path / "best"
            if not (best / CONFIG_NAME).is_file():
                raise LenszooError(f"run {self.path} has no best checkpoint yet (no epoch finished); train longer "
                                   f"or resume it with `lenszoo train --resume --out {self.path}`")
            return best
        raise LenszooError(f"{self.name} is not on this disk; it names {self.kind} weights")

    def describe(self) -> dict:
        if self.kind in ("run", "checkpoint"):
            return {"kind": self.kind, "path": str(self.path.resolve())}
        if self.kind == "hub":
            return {"kind": "hub", "repo_id": self.repo_id, "revision": self.revision}
        record = {"kind": "pretrained", "name": self.name, "task": self.task, "dataset": self.dataset}
        if self.tag:
            record["tag"] = self.tag
        return record


def parse_hf_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME@REV`` -> (repo_id, revision or None)."""
    spec = name.removeprefix(HUB_PREFIX)
    repo_id, _, revision = spec.partition("@")
    if revision and (len(revision) > 255 or not revision.isprintable() or any(c.isspace() for c in revision)):
        raise LenszooError(f"invalid revision {revision!r} in {name!r}; give a commit sha, tag or branch name")
    return check_repo_id(repo_id), (revision or None)


def looks_like_path(name) -> bool:
    if isinstance(name, os.PathLike):
        return True
    text = str(name)
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return text in (".", "..") or text.startswith(("~", ".")) or any(sep in text for sep in separators)


def _path_ref(name, text: str) -> ModelRef:
    path = Path(text).expanduser()
    if not path.exists():
        hint = f"; for a Hub repo write {HUB_PREFIX}{text}" if text.count("/") == 1 and not text.startswith(
            (".", "/", "~")) else ""
        raise LenszooError(f"{text} does not exist; pass a run directory, a checkpoint folder, a registered "
                           f"architecture or {HUB_PREFIX}ORG/NAME{hint}")
    if not path.is_dir():
        from ..files import path_kind

        kind = path_kind(path)
        raise LenszooError(f"{text} is {'a file' if kind.startswith('a regular file') else kind + ', not a folder'}; "
                           "pass a run directory (run.json) or a checkpoint folder (config.json + model.safetensors)")
    if (path / RUN_FILE).is_file() or (path / "best" / CONFIG_NAME).is_file():
        return ModelRef("run", str(name), path=path)
    if (path / CONFIG_NAME).is_file():
        return ModelRef("checkpoint", str(name), path=path)
    raise LenszooError(f"{text} is neither a run directory (run.json) nor a checkpoint folder "
                       "(config.json + model.safetensors)")


def resolve_name(name, *, task: str | None = None, dataset: str | None = None,
                 accept: tuple[str, ...] = KINDS, tag: str | None = None) -> ModelRef:
    """A :class:`ModelRef` for ``name``; errors say how to write what was meant."""
    if name is None or str(name).strip() == "":
        raise LenszooError("no model given; pass an architecture name, hf-hub:ORG/NAME or a folder")
    text = str(name)
    paths_only = not ({"released", "hub"} & set(accept))
    if text.startswith(HUB_PREFIX):
        if "hub" not in accept:
            raise LenszooError(f"{text} is a Hub repo; this command takes {_accepted(accept)}")
        repo_id, revision = parse_hf_hub_name(text)
        return ModelRef("hub", text, repo_id=repo_id, revision=revision)
    if paths_only or looks_like_path(name):
        ref = _path_ref(name, text)
        if ref.kind not in accept:
            raise LenszooError(f"{text} is a {ref.kind} folder; this command takes {_accepted(accept)}")
        return ref
    if "." in text:  # ARCH.TAG: architecture names have no dots
        text, _, named_tag = text.partition(".")
        check_name("weights tag", named_tag, str(name))
        if tag is not None and tag != named_tag:
            raise LenszooError(f"{name} names tag {named_tag!r} but tag={tag!r} was given; give one of them")
        tag = named_tag
    try:
        registry.architecture(text)
    except UnknownNameError as exc:
        if Path(text).is_dir():
            raise LenszooError(f"{exc}; a folder named {text!r} is here: write ./{text} to use it") from None
        raise
    if "released" not in accept:
        raise LenszooError(f"{text} is an architecture name; this command takes {_accepted(accept)} "
                           f"(write ./{text} for a folder of that name)")
    check_task(task or "classify")
    if dataset is None:  # never silently weights trained on other data: one dataset, or say which
        dataset = find_entry(text, task or "classify", None, tag=tag).dataset
    return ModelRef("released", str(name), arch=text, task=task or "classify", dataset=dataset, tag=tag)


def _accepted(accept) -> str:
    words = {"released": "a registered architecture", "hub": f"{HUB_PREFIX}ORG/NAME", "run": "a run directory",
             "checkpoint": "a checkpoint folder"}
    return " or ".join(words[k] for k in KINDS if k in accept)


def resolve_checkpoint_folder(path) -> Path:
    """A checkpoint folder, or the best checkpoint of a training run directory."""
    return resolve_name(path, accept=("run", "checkpoint")).checkpoint_folder
