"""Bad input and misuse, as a careful user or a hostile file would try them.

Every CLI command is walked with bad options (exit code != 0, one line on stderr, no traceback);
commands never delete or replace a path they did not create; names never silently become paths;
files are verified before they are trusted.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lenszoo
from lenszoo.cli import main
from lenszoo.errors import LenszooError
from lenszoo.registry import PluginWarning, registry

from .probes import ProbePlugin, registered

REPO = Path(__file__).resolve().parents[1]


# -- helpers --------------------------------------------------------------------------------------
def cli(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def one_line_error(result, *fragments):
    """Exit status != 0, exactly one line on stderr starting with 'Error:', no traceback."""
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("Warning: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def probe():
    with registered(ProbePlugin("probe"), "probe-plugin"):
        yield


TINY = ["--arch", "probe", "--stream", "--dataset", "A", "--epochs", "1", "--epoch-size", "12", "--batch-size", "6",
        "--val-size", "6", "--quiet"]


@pytest.fixture
def run_dir(probe, tmp_path):
    run = tmp_path / "run"
    result = cli("train", *TINY, "--out", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from lenszoo.data import simulate_dataset

    path = tmp_path_factory.mktemp("data") / "A-test"
    simulate_dataset("A", "test", 4, path, progress=False, shard_size=6)
    return path


# -- 1-3: data loss --------------------------------------------------------------------------------
def test_evaluate_never_replaces_a_users_folder_or_file(run_dir, tmp_path, monkeypatch):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "thesis.tex").write_text("years of work")
    before = snapshot(users)
    one_line_error(cli("evaluate", run_dir, "--n-per-class", 2, "--out", users), "thesis.tex", "choose a new")
    assert snapshot(users) == before
    monkeypatch.chdir(users)  # --out "$PWD"
    one_line_error(cli("evaluate", run_dir, "--n-per-class", 2, "--out", os.getcwd()), "never replaces")
    assert snapshot(users) == before
    one_line_error(cli("evaluate", run_dir, "--n-per-class", 2, "--out", users / "thesis.tex"), "is a file")
    assert snapshot(users) == before

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("evaluate", run_dir, "--n-per-class", 2, "--out", empty).exit_code == 0
    first = json.loads((empty / "results.json").read_text())
    (empty / "notes.txt").write_text("mine")  # a file of the user's inside the evaluation folder
    result = cli("evaluate", run_dir, "--n-per-class", 2, "--seed", 1, "--out", empty)  # its own output: replaced
    assert result.exit_code == 0, result.output
    assert json.loads((empty / "results.json").read_text())["data"]["stream_seed"] == 1 != first["data"]["stream_seed"]
    assert (empty / "notes.txt").read_text() == "mine"


def test_train_never_writes_into_a_folder_that_is_not_a_run(probe, tmp_path):
    users = tmp_path / "project"
    for name in ("state/keep.txt", "best/model.txt", "last/x.txt", "metrics.jsonl", "notes.tmp"):
        (users / name).parent.mkdir(parents=True, exist_ok=True)
        (users / name).write_text(name)
    before = snapshot(users)
    one_line_error(cli("train", *TINY, "--out", users), "not a lenszoo run directory", "choose a new or empty")
    assert snapshot(users) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("train", *TINY, "--out", empty).exit_code == 0


def test_a_rejected_train_writes_nothing_so_the_corrected_command_starts(probe, tiny_data, tmp_path):
    run = tmp_path / "run"
    # validation data of another dataset: noticed while preparing the data, before run.json
    other = tmp_path / "B-val"
    from lenszoo.data import simulate_dataset

    simulate_dataset("B", "val", 2, other, progress=False)
    one_line_error(cli("train", *TINY, "--val-data", other, "--out", run), "same dataset")
    assert not run.exists()
    one_line_error(cli("train", *TINY, "--model-arg", "width=-2", "--out", run))
    assert not run.exists()
    result = cli("train", *TINY, "--out", run)
    assert result.exit_code == 0, result.output
    assert (run / "run.json").is_file()


# -- 4-8: paths and trust -------------------------------------------------------------------------
def test_release_refuses_names_that_would_escape_weights(run_dir, tmp_path, monkeypatch):
    manifest = tmp_path / "repo" / "weights_manifest.json"
    manifest.parent.mkdir()
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    config_path = run_dir / "best" / "config.json"
    config = json.loads(config_path.read_text())
    for field, value in (("dataset", "A/../../../x"), ("arch", "../probe"), ("dataset", "A B")):
        config_path.write_text(json.dumps({**config, field: value}))
        one_line_error(cli("release", run_dir), "not a valid")
    assert not (tmp_path / "x").exists() and not manifest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "run"]


def test_release_into_a_malformed_manifest_copies_nothing(run_dir, tmp_path, monkeypatch):
    manifest = tmp_path / "weights_manifest.json"
    manifest.write_text('{"schema_version": 1, "weights": [{"arch": 3}]}')
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    one_line_error(cli("release", run_dir), "invalid")
    assert not (tmp_path / "weights").exists()
    manifest.write_text("{not json")
    one_line_error(cli("release", run_dir), "not valid JSON")
    assert not (tmp_path / "weights").exists()


def test_a_registered_name_always_means_the_registry(tmp_path, monkeypatch):
    """A folder named like an architecture in the working directory does not shadow it."""
    from lenszoo.pretrained.refs import resolve_name

    impostor = tmp_path / "c8_steerable"
    impostor.mkdir()
    (impostor / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    model = lenszoo.load("c8_steerable", task="classify", dataset="B")
    manifest = json.loads((REPO / "weights_manifest.json").read_text())
    entry = next(e for e in manifest["weights"] if (e["arch"], e["task"], e["dataset"]) == ("c8_steerable",
                                                                                              "classify", "B")
                 and e.get("default"))  # the weights an untagged name loads
    assert model.lenszoo_config["released"]["sha256"] == entry["sha256"]
    assert model.lenszoo_config["dataset"] == "B"
    assert resolve_name("./c8_steerable").kind == "checkpoint"  # a path that looks like one is a path
    mine = tmp_path / "myrun"
    mine.mkdir()
    with pytest.raises(LenszooError, match=r"write \./myrun"):
        resolve_name("myrun")
    with pytest.raises(LenszooError, match="hf-hub:org/name"):
        resolve_name("org/name")


@pytest.mark.parametrize("content, fragment", [
    ({"normalization": None}, "normalization is missing"),
    ({"normalization": {"name": "sqrt"}}, "unknown normalisation"),
    ({"model_args": None}, "model_args must be an object"),
    ({"model_args": [1, 2]}, "model_args must be an object"),
    ({"input_size": [1, 64]}, "input_size"),
    ({"task": "segment"}, "task 'segment'"),
    ({"arch": "../x"}, "not a valid architecture name"),
    ({"weights_sha256": "zz"}, "weights_sha256"),
])
def test_checkpoint_configs_are_validated_on_load(run_dir, content, fragment):
    path = run_dir / "best" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **content}))
    with pytest.raises(LenszooError, match=fragment):
        lenszoo.load(str(run_dir / "best"))
    one_line_error(cli("evaluate", run_dir, "--n-per-class", 1), fragment)


def test_unreadable_configs_are_one_line_errors(run_dir):
    path = run_dir / "best" / "config.json"
    for data, fragment in ((b"[1, 2]", "must be a JSON object"), (b"\xff\xfe\x00bad", "not UTF-8"),
                           (b"{broken", "not valid JSON")):
        path.write_bytes(data)
        with pytest.raises(LenszooError, match=fragment):
            lenszoo.load(str(run_dir / "best"))


def test_the_manifest_covers_config_json_too(tmp_path, monkeypatch):
    """A released config.json that was edited (here: its normalisation) is caught by its sha256."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(REPO / "weights" / "c8_steerable-classify-B", repo / "weights" / "c8_steerable-classify-B")
    shutil.copy(REPO / "weights_manifest.json", repo / "weights_manifest.json")
    monkeypatch.setenv("LENSZOO_MANIFEST", str(repo / "weights_manifest.json"))
    assert lenszoo.load("c8_steerable.clean", task="classify", dataset="B") is not None
    config = repo / "weights" / "c8_steerable-classify-B" / "config.json"
    edited = json.loads(config.read_text())
    edited["normalization"] = {"name": "none", "version": 1}
    config.write_text(json.dumps(edited, indent=2, sort_keys=True) + "\n")
    with pytest.warns(UserWarning, match="does not match its sha256s"):
        with pytest.raises(LenszooError, match="do not match the manifest.s sha256s"):
            lenszoo.load("c8_steerable.clean", task="classify", dataset="B")


def test_a_flipped_bit_in_a_shard_is_named_before_training(probe, tmp_path):
    from lenszoo.data import simulate_dataset

    data = tmp_path / "A-train"
    simulate_dataset("A", "train", 4, data, progress=False, shard_size=6)
    shard = data / "images-00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-7] ^= 0x01  # same size, one bit
    shard.write_bytes(bytes(raw))
    args = ["--arch", "probe", "--data", data, "--epochs", "1", "--batch-size", "4", "--quiet"]
    one_line_error(cli("train", *args, "--out", tmp_path / "run"), "images-00001.npy", "--no-verify")
    assert not (tmp_path / "run").exists()
    assert cli("train", *args, "--no-verify", "--out", tmp_path / "run").exit_code == 0


def test_repo_ids_follow_the_hub_clients_rules():
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from lenszoo.names import is_valid_repo_id

    cases = ["org/name", "org/na.me-1_2", "a/..b", "a/b--c", "a/b\n", "a/bé", "ö/b", "a/" + "x" * 96,
             "a/" + "x" * 97, "a/b.git", "-a/b", "a/b-", "a/.b", "a/b/c", "a//b", " a/b", "a/b ", "org/na me"]
    for repo_id in cases:
        try:
            validate_repo_id(repo_id)
            client = True
        except HFValidationError:
            client = False
        assert is_valid_repo_id(repo_id) == client, repo_id
    assert not is_valid_repo_id("name")  # lenszoo also needs the namespace
    one_line_error(cli("publish", ".", "--repo-id", "org/bad--name"), "invalid Hub repo id")
    one_line_error(cli("download", "hf-hub:org/na\u00efve"), "invalid Hub repo id")


def test_the_thread_count_of_a_run_is_kept_on_resume(probe, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--epochs", "2", "--threads", "1"]
    assert cli("train", *args, "--out", run, "--max-minutes", "1e-6").exit_code == 0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cli("train", "--resume", "--out", run).exit_code == 0
        assert torch.get_num_threads() == 1  # the run's recorded count, not this machine's default
    finally:
        torch.set_num_threads(threads)
    reference = tmp_path / "reference"
    assert cli("train", *args, "--out", reference).exit_code == 0
    assert (run / "last" / "model.safetensors").read_bytes() == (reference / "last" / "model.safetensors").read_bytes()


# -- one line, no traceback -----------------------------------------------------------------------
@pytest.mark.parametrize("options, fragment", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--max-minutes", "nan"], "--max-minutes"),
    (["--max-minutes", "0"], "--max-minutes"),
    (["--save-every-minutes", "-5"], "--save-every-minutes"),
    (["--threads", "-3"], "--threads must be a whole number >= 1"),
    (["--threads", "0"], "--threads must be a whole number >= 1"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--epoch-size", "0"], "--epoch-size"),
    (["--workers", "-1"], "--workers"),
    (["--val-fraction", "2"], "--val-fraction"),
    (["--seed", "-1"], "--seed"),
    (["--device", "mps"], "mps"),
    (["--device", "bogus"], "unknown device"),
    (["--precision", "fp16"], "fp16"),
    (["--lr", "fast"], "fast"),
    (["--no-such-option"], "no-such-option"),
])
def test_train_option_errors_are_one_line(probe, tmp_path, options, fragment):
    one_line_error(cli("train", *TINY, *options, "--out", tmp_path / "run"), fragment)
    assert not (tmp_path / "run").exists()


def test_out_under_a_file_is_one_line_for_every_writing_command(run_dir, tmp_path, tiny_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    under = blocker / "out"
    one_line_error(cli("train", *TINY, "--out", under), "is a file")
    one_line_error(cli("evaluate", run_dir, "--n-per-class", 1, "--out", under), "is a file")
    one_line_error(cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", under), "is a file")
    results = run_dir / "eval"
    assert cli("evaluate", run_dir, "--n-per-class", 1).exit_code == 0
    one_line_error(cli("report", results, "--out", under / "report.md"), "is a file")
    one_line_error(cli("report", results, "--out", tmp_path), "is a folder")


def test_report_never_replaces_a_file_it_did_not_write(run_dir, tmp_path):
    assert cli("evaluate", run_dir, "--n-per-class", 1).exit_code == 0
    notes = tmp_path / "notes.md"
    notes.write_text("my notes")
    one_line_error(cli("report", run_dir / "eval", "--out", notes), "not written by lenszoo")
    assert notes.read_text() == "my notes"
    out = tmp_path / "results.md"
    assert cli("report", run_dir / "eval", "--out", out).exit_code == 0
    assert cli("report", run_dir / "eval", "--out", out).exit_code == 0  # its own output: regenerated


@pytest.mark.parametrize("record", [
    {"format": "lenszoo-evaluation", "metrics": [], "arch": "x", "task": "classify", "dataset": "A"},
    {"format": "lenszoo-evaluation", "metrics": {}, "arch": 3, "task": "classify", "dataset": "A"},
    {"format": "lenszoo-evaluation", "metrics": {}, "arch": "x", "task": "sort", "dataset": "A"},
    {"format": "lenszoo-evaluation", "metrics": {"accuracy": "high"}, "arch": "x", "task": "classify",
     "dataset": "A", "rotations": []},
])
def test_malformed_results_are_one_line(tmp_path, record):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(record))
    result = cli("report", path, "--rotations")
    if result.exit_code == 0:  # a non-number metric is shown as missing, never a traceback
        assert "—" in result.output
    else:
        one_line_error(result, "results.json")


def test_malformed_run_files_are_one_line(run_dir):
    path = run_dir / "run.json"
    for run in ({"format": "lenszoo-run", "config": [1]}, {"format": "lenszoo-run", "config": {"lr": "x"}},
                {"format": "lenszoo-run", "config": {"arch": "probe", "bogus_key": 1}}, [1, 2]):
        path.write_text(json.dumps(run))
        one_line_error(cli("train", "--resume", "--out", run_dir), "run.json")


@pytest.mark.parametrize("args, fragment", [
    (["evaluate", "no_such_net"], "unknown architecture"),
    (["evaluate", "./missing-folder"], "does not exist"),
    (["evaluate", "c8_steerable", "--dataset", "A", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "c8_steerable", "--dataset", "A", "--n-per-class", "1000000000000"], "--n-per-class"),
    (["evaluate", "c8_steerable", "--dataset", "A", "--device", "bogus"], "unknown device"),
    (["evaluate", "c8_steerable", "--dataset", "A", "--split", "bogus", "--n-per-class", "1"], "unknown split"),
    (["evaluate", "c8_steerable", "--dataset", "A", "--workers", "-2"], "--workers"),
    (["simulate", "-d", "A", "-s", "test", "-n", "1000000000000", "-o", "{tmp}/big"], "at most"),
    (["simulate", "-d", "A", "-s", "test", "-n", "2", "-o", "{tmp}/p", "--preview", "{tmp}/x.jpg"], "PNG"),
    (["simulate", "-d", "Z", "-s", "test", "-n", "2", "-o", "{tmp}/z"], "unknown dataset"),
    (["simulate", "-d", "A", "-s", "test"], "--n-per-class"),
    (["import-deeplense", "{tmp}/nothing", "--out", "{tmp}/imported"], "does not exist"),
    (["report", "{tmp}/no-results"], "does not exist"),
    (["release", "{tmp}/no-run"], "does not exist"),
    (["publish", "{tmp}/no-run", "--repo-id", "org/name"], "does not exist"),
    (["download", "no_such_net"], "unknown architecture"),
    (["download", "c8_steerable", "--dataset", "A", "--task", "sort"], "sort"),
    (["info", "no_such_net"], "unknown architecture"),
    (["list", "--task", "sort"], "sort"),
    (["plugins", "--bogus"], "bogus"),
    (["frobnicate"], "frobnicate"),
    (["train"], "--arch"),
    (["predict", "c8_steerable", "--dataset", "A", "{tmp}"], "--out"),
    (["predict", "no_such_net", "{tmp}", "--out", "{tmp}/s.csv"], "unknown architecture"),
    (["predict", "c8_steerable", "{tmp}", "--out", "{tmp}/s.csv"], "several datasets (A, B, C-euclid, C-hst)"),
    (["export", "c8_steerable", "--onnx", "{tmp}/m.onnx"], "several datasets"),
    (["evaluate", "c8_steerable", "--n-per-class", "1"], "several datasets"),
    (["predict", "c8_steerable", "--dataset", "A", "{tmp}", "--out", "{tmp}/s.csv"], "no image files to score: "),
    (["predict", "c8_steerable", "--dataset", "A", "{tmp}", "--out", "{tmp}/s.txt"], "suffix"),
    (["predict", "c8_steerable", "--dataset", "A", "{tmp}", "--out", "{tmp}/s.csv", "--batch-size", "0"], "--batch-size"),
    (["predict", "c8_steerable", "--dataset", "A", "{tmp}", "--out", "{tmp}/s.csv", "--resize", "lanczos"], "--resize"),
    (["predict-merge", "--out", "{tmp}/s.csv"], "no parts"),
    (["export", "no_such_net", "--onnx", "{tmp}/m.onnx"], "unknown architecture"),
    (["export", "c8_steerable", "--dataset", "A", "--onnx", "{tmp}/m.txt"], "NAME.onnx"),
    (["export", "c8_steerable", "--dataset", "A", "--onnx", "{tmp}/nowhere/m.onnx"], "does not exist"),
])
def test_every_command_reports_bad_options_in_one_line(tmp_path, args, fragment):
    one_line_error(cli(*[a.format(tmp=tmp_path) for a in args]), fragment)


def test_data_that_is_a_file_is_called_a_file(probe, tmp_path):
    data = tmp_path / "data.npy"
    data.write_bytes(b"x")
    one_line_error(cli("train", "--arch", "probe", "--data", data, "--out", tmp_path / "run"), "is a file, not a dataset")


def test_a_damaged_dataset_manifest_gives_advice_that_works(tmp_path):
    out = tmp_path / "A-test"
    assert cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", out, "-q").exit_code == 0
    (out / "manifest.json").write_text("{damaged")
    message = one_line_error(cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", out, "-q"), "damaged")
    assert "into a new --out" in message
    assert cli("simulate", "-d", "A", "-s", "test", "-n", 1, "-o", tmp_path / "new", "-q").exit_code == 0


def test_import_deeplense_refuses_links_out_of_its_folder_before_writing(tmp_path):
    from .test_data_deeplense import make_deeplense_folder

    make_deeplense_folder(tmp_path / "src")
    secret = tmp_path / "elsewhere.npy"
    np.save(secret, np.zeros((64, 64)))
    (tmp_path / "src" / "cdm" / "link.npy").symlink_to(secret)
    one_line_error(cli("import-deeplense", tmp_path / "src", "--out", tmp_path / "out", "--trust-pickle"),
                   "outside the DeepLense folder")
    assert not (tmp_path / "out").exists()


def test_endpoint_down_is_one_line(run_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    one_line_error(cli("publish", run_dir, "--repo-id", "org/name"), "cannot reach")
    one_line_error(cli("download", "hf-hub:org/name"), "cannot reach")


# -- full disk: one line, nothing corrupted, the same command resumes --------------------------------
def test_a_full_disk_during_simulate_is_one_line_and_resumable(tmp_path, monkeypatch):
    import lenszoo.data.storage as storage

    real = storage.save_npy
    calls = {"n": 0}

    def fill_up(path, array):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, array)

    monkeypatch.setattr(storage, "save_npy", fill_up)
    out = tmp_path / "A-test"
    args = ["simulate", "-d", "A", "-s", "test", "-n", 3, "-o", out, "--shard-size", 3, "-q"]
    one_line_error(cli(*args), "No space left on device", "free some disk space")
    monkeypatch.setattr(storage, "save_npy", real)
    assert cli(*args).exit_code == 0
    from lenszoo.data import verify_dataset

    assert verify_dataset(out) == []


def test_a_full_disk_during_train_and_release_is_one_line(probe, tmp_path, monkeypatch):
    import safetensors.torch

    run = tmp_path / "run"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    one_line_error(cli("train", *TINY, "--out", run), "No space left on device")
    monkeypatch.undo()
    assert (run / "run.json").is_file() and not (run / "best").exists()  # failed at the first checkpoint
    result = cli("train", "--resume", "--out", run)  # the same run goes on
    assert result.exit_code == 0, result.output

    manifest = tmp_path / "weights_manifest.json"
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    import shutil

    monkeypatch.setattr(shutil, "copy2", no_space)
    one_line_error(cli("release", run), "No space left on device")
    assert not manifest.exists()


# -- inputs to models ------------------------------------------------------------------------------
BUILTINS = ("resnet50", "c8_steerable", "hnet", "etn", "radial_profile")


@pytest.mark.parametrize("arch", BUILTINS)
def test_every_builtin_enforces_one_input_contract(arch):
    model = lenszoo.create_model(arch).eval()
    with torch.no_grad():
        assert model(torch.zeros(0, 1, 64, 64)).shape == (0, 3)  # an empty batch works
        for bad in (torch.zeros(2, 1, 128, 128), torch.zeros(2, 1, 63, 63), torch.zeros(2, 3, 64, 64),
                    torch.zeros(64, 64)):
            with pytest.raises(LenszooError, match=r"\(N, 1, 64, 64\)"):
                model(bad)
        for dtype in (torch.float64, torch.uint8):
            with pytest.raises(LenszooError, match="model.preprocess"):
                model(torch.zeros(2, 1, 64, 64, dtype=dtype))
        images = np.random.default_rng(0).uniform(0, 255, (2, 1, 64, 64)).astype(np.uint8)
        assert model(model.preprocess(images)).shape == (2, 3)  # preprocess converts any real dtype
        images = torch.rand(2, 1, 64, 64, dtype=torch.float64)
        images[1, 0, 5, 5] = float("nan")
        with pytest.raises(LenszooError, match="image 1 .*NaN"):
            model.preprocess(images)


def test_model_arguments_and_devices_are_checked():
    with pytest.raises(LenszooError, match="bogus"):
        lenszoo.create_model("resnet50", bogus=1)
    with pytest.raises(LenszooError, match="input_size .* fixed by its registration"):
        lenszoo.create_model("c8_steerable", input_size=48)
    with pytest.raises(LenszooError, match="unknown device 'bogus'"):
        lenszoo.load("c8_steerable", task="classify", dataset="B", device="bogus")


def test_nan_training_data_is_named_as_such(probe, tmp_path):
    from lenszoo.data import simulate_dataset

    data = tmp_path / "A-train"
    simulate_dataset("A", "train", 4, data, progress=False)
    images = np.load(data / "images-00000.npy")
    images[:] = np.nan
    np.save(data / "images-00000.npy", images)
    one_line_error(cli("train", "--arch", "probe", "--data", data, "--epochs", "1", "--batch-size", "4",
                       "--no-verify", "--quiet", "--out", tmp_path / "run"), "NaN", "training images")


# -- plugins ---------------------------------------------------------------------------------------
BROKEN_PLUGINS = '''
import lenszoo


def needs_missing_package(task):
    import lenszoo_no_such_package  # noqa: F401


def five_logits(task):
    import torch.nn as nn

    return nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 5))


@lenszoo.hookimpl
def register_architectures(register):
    register("needs_missing", needs_missing_package)
    register("five_logits", five_logits)
'''


def test_plugin_models_that_cannot_build_are_named(fake_distribution, use_plugins):
    fake_distribution("lenszoo-oddnets", {"oddnets": "lenszoo_oddnets"}, {"lenszoo_oddnets.py": BROKEN_PLUGINS})
    use_plugins("lenszoo-oddnets")
    with pytest.raises(LenszooError, match="needs 'lenszoo_no_such_package', which is not installed"):
        lenszoo.create_model("needs_missing")
    with pytest.raises(LenszooError, match=r"five_logits.*plugin 'oddnets'.*\(2, 5\).*\(2, 3\)"):
        lenszoo.create_model("five_logits")
    result = cli("list")
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "resnet50" in result.stdout and "unavailable" in result.stdout


def test_a_plugin_that_fails_to_import_is_reported_as_installed_but_broken(fake_distribution, use_plugins,
                                                                           tmp_path, monkeypatch):
    source = "import lenszoo\nraise RuntimeError('plugin bug on line 2')\n"
    fake_distribution("lenszoo-buggy", {"buggy": "lenszoo_buggy"}, {"lenszoo_buggy.py": source})
    use_plugins("lenszoo-buggy")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    config = {"format": "lenszoo-checkpoint", "arch": "buggy_net", "task": "classify", "dataset": "A",
              "model_args": {}, "normalization": {"name": "per_image_max_abs", "version": 1},
              "package": "lenszoo-buggy", "plugin": "buggy"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.warns(PluginWarning):
        with pytest.raises(LenszooError, match="installed but failed to load.*plugin bug on line 2"):
            lenszoo.load(str(folder))
    result = cli("plugins", "--traceback")
    assert result.exit_code == 0 and "Traceback (most recent call last)" in result.stdout
    assert "plugin bug on line 2" in result.stdout


# -- minor ------------------------------------------------------------------------------------------
def test_files_honour_the_umask(run_dir, tmp_path):
    old = os.umask(0o022)
    try:
        run = tmp_path / "shared-run"
        assert cli("train", *TINY, "--out", run).exit_code == 0
    finally:
        os.umask(old)
    for path in [run / "run.json", run / "best" / "config.json", run / "best" / "model.safetensors",
                 run / "metrics.jsonl"]:
        assert path.stat().st_mode & 0o777 == 0o644, path
    for path in [run, run / "best", run / "state"]:
        assert path.stat().st_mode & 0o777 == 0o755, path


def test_temporaries_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    from lenszoo.files import atomic_write_text

    target = tmp_path / "weights_manifest.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".weights_manifest.json.{dead.pid}-deadbeef.tmp"
    live = tmp_path / f".weights_manifest.json.{os.getppid()}-cafecafe.tmp"
    stale.write_text("half")
    live.write_text("in progress")
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and not stale.exists() and live.exists()


def test_two_identical_simulate_runs_into_one_folder_both_finish(tmp_path):
    out = tmp_path / "shared"
    command = [sys.executable, "-m", "lenszoo", "simulate", "-d", "B", "-s", "test", "-n", "8", "-o", str(out),
               "--shard-size", "2", "-q"]
    jobs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [job.communicate(timeout=300)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], errors
    from lenszoo.data import verify_dataset

    assert verify_dataset(out) == []


def test_orphaned_simulate_workers_end_quietly(tmp_path):
    command = [sys.executable, "-m", "lenszoo", "simulate", "-d", "A", "-s", "train", "-n", "400", "-o",
               str(tmp_path / "d"), "--workers", "2", "-q"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "d").glob("shard-*.json")):
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)  # the parent only; its workers are orphaned
    try:
        _, stderr = process.communicate(timeout=120)  # returns once every orphan has closed stderr
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
