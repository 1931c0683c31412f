"""The manifest records each released checkpoint's holdout metrics beside its test metrics: picked up
at release from evaluations of exactly these weights, or added later to an entry released before,
from an evaluation record, which rewrites only the folder's model card (issue 29, item 1)."""

import json
import shutil
from pathlib import Path

import pytest

from .test_bad_input import cli, one_line_error
from .zoo_entries import untagged

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((REPO / "weights_manifest.json").read_text())


def released(arch, task, dataset):
    return untagged(next(e for e in MANIFEST["weights"]
                         if (e["arch"], e["task"], e["dataset"]) == (arch, task, dataset) and e.get("tag") in (None, "clean")))


def evaluation(folder, *, sha, split, accuracy, n, dataset="A", task="classify"):
    """A results.json as `lenszoo evaluate` writes it."""
    record = {"format": "lenszoo-evaluation", "format_version": 1, "arch": "radial_profile", "task": task,
              "dataset": dataset, "split": split, "n": n, "trained_on": "A",
              "model": {"weights_sha256": sha, "recipe": {"seed": 0}},
              "metrics": {"accuracy": accuracy, "auc": 0.98, "n": n, "recall": {"no_sub": 1.0}}, "plots": []}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A manifest with radial_profile classify A, its folder copied beside it."""
    root = tmp_path / "zoo"
    entry = released("radial_profile", "classify", "A")
    shutil.copytree(REPO / entry["folder"], root / entry["folder"])
    manifest = root / "weights_manifest.json"
    manifest.write_text(json.dumps({**MANIFEST, "weights": [entry]}, indent=2))
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root, manifest, entry


def folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_release_records_holdout_metrics_of_exactly_these_weights(zoo, tmp_path, monkeypatch):
    import lenszoo.contract as contract
    from lenszoo.pretrained.release import release

    measure = contract.measure_contract
    monkeypatch.setattr(contract, "measure_contract", lambda generator, **kw: measure(generator, n=48))
    root, manifest, entry = zoo
    source = tmp_path / "run" / "best"
    shutil.copytree(root / entry["folder"], source)
    sha = entry["sha256"]
    evaluation(tmp_path / "run" / "eval" / "A-test", sha=sha, split="test", accuracy=0.92, n=600)
    evaluation(tmp_path / "run" / "eval" / "A-holdout", sha=sha, split="holdout", accuracy=0.91, n=1500)
    evaluation(tmp_path / "run" / "eval" / "A-holdout-small", sha=sha, split="holdout", accuracy=0.5, n=30)
    evaluation(tmp_path / "run" / "eval" / "other", sha="f" * 64, split="holdout", accuracy=0.1, n=9000)
    evaluation(tmp_path / "run" / "eval" / "C", sha=sha, split="holdout", accuracy=0.33, n=9000, dataset="C-euclid")
    new = release(source, manifest=manifest, run_dir=tmp_path / "run", tag="again")
    assert new["metrics"]["test"]["accuracy"] == 0.92
    assert new["metrics"]["holdout"] == {"accuracy": 0.91, "auc": 0.98, "n": 1500}  # the most images, its numbers
    config = json.loads((root / new["folder"] / "config.json").read_text())
    assert config["metrics"]["holdout"]["accuracy"] == 0.91


def test_holdout_metrics_are_added_to_a_released_entry_and_its_card_not_its_weights(zoo, tmp_path):
    from lenszoo.checkpoint import read_config
    from lenszoo.pretrained.card import model_card_text

    root, manifest, entry = zoo
    folder = root / entry["folder"]
    (folder / "README.md").write_text(model_card_text(read_config(folder)))  # the card as released, config only
    before = folder_bytes(folder)
    assert "holdout" not in before["README.md"].decode()
    results = evaluation(tmp_path / "eval" / "radial_profile-classify-A-holdout", sha=entry["sha256"],
                         split="holdout", accuracy=0.9123, n=15000)
    result = cli("release", root / entry["folder"], "--metrics-from", results)
    assert result.exit_code == 0, result.output
    assert "recorded holdout metrics (n=15000)" in result.output
    saved = json.loads(manifest.read_text())["weights"][0]
    assert saved["metrics"]["holdout"] == {"accuracy": 0.9123, "auc": 0.98, "n": 15000}
    assert saved["metrics"]["test"] == entry["metrics"]["test"]  # the other splits stay
    assert {k: v for k, v in saved.items() if k != "metrics"} == {k: v for k, v in entry.items() if k != "metrics"}
    after = folder_bytes(root / entry["folder"])
    assert {k: v for k, v in after.items() if k != "README.md"} == \
        {k: v for k, v in before.items() if k != "README.md"}  # weights and config.json (its sha256) untouched
    card = after["README.md"].decode()
    assert "| holdout | accuracy | 0.9123 |" in card and "accuracy (holdout)" in card  # table and model-index
    assert f"| test | accuracy | {entry['metrics']['test']['accuracy']:.4g} |" in card

    import lenszoo

    model = lenszoo.load("radial_profile", task="classify", dataset="A")  # still verifies against the manifest
    assert model.lenszoo_config["released"]["sha256"] == entry["sha256"]


BAD_EVALUATIONS = {
    "other weights": (dict(sha="e" * 64, split="holdout"), "evaluated weights eeeeeeeeeeee, not the released"),
    "another dataset": (dict(split="holdout", dataset="C-euclid"), "records metrics on its own dataset A only"),
    "the val split": (dict(split="val"), "on the 'val' split; a manifest records test and holdout metrics only"),
}


@pytest.mark.parametrize("case", sorted(BAD_EVALUATIONS))
def test_metrics_from_an_evaluation_of_anything_else_is_refused_in_one_line(zoo, tmp_path, case):
    root, manifest, entry = zoo
    fields, message = BAD_EVALUATIONS[case]
    fields = {"sha": entry["sha256"], "accuracy": 0.5, "n": 300, **fields}
    results = evaluation(tmp_path / "eval" / "x", **fields)
    before = manifest.read_bytes()
    one_line_error(cli("release", root / entry["folder"], "--metrics-from", results), message)
    assert manifest.read_bytes() == before


@pytest.mark.parametrize("case", ["weights not released", "with --tag", "no results there"])
def test_metrics_from_for_weights_or_options_that_do_not_fit_is_refused_in_one_line(zoo, tmp_path, case):
    root, manifest, entry = zoo
    results = evaluation(tmp_path / "eval" / "x", sha=entry["sha256"], split="holdout", accuracy=0.9, n=300)
    target, extra, message = root / entry["folder"], [], ""
    if case == "weights not released":
        target = tmp_path / "mine"
        shutil.copytree(root / entry["folder"], target)
        manifest.write_text(json.dumps({**MANIFEST, "weights": []}))
        message = "are not released in"
    elif case == "with --tag":
        extra, message = ["--tag", "robust"], "drop --fp16, --tag and --default"
    else:
        results = tmp_path / "empty"
        results.mkdir()
        message = "no results.json under"
    before = manifest.read_bytes()
    one_line_error(cli("release", target, "--metrics-from", results, *extra), message)
    assert manifest.read_bytes() == before
