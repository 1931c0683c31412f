"""A staged run (a curriculum): several trainings in one run directory, each starting from the
previous stage's best weights.

``lenszoo train --stages PLAN.json --out RUN`` trains stage k into ``RUN/stage-k/`` (an ordinary
run directory: exact resume, its own ``best/`` chosen on its own validation data) with
``--init RUN/stage-(k-1)/best``. ``RUN/stages.json`` records the plan and the base options, so
``lenszoo train --resume --out RUN`` continues the first unfinished stage, exactly, and then the
rest. When the last stage finishes, ``RUN/best`` and ``RUN/last`` are its checkpoints and
``RUN/metrics.jsonl`` the stages' epochs in order (``stage``, images counted across stages), so
``evaluate``, ``release`` and ``report`` read a staged run like any other.

A plan is a JSON list of stages; each stage names where its images come from and its budget,
and may change a recipe option:

    [{"data": "data/C-hst-strong-train", "val_data": "data/C-hst-strong-val", "epochs": 8, "epoch_size": 12000},
     {"data": "data/C-hst-train", "val_data": "data/C-hst-val", "epochs": 8, "epoch_size": 12000}]
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import LenszooError
from ..files import atomic_folder, atomic_write_json, atomic_write_text

STAGES_FORMAT = "lenszoo-staged-run"
STAGES_FILE = "stages.json"
# What a stage may set; everything else comes from the command's options (the same for every stage).
STAGE_KEYS = ("name", "data", "val_data", "stream", "dataset", "val_size", "epochs", "epoch_size", "lr",
              "schedule", "augment", "nuisance", "weight_decay")


def is_staged_run(run_dir) -> bool:
    return (Path(run_dir) / STAGES_FILE).is_file()


def stage_dir(run_dir, k: int) -> Path:
    return Path(run_dir) / f"stage-{k}"


def read_plan(source) -> list[dict]:
    """A plan from ``--stages`` (a JSON file, or the JSON text itself), checked."""
    text = str(source)
    path = Path(text)
    if not text.lstrip().startswith("[") and path.exists():
        from ..files import read_user_text

        text = read_user_text(path, "--stages")
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LenszooError(f"--stages is neither a JSON list of stages nor a file holding one ({exc.msg} at "
                           f"character {exc.pos}); see `lenszoo train --help`") from None
    return check_plan(plan)


def check_plan(plan) -> list[dict]:
    if not isinstance(plan, list) or not 1 <= len(plan) <= 20:
        raise LenszooError("--stages must be a JSON list of 1 to 20 stages, each an object such as "
                           '{"data": "data/X-train", "val_data": "data/X-val", "epochs": 8, "epoch_size": 12000}')
    for k, stage in enumerate(plan, 1):
        if not isinstance(stage, dict):
            raise LenszooError(f"--stages: stage {k} is {type(stage).__name__}, not an object")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise LenszooError(f"--stages: stage {k} sets {', '.join(unknown)}; a stage may set only: "
                               f"{', '.join(STAGE_KEYS)}")
        if not stage.get("data") and not stage.get("stream"):
            raise LenszooError(f"--stages: stage {k} says nowhere its images come from; give it \"data\" (a stored "
                               "training set) or \"stream\": true with a \"dataset\"")
    return plan


def _stage_config(base, stage: dict, k: int, run_dir: Path):
    values = {key: value for key, value in stage.items() if key != "name"}
    if values.get("data"):
        values.setdefault("stream", False)
    init = str(stage_dir(run_dir, k - 1) / "best") if k > 1 else base.init
    return replace(base, out=str(stage_dir(run_dir, k)), init=init, **values)


def train_stages(config, plan: list[dict] | None, *, resume: bool, log) -> dict:
    """Train every stage of a staged run in order (``resume``: continue one); a summary of the run."""
    from .config import RUNTIME_OPTIONS, TrainConfig
    from .loop import train

    run_dir = Path(config.out)
    if resume:
        record = _read_record(run_dir)
        plan = check_plan(record["stages"])
        runtime = {key: getattr(config, key) for key in RUNTIME_OPTIONS if key != "out"}
        base = replace(TrainConfig(**record["base"]), out=str(run_dir), **runtime)
    else:
        from ..files import claim_output
        from ..rundir import is_run_directory

        claim_output(run_dir, what="lenszoo run directory", is_ours=lambda p: is_run_directory(p) or is_staged_run(p))
        base = config
        for k, stage in enumerate(plan, 1):  # every stage's options, checked before anything starts
            _stage_config(base, stage, k, run_dir).resolved()
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / STAGES_FILE, {"format": STAGES_FORMAT, "version": 1, "stages": plan,
                                                  "base": {k: v for k, v in asdict(base).items() if k != "out"}})
    started, summary = time.monotonic(), None
    for k, stage in enumerate(plan, 1):
        folder = stage_dir(run_dir, k)
        left = None
        if base.max_minutes:
            left = base.max_minutes - (time.monotonic() - started) / 60
            if left <= 0:
                return _summary(run_dir, plan, k, summary, "budget")
        if (folder / "run.json").is_file():
            stage_config = TrainConfig(arch=base.arch, out=str(folder), max_minutes=left, workers=base.workers,
                                       quiet=base.quiet, device=base.device, verify=base.verify,
                                       save_every_minutes=base.save_every_minutes,
                                       save_every_steps=base.save_every_steps)
            summary = train(stage_config, resume=True, given_fields=set(), log=log)
        else:
            if k > 1 and not (stage_dir(run_dir, k - 1) / "best" / "config.json").is_file():
                raise LenszooError(f"stage {k - 1} of {run_dir} has no best checkpoint; resume it first")
            if not base.quiet:
                log(f"stage {k} of {len(plan)}" + (f" ({stage['name']})" if stage.get("name") else "")
                    + (f", from {stage_dir(run_dir, k - 1) / 'best'}" if k > 1 else ""))
            summary = train(replace(_stage_config(base, stage, k, run_dir), max_minutes=left), log=log)
        if summary["status"] != "finished":
            return _summary(run_dir, plan, k, summary, summary["status"])
    _finish(run_dir, plan)
    return _summary(run_dir, plan, len(plan), summary, "finished")


def _read_record(run_dir: Path) -> dict:
    try:
        record = json.loads((run_dir / STAGES_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LenszooError(f"{run_dir / STAGES_FILE} cannot be read ({exc}); the staged run cannot be resumed") from None
    if not isinstance(record, dict) or record.get("format") != STAGES_FORMAT or not isinstance(record.get("base"), dict):
        raise LenszooError(f"{run_dir / STAGES_FILE} is not a lenszoo staged-run record")
    return record


def _finish(run_dir: Path, plan: list[dict]) -> None:
    """The run's own best/, last/ and metrics.jsonl: the last stage's checkpoints, every stage's epochs."""
    last = stage_dir(run_dir, len(plan))
    for name in ("best", "last"):
        with atomic_folder(run_dir / name) as tmp:
            for item in (last / name).iterdir():
                shutil.copy2(item, tmp / item.name)
            config = json.loads((tmp / "config.json").read_text())
            config["stages"] = _stage_records(run_dir, plan)
            atomic_write_json(tmp / "config.json", config)
    lines, offset = [], 0
    for k in range(1, len(plan) + 1):
        rows = [json.loads(line) for line in (stage_dir(run_dir, k) / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
        for row in rows:
            lines.append(json.dumps({**row, "stage": k, "stage_images_seen": row["images_seen"],
                                     "images_seen": row["images_seen"] + offset}, sort_keys=True))
        offset += rows[-1]["images_seen"] if rows else 0
    atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")


def _stage_records(run_dir: Path, plan: list[dict]) -> list[dict]:
    """What a staged run's checkpoint records of each stage: its plan, data and best epoch."""
    records = []
    for k, stage in enumerate(plan, 1):
        saved = json.loads((stage_dir(run_dir, k) / "best" / "config.json").read_text())
        records.append({"stage": k, "plan": stage, "dataset": saved.get("dataset"),
                        "training_data": (saved.get("training_data") or {}).get("generator", {}).get("config"),
                        "images_seen": saved.get("images_seen"), "epoch": saved.get("epoch"),
                        "val": (saved.get("metrics") or {}).get("val"), "weights_sha256": saved.get("weights_sha256")})
    return records


def _summary(run_dir, plan, k, summary, status) -> dict:
    out = dict(summary or {"rank": 0, "epochs_done": 0, "epochs": 0, "images_seen": 0})
    out.update(status=status, run_dir=str(run_dir), stage=k, stages=len(plan))
    return out
