"""Checkpoints on a Hub-compatible server on 127.0.0.1: publish, pinned loads, cache, offline, safety."""

import json
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import lenszoo
import lenszoo.pretrained.publish
import lenszoo.pretrained.release
from lenszoo.checkpoint import WEIGHTS_NAME, save_checkpoint
from lenszoo.cli import main
from lenszoo.errors import LenszooError
from lenszoo.registry import registry
from lenszoo.pretrained.manifest import read_manifest, validate_manifest
from lenszoo.pretrained.release import release

from .hub_server import HubServer
from .probes import ProbePlugin, registered

TOKEN = "hf_lenszooTestSecretToken0123456789"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def probe_arch():
    with registered(ProbePlugin("hub_probe"), "hub-probe"):
        yield


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def make_checkpoint(folder, seed=0, task="classify", **config):
    torch.manual_seed(seed)
    model = lenszoo.create_model("hub_probe", task=task)
    save_checkpoint(folder, model, dataset="B", metrics={"val": {"accuracy": 0.5 + seed / 100}},
                    recipe={"lr": 1e-3, "epochs": 1}, images_seen=128, extra=config or None)
    return model


def outputs(model, seed=123):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.eval()(torch.randn(4, 1, 64, 64))


def downloads(server):
    return [r for r in server.state.requests if r["method"] == "GET" and "/resolve/" in r["path"]]


def test_publish_download_load_gives_identical_outputs(hub, probe_arch, tmp_path):
    original = make_checkpoint(tmp_path / "ckpt")
    result = lenszoo.pretrained.publish.publish(tmp_path / "ckpt", "lenszoo/hub-probe-B", tag="v1")
    assert len(result.commit_sha) == 40 and result.url == f"{hub.url}/lenszoo/hub-probe-B"
    loaded = lenszoo.load(f"hf-hub:lenszoo/hub-probe-B@{result.commit_sha}")
    assert not loaded.training
    assert torch.equal(outputs(original), outputs(loaded))
    assert loaded.lenszoo_config["arch"] == "hub_probe" and loaded.lenszoo_config["dataset"] == "B"
    assert torch.equal(outputs(lenszoo.load("hf-hub:lenszoo/hub-probe-B@v1")), outputs(original))
    repo = hub.state.repos["lenszoo/hub-probe-B"]
    card = repo.commits[repo.resolve("main")]["README.md"].decode()
    assert f'lenszoo.load("hf-hub:lenszoo/hub-probe-B@{result.commit_sha}")' in card  # pinned to the weights
    assert "pip install `lenszoo==" in card
    front_matter = card.split("---")[1]
    assert "library_name: lenszoo" in front_matter and "model-index" in front_matter
    assert "license: mit" in front_matter and "accuracy" in front_matter


def test_a_later_commit_to_main_does_not_change_a_pinned_load(hub, probe_arch, tmp_path):
    first = make_checkpoint(tmp_path / "one", seed=1)
    sha1 = lenszoo.pretrained.publish.publish(tmp_path / "one", "lenszoo/moving").commit_sha
    second = make_checkpoint(tmp_path / "two", seed=2)
    sha2 = lenszoo.pretrained.publish.publish(tmp_path / "two", "lenszoo/moving").commit_sha
    assert sha1 != sha2 and not torch.equal(outputs(first), outputs(second))
    assert torch.equal(outputs(lenszoo.load(f"hf-hub:lenszoo/moving@{sha1}")), outputs(first))
    assert torch.equal(outputs(lenszoo.load("hf-hub:lenszoo/moving")), outputs(second))


def test_a_corrupted_cache_file_is_detected_and_fetched_again(hub, probe_arch, tmp_path):
    original = make_checkpoint(tmp_path / "ckpt")
    sha = lenszoo.pretrained.publish.publish(tmp_path / "ckpt", "lenszoo/corrupt").commit_sha
    lenszoo.load(f"hf-hub:lenszoo/corrupt@{sha}")
    before = len(downloads(hub))
    cached = next((tmp_path / "hf-home" / "hub").rglob(f"snapshots/{sha}/{WEIGHTS_NAME}"))
    blob = cached.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    loaded = lenszoo.load(f"hf-hub:lenszoo/corrupt@{sha}")
    assert torch.equal(outputs(loaded), outputs(original))
    assert len(downloads(hub)) > before  # fetched again


def test_a_published_run_card_has_its_test_metrics_and_the_plugin_package(hub, tmp_path, fake_distribution,
                                                                          use_plugins):
    """A model card names what to install (lenszoo and the architecture's plugin package, with
    versions) and shows the test metrics `lenszoo evaluate` wrote for these weights."""
    from lenszoo.train import TrainConfig, train

    source = """
import lenszoo


def build(task, width=4):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(1, width, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 3 if task == "classify" else 1))


@lenszoo.hookimpl
def register_architectures(register):
    register("card_probe", build, model_args={"width": 4})
"""
    fake_distribution("lenszoo-cardprobe", {"card_probe": "lenszoo_cardprobe"}, {"lenszoo_cardprobe.py": source},
                      version="3.1.4")
    use_plugins("lenszoo-cardprobe")
    run = tmp_path / "run"
    train(TrainConfig(arch="card_probe", stream=True, dataset="A", epochs=1, epoch_size=6, batch_size=6, val_size=6,
                      out=str(run), quiet=True))
    from lenszoo.evaluate import run_evaluation

    run_evaluation(str(run), n_per_class=2, device="cpu", log=lambda m: None)
    result = CliRunner().invoke(main, ["publish", str(run), "--repo-id", "lenszoo/card-probe"])
    assert result.exit_code == 0, result.output
    repo = hub.state.repos["lenszoo/card-probe"]
    card = repo.commits[repo.resolve("main")]["README.md"].decode()
    assert "`lenszoo-cardprobe==3.1.4`" in card and "plugin `card_probe`" in card
    assert "| test | accuracy |" in card
    config = json.loads(repo.commits[repo.resolve("main")]["config.json"])
    assert config["training_data"]["generator"]["config"]["instrument"]  # streamed data: the generator's config


def test_a_corrupted_cached_config_is_fetched_again(hub, probe_arch, tmp_path):
    original = make_checkpoint(tmp_path / "ckpt")
    sha = lenszoo.pretrained.publish.publish(tmp_path / "ckpt", "lenszoo/corrupt-config").commit_sha
    lenszoo.load(f"hf-hub:lenszoo/corrupt-config@{sha}")
    before = len(downloads(hub))
    cached = next((tmp_path / "hf-home" / "hub").rglob(f"snapshots/{sha}/config.json")).resolve()
    config = json.loads(cached.read_text())
    config["model_args"] = None  # the same size or not: any damage is caught by the schema
    cached.write_text(json.dumps(config))
    loaded = lenszoo.load(f"hf-hub:lenszoo/corrupt-config@{sha}")
    assert torch.equal(outputs(loaded), outputs(original))
    assert len(downloads(hub)) > before


def test_offline_with_warm_cache_works_and_cold_cache_fails_fast(hub, probe_arch, tmp_path, monkeypatch):
    original = make_checkpoint(tmp_path / "ckpt")
    sha = lenszoo.pretrained.publish.publish(tmp_path / "ckpt", "lenszoo/offline").commit_sha
    lenszoo.load(f"hf-hub:lenszoo/offline@{sha}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.state.requests.clear()
    assert torch.equal(outputs(lenszoo.load(f"hf-hub:lenszoo/offline@{sha}")), outputs(original))
    assert hub.state.requests == []  # nothing touched the network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "cold-cache"))
    start = time.monotonic()
    with pytest.raises(LenszooError, match="not in the Hugging Face cache and HF_HUB_OFFLINE=1"):
        lenszoo.load(f"hf-hub:lenszoo/offline@{sha}")
    assert time.monotonic() - start < 3
    assert hub.state.requests == []


def test_keys_must_match_strictly(probe_arch, tmp_path):
    from safetensors.torch import load_file, save_file

    make_checkpoint(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / WEIGHTS_NAME
    state = load_file(str(weights))
    state["head.extra"] = torch.zeros(1)
    del state["4.bias"]
    save_file(state, str(weights))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config.pop("weights_sha256")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LenszooError, match=r"missing keys: 4\.bias; unexpected keys: head\.extra"):
        lenszoo.load(str(tmp_path / "ckpt"))


def test_pickle_weights_are_refused(probe_arch, tmp_path):
    make_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / WEIGHTS_NAME).rename(tmp_path / "ckpt" / "pytorch_model.bin")
    with pytest.raises(LenszooError, match="refuses pickle-format weights"):
        lenszoo.load(str(tmp_path / "ckpt"))


def test_hf_hub_with_a_missing_plugin_names_the_package(hub, probe_arch, tmp_path):
    make_checkpoint(tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(arch="d8_elsewhere", package="lenszoo-elsewhere", plugin="d8_elsewhere")
    config_path.write_text(json.dumps(config))
    sha = lenszoo.pretrained.publish.publish(tmp_path / "ckpt", "lenszoo/needs-plugin").commit_sha
    with pytest.raises(LenszooError, match=r"plugin package 'lenszoo-elsewhere'.*pip install lenszoo-elsewhere"):
        lenszoo.load(f"hf-hub:lenszoo/needs-plugin@{sha}")


def test_the_token_is_sent_but_never_printed(hub, probe_arch, tmp_path, capfd, caplog):
    make_checkpoint(tmp_path / "ckpt")
    result = CliRunner().invoke(main, ["publish", str(tmp_path / "ckpt"), "--repo-id", "lenszoo/secret",
                                       "--tag", "v1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "commit" in result.output and hub.url in result.output
    captured = capfd.readouterr()
    for text in (result.output, captured.out, captured.err, caplog.text):
        assert TOKEN not in text
    auth = [r["headers"].get("Authorization") or r["headers"].get("authorization") for r in hub.state.requests]
    assert f"Bearer {TOKEN}" in auth


def test_publish_errors_are_one_line(hub, probe_arch, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["publish", str(tmp_path / "nothing"), "--repo-id", "lenszoo/x"])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
    make_checkpoint(tmp_path / "ckpt")
    result = runner.invoke(main, ["publish", str(tmp_path / "ckpt"), "--repo-id", "not a repo"])
    assert result.exit_code == 1 and "invalid Hub repo id" in result.output


def test_released_weights_resolve_local_then_cache_then_pinned_hub(hub, probe_arch, tmp_path, monkeypatch):
    manifest = tmp_path / "repo" / "weights_manifest.json"
    manifest.parent.mkdir()
    original = make_checkpoint(tmp_path / "run" / "best", task="regress")
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    result = CliRunner().invoke(main, ["release", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    entry = read_manifest(manifest)["weights"][0]
    assert entry["file"] == "weights/hub_probe-regress-B/model.safetensors" and entry["hf_revision"] is None
    # 1. the file under weights/
    assert torch.equal(outputs(lenszoo.load("hub_probe", task="regress", dataset="B")), outputs(original))
    # publish and record the commit it was published at
    refused = CliRunner().invoke(main, ["publish", str(tmp_path / "run"), "--repo-id", "lenszoo/probe-regress-B",
                                        "--update-manifest"])  # the release states its input contract: other bytes
    assert refused.exit_code == 1 and "publish the released folder" in refused.output
    result = CliRunner().invoke(main, ["publish", str(manifest.parent / entry["folder"]), "--repo-id",
                                       "lenszoo/probe-regress-B", "--update-manifest"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    entry = read_manifest(manifest)["weights"][0]
    assert entry["hf_repo_id"] == "lenszoo/probe-regress-B" and len(entry["hf_revision"]) == 40
    # 3. without the local file: a download pinned to the manifest's commit
    (manifest.parent / entry["file"]).unlink()
    later = make_checkpoint(tmp_path / "later", seed=7, task="regress")
    lenszoo.pretrained.publish.publish(tmp_path / "later", "lenszoo/probe-regress-B")  # moves main, not the pin
    loaded = lenszoo.load("hub_probe", task="regress", dataset="B")
    assert torch.equal(outputs(loaded), outputs(original)) and not torch.equal(outputs(later), outputs(original))
    # 2. then from the cache, offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.state.requests.clear()
    assert torch.equal(outputs(lenszoo.load("hub_probe", task="regress", dataset="B")), outputs(original))
    assert hub.state.requests == []
    with pytest.raises(LenszooError, match="no released weights for arch='hub_probe' task='classify'"):
        lenszoo.load("hub_probe", task="classify", dataset="B")


def test_download_prefetches_into_the_cache(hub, probe_arch, tmp_path, monkeypatch):
    manifest = tmp_path / "weights_manifest.json"
    monkeypatch.setenv("LENSZOO_MANIFEST", str(manifest))
    original = make_checkpoint(tmp_path / "ckpt")
    release(tmp_path / "ckpt", manifest=manifest)
    sha = lenszoo.pretrained.publish.publish(tmp_path / "weights" / "hub_probe-classify-B", "lenszoo/prefetch").commit_sha
    lenszoo.pretrained.release.record_publication("hub_probe", "classify", "B", "lenszoo/prefetch", sha, manifest=manifest)
    (tmp_path / "weights" / "hub_probe-classify-B" / WEIGHTS_NAME).unlink()
    result = CliRunner().invoke(main, ["download", "hub_probe", "--task", "classify", "--dataset", "B"],
                                catch_exceptions=False)
    assert result.exit_code == 0 and sha in result.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(outputs(lenszoo.load("hub_probe", task="classify", dataset="B")), outputs(original))


def test_download_takes_hub_names_too(hub, probe_arch, tmp_path, monkeypatch):
    original = make_checkpoint(tmp_path / "ckpt")
    sha = lenszoo.pretrained.publish.publish(tmp_path / "ckpt", "lenszoo/direct").commit_sha
    result = CliRunner().invoke(main, ["download", f"hf-hub:lenszoo/direct@{sha}"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(outputs(lenszoo.load(f"hf-hub:lenszoo/direct@{sha}")), outputs(original))


def test_manifest_validation_names_each_problem():
    good = {"arch": "x", "task": "classify", "dataset": "A", "folder": "weights/x", "file": "weights/x/model.safetensors",
            "sha256": "0" * 64, "size": 10, "config_sha256": "1" * 64, "hf_repo_id": None, "hf_revision": None,
            "metrics": {}, "recipe": {}}
    assert validate_manifest({"schema_version": 1, "weights": [good]}) == []
    bad = dict(good, task="segment", sha256="abc", hf_repo_id="org/name", hf_revision="main", folder="../x")
    problems = validate_manifest({"schema_version": 1, "weights": [bad, good, good]})
    text = "\n".join(problems)
    for fragment in ("task must be one of", "sha256 must be 64", "40-hex commit sha", "relative path", "duplicate"):
        assert fragment in text


def test_the_repositorys_manifest_is_valid_and_its_files_match():
    from lenszoo.checkpoint import sha256_file

    manifest = read_manifest(REPO_ROOT / "weights_manifest.json")
    for entry in manifest["weights"]:
        path = REPO_ROOT / entry["file"]
        assert path.is_file(), entry["file"]
        assert path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]
        assert sha256_file(REPO_ROOT / entry["folder"] / "config.json") == entry["config_sha256"]


def test_release_records_test_metrics_of_the_same_weights_only(probe_arch, tmp_path):
    manifest = tmp_path / "weights_manifest.json"
    make_checkpoint(tmp_path / "run" / "best")
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    results = {"dataset": "B", "split": "test", "model": {"weights_sha256": config["weights_sha256"]},
               "metrics": {"n": 300, "accuracy": 0.91, "auc": 0.98, "confusion_matrix": [[1]]}}
    stale = dict(results, model={"weights_sha256": "0" * 64}, metrics={"accuracy": 0.5})
    for name, content in (("B-test", results), ("B-test-old", stale)):
        (tmp_path / "run" / "eval" / name).mkdir(parents=True)
        (tmp_path / "run" / "eval" / name / "results.json").write_text(json.dumps(content))
    entry = release(tmp_path / "run" / "best", manifest=manifest, run_dir=tmp_path / "run")
    assert entry["metrics"]["test"] == {"n": 300, "accuracy": 0.91, "auc": 0.98}
    released = json.loads((tmp_path / "weights" / "hub_probe-classify-B" / "config.json").read_text())
    assert released["metrics"]["test"]["accuracy"] == 0.91
    assert "accuracy (test)" in (tmp_path / "weights" / "hub_probe-classify-B" / "README.md").read_text()
    model = lenszoo.load(str(tmp_path / "weights" / "hub_probe-classify-B"))  # still verifies
    assert model.lenszoo_config["metrics"]["test"]["auc"] == 0.98
