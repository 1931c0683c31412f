"""The guides are run: docs/plugins.md's example package is built from the page, installed into a
temporary folder and driven through the CLI exactly as written; every hook is documented and tested."""

import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch

import lenszoo.hookspecs

from .hub_server import HubServer
from .test_hub import TOKEN

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "plugins.md"


def guide_files() -> dict:
    blocks = re.findall(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert blocks, "docs/plugins.md lost its example files"
    return dict(blocks)


def guide_commands() -> list[str]:
    blocks = re.findall(r"<!-- guide: run -->\s*```console\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/plugins.md lost its walk-through"
    return [line[2:].strip() for line in blocks[0].splitlines() if line.startswith("$ ")]


def test_the_plugin_guide_runs_as_written(tmp_path):
    package = tmp_path / "lenszoo-tinycnn"
    package.mkdir()
    for name, text in guide_files().items():
        (package / name).write_text(text)
    commands = guide_commands()
    assert commands[0] == "pip install ./lenszoo-tinycnn"
    site = tmp_path / "site"  # a real install (metadata and entry points by pip), kept out of the venv
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(package)], check=True, capture_output=True, timeout=300)
    with HubServer() as hub:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]), LENSZOO_PLUGINS="lenszoo-tinycnn",
                   HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="2")
        env.pop("HF_HUB_OFFLINE", None)
        outputs = {}
        for command in commands[1:]:
            words = shlex.split(command)
            assert words[0] == "lenszoo", command
            run = subprocess.run([sys.executable, "-m", "lenszoo", *words[1:]], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr[-3000:]}"
            outputs[" ".join(words[:2])] = run.stdout + run.stderr
        plugins = next(line for line in outputs["lenszoo plugins"].splitlines() if line.startswith("tiny_cnn"))
        assert "external" in plugins and "lenszoo-tinycnn" in plugins and "loaded" in plugins
        assert "datasets" in plugins and "architectures" in plugins
        assert "A-crowded" in outputs["lenszoo info"]  # the last info: the dataset
        commit = re.search(r"commit\s+([0-9a-f]{40})", outputs["lenszoo publish"]).group(1)

        check = (f"import lenszoo, torch; a = lenszoo.load('hf-hub:YOU/tiny-cnn-A-crowded@{commit}'); "
                 "b = lenszoo.load('./runs/tiny'); x = torch.randn(4, 1, 64, 64); "
                 "assert a.lenszoo_config['arch'] == 'tiny_cnn' and a.lenszoo_config['dataset'] == 'A-crowded'; "
                 "assert torch.equal(a(x), b(x)); print('same outputs')")
        loaded = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert loaded.returncode == 0 and "same outputs" in loaded.stdout, loaded.stderr[-3000:]
    assert (tmp_path / "runs" / "tiny" / "eval").is_dir() and (tmp_path / "data" / "A-crowded-test").is_dir()


def test_every_hook_is_documented_and_tested():
    hooks = [name for name, fn in inspect.getmembers(lenszoo.hookspecs, inspect.isfunction)
             if hasattr(fn, "lenszoo_spec")]
    assert set(hooks) == {"register_architectures", "register_datasets", "register_commands", "register_weights"}
    guide = GUIDE.read_text()
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.glob("*.py") if p.name != Path(__file__).name)
    tests += "\n".join(guide_files().values())  # the guide's package is itself run by a test
    for name in hooks:
        assert f"`{name}(register)`" in guide, f"docs/plugins.md does not document {name}"
        assert re.search(rf"def {name}\(", tests), f"no test implements the hook {name}"
