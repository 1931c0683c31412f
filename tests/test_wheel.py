"""`pip install lenszoo` gives a working zoo: the wheel carries the manifest and the small
checkpoints, the large ones come from the Hub at the commit the manifest pins.

The test builds a wheel from a copy of the repository (with two released checkpoints: the
smaller bundled, the larger published to the local Hub-compatible server), installs it into a
fresh virtual environment (dependencies from this one), and drives it from outside the tree.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lenszoo.cli import main

from .hub_server import HubServer

REPO = Path(__file__).resolve().parents[1]


def two_entries():
    entries = sorted(json.loads((REPO / "weights_manifest.json").read_text())["weights"], key=lambda e: e["size"])
    small = entries[0]
    large = next((e for e in entries if e["size"] > small["size"]), None)
    return small, large


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


def outputs_of(folder, images):
    import lenszoo

    model = lenszoo.load(str(folder), trainable=True)
    with torch.no_grad():
        return model(model.preprocess(images))


@pytest.fixture(scope="module")
def installed(tmp_path_factory, hub):
    """(python of the fresh environment, the repo copy, its env, bundled entry, Hub entry)."""
    small, large = two_entries()
    if large is None:
        pytest.skip("needs two released checkpoints of different sizes")
    root = tmp_path_factory.mktemp("wheel")
    copy = root / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "zoo")
    shutil.copytree(REPO / "lenszoo", copy / "lenszoo", ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, copy / name)
    manifest = json.loads((REPO / "weights_manifest.json").read_text())
    manifest["weights"] = [small, large]
    for entry in manifest["weights"]:
        shutil.copytree(REPO / entry["folder"], copy / entry["folder"])
    (copy / "weights_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    env = {**os.environ, "LENSZOO_PLUGINS": "", "HF_ENDPOINT": hub.url, "HF_HOME": str(root / "hf-home"),
           "HF_TOKEN": "hf_testtoken0123456789", "LENSZOO_MANIFEST": str(copy / "weights_manifest.json")}
    env.pop("HF_HUB_OFFLINE", None)
    # the maintainer's side: one command publishes the release and records the commits
    old = dict(os.environ)
    os.environ.update(env)
    try:
        result = CliRunner().invoke(main, ["publish", "--release", "--org", "testorg"])
        again = CliRunner().invoke(main, ["publish", "--release", "--org", "testorg"])
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert result.exit_code == 0, result.output
    assert "2 published" in result.output and "0 published, 2 unchanged" in again.output  # a no-op the 2nd time

    dist = root / "dist"
    build_env = {**env, "LENSZOO_BUNDLE_MAX_BYTES": str(small["size"])}
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(copy), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist)], check=True, env=build_env, cwd=root)
    wheel = next(dist.glob("lenszoo-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "lenszoo-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co from here
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, cwd=root)
    user_env = {k: v for k, v in env.items() if k != "LENSZOO_MANIFEST"}
    return venv / "bin" / "python", copy, user_env, small, large, root


def run_in(installed, code, **env):
    python, _, base, _, _, root = installed
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=root,
                          env={**base, **env}, timeout=300)
    return done


LOAD = ("import sys, json, torch, lenszoo\n"
        "m = lenszoo.load('{arch}', task='{task}', dataset='{dataset}')\n"
        "torch.manual_seed(0); x = torch.rand(4, 1, 64, 64)\n"
        "with torch.no_grad(): y = m(m.preprocess(x))\n"
        "print(json.dumps({{'file': lenszoo.__file__, 'out': y.tolist(), 'escnn': 'escnn' in sys.modules}}))")


def loaded(installed, entry, **env):
    done = run_in(installed, LOAD.format(**entry), **env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected(installed, entry):
    _, copy, *_ = installed
    torch.manual_seed(0)
    return outputs_of(copy / entry["folder"], torch.rand(4, 1, 64, 64))


def test_the_wheel_carries_the_manifest_and_the_small_checkpoints(installed):
    python, copy, env, small, large, root = installed
    done = run_in(installed, "import lenszoo.weights as w, pathlib; print(w.manifest_path()); "
                             "print(sorted(p.name for p in (w.PACKAGED_ZOO / 'weights').iterdir()))")
    manifest_file, bundled = done.stdout.strip().splitlines()
    assert "site-packages" in manifest_file or "lib" in manifest_file
    assert Path(manifest_file).read_bytes() == (copy / "weights_manifest.json").read_bytes()  # they agree
    assert Path(small["folder"]).name in bundled and Path(large["folder"]).name not in bundled


def test_a_bundled_checkpoint_loads_offline_outside_the_tree(installed):
    _, _, _, small, _, _ = installed
    result = loaded(installed, small, HF_HUB_OFFLINE="1")
    assert "/work/main/lenszoo" not in result["file"] and str(REPO) not in result["file"]
    assert torch.allclose(torch.tensor(result["out"]), expected(installed, small), atol=1e-4, rtol=1e-5)
    if small["arch"] in ("c8_steerable", "hnet", "etn"):
        assert not result["escnn"]  # the equivariant nets load without escnn


def test_a_large_checkpoint_comes_from_the_pinned_hub_commit_then_from_the_cache(installed, hub):
    _, copy, env, _, large, root = installed
    result = loaded(installed, large)  # online: downloaded at the recorded commit
    assert torch.allclose(torch.tensor(result["out"]), expected(installed, large), atol=1e-4, rtol=1e-5)
    hub.state.requests.clear()
    assert loaded(installed, large, HF_HUB_OFFLINE="1")["out"] == result["out"]  # offline: the cache
    assert hub.state.requests == []
    # a tampered cached blob is caught by its sha256: refused offline, fetched again online
    blob = next((root / "hf-home" / "hub").rglob("model.safetensors")).resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    offline = run_in(installed, LOAD.format(**large), HF_HUB_OFFLINE="1")
    assert offline.returncode != 0 and "sha256" in offline.stderr
    assert loaded(installed, large)["out"] == result["out"]
