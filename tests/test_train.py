"""`lenszoo train`: end-to-end runs, exact resume (budget, SIGKILL), DDP, and one-line errors.

Runs are tiny (tens of simulated images) and use a test architecture installed
as a real plugin distribution, so subprocesses (SIGKILL, torchrun) see it too.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

TINY_PLUGIN = '''
"""A test architecture: a small CNN with dropout (so resume must restore dropout masks too)."""
import time

import lenszoo
from lenszoo.tasks import num_outputs


def build_tiny(task, width=4, delay=0.0):
    import torch.nn as nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, width, 5, stride=4, padding=2), nn.ReLU(), nn.Dropout(0.2),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(width, num_outputs(task))

        def forward(self, x):
            if self.training and delay:  # lets a test catch the process mid-run
                time.sleep(delay)
            return self.head(self.body(x))

    return Tiny()


@lenszoo.hookimpl
def register_architectures(register):
    register("tiny", build_tiny, description="test CNN", width=4, delay=0.0)
    register("tiny_classifier", build_tiny, tasks=("classify",), description="test CNN, classify only", width=4)
'''

SMALL = ["--stream", "--dataset", "A", "--epochs", "2", "--epoch-size", "48", "--batch-size", "16",
         "--val-size", "24", "--lr", "3e-3", "--quiet"]


@pytest.fixture
def tiny_arch(fake_distribution, monkeypatch):
    """Install the test architecture plugin; returns the environment a subprocess needs to see it."""
    dist_info = fake_distribution("lenszoo-testarch", {"testarch": "lenszoo_testarch"},
                                  {"lenszoo_testarch.py": TINY_PLUGIN})
    monkeypatch.setenv("LENSZOO_PLUGINS", "lenszoo-testarch")
    from lenszoo.registry import registry

    registry.reset()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(dist_info.parent), str(Path(__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    env["LENSZOO_PLUGINS"] = "lenszoo-testarch"
    env["OMP_NUM_THREADS"] = "2"
    return env


def cli(*args):
    from lenszoo.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def lenszoo_process(env, *args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lenszoo", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a, b):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].equal(tb[key]), key
    assert Path(a).read_bytes() == Path(b).read_bytes()


def val_history(run):
    return [(row["epoch"], row["images_seen"], row["train"], row["val"])
            for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def saved_progress(run):
    import torch

    latest = (run / "state" / "LATEST").read_text().strip()
    return torch.load(run / "state" / latest / "trainer_state.pt", weights_only=True)["progress"]


# -- end to end ---------------------------------------------------------------------------------
def test_train_classify_writes_checkpoints_metrics_and_curve(tiny_arch, tmp_path):
    from lenszoo.checkpoint import load_checkpoint

    run = tmp_path / "run"
    result = cli("train", "--arch", "tiny", "--out", run, *SMALL)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["images_seen"] == 96

    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    assert [row["images_seen"] for row in history] == [48, 96]
    best_row = max(history, key=lambda row: (row["val"]["accuracy"], -row["val"]["loss"]))

    for name in ("best", "last"):
        config = json.loads((run / name / "config.json").read_text())
        assert config["arch"] == "tiny" and config["task"] == "classify" and config["dataset"] == "A"
        assert config["class_names"] == ["no_sub", "cdm", "axion"]
        assert config["normalization"] == {"name": "per_image_max_abs", "version": 1}
        assert config["recipe"]["lr"] == 3e-3 and config["recipe"]["optimizer"] == "adam"
        assert not list((run / name).glob("*.pt"))  # weights only as safetensors
    best = json.loads((run / "best" / "config.json").read_text())
    assert best["epoch"] == best_row["epoch"]  # selected on validation
    assert best["metrics"]["val"] == best_row["val"]
    assert best["images_seen"] == best_row["images_seen"]
    assert json.loads((run / "last" / "config.json").read_text())["images_seen"] == 96
    assert (run / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = load_checkpoint(run / "best")
    assert model.preprocess is not None and not model.training


def test_train_regress_starts_at_the_mean_target_and_evaluates(tiny_arch, tmp_path):
    import torch

    from lenszoo.checkpoint import load_checkpoint

    run = tmp_path / "run"
    result = cli("train", "--arch", "tiny", "--task", "regress", "--out", run, *SMALL)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["target"] == "log10(m_a / eV)" and config["recipe"]["loss"] == "mse_log10_ma"
    assert {"mse", "mae", "rmse", "bias"} <= set(config["metrics"]["val"])
    # The output bias starts at the mean log10 m_a (~ -23), so a few steps already predict near it.
    model = load_checkpoint(run / "best")
    with torch.no_grad():
        predictions = model(torch.zeros(4, 1, 64, 64) + 0.1)
    assert ((predictions > -24.5) & (predictions < -21.5)).all()
    assert config["metrics"]["val"]["mae"] < 1.0

    out = tmp_path / "eval"
    result = cli("evaluate", run, "--n-per-class", 12, "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["task"] == "regress" and record["dataset"] == "A" and record["n"] == 12
    assert record["metrics"]["rmse"] >= record["metrics"]["mae"] >= abs(record["metrics"]["bias"])
    assert (out / "scatter.png").is_file()


def test_checkpoints_record_their_compute_to_best_and_in_total(tiny_arch, tmp_path):
    """The trainer records what a run cost, in one rule (lenszoo/compute.py): the machine and the
    arithmetic, minutes and images to the checkpoint, and the run's totals once it has finished;
    best/ saved at an earlier epoch learns the totals at the end, its weights untouched."""
    from lenszoo.compute import FIELDS

    run = tmp_path / "run"
    # an lr far below float32 resolution: every epoch validates alike, so best/ stays at epoch 1
    assert cli("train", "--arch", "tiny", *SMALL, "--epochs", "3", "--lr", "1e-12", "--out", run).exit_code == 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best, last = (json.loads((run / name / "config.json").read_text()) for name in ("best", "last"))
    assert best["epoch"] == 1 and last["epoch"] == 3
    weights_before = (run / "best" / "model.safetensors").read_bytes()
    for config, row in ((best, history[0]), (last, history[-1])):
        compute = config["compute"]
        assert set(compute) == set(FIELDS)
        assert compute["hardware"] and compute["threads"] >= 1 and compute["device"] == "cpu"
        assert compute["precision"] == "fp32" and compute["channels_last"] is False
        assert compute["images_to_best"] == row["images_seen"] == config["images_seen"]
        assert compute["minutes_to_best"] == row["train_minutes"]
        assert compute["images_total"] == 144 and compute["minutes_total"] == history[-1]["train_minutes"]
        assert "train_minutes" not in compute  # one meaning of minutes: to the checkpoint, or in total
    from lenszoo.checkpoint import load_checkpoint

    assert load_checkpoint(run / "best") is not None  # sha256 of the untouched weights still checks
    assert (run / "best" / "model.safetensors").read_bytes() == weights_before

    stopped = tmp_path / "stopped"  # a run not finished records no totals: not recorded, never guessed
    assert cli("train", "--arch", "tiny", *SMALL, "--out", stopped, "--max-minutes", "1e-6").exit_code == 0
    for _ in range(20):
        if (stopped / "best" / "config.json").is_file():
            break
        assert cli("train", "--resume", "--out", stopped, "--max-minutes", "0.001").exit_code == 0
    partial = json.loads((stopped / "best" / "config.json").read_text())["compute"]
    if not saved_progress(stopped)["finished"]:
        assert partial["minutes_total"] is None and partial["images_total"] is None
        assert partial["minutes_to_best"] is not None


def test_compute_of_older_records_is_read_by_the_same_rule():
    """Checkpoints made before the trainer recorded totals: minutes to the checkpoint from their
    `train_minutes`, totals from their history when it reaches the planned epochs; nothing else."""
    from lenszoo.compute import compute_figures

    history = [{"epoch": 1, "images_seen": 100, "train_minutes": 1.5}, {"epoch": 2, "images_seen": 200,
                                                                          "train_minutes": 3.0}]
    old = {"device": "cpu", "hardware": "x", "threads": 2, "processes": 1, "train_minutes": 1.5}
    figures = compute_figures(old, history, images_at_checkpoint=100, epochs=2, recipe={"precision": "fp32"})
    assert (figures["minutes_to_best"], figures["images_to_best"], figures["minutes_total"],
            figures["images_total"], figures["precision"]) == (1.5, 100, 3.0, 200, "fp32")
    assert compute_figures(old, history, images_at_checkpoint=100, epochs=3)["minutes_total"] is None
    nothing = compute_figures(None, None, images_at_checkpoint=228000, epochs=24)
    assert nothing["minutes_to_best"] is None and nothing["hardware"] is None and nothing["images_to_best"] == 228000


def test_real_builtin_architecture_trains_and_evaluates(tmp_path):
    """A real built-in (a slim harmonic network) through train -> checkpoint -> evaluate."""
    run, out = tmp_path / "run", tmp_path / "eval"
    result = cli("train", "--arch", "hnet", "--model-arg", "widths=[2,2,2]", "--model-arg", "depths=[1,1,1]",
                 "--model-arg", "head_hidden=8",
                 "--out", run, "--stream", "--dataset", "B", "--epochs", "1", "--epoch-size", "24",
                 "--batch-size", "12", "--val-size", "12", "--augment", "flip", "--quiet")
    assert result.exit_code == 0, result.output
    result = cli("evaluate", run, "--n-per-class", 4, "--rotations", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["arch"] == "hnet" and record["model"]["model_args"]["widths"] == [2, 2, 2]
    # A harmonic network's read-out is invariant: quarter turns leave its logits (numerically) unchanged.
    assert record["rotations"]["rot90"]["mean_abs_output_change"] < 1e-4
    assert record["rotations"]["rot90"]["prediction_change_rate"] == 0.0


def test_train_from_stored_data_holds_out_validation(tiny_arch, tmp_path):
    from lenszoo.data import simulate_dataset

    data = tmp_path / "A-train"
    simulate_dataset("A", "train", 10, data, progress=False)
    run = tmp_path / "run"
    result = cli("train", "--arch", "tiny", "--data", data, "--epochs", "1", "--batch-size", "8",
                 "--val-fraction", "0.2", "--out", run, "--quiet")
    assert result.exit_code == 0, result.output
    row = json.loads((run / "metrics.jsonl").read_text())
    assert row["images_seen"] == 24  # 30 images, 6 held out for validation
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["dataset"] == "A" and config["training_data"]["val"]["n"] == 6


def test_init_starts_from_another_runs_weights_and_records_them(stored_run, tmp_path):
    """A curriculum's second stage: --init copies the weights, the optimizer and budget start afresh."""
    import torch

    # Adam's first steps move each weight by about lr, so at lr 1e-9 a run keeps its starting weights.
    frozen = [*SMALL, "--epochs", "1", "--lr", "1e-9"]
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    assert cli("train", "--arch", "tiny", *frozen, "--init", stored_run, "--out", warm).exit_code == 0
    assert cli("train", "--arch", "tiny", *frozen, "--out", cold).exit_code == 0
    start, warm_w, cold_w = (tensors(run / "best" / "model.safetensors") for run in (stored_run, warm, cold))
    assert all(torch.allclose(start[k], warm_w[k], atol=1e-6) for k in start)
    assert not all(torch.allclose(start[k], cold_w[k], atol=1e-3) for k in start)  # a random start differs
    config = json.loads((warm / "best" / "config.json").read_text())
    source = json.loads((stored_run / "best" / "config.json").read_text())
    assert config["recipe"]["init"] == {"from": str((stored_run / "best").resolve()), "dataset": "A",
                                        "weights_sha256": source["weights_sha256"], "images_seen": 48}
    assert config["images_seen"] == 48  # this run's images; the record says what came before
    assert cli("train", "--resume", "--out", warm).exit_code == 0  # finished: resume needs no --init


def test_init_errors_are_one_line(stored_run, tmp_path):
    out = ["--out", tmp_path / "new"]
    assert_one_line_error(cli("train", "--arch", "tiny", *SMALL, "--init", tmp_path / "missing", *out),
                          "does not exist")
    assert_one_line_error(cli("train", "--arch", "tiny", "--task", "regress", *SMALL, "--init", stored_run, *out),
                          "holds tiny classify weights", "same --arch and --task")
    assert_one_line_error(cli("train", "--arch", "tiny", *SMALL, "--model-arg", "width=8", "--init", stored_run,
                              *out), "do not fit this model", "--model-arg")
    assert not (tmp_path / "new").exists()


# -- budget and resume ---------------------------------------------------------------------------
def test_max_minutes_stops_with_a_state_and_resume_matches_uninterrupted(tiny_arch, tmp_path):
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    args = ["--arch", "tiny", *SMALL, "--schedule", "cosine", "--augment", "rot90flip", "--seed", "3"]
    assert cli("train", *args, "--out", reference).exit_code == 0

    result = cli("train", *args, "--out", stopped, "--max-minutes", "1e-6")  # stops after its first step
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["status"] == "budget"
    progress = saved_progress(stopped)
    assert (progress["epoch"], progress["step"], progress["finished"]) == (0, 1, False)
    assert not (stopped / "last").exists()

    for _ in range(10):  # each resume makes at least one step
        result = cli("train", "--resume", "--out", stopped, "--max-minutes", "0.002")
        assert result.exit_code == 0, result.output
        if json.loads(result.output.strip().splitlines()[-1])["status"] == "finished":
            break
    result = cli("train", "--resume", "--out", stopped, "--max-minutes", "1e-6")
    assert result.exit_code == 0 and saved_progress(stopped)["finished"]  # a finished run stays finished

    for name in ("best", "last"):
        assert_same_weights(reference / name / "model.safetensors", stopped / name / "model.safetensors")
    assert val_history(reference) == val_history(stopped)


def test_bf16_channels_last_training_runs_and_resumes_exactly(tiny_arch, tmp_path):
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    args = ["--arch", "tiny", *SMALL, "--precision", "bf16", "--channels-last", "--augment", "rot90flip"]
    assert cli("train", *args, "--out", reference).exit_code == 0
    fp32 = tmp_path / "fp32"
    assert cli("train", "--arch", "tiny", *SMALL, "--augment", "rot90flip", "--out", fp32).exit_code == 0
    assert tensors(reference / "last" / "model.safetensors")["head.weight"].dtype.is_floating_point
    # bf16 changes the numbers (so it is part of the run), the weights stay fp32
    assert not tensors(reference / "last" / "model.safetensors")["head.weight"].equal(
        tensors(fp32 / "last" / "model.safetensors")["head.weight"])
    assert {str(t.dtype) for t in tensors(reference / "last" / "model.safetensors").values()
            if t.is_floating_point()} == {"torch.float32"}
    config = json.loads((reference / "best" / "config.json").read_text())
    assert config["recipe"]["precision"] == "bf16" and config["recipe"]["channels_last"] is True
    assert config["compute"]["threads"] >= 1 and config["compute"]["hardware"]
    assert config["compute"]["minutes_to_best"] >= 0 and config["compute"]["precision"] == "bf16"

    assert cli("train", *args, "--out", stopped, "--max-minutes", "1e-6").exit_code == 0
    for _ in range(10):
        result = cli("train", "--resume", "--out", stopped, "--max-minutes", "0.002")
        assert result.exit_code == 0, result.output
        if json.loads(result.output.strip().splitlines()[-1])["status"] == "finished":
            break
    for name in ("best", "last"):
        assert_same_weights(reference / name / "model.safetensors", stopped / name / "model.safetensors")
    assert val_history(reference) == val_history(stopped)


def test_stored_data_epochs_of_any_size_fix_the_budget_in_images(tiny_arch, tmp_path):
    from lenszoo.data import simulate_dataset
    from lenszoo.train import BatchPlan

    data = tmp_path / "A-train"
    simulate_dataset("A", "train", 10, data, progress=False)
    run = tmp_path / "run"
    result = cli("train", "--arch", "tiny", "--data", data, "--epochs", "2", "--epoch-size", "40",
                 "--batch-size", "8", "--val-fraction", "0.2", "--out", run, "--quiet")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["images_seen"] for row in rows] == [40, 80]  # 24 training images, 80 seen

    # Epochs cross passes; each pass is a permutation of all items; epoch = pass when the sizes agree.
    plan = BatchPlan(24, 8, seed=3, shuffle=True, epoch_size=40)
    sequence = np.concatenate([plan.epoch_items(e) for e in range(3)])
    for start in (0, 24, 48, 72, 96):
        assert sorted(sequence[start:start + 24].tolist()) == list(range(24))
    one_pass = BatchPlan(24, 8, seed=3, shuffle=True)
    for epoch in range(3):
        assert np.array_equal(one_pass.epoch_items(epoch), sequence[epoch * 24:(epoch + 1) * 24])


def test_thread_count_is_part_of_the_run(stored_run):
    run_file = json.loads((stored_run / "run.json").read_text())
    assert run_file["version"] == 2 and isinstance(run_file["config"]["threads"], int)
    other = str(run_file["config"]["threads"] + 1)
    assert_one_line_error(cli("train", "--resume", "--out", stored_run, "--threads", other),
                          "different run", "--threads")


def test_version_1_runs_resume_with_their_original_meaning(tiny_arch, tmp_path):
    """Runs started before precision, channels_last, recorded threads and stored-data epoch sizes."""
    from lenszoo.data import simulate_dataset

    data = tmp_path / "A-train"
    simulate_dataset("A", "train", 10, data, progress=False)
    run = tmp_path / "run"
    args = ["--arch", "tiny", "--data", data, "--recipe", "cpu", "--epochs", "2", "--batch-size", "8",
            "--val-fraction", "0.2", "--quiet"]
    assert cli("train", *args, "--out", run, "--max-minutes", "1e-6").exit_code == 0
    run_file = json.loads((run / "run.json").read_text())
    run_file["version"] = 1
    for key in ("precision", "channels_last"):
        del run_file["config"][key]
    run_file["config"]["threads"] = None
    run_file["config"]["epoch_size"] = 12_000  # what version 1 stored, and ignored, for stored data
    (run / "run.json").write_text(json.dumps(run_file))
    result = cli("train", "--resume", "--out", run, "--threads", "2")  # threads were a runtime option then
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["images_seen"] for row in rows] == [24, 48]  # epochs were passes over the data
    assert json.loads((run / "best" / "config.json").read_text())["recipe"]["precision"] == "fp32"



def test_time_the_process_was_stopped_is_not_training_time(monkeypatch):
    """A run paused by SIGSTOP (or a suspended machine) records its minutes without the pause: the
    pause clock sees one of its one-second ticks take far longer, and elapsed() leaves that out."""
    import types

    from lenszoo.train import state

    jump = {"at": time.monotonic() + 0.3, "by": 100.0}  # the process "stops" for 100 s, 0.3 s in
    fake = types.SimpleNamespace(monotonic=lambda: time.monotonic() + (jump["by"] if time.monotonic() > jump["at"]
                                                                        else 0.0))
    monkeypatch.setattr(state, "time", fake)
    with state.PauseClock(tick_s=0.05, gap_s=5.0) as pauses:
        time.sleep(0.8)
    assert 99.9 < pauses.paused_s < 100.1  # the jump, give or take one tick
    with state.PauseClock(tick_s=0.05, gap_s=5.0) as calm:
        time.sleep(0.3)
    assert calm.paused_s == 0.0  # no pause, nothing counted

    started = fake.monotonic() - 160.0  # began 160 s ago, of which 100 s stopped, after 30 s in earlier runs
    progress = state.Progress(elapsed_s=30.0, paused_s=7.0)
    run = state.Run(*[None] * 9, progress=progress, resumed=True, started=started, log=None, info=None, pauses=pauses)
    assert 89.0 < run.elapsed() < 91.0
    assert run.paused() == 7.0 + pauses.paused_s

def test_budget_fit_note_names_the_epochs_that_fit():
    from lenszoo.train import TrainConfig, budget_fit_note

    config = TrainConfig(arch="tiny", stream=True, dataset="A", out="x", recipe="cpu", epochs=20,
                         max_minutes=15).resolved()
    # 60 s per epoch, 840 s left after the first: 14 more fit, so 15 in all
    note = budget_fit_note(config, seconds_per_epoch=60, seconds_left=840)
    assert "epoch 16 of 20" in note and "--epochs 15" in note
    assert budget_fit_note(config, seconds_per_epoch=40, seconds_left=860) is None  # 19 x 40 s fits
    assert budget_fit_note(config, seconds_per_epoch=60, seconds_left=None) is None  # no budget
    constant = TrainConfig(arch="tiny", stream=True, dataset="A", out="x", recipe="paper", epochs=20,
                           max_minutes=15).resolved()
    assert budget_fit_note(constant, seconds_per_epoch=60, seconds_left=840) is None  # nothing to cut short


def test_resume_after_sigkill_gives_the_same_weights(tiny_arch, tmp_path):
    env = tiny_arch
    args = ["train", "--arch", "tiny", *SMALL, "--epoch-size", "64", "--model-arg", "delay=0.15",
            "--save-every-steps", "2"]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert cli(*args, "--out", reference).exit_code == 0

    process = lenszoo_process(env, *args, "--out", killed)
    deadline = time.monotonic() + 120
    progress = None
    while time.monotonic() < deadline and process.poll() is None:
        if (killed / "state" / "LATEST").is_file():
            try:
                progress = saved_progress(killed)
            except (FileNotFoundError, RuntimeError):  # LATEST moved on while reading: try again
                progress = None
            if progress and progress["epoch"] == 1 and progress["step"] >= 2:
                break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr
    assert progress and progress["epoch"] == 1 and 0 < progress["step"] < 4, progress  # killed mid-epoch 2
    assert not (killed / "last" / "config.json").read_text() == (reference / "last" / "config.json").read_text()

    result = cli("train", "--resume", "--out", killed, "--quiet")  # in-process: saves a start-up
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["status"] == "finished"
    for name in ("best", "last"):
        assert_same_weights(reference / name / "model.safetensors", killed / name / "model.safetensors")
    assert val_history(reference) == val_history(killed)


def test_resume_recovers_from_a_kill_inside_a_write(tiny_arch, tmp_path):
    """What a kill during a checkpoint write leaves behind is cleaned up or put back on --resume."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    args = ["--arch", "tiny", *SMALL, "--save-every-steps", "1"]
    assert cli("train", *args, "--out", reference).exit_code == 0
    assert cli("train", *args, "--out", run, "--max-minutes", "1e-6").exit_code == 0
    latest = (run / "state" / "LATEST").read_text().strip()
    # A state written completely but never committed, a half-written temporary folder,
    # and a best/ moved aside with the new one not yet in place.
    (run / "state" / f"{int(latest) + 1:06d}").mkdir()
    (run / "state" / f".{int(latest) + 2:06d}.1234.tmp").mkdir()
    (run / ".best.old-999").mkdir()
    (run / ".best.old-999" / "config.json").write_text("{}")

    result = cli("train", "--resume", "--out", run)
    assert result.exit_code == 0, result.output
    latest = (run / "state" / "LATEST").read_text().strip()
    assert sorted(p.name for p in (run / "state").iterdir()) == sorted(["LATEST", latest])
    assert not list(run.glob(".best.*"))
    assert_same_weights(reference / "best" / "model.safetensors", run / "best" / "model.safetensors")


# -- distributed ---------------------------------------------------------------------------------
def test_ddp_two_gloo_processes_rank0_writes(tiny_arch, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "lenszoo", "train", "--arch", "tiny", "--out", str(run), "--device", "cpu",
               "--stream", "--dataset", "A", "--epochs", "1", "--epoch-size", "32", "--batch-size", "8",
               "--val-size", "10", "--save-every-steps", "1"]
    done = subprocess.run(command, env=tiny_arch, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [s["status"] for s in summaries] == ["finished"]  # printed by rank 0 only
    run_file = json.loads((run / "run.json").read_text())
    assert run_file["world_size"] == 2
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["images_seen"] == 32  # 2 ranks x 2 steps x 8
    assert len(list((run / "state").iterdir())) == 2  # LATEST + one state: no second writer
    assert sorted(p.name for p in run.iterdir()) == ["best", "last", "learning_curve.png", "metrics.jsonl",
                                                     "run.json", "state"]


def test_ranks_see_distinct_data_and_batches_do_not_depend_on_workers():
    from lenszoo.train import BatchPlan

    plans = [BatchPlan(100, 8, seed=1, shuffle=True, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (0, 1):
        seen = [np.concatenate([p.batch(epoch, s) for s in range(p.steps_per_epoch)]) for p in plans]
        assert not set(seen[0]) & set(seen[1])
        assert len(set(seen[0]) | set(seen[1])) == 100
    assert not np.array_equal(plans[0].epoch_items(0), plans[0].epoch_items(1))  # reshuffled per epoch
    stream = [BatchPlan(30, 4, seed=0, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(np.concatenate([p.epoch_items(1) for p in stream]).tolist()) == list(range(30, 60))


def test_worker_count_does_not_change_batches():
    import torch

    from lenszoo.train import BatchAugment, BatchPlan, iterate_batches

    def fetch(i):
        return torch.arange(16.0).reshape(1, 4, 4) + 100 * i, torch.tensor(i % 3)

    plan = BatchPlan(40, 6, seed=2, shuffle=True)
    runs = [list(iterate_batches(fetch, plan, (1, 2), 3, workers=w, augment=BatchAugment("rot90flip", 7)))
            for w in (0, 2)]
    assert [(e, s) for e, s, _, _ in runs[0]] == [(e, s) for e, s, _, _ in runs[1]]
    assert tuple(runs[0][0][:2]) == (1, 2) and len(runs[0]) == 2 * plan.steps_per_epoch - 2
    for (_, _, x0, y0), (_, _, x1, y1) in zip(*runs):
        assert x0.equal(x1) and y0.equal(y1)
    # Augmented: some images turned or flipped, each one of the 8 symmetries of its original.
    changed = []
    for _, _, images, _ in runs[0]:
        for image in images:
            original = torch.arange(16.0).reshape(1, 4, 4) + image.min()
            symmetries = [torch.rot90(o, k, dims=(-2, -1)) for o in (original, original.flip(-1)) for k in range(4)]
            assert any(image.equal(sym) for sym in symmetries)
            changed.append(not image.equal(original))
    assert any(changed) and not all(changed)


# -- errors ------------------------------------------------------------------------------------
def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def stored_run(tiny_arch, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--arch", "tiny", *SMALL, "--epochs", "1", "--out", run).exit_code == 0
    return run


def test_errors_are_one_line(tiny_arch, tmp_path):
    out = ["--out", tmp_path / "new"]
    assert_one_line_error(cli("train", "--arch", "resnet5", *SMALL, *out), "unknown architecture 'resnet5'",
                          "resnet50")
    assert_one_line_error(cli("train", "--arch", "tiny", "--task", "clasify", *SMALL, *out), "unknown task",
                          "classify")
    assert_one_line_error(cli("train", "--arch", "tiny", *SMALL, "--dataset", "C", *out), "unknown dataset 'C'")
    assert_one_line_error(cli("train", "--arch", "tiny_classifier", "--task", "regress", *SMALL, *out),
                          "no 'regress' head")
    assert_one_line_error(cli("train", "--arch", "tiny", "--data", tmp_path / "missing", *out), "does not exist")
    not_data = tmp_path / "not-data"
    not_data.mkdir()
    (not_data / "notes.txt").write_text("hello")
    assert_one_line_error(cli("train", "--arch", "tiny", "--data", not_data, *out), str(not_data))
    assert_one_line_error(cli("train", "--arch", "tiny", *SMALL, "--schedule", "warm", *out), "unknown schedule")
    assert_one_line_error(cli("train", "--arch", "tiny", *SMALL, "--model-arg", "width", *out), "KEY=VALUE")
    assert not (tmp_path / "new").exists()  # nothing written for a rejected command


def test_train_with_only_an_arch_streams_the_default_dataset_and_says_so_first(tiny_arch, tmp_path):
    """`lenszoo train --arch NAME`, as typed, starts a run; its first line says what was chosen and
    how to change it, and run.json records it."""
    from click.testing import CliRunner

    from lenszoo.cli import main

    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--arch", "tiny", "--epochs", "1", "--epoch-size", "12",
                                       "--batch-size", "6", "--val-size", "6", "--quiet", "--out", str(run)])
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("no --data given: training on dataset A simulated on the fly") and "--recipe cpu" in first
    stored = json.loads((run / "run.json").read_text())["config"]
    assert stored["stream"] is True and stored["dataset"] == "A"


def test_resume_errors_are_one_line(stored_run, tmp_path):
    assert_one_line_error(cli("train", "--resume", "--out", tmp_path / "nothing"), "no run to resume")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"")
    assert_one_line_error(cli("train", "--resume", "--out", foreign), "not a lenszoo run directory")
    assert_one_line_error(cli("train", "--resume", "--out", stored_run, "--arch", "tiny_classifier"),
                          "different run", "--arch")
    assert_one_line_error(cli("train", "--arch", "tiny", *SMALL, "--out", stored_run), "already holds a run",
                          "--resume")
    # Runtime options may change on resume: this one is accepted.
    assert cli("train", "--resume", "--out", stored_run, "--arch", "tiny", "--quiet").exit_code == 0
