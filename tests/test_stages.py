"""Staged runs (`lenszoo train --stages`): a curriculum in one command and one run directory,
stage k from stage k-1's best weights, exact resume across stages (issue 30, item 1)."""

import json

from .test_train import assert_same_weights, cli, tiny_arch  # noqa: F401

PLAN = [{"name": "strong", "stream": True, "dataset": "A", "epochs": 2, "epoch_size": 24},
        {"stream": True, "dataset": "B", "epochs": 1, "epoch_size": 24, "lr": 1e-3}]
BASE = ["--arch", "tiny", "--batch-size", "8", "--val-size", "12", "--lr", "3e-3", "--quiet"]


def learning(run):
    """The run's epochs without their wall-clock timings."""
    timing = ("images_per_s", "seconds", "train_minutes", "paused_minutes")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def last_json(result):
    return json.loads(result.output.strip().splitlines()[-1])


def test_a_two_stage_run_chains_its_stages_and_resumes_exactly(tiny_arch, tmp_path):
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    result = cli("train", *BASE, "--stages", json.dumps(PLAN), "--out", reference)
    assert result.exit_code == 0, result.output
    assert last_json(result)["status"] == "finished" and last_json(result)["stages"] == 2

    stage2 = json.loads((reference / "stage-2" / "best" / "config.json").read_text())
    stage1 = json.loads((reference / "stage-1" / "best" / "config.json").read_text())
    assert stage2["recipe"]["init"]["weights_sha256"] == stage1["weights_sha256"]
    assert stage1["dataset"] == "A" and stage2["dataset"] == "B" and stage2["recipe"]["lr"] == 1e-3
    top = json.loads((reference / "best" / "config.json").read_text())
    assert top["weights_sha256"] == stage2["weights_sha256"] and [s["stage"] for s in top["stages"]] == [1, 2]
    rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [1, 1, 2] and [r["images_seen"] for r in rows] == [24, 48, 72]

    assert last_json(cli("train", *BASE, "--stages", json.dumps(PLAN), "--out", stopped,
                         "--max-minutes", "1e-6"))["status"] == "budget"
    for _ in range(20):  # each resume makes at least one step, crossing from stage 1 into stage 2
        result = cli("train", "--resume", "--out", stopped, "--max-minutes", "0.002")
        assert result.exit_code == 0, result.output
        if last_json(result)["status"] == "finished":
            break
    assert last_json(result)["status"] == "finished"
    for name in ("best", "last"):
        assert_same_weights(reference / name / "model.safetensors", stopped / name / "model.safetensors")
    assert learning(reference) == learning(stopped)
    again = cli("train", "--resume", "--out", stopped)  # a finished staged run stays finished
    assert again.exit_code == 0 and last_json(again)["status"] == "finished"


def test_staged_run_errors_are_one_line(tiny_arch, tmp_path):
    out = ["--out", tmp_path / "run"]
    for plan, fragment in ((json.dumps({"data": "x"}), "JSON list"), ("[{\"epochs\": 2}]", "says nowhere"),
                           ("[{\"stream\": true, \"dataset\": \"A\", \"seed\": 3}]", "may set only"),
                           ("not json", "neither a JSON list")):
        result = cli("train", *BASE, "--stages", plan, *out)
        assert result.exit_code != 0 and fragment in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    result = cli("train", *BASE, "--stages", json.dumps(PLAN), "--stream", "--dataset", "A", *out)
    assert result.exit_code != 0 and "each stage names its data" in result.stderr
    assert not (tmp_path / "run").exists()
