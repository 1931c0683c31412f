"""Build step that puts the zoo into the wheel; all metadata is in pyproject.toml.

``build_py`` copies ``weights_manifest.json`` (unchanged: the repository's copy is the one
source) and the released checkpoint folders small enough to travel with the package
(``LENSZOO_BUNDLE_MAX_BYTES``, default 5 MB: every equivariant model, no ResNet-50) into
``lenszoo/zoo/`` of the build. Larger checkpoints are fetched from the Hugging Face Hub at the
commit the manifest pins. An editable install reads the repository's own files instead.
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


class build_py_with_zoo(build_py):
    def run(self):
        super().run()
        source = HERE / MANIFEST
        if not source.is_file():  # a build from an sdist without the zoo
            return
        zoo = Path(self.build_lib) / "lenszoo" / "zoo"
        zoo.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, zoo / MANIFEST)
        for entry in json.loads(source.read_text())["weights"]:
            folder = HERE / entry["folder"]
            if entry["size"] > BUNDLE_MAX_BYTES or not (folder / "model.safetensors").is_file():
                continue
            target = zoo / entry["folder"]
            target.mkdir(parents=True, exist_ok=True)
            for item in folder.iterdir():
                if item.is_file():
                    shutil.copyfile(item, target / item.name)


setup(cmdclass={"build_py": build_py_with_zoo})
