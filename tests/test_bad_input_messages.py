"""Errors that must be one clean line (issue 27, item 11): binary or special files where text is
expected, a `|` in a results file, a release or an export whose target cannot take it, and library
warnings or Hub retries leaking onto stderr."""

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .test_bad_input import cli, one_line_error, probe, run_dir, snapshot  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "docs" / "results-data"
RESULT = RECORDS / "radial_profile-classify-A-holdout.results.json"
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" + bytes(range(256))


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(BINARY)
    return path


@pytest.mark.parametrize("option", ["--paper", "--readme", "--notes"])
def test_report_names_a_binary_text_input_in_one_line_and_writes_nothing(tmp_path, binary, option):
    page = tmp_path / "page.md"
    one_line_error(cli("report", RESULT, option, binary, "--page", page), option, "is not UTF-8 text")
    assert binary.read_bytes() == BINARY and not page.exists() and not (tmp_path / "page-figures").exists()


def _specials(tmp_path):
    fifo, zero = tmp_path / "fifo", tmp_path / "zero"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    return {"fifo": (fifo, "a FIFO (named pipe)"), "zero": (zero, "a character device (a link to /dev/zero)")}


@pytest.mark.parametrize("special", ["fifo", "zero"])
@pytest.mark.parametrize("args", [
    ["report", "{path}"],
    ["report", str(RESULT), "--paper", "{path}"],
    ["report", str(RESULT), "--notes", "{path}", "--page", "{tmp}/page.md"],
    ["evaluate", "{path}"],
    ["train", "--arch", "radial_profile", "--data", "{path}", "--out", "{tmp}/run"],
    ["import-deeplense", "{path}", "--out", "{tmp}/imported"],
])
def test_a_fifo_or_a_link_to_dev_zero_is_called_what_it_is(tmp_path, special, args):
    path, kind = _specials(tmp_path)[special]
    before = sorted(p.name for p in tmp_path.iterdir())
    message = one_line_error(cli(*[a.format(path=path, tmp=tmp_path) for a in args]), kind)
    assert "does not exist" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _table_widths(markdown: str) -> list[list[int]]:
    """The number of cells of each line of each Markdown table (an unescaped | separates cells)."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(len(re.split(r"(?<!\\)\|", line)))
        elif current:
            tables.append(current)
            current = []
    return tables


def test_a_pipe_in_a_results_file_is_escaped_in_the_tables(tmp_path):
    record = json.loads(RESULT.read_text())
    record["dataset"] = "A|B"
    record["split"] = "test|2"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "results.json").write_text(json.dumps(record))
    result = cli("report", tmp_path / "in")
    assert result.exit_code == 0, result.output
    assert "A\\|B" in result.output
    tables = _table_widths(result.output)
    assert tables and all(len(set(widths)) == 1 for widths in tables), tables


def test_every_table_of_the_results_page_keeps_its_columns(tmp_path):
    """The page's rotation table has a header with | in it (mean |Δ output|)."""
    records = sorted(RECORDS.glob("*rotations.results.json"))[:4] + [RESULT]
    page = tmp_path / "results.md"
    result = cli("report", *records, "--page", page)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "mean \\|Δ output\\|" in text
    tables = _table_widths(text)
    assert len(tables) >= 3 and all(len(set(widths)) == 1 for widths in tables), tables


def test_release_into_a_folder_whose_manifest_is_a_folder_writes_nothing(run_dir, tmp_path):
    zoo = tmp_path / "zoo"
    (zoo / "weights_manifest.json").mkdir(parents=True)
    before = snapshot(zoo)
    message = one_line_error(cli("release", run_dir, "--to", zoo), "weights_manifest.json is a folder",
                             "not a weights manifest")
    assert ".tmp" not in message
    assert snapshot(zoo) == before and sorted(p.name for p in zoo.iterdir()) == ["weights_manifest.json"]


def test_export_into_an_unwritable_folder_says_the_folder_is_not_writable(tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_access = os.access
    # the test may run as root, for whom permission bits do not stop a write: the folder says no
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == folder and mode & os.W_OK
                        else real_access(path, mode, **kw))
    one_line_error(cli("export", "radial_profile", "--dataset", "A", "--onnx", folder / "m.onnx", "--no-check"),
                   f"{folder} is not writable")
    assert list(folder.iterdir()) == []


def test_an_os_error_while_exporting_is_not_called_a_model_that_cannot_export(tmp_path, monkeypatch):
    import torch

    def refuse(model, args, path, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(torch.onnx, "export", refuse)
    message = one_line_error(cli("export", "radial_profile", "--dataset", "A", "--onnx", tmp_path / "m.onnx", "--no-check"),
                             "Permission denied", "choose a path you may write to")
    assert "does not export" not in message
    assert list(tmp_path.iterdir()) == []


# -- library warnings and retries never leak: the real command line, in a subprocess -------------------
def _lenszoo(tmp_path, *args, prelude="", env=None):
    code = (f"import sys\n{prelude}\nsys.argv = ['lenszoo', *{list(map(str, args))!r}]\n"
            "from lenszoo.cli import run\nrun()\n")
    environment = {k: v for k, v in os.environ.items() if k != "LENSZOO_TRACEBACK"}
    environment.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), **(env or {}))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=environment, timeout=300)


def test_a_numpy_overflow_warning_does_not_leak_onto_stderr(tmp_path):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    np.save(folder / "huge.npy", np.full((64, 64), 1e300))  # float64 beyond float32: NumPy warns as it casts
    np.save(folder / "fine.npy", np.random.default_rng(0).random((64, 64)))
    done = _lenszoo(tmp_path, "predict", "radial_profile", "--dataset", "A", folder, "--out", tmp_path / "scores.csv")
    assert (tmp_path / "scores.csv").exists(), done.stderr
    assert "RuntimeWarning" not in done.stderr and "overflow encountered" not in done.stderr, done.stderr


def test_hub_retries_do_not_leak_onto_stderr(tmp_path):
    import socket

    with socket.socket() as probe_socket:  # a local port nothing listens on
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    no_waiting = "import huggingface_hub.utils._http as http\nhttp.time.sleep = lambda seconds: None"
    done = _lenszoo(tmp_path, "download", "hf-hub:org/name", prelude=no_waiting,
                    env={"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_ETAG_TIMEOUT": "2",
                         "HF_HUB_DOWNLOAD_TIMEOUT": "2"})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "cannot reach" in lines[0], done.stderr


def test_library_warnings_show_with_lenszoo_traceback_for_debugging(tmp_path):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    np.save(folder / "huge.npy", np.full((64, 64), 1e300))
    done = _lenszoo(tmp_path, "predict", "radial_profile", "--dataset", "A", folder, "--out", tmp_path / "scores.csv",
                    env={"LENSZOO_TRACEBACK": "1"})
    assert "overflow encountered" in done.stderr, done.stderr
