"""Determinism, the dataset directory format, resume and refusal."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lenszoo
from lenszoo.data import read_manifest, simulate_dataset, verify_dataset
from lenszoo.data.storage import parse_shard_spec, shards_of_job

N_PER_CLASS = 4  # 12 images
SHARD_SIZE = 5   # -> 3 shards, the last one short


def directory_bytes(path: Path) -> dict[str, bytes]:
    """Every visible file of a dataset directory (hidden names are in-flight temporaries)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if not p.name.startswith(".")}


def concatenated_images(path: Path) -> np.ndarray:
    manifest = read_manifest(path)
    return np.concatenate([np.load(path / shard["images"]) for shard in manifest["shards"]])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-worker run, the bytes every other layout must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "A-val"
    summary = simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, progress=False)
    assert summary["complete"] and summary["num_shards"] == 3
    return out


def test_image_is_a_pure_function_of_dataset_split_index_seed():
    first = lenszoo.get_dataset("A").simulate("train", 5, seed=3)[0]
    assert lenszoo.get_dataset("A").simulate("train", 5, seed=3)[0].tobytes() == first.tobytes()
    others = [
        lenszoo.get_dataset("B").simulate("train", 5, seed=3)[0],
        lenszoo.get_dataset("A").simulate("val", 5, seed=3)[0],
        lenszoo.get_dataset("A").simulate("train", 5, seed=4)[0],
        lenszoo.get_dataset("A").simulate("train", 8, seed=3)[0],
    ]
    for other in others:
        assert other.tobytes() != first.tobytes()


def test_generator_travels_to_other_processes_without_lenstronomy_state():
    import pickle

    generator = lenszoo.get_dataset("B")
    image = generator.simulate("test", 4)[0]
    payload = pickle.dumps(generator)
    assert b"lenstronomy." not in payload and len(payload) < 5000  # no built lenstronomy objects
    assert pickle.loads(payload).simulate("test", 4)[0].tobytes() == image.tobytes()


def test_splits_draw_from_disjoint_seed_streams():
    generator = lenszoo.get_dataset("A")
    seeds = {split: {generator.image_seed(split, i) for i in range(300)} for split in ("train", "val", "test")}
    assert all(len(s) == 300 for s in seeds.values())
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["val"] & seeds["test"])
    with pytest.raises(lenszoo.LenszooError, match="unknown split 'training'"):
        generator.simulate("training", 0)


def test_directory_layout_and_manifest(reference):
    manifest = read_manifest(reference)
    assert manifest["dataset"] == "A" and manifest["split"] == "val" and manifest["seed"] == 7
    assert manifest["class_names"] == list(lenszoo.CLASS_NAMES)
    assert manifest["class_counts"] == {"no_sub": 4, "cdm": 4, "axion": 4}
    assert manifest["config"]["instrument"]["band"]["magnitude_zero_point"] == 24.0
    assert manifest["generator"]["name"] == "lenszoo.lensing"
    assert manifest["generator"]["lenstronomy_version"]
    assert manifest["normalization"] == lenszoo.data.NORMALIZATION
    images = np.load(reference / "images-00000.npy", mmap_mode="r")
    assert isinstance(images, np.memmap) and images.shape == (5, 1, 64, 64) and images.dtype == np.float32
    labels = np.load(reference / "labels.npy")
    np.testing.assert_array_equal(labels, np.arange(12) % 3)
    log10_mass = np.load(reference / "log10_axion_mass.npy")
    assert np.isnan(log10_mass[labels != 2]).all() and ((-24 <= log10_mass[labels == 2]) & (log10_mass[labels == 2] <= -22)).all()
    meta = np.concatenate([np.load(reference / s["meta"]) for s in manifest["shards"]])
    np.testing.assert_array_equal(meta["index"], np.arange(12))
    # Stored images are exactly what the generator makes for those indices.
    generator = lenszoo.get_dataset("A")
    for index in (0, 6, 11):
        image, image_meta = generator.simulate("val", index, seed=7)
        assert concatenated_images(reference)[index, 0].tobytes() == image.tobytes()
        assert meta["seed"][index] == image_meta["seed"]
    assert verify_dataset(reference) == []


def test_two_workers_write_the_same_bytes(reference, tmp_path):
    out = tmp_path / "two-workers"
    summary = simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, workers=2, progress=False)
    assert summary["complete"]
    assert directory_bytes(out) == directory_bytes(reference)


def test_sharded_jobs_write_the_same_bytes(reference, tmp_path):
    out = tmp_path / "sharded"
    first = simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, shard="1/2", progress=False)
    assert not first["complete"] and first["written_shards"] == 1 and first["missing_shards"] == 2
    with pytest.raises(lenszoo.LenszooError, match="incomplete"):
        read_manifest(out)
    second = simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, shard="2/2", progress=False)
    assert second["complete"] and second["written_shards"] == 2
    assert directory_bytes(out) == directory_bytes(reference)


def test_any_shard_size_gives_the_same_images(reference, tmp_path):
    out = tmp_path / "one-shard"
    simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=100, progress=False)
    assert concatenated_images(out).tobytes() == concatenated_images(reference).tobytes()


def test_shard_jobs_cover_every_storage_shard_once():
    for num_shards in (1, 3, 10):
        for jobs in (1, 2, 4, 12):
            covered = [k for job in range(1, jobs + 1) for k in shards_of_job(num_shards, job, jobs)]
            assert covered == list(range(num_shards))
    assert parse_shard_spec("2/8") == (2, 8)
    for bad in ("2of8", "0/2", "3/2", "1/0", "-1/2", "a/b", ""):
        with pytest.raises(lenszoo.LenszooError, match="--shard"):
            parse_shard_spec(bad)


KILL_MID_WRITE = textwrap.dedent("""
    # Kill this process (SIGKILL) half-way through writing shard 1's images.
    import os, signal, sys
    import lenszoo.data.storage as storage
    real_atomic_write = storage.atomic_write

    def dying_write(path, write):
        if path.name == "images-00001.npy":
            def half_then_die(handle):
                write(handle)
                handle.flush()
                handle.truncate(handle.tell() // 2)
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_atomic_write(path, half_then_die)
        return real_atomic_write(path, write)

    storage.atomic_write = dying_write
    from lenszoo.data import simulate_dataset
    simulate_dataset("A", "val", 4, sys.argv[1], seed=7, shard_size=5, progress=False)
""")


def test_killed_run_leaves_no_partial_shard_and_resumes_to_the_same_bytes(reference, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "LENSZOO_PLUGINS": ""}
    result = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(out)], env=env, capture_output=True,
                            timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    visible = directory_bytes(out)
    assert "images-00001.npy" not in visible and "shard-00001.json" not in visible
    assert json.loads(visible["manifest.json"])["complete"] is False
    assert any(p.name.startswith(".images-00001.npy") for p in out.iterdir())  # the half-written temporary
    for name in visible:  # every visible shard file is whole: its record's hash matches
        if name.startswith("shard-"):
            record = json.loads(visible[name])
            assert np.load(out / record["images"]).shape == (record["count"], 1, 64, 64)
    with pytest.raises(lenszoo.LenszooError, match="incomplete"):
        lenszoo.data.StoredDataset(out)
    summary = simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, progress=False)
    assert summary["reused_shards"] == 1 and summary["written_shards"] == 2
    assert directory_bytes(out) == directory_bytes(reference)
    assert not any(p.name.startswith(".") for p in out.iterdir())  # the temporary is cleaned up


def test_rerun_of_a_complete_dataset_writes_nothing(reference, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    summary = simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, progress=False)
    assert summary["written_shards"] == 0 and summary["reused_shards"] == 3 and summary["complete"]
    assert directory_bytes(out) == directory_bytes(reference)


def test_damaged_shard_is_detected_and_remade(reference, tmp_path):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    images = out / "images-00002.npy"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF
    images.write_bytes(bytes(data))
    assert verify_dataset(out) == ["images-00002.npy"]
    summary = simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, progress=False)
    assert summary["written_shards"] == 1
    assert directory_bytes(out) == directory_bytes(reference)


def test_directory_made_with_other_settings_is_refused(reference, tmp_path):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(reference, out)
    before = directory_bytes(out)
    with pytest.raises(lenszoo.LenszooError, match=r"different settings \(seed: 7 there, 8 here\)"):
        simulate_dataset("A", "val", N_PER_CLASS, out, seed=8, shard_size=SHARD_SIZE, progress=False)
    with pytest.raises(lenszoo.LenszooError, match="dataset: 'A' there, 'B' here"):
        simulate_dataset("B", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, progress=False)
    with pytest.raises(lenszoo.LenszooError, match="config.instrument.band.exposure_time: 565.0 there, 600.0 here"):
        simulate_dataset("A", "val", N_PER_CLASS, out, seed=7, shard_size=SHARD_SIZE, progress=False,
                         overrides={"instrument": {"band": {"exposure_time": 600.0}}})
    assert directory_bytes(out) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(lenszoo.LenszooError, match="not empty and holds no manifest.json"):
        simulate_dataset("A", "val", N_PER_CLASS, foreign, progress=False)


@pytest.mark.parametrize("bad, message", [
    ({"n_per_class": 0}, "--n-per-class must be a whole number > 0"),
    ({"n_per_class": -3}, "--n-per-class must be a whole number > 0"),
    ({"workers": 0}, "--workers must be a whole number > 0"),
    ({"seed": -1}, "--seed must be a whole number >= 0"),
    ({"dataset": "C"}, "unknown dataset 'C'"),
    ({"split": "dev"}, "unknown split 'dev'"),
    ({"overrides": {"cdm": {"n_subhaloes": 3}}}, "unknown dataset config key 'cdm.n_subhaloes'"),
])
def test_bad_arguments_raise_one_clear_error(tmp_path, bad, message):
    arguments = {"dataset": "A", "split": "val", "n_per_class": 2, **bad}
    with pytest.raises(lenszoo.LenszooError, match=message):
        simulate_dataset(arguments.pop("dataset"), arguments.pop("split"), arguments.pop("n_per_class"),
                         tmp_path / "out", progress=False, **arguments)
    assert not (tmp_path / "out").exists()


def test_generators_record_the_substructure_fraction_and_older_metadata_still_reads(tmp_path):
    """C datasets store each image's drawn substructure fraction (sensitivity curves bin on it);
    a dataset written before those fields existed reads with NaN there."""
    import numpy as np

    from lenszoo.data import simulate_dataset
    from lenszoo.data.storage import META_DTYPE
    from lenszoo.data.torch_datasets import StoredDataset

    out = tmp_path / "c"
    simulate_dataset("C-hst", "val", 2, out)
    meta = StoredDataset(out).meta
    assert np.all((meta["mass_fraction"] >= 0.002) & (meta["mass_fraction"] <= 0.02))
    assert np.all((meta["substructure_mass_msun"] > 0) == (meta["label"] > 0))

    old_dtype = np.dtype([(name, META_DTYPE[name]) for name in META_DTYPE.names
                          if name not in ("mass_fraction", "substructure_mass_msun")])
    for path in out.glob("meta-*.npy"):  # as an older lenszoo wrote them
        old = np.load(path)
        np.save(path, np.array([tuple(row[name] for name in old_dtype.names) for row in old], dtype=old_dtype))
    old_meta = StoredDataset(out).meta
    assert np.all(np.isnan(old_meta["mass_fraction"])) and np.array_equal(old_meta["label"], meta["label"])
