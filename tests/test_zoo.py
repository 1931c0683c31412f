"""The released zoo: one entry per architecture x task x dataset, every one loads offline with its
sha256s checked, and scores well above chance (and within reach of its released figure) on lenses
simulated fresh for the test."""

import json
import math
from pathlib import Path

import pytest
import torch

import lenszoo
from lenszoo.tasks import TASKS

from .zoo_entries import untagged

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((REPO / "weights_manifest.json").read_text())
NETWORKS = ("resnet50", "c8_steerable", "hnet", "etn")
BUILTINS = NETWORKS + ("radial_profile",)  # the control is released too, beside the 16
DATASETS = ("A", "B")  # the seed's; the zoo's 16 are NETWORKS x TASKS x DATASETS
SHORTCUT_FREE = ("C-euclid", "C-hst")  # beyond the 16 (issue 16)
N_PER_CLASS = 30
SEED = 11  # a test-split stream no model was selected on


def test_one_entry_per_architecture_task_and_dataset():
    tagged = [(e["arch"], e["task"], e["dataset"], e.get("tag")) for e in MANIFEST["weights"]]
    assert len(tagged) == len(set(tagged))
    from lenszoo.pretrained.manifest import is_default

    groups = {}
    for entry in MANIFEST["weights"]:
        groups.setdefault((entry["arch"], entry["task"], entry["dataset"]), []).append(entry)
    keys = [key for key, group in groups.items() for e in group if is_default(e, group)]  # what an untagged name loads
    assert len(keys) == len(set(keys)) == len(groups)
    assert set(keys) <= {(a, t, d) for a in BUILTINS for t in TASKS for d in DATASETS + SHORTCUT_FREE}
    the_sixteen = {(a, t, d) for a in NETWORKS for t in TASKS for d in DATASETS}
    assert len(the_sixteen) == 16
    assert not the_sixteen - set(keys), f"missing from the zoo: {sorted(the_sixteen - set(keys))}"



def test_every_weights_folder_is_one_entrys():
    """No released folder outlives its entry (a replaced or renamed release leaves nothing behind)."""
    folders = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "weights").iterdir() if p.is_dir())
    assert folders == sorted(e["folder"] for e in MANIFEST["weights"])

def test_names_agree_and_real_cutouts_get_robust_weights_by_default():
    """Each entry's config.json names the tag its manifest entry has; for A and B classification an
    untagged name loads the `robust` weights and the seed protocol's stay loadable as `clean`."""
    for entry in MANIFEST["weights"]:
        config = json.loads((REPO / entry["folder"] / "config.json").read_text())
        assert config.get("tag") == entry.get("tag"), entry["folder"]
    for arch in BUILTINS:
        for dataset in DATASETS:
            group = {e.get("tag"): e for e in MANIFEST["weights"]
                     if (e["arch"], e["task"], e["dataset"]) == (arch, "classify", dataset)}
            assert set(group) == {"clean", "robust"} and group["robust"].get("default") is True, (arch, dataset)


def test_every_entry_records_how_it_was_made():
    for entry in MANIFEST["weights"]:
        recipe = entry["recipe"]
        assert recipe.get("images_seen"), entry["folder"]
        assert recipe.get("precision", "fp32") in ("fp32", "bf16")
        # compute is what the trainer recorded, read by the one rule (lenszoo/compute.py): nothing typed by hand
        from lenszoo.compute import compute_figures

        config = json.loads((REPO / entry["folder"] / "config.json").read_text())
        assert recipe["compute"] == compute_figures(config.get("compute"), config.get("history"),
                                                    images_at_checkpoint=config.get("images_seen"),
                                                    epochs=recipe.get("epochs"), recipe=recipe), entry["folder"]
        assert {"accuracy", "auc"} <= set(entry["metrics"]["test"]) if entry["task"] == "classify" \
            else {"mae", "rmse"} <= set(entry["metrics"]["test"])


@pytest.fixture(scope="module")
def fresh_lenses():
    from lenszoo.demo import fresh_lenses

    return {d: fresh_lenses(d, N_PER_CLASS, SEED) for d in sorted({e["dataset"] for e in MANIFEST["weights"]})}


def at_chance(entry) -> bool:
    """A classifier whose released test accuracy is within three standard errors of chance."""
    test = entry["metrics"]["test"]
    return test["accuracy"] < 1 / 3 + 3 * math.sqrt(2 / 9 / test["n"])


def floor(entry, mean_mae):
    """Halfway between chance and the released figure, less three standard errors of a small batch."""
    test = entry["metrics"]["test"]
    if entry["task"] == "classify":
        chance, released, n = 1 / 3, test["accuracy"], 3 * N_PER_CLASS
        return chance + 0.5 * (released - chance) - 3 * math.sqrt(released * (1 - released) / n + 1e-4)
    return mean_mae - 0.5 * (mean_mae - test["mae"]) + 3 * test["rmse"] / math.sqrt(N_PER_CLASS)


@pytest.mark.parametrize("entry", MANIFEST["weights"],
                         ids=lambda e: f"{e['arch']}-{e['task']}-{e['dataset']}" + (f".{e['tag']}" if e.get("tag") else ""))
def test_every_released_model_loads_and_beats_its_floor(entry, fresh_lenses, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from weights/ alone
    model = lenszoo.load(entry["arch"], task=entry["task"], dataset=entry["dataset"], tag=entry.get("tag"))
    assert model.lenszoo_config["released"]["sha256"] == entry["sha256"]
    images, labels, masses = fresh_lenses[entry["dataset"]]
    with torch.no_grad():
        if entry["task"] == "classify":
            accuracy = float((model(model.preprocess(images)).argmax(1) == labels).float().mean())
            if at_chance(entry):  # released at chance (the control on C): it must not be better now either
                assert abs(accuracy - 1 / 3) < 4 * math.sqrt(2 / 9 / (3 * N_PER_CLASS)), accuracy
            else:
                assert accuracy > floor(entry, None) > 1 / 3, accuracy
        else:
            axion = torch.isfinite(masses)
            predictions = model(model.preprocess(images[axion])).reshape(-1)
            mae = float((predictions - masses[axion]).abs().mean())
            mean_mae = float((masses[axion] - masses[axion].mean()).abs().mean())
            assert mae < floor(entry, mean_mae), (mae, mean_mae)


def test_every_entry_states_its_input_contract_as_its_config_does():
    """What images each set of weights expects (issue 28): in the manifest and in config.json alike."""
    for entry in MANIFEST["weights"]:
        contract = entry.get("input_contract")
        assert contract and contract["image_size"] == [64, 64] and contract["pixel_scale_arcsec"], entry["folder"]
        assert contract["measured"]["n"] >= 1000 and contract["lens_light"] is False
        config = json.loads((REPO / entry["folder"] / "config.json").read_text())
        assert config["input_contract"] == contract, entry["folder"]
        assert "What images it expects" in (REPO / entry["folder"] / "README.md").read_text()


def test_the_readme_headline_table_is_the_manifests():
    """README.md's results table is generated from weights_manifest.json (`lenszoo report --readme`):
    a release that changes the numbers must regenerate it."""
    from lenszoo.report import load_paper
    from lenszoo.report_page import HEADLINE_BEGIN, HEADLINE_END, headline_table
    from lenszoo.pretrained.manifest import released_weights

    readme = (REPO / "README.md").read_text()
    block = readme.split(HEADLINE_BEGIN)[1].split(HEADLINE_END)[0].strip()
    paper = load_paper(REPO / "docs" / "seed_paper.json")
    assert block == headline_table(released_weights(REPO / "weights_manifest.json"), paper["rows"])


# -- a zoo with a checkpoint that is neither here nor published (issue 27, items 13 and 14) -------
@pytest.fixture(params=["checkout", "installed"])
def partial_zoo(request, tmp_path, monkeypatch):
    """A manifest whose untagged radial_profile/*/A checkpoints are on disk and whose resnet50/classify/A is
    neither on disk nor published: in a folder of one's own (LENSZOO_MANIFEST) or as an installed
    wheel's lenszoo/zoo/ (which carries only the small checkpoints)."""
    import shutil

    import lenszoo.pretrained.manifest

    zoo = tmp_path / "zoo"
    seed_protocol = [untagged(e) for e in MANIFEST["weights"] if e.get("tag") in (None, "clean")]  # one a key
    keep = [e for e in seed_protocol if e["arch"] == "radial_profile" and e["dataset"] == "A"]
    missing = next(e for e in seed_protocol if (e["arch"], e["task"], e["dataset"]) == ("resnet50", "classify", "A"))
    assert not missing["hf_repo_id"]
    for entry in keep:
        shutil.copytree(REPO / entry["folder"], zoo / entry["folder"])
    (zoo / "weights_manifest.json").write_text(json.dumps({**MANIFEST, "weights": keep + [missing]}))
    monkeypatch.setenv("LENSZOO_MANIFEST", str(zoo / "weights_manifest.json"))
    if request.param == "installed":
        monkeypatch.setattr(lenszoo.pretrained.manifest, "PACKAGED_ZOO", zoo.resolve())
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no request leaves the machine
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    expected = ("not bundled with this install and not yet published on the Hugging Face Hub"
                if request.param == "installed" else f"not under {zoo} and not yet published on the Hugging Face Hub")
    return zoo, keep, expected


def cli(*args):
    from click.testing import CliRunner

    from lenszoo.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_demo_scores_what_is_here_and_names_what_it_skipped_in_one_line(partial_zoo, tmp_path):
    zoo, keep, expected = partial_zoo
    result = cli("demo", "--n-per-class", "1", "--figure", tmp_path / "demo.png")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped 1 of 3 released checkpoints, not available here: resnet50/classify/A ({expected}); "
                       "to use them, run lenszoo from a git checkout of its repository (which carries weights/), or "
                       "set LENSZOO_MANIFEST to the weights_manifest.json of a folder whose weights/ holds them"]
    assert result.stdout.strip().splitlines()[-1].startswith(f"{len(keep)} models in ")
    assert (tmp_path / "demo.png").is_file()


def test_download_all_fetches_the_rest_and_names_what_it_skipped(partial_zoo):
    zoo, keep, expected = partial_zoo
    result = cli("download", "--all")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [f"radial_profile/{e['task']}/A" for e in keep]
    assert lines[-1].startswith(f"{len(keep)} checkpoints ready for offline use; skipped 1 of 3 released "
                                f"checkpoints, not available here: resnet50/classify/A ({expected})")


def test_weights_neither_here_nor_published_say_so_and_what_works(partial_zoo):
    from lenszoo.errors import LenszooError

    zoo, keep, expected = partial_zoo
    with pytest.raises(LenszooError) as caught:
        lenszoo.load("resnet50", task="classify", dataset="A")
    message = str(caught.value)
    assert "corrupted" not in message and "not yet published on the Hugging Face Hub" in message
    assert "git checkout" in message and "LENSZOO_MANIFEST" in message
    if "bundled" in expected:
        assert "are not bundled with this installed lenszoo" in message and "47 MB" in message
    else:
        assert f"are not at {zoo / 'weights' / 'resnet50-classify-A'}" in message
    info = cli("info", "resnet50")
    assert info.exit_code == 0, info.output
    assert [line.strip() for line in info.stdout.splitlines() if "weights:" in line] == \
        [f"weights:     task=classify dataset=A: {expected}"]
    info = cli("info", "radial_profile")
    paths = [line.rsplit(": ", 1)[1] for line in info.stdout.splitlines() if "weights:" in line]
    assert paths == [str(zoo / e["file"]) for e in keep] and all(Path(p).is_file() for p in paths)


def test_predict_rows_name_the_weights_with_their_tag():
    """Rows say which weights scored them: robust (the default) and clean differ in name, not only sha256."""
    images = torch.zeros(2, 64, 64).numpy()
    for name, tag in (("radial_profile", "robust"), ("radial_profile.clean", "clean")):
        entry = next(e for e in MANIFEST["weights"] if (e["arch"], e["task"], e["dataset"], e.get("tag")) ==
                     ("radial_profile", "classify", "A", tag))
        rows = lenszoo.predict(name, images, dataset="A")
        assert {(r["model"], r["model_sha256"]) for r in rows} == {(f"radial_profile-classify-A.{tag}", entry["sha256"])}
