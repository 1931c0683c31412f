"""Reading DeepLense's published layout, and refusing to unpickle without consent."""

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lenszoo
from lenszoo.cli import main
from lenszoo.data import DeepLenseDataset, StoredDataset, import_deeplense, read_deeplense_file

PER_CLASS = 3
MASSES = [1e-24, 3e-23, 1e-22]


def make_deeplense_folder(root, per_class=PER_CLASS):
    """DeepLense's layout: one folder per class, axion files pickled [image, mass]."""
    rng = np.random.default_rng(0)
    images = {}
    for name in ("axion", "cdm", "no_sub"):  # created in DeepLense's alphabetical order on purpose
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.uniform(0, 5, (64, 64)) + i
            images[(name, i)] = image
            if name == "axion":
                np.save(root / name / f"axion_sim_{i}.npy", np.array([image, MASSES[i]], dtype=object))
            else:
                np.save(root / name / f"{name}_sim_{i}.npy", image)
    return images


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_files_need_explicit_trust(tmp_path):
    make_deeplense_folder(tmp_path / "data")
    with pytest.raises(lenszoo.LenszooError, match="pickled object array.*--trust-pickle"):
        DeepLenseDataset(tmp_path / "data")
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.npy"
    np.save(hostile, np.array([RunsCodeWhenUnpickled(str(marker)), 1e-23], dtype=object))
    with pytest.raises(lenszoo.LenszooError, match="trust-pickle"):
        read_deeplense_file(hostile)
    assert not marker.exists()  # refusing happens before any unpickling


def test_classes_come_from_folder_names_not_folder_order(tmp_path):
    images = make_deeplense_folder(tmp_path / "data")
    dataset = DeepLenseDataset(tmp_path / "data", "classify", trust_pickle=True)
    assert len(dataset) == 9 and dataset.class_names == lenszoo.CLASS_NAMES
    np.testing.assert_array_equal(dataset.targets, [0, 0, 0, 1, 1, 1, 2, 2, 2])  # no_sub, cdm, axion
    image, target = dataset[4]
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32 and int(target) == 1
    expected = images[("cdm", 1)]
    np.testing.assert_allclose(image[0].numpy(), expected / np.abs(expected).max(), rtol=1e-6)
    regress = DeepLenseDataset(tmp_path / "data", "regress", trust_pickle=True)
    assert len(regress) == 3
    np.testing.assert_allclose(regress.targets, np.log10(MASSES), rtol=1e-6)
    _, target = regress[1]
    assert target.dtype == torch.float32 and float(target) == pytest.approx(np.log10(3e-23))


def test_missing_class_and_unreadable_file_errors(tmp_path):
    make_deeplense_folder(tmp_path / "data")
    for path in (tmp_path / "data" / "cdm").iterdir():
        path.unlink()
    (tmp_path / "data" / "cdm").rmdir()
    with pytest.raises(lenszoo.LenszooError, match="has no 'cdm' subfolder.*needs one folder per class"):
        DeepLenseDataset(tmp_path / "data", trust_pickle=True)
    make_deeplense_folder(tmp_path / "other")
    broken = tmp_path / "other" / "no_sub" / "no_sub_sim_1.npy"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated download
    dataset = DeepLenseDataset(tmp_path / "other", trust_pickle=True)
    with pytest.raises(lenszoo.LenszooError, match="cannot read DeepLense file .*no_sub_sim_1.npy"):
        dataset[1]
    with pytest.raises(lenszoo.LenszooError, match="does not exist"):
        DeepLenseDataset(tmp_path / "nowhere")
    make_deeplense_folder(tmp_path / "unzipped" / "Model_II")
    with pytest.raises(lenszoo.LenszooError, match="did you mean .*Model_II"):
        DeepLenseDataset(tmp_path / "unzipped", trust_pickle=True)


def test_import_gives_a_stored_dataset_with_the_same_items(tmp_path):
    make_deeplense_folder(tmp_path / "data")
    summary = import_deeplense(tmp_path / "data", tmp_path / "imported", trust_pickle=True, shard_size=4,
                               progress=False)
    assert summary["complete"] and summary["class_counts"] == {"no_sub": 3, "cdm": 3, "axion": 3}
    stored = StoredDataset(tmp_path / "imported", "classify")
    direct = DeepLenseDataset(tmp_path / "data", "classify", trust_pickle=True)
    assert stored.dataset_name == "deeplense" and len(stored) == len(direct)
    for i in range(len(direct)):
        assert torch.equal(stored[i][0], direct[i][0]) and torch.equal(stored[i][1], direct[i][1])
    np.testing.assert_allclose(StoredDataset(tmp_path / "imported", "regress").targets, np.log10(MASSES), rtol=1e-6)
    listing = (tmp_path / "imported" / "source_files.txt").read_text().split()
    assert listing[0] == "no_sub/no_sub_sim_0.npy" and listing[-1] == "axion/axion_sim_2.npy"


def test_import_command(tmp_path):
    make_deeplense_folder(tmp_path / "data")
    runner = CliRunner()
    refused = runner.invoke(main, ["import-deeplense", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    assert refused.exit_code == 1 and "--trust-pickle" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and "Traceback" not in refused.output
    done = runner.invoke(main, ["import-deeplense", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                                "--trust-pickle"])
    assert done.exit_code == 0, done.output
    assert "unpickling runs code" in done.output and "imported 9 images" in done.output
    assert len(StoredDataset(tmp_path / "out")) == 9
