"""Weight tags (timm's `arch.tag`) and no silent default dataset: which released weights a name means."""

import json
import shutil
from pathlib import Path

import pytest

import lenszoo
from lenszoo.errors import LenszooError
from lenszoo.pretrained.manifest import find_entry, validate_manifest
from lenszoo.pretrained.release import rename_release

from .zoo_entries import untagged

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((REPO / "weights_manifest.json").read_text())


def entry_of(arch, task, dataset):
    return untagged(next(e for e in MANIFEST["weights"]
                         if (e["arch"], e["task"], e["dataset"]) == (arch, task, dataset) and e.get("tag") in (None, "clean")))


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """radial_profile classify A and B, plus a copy of A's weights released under tag `robust`."""
    root = tmp_path / "zoo"
    a, b = entry_of("radial_profile", "classify", "A"), entry_of("radial_profile", "classify", "B")
    for entry in (a, b):
        shutil.copytree(REPO / entry["folder"], root / entry["folder"])
    robust = dict(b, folder=b["folder"] + ".robust", file=b["folder"] + ".robust/model.safetensors", tag="robust",
                  dataset="A")
    shutil.copytree(REPO / b["folder"], root / robust["folder"])
    manifest = root / "weights_manifest.json"
    manifest.write_text(json.dumps({**MANIFEST, "weights": [a, b, robust]}))
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root, manifest, a, b, robust


def sha(model):
    return model.lenszoo_config["released"]["sha256"]


def test_a_tag_by_keyword_or_by_name_means_the_same_weights(zoo):
    _, _, a, _, robust = zoo
    assert sha(lenszoo.load("radial_profile", dataset="A", tag="robust")) == robust["sha256"]
    assert sha(lenszoo.load("radial_profile.robust", dataset="A")) == robust["sha256"]
    assert sha(lenszoo.load("radial_profile", dataset="A")) == a["sha256"]  # untagged: the default
    with pytest.raises(LenszooError, match="tag 'robust' but tag='other'"):
        lenszoo.load("radial_profile.robust", dataset="A", tag="other")
    with pytest.raises(LenszooError, match="has no weights tagged 'nope'; its tags: robust"):
        lenszoo.load("radial_profile.nope", dataset="A")


def test_the_entry_marked_default_is_what_an_untagged_name_loads(zoo):
    _, manifest, a, b, robust = zoo
    data = json.loads(manifest.read_text())
    data["weights"][2]["default"] = True
    data["weights"][0]["tag"] = "clean"  # the former default stays loadable under its own tag
    manifest.write_text(json.dumps(data))
    assert sha(lenszoo.load("radial_profile", dataset="A")) == robust["sha256"]
    assert sha(lenszoo.load("radial_profile.clean", dataset="A")) == a["sha256"]


def test_no_dataset_is_an_error_naming_the_choices_unless_there_is_only_one(zoo):
    _, manifest, a, _, _ = zoo
    with pytest.raises(LenszooError, match=r"several datasets \(A, B\).*dataset="):
        lenszoo.load("radial_profile")
    with pytest.raises(LenszooError, match="several datasets"):
        lenszoo.predict("radial_profile", __import__("numpy").zeros((1, 64, 64)))
    data = json.loads(manifest.read_text())
    data["weights"] = [data["weights"][0]]
    manifest.write_text(json.dumps(data))
    assert sha(lenszoo.load("radial_profile")) == a["sha256"]  # one dataset: nothing to choose


def test_the_manifest_allows_one_default_and_one_entry_per_tag():
    a = entry_of("radial_profile", "classify", "A")
    ok = {"schema_version": 1, "weights": [dict(a, tag="clean"), dict(a, tag="robust", default=True)]}
    assert validate_manifest(ok) == []
    two = {"schema_version": 1, "weights": [dict(a, default=True), dict(a, tag="robust", default=True)]}
    assert any("second default" in p for p in validate_manifest(two))
    same = {"schema_version": 1, "weights": [dict(a, tag="robust"), dict(a, tag="robust")]}
    assert any("duplicate" in p for p in validate_manifest(same))
    assert any("not a valid name" in p for p in validate_manifest({"schema_version": 1,
                                                                   "weights": [dict(a, tag="no way")]}))
    hidden = {"schema_version": 1, "weights": [a, dict(a, tag="robust", default=True), dict(a, dataset="B")]}
    assert [p for p in validate_manifest(hidden) if "no name loads them" in p] == [
        "entry 0 (radial_profile/classify/A): untagged and not the default, so no name loads them; tag them first "
        "(lenszoo release weights/radial_profile-classify-A --retag TAG)"]


def test_release_with_a_tag_and_default(zoo, tmp_path, monkeypatch):
    import lenszoo.contract as contract
    from lenszoo.pretrained.release import release

    measure = contract.measure_contract
    monkeypatch.setattr(contract, "measure_contract", lambda generator, **kw: measure(generator, n=48))
    root, manifest, a, _, _ = zoo
    source = tmp_path / "ckpt"
    shutil.copytree(root / a["folder"], source)
    before = manifest.read_bytes()
    with pytest.raises(LenszooError, match=r"radial_profile/classify/A has untagged weights.*--retag TAG"):
        release(source, manifest=manifest, tag="t2", default=True)  # they would have no name left
    assert manifest.read_bytes() == before and not (root / "weights" / "radial_profile-classify-A.t2").exists()
    rename_release(root / a["folder"], tag="first", manifest=manifest)
    entry = release(source, manifest=manifest, tag="t2", default=True)
    assert entry["folder"].endswith("radial_profile-classify-A.t2") and entry["tag"] == "t2" and entry["default"]
    assert entry["input_contract"]["pixel_scale_arcsec"] == 0.101
    config = json.loads((root / entry["folder"] / "config.json").read_text())
    assert config["tag"] == "t2" and config["input_contract"] == entry["input_contract"]
    card = (root / entry["folder"] / "README.md").read_text()
    assert 'lenszoo.load("radial_profile.t2"' in card and "0.101 arcsec/pixel" in card
    assert sum(bool(e.get("default")) for e in json.loads(manifest.read_text())["weights"]) == 1
    assert find_entry("radial_profile", "classify", "A", manifest)["tag"] == "t2"
    assert find_entry("radial_profile", "classify", "A", manifest, tag="first")["sha256"] == a["sha256"]


def test_retag_and_default_rename_released_weights_in_place(zoo):
    """`lenszoo release FOLDER --retag TAG` and `--default`: the weights and the folder stay, the
    name changes in config.json, the card and the manifest, and nothing is left without a name."""
    from click.testing import CliRunner

    from lenszoo.cli import main
    from lenszoo.files import sha256_file

    root, manifest, a, _, robust = zoo
    folder, robust_folder = root / a["folder"], root / robust["folder"]
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    run = lambda *args: CliRunner().invoke(main, ["release", *map(str, args)])  # noqa: E731

    refused = run(robust_folder, "--default")  # radial_profile/classify/A's untagged weights would lose their name
    assert refused.exit_code == 1 and "tag them first (lenszoo release weights/radial_profile-classify-A --retag TAG)" \
        in refused.output and len(refused.output.strip().splitlines()) == 1
    assert run(folder, "--retag", "robust").exit_code == 1  # a tag names one set of weights
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files  # refused: nothing written

    done = run(folder, "--retag", "clean")
    assert done.exit_code == 0 and "loads as radial_profile.clean" in done.output, done.output
    entry = find_entry("radial_profile", "classify", "A", manifest, tag="clean")
    config = json.loads((folder / "config.json").read_text())
    assert config["tag"] == "clean" and entry["config_sha256"] == sha256_file(folder / "config.json")
    assert entry["sha256"] == a["sha256"] and (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert 'lenszoo.load("radial_profile.clean"' in (folder / "README.md").read_text()
    assert sha(lenszoo.load("radial_profile.clean", dataset="A")) == a["sha256"]  # the config sha256 checks out

    assert run(robust_folder, "--default").exit_code == 0
    assert sha(lenszoo.load("radial_profile", dataset="A")) == robust["sha256"]
    assert sha(lenszoo.load("radial_profile", dataset="A", tag="clean")) == a["sha256"]
    assert run(folder, "--default").exit_code == 0  # and back: one default at a time
    assert sha(lenszoo.load("radial_profile", dataset="A")) == a["sha256"]
    assert sum(bool(e.get("default")) for e in json.loads(manifest.read_text())["weights"]) == 1


def test_info_shows_tags_the_default_and_the_contract(zoo):
    from click.testing import CliRunner

    from lenszoo.cli import main

    result = CliRunner().invoke(main, ["info", "radial_profile", "--dataset", "A"])
    assert result.exit_code == 0, result.output
    assert "task=classify dataset=A tag=robust:" in result.output
    assert "dataset=A (default):" in result.output
    if MANIFEST["weights"][0].get("input_contract"):
        assert "pixel scale:" in result.output and "0.101 arcsec/pixel" in result.output


def test_list_and_report_show_tags(zoo, tmp_path):
    from click.testing import CliRunner

    from lenszoo.cli import main
    from lenszoo.evaluate import RESULTS_FORMAT
    from lenszoo.report import build_report, load_results

    listed = CliRunner().invoke(main, ["list"]).output.splitlines()
    assert "robust" in next(line for line in listed if line.startswith("radial_profile"))
    base = {"format": RESULTS_FORMAT, "task": "classify", "arch": "radial_profile", "dataset": "A", "split": "test",
            "n": 10, "metrics": {"accuracy": 0.9, "auc": 0.95}}
    for name, tag, sha in (("plain", None, "a"), ("robust", "robust", "b")):
        record = dict(base, tag=tag, model={"weights_sha256": sha * 64})
        (tmp_path / f"{name}.results.json").write_text(json.dumps(record))
    text = build_report(load_results([tmp_path]))
    rows = [line for line in text.splitlines() if line.startswith("| radial_profile")]
    assert len(rows) == 2 and any(row.startswith("| radial_profile.robust |") for row in rows)


def test_new_weights_under_a_released_name_take_its_folder_and_default(zoo, tmp_path, monkeypatch):
    """Retrained weights released under an existing name (e.g. ResNet-50 at more images as
    `resnet50.clean`) replace the old ones in the folder the manifest names, default and all:
    no second folder, no orphan."""
    import lenszoo.contract as contract
    from lenszoo.pretrained.release import release

    measure = contract.measure_contract
    monkeypatch.setattr(contract, "measure_contract", lambda generator, **kw: measure(generator, n=48))
    root, manifest, a, _, _ = zoo
    source = tmp_path / "retrained"
    shutil.copytree(root / a["folder"], source)
    rename_release(root / a["folder"], tag="clean", manifest=manifest)
    rename_release(root / a["folder"], default=True, manifest=manifest)
    weights_before = sorted(p.name for p in (root / "weights").iterdir())

    entry = release(source, manifest=manifest, tag="clean", fp16=True)  # half precision: other bytes
    assert entry["folder"] == a["folder"] and entry["default"] and entry["tag"] == "clean"
    assert entry["sha256"] != a["sha256"]
    assert sorted(p.name for p in (root / "weights").iterdir()) == weights_before
    assert sha(lenszoo.load("radial_profile", dataset="A")) == entry["sha256"]
    assert [e["tag"] for e in json.loads(manifest.read_text())["weights"] if e["dataset"] == "A"].count("clean") == 1
