"""The run directory ``lenszoo train`` owns, and the resumable state in it.

    run.json            the run's config (what --resume continues), run format version, world size
    state/LATEST        name of the newest complete resumable state
    state/NNNNNN/       weights/ (a checkpoint folder) + trainer_state.pt (optimizer, progress)
    best/  last/        checkpoint folders (model.safetensors + config.json), best on validation
    metrics.jsonl       one JSON line per epoch
    learning_curve.png

Only rank 0 writes, holding the run's lock (``.lenszoo.lock`` inside it) for the whole command,
so a second train of the same run directory is refused. Each state folder is written whole before
LATEST names it, so a kill at any point leaves the previous state usable.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import RUN_FILE, load_checkpoint, save_checkpoint
from .errors import LenszooError
from .files import atomic_folder, atomic_write_text, claim_output
from .locks import hold_lock, lock_inside

if TYPE_CHECKING:
    from .train.config import TrainConfig

RUN_FORMAT = "lenszoo-run"
RUN_VERSION = 2
STATE_DIR = "state"
LATEST_FILE = "LATEST"
TRAINER_STATE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"


def is_run_directory(path) -> bool:
    return (Path(path) / RUN_FILE).is_file()


def lock_run(run_dir):
    """Hold the run directory's lock (a context manager): one command writes a run at a time."""
    return hold_lock(lock_inside(run_dir), target=run_dir, what="another lenszoo train")


def claim_new_run(run_dir):
    """Check that a new run may start in ``run_dir``: new or empty, never over a run or a user's files."""
    if (Path(run_dir) / RUN_FILE).exists():
        raise LenszooError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    claim_output(run_dir, what="lenszoo run directory", is_ours=lambda path: False)


def read_run(run_dir) -> dict:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        if Path(run_dir).is_dir() and any(Path(run_dir).iterdir()):
            raise LenszooError(f"{run_dir} is not a lenszoo run directory (no {RUN_FILE}); "
                               "pass the --out of a `lenszoo train` run")
        raise LenszooError(f"no run to resume at {run_dir}; start it without --resume")
    try:
        run = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LenszooError(f"{path} is not valid JSON ({exc}); the run cannot be resumed") from None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT or not isinstance(run.get("config"), dict):
        raise LenszooError(f"{path} is not a lenszoo run file; pass the --out of a `lenszoo train` run")
    version, world = run.get("version", 1), run.get("world_size", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version > RUN_VERSION:
        raise LenszooError(f"{path} has run format version {version!r}; this lenszoo resumes up to {RUN_VERSION}: "
                           "upgrade lenszoo")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise LenszooError(f"{path} is damaged (world_size {world!r}); the run cannot be resumed")
    return run


def config_for_resume(run_dir, given: TrainConfig, given_fields: set[str]) -> TrainConfig:
    """The stored run config, with runtime options taken from ``given``.

    Every other option given on the command line must equal the stored one.
    """
    from .train.config import RUNTIME_OPTIONS, TrainConfig
    run = read_run(run_dir)
    stored = run["config"]
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise LenszooError(f"{Path(run_dir) / RUN_FILE} holds options this lenszoo does not know "
                           f"({', '.join(unknown[:3])}); resume it with the lenszoo version that started it")
    if "arch" not in stored:
        raise LenszooError(f"{Path(run_dir) / RUN_FILE} is damaged (no arch); the run cannot be resumed")
    runtime = set(RUNTIME_OPTIONS)
    if run.get("version", 1) < 2:  # what version-1 runs computed before these options existed
        stored.setdefault("precision", "fp32")
        stored.setdefault("channels_last", False)
        if not stored.get("stream"):
            stored["epoch_size"] = None  # an epoch was one pass over stored data
        runtime.add("threads")  # not recorded then
    stored.setdefault("nuisance", "none")  # a run.json without the option drew none
    conflicts = []
    for name in sorted(given_fields - runtime):
        if name in stored and getattr(given, name) != stored[name]:
            conflicts.append(f"--{name.replace('_', '-')} {getattr(given, name)!r} (run has {stored[name]!r})")
    if conflicts:
        raise LenszooError(f"{run_dir} is a different run: " + "; ".join(conflicts)
                           + ". Drop those options to resume it, or use a new --out for a new run")
    values = {**stored, **{k: getattr(given, k) for k in runtime}}
    values["out"] = str(run_dir)
    config = TrainConfig(**values)
    try:
        config.check()
    except LenszooError as exc:
        raise LenszooError(f"{Path(run_dir) / RUN_FILE} is damaged ({exc}); the run cannot be resumed") from None
    return config


def write_run_file(run_dir: Path, config: TrainConfig, world_size: int):
    from . import __version__

    run = {"format": RUN_FORMAT, "version": RUN_VERSION, "config": asdict(config), "world_size": world_size,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "lenszoo_version": __version__,
           "command": sys.argv}
    atomic_write_text(run_dir / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")


def latest_state(run_dir: Path) -> Path | None:
    pointer = run_dir / STATE_DIR / LATEST_FILE
    if not pointer.is_file():
        return None
    folder = run_dir / STATE_DIR / pointer.read_text().strip()
    if not (folder / TRAINER_STATE).is_file():
        raise LenszooError(f"{pointer} names {folder.name}, which is incomplete; the run directory was edited by hand")
    return folder


def clean_leftovers(run_dir: Path, keep: Path | None):
    """Remove what an interrupted write left behind: temporary folders and unreferenced states."""
    for path in run_dir.glob(".*.tmp"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    for name in ("best", "last"):
        # atomic_folder moves the old folder aside just before the new one lands; a kill in
        # between leaves only the old one: put it back (the resumed run rewrites it anyway).
        for old in sorted(run_dir.glob(f".{name}.old-*")):
            if not (run_dir / name).exists():
                os.replace(old, run_dir / name)
            else:
                shutil.rmtree(old, ignore_errors=True)
    state_root = run_dir / STATE_DIR
    if state_root.is_dir():
        for path in state_root.iterdir():
            if path.name != LATEST_FILE and (keep is None or path.name != keep.name):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def save_state(run_dir: Path, model, optimizer, progress: dict, checkpoint_kwargs: dict):
    """Write a new resumable state folder, then point LATEST at it (the commit), then drop older ones."""
    import torch

    progress["save_index"] += 1
    name = f"{progress['save_index']:06d}"
    state_root = run_dir / STATE_DIR
    with atomic_folder(state_root / name) as tmp:
        save_checkpoint(tmp / "weights", model, claim=False, **checkpoint_kwargs)
        torch.save({"optimizer": optimizer.state_dict(), "progress": progress}, tmp / TRAINER_STATE)
    atomic_write_text(state_root / LATEST_FILE, name + "\n")
    for path in state_root.iterdir():
        if path.is_dir() and path.name != name:
            shutil.rmtree(path, ignore_errors=True)


def load_state(folder: Path, device):
    """(model, optimizer state, progress) of a state folder; the pickle part loads with weights_only=True."""
    import torch

    model = load_checkpoint(folder / "weights", device=device)
    try:
        state = torch.load(folder / TRAINER_STATE, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means the same thing to the user
        raise LenszooError(f"cannot read {folder / TRAINER_STATE} ({type(exc).__name__}: {exc}); "
                           "the run cannot be resumed from this state") from None
    return model, state["optimizer"], state["progress"]


def read_metrics(run_dir: Path) -> list[dict] | None:
    """The per-epoch rows :func:`write_metrics` wrote, or None when they cannot be read."""
    try:
        lines = (Path(run_dir) / METRICS_FILE).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None


def write_metrics(run_dir: Path, history: list[dict]):
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))
