"""`lenszoo predict` and `lenszoo.predict`: cutouts from disk in, one trustworthy row per image out."""

import csv
import json
import pickle

import numpy as np
import pytest
import torch
from astropy.io import fits
from click.testing import CliRunner
from PIL import Image

import lenszoo
from lenszoo.checkpoint import save_checkpoint
from lenszoo.cli import main
from lenszoo.data.normalization import NORMALIZATION
from lenszoo.inference.options import SOME_FAILED
from lenszoo.inference.scorer import dihedral_views

CLASSES = ["p_no_sub", "p_cdm", "p_axion"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Small random-init classify and regress checkpoints (outputs differ image to image)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    made = {}
    for task in ("classify", "regress"):
        model = lenszoo.create_model("hnet", task=task)
        made[task] = save_checkpoint(root / f"hnet-{task}", model, dataset="A", normalization=NORMALIZATION)
    return made


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64] - 31.5
    ring = np.exp(-((np.hypot(yy, xx) - 14) ** 2) / 8)
    return (ring[None] * rng.uniform(0.5, 2, (12, 1, 1)) + rng.normal(0, 0.05, (12, 64, 64))).astype(np.float32)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def probabilities(row):
    return np.array([float(row[c]) for c in CLASSES])


def test_every_file_type_is_read_faithfully_and_scored_in_order(tmp_path, checkpoints, images):
    cut = tmp_path / "cutouts"
    (cut / "nested").mkdir(parents=True)
    fits.PrimaryHDU(images[:4]).writeto(cut / "cube.fits")                  # a 3-D cube of cutouts
    fits.PrimaryHDU(images[4]).writeto(cut / "single.fits.gz")              # one 2-D image, gzipped
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(images[5])]).writeto(cut / "nested" / "ext.fits")  # image in HDU 1
    np.save(cut / "stack.npy", images[6:9])
    np.save(cut / "one.npy", images[9])
    grey = np.round(255 * (images[10] - images[10].min()) / np.ptp(images[10])).astype(np.uint8)
    Image.fromarray(grey).save(cut / "grey.png")
    result = cli("predict", checkpoints["classify"], cut, "--out", tmp_path / "scores.csv", "--quiet", "--workers", 0)
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "scores.csv")
    assert [(r["source"].split("cutouts/")[1], int(r["index"])) for r in rows] == [
        ("cube.fits", 0), ("cube.fits", 1), ("cube.fits", 2), ("cube.fits", 3), ("grey.png", 0),
        ("nested/ext.fits", 0), ("one.npy", 0), ("single.fits.gz", 0), ("stack.npy", 0), ("stack.npy", 1),
        ("stack.npy", 2)]
    expected = lenszoo.predict(f"{checkpoints['classify']}", np.concatenate([images[:4], images[5:6], images[9:10],
                                                                                images[4:5], images[6:9]]))
    by_source = [r for r in rows if not r["source"].endswith(".png")]
    for row, want in zip(by_source, expected):
        np.testing.assert_allclose(probabilities(row), [want[c] for c in CLASSES], atol=2e-6)
    sha = json.loads((checkpoints["classify"] / "config.json").read_text())["weights_sha256"]
    for row in rows:
        p = probabilities(row)
        assert abs(p.sum() - 1) < 1e-4 and row["predicted_class"] == ["no_sub", "cdm", "axion"][int(p.argmax())]
        assert row["model_sha256"] == sha and row["model"] == str(checkpoints["classify"].resolve())
        assert row["tta"] == "False"


def test_a_bad_input_is_one_line_naming_it_and_the_rest_is_scored(tmp_path, checkpoints, images):
    cut = tmp_path / "cutouts"
    cut.mkdir()
    np.save(cut / "good.npy", images[:3])
    with_nan = images[:3].copy()
    with_nan[1, 7, 7] = np.nan
    np.save(cut / "nan.npy", with_nan)
    np.save(cut / "line.npy", np.arange(64.0))                                # wrong dimensionality
    np.save(cut / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (cut / "empty.fits").write_bytes(b"")
    (cut / "garbage.fits").write_bytes(b"not a fits file at all" * 10)
    fits.PrimaryHDU(images[0, :32, :32]).writeto(cut / "small.fits")
    Image.fromarray(np.dstack([np.zeros((64, 64), np.uint8), np.full((64, 64), 200, np.uint8),
                               np.zeros((64, 64), np.uint8)])).save(cut / "colour.png")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "scores.csv"
    result = cli("predict", checkpoints["classify"], cut, notes, tmp_path / "missing.fits", "--out", out, "--quiet",
                 "--workers", 0)
    assert result.exit_code == SOME_FAILED, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("flagged ")]  # synthetic rings are unlike B's lenses: flagged, still scored
    reasons = {line.split(": ", 1)[0].removeprefix("skipped ").rsplit("/", 1)[-1]: line for line in lines[:-1]}
    assert set(reasons) == {"nan.npy[1]", "line.npy", "objects.npy", "empty.fits", "garbage.fits", "small.fits",
                            "colour.png", "notes.txt", "missing.fits"}, lines
    assert "NaN" in reasons["nan.npy[1]"] and "never loads" in reasons["objects.npy"]
    assert "empty" in reasons["empty.fits"] and "32×32" in reasons["small.fits"] and "--resize" in reasons["small.fits"]
    assert "colour" in reasons["colour.png"] and "does not exist" in reasons["missing.fits"]
    assert "9 not scored" in lines[-1]
    scored = {(r["source"].rsplit("/", 1)[-1], int(r["index"])) for r in read_rows(out)}
    assert scored == {("good.npy", 0), ("good.npy", 1), ("good.npy", 2), ("nan.npy", 0), ("nan.npy", 2)}

    resized = cli("predict", checkpoints["classify"], cut / "small.fits", "--resize", "bilinear", "--out",
                  tmp_path / "resized.csv", "--quiet")
    assert resized.exit_code == 0, resized.output
    assert len(read_rows(tmp_path / "resized.csv")) == 1


def test_pickled_npy_never_runs_code(tmp_path, checkpoints):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npy"
    with open(path, "wb") as handle:  # a .npy header followed by a pickle, as np.save(allow_pickle=True) writes
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        pickle.dump(np.array([Payload()], dtype=object), handle)
    result = cli("predict", checkpoints["classify"], path, "--out", tmp_path / "s.csv", "--quiet")
    assert result.exit_code == SOME_FAILED and "never loads" in result.stderr
    assert not marker.exists()


def test_an_existing_output_is_never_overwritten_and_resume_finishes_a_killed_run(tmp_path, checkpoints, images):
    np.save(tmp_path / "a.npy", images[:5])
    np.save(tmp_path / "b.npy", images[5:9])
    full = tmp_path / "full.csv"
    assert cli("predict", checkpoints["classify"], tmp_path / "a.npy", tmp_path / "b.npy", "--out", full,
               "--quiet", "--batch-size", 3).exit_code == 0
    text = full.read_text()
    refused = cli("predict", checkpoints["classify"], tmp_path / "a.npy", "--out", full, "--quiet")
    assert refused.exit_code != 0 and "--resume" in refused.stderr and full.read_text() == text

    lines = text.splitlines(keepends=True)
    killed = tmp_path / "killed.csv"
    killed.write_text("".join(lines[:4]) + lines[4][:25])  # header, 3 rows and a line cut off by the kill
    resumed = cli("predict", checkpoints["classify"], tmp_path / "a.npy", tmp_path / "b.npy", "--out", killed,
                  "--quiet", "--resume", "--batch-size", 3)
    assert resumed.exit_code == 0, resumed.output
    assert "3 already in" in resumed.stderr
    assert killed.read_text() == text

    other = cli("predict", checkpoints["regress"], tmp_path / "a.npy", "--out", killed, "--quiet", "--resume")
    assert other.exit_code != 0 and "columns differ" in other.stderr and killed.read_text() == text
    with_tta = cli("predict", checkpoints["classify"], tmp_path / "a.npy", "--out", killed, "--quiet", "--resume",
                   "--tta")
    assert with_tta.exit_code != 0 and "--tta" in with_tta.stderr


def test_resume_refuses_rows_of_other_weights(tmp_path, checkpoints, images):
    np.save(tmp_path / "a.npy", images[:2])
    out = tmp_path / "s.jsonl"
    assert cli("predict", checkpoints["classify"], tmp_path / "a.npy", "--out", out, "--quiet").exit_code == 0
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other", lenszoo.create_model("hnet", task="classify"), dataset="A")
    result = cli("predict", other, tmp_path / "a.npy", "--out", out, "--quiet", "--resume")
    assert result.exit_code != 0 and "another model" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and set(rows[0]) >= {"p_cdm", "model_sha256", "predicted_class"}


def test_tta_is_invariant_to_the_eight_rotations_and_flips(checkpoints, images):
    views = torch.cat(list(dihedral_views(torch.from_numpy(images[:2])[:, None])))[:, 0].numpy()  # 16 images
    rows = lenszoo.predict(str(checkpoints["classify"]), views, tta=True)
    plain = lenszoo.predict(str(checkpoints["classify"]), views)
    for start in (0, 1):
        group = np.array([[r[c] for c in CLASSES] for r in rows[start::2]])
        np.testing.assert_allclose(group, group[:1].repeat(8, 0), atol=1e-5)
        untouched = np.array([[r[c] for c in CLASSES] for r in plain[start::2]])
        assert np.abs(untouched - untouched[:1]).max() > 1e-4  # the net itself is not invariant
        np.testing.assert_allclose(group[0], untouched.mean(0), atol=1e-5)


def test_the_onnxruntime_engine_gives_pytorchs_rows(tmp_path, checkpoints, images):
    """--engine onnxruntime: the same rows (to float rounding) from a graph exported and checked
    on the fly; TTA and regression go through it too; a GPU device is refused in one line."""
    pytest.importorskip("onnxruntime")
    for task, columns, tta in (("classify", CLASSES, True), ("regress", ["log10_m_a"], False)):
        # onnxruntime runs fp32; "auto" would pick bf16 for torch on a CPU with native bfloat16
        plain = lenszoo.predict(str(checkpoints[task]), images, tta=tta, precision="fp32")
        fast = lenszoo.predict(str(checkpoints[task]), images, tta=tta, engine="onnxruntime")
        np.testing.assert_allclose([[r[c] for c in columns] for r in fast],
                                   [[r[c] for c in columns] for r in plain], atol=1e-4)
        assert [r["model_sha256"] for r in fast] == [r["model_sha256"] for r in plain]
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(images).writeto(path)
    result = cli("predict", checkpoints["classify"], path, "--engine", "onnxruntime", "--out", tmp_path / "o.csv",
                 "--quiet")
    assert result.exit_code == 0, result.output
    assert len(read_rows(tmp_path / "o.csv")) == len(images)
    refused = cli("predict", checkpoints["classify"], path, "--engine", "onnxruntime", "--device", "cuda",
                  "--out", tmp_path / "g.csv")
    assert refused.exit_code != 0 and "onnxruntime" in refused.output and "Traceback" not in refused.output


def test_regression_rows_and_the_fits_hdu_option(tmp_path, checkpoints, images):
    path = tmp_path / "two.fits"
    fits.HDUList([fits.PrimaryHDU(images[:2]), fits.ImageHDU(images[2:5])]).writeto(path)
    out = tmp_path / "m.csv"
    result = cli("predict", checkpoints["regress"], path, "--hdu", 1, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert list(rows[0]) == ["source", "index", "log10_m_a", "flags", "tta", "precision", "model", "model_sha256"]
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    want = lenszoo.predict(str(checkpoints["regress"]), images[2:5])
    np.testing.assert_allclose([float(r["log10_m_a"]) for r in rows], [w["log10_m_a"] for w in want], atol=1e-4)
    missing = cli("predict", checkpoints["regress"], path, "--hdu", 4, "--out", tmp_path / "n.csv", "--quiet")
    assert missing.exit_code == SOME_FAILED and "--hdu 4 does not exist" in missing.stderr


def test_output_formats(tmp_path, checkpoints, images):
    np.save(tmp_path / "a.npy", images[:2])
    unknown = cli("predict", checkpoints["classify"], tmp_path / "a.npy", "--out", tmp_path / "s.xlsx")
    assert unknown.exit_code != 0 and ".csv, .jsonl or .parquet" in unknown.stderr
    parquet = cli("predict", checkpoints["classify"], tmp_path / "a.npy", "--out", tmp_path / "s.parquet", "--quiet")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert parquet.exit_code != 0 and "pip install pyarrow" in parquet.stderr
        assert not (tmp_path / "s.parquet").exists()
    else:
        assert parquet.exit_code == 0
        assert pq.read_table(tmp_path / "s.parquet").num_rows == 2


def test_nothing_to_score_is_one_line(tmp_path, checkpoints):
    (tmp_path / "empty").mkdir()
    result = cli("predict", checkpoints["classify"], tmp_path / "empty", "--out", tmp_path / "s.csv")
    assert result.exit_code != 0 and result.stderr.strip().splitlines()[-1].startswith("Error: no image files")
    assert not (tmp_path / "s.csv").exists()


def test_torchrun_splits_the_inputs_into_parts_that_merge_into_the_single_process_table(tmp_path, checkpoints,
                                                                                        images):
    import os
    import subprocess
    import sys

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(5):
        np.save(inputs / f"{i}.npy", images[2 * i:2 * i + 2])
    single = tmp_path / "single.csv"
    assert cli("predict", checkpoints["classify"], inputs, "--out", single, "--quiet").exit_code == 0
    out = tmp_path / "multi.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                          "-m", "lenszoo", "predict", str(checkpoints["classify"]), str(inputs), "--out", str(out),
                          "--quiet", "--workers", "0"], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    parts = sorted(tmp_path.glob("multi.csv.part-*"))
    assert [p.name for p in parts] == ["multi.csv.part-000-of-002.csv", "multi.csv.part-001-of-002.csv"]
    assert not out.exists()
    marker = tmp_path / ".multi.csv.part-001-of-002.csv.done.json"
    saved = marker.read_bytes()
    marker.unlink()  # as if rank 1 had been killed
    unfinished = cli("predict-merge", "--out", out)
    assert unfinished.exit_code != 0 and "part-001-of-002" in unfinished.stderr and "--resume" in unfinished.stderr
    marker.write_bytes(saved)
    assert cli("predict-merge", "--out", out).exit_code == 0
    merged, expected = read_rows(out), read_rows(single)
    assert [(r["source"], r["index"]) for r in merged] == [(r["source"], r["index"]) for r in expected]
    np.testing.assert_allclose([probabilities(r) for r in merged], [probabilities(r) for r in expected], atol=1e-5)
    again = cli("predict-merge", "--out", out)
    assert again.exit_code != 0 and "exists" in again.stderr
