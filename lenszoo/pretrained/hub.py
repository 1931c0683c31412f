"""Transport to and from the Hugging Face Hub: commit-pinned downloads into the HF cache, and
uploads of a checkpoint folder. What is published, and the card it carries, is decided above
(``lenszoo.pretrained.publish``).

Endpoint, cache and offline settings are read from the environment at call
time (``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_HUB_OFFLINE``), not
when huggingface_hub is first imported, so they can change within a process.
The token comes from ``HF_TOKEN`` or the HF login and is never printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..checkpoint import CARD_NAME, CONFIG_NAME, INFERENCE_NAME, WEIGHTS_NAME
from ..errors import LenszooError
from ..names import check_repo_id

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


# -- upload --------------------------------------------------------------------
@dataclass
class Published:
    repo_id: str
    url: str
    commit_sha: str
    tag: str | None


def upload_checkpoint(folder: Path, repo_id: str, card: Callable[[str], str], *, what: str, tag: str | None = None,
                      private: bool = False, token: str | None = None) -> Published:
    """Upload ``folder``'s checkpoint files to ``repo_id`` in two commits: config.json and the
    weights, then the card ``card(sha)`` writes for the first commit's sha (its load line pinned to
    it). Returns the weights' commit sha (the one to pin)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    _hub_constants_now()
    check_repo_id(repo_id)
    if is_offline():
        raise LenszooError("HF_HUB_OFFLINE is set: publishing needs the network; unset it and retry")
    api = HfApi(endpoint=endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=[
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
            for name in (*CHECKPOINT_FILES, INFERENCE_NAME) if (folder / name).is_file()],
            commit_message=f"lenszoo: {what}")
        sha = info.oid
        text = card(sha).encode()
        final = api.create_commit(repo_id, operations=[CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=text)],
                                  commit_message=f"lenszoo: model card for {what}, pinned to {sha[:12]}")
        if tag:
            api.create_tag(repo_id, tag=tag, revision=final.oid, exist_ok=True)
    except HfHubHTTPError as exc:
        raise _hub_error(exc, f"publishing to {repo_id} failed") from None
    except _network_errors() as exc:
        raise _unreachable(exc, f"publishing to {repo_id} failed") from None
    base = (endpoint() or "https://huggingface.co").rstrip("/")
    return Published(repo_id, f"{base}/{repo_id}", sha, tag)


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
