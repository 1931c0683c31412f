"""Released steerable models load in their plain-PyTorch inference form: the same outputs as the
trainable escnn module, and no escnn import; plugins ship weights through ``register_weights``."""

import json
import os
import subprocess
import sys

import pytest
import torch

import lenszoo
from lenszoo.checkpoint import INFERENCE_NAME, save_checkpoint
from lenszoo.pretrained.release import release

from .probes import registered

SMALL_C8 = {"widths": [2, 2, 2, 2], "global_fields": 2, "head_width": 8}


@pytest.fixture(scope="module")
def released_c8(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    model = lenszoo.create_model("c8_steerable", **SMALL_C8)
    model.train()
    with torch.no_grad():  # batch-norm statistics that are not the defaults
        model(torch.rand(8, 1, 64, 64))
    save_checkpoint(root / "run" / "best", model, dataset="B", images_seen=8)
    manifest = root / "weights_manifest.json"
    release(root / "run" / "best", manifest=manifest)
    return manifest


def test_the_inference_form_gives_the_trainable_outputs(released_c8, monkeypatch):
    monkeypatch.setenv("LENSZOO_MANIFEST", str(released_c8))
    fast = lenszoo.load("c8_steerable", task="classify", dataset="B")
    slow = lenszoo.load("c8_steerable", task="classify", dataset="B", trainable=True)
    assert type(fast).__name__ == "ExportedSteerableCNN" and type(slow).__name__ == "SteerableCNN"
    assert fast.lenszoo_config["form"] == "inference" and slow.lenszoo_config["form"] == "trainable"
    torch.manual_seed(1)
    images = torch.rand(16, 1, 64, 64) * 100
    with torch.no_grad():
        a, b = fast(fast.preprocess(images)), slow(slow.preprocess(images))
    assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6
    assert torch.equal(a.argmax(1), b.argmax(1))
    with pytest.raises(lenszoo.LenszooError, match=r"\(N, 1, 64, 64\)"):
        fast(torch.zeros(2, 1, 32, 32))  # the same input contract


def test_evaluate_reports_the_trained_parameter_count_of_an_inference_form(released_c8, monkeypatch, tmp_path):
    from lenszoo.evaluate import run_evaluation

    monkeypatch.setenv("LENSZOO_MANIFEST", str(released_c8))
    trainable = lenszoo.load("c8_steerable", task="classify", dataset="B", trainable=True)
    expanded = lenszoo.load("c8_steerable", task="classify", dataset="B")
    trained = sum(p.numel() for p in trainable.parameters())
    assert sum(p.numel() for p in expanded.parameters()) > trained  # why it matters
    record = run_evaluation("c8_steerable", task="classify", dataset="B", n_per_class=1, out=tmp_path / "eval",
                              log=lambda *_: None)
    assert record["model"]["parameters"] == trained


def test_loading_an_equivariant_model_imports_no_escnn(released_c8):
    code = ("import sys, lenszoo; lenszoo.load('c8_steerable', task='classify', dataset='B'); "
            "print(sorted(m for m in ('escnn', 'timm', 'lenstronomy', 'sklearn') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "LENSZOO_MANIFEST": str(released_c8), "LENSZOO_PLUGINS": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")


def test_a_damaged_inference_file_is_refused(released_c8, monkeypatch):
    monkeypatch.setenv("LENSZOO_MANIFEST", str(released_c8))
    path = released_c8.parent / "weights" / "c8_steerable-classify-B" / INFERENCE_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    original = path.read_bytes()
    path.write_bytes(bytes(data))
    try:
        with pytest.raises(lenszoo.LenszooError, match="does not match the sha256"):
            lenszoo.load("c8_steerable", task="classify", dataset="B")
    finally:
        path.write_bytes(original)


class WeightsPlugin:
    def __init__(self, manifest):
        self.manifest = manifest

    @lenszoo.hookimpl
    def register_architectures(self, register):
        from .probes import build_probe

        register("shipped_probe", build_probe, model_args={"width": 4})

    @lenszoo.hookimpl
    def register_weights(self, register):
        register(self.manifest)


def test_a_plugin_ships_its_own_weights(tmp_path):
    package = tmp_path / "plugin-package"
    with registered(WeightsPlugin(package / "weights_manifest.json"), "weights-plugin"):
        torch.manual_seed(3)
        model = lenszoo.create_model("shipped_probe", task="regress")
        save_checkpoint(tmp_path / "run" / "best", model, dataset="A")
        release(tmp_path / "run" / "best", manifest=package / "weights_manifest.json")
        loaded = lenszoo.load("shipped_probe", task="regress", dataset="A")  # found through the hook
        x = torch.rand(2, 1, 64, 64)
        with torch.no_grad():
            assert torch.equal(loaded(x), model.eval()(x))
        entries = json.loads((package / "weights_manifest.json").read_text())["weights"]
        assert loaded.lenszoo_config["released"]["sha256"] == entries[0]["sha256"]
