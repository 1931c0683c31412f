"""Build step that puts the zoo into the wheel; all metadata is in pyproject.toml.

One rule decides which released checkpoints travel with the package: every entry of
``weights_manifest.json`` whose ``model.safetensors`` is at most ``LENSZOO_BUNDLE_MAX_BYTES``
(default 5 MB: every equivariant model and the radial-profile control, no ResNet-50), its
folder whole. ``build_py`` copies the manifest (unchanged: the repository's copy is the one
source) and those folders into ``lenszoo/zoo/`` of the build; ``build_py.get_source_files``
names the same files, which is how setuptools' sdist collects them, so a wheel built from the
sdist (``python -m build``) carries the same zoo as one built from the tree (``pip wheel .``).
Larger checkpoints are fetched from the Hugging Face Hub at the commit the manifest pins. An
editable install reads the repository's own files instead.
"""

import json
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MANIFEST = "weights_manifest.json"
BUNDLE_MAX_BYTES = int(os.environ.get("LENSZOO_BUNDLE_MAX_BYTES", 5_000_000))


def bundled_files() -> list[str]:
    """The manifest and every file of each bundled checkpoint folder, relative to HERE (sorted)."""
    source = HERE / MANIFEST
    if not source.is_file():  # a tree without the zoo
        return []
    files = [MANIFEST]
    for entry in json.loads(source.read_text())["weights"]:
        folder = HERE / entry["folder"]
        if entry["size"] > BUNDLE_MAX_BYTES or not (folder / "model.safetensors").is_file():
            continue
        files += sorted(item.relative_to(HERE).as_posix() for item in folder.iterdir() if item.is_file())
    return files


class build_py_with_zoo(build_py):
    def run(self):
        super().run()
        zoo = Path(self.build_lib) / "lenszoo" / "zoo"
        for name in bundled_files():
            target = zoo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / name, target)

    def get_source_files(self):
        return super().get_source_files() + bundled_files()


setup(cmdclass={"build_py": build_py_with_zoo})
