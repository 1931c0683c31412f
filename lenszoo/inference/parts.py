"""Splitting a survey across processes (torchrun): each rank scores a contiguous block of the
inputs into its own part, marks it finished, and ``predict-merge`` joins the checked parts into
the table a single process would have written."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import LenszooError
from ..tasks import TASKS
from .options import require_pyarrow
from .table import ENCODING, SCORE_PRECISIONS, Table, columns_for, csv_line, read_table

def _env_whole(name: str, default: str) -> int:
    value = os.environ.get(name, default).strip()
    if not (value.isascii() and value.isdigit()):
        raise LenszooError(f"{name}={os.environ.get(name)!r} is not a whole number >= 0; torchrun sets RANK, "
                           "WORLD_SIZE and LOCAL_RANK: unset them for a single process")
    return int(value)


def launch_rank() -> tuple[int, int]:
    """``(rank, world size)`` as torchrun sets them, checked; (0, 1) for a plain run."""
    rank, world = _env_whole("RANK", "0"), _env_whole("WORLD_SIZE", "1")
    if world < 1 or rank >= world:
        raise LenszooError(f"RANK={rank} WORLD_SIZE={world}: a rank runs from 0 to WORLD_SIZE - 1; torchrun sets "
                           "them: unset them for a single process")
    return rank, world


def launch_local_rank() -> int:
    return _env_whole("LOCAL_RANK", "0")


def rank_files(files: list[str], rank: int, world: int) -> list[str]:
    """This rank's contiguous block of the inputs, so the parts in rank order are the whole table."""
    bounds = np.linspace(0, len(files), world + 1).round().astype(int)
    return files[bounds[rank]:bounds[rank + 1]]


def part_format(fmt: str) -> str:
    return "jsonl" if fmt == "jsonl" else "csv"


def part_path(out, rank: int, world: int, fmt: str) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}.part-{rank:03d}-of-{world:03d}.{part_format(fmt)}")


PART_FORMAT = "lenszoo-predict-part"


def done_marker(part: Path) -> Path:
    return part.with_name(f".{part.name}.done.json")


def check_done_marker(part: Path):
    """Refuse, before anything is written, a file at the marker's name that lenszoo did not write."""
    from ..files import json_says

    marker = done_marker(part)
    if marker.exists() and not json_says(marker, "format", PART_FORMAT):
        raise LenszooError(f"{marker} exists and is not a lenszoo part marker; lenszoo never replaces it: move it "
                           "away or choose another --out")


def clear_done_marker(part: Path):
    """A part about to change is no longer finished: its marker goes first."""
    from ..files import json_says

    marker = done_marker(part)
    if json_says(marker, "format", PART_FORMAT):
        marker.unlink()


def write_done_marker(part: Path, *, rows: int, task: str, tta: bool, precision: str, sha: str,
                      counts: dict | None = None):
    """Mark ``part`` finished: what a merge checks it against (its rows, task, --tta, precision,
    weights, and the sha256 of the part file itself; none when no row was scored and no file made)."""
    from ..files import atomic_write_json, sha256_file

    part = Path(part)
    atomic_write_json(done_marker(part), {
        "format": PART_FORMAT, "rows": rows, "task": task, "tta": bool(tta), "precision": precision, "model_sha256": sha,
        "part_sha256": sha256_file(part) if part.exists() else None, **(counts or {})})


def _read_marker(part: Path) -> dict | None:
    try:
        marker = json.loads(done_marker(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != PART_FORMAT:
        return None
    rows, part_sha = marker.get("rows"), marker.get("part_sha256")
    if (isinstance(rows, bool) or not isinstance(rows, int) or rows < 0 or marker.get("task") not in TASKS
            or not isinstance(marker.get("tta"), bool) or not isinstance(marker.get("model_sha256"), str)
            or marker.get("precision") not in SCORE_PRECISIONS
            or not (part_sha is None or isinstance(part_sha, str))):
        raise LenszooError(f"{done_marker(part)} is damaged (an older lenszoo's, or edited); score {part.name} again "
                           "with the torchrun command and --resume, then merge")
    return marker


def _checked_part(part: Path, marker: dict, fmt: str) -> Table | None:
    """The rows of one finished part, checked against its marker; None for a part with no rows."""
    from ..files import sha256_file

    again = "score it again (the same torchrun command with --resume), then merge"
    if not part.exists():
        if marker["rows"] == 0 and marker["part_sha256"] is None:
            return None
        raise LenszooError(f"{part.name} is missing, though its marker says it holds {marker['rows']} rows; {again}")
    if sha256_file(part) != marker["part_sha256"]:
        raise LenszooError(f"{part.name} changed after its process finished it (its sha256 differs from its "
                           f"marker's); {again}")
    table = read_table(part, fmt)
    if table.keep != table.size:
        raise LenszooError(f"{part.name} ends in a line cut off; {again}")
    problem = None
    if table.task != marker["task"]:
        problem = f"its rows are {table.task} rows, its marker says {marker['task']}"
    elif len(table.rows) != marker["rows"]:
        problem = f"{len(table.rows)} rows, its marker says {marker['rows']}"
    else:
        for number, row in enumerate(table.rows, start=2 if fmt == "csv" else 1):
            if (row["model_sha256"], row["tta"], row["precision"]) != (marker["model_sha256"], marker["tta"],
                                                                        marker["precision"]):
                problem = f"line {number} was not scored by the part's weights, --tta and precision"
                break
    if problem:
        raise LenszooError(f"{part.name} does not match its marker ({problem}); {again}")
    return table


PART_RE = re.compile(r"part-(\d+)-of-(\d+)\.(csv|jsonl)")


def merge_parts(out, *, fmt: str) -> dict:
    """Write ``out`` from the finished parts of a torchrun predict (in rank order); the parts stay.

    Every part is checked against its marker (rows, task, --tta, weights, the part's own sha256)
    and read whole; parts being written are refused, and ``out`` is created exclusively."""
    from contextlib import ExitStack

    from ..files import atomic_create
    from ..locks import hold_lock, lock_beside

    out = Path(out)
    prefix, kind = f"{out.name}.part-", part_format(fmt)
    names = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(prefix)) if out.parent.is_dir() else []
    if not names:
        raise LenszooError(f"no parts {out.parent / (prefix + '*')} to merge; run `torchrun ... -m lenszoo predict` "
                           f"with --out {out} first")
    found = {}
    for name in names:
        match = PART_RE.fullmatch(name[len(out.name) + 1:])
        if match is None or match[3] != kind or not int(match[1]) < int(match[2]):
            raise LenszooError(f"{out.parent / name} is not a part of a {fmt} `predict --out {out}` (parts are named "
                               f"{prefix}RRR-of-NNN.{kind}); move it away, then merge")
        found[name] = (int(match[1]), int(match[2]))
    worlds = sorted({world for _, world in found.values()})
    if len(worlds) != 1:
        raise LenszooError(f"parts of runs with different process counts ({', '.join(map(str, worlds))}) are beside "
                           f"{out}; keep the parts of one run")
    world = worlds[0]
    expected = [part_path(out, rank, world, fmt) for rank in range(world)]
    with ExitStack() as locks:
        locks.enter_context(hold_lock(lock_beside(out), target=out))
        for part in expected:
            locks.enter_context(hold_lock(lock_beside(part), target=part, what="a lenszoo predict process"))
        markers = [_read_marker(p) for p in expected]
        unfinished = [p.name for p, marker in zip(expected, markers) if marker is None]
        if unfinished:
            raise LenszooError(f"parts not finished: {', '.join(unfinished)}; run the same torchrun command again "
                               "with --resume, then merge")
        if out.exists():
            raise LenszooError(f"{out} exists; lenszoo never overwrites a file: choose a new --out or move it away")
        for key, what in (("task", "tasks"), ("model_sha256", "weights"), ("tta", "--tta settings"),
                          ("precision", "precisions")):
            if len({marker[key] for marker in markers}) != 1:
                raise LenszooError(f"the parts were scored with different {what}; score them again with one model, "
                                   "one --tta setting and one --precision")
        tables = [_checked_part(p, marker, kind) for p, marker in zip(expected, markers)]
        bodies = []
        for part, table in zip(expected, tables):
            if table is not None:
                data = part.read_bytes()
                bodies.append(data[data.index(b"\n") + 1:] if kind == "csv" else data)
        header = csv_line(columns_for(markers[0]["task"])).encode(ENCODING) if kind == "csv" else b""
        merged = header + b"".join(bodies)
        rows = sum(marker["rows"] for marker in markers)
        try:
            if fmt == "parquet":
                require_pyarrow()
                import pyarrow.csv as pa_csv
                import pyarrow.parquet as pq

                table = pa_csv.read_csv(io.BytesIO(merged))
                atomic_create(out, lambda handle: pq.write_table(table, handle))
            else:
                atomic_create(out, lambda handle: handle.write(merged))
        except FileExistsError:
            raise LenszooError(f"{out} appeared while merging; lenszoo never overwrites a file: choose a new --out "
                               "or move it away") from None
    return {"parts": world, "rows": rows}
