"""Test-suite wide setup.

The suite pins its plugin set: only lenszoo's built-ins load, whatever else is
installed, unless a test opts in (``use_plugins``).
"""

import os
import sys

import pytest

os.environ["LENSZOO_PLUGINS"] = ""
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _pinned_registry(monkeypatch):
    """Every test starts from a freshly loaded registry with built-ins only."""
    from lenszoo.registry import registry

    monkeypatch.setenv("LENSZOO_PLUGINS", "")
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def use_plugins(monkeypatch):
    """Allow the named third-party plugins: ``use_plugins("lenszoo-d8")``."""
    from lenszoo.registry import registry

    def allow(*names):
        monkeypatch.setenv("LENSZOO_PLUGINS", ",".join(names))
        registry.reset()
        return registry

    return allow


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install a real (if minimal) distribution into a temporary sys.path entry.

    ``fake_distribution(name, entry_points={"ep": "module"}, files={"module.py": src})``
    writes ``name-0.1.dist-info/{METADATA,entry_points.txt}`` plus the files, so
    ``importlib.metadata`` discovers it exactly as an installed package.
    """
    import importlib

    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    added_modules = []

    def install(name, entry_points, files, version="0.1"):
        dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = ["[lenszoo]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for filename, source in files.items():
            (root / filename).write_text(source)
            added_modules.append(filename.removesuffix(".py"))
        importlib.invalidate_caches()
        from lenszoo.registry import registry

        registry.reset()
        return dist_info

    yield install
    for module in added_modules:
        sys.modules.pop(module, None)
