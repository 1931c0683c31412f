"""Bad input and misuse of what commands write (issue 27): `predict --resume` into files that are
not its own or are damaged, two commands writing one output at once, torchrun parts that do not
add up, a full disk, and checks that fail after the output was created.

predict tests score a few .npy stacks with `radial_profile` (tiny, released weights for A);
train tests use the probe plugin.
"""

import errno
import json
import sys

import numpy as np
import pytest

from lenszoo.files import sha256_file
from lenszoo.locks import hold_lock, lock_beside, lock_inside
from lenszoo.inference.writer import RowWriter

from .test_bad_input import TINY, cli, one_line_error, probe, run_dir, snapshot  # noqa: F401 - fixtures

MODEL = ["radial_profile", "--dataset", "A"]


@pytest.fixture
def stacks(tmp_path):
    """Four .npy files of three lenses each, in a folder: 12 rows."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(27)
    yy, xx = np.mgrid[:64, :64] - 31.5
    ring = np.exp(-((np.hypot(yy, xx) - 14) ** 2) / 8)
    for i in range(4):
        images = ring[None] * rng.uniform(0.5, 2, (3, 1, 1)) + rng.normal(0, 0.05, (3, 64, 64))
        np.save(folder / f"{i}.npy", images.astype(np.float32))
    return folder


def predict(inputs, out, *options, **kwargs):
    return cli("predict", *MODEL, inputs, "--out", out, "--quiet", "--workers", 0, *options, **kwargs)


def table(stacks, tmp_path, name, *options):
    out = tmp_path / name
    result = predict(stacks, out, *options)
    assert result.exit_code == 0, result.output
    return out


# -- 1: --resume reads and checks before it changes anything -------------------------------------------
@pytest.mark.parametrize("name, content, fmt", [
    ("u.csv", b"a,b\n1,2", None),                       # a user's table, no trailing newline
    ("u.csv", b"a,b\n1,2\n", None),
    ("u.csv", b"a,b", None),                            # one line, no newline at all
    ("u.csv", b"", None),                               # empty
    ("u.jsonl", b'{"a": 1}\n{"a": 2', None),
    ("stack.npy", None, "csv"),                         # an input image stack named as --out
])
@pytest.mark.parametrize("resume", [True, False])
def test_a_file_that_is_not_predicts_output_is_never_changed(stacks, tmp_path, name, content, fmt, resume):
    out = tmp_path / name
    if content is None:
        np.save(out, np.zeros((2, 64, 64), np.float32))
    else:
        out.write_bytes(content)
    before = out.read_bytes()
    options = (["--format", fmt] if fmt else []) + (["--resume"] if resume else [])
    line = one_line_error(predict(stacks, out, *options), "not a lenszoo predict table", "choose another --out")
    assert "--resume" not in line  # advice that works: --resume would be refused too
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in", name])  # no lock file left either


def _damage(kind, text):
    lines = text.splitlines(keepends=True)
    fields = lines[2].split(",")
    if kind == "index":
        fields[1] = "one"
    elif kind == "short":
        fields = fields[:4]
    elif kind == "tta":
        fields[6] = "maybe"
    elif kind == "sha":
        fields[-1] = "forged\n"
    lines[2] = ",".join(fields) + ("" if fields[-1].endswith("\n") else "\n")
    if kind == "quoted-cut":  # a cut inside a quoted name, then more rows
        lines[2] = '"in/we,ird.n\n'
    if kind == "quoted-cut-at-end":  # the name ran past a newline: more than one line would be dropped
        return "".join(lines[:3]) + '"in/we\nird.npy,0,0.1'
    return "".join(lines)


@pytest.mark.parametrize("kind, line", [("index", 3), ("short", 3), ("tta", 3), ("sha", 3), ("quoted-cut", 3),
                                        ("quoted-cut-at-end", 4)])
def test_a_damaged_row_is_one_error_and_changes_nothing(stacks, tmp_path, kind, line):
    out = table(stacks, tmp_path, "s.csv", "--batch-size", 5)
    out.write_text(_damage(kind, out.read_text()))
    before = out.read_bytes()
    one_line_error(predict(stacks, out, "--resume"), f"line {line} is not a whole row", "remove that line")
    assert out.read_bytes() == before


@pytest.mark.parametrize("line", ['{"source": "in/0.npy", "index": "0"}', '[1, 2]', '{"source": '])
def test_a_damaged_json_row_is_one_error_and_changes_nothing(stacks, tmp_path, line):
    out = table(stacks, tmp_path, "s.jsonl")
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + line + "\n" + "".join(lines[2:]))
    before = out.read_bytes()
    one_line_error(predict(stacks, out, "--resume"), "line 3 is not a whole row")
    assert out.read_bytes() == before


def test_only_the_line_a_kill_cut_off_is_dropped(stacks, tmp_path):
    full = table(stacks, tmp_path, "full.csv", "--batch-size", 5)
    text = full.read_text()
    lines = text.splitlines(keepends=True)
    killed = tmp_path / "killed.csv"
    killed.write_text("".join(lines[:6]) + lines[6][:30])  # the header, 5 rows and a cut one
    result = predict(stacks, killed, "--resume", "--batch-size", 5)
    assert result.exit_code == 0, result.output
    assert killed.read_text() == text


@pytest.mark.parametrize("column, value", [("model_sha256", "ab" * 32), ("tta", "True")])
def test_rows_of_another_model_or_tta_anywhere_in_the_table_are_refused(stacks, tmp_path, column, value):
    out = table(stacks, tmp_path, "s.csv")
    lines = out.read_text().splitlines(keepends=True)
    header = lines[0].strip().split(",")
    fields = lines[-1].rstrip("\n").split(",")
    fields[header.index(column)] = value  # the last row: another model's (or --tta), the first rows ours
    out.write_text("".join(lines[:-1]) + ",".join(fields) + "\n")
    before = out.read_bytes()
    one_line_error(predict(stacks, out, "--resume"), "another model" if column == "model_sha256" else "--tta")
    assert out.read_bytes() == before


# -- 2: one command writes an output at a time ---------------------------------------------------------
@pytest.mark.parametrize("resume", [False, True])
def test_a_second_predict_into_the_same_out_is_refused(stacks, tmp_path, resume):
    out = tmp_path / "s.csv"
    if resume:
        killed = table(stacks, tmp_path, "s.csv").read_text().splitlines(keepends=True)
        out.write_text("".join(killed[:4]))
    with hold_lock(lock_beside(out), target=out):  # the first command, still scoring
        before = snapshot(tmp_path)
        one_line_error(predict(stacks, out, *(["--resume"] if resume else [])), "is being written by another")
        assert snapshot(tmp_path) == before
    result = predict(stacks, out, *(["--resume"] if resume else []))  # once it is done
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 13
    assert not lock_beside(out).exists()


def test_two_predict_processes_never_write_one_table(stacks, tmp_path):
    import subprocess

    out = tmp_path / "s.csv"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from lenszoo.locks import hold_lock, lock_beside\n"
        f"with hold_lock(lock_beside({str(out)!r}), target='x'):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(predict(stacks, out, "--resume"), "is being written by another")
        assert not out.exists()
    finally:
        holder.communicate("", timeout=60)
    assert predict(stacks, out).exit_code == 0


def test_a_second_train_of_the_same_run_directory_is_refused(probe, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    run.mkdir()
    with hold_lock(lock_inside(run), target=run):  # another train (seed 0) has just started here
        one_line_error(cli("train", *TINY, "--seed", 1, "--out", run), "is being written by another lenszoo train")
        assert [p.name for p in run.iterdir()] == [".lenszoo.lock"]
    result = cli("train", *TINY, "--seed", 1, "--out", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "run.json").read_text())["config"]["seed"] == 1
    assert not lock_inside(run).exists()


def test_a_resume_of_a_run_being_trained_is_refused(run_dir, tmp_path):  # noqa: F811
    before = snapshot(run_dir)
    with hold_lock(lock_inside(run_dir), target=run_dir):
        one_line_error(cli("train", "--resume", "--out", run_dir), "is being written by another")
    assert snapshot(run_dir) == before


def test_a_second_export_to_one_path_is_refused_and_an_export_never_replaces_a_file(tmp_path, monkeypatch):
    import lenszoo.export

    out = tmp_path / "r.onnx"
    with hold_lock(lock_beside(out), target=out):
        one_line_error(cli("export", *MODEL, "--onnx", out), "is being written by another")
    assert not out.exists()

    real = lenszoo.export.check_onnx

    def meanwhile(path, model, **kwargs):  # another program writes the path while this export checks
        out.write_bytes(b"someone else's graph")
        return real(path, model, **kwargs)

    monkeypatch.setattr(lenszoo.export, "check_onnx", meanwhile)
    one_line_error(cli("export", *MODEL, "--onnx", out), "appeared while exporting")
    assert out.read_bytes() == b"someone else's graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.onnx"]  # no temporary, no lock left


# -- 3: torchrun parts are checked, not trusted ----------------------------------------------------------
def rank(stacks, out, r, world, *options):
    return predict(stacks, out, *options, env={"RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": "0"})


@pytest.fixture
def parts(stacks, tmp_path):
    """Two finished parts of `predict --out t.csv` (6 rows each)."""
    out = tmp_path / "t.csv"
    for r in range(2):
        result = rank(stacks, out, r, 2)
        assert result.exit_code == 0, result.output
    return out


def part(out, r):
    return out.with_name(f"{out.name}.part-{r:03d}-of-002.csv")


def marker(out, r):
    return out.with_name(f".{part(out, r).name}.done.json")


def test_parts_merge_into_the_single_process_table(stacks, tmp_path, parts):
    single = table(stacks, tmp_path, "single.csv")
    result = cli("predict-merge", "--out", parts)
    assert result.exit_code == 0, result.output
    assert parts.read_text() == single.read_text()
    saved = json.loads(marker(parts, 1).read_text())
    assert (saved["rows"], saved["task"], saved["tta"]) == (6, "classify", False)
    assert saved["part_sha256"] == sha256_file(part(parts, 1))


@pytest.mark.parametrize("rerun, fragment", [
    ("rank 0", "part-001-of-002.csv is missing"),                  # one rank scored again, the other not
    ("both, rank 0 killed", "parts not finished: t.csv.part-000-of-002.csv"),  # its stale marker went first
])
def test_parts_deleted_after_they_finished_are_not_merged_from_their_markers(stacks, parts, monkeypatch, rerun,
                                                                             fragment):
    import lenszoo.inference.scorer

    part(parts, 0).unlink()
    part(parts, 1).unlink()  # the markers remain
    if rerun == "rank 0":
        assert rank(stacks, parts, 0, 2).exit_code == 0
    else:
        assert rank(stacks, parts, 1, 2).exit_code == 0
        real, calls = lenszoo.inference.scorer.Scorer.__call__, []

        def killed_after_one_batch(self, images):
            calls.append(len(images))
            if len(calls) > 1:
                raise KeyboardInterrupt
            return real(self, images)

        monkeypatch.setattr(lenszoo.inference.scorer.Scorer, "__call__", killed_after_one_batch)
        assert rank(stacks, parts, 0, 2, "--batch-size", 2).exit_code != 0
        monkeypatch.undo()
        assert len(part(parts, 0).read_text().splitlines()) == 1 + 2  # the batch it finished
    one_line_error(cli("predict-merge", "--out", parts), fragment, "--resume")
    assert not parts.exists()


def test_parts_scored_with_and_without_tta_are_not_merged(stacks, tmp_path):
    out = tmp_path / "t.csv"
    assert rank(stacks, out, 0, 2, "--tta").exit_code == 0
    assert rank(stacks, out, 1, 2).exit_code == 0
    one_line_error(cli("predict-merge", "--out", out), "different --tta")
    assert not out.exists()


@pytest.mark.parametrize("forge, fragment", [
    ("sha", "line 7 was not scored by the part's weights"),  # a row of other weights, marker made to fit
    ("glued", "is not a whole row"),                         # a row glued onto the last line, marker made to fit
    ("edited", "changed after its process finished it"),     # the part edited, the marker not
    ("count", "rows, its marker says"),                      # a marker that lies about the rows
])
def test_merge_checks_every_part_against_its_marker(parts, forge, fragment):
    path, saved = part(parts, 1), json.loads(marker(parts, 1).read_text())
    lines = path.read_text().splitlines(keepends=True)
    if forge == "sha":
        lines[-1] = lines[-1][:-65] + "ab" * 32 + "\n"
    elif forge in ("glued", "edited"):
        lines[-1] = lines[-1].rstrip("\n") + "," + lines[1]
    path.write_text("".join(lines))
    if forge == "count":
        saved["rows"] = 5
    if forge != "edited":
        saved["part_sha256"] = sha256_file(path)
    marker(parts, 1).write_text(json.dumps(saved))
    one_line_error(cli("predict-merge", "--out", parts), fragment)
    assert not parts.exists()


def test_a_restarted_part_clears_its_marker_until_it_is_finished_again(stacks, parts, monkeypatch):
    import lenszoo.inference.scorer

    np.save(stacks / "3b.npy", np.load(stacks / "3.npy"))  # the survey grew: rank 1 has more to score

    def killed(self, images):
        raise KeyboardInterrupt

    monkeypatch.setattr(lenszoo.inference.scorer.Scorer, "__call__", killed)
    assert rank(stacks, parts, 1, 2, "--resume").exit_code != 0
    monkeypatch.undo()
    assert not marker(parts, 1).exists()
    one_line_error(cli("predict-merge", "--out", parts), "parts not finished: t.csv.part-001-of-002.csv")
    assert rank(stacks, parts, 1, 2, "--resume").exit_code == 0
    assert cli("predict-merge", "--out", parts).exit_code == 0
    assert len(parts.read_text().splitlines()) == 1 + 15


@pytest.mark.parametrize("env, fragment", [
    ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK='-1'"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
])
def test_ranks_out_of_range_are_one_line_and_write_nothing(stacks, tmp_path, env, fragment):
    one_line_error(predict(stacks, tmp_path / "t.csv", env=env), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("stray", ["t.csv.part-abc-of-xyz.csv", "t.csv.part-002-of-002.csv", "t.csv.part-0-of-2.jsonl"])
def test_a_stray_file_beside_the_parts_is_one_line(parts, stray):
    (parts.parent / stray).write_text("x")
    one_line_error(cli("predict-merge", "--out", parts), stray, "move it away")
    assert not parts.exists()


def test_merge_waits_for_no_part_being_written(parts):
    with hold_lock(lock_beside(part(parts, 0)), target="x"):
        one_line_error(cli("predict-merge", "--out", parts), "is being written by a lenszoo predict process")
    assert not parts.exists()


# -- 4: a full disk gives advice that works -------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("failing_write", [1, 2])  # creating the table (its header and first rows); a later batch
def test_a_full_disk_gives_advice_that_works(stacks, tmp_path, monkeypatch, fmt, failing_write):
    expected = table(stacks, tmp_path, f"expected.{fmt}", "--batch-size", 5).read_text()
    real, calls = RowWriter._write, []

    def fill_up(self, *args):
        calls.append(args)
        if len(calls) == failing_write:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)

    monkeypatch.setattr(RowWriter, "_write", fill_up)
    out = tmp_path / f"s.{fmt}"
    line = one_line_error(predict(stacks, out, "--batch-size", 5), "No space left on device", "free some disk space")
    monkeypatch.undo()
    options = ["--resume"] if "with --resume" in line else []
    assert options == ([] if failing_write == 1 else ["--resume"]), line
    assert out.exists() == (failing_write > 1)  # never an empty file
    result = predict(stacks, out, "--batch-size", 5, *options)  # what the message said to do
    assert result.exit_code == 0, result.output
    assert out.read_text() == expected


# -- 8: every check that can fail runs before the output is created -------------------------------------
def test_a_missing_onnxruntime_is_named_before_anything_is_written(stacks, tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    one_line_error(predict(stacks, out, "--engine", "onnxruntime"), "needs onnxruntime")
    assert not out.exists()
    monkeypatch.undo()
    assert predict(stacks, out).exit_code == 0  # the plain rerun starts, not "exists; pass --resume"


def test_a_model_that_fails_to_export_leaves_no_output(stacks, tmp_path, monkeypatch):
    import lenszoo.export
    from lenszoo.errors import LenszooError

    def refuse(*args, **kwargs):
        raise LenszooError("radial_profile does not export to ONNX (a test)")

    monkeypatch.setattr(lenszoo.export, "export_onnx", refuse)
    out = tmp_path / "s.csv"
    one_line_error(predict(stacks, out, "--engine", "onnxruntime"), "does not export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
