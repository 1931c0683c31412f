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
from .zoo_entries import untagged

REPO = Path(__file__).resolve().parents[1]


def two_entries():
    """The smallest and a larger released checkpoint, each as the only (untagged) weights of its key."""
    entries = sorted((untagged(e) for e in json.loads((REPO / "weights_manifest.json").read_text())["weights"]),
                     key=lambda e: e["size"])
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
    env.pop("PYTHONPATH", None)  # a source tree on it (as when testing a worktree) would shadow the wheel
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
    for entry in manifest["weights"]:  # each Hub card shows every metric its manifest entry records
        repo = hub.state.repos[f"testorg/{Path(entry['folder']).name}"]
        card = repo.commits[repo.resolve("main")]["README.md"].decode()
        for split, values in entry["metrics"].items():
            name = next(k for k, v in values.items() if k != "n" and isinstance(v, (int, float)))
            assert f"{name} ({split})" in card, (entry["folder"], split)

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
    done = run_in(installed, "import lenszoo.pretrained.manifest as w, pathlib; print(w.manifest_path()); "
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


# -- the real zoo, built both ways and installed outside the tree --------------------------------
BUNDLE_LIMIT = 5_000_000  # setup.py's default LENSZOO_BUNDLE_MAX_BYTES


def _link_or_copy(source, target):
    try:
        os.link(source, target)  # the weights are large: a hard link where the file system allows one
    except OSError:
        shutil.copy2(source, target)


@pytest.fixture(scope="session")
def zoo_wheels(tmp_path_factory):
    """The repository's zoo built as a release is (`python -m build`: the sdist, then the wheel from
    it) and as `pip wheel .` builds it, from one copy of the tree: (wheel via sdist, direct wheel)."""
    root = tmp_path_factory.mktemp("zoo-build")
    copy = root / "repo"
    shutil.copytree(REPO / "lenszoo", copy / "lenszoo", ignore=shutil.ignore_patterns("__pycache__", "zoo"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "weights_manifest.json"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "weights", copy / "weights", copy_function=_link_or_copy)
    env = {k: v for k, v in os.environ.items() if k not in ("LENSZOO_BUNDLE_MAX_BYTES", "PYTHONPATH")}
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "via-sdist"),
                            str(copy)], capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert built.returncode == 0, f"python -m build failed (is `build` installed? it is in lenszoo[test])\n" \
                                  f"{built.stdout[-2000:]}{built.stderr[-2000:]}"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "direct"), str(copy)], check=True, capture_output=True, env=env, cwd=root, timeout=600)
    return next((root / "via-sdist").glob("lenszoo-*.whl")), next((root / "direct").glob("lenszoo-*.whl"))


@pytest.fixture(scope="session")
def zoo_install(zoo_wheels, tmp_path_factory):
    """The wheel built via the sdist, installed with `pip install --target` into a temporary folder;
    (run: `python -m lenszoo ARGS` from a working directory outside the tree, the folder)."""
    root = tmp_path_factory.mktemp("zoo-install")
    site, work = root / "site", root / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(zoo_wheels[0])], check=True, capture_output=True, cwd=root, timeout=600)
    env = {k: v for k, v in os.environ.items() if k not in ("LENSZOO_MANIFEST", "HF_HUB_OFFLINE")}
    # nothing listens on port 9: a request to the Hub would fail at once, never reach the internet
    env.update(PYTHONPATH=str(site), LENSZOO_PLUGINS="", HF_HOME=str(root / "hf-home"),
               HF_ENDPOINT="http://127.0.0.1:9", OMP_NUM_THREADS="2")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "lenszoo", *map(str, args)], capture_output=True, text=True,
                              cwd=work, env=env, timeout=600)

    return run, site


def zoo_in(wheel) -> dict:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        return {info.filename.removeprefix("lenszoo/zoo/"): info.CRC for info in archive.infolist()
                if info.filename.startswith("lenszoo/zoo/")}


def test_a_wheel_built_via_the_sdist_carries_the_same_zoo_as_a_direct_one(zoo_wheels):
    """Item 12 of issue 27: `python -m build` left radial_profile out (MANIFEST.in listed families by hand)."""
    import zlib

    via_sdist, direct = zoo_wheels
    manifest = json.loads((REPO / "weights_manifest.json").read_text())
    small = [e for e in manifest["weights"] if e["size"] <= BUNDLE_LIMIT]
    expected = {"weights_manifest.json": zlib.crc32((REPO / "weights_manifest.json").read_bytes())}
    for entry in small:
        for item in (REPO / entry["folder"]).iterdir():
            expected[f"{entry['folder']}/{item.name}"] = zlib.crc32(item.read_bytes())
    assert {e["arch"] for e in small} >= {"radial_profile", "c8_steerable", "hnet", "etn"}
    assert len(small) < len(manifest["weights"])  # ResNet-50 stays out
    assert zoo_in(direct) == expected
    assert zoo_in(via_sdist) == expected


from lenszoo.pretrained.manifest import entry_label  # noqa: E402 - ARCH[.TAG]/TASK/DATASET, as messages name them

UNPUBLISHED_RESNET = [e for e in json.loads((REPO / "weights_manifest.json").read_text())["weights"]
                      if e["size"] > BUNDLE_LIMIT and not e["hf_repo_id"]]


def test_the_demo_of_an_installed_wheel_scores_what_it_has_and_names_what_it_skipped(zoo_install):
    """Item 13: the demo exited 1 at the first checkpoint the wheel lacks."""
    run, site = zoo_install
    done = run("demo", "--n-per-class", "1", "--figure", "out/demo.png")
    assert done.returncode == 0, done.stderr[-3000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1, done.stdout
    assert skipped[0].startswith(f"skipped {len(UNPUBLISHED_RESNET)} of ")
    for entry in UNPUBLISHED_RESNET:
        assert entry_label(entry) in skipped[0]
    assert "not bundled with this install and not yet published" in skipped[0]
    bundled = len(json.loads((site / "lenszoo" / "zoo" / "weights_manifest.json").read_text())["weights"]) \
        - len(UNPUBLISHED_RESNET)
    assert done.stdout.strip().splitlines()[-1].startswith(f"{bundled} models in ")
    assert "radial_profile  classify  A" in done.stdout
    assert done.stderr.strip() == "", done.stderr  # no warnings leak


def test_download_all_from_an_installed_wheel_fetches_the_rest_and_names_what_it_skipped(zoo_install):
    """Item 13: `download --all` stopped at the first unpublished entry."""
    run, site = zoo_install
    done = run("download", "--all")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    ready = [line for line in lines  # ARCH[.TAG]/TASK/DATASET: PATH
             if line.split("/", 1)[0].split(".")[0] in ("c8_steerable", "hnet", "etn", "radial_profile")]
    assert ready and all(str(site) in line for line in ready)
    assert lines[-1].startswith(f"{len(ready)} checkpoints ready for offline use; skipped {len(UNPUBLISHED_RESNET)} ")
    for entry in UNPUBLISHED_RESNET:
        assert entry_label(entry) in lines[-1]
    assert not any("resnet50" in line for line in lines[:-1])


def test_an_installed_wheel_says_resnet50_is_not_bundled_and_not_published(zoo_install):
    """Item 14: 'missing or corrupted', and `info` listed a weights path the wheel does not have."""
    run, site = zoo_install
    info = run("info", "resnet50")
    assert info.returncode == 0, info.stderr
    weights = [line for line in info.stdout.splitlines() if line.strip().startswith("weights:")]
    assert len(weights) == len(UNPUBLISHED_RESNET)
    assert all(line.endswith("not bundled with this install and not yet published on the Hugging Face Hub")
               for line in weights), weights
    assert "weights/resnet50" not in info.stdout  # no path that is not there
    info = run("info", "radial_profile")
    paths = [line.rsplit(": ", 1)[1] for line in info.stdout.splitlines() if line.strip().startswith("weights:")]
    assert paths and all(Path(path).is_file() and path.startswith(str(site)) for path in paths)

    done = run("download", "resnet50", "--task", "regress", "--dataset", "B")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: weights for resnet50/regress/B are not bundled"), lines
    for fragment in ("47 MB", "not yet published on the Hugging Face Hub", "git checkout", "LENSZOO_MANIFEST"):
        assert fragment in lines[0]
    assert "corrupted" not in lines[0]
